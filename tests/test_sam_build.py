"""`sam build` (no container) builds the four functions and the shared layer for python3.12, and the built layer is
self-sufficient: a Python 3.12 with only the layer and a function's folder on its path imports every handler,
reduces the real granules and draws a plot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DATA, MUR25, ROOT

pytestmark = pytest.mark.slow

FUNCTIONS = ("CatalogBuilderFunction", "CredentialFetcherFunction", "ProcessorFunction", "AggregatorFunction")


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("sam")
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SAM_CLI_TELEMETRY": "0"}
    proc = subprocess.run(
        [str(bin_dir / "sam"), "build", "--build-dir", str(tmp / "build"), "--region", "us-west-2",
         "--cache-dir", str(tmp / "cache"), "--template-file", str(ROOT / "template.yaml")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp / "build"


def test_sam_build_produces_the_layer_and_four_functions(build: Path) -> None:
    layer = build / "CommonLayer" / "python"
    assert (layer / "granulemap" / "recipes" / "sst_global_mean.py").is_file()
    for fn in FUNCTIONS:
        assert (build / fn / "app.py").is_file(), fn
    size = sum(f.stat().st_size for f in layer.rglob("*") if f.is_file())
    assert size < 250 * 1000 * 1000, f"layer is {size / 1e6:.0f} MB unzipped: over Lambda's 250 MB limit"


_LAYER_ONLY = r"""
import json, sys
sys.path[:0] = [LAYER, FUNCTION]
import app  # the handler module, with everything it imports
from granulemap.recipes import available, get_recipe
from granulemap.recipes.sst_global_mean import global_mean_sst
from granulemap.recipes.timeseries import plot_time_series
names = sorted(available())
for name in names:
    get_recipe(name)
row = global_mean_sst(MUR25.rsplit("/", 1)[-1], method="ocean", path=MUR25)
png = plot_time_series([row], "mean_sst_c", "t", "°C")
import h5coro, mortie, zarr, s3fs, earthaccess  # ATL06 reading, cells, store; CMR
print(json.dumps({"recipes": names, "mean": row["mean_sst_c"], "png": png[:4].hex(),
                  "numpy_from_layer": __import__("numpy").__file__.startswith(LAYER)}))
"""


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_function_runs_from_the_built_layer_alone(build: Path, function: str) -> None:
    script = (_LAYER_ONLY.replace("LAYER", repr(str(build / "CommonLayer" / "python")))
              .replace("FUNCTION", repr(str(build / function))).replace("MUR25", repr(str(MUR25))))
    # -S: no site-packages, so nothing can come from the dev venv; -I: no user site, no PYTHON* variables.
    proc = subprocess.run([sys.executable, "-S", "-I", "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=DATA, env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
                                         "MPLCONFIGDIR": str(build / f".mpl-{function}")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"sst-global-mean", "sst-box-mean", "atl06-cell-stats"} <= set(out["recipes"])
    assert 15 < out["mean"] < 22 and out["png"] == "89504e47" and out["numpy_from_layer"]
