"""The atl06-cell-stats recipe through the pipeline's own steps: catalog, template, processors, aggregate."""

# ruff: noqa: F811  (test parameters take the names of the fixtures imported from the support module)

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
from collections import Counter
from pathlib import Path

import matplotlib.image
import netCDF4
import numpy as np
import pytest
import xarray as xr
import xdggs
import zarr

import granulemap
from granulemap import layout
from granulemap.errors import CatalogError, InvalidInput
from granulemap.granule_access import GranuleAccess
from granulemap.models import ExecutionInput, Granule
from granulemap.recipes import get_recipe
from granulemap.recipes.atl06.footprints import footprint_from_legacy, footprint_from_umm, newest_releases
from granulemap.recipes.atl06.store import OutputStoreMismatch
from granulemap.recipes.atl06_cell_stats import png_name

from test_atl06_synthetic_granule import (  # noqa: F401  (fixtures are imported by name, for pytest)
    ATL06_FILL,
    BEAMS,
    CHILD_ORDER,
    N_CHILDREN,
    PARENT_ORDER,
    REAL_GRANULE,
    SITE,
    SYNTHETIC_ONE,
    SYNTHETIC_TWO,
    MotoS3,
    PipelineRun,
    granule_one,
    granule_two,
    moto_s3,
    real_run,
    run_pipeline,
    synthetic_dir,
    synthetic_run,
    wgs84_cells,
)

CMR = Path(__file__).resolve().parent / "data" / "cmr"
recipe = get_recipe("atl06-cell-stats")


def independent_cell_stats(path: Path) -> dict[int, dict[str, float]]:
    """Every order-12 cell's statistics of a granule, read with netCDF4 and placed with healpix_geo (not h5coro,
    not mortie), reduced with numpy's own functions one cell at a time."""
    lat, lon, h, sigma = [], [], [], []
    with netCDF4.Dataset(path) as ds:
        for beam in BEAMS:
            if beam not in ds.groups or "land_ice_segments" not in ds[beam].groups:
                continue
            g = ds[f"{beam}/land_ice_segments"]
            g.set_auto_maskandscale(False)
            hh, ss = g["h_li"][:].astype(np.float64), g["h_li_sigma"][:].astype(np.float64)
            ok = ((g["atl06_quality_summary"][:] == 0) & np.isfinite(hh) & (hh != np.float64(ATL06_FILL))
                  & np.isfinite(ss) & (ss != np.float64(ATL06_FILL)) & (ss > 0))
            lat.append(g["latitude"][:][ok])
            lon.append(g["longitude"][:][ok])
            h.append(hh[ok])
            sigma.append(ss[ok])
    cells = wgs84_cells(np.concatenate(lat), np.concatenate(lon), CHILD_ORDER)
    h_all, s_all = np.concatenate(h), np.concatenate(sigma)
    expected = {}
    for cell in np.unique(cells):
        x, s = h_all[cells == cell], s_all[cells == cell]
        expected[int(cell)] = {
            "count": x.size, "h_min": x.min(), "h_max": x.max(), "h_mean": np.average(x, weights=s**-2),
            "h_sigma": np.sum(s**-2) ** -0.5, "h_variance": np.var(x),
            "h_q25": np.quantile(x, 0.25), "h_q50": np.median(x), "h_q75": np.quantile(x, 0.75),
        }
    return expected


def open_decoded(run: PipelineRun) -> xr.Dataset:
    """The run's period of the store, decoded by xdggs."""
    return xdggs.decode(run.dataset())


# --- parameters and names ---------------------------------------------------------------------------------------
def test_params_default_to_orders_6_and_12_and_are_validated() -> None:
    params = recipe.parse_params({})
    assert (params.parent_order, params.child_order) == (6, 12)  # type: ignore[attr-defined]
    for bad, field in (({"parent_order": 8, "child_order": 8}, "greater than parent_order"),
                       ({"child_order": 30}, "child_order"), ({"parent_order": -1}, "parent_order"),
                       ({"parent_order": 0, "child_order": 11}, "at most 10 orders"), ({"order": 5}, "order"),
                       ({"child_order": 18}, "got child_order 18 with parent_order 6: 12 orders")):
        with pytest.raises(InvalidInput, match=field):
            recipe.parse_params(bad)


def test_granule_time_comes_from_the_atl06_name_stamp() -> None:
    assert recipe.granule_time(REAL_GRANULE.name) == dt.datetime(2018, 10, 13, 23, 56, 45, tzinfo=dt.UTC)
    assert recipe.granule_time("ATL03_20181013235645_02340114_209_01.h5") is None
    assert recipe.granule_time("ATL06_20181399235645_02340114_209_01.h5") is None


def test_every_period_of_a_configuration_goes_to_one_store() -> None:
    params = recipe.parse_params({})
    october = ExecutionInput(recipe=recipe.name, start="2018-10-01", end="2018-10-31")
    november = ExecutionInput(recipe=recipe.name, start="2018-11-01", end="2018-11-30")
    assert recipe.config_id(params, october) == recipe.config_id(params, november)
    assert recipe.config_id(params, october).startswith("p6-c12-")
    # other orders, or another bbox (which decides the granules of the border cells), make another store
    finer = recipe.parse_params({"child_order": 13})
    boxed = ExecutionInput(recipe=recipe.name, start="2018-10-01", end="2018-10-31", bbox=(-50, 60, -40, 70))
    assert len({recipe.config_id(params, october), recipe.config_id(finer, october),
                recipe.config_id(params, boxed)}) == 3


# --- catalog ----------------------------------------------------------------------------------------------------
def test_items_are_parent_cells_with_the_granules_that_touch_them(tmp_path: Path, synthetic_dir: Path) -> None:
    for name in (SYNTHETIC_ONE, SYNTHETIC_TWO):
        (tmp_path / name).write_bytes((synthetic_dir / name).read_bytes())
    (tmp_path / REAL_GRANULE.name).write_bytes(REAL_GRANULE.read_bytes())
    params = recipe.parse_params({})
    execution = ExecutionInput(recipe=recipe.name, start="2018-01-01", end="2019-12-31", source=str(tmp_path))
    granules = [Granule(url=str(p), time=recipe.granule_time(p.name)) for p in sorted(tmp_path.iterdir())]
    items = recipe.make_items(granules, params, execution)

    expected: dict[int, set[str]] = {}
    with netCDF4.Dataset(REAL_GRANULE) as ds:
        real = np.concatenate([wgs84_cells(ds[f"{b}/land_ice_segments/latitude"][:],
                                           ds[f"{b}/land_ice_segments/longitude"][:], PARENT_ORDER) for b in BEAMS])
    for cell in set(real.tolist()):
        expected.setdefault(cell, set()).add(REAL_GRANULE.name)
    for name, beams in ((SYNTHETIC_ONE, granule_one()),):
        for s in (s for segments in beams.values() for s in segments if not s.border):
            expected.setdefault(int(wgs84_cells(s.lat, s.lon, PARENT_ORDER)[0]), set()).add(name)
    got = {item.extra["parent_cell"]: {Path(g.url).name for g in item.granules} for item in items}
    for parent, names in expected.items():
        assert names <= got[parent], parent
    assert SYNTHETIC_TWO in got[SITE.parent] and SYNTHETIC_TWO in got[SITE.neighbour]
    assert len({item.id for item in items}) == len(items)
    # the ids name the parent and the period; the store is named later, by prepare, which makes or grows it
    assert all(item.id.startswith(f"20180101-20191231-p6-{item.extra['parent_cell']}-") for item in items)
    assert all(item.extra["store_id"] is None for item in items)


def test_items_from_an_s3_prefix_read_the_files_there(moto_s3: MotoS3, synthetic_dir: Path) -> None:
    prefix = f"s3://{moto_s3.bucket}/sources/synthetic/"
    local, remote = [], []
    for name in (SYNTHETIC_ONE, SYNTHETIC_TWO):
        moto_s3.client.upload_file(str(synthetic_dir / name), moto_s3.bucket, f"sources/synthetic/{name}")
        local.append(Granule(url=str(synthetic_dir / name), time=recipe.granule_time(name)))
        remote.append(Granule(url=prefix + name, time=recipe.granule_time(name)))
    params = recipe.parse_params({})
    from_disk = recipe.make_items(local, params, ExecutionInput(recipe=recipe.name, start="2019-03-01",
                                                                end="2019-03-31", source=str(synthetic_dir)))
    from_s3 = recipe.make_items(remote, params, ExecutionInput(recipe=recipe.name, start="2019-03-01",
                                                               end="2019-03-31", source=prefix))
    assert [i.extra["parent_cell"] for i in from_s3] == [i.extra["parent_cell"] for i in from_disk]
    assert {SITE.parent, SITE.neighbour, SITE.empty_parent} <= {i.extra["parent_cell"] for i in from_s3}
    assert all(g.url.startswith(prefix) for i in from_s3 for g in i.granules)


def test_cmr_items_use_the_granules_polygons(tmp_path: Path) -> None:
    class CmrGranule(Granule):  # the footprint field granulemap.cmr is to fill from the CMR record
        footprint: list[list[tuple[float, float]]] | None = None

    entry = json.loads((CMR / "earthaccess_atl06_granule_legacy_json.json").read_text())["feed"]["entry"][0]
    rings = footprint_from_legacy(entry)
    assert len(rings) == 1 and len(rings[0]) == 7
    granule = CmrGranule(url="s3://nsidc-cumulus-prod-protected/ATLAS/ATL06/005/2019/02/21/"
                             "ATL06_20190221121851_08410203_005_01.h5",
                         time=recipe.granule_time("ATL06_20190221121851_08410203_005_01.h5"), footprint=rings)
    execution = ExecutionInput(recipe=recipe.name, start="2019-02-21", end="2019-02-21")
    items = recipe.make_items([granule], recipe.parse_params({}), execution)
    parents = {item.extra["parent_cell"] for item in items}
    # every vertex of the polygon, and the middle of each edge (CMR edges are great-circle arcs), is in an item
    lon, lat = np.deg2rad(np.array(rings[0]).T)
    xyz = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)
    mid = xyz[:-1] + xyz[1:]
    mid_lat = np.rad2deg(np.arctan2(mid[:, 2], np.hypot(mid[:, 0], mid[:, 1])))
    mid_lon = np.rad2deg(np.arctan2(mid[:, 1], mid[:, 0]))
    points_lat, points_lon = np.r_[np.rad2deg(lat), mid_lat], np.r_[np.rad2deg(lon), mid_lon]
    assert set(wgs84_cells(points_lat, points_lon, PARENT_ORDER).tolist()) <= parents
    assert all(item.granules == [Granule(url=granule.url, time=granule.time)] for item in items)  # no footprint
    assert 20 < len(parents) < 200  # a ~2,000 km long, narrow track, not a latitude band


def test_a_granule_in_two_releases_is_read_once_in_the_newest() -> None:
    """CMR lists every ATL06 version under the one short name: while NSIDC holds two, each granule came twice, and
    every segment was counted twice (doubled counts, h_sigma too small by √2)."""
    class CmrGranule(Granule):
        footprint: list[list[tuple[float, float]]] | None = None

    entry = json.loads((CMR / "earthaccess_atl06_granule_legacy_json.json").read_text())["feed"]["entry"][0]
    rings = footprint_from_legacy(entry)
    base = "s3://nsidc-cumulus-prod-protected/ATLAS/ATL06/{v}/2019/02/21/ATL06_{stamp}_{tcs}_{v}_{r}.h5"
    names = [("20190221121851", "08410203", "005", "01"), ("20190221121851", "08410203", "006", "01"),
             ("20190221121851", "08410203", "006", "02"),  # three releases of one granule
             ("20190221131851", "08410204", "005", "01")]  # and the next segment's granule
    granules = [CmrGranule(url=base.format(stamp=stamp, tcs=tcs, v=v, r=r),
                           time=recipe.granule_time(f"ATL06_{stamp}_x"), footprint=rings)
                for stamp, tcs, v, r in names]
    execution = ExecutionInput(recipe=recipe.name, start="2019-02-21", end="2019-02-21")
    items = recipe.make_items(granules, recipe.parse_params({}), execution)
    read = {Path(g.url).name for item in items for g in item.granules}
    assert read == {"ATL06_20190221121851_08410203_006_02.h5", "ATL06_20190221131851_08410204_005_01.h5"}
    assert all(len(item.granules) == 2 for item in items)  # both granules share the polygon: each cell has both
    # the summary says which files were left out (only the log did)
    assert recipe.catalog_notes(granules, recipe.parse_params({})) == [
        "2 granule file(s) were left out as older releases, or other copies, of granules also found in a newer one "
        "(each granule is read once, in its newest release): ATL06_20190221121851_08410203_005_01.h5, "
        "ATL06_20190221121851_08410203_006_01.h5"]
    assert recipe.catalog_notes(granules[2:], recipe.parse_params({})) == []

    kept, older = newest_releases([Granule(url="/data/ATL06_20190221121851_08410203_006_01.h5"),
                                   Granule(url="/data/not-an-atl06-name.h5"),
                                   Granule(url="/data/ATL06_20190221121849_08410203_005_03.h5"),  # start moved
                                   Granule(url="/data/ATL06_20190221121851_08410204_005_01.h5")])  # next segment
    assert [Path(g.url).name for g in kept] == ["ATL06_20190221121851_08410203_006_01.h5", "not-an-atl06-name.h5",
                                                "ATL06_20190221121851_08410204_005_01.h5"]
    assert older == ["ATL06_20190221121849_08410203_005_03.h5"]

    # Names with a suffix after the revision (this project's synthetic granules) are releases too: both were kept,
    # and a cell's statistics mixed the two processings.
    kept, older = newest_releases([Granule(url="/s/ATL06_20190101000000_11110101_005_01_SYNTHETIC.h5"),
                                   Granule(url="/s/ATL06_20190101000000_11110101_006_01_SYNTHETIC.h5")])
    assert [Path(g.url).name for g in kept] == ["ATL06_20190101000000_11110101_006_01_SYNTHETIC.h5"]
    assert older == ["ATL06_20190101000000_11110101_005_01_SYNTHETIC.h5"]


def test_a_first_processings_release_number_is_older_than_the_versions_after_it() -> None:
    """Version 1's files carry the processing software's release (the sample granule: 209, its DOI ATL06.001); the
    versions since count from 002 up. By number alone 209 won over 006: a folder holding both read version 1."""
    import h5py

    sample = Path(__file__).parent / "data" / "atl06" / "ATL06_20181013235645_02340114_209_01.h5"
    with h5py.File(sample, "r") as f:  # the evidence for the rule, in the data
        assert f.attrs["identifier_product_doi"].decode().endswith("ATL06.001")
    names = ["ATL06_20181014001049_02350102_209_01.h5", "ATL06_20181014001049_02350102_006_01.h5",
             "ATL06_20181014001049_02350102_005_02.h5", "ATL06_20181014001049_02350102_208_03.h5"]
    kept, older = newest_releases([Granule(url=f"/data/{name}") for name in names])
    assert [Path(g.url).name for g in kept] == ["ATL06_20181014001049_02350102_006_01.h5"]
    assert sorted(older) == sorted(set(names) - {"ATL06_20181014001049_02350102_006_01.h5"})


def test_cmr_records_without_polygons_stop_the_catalog_with_a_reason() -> None:
    umm = json.loads((CMR / "earthaccess_atl06_granule_umm_json.json").read_text())["items"][0]["umm"]
    assert footprint_from_umm(umm) == []  # NSIDC's ECS record describes its extent by orbit parameters only
    granule = Granule(url="s3://bucket/ATL06_20190221121851_08410203_005_01.h5")
    execution = ExecutionInput(recipe=recipe.name, start="2019-02-21", end="2019-02-21")
    with pytest.raises(CatalogError, match="no polygon footprint"):
        recipe.make_items([granule], recipe.parse_params({}), execution)


def test_umm_gpolygons_are_read_as_lon_lat_rings() -> None:
    umm = {"SpatialExtent": {"HorizontalSpatialDomain": {"Geometry": {"GPolygons": [{"Boundary": {"Points": [
        {"Longitude": 10.0, "Latitude": -70.0}, {"Longitude": 11.0, "Latitude": -70.0},
        {"Longitude": 11.0, "Latitude": -71.0}, {"Longitude": 10.0, "Latitude": -70.0}]}}]}}}}
    assert footprint_from_umm(umm) == [[(10.0, -70.0), (11.0, -70.0), (11.0, -71.0), (10.0, -70.0)]]


# --- the whole recipe -------------------------------------------------------------------------------------------
def test_real_granule_store_decodes_with_xdggs_and_equals_an_independent_computation(real_run: PipelineRun) -> None:
    run = real_run
    assert run.summary.status == "SUCCEEDED" and not run.failures
    expected = independent_cell_stats(REAL_GRANULE)
    ds = open_decoded(run)
    info = ds.dggs.grid_info
    assert (info.level, info.indexing_scheme) == (CHILD_ORDER, "nested")
    assert ds.dggs.grid_info.ellipsoid["name"] == "WGS84"  # type: ignore[index]
    count = ds["count"].values
    cells = ds["cell_ids"].values
    assert sorted(cells[count > 0].tolist()) == sorted(expected)
    for i in np.flatnonzero(count > 0):
        for name, value in expected[int(cells[i])].items():
            assert ds[name].values[i] == pytest.approx(value, rel=1e-12), (int(cells[i]), name)
    assert np.isnan(ds["h_mean"].values[count == 0]).all()
    # the cells dimension holds parent cells (this run's among them), each as a dense, ascending block of children
    parents = np.array(ds.attrs["parent_cells"])
    assert {r["parent_cell"] for r in run.results.values()} <= set(parents.tolist())
    assert len(set(parents.tolist())) == parents.size and cells.size == parents.size * N_CHILDREN
    np.testing.assert_array_equal(cells.reshape(parents.size, N_CHILDREN),
                                  parents[:, None] * N_CHILDREN + np.arange(N_CHILDREN))
    # results: small JSON documents per item
    for result in run.results.values():
        assert set(result) == {"parent_cell", "parent_order", "store_id", "cells_with_data", "segments", "granules"}
        assert len(json.dumps(result)) < 1000
    assert sum(r["segments"] for r in run.results.values()) == sum(e["count"] for e in expected.values())


def test_aggregate_consolidates_the_store_records_provenance_and_draws_h_mean(moto_s3: MotoS3,
                                                                            real_run: PipelineRun) -> None:
    run = real_run
    config_id = run.catalog.run.config_id
    store_key = layout.output_key(recipe.name, config_id, "atl06-cell-stats.zarr")
    png_key = layout.output_key(recipe.name, config_id, "atl06-cell-stats-h_mean-20181010-20181014.png")
    assert png_name(run.period) == png_key.rsplit("/", 1)[-1]
    assert run.summary.outputs[:2] == [store_key, png_key]
    attrs = zarr.open_group(run.store, mode="r").attrs
    history = [line for line in attrs["history"].splitlines() if run.catalog.run.run_id in line]
    assert len(history) == 1 and "2018-10-10..2018-10-14" in history[0]
    assert attrs["granulemap_version"] == granulemap.__version__ and attrs["Conventions"].startswith("CF-")
    assert dt.datetime.strptime(attrs["date_modified"], "%Y-%m-%dT%H:%M:%SZ")
    provenance = run.bucket.get_json(layout.provenance_key(recipe.name, config_id, run.catalog.run.run_id))
    assert provenance["input_granules"] == [str(REAL_GRANULE)]
    root = json.loads(moto_s3.client.get_object(Bucket=moto_s3.bucket, Key=f"{store_key}/zarr.json")["Body"].read())
    assert set(root["consolidated_metadata"]["metadata"]) >= {"cell_ids", "h_mean", "count"}
    png = moto_s3.client.get_object(Bucket=moto_s3.bucket, Key=png_key)["Body"].read()
    image = matplotlib.image.imread(io.BytesIO(png), format="png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and image.shape[0] > 100 and image.std() > 0


def test_synthetic_granules_give_the_hand_checked_statistics(moto_s3: MotoS3, synthetic_dir: Path,
                                                             synthetic_run: PipelineRun) -> None:
    run = synthetic_run
    assert run.summary.status == "SUCCEEDED" and not run.failures
    ds = open_decoded(run)

    def cell(c: int) -> dict[str, float]:
        i = int(np.flatnonzero(ds["cell_ids"].values == c)[0])
        return {name: float(ds[name].values[i]) for name in ds.data_vars if "cells" in ds[name].dims}

    # cell A: 10, 12, 14 (gt1l) + 20 (gt2r) from granule one, 16 from granule two; sigmas 1, 1, 2, 2, 1.
    # The fill value, the NaN, the bad-quality 1000 and the 50 with a fill sigma are all dropped.
    a = cell(SITE.cell_a)
    assert a["count"] == 5 and (a["h_min"], a["h_max"]) == (10.0, 20.0)
    assert a["h_mean"] == pytest.approx((10 + 12 + 14 / 4 + 20 / 4 + 16) / 3.5, rel=1e-12)  # weights 1/σ²
    assert a["h_sigma"] == pytest.approx(3.5**-0.5, rel=1e-12)
    assert a["h_variance"] == pytest.approx((4.4**2 + 2.4**2 + 0.4**2 + 1.6**2 + 5.6**2) / 5, rel=1e-12)  # mean 14.4
    assert (a["h_q25"], a["h_q50"], a["h_q75"]) == pytest.approx((12.0, 14.0, 16.0), rel=1e-12)  # sorted 10 12 14 16 20
    b = cell(SITE.cell_b)
    assert b["count"] == 1 and b["h_mean"] == -5.5 and b["h_sigma"] == 0.5 and b["h_variance"] == 0.0
    # the neighbour Q: 3 (σ 0.1) and 4 (σ 0.2) in one cell, 2 (σ 0.5) in the next
    q = cell(SITE.neighbour * N_CHILDREN + 7)
    assert q["count"] == 2 and q["h_mean"] == pytest.approx((3 / 0.01 + 4 / 0.04) / (1 / 0.01 + 1 / 0.04), rel=1e-12)
    assert cell(SITE.neighbour * N_CHILDREN + 8)["h_q50"] == 2.0
    # the border points are each counted exactly once, somewhere
    assert int(np.sum(ds["h_min"].values == 100.0)) == int(np.sum(ds["h_min"].values == 7.0)) == 1
    # parent R had only a bad flag and a fill value: a success that wrote no cells, and no chunk at all
    empty = next(r for r in run.results.values() if r["parent_cell"] == SITE.empty_parent)
    assert empty["cells_with_data"] == 0 and empty["segments"] == 0 and empty["granules"] == []
    t, parents = run.time_index(), ds.attrs["parent_cells"]
    store_key = layout.output_key(recipe.name, run.catalog.run.config_id, "atl06-cell-stats.zarr")

    def chunk_exists(parent: int) -> bool:  # chunk keys are c/<time index>/<parent block index>
        key = f"{store_key}/count/c/{t}/{parents.index(parent)}"
        return moto_s3.client.list_objects_v2(Bucket=moto_s3.bucket, Prefix=key)["KeyCount"] == 1

    assert chunk_exists(SITE.parent) and not chunk_exists(SITE.empty_parent)
    provenance = run.bucket.get_json(layout.provenance_key(recipe.name, run.catalog.run.config_id,
                                                           run.catalog.run.run_id))
    assert provenance["input_granules"] == sorted(str(synthetic_dir / n) for n in (SYNTHETIC_ONE, SYNTHETIC_TWO))


def test_a_rerun_skips_finished_parents_and_keeps_their_regions(moto_s3: MotoS3, synthetic_dir: Path,
                                                                synthetic_run: PipelineRun) -> None:
    before = xr.open_zarr(synthetic_run.store)
    again = run_pipeline(synthetic_dir, moto_s3, "2019-03-01", "2019-03-31")  # the same execution input
    assert again.catalog.run.config_id == synthetic_run.catalog.run.config_id
    assert again.summary.items.skipped == len(again.items) and again.summary.items.succeeded == 0
    after = xr.open_zarr(again.store)
    assert after.sizes == before.sizes  # no period or cells added
    np.testing.assert_array_equal(after["h_mean"].values, before["h_mean"].values)
    assert np.isfinite(synthetic_run.dataset()["h_mean"].values).sum() > 0


def test_a_new_granule_recomputes_the_parent_cells_it_touches(moto_s3: MotoS3, synthetic_dir: Path,
                                                              tmp_path: Path) -> None:
    (tmp_path / SYNTHETIC_ONE).write_bytes((synthetic_dir / SYNTHETIC_ONE).read_bytes())
    first = run_pipeline(tmp_path, moto_s3, "2019-03-03", "2019-03-29")
    count_a = {1: int(first.dataset()["count"].values[first_index(first, SITE.cell_a)])}
    (tmp_path / SYNTHETIC_TWO).write_bytes((synthetic_dir / SYNTHETIC_TWO).read_bytes())  # passes over P and Q
    second = run_pipeline(tmp_path, moto_s3, "2019-03-03", "2019-03-29")
    count_a[2] = int(second.dataset()["count"].values[first_index(second, SITE.cell_a)])
    assert first.time_index() == second.time_index()  # the same period: its entry is rewritten, not added again
    recomputed = {i.extra["parent_cell"] for i in second.items if i.id not in {j.id for j in first.items}}
    assert recomputed == {SITE.parent, SITE.neighbour}
    assert second.summary.items.succeeded == 2 and second.summary.items.skipped == len(second.items) - 2
    assert count_a == {1: 4, 2: 5}  # 10, 12, 14, 20; then also 16 from the new granule


def test_a_parent_cell_no_granule_touches_any_more_is_cleared_for_the_period(moto_s3: MotoS3, synthetic_dir: Path,
                                                                            tmp_path: Path) -> None:
    """A granule gone from a period (withdrawn, replaced by a release with another footprint, removed from the
    folder) left its parent cells' values in the store: only the parents a run's granules touch get items."""
    for name in (SYNTHETIC_ONE, SYNTHETIC_TWO):
        (tmp_path / name).write_bytes((synthetic_dir / name).read_bytes())
    n = 4 ** (CHILD_ORDER - PARENT_ORDER)


    before = counts_by_parent(run_pipeline(tmp_path, moto_s3, "2019-03-02", "2019-03-30"), n)
    (tmp_path / SYNTHETIC_ONE).unlink()
    two_only = run_pipeline(tmp_path, moto_s3, "2019-03-02", "2019-03-30")
    after = counts_by_parent(two_only, n)
    still = {i.extra["parent_cell"] for i in two_only.items if "parent_cell" in i.extra}
    gone = {p for p, c in before.items() if c > 0} - still
    assert gone, "the first granule alone touched no parent cell: the test would show nothing"
    assert all(after[p] == 0 for p in gone), {p: after[p] for p in gone}
    assert all(after[p] == before[p] == 0 for p in after if p not in still | gone)  # nothing else changed
    # the parents granule two touches hold its usable segments, counted here from what the test wrote
    want = Counter(int(wgs84_cells(s.lat, s.lon, PARENT_ORDER)[0]) for beam in granule_two().values() for s in beam
                   if s.usable)
    assert {p: after[p] for p in still if after[p]} == dict(want) and sum(want.values()) > 0


def test_a_granule_removed_then_put_back_is_computed_again_not_skipped(moto_s3: MotoS3, synthetic_dir: Path,
                                                                      tmp_path: Path) -> None:
    """A stored result says its item's values are in its block. Run 2 (granule one gone) rewrote cell A's block and
    cleared the blocks granule one alone touched; run 3 (granule one back) has run 1's items again, whose results
    were still stored: they were skipped as done, and the store kept run 2's values while saying the period was
    complete."""
    for name in (SYNTHETIC_ONE, SYNTHETIC_TWO):  # as they were, modification times too: the same revisions
        shutil.copy2(synthetic_dir / name, tmp_path / name)
    params = {"parent_order": 8}  # a store of its own
    n = 4 ** (CHILD_ORDER - 8)


    both = run_pipeline(tmp_path, moto_s3, "2019-03-07", "2019-03-25", params=params)
    before = counts_by_parent(both, n)
    (tmp_path / SYNTHETIC_ONE).unlink()
    two = run_pipeline(tmp_path, moto_s3, "2019-03-07", "2019-03-25", params=params)
    assert int(two.dataset()["count"].values[first_index(two, SITE.cell_a)]) == 1  # 16 alone
    cleared = {p for p, c in counts_by_parent(two, n).items() if c == 0 and before[p] > 0}
    assert cleared, "granule one alone touched no parent cell: the test would show less"
    shutil.copy2(synthetic_dir / SYNTHETIC_ONE, tmp_path / SYNTHETIC_ONE)  # the very file, not a new revision
    again = run_pipeline(tmp_path, moto_s3, "2019-03-07", "2019-03-25", params=params)
    assert {i.id for i in again.items} == {i.id for i in both.items}  # run 1's items, ids and all
    # the blocks run 2 changed are computed again: those granule two alone does not touch (cleared; with no data
    # there, blank already) and those it rewrote from granule two alone (both granules touch them)
    changed = {i.extra["parent_cell"] for i in both.items if SYNTHETIC_ONE in {Path(g.url).name for g in i.granules}}
    assert changed >= cleared | {SITE.cell_a >> 2 * (CHILD_ORDER - 8)}
    computed = {i.extra["parent_cell"] for i in again.items if i.id in again.results and not i.done}
    assert computed == changed
    assert int(again.dataset()["count"].values[first_index(again, SITE.cell_a)]) == 5  # 10, 12, 14, 20 are back
    assert counts_by_parent(again, n) == before
    assert "incomplete_periods" not in xr.open_zarr(again.store).attrs or \
        "2019-03-07/2019-03-25" not in xr.open_zarr(again.store).attrs["incomplete_periods"]


@pytest.mark.parametrize("fails, parent_order", [("forgetting", 9), ("clearing", 10)])  # a store each
def test_a_catalog_that_fails_while_forgetting_or_clearing_is_retried_without_leaving_a_result_done(
        moto_s3: MotoS3, synthetic_dir: Path, tmp_path: Path, monkeypatch, fails: str, parent_order: int) -> None:
    """BuildCatalog's first try fails part way (S3 throttled) and the state machine tries it again: the blocks cleared
    by the first try hold no data any more, so the second found nothing to clear, and forgot nothing, when clearing
    came first; the cleared blocks' results stayed, and the run that put the granule back skipped them."""
    from granulemap.errors import StorageThrottled
    from granulemap.recipes import atl06_cell_stats
    from granulemap.storage import Bucket

    for name in (SYNTHETIC_ONE, SYNTHETIC_TWO):
        (tmp_path / name).write_bytes((synthetic_dir / name).read_bytes())
    params, n = {"parent_order": parent_order}, 4 ** (CHILD_ORDER - parent_order)


    before = counts_by_parent(run_pipeline(tmp_path, moto_s3, "2019-03-08", "2019-03-24", params=params), n)
    (tmp_path / SYNTHETIC_ONE).unlink()
    target, name = (Bucket, "delete_many") if fails == "forgetting" else (atl06_cell_stats, "write_parent")
    original, calls = getattr(target, name), []

    def once_throttled(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise StorageThrottled("SlowDown")
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, once_throttled)
    with pytest.raises(StorageThrottled):
        run_pipeline(tmp_path, moto_s3, "2019-03-08", "2019-03-24", params=params)
    monkeypatch.setattr(target, name, original)
    assert len(calls) == 1
    retried = run_pipeline(tmp_path, moto_s3, "2019-03-08", "2019-03-24", params=params)  # the state machine's retry
    assert any(c == 0 for p, c in counts_by_parent(retried, n).items() if before[p] > 0)  # granule one's blocks: cleared
    shutil.copy2(synthetic_dir / SYNTHETIC_ONE, tmp_path / SYNTHETIC_ONE)  # the very file, not a new revision
    again = run_pipeline(tmp_path, moto_s3, "2019-03-08", "2019-03-24", params=params)
    assert counts_by_parent(again, n) == before


def test_a_granule_unreadable_on_a_rerun_leaves_the_blocks_it_may_touch_and_their_results(
        moto_s3: MotoS3, synthetic_dir: Path, tmp_path: Path) -> None:
    """A granule that cannot be read at catalog time touches cells nobody knows: the blocks no readable granule of
    the run touches may be its own. They keep what they hold, and so do their stored results (forgotten, a later
    run would compute them again; cleared with their results kept, a later run would skip them as done and leave
    them blank)."""
    for name in (SYNTHETIC_ONE, SYNTHETIC_TWO):
        (tmp_path / name).write_bytes((synthetic_dir / name).read_bytes())
    params = {"parent_order": 7, "child_order": 11}  # a store of its own
    n = 4 ** (11 - 7)


    first = run_pipeline(tmp_path, moto_s3, "2019-03-09", "2019-03-23", params=params)
    before = counts_by_parent(first, n)
    (tmp_path / SYNTHETIC_ONE).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)  # the same file, now unreadable
    second = run_pipeline(tmp_path, moto_s3, "2019-03-09", "2019-03-23", params=params)
    assert [f["error"] for f in second.failures.values()] == ["GranuleUnreadable"]
    touched = {i.extra["parent_cell"] for i in second.items if "parent_cell" in i.extra}
    only_one = {p for p, c in before.items() if c > 0} - touched  # blocks with data that granule one alone gave
    assert only_one, "granule one alone touched no parent cell with data: the test would show nothing"
    after = counts_by_parent(second, n)
    assert {p: after[p] for p in only_one} == {p: before[p] for p in only_one}
    kept = {i.id for i in first.items if i.extra["parent_cell"] in only_one}
    assert all(second.bucket.exists(layout.result_key(recipe.name, first.catalog.run.config_id, i)) for i in kept)
    assert xr.open_zarr(second.store).attrs["incomplete_periods"]["2019-03-09/2019-03-23"]["unreadable_granules"] == [
        str(tmp_path / SYNTHETIC_ONE)]


def test_monthly_runs_grow_one_store_without_duplicates_or_gaps(moto_s3: MotoS3, synthetic_dir: Path,
                                                                tmp_path: Path) -> None:
    """Each month run as its period ("period": "2019-03", then "2019-04"), then April's run again."""
    april_name = SYNTHETIC_TWO.replace("20190316", "20190416")  # granule two, moved into April
    (tmp_path / SYNTHETIC_ONE).write_bytes((synthetic_dir / SYNTHETIC_ONE).read_bytes())
    (tmp_path / april_name).write_bytes((synthetic_dir / SYNTHETIC_TWO).read_bytes())
    params = {"parent_order": 5}  # a configuration of its own: this module's other runs use the default store

    def monthly(now: dt.datetime) -> PipelineRun:
        previous = (now.replace(day=1) - dt.timedelta(days=1)).strftime("%Y-%m")
        return run_pipeline(tmp_path, moto_s3, None, None, now=now, params=params, period=previous)

    march = monthly(dt.datetime(2019, 4, 1, 0, 5, tzinfo=dt.UTC))
    april = monthly(dt.datetime(2019, 5, 1, 0, 5, tzinfo=dt.UTC))
    assert march.period == (dt.date(2019, 3, 1), dt.date(2019, 3, 31))
    assert april.period == (dt.date(2019, 4, 1), dt.date(2019, 4, 30))
    assert march.store_key == april.store_key and not march.failures and not april.failures
    assert {Path(g.url).name for i in april.items for g in i.granules} == {april_name}

    ds = xr.open_zarr(april.store).load()
    # no gaps: March then April, each period's bounds ending where the next begins
    np.testing.assert_array_equal(ds["time_bounds"].values, np.array(
        [["2019-03-01", "2019-04-01"], ["2019-04-01", "2019-05-01"]], "datetime64[ns]"))
    # no duplicates: every cell once, the parents of both months (order 5) each as one block of children
    cells = ds["cell_ids"].values
    parents = {r["parent_cell"] for run in (march, april) for r in run.results.values()}
    assert np.unique(cells).size == cells.size and set((cells >> 2 * (12 - 5)).tolist()) == parents

    def at(run: PipelineRun, cell: int, name: str) -> float:
        return float(ds[name].values[run.time_index(), int(np.flatnonzero(cells == cell)[0])])

    # cell A: 10, 12, 14, 20 (σ 1, 1, 2, 2) in March's granule; 16 (σ 1) in April's
    heights, sigmas = np.array([10.0, 12.0, 14.0, 20.0]), np.array([1.0, 1.0, 2.0, 2.0])
    assert at(march, SITE.cell_a, "count") == 4 and at(april, SITE.cell_a, "count") == 1
    assert at(march, SITE.cell_a, "h_mean") == pytest.approx(np.average(heights, weights=sigmas**-2), rel=1e-12)
    assert at(april, SITE.cell_a, "h_mean") == 16.0
    q = SITE.neighbour * N_CHILDREN
    assert (at(march, q + 7, "count"), at(march, q + 8, "count")) == (2, 0)
    assert (at(april, q + 7, "count"), at(april, q + 8, "count"), at(april, q + 8, "h_mean")) == (0, 1, 2.0)

    # May's run again (a retried schedule): everything skipped, the store as it was
    again = monthly(dt.datetime(2019, 5, 1, 0, 5, tzinfo=dt.UTC))
    assert again.summary.items.skipped == len(again.items) > 0 and again.summary.items.succeeded == 0
    after = xr.open_zarr(again.store).load()
    assert after.sizes == ds.sizes
    for name in ("count", "h_mean", "cell_ids", "time_bounds"):
        np.testing.assert_array_equal(after[name].values, ds[name].values)
    assert again.summary.outputs[1].endswith("atl06-cell-stats-h_mean-20190401-20190430.png")


def test_a_deleted_store_is_made_again_and_refilled_not_skipped(moto_s3: MotoS3, synthetic_dir: Path,
                                                               tmp_path: Path) -> None:
    (tmp_path / SYNTHETIC_ONE).write_bytes((synthetic_dir / SYNTHETIC_ONE).read_bytes())
    params = {"parent_order": 4}
    first = run_pipeline(tmp_path, moto_s3, "2019-03-10", "2019-03-20", params=params)
    listed = moto_s3.client.list_objects_v2(Bucket=moto_s3.bucket, Prefix=first.store_key + "/")["Contents"]
    moto_s3.client.delete_objects(Bucket=moto_s3.bucket, Delete={"Objects": [{"Key": o["Key"]} for o in listed]})
    second = run_pipeline(tmp_path, moto_s3, "2019-03-10", "2019-03-20", params=params)
    assert second.summary.items.succeeded == len(second.items) > 0 and second.summary.items.skipped == 0
    assert {i.extra["store_id"] for i in second.items} != {i.extra["store_id"] for i in first.items}
    assert int(second.dataset()["count"].values[first_index(second, SITE.cell_a)]) == 4
    # an item of the old store finds the new one and refuses it, naming what to do
    stale = next(i for i in first.items if i.extra["parent_cell"] == SITE.cell_a >> 2 * (12 - 4))
    with pytest.raises(OutputStoreMismatch, match="start the execution again"):
        recipe.process(stale, recipe.parse_params(params), GranuleAccess(first.catalog.run), first.catalog.run)



def counts_by_parent(run: PipelineRun, n: int) -> dict[int, int]:
    """Segments counted per parent cell (``n`` child cells each) in the store as it is now, at ``run``'s period."""
    data = run.dataset().load()
    ids, count = data["cell_ids"].values, data["count"].values
    return {int(p): int(count[(ids // n) == p].sum()) for p in np.unique(ids // n)}

def first_index(run: PipelineRun, cell: int) -> int:
    return int(np.flatnonzero(xr.open_zarr(run.store)["cell_ids"].values == cell)[0])


def test_an_unreadable_granule_fails_as_its_own_item_and_the_others_finish(moto_s3: MotoS3, synthetic_dir: Path,
                                                                           tmp_path: Path) -> None:
    (tmp_path / SYNTHETIC_ONE).write_bytes((synthetic_dir / SYNTHETIC_ONE).read_bytes())
    broken = tmp_path / "ATL06_20190317000000_12500101_006_01_CORRUPT.h5"
    broken.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    run = run_pipeline(tmp_path, moto_s3, "2019-03-04", "2019-03-28")
    (failed,) = run.failures
    assert failed == f"{run.period[0]:%Y%m%d}-{run.period[1]:%Y%m%d}-unreadable-ATL06_20190317000000_12500101_006_01_CORRUPT"
    assert all(i.id.startswith(failed.split("-unreadable-")[0] + "-") for i in run.items)  # one common start
    failure = next(iter(run.failures.values()))
    assert failure["error"] == "GranuleUnreadable" and broken.name in failure["cause"]
    assert "GranuleUnreadable" not in failure["cause"]  # the error's name once, as the error (it was in the cause too)
    assert failure["cause"].startswith(f"{broken.name} is not an HDF5 file h5coro can read: ")
    assert run.summary.items.failed == 1 and run.summary.items.succeeded == len(run.items) - 1 >= 3
    # the cells the broken granule would have touched are unknown: the store says the period lacks it
    assert xr.open_zarr(run.store).attrs["incomplete_periods"]["2019-03-04/2019-03-28"] == {
        "run_id": run.catalog.run.run_id, "finished": True, "failed_parent_cells": [],
        "unreadable_granules": [str(broken)]}


def test_parent_cells_whose_items_failed_are_named_in_the_store_until_a_run_writes_them(
        moto_s3: MotoS3, synthetic_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """A failed item's block holds fill values, or an earlier run's values of the period: a reader of the store alone
    could not tell it from a cell without data. The store names it under incomplete_periods, and names a period
    whose run has not finished; a later run that writes the block removes the entry, and other periods keep theirs."""
    for name in (SYNTHETIC_ONE, SYNTHETIC_TWO):
        (tmp_path / name).write_bytes((synthetic_dir / name).read_bytes())
    params = {"parent_order": 7}  # a store of its own
    broken = SITE.cell_a >> 2 * (CHILD_ORDER - 7)  # the order-7 parent of cell A
    failing = {"on": True}
    process = type(recipe).process

    def process_or_fail(self, item, *args, **kwargs):
        if failing["on"] and item.extra.get("parent_cell") == broken:
            raise RuntimeError("injected: this parent cell's item fails")
        return process(self, item, *args, **kwargs)

    monkeypatch.setattr(type(recipe), "process", process_or_fail)
    march = run_pipeline(tmp_path, moto_s3, "2019-03-06", "2019-03-26", params=params)
    whole = run_pipeline(tmp_path, moto_s3, "2019-03-01", "2019-03-31", params=params)
    # the month shares days with the earlier run's period: said, in the catalog's notes and so in the summary
    overlap = ("the store's period(s) 2019-03-06..2019-03-26 share days with this run's, 2019-03-01..2019-03-31: the "
               "segments of those days are in both time steps")
    assert not any("share days" in note for note in march.summary.notes)
    assert any(note.startswith(overlap) for note in whole.summary.notes)
    assert [r["parent_cell"] for r in march.results.values()].count(broken) == 0 and len(march.failures) == 1
    attrs = xr.open_zarr(march.store).attrs  # what a reader of the store sees
    assert attrs["incomplete_periods"] == {
        "2019-03-06/2019-03-26": {"run_id": march.catalog.run.run_id, "finished": True,
                                  "failed_parent_cells": [broken], "unreadable_granules": []},
        "2019-03-01/2019-03-31": {"run_id": whole.catalog.run.run_id, "finished": True,
                                  "failed_parent_cells": [broken], "unreadable_granules": []},
    }
    in_broken = (march.dataset()["cell_ids"].values >> 2 * (CHILD_ORDER - 7)) == broken
    assert in_broken.sum() == 4 ** (CHILD_ORDER - 7) and int(march.dataset()["count"].values[in_broken].sum()) == 0
    # a reader's mask of what the period's last run did not write: exactly the failed parent's children
    from granulemap.recipes.atl06.store import cells_not_written

    ids = march.dataset()["cell_ids"].values
    parents_of = ids // 4 ** (CHILD_ORDER - 7)  # nested ids: integer division by the children per parent
    np.testing.assert_array_equal(cells_not_written(attrs, ids, "2019-03-06/2019-03-26"), parents_of == broken)
    np.testing.assert_array_equal(cells_not_written(attrs, ids, (dt.date(2019, 3, 6), dt.date(2019, 3, 26))),
                                  parents_of == broken)
    for typo in ("2019-3-06/2019-03-26", "March 2019", (dt.date(2019, 3, 1), dt.date(2019, 3, 26))):
        with pytest.raises(ValueError, match="holds no period.*2019-03-06/2019-03-26, 2019-03-01/2019-03-31"):
            cells_not_written(attrs, ids, typo)  # was a mask of nothing: "every cell written"
    history = [line for line in attrs["history"].splitlines() if march.catalog.run.run_id in line]
    assert len(history) == 1 and "1 failed, 0 unreadable granules: see incomplete_periods" in history[0]

    failing["on"] = False
    stopped = run_pipeline(tmp_path, moto_s3, "2019-03-06", "2019-03-26", params=params, aggregate=False)
    entry = xr.open_zarr(stopped.store).attrs["incomplete_periods"]["2019-03-06/2019-03-26"]
    assert entry == {"run_id": stopped.catalog.run.run_id, "finished": False}  # its Aggregate never ran
    unfinished = xr.open_zarr(stopped.store)
    assert cells_not_written(unfinished.attrs, unfinished["cell_ids"].values, "2019-03-06/2019-03-26").all()
    again = run_pipeline(tmp_path, moto_s3, "2019-03-06", "2019-03-26", params=params)
    assert again.summary.items.failed == 0 and again.summary.items.skipped == len(again.items)  # the stopped run's
    attrs = xr.open_zarr(again.store).attrs
    assert attrs["incomplete_periods"] == {
        "2019-03-01/2019-03-31": {"run_id": whole.catalog.run.run_id, "finished": True,
                                  "failed_parent_cells": [broken], "unreadable_granules": []}}
    assert int(again.dataset()["count"].values[first_index(again, SITE.cell_a)]) == 5  # 10, 12, 14, 20; 16
    assert not cells_not_written(attrs, again.dataset()["cell_ids"].values, "2019-03-06/2019-03-26").any()


def test_single_files_are_not_items_of_this_recipe() -> None:
    from granulemap.granule_access import GranuleAccess
    from granulemap.models import Item, RunContext

    run = RunContext(run_id="r", recipe=recipe.name, params={}, config_id="c")
    item = Item(id="ATL06_x", granules=[Granule(url=str(REAL_GRANULE))])
    with pytest.raises(InvalidInput, match="not a parent cell"):
        recipe.process(item, recipe.parse_params({}), GranuleAccess(run), run)


def test_the_map_of_a_track_s_cells_is_at_least_half_as_wide_as_tall(monkeypatch) -> None:
    """One granule's cells lie along a near-meridional track: fitted to them, the map was a sliver whose longitude
    labels overlapped. The axes keep the cos-latitude aspect and widen around the cells."""
    import math

    import matplotlib.figure

    from granulemap.recipes.atl06.cells import cell_ids
    from granulemap.recipes.atl06.plot import plot_cells

    seen = {}
    save = matplotlib.figure.Figure.savefig

    def record(fig, *args, **kwargs):
        ax = fig.axes[0]
        seen.update(x=ax.get_xlim(), y=ax.get_ylim(), title=ax.get_title())
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    lats = np.array([-23.5, -24.0, -24.4])
    lons = np.array([-124.62, -124.60, -124.58])
    cells = cell_ids(lats, lons, 12)
    png = plot_cells(cells, 12, np.array([1.0, 2.0, 3.0]), title="t", label="h")
    assert png.startswith(b"\x89PNG")
    width = (seen["x"][1] - seen["x"][0]) * math.cos(math.radians(24.0))
    height = seen["y"][1] - seen["y"][0]
    assert width >= 0.5 * height * 0.95  # the median latitude's cos, against the 24° used here
    assert seen["x"][0] < lons.min() and lons.max() < seen["x"][1]  # the cells stay in view


def _drawn_map(monkeypatch, lats, lons, order=12):
    """The map plot_cells draws of the cells holding these points, as drawn: its axes, image and colour bar."""
    import matplotlib.figure

    from granulemap.recipes.atl06.cells import cell_ids
    from granulemap.recipes.atl06.plot import plot_cells

    seen = {}
    save = matplotlib.figure.Figure.savefig

    def record(fig, *args, **kwargs):
        fig.canvas.draw()
        ax = fig.axes[0]
        seen.update(ax=ax.get_window_extent(), image=np.asarray(ax.images[0].get_array()),
                    bar=(ax.child_axes or fig.axes[1:])[0].get_window_extent(), title=ax.title.get_window_extent(),
                    figure=fig.bbox)
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    cells = np.unique(cell_ids(np.asarray(lats, dtype=float), np.asarray(lons, dtype=float), order))
    assert plot_cells(cells, order, np.arange(cells.size, dtype=float), title="ATL06 weighted mean height per "
                      "HEALPix order-12 cell, 2019-03-01..2019-03-31 (812 cells, 4 granules)",
                      label="h").startswith(b"\x89PNG")
    return seen


def test_a_wide_map_keeps_every_row_and_column_and_a_colour_bar_as_tall_as_itself(monkeypatch) -> None:
    """Two tracks 70° of longitude apart near the pole: the raster was finer than the axes on the page, so drawing it
    (nearest interpolation) dropped rows and columns, and the lone tracks with them; the colour bar, as tall as a
    square figure, rose above the strip of a map into its title."""
    lats = np.r_[np.linspace(-75, -74, 200), np.linspace(-80, -79, 200)]
    lons = np.r_[np.linspace(-100, -99, 200), np.linspace(-30, -29.9, 200)]
    seen = _drawn_map(monkeypatch, lats, lons)
    rows, columns = seen["image"].shape
    assert columns <= seen["ax"].width and rows <= seen["ax"].height
    assert abs(seen["bar"].height - seen["ax"].height) < 1.5 and abs(seen["bar"].y0 - seen["ax"].y0) < 1.5
    assert seen["bar"].y1 < seen["title"].y0  # the bar stays below the title
    assert seen["title"].x0 >= seen["figure"].x0 and seen["title"].x1 <= seen["figure"].x1  # the title is wrapped


def test_a_block_of_cells_with_data_is_drawn_without_false_gaps(monkeypatch) -> None:
    """Every cell of a 0.8° by 3° block near 77.6°S has data: no pixel inside the block may be empty (pixels one cell
    wide left about a third of them empty, a checkerboard that read as gaps in the data)."""
    lat, lon = np.meshgrid(np.linspace(-78, -77.2, 200), np.linspace(160, 163, 200))
    image = _drawn_map(monkeypatch, lat.ravel(), lon.ravel())["image"]
    inner = np.ma.getdata(image)[3:-3, 3:-3]  # the edge pixels lie partly outside the block
    assert inner.size > 100 and np.isfinite(inner).all()


def _drawn_image(monkeypatch, draw) -> dict:
    """The raster a plot function draws (its image's array and extent) and its title, from the figure as saved."""
    import matplotlib.figure

    seen = {}
    save = matplotlib.figure.Figure.savefig

    def record(fig, *args, **kwargs):
        image = fig.axes[0].images[0]
        seen.update(image=np.ma.filled(np.asarray(image.get_array(), dtype=float), np.nan), extent=image.get_extent(),
                    title=fig.axes[0].get_title())
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    draw()
    monkeypatch.undo()
    return seen


def _pixel_means(cells: np.ndarray, order: int, values: np.ndarray, extent: tuple, shape: tuple) -> np.ndarray:
    """The mean value of the cells whose centre falls in each pixel of a lon/lat grid of ``shape`` over ``extent``
    (west, east, south, north), in float64 from the cells' centres: what the drawn image must hold."""
    from granulemap.recipes.atl06.cells import cell_centres

    keep = np.isfinite(values)
    lat, lon = cell_centres(cells[keep], order)
    west, east, south, north = extent
    ny, nx = shape
    row = np.clip(np.floor((lat - south) / (north - south) * ny), 0, ny - 1).astype(int)
    col = np.clip(np.floor((lon - west) / (east - west) * nx), 0, nx - 1).astype(int)
    total, count = np.zeros(shape), np.zeros(shape)
    np.add.at(total, (row, col), values[keep])
    np.add.at(count, (row, col), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


@pytest.mark.parametrize(("order", "south", "north", "west", "east"), [
    (12, -78.0, -70.0, 150.0, 170.0),         # the recipe's order, over part of Antarctica
    (18, 65.0, 65.02, 179.93, 179.999),        # fine cells beside the antimeridian: float32 degrees are coarse there
    (16, 88.9, 89.1, -40.0, -39.0),           # near the pole
])
def test_a_period_drawn_a_batch_at_a_time_holds_each_pixel_s_mean_of_its_cells(monkeypatch, order, south, north, west,
                                                                               east) -> None:
    """Aggregate draws a period from the store's batches (a global month has tens of millions of cells with data),
    keeping each cell's centre compactly: every pixel of the drawn map holds the mean of the cells whose centre (in
    float64) lies in it, and the title counts the cells drawn (NaN values are not drawn)."""
    from granulemap.recipes.atl06.cells import cell_ids
    from granulemap.recipes.atl06.plot import plot_cell_batches

    lat, lon = np.meshgrid(np.linspace(south, north, 300), np.linspace(west, east, 300))
    cells = np.unique(cell_ids(lat.ravel(), lon.ravel(), order))
    values = np.random.default_rng(1).normal(1000.0, 50.0, cells.size)
    values[::97] = np.nan
    size = cells.size // 5 + 1
    parts = [(cells[i:i + size], values[i:i + size]) for i in range(0, cells.size, size)]
    drawn = _drawn_image(monkeypatch, lambda: plot_cell_batches(iter(parts), order, title=lambda n: f"{n} cells",
                                                                label="h"))
    assert len(parts) == 5 and cells.size > 4000 and drawn["image"].size > 1000
    expected = _pixel_means(cells, order, values, drawn["extent"], drawn["image"].shape)
    assert np.array_equal(np.isnan(drawn["image"]), np.isnan(expected))  # the same pixels hold cells
    np.testing.assert_allclose(drawn["image"], expected, rtol=1e-6, equal_nan=True)
    assert drawn["title"] == f"{int(np.isfinite(values).sum())} cells"


def test_a_track_across_the_antimeridian_is_drawn_in_one_piece_with_longitudes_labelled_within_180(
        monkeypatch) -> None:
    """A track from 179°E to 179°W near the Ross Ice Shelf was drawn on a map 360° wide: its cells, at both edges of a
    thin strip, could not be seen. Each pixel still holds the mean of the cells whose centres lie in it."""
    import matplotlib.figure

    from granulemap.recipes.atl06.cells import cell_ids
    from granulemap.recipes.atl06.plot import label_decimals, lon_label, plot_cell_batches

    lat = np.linspace(-80.0, -78.0, 2000)
    lon = (np.linspace(179.0, 181.0, 2000) + 180.0) % 360.0 - 180.0  # 179.0 .. 180 .. -179.0
    order = 12
    cells, index = np.unique(cell_ids(lat, lon, order), return_index=True)
    values = lat[index] * 10.0
    drawn: dict = {}
    save = matplotlib.figure.Figure.savefig

    def record(fig, *args, **kwargs):
        fig.canvas.draw()
        image = fig.axes[0].images[0]
        drawn.update(image=np.ma.filled(np.asarray(image.get_array(), dtype=float), np.nan),
                     extent=image.get_extent(), labels=[t.get_text() for t in fig.axes[0].get_xticklabels()])
        return save(fig, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(matplotlib.figure.Figure, "savefig", record)
        plot_cell_batches(iter([(cells, values)]), order, title=str, label="h")
    west, east, _, _ = drawn["extent"]
    assert east - west < 10 and west < 180 < east  # one piece, across 180°
    # the expected pixel means, from the cells' centres with longitudes east of 0 (179 .. 181)
    from granulemap.recipes.atl06 import cells as cells_module

    monkeypatch.setattr(cells_module, "cell_centres", lambda c, o, centres=cells_module.cell_centres: (
        centres(c, o)[0], centres(c, o)[1] % 360.0))
    expected = _pixel_means(cells, order, values, drawn["extent"], drawn["image"].shape)
    assert np.array_equal(np.isnan(drawn["image"]), np.isnan(expected))
    np.testing.assert_allclose(drawn["image"], expected, rtol=1e-6, equal_nan=True)
    labels = [t for t in drawn["labels"] if t]
    assert labels and all(-180 <= float(t.replace("\u2212", "-")) <= 180 for t in labels)
    assert [lon_label(x, 1) for x in (179.5, 180.0, 180.5, -180.0, 0.0)] == ["179.5", "180.0", "-179.5", "-180.0",
                                                                              "0.0"]
    assert [label_decimals(np.array(t)) for t in ([178.5, 180.0, 181.5], [179.9992, 180.0, 180.0008], [179.0, 181.0],
                                                  [179.75, 180.0])] == [1, 4, 0, 2]


def test_drawing_a_period_a_batch_at_a_time_keeps_12_bytes_a_cell() -> None:
    """Each cell drawn costs 12 bytes kept (float32 centre offsets and value), whatever the batches: drawing 6 million
    cells allocates at most 14 bytes a cell more at its peak than drawing 2 million (the batches' own work is the same).
    A median of all latitudes at once cost 8 bytes a cell more (20 in all); drawn all at once, each cell's float64
    centre, pixel indices and the caller's arrays cost several times that: more than the Aggregator's memory for a
    global month (tens of millions of cells)."""
    import tracemalloc

    from granulemap.recipes.atl06.plot import plot_cell_batches

    per = 1 << 18  # batches small beside the cells kept, so that the cost a cell shows in the peak
    space = 12 * 4**12  # order-12 cells

    def batches(total: int):
        rng = np.random.default_rng(0)
        for start in range(0, total, per):
            low = start * (space // total)
            yield np.sort(rng.integers(low, low + per * (space // total), size=per)), rng.normal(500.0, 100.0, per)

    plot_cell_batches(batches(per), 12, title=str, label="h")  # matplotlib's caches, made once
    peaks = {}
    for total in (8 * per, 24 * per):
        tracemalloc.start()
        try:
            assert plot_cell_batches(batches(total), 12, title=str, label="h").startswith(b"\x89PNG")
            peaks[total] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    per_cell = (peaks[24 * per] - peaks[8 * per]) / (16 * per)
    assert per_cell < 14, f"{per_cell:.1f} bytes a cell (peaks {peaks})"
