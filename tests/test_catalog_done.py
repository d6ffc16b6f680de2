"""BuildCatalog marks the items whose result exists as done, from one listing narrowed to the run's items; and the
shared S3 client the results are read with."""

from __future__ import annotations

import pytest

from granulemap import layout
from granulemap.catalog import mark_done
from granulemap.models import Item, RunContext

RUN = RunContext(run_id="r2", recipe="sst-global-mean", params={}, config_id="cfg")


class ListedBucket:
    """What mark_done asks of a Bucket: the keys under a prefix (and which prefixes it asked for)."""

    def __init__(self, keys: list[str]):
        self.stored = keys
        self.prefixes: list[str] = []

    def keys(self, prefix: str):
        self.prefixes.append(prefix)
        return iter(k for k in self.stored if k.startswith(prefix))


def _key(item_id: str) -> str:
    return layout.result_key(RUN.recipe, RUN.config_id, item_id)


def test_items_with_a_result_are_done_and_only_the_run_s_part_of_the_results_is_listed() -> None:
    march = [Item(id=f"201903{d:02d}090000-JPL-MUR25", granules=[]) for d in (1, 2, 3)]
    bucket = ListedBucket([_key("20190101090000-JPL-MUR25"), _key("20190302090000-JPL-MUR25"),
                           layout.result_key(RUN.recipe, "other-cfg", "20190301090000-JPL-MUR25")])
    marked = mark_done(march, RUN, bucket)
    assert [i.done for i in marked] == [False, True, False]  # only 2 March has this configuration's result
    assert [i.id for i in marked] == [i.id for i in march]
    assert bucket.prefixes == [_key("2019030")[: -len(".json")]]  # one listing, of March's ids only
    assert not any(i.done for i in march)  # the input items are left as they were


def test_items_with_nothing_in_common_list_the_whole_configuration_and_no_items_list_nothing() -> None:
    items = [Item(id="a-1", granules=[]), Item(id="b-1", granules=[])]
    bucket = ListedBucket([_key("b-1")])
    assert [i.done for i in mark_done(items, RUN, bucket)] == [False, True]
    assert bucket.prefixes == [layout.result_prefix(RUN.recipe, RUN.config_id)]
    empty = ListedBucket([])
    assert mark_done([], RUN, empty) == [] and empty.prefixes == []


def test_the_shared_s3_client_has_a_connection_for_each_of_aggregate_s_reader_threads(monkeypatch) -> None:
    from granulemap import aggregation, storage

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    storage.s3_client.cache_clear()
    try:
        client = storage.s3_client()
        assert client.meta.config.max_pool_connections == storage.MAX_CONNECTIONS >= aggregation._READERS
    finally:
        storage.s3_client.cache_clear()  # other tests make theirs under their own settings


def test_the_map_tolerates_of_the_items_it_runs_what_the_run_tolerates_of_all_its_items() -> None:
    """The Map runs only the items not yet done and judges its failed children against those: with the run's own
    percentage, one failure among the 10 items left of 200 (10 %) stopped a run that tolerated 5 % (10 items). Its
    percentage is a whole number (Step Functions refuses others from ToleratedFailurePercentagePath): with up to 100
    items to run it stops the Map exactly when the run has failed, and never before."""
    from fractions import Fraction

    from granulemap.catalog import _of_the_map

    assert _of_the_map(5.0, 200, 10) == 100  # 10 failures allowed: all of the 10 left
    assert _of_the_map(5.0, 20, 20) == 5  # nothing done: the run's own
    assert _of_the_map(5.0, 200, 150) == 7  # 10 of 150 may fail: 6.67 %, so 7 (11 of 150 are 7.3 %)
    assert _of_the_map(2.5, 36, 36) == 0  # 1 of 36 is 2.8 %: no failure tolerated
    for tolerance in (0.0, 1.0, 2.5, 5.0, 12.5, 33.3, 100.0):
        for count in (1, 3, 7, 20, 36, 200):
            for map_count in range(1, count + 1):
                share = _of_the_map(tolerance, count, map_count)
                assert type(share) is int and 0 <= share <= 100, (tolerance, count, map_count, share)
                for failed in range(map_count + 1):
                    map_fails = Fraction(failed * 100, map_count) > share  # as Step Functions judges its Map Run
                    run_fails = Fraction(failed, count) * 100 > Fraction(tolerance)  # as Aggregate judges the run
                    assert run_fails or not map_fails, (tolerance, count, map_count, failed)
                    if map_count <= 100:
                        assert map_fails == run_fails, (tolerance, count, map_count, failed)


def test_the_map_s_tolerance_is_written_as_a_whole_number() -> None:
    """In the state's JSON, 7 and not 7.0: "must resolve to a positive integer between 0 and 100"."""
    import json

    from granulemap.models import MapConfig

    config = MapConfig(max_concurrency=4, tolerated_failure_percentage=2.5, item_tolerated_failure_percentage=3)
    written = json.loads(config.model_dump_json())["item_tolerated_failure_percentage"]
    assert written == 3 and type(written) is int
    with pytest.raises(ValueError):
        MapConfig(max_concurrency=4, tolerated_failure_percentage=2.5, item_tolerated_failure_percentage=2.5)


def test_an_s3_source_is_listed_as_a_folder_like_a_local_one(monkeypatch) -> None:
    """s3://b/sources/mur25 holds what is directly under sources/mur25/: not sources/mur25-old/ (a neighbour whose
    name it starts), nor sources/mur25/old/ (a "subfolder", which a local directory's listing leaves out too)."""
    import boto3
    from moto import mock_aws

    from granulemap.catalog import list_source
    from granulemap.recipes import get_recipe

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    name = "20190101090000-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2.nc"
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="bkt", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        for key in (f"sources/mur25/{name}", f"sources/mur25-old/{name}", f"sources/mur25/old/{name}"):
            s3.put_object(Bucket="bkt", Key=key, Body=b"")
        recipe = get_recipe("sst-global-mean")
        for source in ("s3://bkt/sources/mur25", "s3://bkt/sources/mur25/"):
            got, undated = list_source(source, recipe, __import__("datetime").date(2019, 1, 1),
                                       __import__("datetime").date(2019, 1, 31))
            assert [g.url for g in got] == [f"s3://bkt/sources/mur25/{name}"], source
            assert undated == [], source


def test_a_source_granule_replaced_under_its_name_has_another_revision_and_so_another_item(tmp_path,
                                                                                          monkeypatch) -> None:
    """An s3:// source's granule carries its object's ETag (an MD5 of its bytes, for one PUT), a local one its size
    and modification time: the file written anew under its name makes another item, not one found done."""
    import datetime as dt
    import hashlib
    import os

    import boto3
    from moto import mock_aws

    from granulemap.catalog import list_source
    from granulemap.grouping import item_of
    from granulemap.recipes import get_recipe

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    recipe, january = get_recipe("sst-global-mean"), (dt.date(2019, 1, 1), dt.date(2019, 1, 31))
    name = "20190101090000-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2.nc"
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="bkt", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        s3.put_object(Bucket="bkt", Key=f"src/{name}", Body=b"first")
        (before,), _ = list_source("s3://bkt/src/", recipe, *january)
        s3.put_object(Bucket="bkt", Key=f"src/{name}", Body=b"reprocessed")
        (after,), _ = list_source("s3://bkt/src/", recipe, *january)
    assert (before.revision, after.revision) == (hashlib.md5(b"first").hexdigest(),
                                                 hashlib.md5(b"reprocessed").hexdigest())
    assert before.url == after.url and item_of([before]).id != item_of([after]).id

    path = tmp_path / name
    path.write_bytes(b"first")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    (local,), _ = list_source(str(tmp_path), recipe, *january)
    assert local.revision == "5-1000000000"  # 5 bytes, modified 1 s after the epoch
    assert item_of([local]).id.startswith(name.removesuffix(".nc") + "-r")
    path.write_bytes(b"other")  # the same size, written later
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    (rewritten,), _ = list_source(str(tmp_path), recipe, *january)
    assert item_of([rewritten]).id != item_of([local]).id


def test_an_s3_source_that_gives_nothing_says_what_its_folder_holds_through_to_the_summary(monkeypatch) -> None:
    """Granules put in a dated subfolder of an s3:// source are not found (a folder's subfolders are not searched):
    BuildCatalog says what the folder holds, as for a local folder, and Aggregate's summary passes it on."""
    import datetime as dt

    import boto3
    from moto import mock_aws

    from granulemap.aggregation import aggregate
    from granulemap.catalog import build_catalog
    from granulemap.models import AggregatorEvent
    from granulemap.settings import Settings
    from granulemap.storage import Bucket

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    day = "20190101090000-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2.nc"
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="bkt", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        for key in (f"sources/mur25/2019/{day}", f"sources/mur25/2018/{day.replace('2019', '2018', 1)}",
                    "sources/mur25/README.txt", f"sources/mur25/{day.replace('2019', '2017', 1)}"):
            s3.put_object(Bucket="bkt", Key=key, Body=b"")
        bucket = Bucket("bkt")
        doc = {"recipe": "sst-global-mean", "start": "2019-01-01", "end": "2019-01-31",
               "source": "s3://bkt/sources/mur25"}
        out = build_catalog(doc, "run-s3-empty", Settings(bucket="bkt"), bucket, now=dt.datetime(2026, 1, 1))
        why = ("s3://bkt/sources/mur25/ holds 2 files: 1 match recipe sst-global-mean's file-name pattern '*.nc', "
               "dated 2017-01-01 to 2017-01-01 by their names, none from 2019-01-01 to 2019-01-31; subfolders are not "
               "searched (2 here: 2018, 2019)")
        assert out.catalog.count == 0 and out.catalog.none_found == why
        summary = aggregate(AggregatorEvent.model_validate(
            {"run": out.run.model_dump(mode="json"), "catalog": out.catalog.model_dump(mode="json"),
             "map": out.map.model_dump(mode="json")}), bucket)
    assert summary.status == "SUCCEEDED"
    assert summary.message == f"no granules matched the recipe, dates and source: nothing to do: {why}"


def test_a_source_that_gives_items_carries_no_note_of_its_folder(tmp_path, monkeypatch) -> None:
    import datetime as dt

    import boto3
    from moto import mock_aws

    from granulemap.catalog import build_catalog
    from granulemap.settings import Settings
    from granulemap.storage import Bucket

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    (tmp_path / "2018").mkdir()
    (tmp_path / "20190101090000-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2.nc").write_bytes(b"")
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="bkt", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        doc = {"recipe": "sst-global-mean", "start": "2019-01-01", "end": "2019-01-31", "source": str(tmp_path)}
        out = build_catalog(doc, "run-found", Settings(bucket="bkt"), Bucket("bkt"), now=dt.datetime(2026, 1, 1))
    assert out.catalog.count == 1 and out.catalog.none_found is None
    # when the run started (the state machine's start time, naive taken as UTC): what Aggregate holds results to
    assert out.run.started == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_a_subfolder_named_like_a_granule_is_not_a_granule(tmp_path) -> None:
    import datetime as dt

    from granulemap.catalog import list_source
    from granulemap.recipes import get_recipe

    name = "20190101090000-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2.nc"
    (tmp_path / name).mkdir()  # a folder (an unpacked download, say), not a file
    (tmp_path / name.replace("0101", "0102", 1)).write_bytes(b"")
    got, undated = list_source(str(tmp_path), get_recipe("sst-global-mean"), dt.date(2019, 1, 1),
                               dt.date(2019, 1, 31))
    assert [g.url for g in got] == [str(tmp_path / name.replace("0101", "0102", 1))]
    assert undated == []


def _steps_in_order(bucket, doc: dict, run_id: str):  # type: ignore[no-untyped-def]
    """BuildCatalog, the Processor on every item the Map would run, and Aggregate, called in turn in a moto bucket
    (what the state machine does): the catalog, the summary and the granules in the run's CSV series, in order."""
    import csv
    import datetime as dt
    import io

    from granulemap.aggregation import aggregate
    from granulemap.catalog import build_catalog
    from granulemap.models import AggregatorEvent, ProcessorEvent
    from granulemap.processing import process_item
    from granulemap.settings import Settings

    out = build_catalog(doc, run_id, Settings(bucket=bucket.name), bucket, now=dt.datetime(2026, 1, 1))
    run = out.run.model_dump(mode="json")
    for entry in bucket.get_json(out.catalog.map_key):
        process_item(ProcessorEvent.model_validate({"item": entry, "run": run}), bucket)
    summary = aggregate(AggregatorEvent.model_validate(
        {"run": run, "catalog": out.catalog.model_dump(mode="json"), "map": out.map.model_dump(mode="json")}), bucket)
    series = [key for key in summary.outputs if key.endswith(".csv")]
    rows = list(csv.DictReader(io.StringIO(bucket.get_bytes(series[0]).decode()))) if series else []
    return out, summary, [(row["time"], row["granule"]) for row in rows]


@pytest.fixture
def moto_bucket(monkeypatch):  # type: ignore[no-untyped-def]
    import boto3
    from moto import mock_aws

    from granulemap.storage import Bucket

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="bkt", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        yield Bucket("bkt")


def test_files_of_the_pattern_whose_names_give_no_date_are_noted_in_the_summary(tmp_path, moto_bucket, mur25) -> None:
    """A folder with the real granule of 2018-12-31, and beside it a land mask and that granule renamed (all *.nc):
    the run reads the granule, and its summary says which files it could not date, rather than leaving them out in
    silence (the renamed granule's day counts among those with no granule)."""
    import shutil

    (tmp_path / mur25.name).symlink_to(mur25)
    shutil.copyfile(mur25, tmp_path / "mur25_2019-01-01.nc")
    for file in ("land_mask.nc", "notes.txt"):
        (tmp_path / file).write_bytes(b"")
    doc = {"recipe": "sst-global-mean", "start": "2018-12-31", "end": "2019-01-01", "source": str(tmp_path)}
    out, summary, rows = _steps_in_order(moto_bucket, doc, "run-undated")
    note = (f"2 file(s) in {tmp_path} match recipe sst-global-mean's file-name pattern '*.nc' but their names "
            "give no date, so no run reads them: land_mask.nc, mur25_2019-01-01.nc (a granule keeps the name "
            "NASA gave it)")
    assert out.catalog.count == 1 and out.catalog.notes == [note]
    assert summary.status == "SUCCEEDED" and summary.granules.succeeded == 1
    assert rows == [("2018-12-31T09:00:00Z", mur25.name)]
    assert summary.notes[:2] == [
        "1 of the 2 days of 2018-12-31..2019-01-01 have no granule (none was found when the run started), so this run "
        "added no row for them: 2019-01-01", note]
    assert summary.message.endswith(f". Note: {summary.notes[0]}. Note: {note}")
    # a folder of granules only has nothing to note
    for file in ("land_mask.nc", "mur25_2019-01-01.nc"):
        (tmp_path / file).unlink()
    out, summary, _ = _steps_in_order(moto_bucket, doc, "run-dated")
    assert out.catalog.count == 1 and out.catalog.notes == []
    assert not any("give no date" in note for note in summary.notes)


def test_a_granule_named_for_another_day_fails_alone_and_gives_no_row(tmp_path, moto_bucket, mur25) -> None:
    """The real granule of 2018-12-31 and a copy of it named 2018-12-30 (one dekad, one item): the copy's time is
    2018-12-31, so it would have given a second row at the real one's time. It fails alone, the run keeps one row."""
    import shutil

    copy = mur25.name.replace("20181231", "20181230")
    (tmp_path / mur25.name).symlink_to(mur25)
    shutil.copyfile(mur25, tmp_path / copy)
    doc = {"recipe": "sst-global-mean", "start": "2018-12-30", "end": "2018-12-31", "source": str(tmp_path),
           "tolerated_failure_percentage": 50}
    out, summary, rows = _steps_in_order(moto_bucket, doc, "run-misnamed")
    (entry,) = moto_bucket.get_json(out.catalog.key)
    assert len(entry["granules"]) == 2
    assert (summary.status, summary.granules.succeeded, summary.granules.failed) == ("SUCCEEDED", 1, 1)
    (failure,) = summary.failures
    assert failure.error == "GranuleUnreadable" and "its name is dated 2018-12-30, by which" in failure.cause
    assert rows == [("2018-12-31T09:00:00Z", mur25.name)]


NOT_A_RECORD = "is not a result record (a JSON object with 'result', or with a list of 'results' and of 'failures')"


@pytest.mark.parametrize("body, says", [
    (b"{garbage", "is not JSON (Expecting property name"),
    (b"[1, 2]", NOT_A_RECORD), (b"null", NOT_A_RECORD), (b'{"oops": 1}', NOT_A_RECORD),
    (b'{"result": 1, "results": []}', NOT_A_RECORD), (b'{"results": {"a": 1}}', NOT_A_RECORD),
    (b'{"results": [], "failures": [{"x": 1}]}', "is not a result record (a granule failure it lists is not one: "),
    (b'{"results": [], "failures": [{"granule": "g", "error": "E", "cause": "c", "item": "i"}]}',
     "is not a result record (a granule failure it lists is not one: "),
])
def test_a_damaged_stored_result_fails_its_item_alone_naming_it_and_the_way_out(moto_bucket, synthetic_month,
                                                                                body, says) -> None:
    """A result object edited by hand (or written by something else): the run that finds it done failed whole
    (AggregateFailed: JSONDecodeError, naming nothing). Its item fails alone, naming the object and --recompute, the
    series loses no row, and a run with recompute computes it anew."""
    doc = {"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-03",
           "source": str(synthetic_month[0].parent), "group": "granule", "tolerated_failure_percentage": 50}
    every = [p.name for p in synthetic_month]
    first, _, rows = _steps_in_order(moto_bucket, doc, "run-1")
    assert [name for _, name in rows] == every
    items = moto_bucket.get_json(first.catalog.key)
    damaged_key = layout.result_key(first.run.recipe, first.run.config_id, items[1]["id"])
    moto_bucket.put_bytes(damaged_key, body, "application/json")
    _, summary, rows = _steps_in_order(moto_bucket, doc, "run-2")
    assert (summary.status, summary.items.skipped, summary.items.failed) == ("SUCCEEDED", 2, 1)
    (failure,) = summary.failures
    assert failure.item == items[1]["id"] and failure.error == "ResultDamaged"
    assert failure.cause.startswith(f"its stored result s3://bkt/{damaged_key} {says}")
    assert failure.cause.endswith("Run the same dates again with recompute (\"recompute\": true; --recompute) to "
                                  "compute it anew")
    assert [name for _, name in rows] == every  # the series keeps the row the first run wrote
    _, summary, rows = _steps_in_order(moto_bucket, {**doc, "recompute": True}, "run-3")
    assert (summary.status, summary.items.succeeded, summary.failures) == ("SUCCEEDED", 3, [])
    assert [name for _, name in rows] == every


def test_a_recipes_catalog_notes_reach_the_summary_after_the_undated_files_note(tmp_path, moto_bucket, mur25,
                                                                                 monkeypatch) -> None:
    """Recipe.catalog_notes (atl06-cell-stats names the older releases it left out) go from BuildCatalog, through
    CatalogRef.notes, into the summary's notes and message."""
    from granulemap.recipes import get_recipe

    (tmp_path / mur25.name).symlink_to(mur25)
    (tmp_path / "land_mask.nc").write_bytes(b"")
    recipe = get_recipe("sst-global-mean")
    seen = []

    def catalog_notes(self, granules, params):  # type: ignore[no-untyped-def]
        seen.append([g.url for g in granules])
        return (f"{len(granules)} granule(s) looked at",)  # a tuple: any sequence of notes (a list was assumed)

    monkeypatch.setattr(type(recipe), "catalog_notes", catalog_notes)
    doc = {"recipe": "sst-global-mean", "start": "2018-12-31", "end": "2018-12-31", "source": str(tmp_path)}
    out, summary, _ = _steps_in_order(moto_bucket, doc, "run-catalog-notes")
    assert seen == [[str(tmp_path / mur25.name)]]
    assert [n[:7] for n in out.catalog.notes] == ["1 file(", "1 granu"]  # the undated files' note first
    assert summary.notes[:2] == out.catalog.notes
    assert ". Note: 1 granule(s) looked at" in summary.message


@pytest.mark.parametrize(("undated", "notes"), [("3 file(s) ... give no date", ["3 file(s) ... give no date"]),
                                                (None, [])])
def test_a_catalog_of_the_version_before_notes_is_read_by_aggregate(undated, notes) -> None:
    """An execution whose BuildCatalog ran before a deploy reaches the new Aggregate with CatalogRef.undated (strict
    models refused it: the run failed without a summary)."""
    from granulemap.models import CatalogRef

    ref = CatalogRef.model_validate({"bucket": "b", "key": "k", "count": 1, "undated": undated})
    assert ref.notes == notes
