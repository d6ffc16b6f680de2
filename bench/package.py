"""The Lambda package: ``sam build`` into a temporary folder, the layer's unzipped size, its biggest packages, and
each handler's cold import time in a fresh ``python3.12 -S -B`` with only the built layer and the function's folder
on sys.path (which also proves the layer is self-sufficient), as Lambda imports it: from the bytecode the layer ships
(layers/common/compile_imported.py), compiling only what that lacks, with the X-Ray tracer of the functions' active
tracing patching its libraries.

Lambda's limit is 250 MB unzipped for a function and its layers together; the project's target is 150 MB. The
size of the plotting stack (matplotlib and the packages only it needs, ``PLOTTING``) is reported apart: only the
Aggregate step plots, but the four functions share one layer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import ROOT, Timing, timing_row  # noqa: E402

FUNCTIONS = ("CatalogBuilderFunction", "CredentialFetcherFunction", "ProcessorFunction", "AggregatorFunction")
ALIASES = {"pil": "pillow", "mpl_toolkits": "matplotlib", "pylab": "matplotlib"}
"""Top-level names counted under the distribution that installs them."""
PLOTTING = ("matplotlib", "pillow", "fonttools", "kiwisolver", "contourpy", "cycler", "pyparsing")
"""matplotlib and its dependencies that nothing else in the layer imports (names as ``package_sizes`` folds them)."""

_COLD_IMPORT = r"""
import importlib._bootstrap_external as external, json, sys, time
sys.path[:0] = [{layer!r}, {function!r}]
compiled = []  # the source files of the layer this import compiles, having no bytecode for them (as Lambda would)
source_to_code = external.SourceLoader.source_to_code
def recording(self, data, path, *args, **kwargs):
    if path.startswith({layer!r}):
        compiled.append(path)
    return source_to_code(self, data, path, *args, **kwargs)
external.SourceLoader.source_to_code = recording
t = time.perf_counter()
import app
seconds = time.perf_counter() - t
hwm = [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")]
print(json.dumps({{"seconds": seconds, "numpy_from_layer": sys.modules["numpy"].__file__.startswith({layer!r})
                   if "numpy" in sys.modules else None, "modules": len(sys.modules), "peak_mb": hwm[0] if hwm else None,
                   "compiled_at_import": len(compiled)}}))
"""


def tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def sam_build(build_dir: Path) -> None:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SAM_CLI_TELEMETRY": "0"}
    proc = subprocess.run([str(bin_dir / "sam"), "build", "--build-dir", str(build_dir), "--region", "us-west-2",
                           "--cache-dir", str(build_dir.parent / "cache"), "--template-file", str(ROOT / "template.yaml")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        raise RuntimeError(f"sam build failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def package_sizes(layer: Path) -> list[tuple[str, float]]:
    """Top-level entries of the layer's python/ folder by size (MB, largest first), a package's .libs and
    dist-info folded in."""
    sizes: dict[str, int] = {}
    for entry in layer.iterdir():
        name = entry.name
        for suffix in (".libs", ".dist-info", ".data"):
            if name.endswith(suffix):
                name = name[: -len(suffix)].split("-")[0]
        name = ALIASES.get(name.removesuffix(".py").lower(), name.removesuffix(".py"))
        size = tree_size(entry) if entry.is_dir() else entry.stat().st_size
        sizes[name.lower()] = sizes.get(name.lower(), 0) + size
    return [(n, s / 1e6) for n, s in sorted(sizes.items(), key=lambda kv: -kv[1])]


def cold_imports(build: Path, repeats: int) -> dict[str, Any]:
    """Each handler's ``import app`` in fresh interpreters with the function's template environment."""
    import json

    from granulemap.local.engine import ACCOUNT, LOCAL_BUCKET, LOCAL_STACK_NAME, REGION
    from granulemap.local.template import read_local_template

    template = read_local_template(ROOT, LOCAL_BUCKET, REGION, ACCOUNT, LOCAL_STACK_NAME)
    layer = str(build / "CommonLayer" / "python")
    timings = {fn: Timing(fn) for fn in FUNCTIONS}
    details: dict[str, Any] = {}
    for _ in range(repeats):
        for fn in FUNCTIONS:
            # LAMBDA_TASK_ROOT, as Lambda sets it: Powertools' Tracer then traces (template.yaml: Tracing Active)
            # and patches boto3, requests and the other libraries X-Ray supports when the handler module makes it.
            # (The X-Ray SDK then touches /tmp/.aws-xray/initialized, as in Lambda.)
            env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8",
                   **template.functions[fn].environment, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
                   "AWS_LAMBDA_FUNCTION_NAME": fn, "LAMBDA_TASK_ROOT": str(build / fn)}
            code = _COLD_IMPORT.format(layer=layer, function=str(build / fn))
            # -B: Python still reads the bytecode the layer ships (layers/common/compile_imported.py) but writes
            # none, as in Lambda, whose /opt is read-only: a module the layer has no bytecode for is compiled by every
            # cold start. Without -B the first repeat would write __pycache__ files into the build for those, and
            # the later repeats would time an import Lambda never does.
            proc = subprocess.run([sys.executable, "-S", "-B", "-c", code], env=env, capture_output=True, text=True,
                                  timeout=120, cwd="/")
            if proc.returncode != 0:
                raise RuntimeError(f"{fn}: import app failed with only the layer on sys.path:\n{proc.stderr[-2000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            timings[fn].seconds.append(result["seconds"])
            details[fn] = result
    return {fn: {**timing_row(t, 1.0), **details[fn]} for fn, t in timings.items()}


def run(repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        build = Path(tmp) / "build"
        sam_build(build)
        layer = build / "CommonLayer" / "python"
        functions = {fn: tree_size(build / fn) for fn in FUNCTIONS}
        layer_bytes = tree_size(layer)
        packages = package_sizes(layer)
        return {
            "layer_mb": layer_bytes / 1e6,
            "largest_function_mb": max(functions.values()) / 1e6,
            "function_plus_layer_mb": (layer_bytes + max(functions.values())) / 1e6,
            "biggest": packages[:15],
            "plotting_mb": sum(mb for name, mb in packages if name in PLOTTING),
            "plotting_packages": [name for name, _ in packages if name in PLOTTING],
            "cold_import_s": cold_imports(build, repeats),
            "python": sys.version.split()[0],
        }
