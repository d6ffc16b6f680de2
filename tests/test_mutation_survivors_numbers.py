"""Numbers that a hand-made mutation of the code could change without any other test noticing.

Each test below was written against a mutant that survived the rest of the suite (the mutation is named in the
test's docstring) and checks the number against a value worked out by hand, or with plain numpy/netCDF4 from the
inputs, never against granulemap's own output.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from pathlib import Path

import h5py
import netCDF4
import numpy as np
import pytest

from granulemap.grouping import group_granules
from granulemap.models import Granule
from granulemap.recipes.atl06.granule import Atl06Granule, segments_in_parent
from granulemap.recipes.atl06.stats import STATISTICS, cell_statistics
from granulemap.recipes.sst_box_mean import box_mean_sst
from granulemap.recipes.sst_global_mean import global_mean_sst
from granulemap.recipes.timeseries import rows_to_csv

from sst_reference import ocean_mean_reference
from test_atl06_synthetic_granule import (
    ATL06_FILL,
    CHILD_ORDER,
    PARENT_ORDER,
    SITE,
    Segment,
    at,
    wgs84_cells,
    write_granule,
)
from test_sst_recipe import GHRSST_EPOCH, K, _write_l4

COS60 = 0.5  # cos(60°), the weight of a row at ±60°


# --- GHRSST reading and the open-water mask ---------------------------------------------------------------------------
def test_unwritten_chunks_of_a_packed_field_are_fill_not_values(tmp_path: Path) -> None:
    """Mutant: the plane reader (``_PlaneReader``) pre-fills with 0 instead of the HDF5 fill value. A
    (shuffle+)deflate chunk that was never written (a netCDF-4 file leaves all-fill chunks out) then reads as raw 0,
    i.e. ``add_offset`` (25 °C with MUR's 298.15 K), and counts as open water."""
    path = tmp_path / "20200101090000-PARTIAL-L4.nc"
    row0, row1 = [10.0, 11.0, 12.0, 13.0], [20.0, 21.0]  # °C; row 1's second chunk (columns 2-3) is never written
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("time", 1)
        ds.createDimension("lat", 2)
        ds.createDimension("lon", 4)
        t = ds.createVariable("time", "f8", ("time",))
        t.units = "seconds since 1981-01-01 00:00:00 UTC"
        t[:] = [(dt.datetime(2020, 1, 1, 9) - GHRSST_EPOCH).total_seconds()]
        ds.createVariable("lat", "f4", ("lat",))[:] = [0.0, 60.0]
        ds.createVariable("lon", "f4", ("lon",))[:] = [-135.0, -45.0, 45.0, 135.0]
        v = ds.createVariable("analysed_sst", "i2", ("time", "lat", "lon"), fill_value=-32768, zlib=True,
                              shuffle=True, chunksizes=(1, 1, 2))
        v.set_auto_maskandscale(False)
        v.units, v.scale_factor, v.add_offset = "kelvin", 0.01, 298.15

        def packed(celsius: list[float]) -> np.ndarray:
            return np.round((np.asarray(celsius) + K - 298.15) / 0.01).astype("i2")

        v[0, 0, :] = packed(row0)
        v[0, 1, 0:2] = packed(row1)
        m = ds.createVariable("mask", "i1", ("time", "lat", "lon"), fill_value=-128)
        m.flag_masks = np.array([1, 2, 4, 8, 16], dtype="i1")
        m.flag_meanings = "water land optional_lake_surface sea_ice optional_river_surface"
        m[0] = np.ones((2, 4), dtype="i1")
    with h5py.File(path) as f:  # the premise: one of the four chunks is not in the file
        sst = f["analysed_sst"]
        assert sst.id.get_num_chunks() == 3 and sst.compression == "gzip" and sst.shuffle

    got = global_mean_sst(path.name, method="ocean", path=str(path))
    want_mean = (sum(row0) + COS60 * sum(row1)) / (len(row0) + COS60 * len(row1))
    assert got["n_valid"] == 6
    assert got["mean_sst_c"] == pytest.approx(want_mean, abs=1e-6)
    assert (got["min_sst_c"], got["max_sst_c"]) == (pytest.approx(10.0, abs=1e-6), pytest.approx(21.0, abs=1e-6))
    reference = ocean_mean_reference(path)  # netCDF4 reads the unwritten chunk as fill itself
    assert (reference["n_valid"], reference["mean_sst_c"]) == (6, pytest.approx(want_mean, abs=1e-6))


def test_the_hdf5_fill_value_is_the_fill_when_the_field_has_no_fill_value_attribute(tmp_path: Path) -> None:
    """Mutant: without a ``_FillValue`` attribute the fill is taken as 0 instead of the HDF5 fill value (the netCDF
    default, -32767 for a short, which netCDF4 masks too). Raw 0 is then dropped and raw -32767 (-327.67 °C) kept."""
    path = _write_l4(tmp_path / "20200101000000-NOFILLATTR-L4.nc", lat=[0.0],
                     sst=[[K + 0.0, K + 4.0, np.nan, K + 8.0]], mask=[[1, 1, 1, 1]], fill=-32767)
    with h5py.File(path, "r+") as f:
        del f["analysed_sst"].attrs["_FillValue"]
        assert f["analysed_sst"].fillvalue == -32767 and f["analysed_sst"][0, 0, 0] == 0  # 0 °C is stored as raw 0
    got = global_mean_sst(path.name, method="ocean", path=str(path))
    assert got["n_valid"] == 3
    assert got["mean_sst_c"] == pytest.approx((0.0 + 4.0 + 8.0) / 3, abs=1e-6)
    assert (got["min_sst_c"], got["max_sst_c"]) == (pytest.approx(0.0, abs=1e-6), pytest.approx(8.0, abs=1e-6))
    reference = ocean_mean_reference(path)
    assert (reference["n_valid"], reference["mean_sst_c"]) == (3, pytest.approx(4.0, abs=1e-6))


def test_the_mask_applies_to_a_float_field_too(tmp_path: Path) -> None:
    """Mutant: a float (unpacked) field is summed over every valid cell instead of the selected ones: land keeps its
    value in the sum while the count leaves it out."""
    path = _write_l4(tmp_path / "20200101000000-FLOATLAND-L4.nc", lat=[0.0, 60.0],
                     sst=[[1.0, 2.0, 50.0, 3.0], [4.0, 60.0, 6.0, 8.0]], mask=[[1, 1, 2, 1], [1, 2, 1, 1]],
                     dtype="f4", fill=-999.0, units="celsius")
    got = global_mean_sst(path.name, method="ocean", path=str(path))
    # land (mask 2): 50 and 60 are out. Row 0: 1, 2, 3 (weight 1); row 1: 4, 6, 8 (weight 1/2)
    assert got["n_valid"] == 6
    assert got["mean_sst_c"] == pytest.approx((6.0 + COS60 * 18.0) / (3 + COS60 * 3), abs=1e-6)
    assert got["max_sst_c"] == pytest.approx(8.0, abs=1e-6)


def test_two_water_flags_still_exclude_cells_with_an_ice_or_land_bit(tmp_path: Path) -> None:
    """Mutant: in the general bit test (more than one water bit: no single-bit shortcut) the excluded bits are
    ignored, so water with sea ice (1+8) or water with land (1+2) counts as open water."""
    path = _write_l4(tmp_path / "20200101000000-TWOWATER-L4.nc", lat=[0.0, 60.0],
                     sst=[[K + 10, K + 12, K + 30, K + 40], [K + 14, K + 50, K + 60, K + 16]],
                     mask=[[1, 4, 9, 3], [5, 12, 0, 1]],
                     flag_masks=(1, 2, 4, 8), flag_meanings="open_sea land open_ocean sea_ice")
    got = global_mean_sst(path.name, method="ocean", path=str(path))
    # open water: a water bit (1 or 4) and neither land (2) nor ice (8): 1, 4, 5 and 1 → 10, 12 | 14, 16
    mask = np.array([[1, 4, 9, 3], [5, 12, 0, 1]])
    assert (((mask & 5) != 0) & ((mask & 10) == 0)).sum() == 4
    assert got["n_valid"] == 4
    assert got["mean_sst_c"] == pytest.approx((22 + COS60 * 30) / (2 + COS60 * 2), abs=1e-6)
    assert got["max_sst_c"] == pytest.approx(16.0, abs=1e-6)


def test_every_flag_value_that_means_water_is_open_water(tmp_path: Path) -> None:
    """Mutant: with CF ``flag_values`` naming two water values, only the first is used."""
    path = _write_l4(tmp_path / "20200101000000-TWOVALUES-L4.nc", lat=[0.0, 60.0],
                     sst=[[K + 5, K + 10, K + 20, K + 12], [K + 14, K + 16, K + 30, K + 40]],
                     mask=[[0, 1, 2, 3], [3, 1, 0, 2]], flag_masks=None, flag_values=(0, 1, 2, 3),
                     flag_meanings="land open_sea sea_ice open_ocean")
    got = global_mean_sst(path.name, method="ocean", path=str(path))
    # values 1 (open_sea) and 3 (open_ocean): 10, 12 | 14, 16
    assert got["n_valid"] == 4
    assert got["mean_sst_c"] == pytest.approx((22 + COS60 * 30) / (2 + COS60 * 2), abs=1e-6)
    assert (got["min_sst_c"], got["max_sst_c"]) == (pytest.approx(10.0, abs=1e-6), pytest.approx(16.0, abs=1e-6))


# --- sst-box-mean: the south and east edges are closed, within the tolerance ------------------------------------------
# Niño 3.4's south-east corner (5°S, 120°W) on the MUR 0.01° grid, the centres on the edges stored a hair outside the
# box in float32: -5.00 a hair south, -120.00 a hair east (the existing corner tests cover the north and west edges).
SE_LAT = [-5.01, -5.00, -4.99, -4.98]
SE_LON = [-120.02, -120.01, -120.00, -119.99]
SE_SST = [[10.0, 11.0, 12.0, 13.0], [20.0, 21.0, 22.0, 23.0], [30.0, 31.0, 32.0, 33.0], [40.0, 41.0, 42.0, 43.0]]


def test_cells_centred_on_the_south_and_east_edges_are_in_when_float32_put_them_a_hair_outside(
        tmp_path: Path) -> None:
    """Mutants: the south edge without its tolerance (``lat >= south``), the east edge without it and open
    (``past_west < span``)."""
    stored_lat = np.array(SE_LAT, "f4")
    stored_lat[1] = np.nextafter(np.float32(-5.0), np.float32(-6.0))
    stored_lon = np.array(SE_LON, "f4")
    stored_lon[2] = np.nextafter(np.float32(-120.0), np.float32(-119.0))
    assert stored_lat[1] < -5.0 and stored_lon[2] > -120.0  # really outside the box as stored
    path = _write_l4(tmp_path / "20200101090000-SECORNER-L4.nc", lat=stored_lat, lon=stored_lon,
                     sst=np.array(SE_SST) + K, mask=np.ones((4, 4)))
    got = box_mean_sst(path.name, (-170.0, -5.0, -120.0, 5.0), path=str(path))
    rows, cols = [1, 2, 3], [0, 1, 2]  # -5.00, -4.99, -4.98 (-5.01 is out); -120.02..-120.00 (-119.99 is out)
    weights = {r: math.cos(math.radians(SE_LAT[r])) for r in rows}
    want = sum(weights[r] * SE_SST[r][c] for r in rows for c in cols) / sum(weights[r] * len(cols) for r in rows)
    assert got["n_valid"] == 9
    assert got["mean_sst_c"] == pytest.approx(want, abs=1e-6)


# --- the time-series CSV ----------------------------------------------------------------------------------------------
def test_zero_is_written_as_zero_and_only_none_as_an_empty_field() -> None:
    """Mutant: ``row.get(k) or ""``: a count of 0 and a mean of exactly 0.0 °C come out as empty fields, as if there
    were no value."""
    columns = ("time", "granule", "mean_sst_c", "n_valid", "min_sst_c", "max_sst_c")
    rows = [{"time": "2020-01-01T09:00:00Z", "granule": "a", "mean_sst_c": 0.0, "n_valid": 2, "min_sst_c": -1.5,
             "max_sst_c": 1.5},
            {"time": "2020-01-02T09:00:00Z", "granule": "b", "mean_sst_c": None, "n_valid": 0, "min_sst_c": None,
             "max_sst_c": None}]
    written = list(csv.DictReader(io.StringIO(rows_to_csv(columns, rows).decode())))
    assert [written[0][c] for c in columns] == ["2020-01-01T09:00:00Z", "a", "0.0", "2", "-1.5", "1.5"]
    assert [written[1][c] for c in columns] == ["2020-01-02T09:00:00Z", "b", "", "0", "", ""]


# --- ATL06 statistics -------------------------------------------------------------------------------------------------
def test_cells_exactly_2_to_the_16_apart_are_two_cells() -> None:
    """Mutant: the 16-bit sort is used for a span of exactly 2**16 ids (``> 2**16`` instead of ``>= 2**16``): the
    second cell's offset wraps to 0 and the two cells' segments are interleaved, each cell reported twice."""
    low = 7 * 4**12
    cells = np.array([low, low + 2**16, low, low + 2**16, low + 2**16])
    h = np.array([3.0, 2.0, 1.0, 4.0, 9.0])
    sigma = np.array([1.0, 2.0, 1.0, 1.0, 0.5])
    stats = cell_statistics(cells, h, sigma)
    assert stats.cells.tolist() == [low, low + 2**16]
    for i, cell in enumerate(stats.cells):
        x, s = h[cells == cell], sigma[cells == cell]
        want = {"count": x.size, "h_min": x.min(), "h_max": x.max(), "h_mean": np.average(x, weights=1 / s**2),
                "h_sigma": 1 / np.sqrt(np.sum(1 / s**2)), "h_variance": np.var(x), "h_q25": np.quantile(x, 0.25),
                "h_q50": np.quantile(x, 0.5), "h_q75": np.quantile(x, 0.75)}
        assert set(want) == set(STATISTICS)
        for name, value in want.items():
            assert stats.values[name][i] == pytest.approx(value, rel=1e-12), (cell, name)


# --- ATL06 reading: which segments are kept ---------------------------------------------------------------------------
def _kept_heights(path: Path) -> tuple[list[float], set[int]]:
    with Atl06Granule(str(path), local_path=str(path), credentials=None) as granule:
        segments = segments_in_parent(granule, SITE.parent, PARENT_ORDER, CHILD_ORDER)
    return sorted(segments.h_li.astype(float).tolist()), set(segments.cells.tolist())


def _assert_cell_a_statistics(path: Path, heights: list[float], sigmas: list[float]) -> None:
    """The statistics of cell A from the kept segments, against the hand-worked weighted mean and its sigma."""
    with Atl06Granule(str(path), local_path=str(path), credentials=None) as granule:
        segments = segments_in_parent(granule, SITE.parent, PARENT_ORDER, CHILD_ORDER)
    stats = cell_statistics(segments.cells, segments.h_li, segments.h_li_sigma)
    w = [1 / s**2 for s in sigmas]
    assert stats.cells.tolist() == [SITE.cell_a]
    assert stats.values["count"][0] == len(heights)
    assert stats.values["h_mean"][0] == pytest.approx(sum(wi * x for wi, x in zip(w, heights)) / sum(w), rel=1e-12)
    assert stats.values["h_sigma"][0] == pytest.approx(1 / math.sqrt(sum(w)), rel=1e-12)


def test_a_segment_whose_sigma_is_zero_or_negative_is_dropped(tmp_path: Path) -> None:
    """Mutant: ``sigma >= 0`` instead of ``sigma > 0``: a sigma of 0 gives an infinite weight, and the cell's h_mean
    NaN and h_sigma 0."""
    where = at(SITE.cell_a, h=0.0, sigma=1.0)
    assert int(wgs84_cells(where.lat, where.lon, CHILD_ORDER)[0]) == SITE.cell_a  # healpix_geo, not mortie
    path = write_granule(tmp_path / "ATL06_20190315101010_12340101_006_01_SIGMA0_SYNTHETIC.h5", {
        "gt1l": [at(SITE.cell_a, h=10.0, sigma=1.0), at(SITE.cell_a, h=12.0, sigma=0.0),
                 at(SITE.cell_a, h=13.0, sigma=-1.0), at(SITE.cell_a, h=14.0, sigma=2.0)]})
    heights, cells = _kept_heights(path)
    assert heights == [10.0, 14.0] and cells == {SITE.cell_a}
    _assert_cell_a_statistics(path, [10.0, 14.0], [1.0, 2.0])


def _write_without_fill_values(path: Path, segments: list[Segment]) -> Path:
    """An ATL06-shaped file (one beam) whose datasets declare no fill value at all (no HDF5 fill-value message)."""
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        group = ds.createGroup("gt1l").createGroup("land_ice_segments")
        group.createDimension("delta_time", len(segments))
        columns = {"latitude": ("f8", [s.lat for s in segments]), "longitude": ("f8", [s.lon for s in segments]),
                   "h_li": ("f4", [s.h for s in segments]), "h_li_sigma": ("f4", [s.sigma for s in segments]),
                   "atl06_quality_summary": ("i1", [s.quality for s in segments])}
        for name, (dtype, values) in columns.items():
            var = group.createVariable(name, dtype, ("delta_time",), zlib=True, fill_value=False, chunksizes=(2,))
            var.set_auto_maskandscale(False)
            var[:] = np.asarray(values, dtype=dtype)
    return path


def test_the_atl06_fill_value_is_dropped_when_the_file_declares_no_fill_value(tmp_path: Path) -> None:
    """Mutants: ``usable(h)`` / ``usable(sigma)`` without the ATL06 default fill, or a default that is not exactly
    float32's largest number (3.4028235e38): a file without fill values keeps h_li or h_li_sigma = 3.4e38."""
    fill = float(ATL06_FILL)
    path = _write_without_fill_values(tmp_path / "ATL06_20190315101010_12340101_006_01_NOFILL_SYNTHETIC.h5", [
        at(SITE.cell_a, h=10.0, sigma=1.0), at(SITE.cell_a, h=fill, sigma=1.0),
        at(SITE.cell_a, h=12.0, sigma=fill), at(SITE.cell_a, h=14.0, sigma=2.0)])
    with Atl06Granule(str(path), local_path=str(path), credentials=None) as granule:
        read = granule.read("gt1l", ["h_li", "h_li_sigma"])
    assert read["h_li"].fill_value is None and read["h_li_sigma"].fill_value is None  # the premise
    assert np.float32(fill) == np.finfo(np.float32).max
    heights, cells = _kept_heights(path)
    assert heights == [10.0, 14.0] and cells == {SITE.cell_a}
    _assert_cell_a_statistics(path, [10.0, 14.0], [1.0, 2.0])


# --- grouping granules into dekads ------------------------------------------------------------------------------------
def _dekad(when: dt.datetime) -> tuple[int, int, int]:
    """Written out here: the UTC day; days 1-10, 11-20, 21 to the month's end."""
    day = when.astimezone(dt.UTC)
    return day.year, day.month, 0 if day.day <= 10 else 1 if day.day <= 20 else 2


def test_a_granule_time_in_another_zone_falls_in_the_dekad_of_its_utc_day() -> None:
    """Mutant: the dekad of the time's local date. 22:00 on the 10th at UTC-5 is 03:00 on the 11th UTC."""
    times = [dt.datetime(2019, 3, 9, 9, tzinfo=dt.UTC),
             dt.datetime(2019, 3, 10, 22, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
             dt.datetime(2019, 3, 11, 9, tzinfo=dt.UTC)]
    granules = [Granule(url=f"s3://b/granule-{i}.nc", time=t) for i, t in enumerate(times)]
    items = group_granules(granules, "dekad")
    assert [_dekad(t) for t in times] == [(2019, 3, 0), (2019, 3, 1), (2019, 3, 1)]
    assert [[g.url for g in i.granules] for i in items] == [["s3://b/granule-0.nc"],
                                                            ["s3://b/granule-1.nc", "s3://b/granule-2.nc"]]


def test_granules_whose_urls_do_not_sort_by_time_still_make_one_item_per_dekad() -> None:
    """Mutant: granules sorted by URL instead of time before they are grouped: a dekad whose granules lie in two
    folders is split into several items (more items, the same dekad computed twice)."""
    days = [(1, "b"), (2, "a"), (5, "b"), (12, "a"), (21, "b"), (22, "a")]
    granules = [Granule(url=f"s3://bucket/{folder}/201903{d:02d}090000-JPL-L4_GHRSST-MUR25.nc",
                        time=dt.datetime(2019, 3, d, 9, tzinfo=dt.UTC)) for d, folder in days]
    items = group_granules(granules, "dekad")
    dekads = [{_dekad(g.time) for g in i.granules} for i in items]
    assert dekads == [{(2019, 3, 0)}, {(2019, 3, 1)}, {(2019, 3, 2)}]
    assert [len(i.granules) for i in items] == [3, 1, 2]
