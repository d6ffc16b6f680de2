"""Compile to bytecode the modules of the built layer that the functions import, and only those.

layers/common/Makefile runs this after its strip steps, as ``$(PYTHON) -S -I -B compile_imported.py TARGET``: a
Python 3.12 that sees the standard library and the built layer (TARGET), nothing else. Lambda's /opt is read-only,
so a layer without bytecode is compiled again by every cold start (about half a CPU-second per function:
BENCHMARKS.md, "Lambda package"); compiling the whole layer would add ~36 MB, over the project's 150 MB. So this does what the four handlers and the built-in recipes
do at a cold start (the handlers' imports, the Tracer that Lambda's active tracing patches libraries with, the
recipes, a user's recipe installed in the layer included, and what they import inside functions: earthaccess,
Powertools' parameters, zarr, s3fs, h5coro, mortie, matplotlib drawing a PNG with Agg, boto3's S3 and SSM clients),
then compiles every file of the layer that Python read to do so. tests/test_sam_build.py checks that a handler's import then compiles nothing.

The files are written with ``PycInvalidationMode.UNCHECKED_HASH``: Python loads them without looking at the source.
A timestamp-checked file would be compared with its source's mtime, and a zip (how SAM uploads the layer) keeps
mtimes at 2-second resolution, so after Lambda extracts the layer a file could be judged stale and compiled again.
(The files come from the same build as their sources and are never edited in place.)

When the imports cannot run on the build machine (the layer's libraries are Linux x86-64 ones: building on macOS,
say), one warning is printed and the layer ships without bytecode: still a correct layer, only slower to start.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import py_compile
import sys
import tempfile

HANDLER_IMPORTS = (
    # functions/*/app.py
    "aws_lambda_powertools.metrics", "aws_lambda_powertools.utilities.parser",
    "aws_lambda_powertools.utilities.typing", "granulemap.aggregation", "granulemap.catalog",
    "granulemap.credentials", "granulemap.events", "granulemap.models", "granulemap.observability",
    "granulemap.processing", "granulemap.settings", "granulemap.storage",
)
LAZY_IMPORTS = (
    # imported inside functions: by granulemap's catalog, cmr, credentials, granule_access and plotting, and by the
    # recipes (the built-in recipes' own modules are imported through the registry, below)
    "granulemap.cmr", "earthaccess", "earthaccess.daac", "earthaccess.exceptions", "requests",
    "aws_lambda_powertools.utilities.parameters", "boto3", "botocore.exceptions", "zarr", "zarr.storage", "s3fs",
    "h5coro", "mortie", "deflate", "h5py", "numpy", "PIL.Image", "granulemap.plotting",
)


def _lambda_like_start() -> None:
    """What the functions do at a cold start and in their first invocation, short of reading or writing data."""
    for name in HANDLER_IMPORTS:
        importlib.import_module(name)
    # Lambda runs the functions with active tracing (template.yaml): the handler modules' Tracer then patches every
    # library X-Ray supports, importing the patch module of each (and failing on those not installed).
    from aws_lambda_powertools import Tracer

    Tracer(service="granulemap", disabled=False)
    from granulemap.recipes import available, get_recipe

    for name, spec in available().items():
        try:
            get_recipe(name)
        except Exception as exc:  # noqa: BLE001
            if spec.startswith("granulemap."):  # a built-in recipe must import
                raise
            # A recipe of the user's (README's tutorial) that cannot be imported here costs only its own bytecode.
            print(f"warning: compile_imported.py: recipe {name} ({spec}) cannot be imported ({type(exc).__name__}: "
                  f"{exc}); its modules ship without bytecode", file=sys.stderr)
    for name in LAZY_IMPORTS:
        importlib.import_module(name)
    import boto3
    import numpy as np

    from granulemap.recipes.atl06.plot import plot_cells
    from granulemap.storage import zarr_store
    from granulemap.recipes.timeseries import plot_time_series

    for service in ("s3", "ssm"):  # what botocore loads for a client, offline
        boto3.client(service, region_name="us-west-2", aws_access_key_id="build", aws_secret_access_key="build")
    zarr_store("granulemap-build", "store")  # fsspec's and s3fs's part: no connection until it is read or written
    rows = [{"granule": f"g{day}", "time": f"2019-01-0{day}T09:00:00Z", "v": 15.0 + day} for day in (1, 2, 3)]
    plot_time_series(rows, "v", "build", "°C")  # matplotlib's Agg backend, dates, PNG through Pillow
    plot_cells(np.arange(12, dtype=np.uint64), 0, np.linspace(0.0, 1.0, 12), title="build", label="m")


def _record_compiled_sources() -> list[str]:
    """The list to which every source file Python compiles from now on is appended: with -B and no bytecode in the
    layer yet, every module file an import reads, including those of imports that then fail (the tracer's patches
    for libraries that are not installed, dateutil's Windows module), which Lambda would compile each time too."""
    import importlib._bootstrap_external as external

    compiled: list[str] = []
    source_to_code = external.SourceLoader.source_to_code

    def recording(self: object, data: bytes, path: str, *args: object, **kwargs: object) -> object:
        compiled.append(path)
        return source_to_code(self, data, path, *args, **kwargs)

    external.SourceLoader.source_to_code = recording  # type: ignore[method-assign]
    return compiled


def _compile(sources: list[str], target: str) -> tuple[int, int]:
    """Unchecked-hash bytecode for each of ``sources`` that is in ``target``; (files, bytes written)."""
    files = sorted({path for path in sources if os.path.realpath(path).startswith(target + os.sep)})
    written = 0
    for path in files:
        cfile = importlib.util.cache_from_source(path)
        py_compile.compile(path, cfile=cfile, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        written += os.path.getsize(cfile)
    return len(files), written


def main(target: str) -> int:
    target = os.path.realpath(target)
    sys.path[:0] = [target]
    with tempfile.TemporaryDirectory() as tmp:
        # Nothing of this machine's configuration may steer the imports: matplotlib's cache goes to a scratch
        # folder, botocore reads no config or credentials file.
        os.environ.update({"MPLCONFIGDIR": tmp, "MPLBACKEND": "Agg", "AWS_CONFIG_FILE": os.devnull,
                           "AWS_SHARED_CREDENTIALS_FILE": os.devnull})
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
            os.environ.pop(name, None)
        sources = _record_compiled_sources()
        try:
            _lambda_like_start()
        except Exception as exc:  # noqa: BLE001 - any failure: the layer is still correct, only without bytecode
            print(f"warning: compile_imported.py: the layer's modules cannot be imported on this machine "
                  f"({type(exc).__name__}: {exc}); the layer ships without bytecode, and each cold start compiles "
                  "what it imports", file=sys.stderr)
            return 0
    count, size = _compile(sources, target)
    print(f"compile_imported.py: {count} files of the layer compiled ({size / 1e6:.1f} MB of bytecode, "
          "unchecked-hash)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
