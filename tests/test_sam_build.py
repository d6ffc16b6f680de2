"""`sam build` (no container) builds the four functions and the shared layer for python3.12."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_sam_build_produces_the_layer_and_four_functions(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SAM_CLI_TELEMETRY": "0"}
    build = tmp_path / "build"
    proc = subprocess.run(
        [str(bin_dir / "sam"), "build", "--build-dir", str(build), "--region", "us-west-2",
         "--cache-dir", str(tmp_path / "cache"), "--template-file", str(ROOT / "template.yaml")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    layer = build / "CommonLayer" / "python"
    assert (layer / "granulemap" / "recipes" / "sst_global_mean.py").is_file()
    for dist in ("netCDF4", "numpy", "aws_lambda_powertools", "earthaccess"):
        assert (layer / dist).is_dir(), dist
    for fn in ("CatalogBuilderFunction", "CredentialFetcherFunction", "ProcessorFunction", "AggregatorFunction"):
        assert (build / fn / "app.py").is_file(), fn
    size = sum(f.stat().st_size for f in layer.rglob("*") if f.is_file())
    assert size < 250 * 1024 * 1024, f"layer is {size / 2**20:.0f} MiB unzipped: over Lambda's 250 MB limit"
