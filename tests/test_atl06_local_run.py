"""The real ATL06 granule end to end through the local state machine (`granulemap run`), checked against the
independent netCDF4 + healpix_geo + numpy computation of tests/test_atl06_recipe.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import xdggs

from granulemap.cli import main

from conftest import DATA
from test_atl06_recipe import independent_cell_stats

pytestmark = pytest.mark.slow

GRANULE = DATA / "atl06" / "ATL06_20181013235645_02340114_209_01.h5"


def test_real_atl06_granule_through_the_local_state_machine(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["run", "--recipe", "atl06-cell-stats", "--start", "2018-10-13", "--end", "2018-10-13",
                 "--source", str(GRANULE.parent), "--out", str(out), "--parent-order", "6", "--child-order", "12",
                 "--quiet"])
    assert code == 0, capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    store = out / "atl06-cell-stats.zarr"
    assert str(store) in summary["outputs"]
    assert summary["items"]["failed"] == 0 and summary["items"]["succeeded"] == summary["items"]["total"] > 0

    raw = xr.open_zarr(store)
    assert raw["cell_ids"].attrs["level"] == 12 and raw["cell_ids"].attrs["ellipsoid"] == "WGS84"
    assert raw.sizes["time"] == 1 and str(raw["time"].values[0])[:10] == "2018-10-13"
    ds = xdggs.decode(raw.isel(time=0))  # xdggs accepts the store as a HEALPix grid
    with_data = ds["count"].values > 0
    got = dict(zip(ds["cell_ids"].values[with_data].tolist(), ds["count"].values[with_data].tolist(), strict=True))
    want = independent_cell_stats(GRANULE)
    assert got == {cell: stats["count"] for cell, stats in want.items()}
    for cell, stats in want.items():
        index = int(np.flatnonzero(ds["cell_ids"].values == cell)[0])
        assert float(ds["h_mean"].values[index]) == pytest.approx(stats["h_mean"], rel=1e-9)
    assert (out / "atl06-cell-stats-h_mean-20181013-20181013.png").read_bytes().startswith(b"\x89PNG")
