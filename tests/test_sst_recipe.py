"""The sst-global-mean recipe against independent computations, on the real MUR25 granule and on small
hand-made GHRSST-like files whose expected values are worked out by hand."""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path

import h5py
import netCDF4
import numpy as np
import pytest

from granulemap.errors import GranuleUnreadable, VariableMissing
from granulemap.recipes.ghrsst import time_from_name
from granulemap.recipes.sst_global_mean import global_mean_sst

from sst_reference import assert_the_ocean_reference, ocean_mean_reference, podaac_tutorial_reference


def test_ocean_mean_of_real_granule_matches_independent_computation(mur25: Path) -> None:
    got = global_mean_sst(mur25.name, method="ocean", path=str(mur25))
    assert_the_ocean_reference(got, mur25)
    assert got["time"] == "2018-12-31T09:00:00Z"
    # A plausible global open-ocean mean, and sea water is never colder than about -2 °C.
    assert 15 < got["mean_sst_c"] < 22 and got["min_sst_c"] >= -2.0


def test_podaac_tutorial_method_reproduces_the_tutorials_number(mur25: Path) -> None:
    got = global_mean_sst(mur25.name, method="podaac-tutorial", path=str(mur25))
    assert got["mean_sst_c"] == pytest.approx(podaac_tutorial_reference(mur25), abs=1e-6)
    # The tutorial itself weighs in float32: its printed number differs from the float64 one by < 3e-5 °C.
    as_written = podaac_tutorial_reference(mur25, "float32")
    assert got["mean_sst_c"] == pytest.approx(as_written, abs=3e-5)
    # ... because xarray sums its float32 weights in float32 (README): the same float32 weights summed in float64
    # give the float64 number, and the difference is the sum's.
    summed_in_float64 = podaac_tutorial_reference(mur25, "float32", sum_dtype="float64")
    assert got["mean_sst_c"] == pytest.approx(summed_in_float64, abs=1e-6)
    assert abs(as_written - summed_in_float64) > 1e-5


def test_reading_from_memory_equals_reading_from_path(mur25: Path) -> None:
    from_path = global_mean_sst(mur25.name, method="ocean", path=str(mur25))
    from_bytes = global_mean_sst(mur25.name, method="ocean", data=mur25.read_bytes())
    assert from_path == from_bytes


GHRSST_EPOCH = dt.datetime(1981, 1, 1)


def _stamp(path: Path) -> dt.datetime:
    """The (naive, UTC) time in a GHRSST file name's leading YYYYMMDDHHMMSS."""
    return dt.datetime.strptime(path.name[:14], "%Y%m%d%H%M%S")


def _write_l4(path: Path, lat, sst, mask, *, dtype="i2", scale=0.01, offset=273.15, fill=-32768, units="kelvin",
              lon=None, flag_masks=(1, 2, 4, 8, 16),
              flag_meanings="water land optional_lake_surface sea_ice optional_river_surface", flag_values=None,
              time_units="seconds since 1981-01-01 00:00:00 UTC", time_value=None) -> Path:
    """A tiny GDS 2.0-like L4 file. ``sst`` holds physical values (NaN = fill) in ``units``. Its ``time`` is the
    file name's date stamp (seconds since 1981, as GDS 2.0 has it) unless ``time_value`` is given."""
    lat = np.asarray(lat, float)
    sst = np.asarray(sst, float)
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("time", 1)
        ds.createDimension("lat", sst.shape[0])
        ds.createDimension("lon", sst.shape[1])
        t = ds.createVariable("time", "f8", ("time",))
        t.units = time_units
        t[:] = [(_stamp(path) - GHRSST_EPOCH).total_seconds() if time_value is None else time_value]
        ds.createVariable("lat", "f4", ("lat",))[:] = lat
        ds.createVariable("lon", "f4", ("lon",))[:] = np.linspace(-135, 135, sst.shape[1]) if lon is None else lon
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
        if flag_masks is not None:
            m.flag_masks = np.array(flag_masks, dtype="i1")
        if flag_values is not None:
            m.flag_values = np.array(flag_values, dtype="i1")
        if flag_meanings is not None:
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
    assert got["time"] == "2020-01-01T00:00:00Z"  # its time variable, written from the name's stamp

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


@pytest.mark.parametrize(("width", "units", "low", "high", "to_celsius"), [
    (2**17, "celsius", 25.0, 31.0, 0.0),
    # MUR 0.01°'s 36,000 cells a row, in kelvin: float32 sums of its rows are off by about 1e-5 K a cell
    (36_000, "kelvin", 271.0, 305.0, -273.15),
])
def test_the_mean_of_a_large_float_field_is_numpys_double_precision_mean(
        tmp_path: Path, width: int, units: str, low: float, high: float, to_celsius: float) -> None:
    """A float32 field (no packing) of rows of ``width`` cells, read a tile at a time: its mean equals numpy's
    float64 mean of the same float32 values to the 6 decimals written (the rows are summed in float64)."""
    rng = np.random.default_rng(7)
    values = (rng.uniform(low, high, (2, width))).astype(np.float32)
    path = _write_l4(tmp_path / "20200101000000-FLOAT-L4.nc", lat=[0.0, 0.0], sst=values,
                     mask=np.ones((2, width), int), dtype="f4", fill=-999.0, units=units)
    got = global_mean_sst(path.name, method="ocean", path=str(path))
    assert got["n_valid"] == 2 * width
    assert got["mean_sst_c"] == pytest.approx(float(np.mean(values, dtype=np.float64)) + to_celsius, abs=1e-6)


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


# --- packing attributes (CF): valid range, negative scale, missing_value ----------------------------------------------
K = 273.15
TWO_ROWS = dict(lat=[0.0, 30.0], sst=[[K + 1, K + 2, K + 3, K + 40], [K + 5, K + 6, K - 5, K + 8]], mask=[[1] * 4] * 2)
"""Rows at 0° (weight 1) and 30° (weight cos 30°), all open water; 40 °C and -5 °C are the odd ones out."""
COS30 = math.cos(math.radians(30.0))


def _attributes(path: Path, **attrs) -> Path:
    with netCDF4.Dataset(path, "r+") as ds:
        for name, value in attrs.items():
            ds["analysed_sst"].setncattr(name, value)
    return path


def _assert_stats(path: Path, mean: float, n: int, lo: float, hi: float) -> None:
    """The recipe's row equals the hand-worked numbers and netCDF4's own CF masking and unpacking."""
    got = global_mean_sst(path.name, method="ocean", path=str(path))
    assert (got["n_valid"], got["mean_sst_c"]) == (n, pytest.approx(mean, abs=1e-6))
    assert (got["min_sst_c"], got["max_sst_c"]) == (pytest.approx(lo, abs=1e-6), pytest.approx(hi, abs=1e-6))
    want = ocean_mean_reference(path)
    assert want["n_valid"] == n and want["mean_sst_c"] == pytest.approx(mean, abs=1e-6)
    assert (want["min_sst_c"], want["max_sst_c"]) == (pytest.approx(lo, abs=1e-6), pytest.approx(hi, abs=1e-6))


@pytest.mark.parametrize("attrs", [
    {"valid_min": np.int16(-200), "valid_max": np.int16(3500)},  # -2 °C .. 35 °C in packed units (0.01 K from 0 °C)
    {"valid_range": np.array([-200, 3500], "i2")},
])
def test_cells_outside_the_valid_range_are_left_out(tmp_path: Path, attrs) -> None:
    path = _attributes(_write_l4(tmp_path / "20200101000000-VALID-L4.nc", **TWO_ROWS), **attrs)
    # 40 °C and -5 °C are out: row 0 keeps 1, 2, 3; row 1 keeps 5, 6, 8
    _assert_stats(path, (6 + COS30 * 19) / (3 + 3 * COS30), 6, 1.0, 8.0)


def test_a_negative_scale_factor_unpacks_and_swaps_min_and_max(tmp_path: Path) -> None:
    path = _write_l4(tmp_path / "20200101000000-NEGSCALE-L4.nc", **TWO_ROWS, scale=-0.01, offset=300.0)
    with netCDF4.Dataset(path) as ds:  # the largest temperature is stored as the smallest integer
        raw = ds["analysed_sst"]
        raw.set_auto_maskandscale(False)
        assert raw[0, 0, 3] == raw[0].min() == round((K + 40 - 300.0) / -0.01)
    _assert_stats(path, (46 + COS30 * 14) / (4 + 4 * COS30), 8, -5.0, 40.0)


@pytest.mark.parametrize("missing", [np.int16(-999), np.array([-999, -998], "i2")])
def test_missing_value_cells_are_left_out_like_fill_values(tmp_path: Path, missing) -> None:
    path = _write_l4(tmp_path / "20200101000000-MISSING-L4.nc", **TWO_ROWS)
    with netCDF4.Dataset(path, "r+") as ds:
        v = ds["analysed_sst"]
        v.set_auto_maskandscale(False)
        raw = v[:]
        raw[0, 0, 3] = -999  # was 40 °C
        raw[0, 1, 2] = np.atleast_1d(missing)[-1]  # was -5 °C (also -999 when missing_value is one number)
        v[:] = raw
        v.missing_value = missing
    _assert_stats(path, (6 + COS30 * 19) / (3 + 3 * COS30), 6, 1.0, 8.0)


@pytest.mark.parametrize("units", ["degree_C", "degrees_C", "deg_C", "degC", "Celsius", "°C", "degree_Celsius"])
def test_udunits_spellings_of_celsius_are_read(tmp_path: Path, units: str) -> None:
    path = _write_l4(tmp_path / "20200101000000-CELSIUS-L4.nc", lat=[0.0], sst=[[1.0, 2.0, 4.0]], mask=[[1, 1, 1]],
                     dtype="f4", fill=-999.0, units=units)
    got = global_mean_sst(path.name, method="ocean", path=str(path))
    assert (got["n_valid"], got["mean_sst_c"]) == (3, pytest.approx(7 / 3, abs=1e-6))


# --- the mask in MUR v4.1's older form --------------------------------------------------------------------------------
MUR41_MEANINGS = "1=open-sea, 2=land, 5=open-lake, 9=open-sea with ice in the grid, 13=open-lake with ice in the grid"
MUR41 = "20200101090000-JPL-L4_GHRSST-SSTfnd-MUR-GLOB-v02.0-fv04.1.nc"


def write_mur41(path: Path, lat, sst, mask, **kwargs) -> Path:
    """A tiny file with MUR v4.1's mask attributes (as in its granules' headers): the GDS 2.0 bits in flag_masks, the
    values in use in flag_values, and their meanings as 'N=meaning' items."""
    return _write_l4(path, lat, sst, mask, flag_masks=(1, 2, 4, 8, 16), flag_values=(1, 2, 5, 9, 13),
                     flag_meanings=MUR41_MEANINGS, **kwargs)


def test_mur_v41_mask_open_sea_alone_is_open_water(tmp_path: Path) -> None:
    # 1 open sea, 2 land, 5 open lake, 9 open sea with ice, 13 open lake with ice, -128 the mask's fill
    path = write_mur41(tmp_path / MUR41, lat=[0.0, 60.0],
                       sst=[[K + 10, K + 11, K + 12, K + 13, K + 14], [K + 20, K + 21, K + 22, K + 23, K + 24]],
                       mask=[[1, 2, 5, 1, 9], [13, 1, -128, 1, 1]])
    got = global_mean_sst(path.name, method="ocean", path=str(path))
    # mask 1: 10, 13 (weight 1) and 21, 23, 24 (weight 1/2)
    assert got["n_valid"] == 5
    assert got["mean_sst_c"] == pytest.approx((23 + 0.5 * 68) / (2 + 0.5 * 3), abs=1e-6)
    assert (got["min_sst_c"], got["max_sst_c"]) == (pytest.approx(10.0, abs=1e-6), pytest.approx(24.0, abs=1e-6))
    assert got["time"] == "2020-01-01T09:00:00Z"
    # the same cells as the GDS 2.0 bit test (water bit set; land, lake, ice, river bits clear) computed by netCDF4
    assert ocean_mean_reference(path)["n_valid"] == 5
    assert ocean_mean_reference(path)["mean_sst_c"] == pytest.approx(got["mean_sst_c"], abs=1e-6)


def test_cf_flag_values_with_one_word_each_are_read_as_values(tmp_path: Path) -> None:
    path = _write_l4(tmp_path / "20200101000000-VALUES-L4.nc", lat=[0.0], sst=[[K + 1, K + 2, K + 3, K + 5]],
                     mask=[[0, 1, 2, 1]], flag_masks=None, flag_values=(0, 1, 2),
                     flag_meanings="land open_water sea_ice")
    got = global_mean_sst(path.name, method="ocean", path=str(path))
    assert (got["n_valid"], got["mean_sst_c"]) == (2, pytest.approx(3.5, abs=1e-6))


@pytest.mark.parametrize(("attrs", "says"), [
    ({"flag_meanings": "water land"}, "cannot tell open water"),  # 2 words for 5 masks
    ({"flag_values": (1, 2, 5, 9, 14), "flag_meanings": MUR41_MEANINGS}, "do not match flag_values"),
    ({"flag_values": (1, 2), "flag_meanings": "1=open-sea, two=land"}, "cannot read"),
    ({"flag_masks": (2, 8), "flag_meanings": "land sea_ice"}, "no flag means open water"),
    ({"flag_meanings": None}, "no flag_meanings"),
    # several bits in one mask (CF allows it, with flag_values): not one meaning per bit, so not read as bits
    ({"flag_masks": (1, 6), "flag_meanings": "water land"}, "cannot tell open water"),
    ({"flag_masks": (1, 2), "flag_values": (1, 3), "flag_meanings": "water land"}, "cannot tell open water"),
])
def test_a_mask_that_cannot_be_read_is_a_permanent_error_naming_file_variable_and_why(tmp_path: Path, attrs,
                                                                                         says: str) -> None:
    path = _write_l4(tmp_path / "20200101000000-BADMASK-L4.nc", lat=[0.0], sst=[[K + 1, K + 2]], mask=[[1, 1]],
                     **attrs)
    with pytest.raises(VariableMissing) as raised:
        global_mean_sst(path.name, method="ocean", path=str(path))
    assert path.name in str(raised.value) and "'mask'" in str(raised.value) and says in str(raised.value)


# --- time -------------------------------------------------------------------------------------------------------------
def test_the_csv_time_is_the_time_variable_not_the_file_names_stamp(tmp_path: Path) -> None:
    nine = (dt.datetime(2020, 1, 1, 9) - GHRSST_EPOCH).total_seconds()
    path = _write_l4(tmp_path / "20200101000000-TIMEVAR-L4.nc", lat=[0.0], sst=[[K + 1]], mask=[[1]],
                     time_value=nine)
    assert global_mean_sst(path.name, method="ocean", path=str(path))["time"] == "2020-01-01T09:00:00Z"
    assert global_mean_sst(path.name, method="podaac-tutorial", path=str(path))["time"] == "2020-01-01T09:00:00Z"


@pytest.mark.parametrize(("units", "value", "want"), [
    ("hours since 1981-01-01 12:00", 12, "1981-01-02T00:00:00Z"),  # hh:mm, no seconds
    ("seconds since 1981-01-01 00:00:00 +10:00", 0, "1980-12-31T14:00:00Z"),  # local time at UTC+10
    ("days since 2020-01-01 00:00 +0530", 0, "2019-12-31T18:30:00Z"),
    ("hours since 2019-12-31 21:00:00 -03:00", 9, "2020-01-01T09:00:00Z"),
    ("seconds since 1970-1-1 0:00:00 0:00", 1_577_869_200, "2020-01-01T09:00:00Z"),  # unsigned zone, 1-digit fields
    ("days since 1981-1-1", 1.5, "1981-01-02T12:00:00Z"),
    ("minutes since 2020-01-01T06:30:00Z", 150, "2020-01-01T09:00:00Z"),
    ("hours since 2020-01-01 00:00:00.0 UTC", 9, "2020-01-01T09:00:00Z"),
    ("milliseconds since 2020-01-01 00:00:00", 32_400_000, "2020-01-01T09:00:00Z"),
])
def test_cf_time_units_are_read_as_udunits_reads_them(tmp_path: Path, units: str, value: float, want: str) -> None:
    import cftime

    stamp = want[:10].replace("-", "")  # the file is named for its day, as a granule is
    path = _write_l4(tmp_path / f"{stamp}000000-UNITS-L4.nc", lat=[0.0], sst=[[K + 1]], mask=[[1]],
                     time_units=units, time_value=value)
    assert global_mean_sst(path.name, method="ocean", path=str(path))["time"] == want
    assert cftime.num2date(value, units, only_use_cftime_datetimes=False).strftime("%Y-%m-%dT%H:%M:%SZ") == want


@pytest.mark.parametrize(("units", "calendar"), [
    ("months since 1981-01-01", None),  # no fixed length
    ("days since 1981-01-01 0", None),  # an hour without minutes: ambiguous, refused
    ("fortnights since 1981-01-01", None),
    ("seconds since the launch", None),
    ("days since 2020-01-01", "noleap"),
    ("days since 1500-01-01", None),  # Julian days in the standard calendar
])
def test_time_units_that_cannot_be_read_are_refused_not_guessed(tmp_path: Path, units: str, calendar) -> None:
    path = _write_l4(tmp_path / "20200101000000-BADTIME-L4.nc", lat=[0.0], sst=[[K + 1]], mask=[[1]],
                     time_units=units, time_value=3)
    if calendar:
        with netCDF4.Dataset(path, "r+") as ds:
            ds["time"].calendar = calendar
    with pytest.raises(VariableMissing) as raised:
        global_mean_sst(path.name, method="ocean", path=str(path))
    assert path.name in str(raised.value) and "'time'" in str(raised.value) and units in str(raised.value)


def test_synthetic_granules_time_attributes_agree_with_their_name(tmp_path: Path, mur25: Path) -> None:
    from granulemap.synthetic import make_synthetic_granule

    when = dt.datetime(2019, 7, 4, 9)
    path = make_synthetic_granule(mur25, tmp_path, when, 0.0)
    assert path.name.startswith("20190704090000-SYNTHETIC-")
    with netCDF4.Dataset(path) as ds:
        attrs = {name: ds.getncattr(name) for name in ds.ncattrs()}
        time = netCDF4.num2date(ds["time"][0], "seconds since 1981-01-01 00:00:00", only_use_cftime_datetimes=False)
    assert time == when
    # MUR: the analysis time 09:00, its window from 21:00 the day before to 21:00 that day
    assert (attrs["start_time"], attrs["stop_time"]) == ("20190704T090000Z", "20190704T090000Z")
    assert (attrs["time_coverage_start"], attrs["time_coverage_end"]) == ("20190703T210000Z", "20190704T210000Z")
    assert global_mean_sst(path.name, method="ocean", path=str(path))["time"] == "2019-07-04T09:00:00Z"


def test_an_attribute_wider_than_the_field_is_compared_in_the_fields_own_type() -> None:
    """valid_min of -32767 stored as float64 on int16 data: compared as int16 (no float64 copy of the field), and a
    value the field's type cannot hold exactly is kept as it is (the comparison stays right)."""
    from granulemap.recipes.ghrsst import _in_type

    raw = np.array([-32768, -32767, 5], dtype=np.int16)
    low = _in_type(np.float64(-32767.0), raw)
    assert type(low) is np.int16 and (raw >= low).dtype == bool and (raw >= low).tolist() == [False, True, True]
    half = _in_type(np.float64(4.5), raw)
    assert type(half) is np.float64 and (raw >= half).tolist() == [False, False, True]


# --- S7/S15/S16: a value exactly on valid_min / valid_max is valid (CF: the range is inclusive) ------------------
@pytest.mark.parametrize("attrs", [
    {"valid_min": np.int16(-200), "valid_max": np.int16(3500)},
    {"valid_range": np.array([-200, 3500], "i2")},
])
def test_values_on_the_valid_range_limits_are_kept(tmp_path: Path, attrs) -> None:
    # packed = (°C + 273.15 - 273.15) / 0.01: -2 °C -> -200 (= valid_min), 35 °C -> 3500 (= valid_max)
    path = _write_l4(tmp_path / "20200101000000-EDGES-L4.nc", lat=[0.0], sst=[[K - 2, K + 1, K + 35, K + 36]],
                     mask=[[1, 1, 1, 1]])
    with netCDF4.Dataset(path, "r+") as ds:
        for name, value in attrs.items():
            ds["analysed_sst"].setncattr(name, value)
    got = global_mean_sst(path.name, method="ocean", path=str(path))
    assert got["n_valid"] == 3  # 36 °C (3600) is out
    assert got["mean_sst_c"] == pytest.approx((-2 + 1 + 35) / 3, abs=1e-6)
    assert (got["min_sst_c"], got["max_sst_c"]) == (pytest.approx(-2.0, abs=1e-6), pytest.approx(35.0, abs=1e-6))


# --- S24: a NaN in a float field that is not the fill value is left out ------------------------------------------
def test_nan_in_a_float_field_is_not_a_value(tmp_path: Path) -> None:
    path = _write_l4(tmp_path / "20200101000000-NAN-L4.nc", lat=[0.0], sst=[[1.0, 2.0, 4.0]], mask=[[1, 1, 1]],
                     dtype="f4", fill=-999.0, units="celsius")
    with netCDF4.Dataset(path, "r+") as ds:
        v = ds["analysed_sst"]
        v.set_auto_maskandscale(False)
        v[0, 0, 1] = np.nan
    got = global_mean_sst(path.name, method="ocean", path=str(path))
    assert got["n_valid"] == 2 and got["mean_sst_c"] == pytest.approx(2.5, abs=1e-6)


# --- S22: UDUNITS' symbol K ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("units", ["K", "kelvin", "degK", "degrees_K"])
def test_udunits_spellings_of_kelvin_are_read(tmp_path: Path, units: str) -> None:
    path = _write_l4(tmp_path / "20200101000000-KELVIN-L4.nc", lat=[0.0], sst=[[K + 1, K + 2, K + 4]],
                     mask=[[1, 1, 1]], units=units)
    got = global_mean_sst(path.name, method="ocean", path=str(path))
    assert got["mean_sst_c"] == pytest.approx(7 / 3, abs=1e-6)


@pytest.mark.parametrize("when", [dt.datetime(2020, 1, 1), dt.datetime(2020, 1, 1, 9),
                                  dt.datetime(2020, 1, 1, 23, 59, 59)])
def test_a_time_of_the_names_day_is_the_granules(tmp_path: Path, when: dt.datetime) -> None:
    """Products stamp their names at an hour of their own (OSTIA: 12:00 in the name, 00:00 in time)."""
    path = _write_l4(tmp_path / "20200101120000-UKMO-L4.nc", lat=[0.0], sst=[[K + 1]], mask=[[1]],
                     time_value=(when - GHRSST_EPOCH).total_seconds())
    assert global_mean_sst(path.name, method="ocean", path=str(path))["time"] == f"{when:%Y-%m-%dT%H:%M:%S}Z"


@pytest.mark.parametrize("name", ["20181215090000-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2.nc",
                                  "20190101090000-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2.nc",
                                  "20181230120000-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2.nc"])  # 21 h before
def test_a_granule_named_for_another_day_than_its_time_is_unreadable_naming_both(tmp_path: Path, mur25: Path,
                                                                                  name: str) -> None:
    """The real granule of 2018-12-31 09:00 copied under another day's name: runs find granules by their names'
    dates, so it would give a row outside the run's range, or a second row at one time beside the right file's."""
    import shutil

    with netCDF4.Dataset(mur25) as ds:  # its time as netCDF4 and cftime read it
        real = netCDF4.num2date(ds["time"][0], ds["time"].units, only_use_cftime_datetimes=False)
    assert real == dt.datetime(2018, 12, 31, 9)
    path = tmp_path / name
    shutil.copyfile(mur25, path)
    for method in ("ocean", "podaac-tutorial"):
        with pytest.raises(GranuleUnreadable) as raised:
            global_mean_sst(name, method=method, path=str(path))
        stamp = time_from_name(name)
        assert str(raised.value) == (
            f"{name}: its variable 'time' is {real:%Y-%m-%d %H:%M}Z, but its name is dated {stamp:%Y-%m-%d}, by which "
            "runs find it: a file renamed or copied under another day's name? Give it the name NASA gave it (dated "
            "20181231)")


# --- S17: the reference time's seconds ----------------------------------------------------------------------------
def test_seconds_of_the_reference_time_count(tmp_path: Path) -> None:
    import cftime

    units = "seconds since 2020-01-01 08:59:30"
    path = _write_l4(tmp_path / "20200101000000-REFSEC-L4.nc", lat=[0.0], sst=[[K + 1]], mask=[[1]],
                     time_units=units, time_value=30)
    want = cftime.num2date(30, units, only_use_cftime_datetimes=False).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert want == "2020-01-01T09:00:00Z"
    assert global_mean_sst(path.name, method="ocean", path=str(path))["time"] == want


# --- S18/S19: a packed time variable (scale_factor, add_offset) -----------------------------------------------------
def test_a_packed_time_variable_is_unpacked(tmp_path: Path) -> None:
    path = _write_l4(tmp_path / "20200101000000-PACKEDTIME-L4.nc", lat=[0.0], sst=[[K + 1]], mask=[[1]],
                     time_units="seconds since 2020-01-01 00:00:00", time_value=480)
    with netCDF4.Dataset(path, "r+") as ds:  # stored 480; CF: 480 * 60 + 3600 = 32400 s = 09:00
        ds["time"].scale_factor = 60.0
        ds["time"].add_offset = 3600.0
    with netCDF4.Dataset(path) as ds:  # netCDF4 unpacks it itself
        want = netCDF4.num2date(ds["time"][0], ds["time"].units, only_use_cftime_datetimes=False)
    assert want == dt.datetime(2020, 1, 1, 9)
    assert global_mean_sst(path.name, method="ocean", path=str(path))["time"] == "2020-01-01T09:00:00Z"


# --- Y1/Y2/Y3: synthetic granules ---------------------------------------------------------------------------------
def _valid_count(path: Path) -> int:
    with netCDF4.Dataset(path) as ds:  # netCDF4's own CF masking
        return int((~np.ma.getmaskarray(ds["analysed_sst"][0])).sum())


def test_a_synthetic_shift_is_rounded_to_the_packing_and_moves_every_statistic_by_it(tmp_path: Path,
                                                                                     mur25: Path) -> None:
    from granulemap.synthetic import make_synthetic_granule

    real = ocean_mean_reference(mur25)
    path = make_synthetic_granule(mur25, tmp_path, dt.datetime(2019, 1, 1, 9), 0.0207)  # 20.7 mK -> 21 x 0.001 K
    syn = ocean_mean_reference(path)
    assert syn["n_valid"] == real["n_valid"]
    for k in ("mean_sst_c", "min_sst_c", "max_sst_c"):
        assert syn[k] - real[k] == pytest.approx(0.021, abs=1e-9)


def test_a_synthetic_granule_keeps_its_fill_cells_as_fill(tmp_path: Path, mur25: Path) -> None:
    from granulemap.synthetic import make_synthetic_granule

    path = make_synthetic_granule(mur25, tmp_path, dt.datetime(2019, 1, 1, 9), 0.05)
    assert _valid_count(path) == _valid_count(mur25)


def test_the_seasonal_shift_is_a_tenth_of_a_kelvin_over_30_days() -> None:
    from granulemap.synthetic import seasonal_shift

    assert seasonal_shift(0) == 0.0
    assert seasonal_shift(5) == pytest.approx(0.1 * math.sqrt(3) / 2)  # 0.1 K × sin(60°)
    assert seasonal_shift(15) == pytest.approx(0.0, abs=1e-12)
    assert seasonal_shift(25) == pytest.approx(-0.1 * math.sqrt(3) / 2)


def test_a_granule_whose_time_has_no_units_is_dated_by_its_name_and_one_with_neither_is_refused(tmp_path: Path) -> None:
    """GDS 2.0's file name starts with the granule's YYYYMMDDHHMMSS: the time when the time variable cannot say."""
    path = _write_l4(tmp_path / "20200102093000-NOUNITS-L4.nc", lat=[0.0], sst=[[1.0 + K, 2.0 + K, 3.0 + K, 4.0 + K]],
                     mask=[[1, 1, 1, 1]], time_value=0.0)  # 1981-01-01 if its units were read
    with netCDF4.Dataset(path, "a") as ds:
        ds["time"].delncattr("units")
    got = global_mean_sst(path.name, method="ocean", path=str(path))
    assert got["time"] == "2020-01-02T09:30:00Z" and got["n_valid"] == 4
    anonymous = path.rename(tmp_path / "granule.nc")
    with pytest.raises(VariableMissing, match="granule.nc: no readable time variable and no YYYYMMDDHHMMSS- date "
                                              "stamp in its name"):
        global_mean_sst(anonymous.name, method="ocean", path=str(anonymous))


def test_a_field_or_mask_whose_shape_is_not_lat_by_lon_is_unreadable_naming_both_shapes(tmp_path: Path) -> None:
    """A granule whose analysed_sst is stored (lon, lat), or whose mask is on another grid, would be weighted by the
    wrong latitudes (or misaligned with its mask): refused, naming the shapes."""
    swapped = tmp_path / "20200101000000-SWAPPED.nc"
    with netCDF4.Dataset(swapped, "w") as ds:
        for name, size in (("time", 1), ("lat", 4), ("lon", 3)):
            ds.createDimension(name, size)
        t = ds.createVariable("time", "f8", ("time",))
        t.units = "seconds since 1981-01-01 00:00:00 UTC"
        t[:] = [(_stamp(swapped) - GHRSST_EPOCH).total_seconds()]
        ds.createVariable("lat", "f4", ("lat",))[:] = [-15.0, -5.0, 5.0, 15.0]
        ds.createVariable("lon", "f4", ("lon",))[:] = [-90.0, 0.0, 90.0]
        v = ds.createVariable("analysed_sst", "f4", ("time", "lon", "lat"))  # lon before lat
        v.units = "kelvin"
        v[0] = np.full((3, 4), 288.15)
        m = ds.createVariable("mask", "i1", ("time", "lon", "lat"))
        m.flag_masks = np.array([1, 2, 4, 8, 16], dtype="i1")
        m.flag_meanings = "water land optional_lake_surface sea_ice optional_river_surface"
        m[0] = np.ones((3, 4), dtype="i1")
    with pytest.raises(GranuleUnreadable, match=re.escape("analysed_sst has shape (3, 4), expected (4, 3)")):
        global_mean_sst(swapped.name, method="ocean", path=str(swapped))

    other_mask = _write_l4(tmp_path / "20200102000000-MASKGRID.nc", [-10.0, 0.0, 10.0], np.full((3, 4), 15.0),
                           np.ones((3, 4)))
    with netCDF4.Dataset(other_mask, "a") as ds:
        ds.createDimension("lat2", 2)
        m = ds.createVariable("mask2", "i1", ("time", "lat2", "lon"))
        m[0] = np.ones((2, 4), dtype="i1")
    with h5py.File(other_mask, "a") as f:  # the mask on a grid of 2 latitudes, under the name the recipe reads
        attrs = dict(f["mask"].attrs)
        del f["mask"]
        f["mask"] = f["mask2"][()]
        for key in ("flag_masks", "flag_meanings"):
            f["mask"].attrs[key] = attrs[key]
    with pytest.raises(GranuleUnreadable, match=re.escape("mask has shape (2, 4), analysed_sst (3, 4)")):
        global_mean_sst(other_mask.name, method="ocean", path=str(other_mask))


def test_titles_and_notes_say_which_cells_each_method_averages() -> None:
    """The ocean method leaves sea ice out (its mean moves with the ice's extent); the tutorial's takes every valid
    cell within 60° of the equator, ice included: a title that said "Global" and a note about "open water" for both
    told the tutorial's readers the wrong cells."""
    from granulemap.recipes.sst_box_mean import recipe as box
    from granulemap.recipes.sst_global_mean import recipe

    ocean, tutorial = (recipe.parse_params({"method": m}) for m in ("ocean", "podaac-tutorial"))
    assert "open water" in recipe.title(ocean) and "sea ice left out" in recipe.title(ocean)
    assert "within 60° of the equator" in recipe.title(tutorial) and "sea ice included" in recipe.title(tutorial)
    assert not recipe.title(tutorial).startswith("Global")
    empty = [{"granule": "a.nc", "n_valid": 0}]
    assert recipe.notes(empty, ocean)[0].startswith("1 of 1 granules had no cell of open water, so")
    assert recipe.notes(empty, tutorial)[0].startswith("1 of 1 granules had no valid cell within 60° of the equator")
    in_box = box.parse_params({"box": [10, 20, 11, 21]})
    assert box.notes(empty, in_box)[0].startswith("1 of 1 granules had no cell of open water in the box")
