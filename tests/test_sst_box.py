"""sst-box-mean: boxes, the antimeridian, and the Niño 3.4 mean on the real granule against an independent numpy mean."""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import pytest

from granulemap.errors import InvalidInput
from granulemap.recipes import get_recipe
from granulemap.recipes.sst_box_mean import box_mean_sst

from sst_reference import LAKE, LAND, RIVER, SEA_ICE, WATER
from test_sst_recipe import _write_l4


def _independent_box_mean(path: Path, west: float, south: float, east: float, north: float) -> tuple[float, int]:
    with netCDF4.Dataset(path) as ds:
        sst_c = ds["analysed_sst"][0].astype(float) - 273.15
        mask = np.ma.filled(ds["mask"][0], 0).astype(int)
        lat, lon = ds["lat"][:].astype(float), ds["lon"][:].astype(float)
    lat2, lon2 = np.meshgrid(lat, lon, indexing="ij")
    in_lon = (lon2 >= west) & (lon2 <= east) if west <= east else (lon2 >= west) | (lon2 <= east)
    water = ((mask & WATER) != 0) & ((mask & (LAND | LAKE | SEA_ICE | RIVER)) == 0)
    use = water & in_lon & (lat2 >= south) & (lat2 <= north) & ~np.ma.getmaskarray(sst_c)
    return float(np.average(sst_c.data[use], weights=np.cos(np.radians(lat2[use])))), int(use.sum())


@pytest.mark.parametrize("box", [(-170.0, -5.0, -120.0, 5.0), (170.0, -10.0, -170.0, 10.0), (-30.0, 40.0, 10.0, 60.0)])
def test_box_mean_of_real_granule_matches_independent_numpy(mur25: Path, box) -> None:
    got = box_mean_sst(mur25.name, box, path=str(mur25))
    want_mean, want_n = _independent_box_mean(mur25, *box)
    assert got["n_valid"] == want_n > 0
    assert got["mean_sst_c"] == pytest.approx(want_mean, abs=1e-6)


@pytest.mark.parametrize("box", [(-180.0, -90.0, 180.0, 90.0), (0.0, -90.0, 360.0, 90.0), (-180.0, -60.0, 180.0, 60.0),
                                 (-10.0, -30.0, 350.0, 30.0)])
def test_a_box_of_every_longitude_is_a_latitude_band(mur25: Path, box) -> None:
    """West -180 to east 180 (or 0 to 360, or any 360° span) takes every longitude: both edges wrapped to one
    meridian once made it a box of that meridian alone, with no valid cell."""
    west, south, east, north = box
    got = box_mean_sst(mur25.name, box, path=str(mur25))
    want_mean, want_n = _independent_box_mean(mur25, -1000.0, south, 1000.0, north)  # every longitude of the file
    assert got["n_valid"] == want_n > 100_000
    assert got["mean_sst_c"] == pytest.approx(want_mean, abs=1e-6)


def test_antimeridian_box_by_hand(tmp_path: Path) -> None:
    # Longitudes -135, -45, 45, 135 (from _write_l4); a box from 100°E across 180° to 120°W takes 135 and -135 only.
    path = _write_l4(tmp_path / "20200101000000-BOX.nc", lat=[0.0, 60.0],
                     sst=[[1 + 273.15, 50 + 273.15, 60 + 273.15, 3 + 273.15],
                          [5 + 273.15, 70 + 273.15, 80 + 273.15, 7 + 273.15]],
                     mask=[[1, 1, 1, 1], [1, 1, 1, 1]])
    got = box_mean_sst(path.name, (100.0, -10.0, -120.0, 70.0), path=str(path))
    # weights: lat 0 → 1, lat 60 → 0.5: (1*(1+3) + 0.5*(5+7)) / (2 + 1) = 10/3
    assert got["n_valid"] == 4
    assert got["mean_sst_c"] == pytest.approx(10 / 3, abs=1e-6)


def test_box_parameters_are_validated() -> None:
    recipe = get_recipe("sst-box-mean")
    with pytest.raises(InvalidInput, match="box"):
        recipe.parse_params({"box": [0, 10, 20, -10]})
    for same in ([30, -10, 30, 10], [180, -10, -180, 10], [200, -10, -160, 10]):
        with pytest.raises(InvalidInput, match="same longitude"):
            recipe.parse_params({"box": same})
    assert recipe.parse_params({}).box == (-170.0, -5.0, -120.0, 5.0)
