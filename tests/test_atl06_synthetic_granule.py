"""Synthetic ATL06 granules and the shared fixtures of the test_atl06_* modules.

The granules are generated here, with netCDF4 (netCDF-4 files are HDF5 files with groups, which h5coro reads), and
every file name says SYNTHETIC. Their positions are chosen with healpix_geo, the WGS84 HEALPix library xdggs uses:
independent of mortie and of granulemap's code, so expected cells are never taken from the code under test.
"""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import healpix_geo
import netCDF4
import numpy as np
import pytest
import xarray as xr
from zarr.abc.store import Store

from granulemap import layout
from granulemap.aggregation import aggregate as aggregate_run
from granulemap.catalog import build_catalog
from granulemap.models import AggregatorEvent, CatalogOutput, Item, ProcessorEvent, Summary
from granulemap.processing import failure_record, process_item
from granulemap.recipes.atl06.store import STORE_NAME
from granulemap.settings import Settings
from granulemap.storage import Bucket, zarr_store

from conftest import moto_server_endpoint

DATA = Path(__file__).parent / "data" / "atl06"
REAL_GRANULE = DATA / "ATL06_20181013235645_02340114_209_01.h5"
ATL06_FILL = np.float32(3.4028235e38)
PARENT_ORDER, CHILD_ORDER = 6, 12
N_CHILDREN = 4 ** (CHILD_ORDER - PARENT_ORDER)
BEAMS = ("gt1l", "gt1r", "gt2l", "gt2r", "gt3l", "gt3r")

SYNTHETIC_ONE = "ATL06_20190315101010_12340101_006_01_SYNTHETIC.h5"
SYNTHETIC_TWO = "ATL06_20190316111111_12480101_006_01_SYNTHETIC.h5"


# --- independent HEALPix (WGS84, nested) ----------------------------------------------------------------------
def wgs84_cells(lat: np.ndarray, lon: np.ndarray, order: int) -> np.ndarray:
    """Nested ids of geodetic WGS84 positions, computed by healpix_geo (not mortie)."""
    lat, lon = np.atleast_1d(np.asarray(lat, float)), np.atleast_1d(np.asarray(lon, float))
    return healpix_geo.nested.lonlat_to_healpix(lon, lat, order, ellipsoid="WGS84").astype(np.int64)


def centre(cell: int, order: int) -> tuple[float, float]:
    lon, lat = healpix_geo.nested.healpix_to_lonlat(np.array([cell], np.uint64), order, ellipsoid="WGS84")
    return float(lat[0]), float((lon[0] + 180.0) % 360.0 - 180.0)


def corners(cell: int, order: int, step: int = 1) -> list[tuple[float, float]]:
    """(lat, lon) of the cell's corners; with step=2 also the middles of its edges."""
    lon, lat = healpix_geo.nested.vertices(np.array([cell], np.uint64), order, ellipsoid="WGS84", step=step)
    return [(float(a), float((o + 180.0) % 360.0 - 180.0)) for a, o in zip(lat[0], lon[0], strict=True)]


def cells_touching(lat: float, lon: float, order: int, step: float = 1e-7) -> set[int]:
    """The cells around a point (it and eight points step degrees away): for a vertex, the cells sharing it."""
    offsets = np.array([-step, 0.0, step])
    dlat, dlon = np.meshgrid(offsets, offsets)
    return set(wgs84_cells(lat + dlat.ravel(), lon + dlon.ravel(), order).tolist())


def neighbours(cell: int, order: int) -> list[int]:
    found = healpix_geo.nested.neighbours(np.array([cell], np.uint64), order, connectivity="all")[0]
    return [int(c) for c in found if c >= 0]


@dataclass(frozen=True)
class Site:
    """Cells the synthetic granules are built around: parent P with children A, B, C; its neighbours Q and R."""

    parent: int
    neighbour: int
    empty_parent: int
    cell_a: int
    cell_b: int
    cell_c: int

    @classmethod
    def near(cls, lat: float, lon: float) -> Site:
        parent = int(wgs84_cells(lat, lon, PARENT_ORDER)[0])
        edge = healpix_geo.nested.neighbours(np.array([parent], np.uint64), PARENT_ORDER, connectivity="edge")[0]
        first = parent * N_CHILDREN
        return cls(parent=parent, neighbour=int(edge[0]), empty_parent=int(edge[2]),
                   cell_a=first + 100, cell_b=first + 2000, cell_c=first + 3000)


SITE = Site.near(-72.5, 31.0)


def parent_border_points(site: Site) -> list[tuple[float, float]]:
    """Two points on the parent cell's border, each touching P and one other parent that is neither Q nor R (so
    the statistics of Q and R never depend on where a border point goes)."""
    found = []
    for lat, lon in corners(site.parent, PARENT_ORDER, step=2):
        touching = cells_touching(lat, lon, PARENT_ORDER)
        if len(touching) == 2 and site.parent in touching and not {site.neighbour, site.empty_parent} & touching:
            found.append((lat, lon))
    assert len(found) >= 2, "the site needs two edge middles of P away from Q and R"
    return found[:2]


@dataclass(frozen=True)
class Segment:
    lat: float
    lon: float
    h: float
    sigma: float
    quality: int = 0
    border: bool = False
    """On a cell border (a HEALPix vertex): which of the touching cells gets it is the implementation's choice."""
    time: dt.datetime | None = None
    """When it was measured (UTC); None: a second after the one before, from 30 s after the file name's time."""

    @property
    def usable(self) -> bool:
        """What the recipe must keep: good quality, height and sigma finite and not the fill value."""
        return (self.quality == 0 and np.isfinite(self.h) and np.float32(self.h) != ATL06_FILL
                and np.isfinite(self.sigma) and np.float32(self.sigma) != ATL06_FILL and self.sigma > 0)


def at(cell: int, order: int = CHILD_ORDER, **values: float) -> Segment:
    lat, lon = centre(cell, order)
    return Segment(lat=lat, lon=lon, **values)  # type: ignore[arg-type]


def granule_one(site: Site = SITE) -> dict[str, list[Segment]]:
    """Cell A: heights 10, 12, 14 (+20 on another beam); fills, a bad flag and NaN that must be dropped; cell B one
    point; three points on cell borders; in the neighbour Q two good points; in parent R only unusable points."""
    p_border = parent_border_points(site)
    c_corner = corners(site.cell_c, CHILD_ORDER)[0]
    return {
        "gt1l": [
            at(site.cell_a, h=10.0, sigma=1.0),
            at(site.cell_a, h=float(ATL06_FILL), sigma=float(ATL06_FILL)),  # fill value with quality 0
            at(site.cell_a, h=12.0, sigma=1.0),
            at(site.cell_a, h=1000.0, sigma=1.0, quality=1),  # bad quality flag
            at(site.cell_a, h=float("nan"), sigma=1.0),  # non-finite height
            at(site.cell_a, h=14.0, sigma=2.0),
            at(site.cell_a, h=50.0, sigma=float(ATL06_FILL)),  # sigma is the fill value
            at(site.cell_b, h=-5.5, sigma=0.5),
            Segment(*p_border[0], h=100.0, sigma=1.0, border=True),  # on the parent cell's border
            Segment(*p_border[1], h=101.0, sigma=1.0, border=True),
            Segment(*c_corner, h=7.0, sigma=1.0, border=True),  # corner of child C, inside the parent
        ],
        "gt2r": [
            at(site.cell_a, h=20.0, sigma=2.0),
            at(site.neighbour * N_CHILDREN + 7, h=3.0, sigma=0.1),
            at(site.neighbour * N_CHILDREN + 7, h=4.0, sigma=0.2),
            at(site.empty_parent * N_CHILDREN + 9, h=5.0, sigma=1.0, quality=1),
            at(site.empty_parent * N_CHILDREN + 9, h=float(ATL06_FILL), sigma=float(ATL06_FILL)),
        ],
    }


def granule_two(site: Site = SITE) -> dict[str, list[Segment]]:
    """A second pass over cell A (height 16) and the neighbour Q."""
    return {
        "gt3r": [
            at(site.cell_a, h=16.0, sigma=1.0),
            at(site.neighbour * N_CHILDREN + 8, h=2.0, sigma=0.5),
        ],
    }


def without_unusable_values(beams: dict[str, list[Segment]]) -> dict[str, list[Segment]]:
    """The same granule without fill values and non-finite numbers (bad quality flags kept): what zagg, which does
    not mask fill values, must be given to be comparable."""
    def clean(s: Segment) -> bool:
        return s.quality != 0 or s.usable
    return {beam: [s for s in segments if clean(s)] for beam, segments in beams.items()}


GPS_EPOCH = dt.datetime(1980, 1, 6, tzinfo=dt.UTC)
GPS_MINUS_UTC = 18
"""Leap seconds GPS time is ahead of UTC since 2017-01-01 (none inserted since)."""
ATLAS_SDP_GPS_EPOCH = 1198800018.0
"""/ancillary_data/atlas_sdp_gps_epoch of every ATL06 file (the real granule's too): GPS seconds of the epoch that
delta_time counts from."""


def delta_time(when: dt.datetime) -> float:
    """ATL06's delta_time of a UTC time, by its definition: GPS seconds since the ATLAS SDP epoch."""
    return (when - GPS_EPOCH).total_seconds() + GPS_MINUS_UTC - ATLAS_SDP_GPS_EPOCH


def name_time(path: Path) -> dt.datetime:
    """The time in an ATL06 file name (ATL06_YYYYMMDDHHMMSS_...); 2019-01-01 for other names."""
    stamp = path.name[6:20] if path.name.startswith("ATL06_") else "20190101000000"
    return dt.datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC)


def write_granule(path: Path, beams: dict[str, list[Segment]], *, empty_beam_groups: tuple[str, ...] = ("gt3l",),
                  chunk: int = 4) -> Path:
    """Write an ATL06-shaped file: gtXX/land_ice_segments/{delta_time, latitude, longitude, h_li, h_li_sigma,
    atl06_quality_summary}, chunked and compressed as ATL06 is, h_li/h_li_sigma with _FillValue 3.4028235e38."""
    first = name_time(path) + dt.timedelta(seconds=30)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.title = "SYNTHETIC ATL06-shaped granule generated by granulemap's tests"
        for beam in empty_beam_groups:
            ds.createGroup(beam)
        for beam, segments in beams.items():
            group = ds.createGroup(beam).createGroup("land_ice_segments")
            group.createDimension("delta_time", len(segments))
            times = [s.time or first + dt.timedelta(seconds=i) for i, s in enumerate(segments)]
            columns = {
                "delta_time": ("f8", [delta_time(t) for t in times], None),
                "latitude": ("f8", [s.lat for s in segments], None),
                "longitude": ("f8", [s.lon for s in segments], None),
                "h_li": ("f4", [s.h for s in segments], ATL06_FILL),
                "h_li_sigma": ("f4", [s.sigma for s in segments], ATL06_FILL),
                "atl06_quality_summary": ("i1", [s.quality for s in segments], None),
            }
            for name, (dtype, values, fill) in columns.items():
                var = group.createVariable(name, dtype, ("delta_time",), zlib=True, fill_value=fill,
                                           chunksizes=(min(chunk, len(segments)),))
                var.set_auto_maskandscale(False)
                var[:] = np.asarray(values, dtype=dtype)
    return path


# --- fixtures shared by the test_atl06_* modules --------------------------------------------------------------
# The modules import these fixtures; pytest then registers one definition per module, so what must exist once
# per session (the server, the files, the pipeline runs) is made once by the cached functions below.
@functools.cache
def _synthetic_files() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="granulemap-atl06-synthetic-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    write_granule(directory / SYNTHETIC_ONE, granule_one())
    write_granule(directory / SYNTHETIC_TWO, granule_two())
    return directory


@pytest.fixture(scope="module")
def synthetic_dir() -> Path:
    """A directory with the two synthetic granules (and nothing else)."""
    return _synthetic_files()


@dataclass(frozen=True)
class MotoS3:
    endpoint: str
    bucket: str
    client: Any


TEST_BUCKET = "granulemap-atl06-tests"


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[MotoS3]:
    """A moto S3 server on 127.0.0.1 that boto3, s3fs and h5coro (AWS_ENDPOINT_URL[_S3]) all reach, with a bucket
    named in BUCKET_NAME as the Processor Lambda has it. The environment is restored after the module."""
    import boto3

    import granulemap.storage

    endpoint = moto_server_endpoint()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "AWS_ENDPOINT_URL": endpoint, "AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-west-2",
            "AWS_REGION": "us-west-2", "BUCKET_NAME": TEST_BUCKET,
        }.items():
            mp.setenv(key, value)
        granulemap.storage.s3_client.cache_clear()
        client = boto3.client("s3")
        if TEST_BUCKET not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
            client.create_bucket(Bucket=TEST_BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        try:
            yield MotoS3(endpoint=endpoint, bucket=TEST_BUCKET, client=client)
        finally:
            granulemap.storage.s3_client.cache_clear()


# --- the synthetic granules are what they claim to be ---------------------------------------------------------
def test_synthetic_granule_reads_back_through_h5coro_as_written(synthetic_dir: Path) -> None:
    from h5coro import filedriver, h5coro

    h5 = h5coro.H5Coro(str(synthetic_dir / SYNTHETIC_ONE), filedriver.FileDriver)
    for beam, segments in granule_one().items():
        names = ["latitude", "longitude", "h_li", "h_li_sigma", "atl06_quality_summary"]
        read = h5.readDatasets([f"/{beam}/land_ice_segments/{n}" for n in names], block=True)
        values = {n: read[f"/{beam}/land_ice_segments/{n}"] for n in names}
        np.testing.assert_array_equal(values["h_li"], np.array([s.h for s in segments], np.float32))
        np.testing.assert_array_equal(values["atl06_quality_summary"], [s.quality for s in segments])
        np.testing.assert_array_equal(values["latitude"], [s.lat for s in segments])
    fills = [s for s in granule_one()["gt1l"] if np.float32(s.h) == ATL06_FILL and s.quality == 0]
    assert fills, "granule one must hold a fill value with quality 0"


def test_synthetic_site_cells_are_where_the_tests_need_them() -> None:
    site = SITE
    assert {site.neighbour, site.empty_parent} <= set(neighbours(site.parent, PARENT_ORDER))
    assert len({site.parent, site.neighbour, site.empty_parent}) == 3
    for cell in (site.cell_a, site.cell_b, site.cell_c):
        assert cell // N_CHILDREN == site.parent
        lat, lon = centre(cell, CHILD_ORDER)
        assert int(wgs84_cells(lat, lon, CHILD_ORDER)[0]) == cell
    # the border point on C's corner must not land in A or B, whose statistics are checked by hand
    assert not {site.cell_a, site.cell_b} & set(neighbours(site.cell_c, CHILD_ORDER))
    assert os.path.basename(SYNTHETIC_ONE).startswith("ATL06_") and "SYNTHETIC" in SYNTHETIC_ONE


# --- the pipeline's own steps, in the order the state machine runs them ---------------------------------------
@dataclass
class PipelineRun:
    """What one run of BuildCatalog → ProcessItems (every item, failures recorded) → Aggregate left behind."""

    catalog: CatalogOutput
    items: list[Item]
    results: dict[str, dict[str, Any]]
    failures: dict[str, dict[str, str]]
    summary: Summary | None
    bucket: Bucket

    @property
    def store_key(self) -> str:
        return layout.output_key(self.catalog.run.recipe, self.catalog.run.config_id, STORE_NAME)

    @property
    def store(self) -> Store:
        """The configuration's Zarr store (every period), read-only."""
        return zarr_store(self.bucket.name, self.store_key, read_only=True)

    @property
    def period(self) -> tuple[dt.date, dt.date]:
        assert self.catalog.run.start is not None and self.catalog.run.end is not None
        return self.catalog.run.start, self.catalog.run.end

    def time_index(self) -> int:
        """This run's entry along the store's time dimension, found by its CF time bounds (decoded by xarray):
        [first day, day after the last day)."""
        bounds = xr.open_zarr(self.store)["time_bounds"].values
        start, end = self.period
        want = np.array([start, end + dt.timedelta(days=1)], dtype="datetime64[ns]")
        match = np.flatnonzero((bounds == want).all(axis=1))
        assert match.size == 1, (bounds, want)
        return int(match[0])

    def dataset(self) -> xr.Dataset:
        """The store's statistics of this run's period: every variable along ``cells`` only."""
        return xr.open_zarr(self.store).isel(time=self.time_index())


def run_pipeline(source: Path, s3: MotoS3, start: str | None, end: str | None, aggregate: bool = True,
                 now: dt.datetime | None = None, params: dict[str, int] | None = None,
                 period: str | None = None) -> PipelineRun:
    """Run the pipeline's Python steps against the moto S3: build_catalog, process_item for each manifest item
    (a failure stored as RecordFailure stores it), then aggregate. Without start and end, the
    input names a month, ``"period": period`` (checked whole, at ``now``)."""
    bucket = Bucket(s3.bucket, client=s3.client)
    settings = Settings(bucket=s3.bucket, default_tolerated_failure_percentage=100.0)
    dates = {"start": start, "end": end} if start else {"period": period}
    doc = {"recipe": "atl06-cell-stats", **dates, "source": str(source), "params": params or {}}
    catalog = build_catalog(doc, f"test-{uuid.uuid4().hex[:8]}", settings, bucket, now=now)
    items = [Item.model_validate(i) for i in bucket.get_json(catalog.catalog.key)]
    results, failures = {}, {}
    for item in items:
        try:
            stored = process_item(ProcessorEvent(item=item, run=catalog.run), bucket)
            results[item.id] = bucket.get_json(stored.result_key)["result"]
        except Exception as exc:  # the Map's Catch: States.ALL → RecordFailure
            error = {"Error": type(exc).__name__, "Cause": str(exc)}
            bucket.put_json(layout.failure_key(catalog.run.run_id, item.id), error)  # as RecordFailure stores it
            failures[item.id] = failure_record(item, catalog.run, error)
    summary = aggregate_run(AggregatorEvent(**catalog.model_dump()), bucket) if aggregate else None
    return PipelineRun(catalog=catalog, items=items, results=results, failures=failures, summary=summary,
                       bucket=bucket)


_RUNS: dict[tuple[str, str, str], PipelineRun] = {}


def _run_once(source: Path, s3: MotoS3, start: str, end: str) -> PipelineRun:
    key = (str(source), start, end)
    if key not in _RUNS:
        _RUNS[key] = run_pipeline(source, s3, start, end)
    return _RUNS[key]


@pytest.fixture(scope="module")
def real_run(moto_s3: MotoS3) -> PipelineRun:
    """The pipeline over tests/data/atl06 (the real granule, 2018-10-13); one run shared by the modules."""
    return _run_once(DATA, moto_s3, "2018-10-10", "2018-10-14")


@pytest.fixture(scope="module")
def synthetic_run(moto_s3: MotoS3, synthetic_dir: Path) -> PipelineRun:
    """The pipeline over the two synthetic granules (2019-03-15 and 16); one run shared by the modules."""
    return _run_once(synthetic_dir, moto_s3, "2019-03-01", "2019-03-31")
