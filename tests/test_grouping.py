"""Per-granule recipes' granules grouped into items by dekad, reduced granule by granule, accounted in granules."""

from __future__ import annotations

import calendar
import datetime as dt
from typing import Any

import pytest

from granulemap.catalog import validate_input
from granulemap.errors import GranuleUnreadable, InvalidInput, TransientError, VariableMissing
from granulemap.grouping import MAX_GRANULES_PER_ITEM, group_granules
from granulemap.models import Granule, Item, RunContext
from granulemap.processing import reduce_granules
from granulemap.recipes.base import Recipe
from granulemap.settings import Settings

UTC = dt.UTC


def daily(start: dt.date, end: dt.date, per_day: int = 1) -> list[Granule]:
    out = []
    day = start
    while day <= end:
        for k in range(per_day):
            when = dt.datetime(day.year, day.month, day.day, 9 + k, tzinfo=UTC)
            out.append(Granule(url=f"s3://b/{when:%Y%m%d%H%M%S}-JPL-L4_GHRSST-MUR25.nc", time=when))
        day += dt.timedelta(days=1)
    return out


def _dekad(g: Granule) -> tuple[int, int, int]:
    """Written out here, not taken from the code: days 1-10, 11-20 and 21 to the end of the month."""
    assert g.time is not None
    d = g.time.day
    return g.time.year, g.time.month, 0 if d <= 10 else 1 if d <= 20 else 2


def test_a_year_of_daily_granules_makes_three_items_a_month_each_within_one_dekad() -> None:
    granules = daily(dt.date(2020, 1, 1), dt.date(2020, 12, 31))  # a leap year
    items = group_granules(granules, "dekad")
    assert len(items) == 36
    assert [g for item in items for g in item.granules] == granules  # every granule once, in time order
    for item in items:
        assert len({_dekad(g) for g in item.granules}) == 1
    sizes = [len(item.granules) for item in items]
    month_lengths = [calendar.monthrange(2020, m)[1] for m in range(1, 13)]
    assert sizes == [n for length in month_lengths for n in (10, 10, length - 20)]
    assert sizes[3 + 2] == 29 - 20  # February 2020: the 21st to the 29th
    assert len({item.id for item in items}) == 36
    assert all(item.id.startswith(f"{item.granules[0].time:%Y%m%d}-{item.granules[-1].time:%Y%m%d}-") for item in items)


def test_a_monthly_run_has_the_same_items_as_a_yearly_run_over_that_month() -> None:
    year = group_granules(daily(dt.date(2019, 1, 1), dt.date(2019, 12, 31)), "dekad")
    march = group_granules(daily(dt.date(2019, 3, 1), dt.date(2019, 3, 31)), "dekad")
    assert [i.id for i in march] == [i.id for i in year if i.granules[0].time.month == 3]
    assert len(march) == 3


def test_a_part_of_a_dekad_is_another_item_than_the_whole_dekad() -> None:
    whole = group_granules(daily(dt.date(2019, 3, 1), dt.date(2019, 3, 10)), "dekad")
    part = group_granules(daily(dt.date(2019, 3, 5), dt.date(2019, 3, 10)), "dekad")
    assert len(whole) == len(part) == 1
    assert whole[0].id != part[0].id
    assert part[0].id.startswith("20190305-20190310-6g-")


def test_a_dekad_with_a_granule_replaced_under_its_name_is_another_item_and_only_that_dekad() -> None:
    """NASA reprocessed the 5th of March in place: same file name, a new revision. Its dekad's item is new (its
    result is not reused); the other dekads keep their ids, and so their results."""
    march = daily(dt.date(2019, 3, 1), dt.date(2019, 3, 31))
    revised = [g.model_copy(update={"revision": "2019-01-01T00:00:00Z"}) for g in march]
    before = group_granules(revised, "dekad")
    revised[4] = revised[4].model_copy(update={"revision": "2024-06-01T00:00:00Z"})
    after = group_granules(revised, "dekad")
    assert [g.url for i in after for g in i.granules] == [g.url for g in march]
    assert before[0].id != after[0].id and after[0].id.startswith("20190301-20190310-10g-")
    assert [i.id for i in before[1:]] == [i.id for i in after[1:]]
    alone = [group_granules(g, "granule")[0].id for g in ([march[4]], [revised[4]])]
    assert alone[0] == march[4].url.rsplit("/", 1)[-1].removesuffix(".nc")  # no revision known: the name alone
    assert alone[1].startswith(alone[0] + "-r") and len(alone[1]) == len(alone[0]) + 10
    long_name = Granule(url=f"s3://b/{'x' * 250}.nc", time=march[0].time, revision="1")
    assert len(group_granules([long_name], "granule")[0].id) == 200  # Item.id's limit, the revision's digest kept


def test_a_dekad_of_several_granules_a_day_is_split_into_items_of_at_most_the_limit() -> None:
    granules = daily(dt.date(2019, 3, 1), dt.date(2019, 3, 10), per_day=4)  # 40 granules in one dekad
    items = group_granules(granules, "dekad")
    assert [len(i.granules) for i in items] == [MAX_GRANULES_PER_ITEM, MAX_GRANULES_PER_ITEM,
                                                40 - 2 * MAX_GRANULES_PER_ITEM]
    assert [g for i in items for g in i.granules] == granules
    assert len({i.id for i in items}) == 3


def test_one_granule_per_item_and_granules_without_a_time_keep_their_file_names() -> None:
    granules = daily(dt.date(2019, 3, 1), dt.date(2019, 3, 2))
    assert [i.id for i in group_granules(granules, "granule")] == [
        "20190301090000-JPL-L4_GHRSST-MUR25", "20190302090000-JPL-L4_GHRSST-MUR25"]
    untimed = Granule(url="s3://b/odd-name.nc")
    items = group_granules([*granules, untimed], "dekad")
    assert [len(i.granules) for i in items] == [2, 1] and items[1].id == "odd-name"
    lone = group_granules(daily(dt.date(2019, 3, 31), dt.date(2019, 3, 31)), "dekad")
    assert [i.id for i in lone] == ["20190331090000-JPL-L4_GHRSST-MUR25"]  # one granule: its own name


class _Rows(Recipe):
    name = "test-rows"
    description = "one row per granule; some granules fail"
    per_granule = True

    def __init__(self, fail: dict[str, Exception]):
        self.fail = fail

    def process(self, item: Item, params: Any, access: Any, run: RunContext) -> dict[str, Any]:
        (granule,) = item.granules
        name = granule.url.rsplit("/", 1)[-1]
        if name in self.fail:
            raise self.fail[name]
        return {"granule": name}

    def combine(self, results: list[dict[str, Any]], run: RunContext, params: Any, bucket: Any) -> list[str]:
        return []


RUN = RunContext(run_id="r", recipe="test-rows", params={}, config_id="c")


def test_a_granule_that_cannot_be_read_fails_alone_and_the_others_are_kept() -> None:
    (item,) = group_granules(daily(dt.date(2019, 3, 1), dt.date(2019, 3, 4)), "dekad")
    names = [g.url.rsplit("/", 1)[-1] for g in item.granules]
    recipe = _Rows({names[1]: GranuleUnreadable("truncated"), names[3]: VariableMissing("no mask")})
    results, failures = reduce_granules(recipe, item, None, None, RUN)  # type: ignore[arg-type]
    assert results == [{"granule": names[0]}, {"granule": names[2]}]
    assert [(f.granule, f.error, f.cause) for f in failures] == [
        (names[1], "GranuleUnreadable", "truncated"), (names[3], "VariableMissing", "no mask")]


def test_a_transient_error_fails_the_whole_item_for_the_state_machine_to_retry() -> None:
    (item,) = group_granules(daily(dt.date(2019, 3, 1), dt.date(2019, 3, 3)), "dekad")
    recipe = _Rows({item.granules[2].url.rsplit("/", 1)[-1]: TransientError("S3 slow down")})
    with pytest.raises(TransientError, match="S3 slow down"):
        reduce_granules(recipe, item, None, None, RUN)  # type: ignore[arg-type]


def test_an_item_whose_every_granule_fails_fails_naming_them() -> None:
    (item,) = group_granules(daily(dt.date(2019, 3, 1), dt.date(2019, 3, 3)), "dekad")
    names = [g.url.rsplit("/", 1)[-1] for g in item.granules]
    recipe = _Rows({n: GranuleUnreadable(f"{n} is truncated") for n in names})
    with pytest.raises(GranuleUnreadable) as caught:
        reduce_granules(recipe, item, None, None, RUN)  # type: ignore[arg-type]
    assert all(n in str(caught.value) for n in names)


def test_group_is_refused_for_a_recipe_that_makes_its_own_items(tmp_path) -> None:
    settings = Settings(bucket="bucket")
    # the message names the installed recipes group applies to (a user's per_granule recipe would be listed too)
    with pytest.raises(InvalidInput, match=r"field 'group'.*\(sst-box-mean, sst-global-mean"):
        validate_input({"recipe": "atl06-cell-stats", "start": "2019-01-01", "end": "2019-01-31",
                        "source": str(tmp_path), "group": "dekad"}, settings)
    with pytest.raises(InvalidInput, match="field 'group'"):
        validate_input({"recipe": "sst-global-mean", "start": "2019-01-01", "end": "2019-01-31",
                        "source": str(tmp_path), "group": "month"}, settings)
    execution, _ = validate_input({"recipe": "sst-global-mean", "start": "2019-01-01", "end": "2019-01-31",
                                   "source": str(tmp_path), "group": "granule"}, settings)
    assert execution.group == "granule"


@pytest.fixture
def s3_bucket(monkeypatch):
    from moto import mock_aws

    from granulemap import storage

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    storage.s3_client.cache_clear()
    with mock_aws():
        client = storage.s3_client()
        client.create_bucket(Bucket="bucket", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        yield client
    storage.s3_client.cache_clear()


NAME = "20190305090000-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2.nc"


def test_the_map_tolerates_any_failed_items_of_a_per_granule_recipe_and_aggregate_counts_granules(
        s3_bucket, tmp_path) -> None:
    from granulemap.catalog import build_catalog
    from granulemap.storage import Bucket

    (tmp_path / NAME).write_bytes(b"not read by the catalog")
    settings = Settings(bucket="bucket", default_tolerated_failure_percentage=5)
    sst = build_catalog({"recipe": "sst-global-mean", "start": "2019-03-01", "end": "2019-03-31",
                         "source": str(tmp_path)}, "run-sst", settings, Bucket("bucket"))
    assert (sst.map.tolerated_failure_percentage, sst.map.item_tolerated_failure_percentage) == (5, 100)
    empty = tmp_path / "atl06"
    empty.mkdir()
    atl06 = build_catalog({"recipe": "atl06-cell-stats", "start": "2019-03-01", "end": "2019-03-31",
                           "source": str(empty), "tolerated_failure_percentage": 7}, "run-atl06", settings,
                          Bucket("bucket"))
    assert (atl06.map.tolerated_failure_percentage, atl06.map.item_tolerated_failure_percentage) == (7, 7)


def test_granules_of_one_file_name_in_two_subfolders_are_not_a_source_s_granules(s3_bucket) -> None:
    """Two copies of a granule (v1/, v2/) under an s3:// source were two rows of one day: a source is a folder, whose
    names are unique, and its "subfolders" are not searched (tests/test_catalog_done.py lists one)."""
    from granulemap.catalog import build_catalog
    from granulemap.storage import Bucket

    for prefix in ("v1", "v2"):
        s3_bucket.put_object(Bucket="bucket", Key=f"granules/{prefix}/{NAME}", Body=b"x")
    doc = {"recipe": "sst-global-mean", "start": "2019-03-01", "end": "2019-03-31", "source": "s3://bucket/granules"}
    assert build_catalog(doc, "run-twice", Settings(bucket="bucket"), Bucket("bucket")).catalog.count == 0
    doc["source"] = "s3://bucket/granules/v2"
    assert build_catalog(doc, "run-one", Settings(bucket="bucket"), Bucket("bucket")).catalog.count == 1


# --- G3: the documented item size of a dekad with several granules a day ------------------------------------------
def test_a_dekad_of_four_granules_a_day_makes_items_of_16_16_and_8() -> None:
    granules = [Granule(url=f"s3://b/{d:02d}{h:02d}-x.nc", time=dt.datetime(2019, 3, d, h, tzinfo=dt.UTC))
                for d in range(1, 11) for h in range(4)]
    assert [len(i.granules) for i in group_granules(granules, "dekad")] == [16, 16, 8]
