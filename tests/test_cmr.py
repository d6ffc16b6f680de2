"""BuildCatalog's CMR path: earthaccess's requests answered with recorded CMR pages (tests/data/cmr, see PROVENANCE.md).

earthaccess asks collections.umm_json for the collection's cloud provider, then granules.umm_json with page_size=0
for the hit count (twice), then the pages, sending each answer's CMR-Search-After header back. Where a test needs a
page CMR did not record (a second page, MUR-like time ranges), it edits a copy of the real page and says so.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from typing import Any

import boto3
import pytest
import requests
import responses
from moto import mock_aws

from granulemap import cmr, layout
from granulemap.catalog import build_catalog
from granulemap.errors import CatalogError, InvalidInput, SourceUnavailable
from granulemap.settings import Settings

from conftest import ROOT

CMR_SEARCH = "https://cmr.earthdata.nasa.gov/search"
DATA = ROOT / "tests" / "data" / "cmr"
SSH = "SEA_SURFACE_HEIGHT_ALT_GRIDS_L4_2SATS_5DAY_6THDEG_V_JPL2205"
MUR25 = "MUR25-JPL-L4-GLOB-v04.2"
BUCKET = "granulemap-cmr-test"
_UNPATCHED_REQUEST = requests.Session.request


def load(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


def ssh_page() -> dict[str, Any]:
    """The real recorded granules.umm_json page (one SSH granule of 2020-01-02, provider POCLOUD)."""
    return load("cmr_granules_umm_json_SSH_JPL2205_page1.json")


def mur_collection() -> dict[str, Any]:
    """The real collections.umm_json answer for MUR-JPL-L4-GLOB-v4.1; earthaccess reads only its provider-id."""
    return load("cmr_collections_umm_json_MUR-JPL-L4-GLOB-v4.1.json")


def edited_granule(page: dict[str, Any], old: str, new: str, begin: str, end: str) -> dict[str, Any]:
    """A copy of ``page`` whose granule is renamed ``old`` → ``new`` (in every link) and given another time range.

    Used to build pages CMR did not record: everything else stays as CMR wrote it.
    """
    text = json.dumps(page).replace(old, new)
    edited = json.loads(text)
    for item in edited["items"]:
        item["umm"]["TemporalExtent"] = {"RangeDateTime": {"BeginningDateTime": begin, "EndingDateTime": end}}
    return edited


def direct_links(page: dict[str, Any]) -> list[str]:
    """What CMR marks as direct S3 access, read from the raw UMM (independently of earthaccess)."""
    return [u["URL"] for item in page["items"] for u in item["umm"]["RelatedUrls"]
            if u["Type"] == "GET DATA VIA DIRECT ACCESS"]


def _without_header(name: str) -> Callable[[Any], tuple[bool, str]]:
    def match(request: Any) -> tuple[bool, str]:
        present = name.lower() in {k.lower() for k in request.headers}
        return (not present, f"request carries {name}" if present else "")
    return match


def _with_header(name: str, value: str) -> Callable[[Any], tuple[bool, str]]:
    def match(request: Any) -> tuple[bool, str]:
        got = request.headers.get(name)
        return (got == value, "" if got == value else f"{name} is {got!r}, expected {value!r}")
    return match


def search_after_token(page_number: int) -> str:
    return json.dumps([f"token-after-page-{page_number}", 1577923200000, page_number])


def replay_cmr(rs: responses.RequestsMock, pages: list[dict[str, Any]],
               collection: dict[str, Any] | None = None) -> None:
    """Register CMR's answers to one earthaccess search returning ``pages`` in order (CMR-Hits = their items)."""
    hits = sum(len(p["items"]) for p in pages)
    rs.get(f"{CMR_SEARCH}/collections.umm_json", json=collection or mur_collection())
    rs.get(f"{CMR_SEARCH}/granules.umm_json", json={"hits": hits, "took": 5, "items": []},
           headers={"CMR-Hits": str(hits)},
           match=[responses.matchers.query_param_matcher({"page_size": "0"}, strict_match=False)])
    for number, page in enumerate(pages, start=1):
        asked_with = (_without_header("CMR-Search-After") if number == 1
                      else _with_header("CMR-Search-After", search_after_token(number - 1)))
        rs.get(f"{CMR_SEARCH}/granules.umm_json", json=page,
               headers={"CMR-Hits": str(hits), "CMR-Search-After": search_after_token(number)},
               match=[responses.matchers.query_param_matcher({"page_size": str(hits)}, strict_match=False),
                      asked_with])


def granule_requests(rs: responses.RequestsMock) -> list[Any]:
    return [c.request for c in rs.calls if "/granules.umm_json" in c.request.url]


# ---- search_granules ------------------------------------------------------------------------------------------
def test_search_returns_the_direct_s3_link_nominal_time_and_provider() -> None:
    page = ssh_page()
    (expected_link,) = direct_links(page)
    with responses.RequestsMock() as rs:
        replay_cmr(rs, [page])
        granules, provider, records = cmr.search_granules(SSH, dt.date(2020, 1, 1), dt.date(2020, 1, 3), None)
    assert [g.url for g in granules] == [expected_link]
    assert expected_link.startswith("s3://") and expected_link.endswith(".nc")  # the data file, not its .md5
    assert granules[0].time == dt.datetime(2020, 1, 2, tzinfo=dt.UTC)  # BeginningDateTime == EndingDateTime
    assert provider == "POCLOUD"
    assert records == [page["items"][0]["umm"]]


def test_a_time_in_the_file_name_puts_a_granule_in_the_month_a_run_on_a_folder_of_it_would() -> None:
    """An ATL06 granule from 23:58 on 31 October to 00:04 on 1 November: a folder run dates it by its file name
    (October); from CMR its time range's middle fell in November, so the two runs of one month differed. Edited copy
    of the real page: renamed, and given that time range."""
    from granulemap.recipes import get_recipe

    (link,) = direct_links(ssh_page())
    stem = link.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    page = edited_granule(ssh_page(), stem, "ATL06_20191031235800_05390503_006_01",
                          "2019-10-31T23:58:00Z", "2019-11-01T00:04:00Z")
    by_name = get_recipe("atl06-cell-stats").granule_time

    def search(start: dt.date, end: dt.date, **kwargs: Any) -> list[Any]:
        with responses.RequestsMock() as rs:
            replay_cmr(rs, [page])
            return cmr.search_granules(SSH, start, end, None, **kwargs)[0]

    october, november = (dt.date(2019, 10, 1), dt.date(2019, 10, 31)), (dt.date(2019, 11, 1), dt.date(2019, 11, 30))
    assert [g.time for g in search(*october, time_from_name=by_name)] == [dt.datetime(2019, 10, 31, 23, 58,
                                                                                      tzinfo=dt.UTC)]
    assert search(*november, time_from_name=by_name) == []
    # Named for the last seconds of October, recorded by CMR from 1 November: October's search, a day wider, finds
    # it (else no month would: CMR matches ranges, the month filter names)
    late = edited_granule(ssh_page(), stem, "ATL06_20191031235955_05390503_006_01",
                          "2019-11-01T00:00:09Z", "2019-11-01T00:06:00Z")
    with responses.RequestsMock() as rs:
        replay_cmr(rs, [late])
        found = cmr.search_granules(SSH, *october, None, time_from_name=by_name)[0]
        (asked,) = {c.request.params["temporal[]"] for c in rs.calls if "temporal[]" in c.request.params}
    assert asked == "2019-09-30T00:00:00Z,2019-11-01T23:59:59Z"
    assert [g.time for g in found] == [dt.datetime(2019, 10, 31, 23, 59, 55, tzinfo=dt.UTC)]
    # without a reading of the names: the middle of the time range
    assert search(*october) == []
    assert [g.time for g in search(*november)] == [dt.datetime(2019, 11, 1, 0, 1, tzinfo=dt.UTC)]


def test_a_recipe_that_keeps_only_its_ranges_data_gets_every_granule_whose_time_range_overlaps_it() -> None:
    """atl06-cell-stats (``Recipe.data_span``) reads each segment's own time: a granule from 23:58 on 31 October to
    00:04 on 1 November is found for both months, one recorded from 1 November only for November, whatever its name
    says. Edited copies of the real page, as above."""
    from granulemap.recipes import get_recipe

    recipe = get_recipe("atl06-cell-stats")
    assert recipe.data_span is not None
    (link,) = direct_links(ssh_page())
    stem = link.rsplit("/", 1)[-1].rsplit(".", 1)[0]

    def search(page: dict[str, Any], start: dt.date, end: dt.date) -> list[Any]:
        with responses.RequestsMock() as rs:
            replay_cmr(rs, [page])
            return cmr.search_granules(SSH, start, end, None, time_from_name=recipe.granule_time,
                                      data_span=recipe.data_span)[0]

    october, november = (dt.date(2019, 10, 1), dt.date(2019, 10, 31)), (dt.date(2019, 11, 1), dt.date(2019, 11, 30))
    crossing = edited_granule(ssh_page(), stem, "ATL06_20191031235800_05390503_006_01",
                              "2019-10-31T23:58:00Z", "2019-11-01T00:04:00Z")
    named_late = edited_granule(ssh_page(), stem, "ATL06_20191031235955_05390503_006_01",
                                "2019-11-01T00:00:09Z", "2019-11-01T00:06:00Z")
    ended_at_midnight = edited_granule(ssh_page(), stem, "ATL06_20191031235200_05390503_006_01",
                                       "2019-10-31T23:52:00Z", "2019-10-31T23:59:59.999Z")
    october_31 = dt.datetime(2019, 10, 31, 23, 58, tzinfo=dt.UTC)
    assert [g.time for g in search(crossing, *october)] == [october_31]  # dated by its name, for sorting
    assert [g.time for g in search(crossing, *november)] == [october_31]
    assert search(named_late, *october) == []
    assert len(search(named_late, *november)) == 1
    assert len(search(ended_at_midnight, *october)) == 1 and search(ended_at_midnight, *november) == []


def test_search_asks_cmr_for_the_collection_dates_bbox_and_cloud_provider() -> None:
    with responses.RequestsMock() as rs:
        replay_cmr(rs, [ssh_page()])
        cmr.search_granules(SSH, dt.date(2020, 1, 1), dt.date(2020, 1, 3), (-10.0, -20.0, 30.0, 40.0))
        collection_call, *granule_calls = [c.request for c in rs.calls]
    assert collection_call.params == {"cloud_hosted": "True", "short_name": SSH}
    for request in granule_calls:
        assert request.params["short_name"] == SSH
        assert request.params["provider"] == "POCLOUD"  # from the collection record
        assert request.params["temporal[]"] == "2020-01-01T00:00:00Z,2020-01-03T23:59:59Z"
        assert request.params["bounding_box"] == "-10.0,-20.0,30.0,40.0"


def test_every_cmr_request_has_a_timeout() -> None:
    # earthaccess sets none: without one a CMR that never answers would hold BuildCatalog until Lambda's timeout.
    with responses.RequestsMock() as rs:
        replay_cmr(rs, [ssh_page()])
        cmr.search_granules(SSH, dt.date(2020, 1, 1), dt.date(2020, 1, 3), None)
        timeouts = [c.request.req_kwargs.get("timeout") for c in rs.calls]
    assert len(timeouts) == 4 and set(timeouts) == {cmr.CMR_TIMEOUT_SECONDS}
    assert requests.Session.request is _UNPATCHED_REQUEST  # the default is set for the search only


def test_paging_follows_cmr_search_after_to_the_last_page() -> None:
    first = ssh_page()
    # Page 2 is an edited copy of the real page: the same granule record renamed to the 2020-01-07 one.
    second = edited_granule(first, "ssh_grids_v2205_2020010212", "ssh_grids_v2205_2020010712",
                            "2020-01-07T00:00:00.000Z", "2020-01-07T00:00:00.000Z")
    with responses.RequestsMock() as rs:
        replay_cmr(rs, [second, first])  # CMR's order need not be time order
        granules, provider, _ = cmr.search_granules(SSH, dt.date(2020, 1, 1), dt.date(2020, 1, 31), None)
        pages = [r for r in granule_requests(rs) if r.params["page_size"] != "0"]
    assert [r.headers.get("CMR-Search-After") for r in pages] == [None, search_after_token(1)]
    assert [g.url for g in granules] == direct_links(first) + direct_links(second)  # sorted by time
    assert [g.time.date() for g in granules] == [dt.date(2020, 1, 2), dt.date(2020, 1, 7)]
    assert provider == "POCLOUD"


def test_granules_belong_to_the_day_in_the_middle_of_their_time_range() -> None:
    # GHRSST L4 daily analyses cover 21:00 the day before to 21:00; CMR returns every granule overlapping the
    # search, so a December search also returns 1 January's. Edited copies of the real page give MUR-like ranges.
    page = ssh_page()
    dec31 = edited_granule(page, "ssh_grids_v2205_2020010212", "20181231090000-JPL-L4_GHRSST-SSTfnd-MUR25",
                           "2018-12-30T21:00:00.000Z", "2018-12-31T21:00:00.000Z")
    jan01 = edited_granule(page, "ssh_grids_v2205_2020010212", "20190101090000-JPL-L4_GHRSST-SSTfnd-MUR25",
                           "2018-12-31T21:00:00.000Z", "2019-01-01T21:00:00.000Z")
    with responses.RequestsMock() as rs:
        replay_cmr(rs, [dec31, jan01])
        granules, _, _ = cmr.search_granules(MUR25, dt.date(2018, 12, 1), dt.date(2018, 12, 31), None)
    assert [g.url for g in granules] == direct_links(dec31)
    assert granules[0].time == dt.datetime(2018, 12, 31, 9, tzinfo=dt.UTC)


def test_no_hits_is_an_empty_result_not_an_error() -> None:
    with responses.RequestsMock() as rs:
        replay_cmr(rs, [{"hits": 0, "took": 68, "items": []}])
        assert cmr.search_granules(MUR25, dt.date(1990, 1, 1), dt.date(1990, 1, 31), None) == ([], None, [])


@pytest.mark.parametrize("status", [429, 500, 503])
def test_cmr_overload_or_outage_is_source_unavailable(status: int) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rs:
        rs.get(f"{CMR_SEARCH}/collections.umm_json", json=mur_collection())
        rs.get(f"{CMR_SEARCH}/granules.umm_json", status=status, json={"errors": ["Service temporarily busy"]})
        with pytest.raises(SourceUnavailable, match=f"CMR answered {status} while searching {MUR25}"):
            cmr.search_granules(MUR25, dt.date(2018, 12, 1), dt.date(2018, 12, 31), None)


def test_a_search_cmr_refuses_is_a_catalog_error_with_cmrs_reason() -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rs:
        rs.get(f"{CMR_SEARCH}/collections.umm_json", json=mur_collection())
        rs.get(f"{CMR_SEARCH}/granules.umm_json", status=400,
               json={"errors": ["Temporal datetime is invalid: [2018-13-01] is not a valid datetime."]})
        with pytest.raises(CatalogError, match=r"\(400\): Temporal datetime is invalid"):
            cmr.search_granules(MUR25, dt.date(2018, 12, 1), dt.date(2018, 12, 31), None)


@pytest.mark.parametrize("failure, message", [
    (requests.exceptions.ReadTimeout("read timed out"), f"did not answer within {cmr.CMR_TIMEOUT_SECONDS:g} s"),
    (requests.exceptions.ConnectionError("connection reset"), "cannot reach CMR"),
])
def test_cmr_timeouts_and_dropped_connections_are_source_unavailable(failure: Exception, message: str) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rs:
        rs.get(f"{CMR_SEARCH}/collections.umm_json", json=mur_collection())
        rs.get(f"{CMR_SEARCH}/granules.umm_json", body=failure)
        with pytest.raises(SourceUnavailable, match=message):
            cmr.search_granules(MUR25, dt.date(2018, 12, 1), dt.date(2018, 12, 31), None)


def test_an_error_page_from_the_collection_lookup_is_source_unavailable() -> None:
    # earthaccess reads this answer's body without checking its status.
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rs:
        rs.get(f"{CMR_SEARCH}/collections.umm_json", status=502, body="<html>502 Bad Gateway</html>")
        with pytest.raises(SourceUnavailable, match=f"unreadable answer while searching {MUR25}"):
            cmr.search_granules(MUR25, dt.date(2018, 12, 1), dt.date(2018, 12, 31), None)


def test_a_collection_without_direct_s3_links_is_rejected_naming_the_field() -> None:
    page = load("earthaccess_atl06_granule_umm_json.json")  # NSIDC_ECS: on-premises, https links only
    assert direct_links(page) == []
    with responses.RequestsMock() as rs:
        replay_cmr(rs, [page])
        with pytest.raises(InvalidInput, match="field 'collection'.*not in NASA Earthdata Cloud"):
            cmr.search_granules("ATL06", dt.date(2019, 2, 21), dt.date(2019, 2, 21), None)


def test_the_state_machine_retries_source_unavailable_and_not_catalog_errors() -> None:
    build = json.loads((ROOT / "statemachine" / "pipeline.asl.json").read_text())["States"]["BuildCatalog"]
    retried = {name for rule in build["Retry"] for name in rule["ErrorEquals"]}
    assert SourceUnavailable.__name__ in retried
    assert CatalogError.__name__ not in retried and "States.ALL" not in retried
    assert build["Catch"][-1] == {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "CatalogFailed"}


# ---- build_catalog end to end (moto S3) -----------------------------------------------------------------------
@pytest.fixture
def bucket():
    from granulemap.storage import Bucket

    with mock_aws():
        client = boto3.client("s3", region_name="us-west-2")
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        yield Bucket(BUCKET, client)


def test_build_catalog_from_cmr_writes_a_manifest_of_s3_links_and_times(bucket) -> None:
    page = ssh_page()
    raw = {"recipe": "sst-global-mean", "start": "2020-01-01", "end": "2020-01-03", "collection": SSH}
    with responses.RequestsMock() as rs:
        replay_cmr(rs, [page])
        out = build_catalog(raw, "run-cmr", Settings(bucket=BUCKET), bucket)
    manifest = bucket.get_json(layout.manifest_key("run-cmr"))
    (link,) = direct_links(page)
    revised = page["items"][0]["umm"]["DataGranule"]["ProductionDateTime"]  # changes when the granule is replaced
    (item,) = manifest
    assert item["granules"] == [{"url": link, "time": "2020-01-02T00:00:00Z", "revision": revised}]
    assert item["id"].startswith("ssh_grids_v2205_2020010212-r")  # the file name, and a digest of its revision
    assert out.catalog.count == 1 and out.catalog.key == layout.manifest_key("run-cmr")
    assert out.run.daac == "POCLOUD"  # FetchCredentials asks this provider's s3credentials endpoint


def test_build_catalog_searches_the_recipes_own_collection_by_default(bucket) -> None:
    from granulemap.recipes import get_recipe

    assert get_recipe("sst-global-mean").collection == MUR25
    raw = {"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-31"}
    with responses.RequestsMock() as rs:
        replay_cmr(rs, [{"hits": 0, "took": 68, "items": []}])
        build_catalog(raw, "run-default", Settings(bucket=BUCKET), bucket)
        assert {c.request.params["short_name"] for c in rs.calls} == {MUR25}


def test_no_hits_give_an_empty_run_that_succeeds_with_a_clear_summary(bucket) -> None:
    from granulemap.aggregation import aggregate
    from granulemap.models import AggregatorEvent

    raw = {"recipe": "sst-global-mean", "start": "1990-01-01", "end": "1990-01-31"}
    with responses.RequestsMock() as rs:
        replay_cmr(rs, [{"hits": 0, "took": 68, "items": []}])
        out = build_catalog(raw, "run-empty", Settings(bucket=BUCKET), bucket)
    assert bucket.get_json(layout.manifest_key("run-empty")) == []
    assert out.catalog.count == 0 and out.run.daac is None  # FetchCredentials then has nothing to fetch
    summary = aggregate(AggregatorEvent(run=out.run, catalog=out.catalog, map=out.map), bucket)
    assert summary.status == "SUCCEEDED"
    assert summary.items.total == 0 and summary.failures == []
    assert layout.summary_key("run-empty") in summary.outputs
    assert not any(o.endswith((".csv", ".png")) for o in summary.outputs)  # no products from nothing
    assert "no granules matched" in summary.message



def test_an_item_too_large_for_a_map_child_s_input_is_refused_before_anything_starts(bucket, monkeypatch) -> None:
    """A child execution's input (item and run) is limited to 256 KiB: an ATL06 parent cell crossed by well over
    a thousand granules (a long range over a polar cell) would fail with States.DataLimitExceeded, which no Catch
    records. Items are made here as a recipe's make_items makes them; the manifest is then not written."""
    from granulemap.models import Granule, Item
    from granulemap.recipes import get_recipe

    atl06 = get_recipe("atl06-cell-stats")
    url = "s3://nsidc-cumulus-prod-protected/ATLAS/ATL06/006/2019/{d:%m/%d}/ATL06_{d:%Y%m%d}{n:06d}_08410203_006_01.h5"

    def cell_items(count: int) -> list[Item]:
        day = dt.datetime(2019, 1, 1, tzinfo=dt.UTC)
        granules = [Granule(url=url.format(d=day + dt.timedelta(hours=n), n=n), time=day + dt.timedelta(hours=n))
                    for n in range(count)]
        return [Item(id="20190101-20191231-p6-1234-x", granules=granules)]

    raw = {"recipe": "atl06-cell-stats", "start": "2019-01-01", "end": "2019-12-31"}
    monkeypatch.setattr(type(atl06), "make_items", lambda self, granules, params, execution: cell_items(2_000))
    monkeypatch.setattr(cmr, "search_granules", lambda *a, **k: ([], "NSIDC_CPRD", []))
    prepared: list[int] = []

    def prepare(self: Any, items: list[Item], run: Any, params: Any, bucket: Any) -> list[Item]:
        prepared.append(len(items))  # atl06-cell-stats' own prepare writes to its store
        return items

    monkeypatch.setattr(type(atl06), "prepare", prepare)
    monkeypatch.setattr(type(atl06), "product_notes", lambda self, run, params, bucket: [])  # no store was made
    with pytest.raises(InvalidInput, match=r"too large for a Map child's input.*2000 granules"):
        build_catalog(raw, "run-big", Settings(bucket=BUCKET), bucket)
    assert prepared == []  # refused before anything was written
    assert bucket.get_json_or_none(layout.manifest_key("run-big")) is None
    # one granule's entry is about 150 bytes of JSON: 1,000 of them fit under the limit with room for the run
    monkeypatch.setattr(type(atl06), "make_items", lambda self, granules, params, execution: cell_items(1_000))
    out = build_catalog(raw, "run-fits", Settings(bucket=BUCKET), bucket)
    assert out.catalog.count == 1
    assert len(json.dumps(bucket.get_json(layout.manifest_key("run-fits"))[0])) < 256 * 1024 - 10_000


def test_a_scheduled_month_missing_a_daily_granule_fails_so_that_the_alert_tells(bucket, tmp_path, synthetic_month
                                                                                 ) -> None:
    """The schedule does not run a month again: a month of daily L4 analyses summarized without its last day (not
    yet published when the run started) stayed so, silently. A scheduled run fails instead, naming the days; the same
    month given as dates (a person accepting the gap) runs."""
    from granulemap.errors import NoGranulesFound

    stamp = synthetic_month[0].name[:14]  # YYYYMMDDHHMMSS of 2018-12-01
    for day in range(1, 32):
        if day != 15:
            name = synthetic_month[0].name.replace(stamp, f"201812{day:02d}090000")
            (tmp_path / name).write_bytes(b"")  # the catalog reads names only
    scheduled = {"recipe": "sst-global-mean", "period": "previous-month", "source": str(tmp_path)}
    january = dt.datetime(2019, 1, 5, 6, 0, tzinfo=dt.UTC)
    with pytest.raises(NoGranulesFound, match=r"1 day\(s\) of 2018-12-01..2018-12-31 \(previous-month\) have no "
                                              r"granule in (.*): 2018-12-15\. If they are not in \1 yet, run") as gap:
        build_catalog(scheduled, "run-gap", Settings(bucket=BUCKET), bucket, now=january)
    assert bucket.get_json_or_none(layout.manifest_key("run-gap")) is None
    # The input it says to run again names the month, so the check is made again (whenever it is run): the same
    # dates as start/end would accept the gap, which is what the message offers for a gap NASA will not fill.
    again = json.loads(re.search(r"this input [^:]*: (\{.*?\})\. To accept", str(gap.value)).group(1))
    assert again == {"recipe": "sst-global-mean", "period": "2018-12", "source": str(tmp_path)}
    # a folder of this machine: run again locally (granulemap start refuses a folder); an S3 prefix: in AWS
    assert "again later with granulemap run --period 2018-12 and the same options" in str(gap.value)
    bucket.put_bytes("granules/" + synthetic_month[0].name, b"")
    with pytest.raises(NoGranulesFound, match=r"30 day\(s\) of .* with this input \(aws stepfunctions start-execution "
                                              r"--input, or the same fields as granulemap start's options\)"):
        build_catalog({**scheduled, "source": f"s3://{BUCKET}/granules/"}, "run-gap-s3", Settings(bucket=BUCKET),
                      bucket, now=january)
    assert '"start": "2018-12-01", "end": "2018-12-31"' in str(gap.value)
    with pytest.raises(NoGranulesFound, match=r"2018-12-01..2018-12-31 \(2018-12\) have no granule .*: 2018-12-15"):
        build_catalog(again, "run-gap-again", Settings(bucket=BUCKET), bucket, now=dt.datetime(2019, 7, 1, tzinfo=dt.UTC))
    by_hand = build_catalog({**{k: v for k, v in scheduled.items() if k != "period"}, "start": "2018-12-01",
                             "end": "2018-12-31"}, "run-gap-accepted", Settings(bucket=BUCKET), bucket)
    assert sum(len(i["granules"]) for i in bucket.get_json(by_hand.catalog.key)) == 30
    (tmp_path / synthetic_month[0].name.replace(stamp, "20181215090000")).write_bytes(b"")
    whole = build_catalog(scheduled, "run-whole", Settings(bucket=BUCKET), bucket, now=january)
    assert whole.catalog.count > 0
    named = build_catalog(again, "run-named-month", Settings(bucket=BUCKET), bucket)
    assert (named.run.start, named.run.end) == (dt.date(2018, 12, 1), dt.date(2018, 12, 31))
    assert sum(len(i["granules"]) for i in bucket.get_json(named.catalog.key)) == 31


def test_cmr_listing_one_file_name_twice_is_a_catalog_error_not_the_users_source(bucket, monkeypatch) -> None:
    """The input named no source: a refusal naming field 'source' would send the user looking for one."""
    from granulemap.models import Granule

    url = f"s3://podaac-ops-cumulus-protected/{MUR25}/20200101090000-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2.nc"
    twice = [Granule(url=url, time="2020-01-01T09:00:00Z")] * 2
    monkeypatch.setattr(cmr, "search_granules", lambda *a, **k: (twice, "POCLOUD", []))
    raw = {"recipe": "sst-global-mean", "start": "2020-01-01", "end": "2020-01-01"}
    with pytest.raises(CatalogError, match=f"CMR listed granules of collection {MUR25} under the same file name "
                                           r"more than once \(two records of one granule\?\): \['20200101090000-JPL"):
        build_catalog(raw, "run-twice", Settings(bucket=BUCKET), bucket)
    assert bucket.get_json_or_none(layout.manifest_key("run-twice")) is None  # nothing written


def test_of_two_granules_cmr_lists_for_one_day_a_daily_recipe_reads_the_one_produced_last(bucket,
                                                                                         monkeypatch) -> None:
    """A near-real-time granule and the final one that replaces it, both still listed: each would be a row of the
    day, and a monthly mean would weigh the day twice. The one produced last is read, whatever the names' order;
    the summary names the other. A revision that is not a time (or none) loses to one that is."""
    from granulemap.models import Granule

    folder = f"s3://podaac-ops-cumulus-protected/{MUR25}"
    stem = "-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2.nc"
    first = Granule(url=f"{folder}/20200101090000{stem}", time="2020-01-01T09:00:00Z",
                    revision="2020-01-02T10:00:00Z")
    final = Granule(url=f"{folder}/20200102000000{stem}", time="2020-01-02T00:00:00Z",  # the first name, produced last
                    revision="2020-02-01T08:00:00.5Z")
    early = Granule(url=f"{folder}/20200102090000{stem}", time="2020-01-02T09:00:00Z",
                    revision="2020-01-03T10:00:00Z")
    odd = Granule(url=f"{folder}/20200102120000{stem}", time="2020-01-02T12:00:00Z", revision="not a time")
    monkeypatch.setattr(cmr, "search_granules", lambda *a, **k: ([first, final, early, odd], "POCLOUD", []))
    raw = {"recipe": "sst-global-mean", "start": "2020-01-01", "end": "2020-01-02"}
    out = build_catalog(raw, "run-two-a-day", Settings(bucket=BUCKET), bucket)
    read = [g["url"] for item in bucket.get_json(out.catalog.key) for g in item["granules"]]
    assert read == [first.url, final.url]
    (note,) = out.catalog.notes
    assert note == (f"NASA CMR lists more than one granule of {MUR25} for 1 day(s) (2020-01-02): each day's most "
                    f"recently produced granule was read, and 2 left out: 20200102090000{stem}, "
                    f"20200102120000{stem}")


def test_a_granule_reprocessed_since_its_result_was_stored_is_computed_again(bucket) -> None:
    """NASA reprocesses granules under the same name (the same s3:// link): its item's result, stored under an id
    made of the file name alone, was reused for ever. The id holds when its data were produced (UMM-G
    ProductionDateTime): a new one is a new item. An edit of the record alone (CMR's revision date) is not."""
    raw = {"recipe": "sst-global-mean", "start": "2020-01-01", "end": "2020-01-03", "collection": SSH}
    produced = ssh_page()["items"][0]["umm"]["DataGranule"]["ProductionDateTime"]

    def catalog(run_id: str, revised: str, made: str) -> tuple[list[dict[str, Any]], Any]:
        page = ssh_page()
        page["items"][0]["meta"]["revision-date"] = revised
        page["items"][0]["umm"]["DataGranule"]["ProductionDateTime"] = made
        with responses.RequestsMock() as rs:
            replay_cmr(rs, [page])
            out = build_catalog(raw, run_id, Settings(bucket=BUCKET), bucket)
        return bucket.get_json(out.catalog.key), out

    (item,), out = catalog("run-first", "2023-01-11T00:16:28.862Z", produced)
    bucket.put_json(layout.result_key("sst-global-mean", out.run.config_id, item["id"]), {"results": [],
                                                                                        "failures": []})
    (same,), _ = catalog("run-same", "2025-03-01T00:00:00.000Z", produced)  # the record edited, not the data
    assert same["id"] == item["id"] and same.get("done") is True  # its result is reused
    (reprocessed,), _ = catalog("run-reprocessed", "2025-03-01T00:00:00.000Z", "2024-06-01T00:00:00.000Z")
    assert reprocessed["granules"][0]["url"] == item["granules"][0]["url"]  # the same file name
    assert reprocessed["id"] != item["id"] and not reprocessed.get("done")  # computed again
