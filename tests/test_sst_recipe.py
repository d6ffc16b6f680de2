"""The sst-global-mean recipe against independent computations, on the real MUR25 granule and on small
hand-made GHRSST-like files whose expected values are worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import netCDF4
import numpy as np
import pytest

from granulemap.errors import GranuleUnreadable, VariableMissing
from granulemap.recipes.ghrsst import time_from_name
from granulemap.recipes.sst_global_mean import global_mean_sst

from sst_reference import ocean_mean_reference, podaac_tutorial_reference


def test_ocean_mean_of_real_granule_matches_independent_computation(mur25: Path) -> None:
    got = global_mean_sst(mur25.name, method="ocean", path=str(mur25))
    want = ocean_mean_reference(mur25)
    assert got["n_valid"] == want["n_valid"]
    assert got["mean_sst_c"] == pytest.approx(want["mean_sst_c"], abs=1e-6)
    assert got["min_sst_c"] == pytest.approx(want["min_sst_c"], abs=1e-6)
    assert got["max_sst_c"] == pytest.approx(want["max_sst_c"], abs=1e-6)
    assert got["time"] == "2018-12-31T09:00:00Z"
    # A plausible global open-ocean mean, and sea water is never colder than about -2 °C.
    assert 15 < got["mean_sst_c"] < 22 and got["min_sst_c"] >= -2.0


def test_podaac_tutorial_method_reproduces_the_tutorials_number(mur25: Path) -> None:
    got = global_mean_sst(mur25.name, method="podaac-tutorial", path=str(mur25))
    assert got["mean_sst_c"] == pytest.approx(podaac_tutorial_reference(mur25), abs=1e-6)
    # The tutorial itself weighs in float32: its printed number differs from the float64 one by < 3e-5 °C.
    assert got["mean_sst_c"] == pytest.approx(podaac_tutorial_reference(mur25, "float32"), abs=3e-5)


def test_reading_from_memory_equals_reading_from_path(mur25: Path) -> None:
    from_path = global_mean_sst(mur25.name, method="ocean", path=str(mur25))
    from_bytes = global_mean_sst(mur25.name, method="ocean", data=mur25.read_bytes())
    assert from_path == from_bytes


def _write_l4(path: Path, lat, sst, mask, *, dtype="i2", scale=0.01, offset=273.15, fill=-32768, units="kelvin",
              flag_masks=(1, 2, 4, 8, 16),
              flag_meanings="water land optional_lake_surface sea_ice optional_river_surface") -> Path:
    """A tiny GDS 2.0-like L4 file. ``sst`` holds physical values (NaN = fill) in ``units``."""
    lat = np.asarray(lat, float)
    sst = np.asarray(sst, float)
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("time", 1)
        ds.createDimension("lat", sst.shape[0])
        ds.createDimension("lon", sst.shape[1])
        t = ds.createVariable("time", "i4", ("time",))
        t.units = "seconds since 1981-01-01 00:00:00 UTC"
        t[:] = [0]
        ds.createVariable("lat", "f4", ("lat",))[:] = lat
        ds.createVariable("lon", "f4", ("lon",))[:] = np.linspace(-135, 135, sst.shape[1])
        v = ds.createVariable("analysed_sst", dtype, ("time", "lat", "lon"), fill_value=fill)
        v.set_auto_maskandscale(False)
        v.units = units
        if np.dtype(dtype).kind == "i":
            v.scale_factor = scale
            v.add_offset = offset
            raw = np.where(np.isnan(sst), fill, np.round((np.nan_to_num(sst) - offset) / scale)).astype(dtype)
        else:
            raw = np.where(np.isnan(sst), fill, sst).astype(dtype)
        v[0] = raw
        m = ds.createVariable("mask", "i1", ("time", "lat", "lon"), fill_value=-128)
        m.flag_masks = np.array(flag_masks, dtype="i1")
        m.flag_meanings = flag_meanings
        m[0] = np.asarray(mask, dtype="i1")
    return path


def test_hand_checked_weights_and_mask(tmp_path: Path) -> None:
    # Rows at latitudes 0°, 60°, -60° weigh 1, 1/2, 1/2. Mask values: 1 water, 2 land, 9 water+ice, 17 water+river.
    path = _write_l4(
        tmp_path / "20200101000000-TEST-L4.nc",
        lat=[0.0, 60.0, -60.0],
        sst=[[10.0 + 273.15, 20.0 + 273.15, 99.0 + 273.15, np.nan],
             [30.0 + 273.15, 5.0 + 273.15, 7.0 + 273.15, 8.0 + 273.15],
             [2.0 + 273.15, 4.0 + 273.15, 6.0 + 273.15, 1.0 + 273.15]],
        mask=[[1, 1, 2, 1],
              [1, 9, 17, 1],
              [1, 1, 1, 4]],
    )
    got = global_mean_sst(path.name, method="ocean", path=str(path))
    # Open water with a value: row 0: 10, 20 (99 is land, NaN is fill); row 1: 30, 8; row 2: 2, 4, 6.
    # Weighted mean = (1*(10+20) + 0.5*(30+8) + 0.5*(2+4+6)) / (1*2 + 0.5*2 + 0.5*3) = 55 / 4.5
    assert got["n_valid"] == 7
    assert got["mean_sst_c"] == pytest.approx(55 / 4.5, abs=1e-6)
    assert got["min_sst_c"] == pytest.approx(2.0, abs=1e-6)
    assert got["max_sst_c"] == pytest.approx(30.0, abs=1e-6)

    tutorial = global_mean_sst(path.name, method="podaac-tutorial", path=str(path))
    # Every valid cell with |lat| <= 60: all 11 non-fill cells, same row weights, no mask.
    total = 1 * (10 + 20 + 99) + 0.5 * (30 + 5 + 7 + 8) + 0.5 * (2 + 4 + 6 + 1)
    assert tutorial["n_valid"] == 11
    assert tutorial["mean_sst_c"] == pytest.approx(total / (3 + 0.5 * 4 + 0.5 * 4), abs=1e-6)


def test_other_products_float_celsius_and_reordered_flags(tmp_path: Path) -> None:
    # A float32 product in Celsius, no packing, flags in another order: nothing about MUR25 may be assumed.
    path = _write_l4(
        tmp_path / "20200101000000-OTHER-L4.nc",
        lat=[45.0, -45.0], sst=[[1.5, 2.5], [3.5, np.nan]], mask=[[2, 2], [2, 1]],
        dtype="f4", fill=-999.0, units="celsius",
        flag_masks=(1, 2, 4), flag_meanings="land water sea_ice",
    )
    got = global_mean_sst(path.name, method="ocean", path=str(path))
    # water is bit 2 here; cell (1,1) is land (bit 1) and fill anyway; (0,0),(0,1),(1,0) are water.
    assert got["n_valid"] == 3
    assert got["mean_sst_c"] == pytest.approx((1.5 + 2.5 + 3.5) / 3, abs=1e-6)  # equal weights cos(±45°)


def test_granule_without_mask_is_a_clear_permanent_error(tmp_path: Path) -> None:
    path = tmp_path / "20200101000000-NOMASK.nc"
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("lat", 1)
        ds.createDimension("lon", 1)
        ds.createVariable("lat", "f4", ("lat",))[:] = [0]
        ds.createVariable("lon", "f4", ("lon",))[:] = [0]
        v = ds.createVariable("analysed_sst", "f4", ("lat", "lon"))
        v.units = "kelvin"
        v[:] = [[280.0]]
    with pytest.raises(VariableMissing, match="'mask'"):
        global_mean_sst(path.name, method="ocean", path=str(path))


def test_truncated_granule_is_unreadable(tmp_path: Path, mur25: Path) -> None:
    broken = tmp_path / mur25.name
    broken.write_bytes(mur25.read_bytes()[:50_000])
    with pytest.raises(GranuleUnreadable):
        global_mean_sst(broken.name, method="ocean", path=str(broken))


def test_time_comes_from_the_ghrsst_file_name_stamp() -> None:
    when = time_from_name("s3://b/x/20220315120000-JPL-L4_GHRSST-SSTfnd-MUR-GLOB-v02.0-fv04.1.nc")
    assert when is not None and when.isoformat() == "2022-03-15T12:00:00+00:00"
    assert time_from_name("ATL06_20181013235645_02340114_209_01.h5") is None
    assert time_from_name("20221399000000-bad-month.nc") is None


def test_the_tutorial_method_leaves_out_cells_poleward_of_60_degrees(tmp_path: Path) -> None:
    # Rows at 0°, 70°N and 75.5225°S (cos = 1, 0.34202, 0.25): the ocean method weighs all three by cos(latitude);
    # the tutorial method's weights are zero poleward of 60°, so its mean, count, min and max come from row 0 alone.
    lat = [0.0, 70.0, -75.52248781]
    path = _write_l4(tmp_path / "20200101000000-POLAR-L4.nc", lat=lat,
                     sst=[[10.0 + 273.15, 20.0 + 273.15, 12.0 + 273.15, 14.0 + 273.15],
                          [-1.0 + 273.15, 2.0 + 273.15, 3.0 + 273.15, 4.0 + 273.15],
                          [-1.5 + 273.15, 30.0 + 273.15, 0.5 + 273.15, 1.0 + 273.15]],
                     mask=[[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]])
    tutorial = global_mean_sst(path.name, method="podaac-tutorial", path=str(path))
    assert tutorial["n_valid"] == 4
    assert tutorial["mean_sst_c"] == pytest.approx((10 + 20 + 12 + 14) / 4, abs=1e-6)
    assert (tutorial["min_sst_c"], tutorial["max_sst_c"]) == (pytest.approx(10.0, abs=1e-6), pytest.approx(20.0, abs=1e-6))
    ocean = global_mean_sst(path.name, method="ocean", path=str(path))
    w70, w75 = math.cos(math.radians(70.0)), 0.25
    want = (56 + w70 * (-1 + 2 + 3 + 4) + w75 * (-1.5 + 30 + 0.5 + 1)) / (4 + 4 * w70 + 4 * w75)
    assert ocean["n_valid"] == 12
    assert ocean["mean_sst_c"] == pytest.approx(want, abs=1e-5)
    assert (ocean["min_sst_c"], ocean["max_sst_c"]) == (pytest.approx(-1.5, abs=1e-6), pytest.approx(30.0, abs=1e-6))
