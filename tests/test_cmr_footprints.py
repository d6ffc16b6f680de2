"""Granule footprints from CMR for recipes that split by area (atl06-cell-stats): BuildCatalog against CMR answers
replayed with `responses` and S3 by a moto server.

The real ATL06 record (tests/data/cmr/earthaccess_atl06_granule_umm_json.json, NSIDC_ECS) describes its extent by
orbit parameters only; CMR's legacy JSON of the same granule (earthaccess_atl06_granule_legacy_json.json) carries
the polygon CMR computes from them. Edits, all made here in memory and never to the files:
- the UMM record gets the direct s3:// link and the provider (NSIDC_CPRD) of the granule's Earthdata Cloud copy: the
  recorded one is the on-premises copy, which has https links only;
- the collection lookup answer (the MUR v4.1 record; earthaccess reads only its provider-id) names NSIDC_CPRD;
- tests that need more granules, pages or other shapes say what they change.
The legacy answer is served unedited, although CMR recorded it for a query by concept id.
"""

# ruff: noqa: F811  (test parameters take the names of the fixtures imported from the support module)

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import healpix_geo
import numpy as np
import pytest
import requests
import responses
from matplotlib.path import Path as PlanePath

from granulemap import cmr, layout
from granulemap.catalog import build_catalog
from granulemap.errors import CatalogError, SourceUnavailable
from granulemap.models import ExecutionInput
from granulemap.recipes import get_recipe
from granulemap.settings import Settings
from granulemap.storage import Bucket, zarr_store

from test_cmr import (
    CMR_SEARCH,
    SSH,
    _with_header,
    _without_header,
    load,
    mur_collection,
    replay_cmr,
    search_after_token,
    ssh_page,
)
from test_atl06_synthetic_granule import MotoS3, moto_s3  # noqa: F401  (a fixture, imported by name for pytest)

ATL06 = "ATL06"
PROVIDER = "NSIDC_CPRD"
NAME = "ATL06_20190221121851_08410203_005_01.h5"
S3_LINK = f"s3://nsidc-cumulus-prod-protected/ATLAS/ATL06/005/2019/02/21/{NAME}"
LEGACY_URL = f"{CMR_SEARCH}/granules.json"
PARENT_ORDER = 6  # the recipe's default parent_order
recipe = get_recipe("atl06-cell-stats")


# ---- the recorded answers, with the edits the module docstring lists ------------------------------------------
def legacy_page() -> dict[str, Any]:
    """The real legacy-JSON answer: one entry, G2159085058-NSIDC_ECS, with one polygon."""
    return load("earthaccess_atl06_granule_legacy_json.json")


def cloud_umm_page() -> dict[str, Any]:
    """The real UMM answer, as the granule's Earthdata Cloud copy would be listed (see the module docstring)."""
    page = load("earthaccess_atl06_granule_umm_json.json")
    (item,) = page["items"]
    item["meta"]["provider-id"] = PROVIDER
    item["umm"]["RelatedUrls"].append({"URL": S3_LINK, "Type": "GET DATA VIA DIRECT ACCESS",
                                       "Description": "This link provides direct download access via S3."})
    return page


def nsidc_collection() -> dict[str, Any]:
    collection = mur_collection()
    collection["items"][0]["meta"]["provider-id"] = PROVIDER
    return collection


def legacy_polygon(entry: dict[str, Any]) -> list[tuple[float, float]]:
    """The entry's outer ring as (lon, lat), read here from CMR's "lat lon lat lon ..." string."""
    numbers = [float(v) for v in entry["polygons"][0][0].split()]
    return [(numbers[i + 1], numbers[i]) for i in range(0, len(numbers), 2)]


def replay_legacy(rs: responses.RequestsMock, pages: list[dict[str, Any]]) -> None:
    """CMR's granules.json answers to one search returning ``pages`` in order, paged with CMR-Search-After."""
    hits = sum(len(p["feed"]["entry"]) for p in pages)
    for number, page in enumerate(pages, start=1):
        asked_with = (_without_header("CMR-Search-After") if number == 1
                      else _with_header("CMR-Search-After", search_after_token(number - 1)))
        rs.get(LEGACY_URL, json=page, headers={"CMR-Hits": str(hits), "CMR-Search-After": search_after_token(number)},
               match=[asked_with])


def legacy_requests(rs: responses.RequestsMock) -> list[Any]:
    return [c.request for c in rs.calls if c.request.url.split("?")[0] == LEGACY_URL]


def umm_page_requests(rs: responses.RequestsMock) -> list[Any]:
    return [c.request for c in rs.calls
            if "/granules.umm_json" in c.request.url and c.request.params["page_size"] != "0"]


# ---- the expected cells, computed without the recipe's code (healpix_geo, not mortie) --------------------------
def covered_parent_cells(ring: list[tuple[float, float]], order: int) -> set[int]:
    """Parent cells holding a point of the polygon: its edges sampled every ~100 m along great circles (CMR's edges
    are great-circle arcs), and a 0.05° grid of its interior (inside the ring densified by every tenth sample, ~1 km
    apart, where straight lines in lon/lat are close enough to the arcs); cell ids by healpix_geo on WGS84."""
    lon, lat = np.deg2rad(np.asarray(ring, float).T)
    xyz = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)
    samples = []
    for a, b in zip(xyz[:-1], xyz[1:], strict=True):
        steps = max(2, int(np.arccos(np.clip(a @ b, -1, 1)) * 6371 / 0.1))
        t = np.linspace(0, 1, steps)[:, None]
        p = a * (1 - t) + b * t
        samples.append(p / np.linalg.norm(p, axis=1, keepdims=True))
    edges = np.concatenate(samples)
    edge_lon = np.rad2deg(np.arctan2(edges[:, 1], edges[:, 0]))
    edge_lat = np.rad2deg(np.arcsin(edges[:, 2]))
    grid_lon, grid_lat = (g.ravel() for g in np.meshgrid(np.arange(edge_lon.min(), edge_lon.max(), 0.05),
                                                         np.arange(edge_lat.min(), edge_lat.max(), 0.05)))
    inside = PlanePath(np.c_[edge_lon, edge_lat][::10]).contains_points(np.c_[grid_lon, grid_lat])
    cells = healpix_geo.nested.lonlat_to_healpix(np.r_[edge_lon, grid_lon[inside]], np.r_[edge_lat, grid_lat[inside]],
                                                 order, ellipsoid="WGS84")
    return {int(c) for c in cells}


# ---- fixtures -------------------------------------------------------------------------------------------------
@pytest.fixture
def bucket(moto_s3: MotoS3) -> Bucket:
    """The moto S3 server of the ATL06 tests: the recipe's store template is written with s3fs, which moto's
    in-process mock (mock_aws) does not reach, and `responses` lets boto3's and s3fs's traffic pass untouched."""
    return Bucket(moto_s3.bucket, client=moto_s3.client)


def settings_for(bucket: Bucket) -> Settings:
    return Settings(bucket=bucket.name)


ATL06_DAY = {"recipe": "atl06-cell-stats", "start": "2019-02-21", "end": "2019-02-21"}


# ---- atl06-cell-stats from CMR --------------------------------------------------------------------------------
def test_atl06_items_from_cmr_are_the_parent_cells_of_the_legacy_polygon(bucket) -> None:
    legacy = legacy_page()
    (entry,) = legacy["feed"]["entry"]
    expected = covered_parent_cells(legacy_polygon(entry), PARENT_ORDER)
    with responses.RequestsMock() as rs:  # every registered answer must be asked for
        replay_cmr(rs, [cloud_umm_page()], collection=nsidc_collection())
        replay_legacy(rs, [legacy])
        out = build_catalog(ATL06_DAY, "run-atl06-cmr", settings_for(bucket), bucket)
        (umm_request,) = umm_page_requests(rs)
        (legacy_request,) = legacy_requests(rs)
    manifest = bucket.get_json(layout.manifest_key("run-atl06-cmr"))

    assert {item["extra"]["parent_cell"] for item in manifest} == expected
    assert 20 < len(expected) < 200  # a ~2,000 km long, narrow track
    assert len(manifest) == out.catalog.count == len(expected)
    # Every item names the granule by its s3:// link, time and production time, and nothing else: no polygon in
    # the manifest. The time is the one in its file name (ATL06_20190221121851_...), as a run on a folder of the
    # files dates it, not the middle of its UMM time range (12:19:05.196 to 12:24:16.042).
    revised = cloud_umm_page()["items"][0]["umm"]["DataGranule"]["ProductionDateTime"]
    assert {json.dumps(g, sort_keys=True) for item in manifest for g in item["granules"]} == {
        json.dumps({"time": "2019-02-21T12:18:51Z", "url": S3_LINK, "revision": revised}, sort_keys=True)}
    assert out.run.daac == PROVIDER
    # The legacy query is the same search as earthaccess's UMM query (only the page size differs).
    assert {k: v for k, v in legacy_request.params.items() if k != "page_size"} == {
        k: v for k, v in umm_request.params.items() if k != "page_size"}
    assert legacy_request.params["provider"] == PROVIDER
    assert legacy_request.params["page_size"] == str(cmr.LEGACY_PAGE_SIZE)
    assert legacy_request.req_kwargs["timeout"] == cmr.CMR_TIMEOUT_SECONDS


def test_umm_gpolygons_are_used_without_asking_for_the_legacy_format(bucket) -> None:
    # Edited: the UMM record is given the legacy polygon as GPolygons (as cloud-native records carry it).
    (entry,) = legacy_page()["feed"]["entry"]
    ring = legacy_polygon(entry)
    page = cloud_umm_page()
    page["items"][0]["umm"]["SpatialExtent"]["HorizontalSpatialDomain"]["Geometry"] = {"GPolygons": [
        {"Boundary": {"Points": [{"Longitude": lon, "Latitude": lat} for lon, lat in ring]}}]}
    with responses.RequestsMock() as rs:
        replay_cmr(rs, [page], collection=nsidc_collection())
        build_catalog(ATL06_DAY, "run-umm-polygons", settings_for(bucket), bucket)
        assert legacy_requests(rs) == []
    manifest = bucket.get_json(layout.manifest_key("run-umm-polygons"))
    assert {item["extra"]["parent_cell"] for item in manifest} == covered_parent_cells(ring, PARENT_ORDER)


def test_a_search_whose_records_would_not_fit_the_function_s_memory_is_refused_before_they_are_fetched(
        bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    """A year of ATL06 worldwide (~78,000 granules) in BuildCatalog's 1152 MB: earthaccess returns every record at
    once, and Lambda ended the function (Runtime.OutOfMemory) saying nothing of why. CMR's count comes first."""
    from granulemap.errors import InvalidInput

    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1152")  # as Lambda (and the local engine) set it
    year = {"recipe": "atl06-cell-stats", "start": "2019-01-01", "end": "2019-12-31"}
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rs:
        rs.get(f"{CMR_SEARCH}/collections.umm_json", json=nsidc_collection())
        rs.get(f"{CMR_SEARCH}/granules.umm_json", json={"hits": 78_000, "took": 5, "items": []},
               headers={"CMR-Hits": "78000"})  # any page size: a page asked for would be answered with none
        with pytest.raises(InvalidInput) as refused:
            build_catalog(year, "run-a-year", settings_for(bucket), bucket)
        asked = [c.request.params.get("page_size") for c in rs.calls if "/granules.umm_json" in c.request.url]
    needed = 220 + 78_000 * 90 / 1024  # the measured cost, BENCHMARKS.md (cmr.FOOTPRINT_SEARCH_*)
    assert str(refused.value) == (
        f"field 'end': NASA CMR lists 78,000 granules of ATL06 from 2019-01-01 to 2019-12-31: BuildCatalog would "
        f"need about {needed:,.0f} MB to hold them (about 90 KB each), more than its 1152 MB (template.yaml's "
        "CatalogBuilderMemorySize). Run shorter ranges (a month at a time), give a bbox, or raise "
        "CatalogBuilderMemorySize")
    assert set(asked) == {"0"}  # only counted, never fetched
    assert list(bucket.keys("runs/run-a-year/")) == []  # nothing written
    # a day's search is well within it: counted, then fetched
    with responses.RequestsMock() as rs:
        replay_cmr(rs, [cloud_umm_page()], collection=nsidc_collection())
        replay_legacy(rs, [legacy_page()])
        assert build_catalog(ATL06_DAY, "run-a-day", settings_for(bucket), bucket).catalog.count > 0


def test_legacy_pages_are_followed_and_joined_by_concept_id(monkeypatch: pytest.MonkeyPatch) -> None:
    # Edited: a second granule (the same record renamed, concept id G1000000001-NSIDC_ECS, a polygon moved 20°
    # east) and a third whose polygon CMR does not list; legacy pages of one entry each, in another order than UMM's.
    monkeypatch.setattr(cmr, "LEGACY_PAGE_SIZE", 1)
    first_umm, first_legacy = cloud_umm_page(), legacy_page()

    def renamed(umm_page: dict[str, Any], legacy: dict[str, Any], number: int, shift: float):
        umm_page, legacy = copy.deepcopy(umm_page), copy.deepcopy(legacy)
        concept_id, name = f"G100000000{number}-NSIDC_ECS", NAME.replace("08410203", f"0841020{number}")
        item, entry = umm_page["items"][0], legacy["feed"]["entry"][0]
        item["meta"]["concept-id"] = entry["id"] = concept_id
        umm_page = json.loads(json.dumps(umm_page).replace(NAME, name))
        ring = [(lon + shift, lat) for lon, lat in legacy_polygon(entry)]
        entry["polygons"] = [[" ".join(f"{lat} {lon}" for lon, lat in ring)]]
        return umm_page, legacy, ring

    second_umm, second_legacy, second_ring = renamed(first_umm, first_legacy, 1, 20.0)
    third_umm, _, _ = renamed(first_umm, first_legacy, 2, 0.0)
    with responses.RequestsMock() as rs:
        replay_cmr(rs, [first_umm, second_umm, third_umm], collection=nsidc_collection())
        replay_legacy(rs, [second_legacy, first_legacy, {"feed": {"entry": []}}])
        granules, provider, _ = cmr.search_granules(ATL06, dt.date(2019, 2, 21), dt.date(2019, 2, 21), None,
                                                    footprints=True)
        sent = [r.headers.get("CMR-Search-After") for r in legacy_requests(rs)]
    assert sent == [None, search_after_token(1), search_after_token(2)]
    by_name = {g.url.rsplit("/", 1)[-1]: g.footprint for g in granules}
    assert by_name[NAME] == [legacy_polygon(first_legacy["feed"]["entry"][0])]
    assert by_name[NAME.replace("08410203", "08410201")] == [second_ring]
    assert by_name[NAME.replace("08410203", "08410202")] is None  # CMR had no polygon for it
    assert provider == PROVIDER


def test_a_malformed_legacy_polygon_leaves_that_granule_without_a_footprint() -> None:
    # Edited: the polygon string loses its last number (an odd count of coordinates).
    legacy = legacy_page()
    (entry,) = legacy["feed"]["entry"]
    entry["polygons"] = [[entry["polygons"][0][0].rsplit(" ", 1)[0]]]
    with responses.RequestsMock() as rs:
        replay_cmr(rs, [cloud_umm_page()], collection=nsidc_collection())
        replay_legacy(rs, [legacy])
        (granule,), _, _ = cmr.search_granules(ATL06, dt.date(2019, 2, 21), dt.date(2019, 2, 21), None,
                                               footprints=True)
    assert granule.url == S3_LINK and granule.footprint is None


def test_a_granule_without_any_polygon_stops_the_atl06_catalog_with_a_reason(bucket) -> None:
    with responses.RequestsMock() as rs:
        replay_cmr(rs, [cloud_umm_page()], collection=nsidc_collection())
        replay_legacy(rs, [{"feed": {"updated": "2023-03-12T23:04:51.335Z", "entry": []}}])
        with pytest.raises(CatalogError, match="1 of 1 granules from CMR have no polygon footprint"):
            build_catalog(ATL06_DAY, "run-no-polygon", settings_for(bucket), bucket)
    assert bucket.get_json_or_none(layout.manifest_key("run-no-polygon")) is None


@pytest.mark.parametrize("answer, error, message", [
    ({"status": 503, "json": {"errors": ["Service temporarily busy"]}}, SourceUnavailable, "CMR answered 503"),
    ({"status": 429, "json": {"errors": ["Too many requests"]}}, SourceUnavailable, "CMR answered 429"),
    ({"body": requests.exceptions.ReadTimeout("read timed out")}, SourceUnavailable, "did not answer within"),
    ({"body": requests.exceptions.ConnectionError("reset")}, SourceUnavailable, "cannot reach CMR"),
    ({"status": 200, "body": "<html>maintenance</html>"}, SourceUnavailable, "unreadable answer"),
    ({"status": 200, "json": {"hits": 1}}, SourceUnavailable, "unreadable answer"),
    ({"status": 400, "json": {"errors": ["Parameter [foo] was not recognized."]}}, CatalogError,
     r"\(400\): Parameter \[foo\] was not recognized"),
])
def test_legacy_query_failures_are_named_like_the_search_s(answer: dict[str, Any], error: type, message: str) -> None:
    with responses.RequestsMock() as rs:
        replay_cmr(rs, [cloud_umm_page()], collection=nsidc_collection())
        rs.get(LEGACY_URL, **answer)
        with pytest.raises(error, match=message) as raised:
            cmr.search_granules(ATL06, dt.date(2019, 2, 21), dt.date(2019, 2, 21), None, footprints=True)
    assert "ATL06 footprints" in str(raised.value)


# ---- recipes that need no footprints pay nothing --------------------------------------------------------------
def test_an_sst_catalog_never_asks_for_the_legacy_format(bucket) -> None:
    page = ssh_page()
    assert cmr.footprint_from_umm(page["items"][0]["umm"]) == []  # a footprint-needing recipe would have asked
    assert not get_recipe("sst-global-mean").needs_footprints
    raw = {"recipe": "sst-global-mean", "start": "2020-01-01", "end": "2020-01-03", "collection": SSH}
    with responses.RequestsMock() as rs:
        replay_cmr(rs, [page])
        build_catalog(raw, "run-sst", settings_for(bucket), bucket)
        assert legacy_requests(rs) == []
        assert all("/granules.umm_json" in c.request.url or "/collections.umm_json" in c.request.url
                   for c in rs.calls)
    assert "footprint" not in json.dumps(bucket.get_json(layout.manifest_key("run-sst")))


def test_the_manifest_never_carries_footprints_whichever_recipe_asked_for_them(
        bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    # A recipe that asks for footprints but keeps the default split (one item per granule, the granule as found);
    # edited: the SSH record is given a GPolygon (a box around its global grid).
    sst = get_recipe("sst-global-mean")
    monkeypatch.setattr(type(sst), "needs_footprints", True)
    page = ssh_page()
    box = [(-180.0, -80.0), (180.0, -80.0), (180.0, 80.0), (-180.0, 80.0), (-180.0, -80.0)]
    page["items"][0]["umm"]["SpatialExtent"]["HorizontalSpatialDomain"]["Geometry"] = {"GPolygons": [
        {"Boundary": {"Points": [{"Longitude": lon, "Latitude": lat} for lon, lat in box]}}]}
    seen: list[Any] = []
    default_split = type(sst).make_items

    def make_items(self: Any, granules: list[Any], *args: Any) -> Any:
        seen.extend(granules)
        return default_split(self, granules, *args)

    monkeypatch.setattr(type(sst), "make_items", make_items)
    raw = {"recipe": "sst-global-mean", "start": "2020-01-01", "end": "2020-01-03", "collection": SSH}
    with responses.RequestsMock() as rs:
        replay_cmr(rs, [page])
        build_catalog(raw, "run-sst-footprints", settings_for(bucket), bucket)
    assert [g.footprint for g in seen] == [[box]]  # make_items had the polygon (one ring)
    (item,) = bucket.get_json(layout.manifest_key("run-sst-footprints"))
    assert set(item["granules"][0]) == {"url", "time", "revision"}  # the manifest has none


# ---- one period for the whole catalog -------------------------------------------------------------------------
def test_a_monthly_atl06_run_files_its_items_and_store_entry_under_the_month_it_searched(bucket) -> None:
    from granulemap.recipes.atl06.store import read_layout

    # A month's run (ATL06 is run by hand once a month is published: recipe.runs_on_schedule), started on 2019-03-10.
    started = dt.datetime(2019, 3, 10, 0, 0, 5, tzinfo=dt.UTC)
    with responses.RequestsMock() as rs:
        replay_cmr(rs, [cloud_umm_page()], collection=nsidc_collection())
        replay_legacy(rs, [legacy_page()])
        out = build_catalog({"recipe": "atl06-cell-stats", "period": "2019-02"}, "run-monthly",
                            settings_for(bucket), bucket, now=started)
        searched = {r.params["temporal[]"] for r in umm_page_requests(rs) + legacy_requests(rs)}
    february = (dt.date(2019, 2, 1), dt.date(2019, 2, 28))
    # February, a day wider on each side (granules are dated by their file names, which may lie just outside their
    # CMR time range: cmr.search_granules), then only February's granules kept
    assert searched == {"2019-01-31T00:00:00Z,2019-03-01T23:59:59Z"}
    assert (out.run.start, out.run.end) == february
    assert out.catalog.count > 0  # the 2019-02-21 granule was found in that month
    items = bucket.get_json(out.catalog.key)
    assert all(item["id"].startswith("20190201-20190228-") for item in items)
    store = read_layout(zarr_store(bucket.name, layout.output_key(recipe.name, out.run.config_id,
                                                                "atl06-cell-stats.zarr")))
    assert store is not None and store.periods[-1] == february  # the module's other runs added theirs before
    assert {item["extra"]["store_id"] for item in items} == {store.store_id}


def test_a_period_is_resolved_once_into_dates() -> None:
    monthly = ExecutionInput(recipe="atl06-cell-stats", period="previous-month")
    resolved = monthly.resolved(dt.datetime(2019, 1, 31, 23, 59, tzinfo=dt.UTC))
    assert (resolved.period, resolved.start, resolved.end) == (None, dt.date(2018, 12, 1), dt.date(2018, 12, 31))


def test_a_bbox_run_records_its_bbox_in_the_run_the_provenance_and_its_store(bucket) -> None:
    """The bbox is part of an atl06-cell-stats configuration (its own store), but was written nowhere a reader could
    see it: a store made with one could be told from another only by the hash in its key."""
    import zarr

    from granulemap.models import ItemCounts
    from granulemap.provenance import provenance_record

    box = [-50.0, 60.0, -40.0, 70.0]
    with responses.RequestsMock() as rs:
        replay_cmr(rs, [cloud_umm_page()], collection=nsidc_collection())
        replay_legacy(rs, [legacy_page()])
        out = build_catalog({**ATL06_DAY, "bbox": box}, "run-atl06-bbox", settings_for(bucket), bucket)
        (umm_request,) = umm_page_requests(rs)
    assert umm_request.params["bounding_box"] == "-50.0,60.0,-40.0,70.0"  # the search the run made
    assert list(out.run.bbox) == box
    counts = ItemCounts(total=out.catalog.count, succeeded=0, failed=out.catalog.count, skipped=0)
    assert provenance_record(out.run, [], counts)["bbox"] == box
    recipe.combine([], out.run, recipe.parse_params({}), bucket)  # every item failed: the attributes are written
    store_key = layout.output_key(recipe.name, out.run.config_id, "atl06-cell-stats.zarr")
    attrs = zarr.open_group(zarr_store(bucket.name, store_key), mode="r").attrs
    assert attrs["bbox"] == box and "narrowed to it" in attrs["bbox_comment"]
