"""sst-box-mean: boxes, the antimeridian, and the Niño 3.4 mean on the real granule against an independent numpy mean."""

from __future__ import annotations

import re
from pathlib import Path

import netCDF4
import numpy as np
import pytest

from granulemap.errors import InvalidInput
from granulemap.recipes import get_recipe
from granulemap.recipes.sst_box_mean import box_mean_sst

from sst_reference import LAKE, LAND, RIVER, SEA_ICE, WATER
from test_sst_recipe import K, MUR41, _write_l4, write_mur41


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


@pytest.mark.parametrize("box, says", [
    ([-500, -5, 10, 5], "west -500 is not a longitude in degrees from -180 to 360"),  # span ≥ 360: would be "all"
    ([0, -5, 361, 5], "east 361 is not a longitude in degrees from -180 to 360"),
    ([-180.5, -5, 10, 5], "west -180.5 is not a longitude"),
    ([0, -100, 20, 5], "south -100 is not a latitude in degrees from -90 to 90"),
    ([0, -5, 20, 95], "north 95 is not a latitude in degrees from -90 to 90"),
    ([0, 10, 20, -10], "south (10) must be less than north (-10)"),
    ([0, 5, 20, 5], "south (5) must be less than north (5)"),  # a box of no height
    ([float("nan"), -5, 20, 5], "west nan is not a longitude"),
])
def test_a_box_outside_the_globe_or_upside_down_is_refused_naming_the_edge(box: list[float], says: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(says)):
        get_recipe("sst-box-mean").parse_params({"box": box})


@pytest.mark.parametrize("box", [[-180, -90, 180, 90], [0, -90, 360, 90], [-180, 89.9, -179.9, 90],
                                 [359, -1, 360, 1], [170, -5, -170, 5]])
def test_a_box_on_the_limits_of_the_globe_is_taken(box: list[float]) -> None:
    assert get_recipe("sst-box-mean").parse_params({"box": box}).box == tuple(box)  # type: ignore[attr-defined]


def test_box_parameters_are_validated() -> None:
    recipe = get_recipe("sst-box-mean")
    for same in ([30, -10, 30, 10], [180, -10, -180, 10], [200, -10, -160, 10]):
        with pytest.raises(InvalidInput, match="same longitude"):
            recipe.parse_params({"box": same})
    assert recipe.parse_params({}).box == (-170.0, -5.0, -120.0, 5.0)


# --- edges: closed, whatever float32 did to a centre on an edge -------------------------------------------------------
# A corner of the MUR 0.01° grid at Niño 3.4's north-west corner (5°N, 170°W). Centres 5.00 and -170.00 lie on the
# box's edges; stored in float32 they may come out a hair outside (5.0000005, -170.00002), as written here.
NOMINAL_LAT = [4.98, 4.99, 5.00, 5.01]
NOMINAL_LON = [-170.02, -170.01, -170.00, -169.99]
STORED_LAT = np.array([4.98, 4.99, np.nextafter(np.float32(5.0), np.float32(6.0)), 5.01], "f4")
STORED_LON = np.array([-170.02, -170.01, np.nextafter(np.float32(-170.0), np.float32(-171.0)), -169.99], "f4")
CORNER_SST = [[10.0, 11.0, 12.0, 13.0], [20.0, 21.0, 22.0, 23.0], [30.0, 31.0, 32.0, 33.0], [40.0, 41.0, 42.0, 43.0]]


def _corner(path: Path) -> Path:
    assert STORED_LAT[2] > 5.0 and STORED_LON[2] < -170.0  # the on-edge centres really are stored outside the box
    return _write_l4(path, lat=STORED_LAT, lon=STORED_LON, sst=np.array(CORNER_SST) + K, mask=np.ones((4, 4)))


def _hand_mean(rows: list[int], cols: list[int]) -> float:
    weights = {r: np.cos(np.radians(NOMINAL_LAT[r])) for r in rows}
    total = sum(weights[r] * CORNER_SST[r][c] for r in rows for c in cols)
    return total / sum(weights[r] * len(cols) for r in rows)


def test_a_cell_centred_on_an_edge_is_in_even_when_float32_put_it_a_hair_outside(tmp_path: Path) -> None:
    path = _corner(tmp_path / "20200101090000-EDGE-L4.nc")
    got = box_mean_sst(path.name, (-170.0, -5.0, -120.0, 5.0), path=str(path))
    # rows 4.98, 4.99, 5.00 (5.01 is out); columns -170.00, -169.99 (-170.02 and -170.01 are out)
    assert got["n_valid"] == 6
    assert got["mean_sst_c"] == pytest.approx(_hand_mean([0, 1, 2], [2, 3]), abs=1e-6)
    assert got["time"] == "2020-01-01T09:00:00Z"


def test_boxes_that_share_an_edge_both_count_the_cells_centred_on_it(tmp_path: Path) -> None:
    path = _corner(tmp_path / "20200101090000-EDGE-L4.nc")
    west = box_mean_sst(path.name, (-175.0, -5.0, -170.0, 5.0), path=str(path))
    east = box_mean_sst(path.name, (-170.0, -5.0, -120.0, 5.0), path=str(path))
    north = box_mean_sst(path.name, (-175.0, 5.0, -120.0, 10.0), path=str(path))
    assert west["n_valid"] == 3 * 3 and west["mean_sst_c"] == pytest.approx(_hand_mean([0, 1, 2], [0, 1, 2]), abs=1e-6)
    assert east["n_valid"] == 3 * 2  # the -170.00 column is in both
    assert north["n_valid"] == 2 * 4 and north["mean_sst_c"] == pytest.approx(_hand_mean([2, 3], [0, 1, 2, 3]),
                                                                             abs=1e-6)


def test_a_centre_a_fraction_of_a_step_outside_an_edge_is_out(tmp_path: Path) -> None:
    """Only float32's hair is forgiven: edges between centres (north 4.997, west -169.995) leave out the 5.00 row and
    the -170.00 column, 0.3 and 0.5 of a grid step outside."""
    path = _corner(tmp_path / "20200101090000-EDGE-L4.nc")
    got = box_mean_sst(path.name, (-169.995, -5.0, -120.0, 4.997), path=str(path))
    assert got["n_valid"] == 2  # rows 4.98, 4.99; column -169.99
    assert got["mean_sst_c"] == pytest.approx(_hand_mean([0, 1], [3]), abs=1e-6)


def test_box_mean_on_a_mur_v41_mask(tmp_path: Path) -> None:
    # mask 1 open sea, 2 land, 5 open lake, 9 open sea with ice, 13 open lake with ice; longitudes -135, -45, 45, 135
    path = write_mur41(tmp_path / MUR41, lat=[0.0, 60.0],
                       sst=[[K + 1, K + 2, K + 3, K + 4], [K + 5, K + 6, K + 7, K + 8]],
                       mask=[[1, 1, 9, 5], [13, 1, 1, 2]])
    got = box_mean_sst(path.name, (-90.0, -10.0, 90.0, 70.0), path=str(path))
    # longitudes -45 and 45: open sea at (0, -45) = 2 (weight 1), (60, -45) = 6 and (60, 45) = 7 (weight 1/2)
    assert got["n_valid"] == 3
    assert got["mean_sst_c"] == pytest.approx((2 + 0.5 * 13) / 2, abs=1e-6)
    want_mean, want_n = _independent_box_mean(path, -90.0, -10.0, 90.0, 70.0)  # the GDS 2.0 bit test, by netCDF4
    assert (want_n, want_mean) == (3, pytest.approx(got["mean_sst_c"], abs=1e-6))
