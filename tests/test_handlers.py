"""Each Lambda handler, called with its sample event from events/, against moto's S3 in this process.

Handlers are loaded and called by the local engine's worker code (the same path a local run takes), so errors come
back as Lambda error payloads with errorType = the exception's class name.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from granulemap import layout
from granulemap.local import worker

from conftest import ROOT, set_stream
from sst_reference import ocean_mean_reference

BUCKET = "granulemap-example"


def _event(name: str) -> dict:
    text = (ROOT / "events" / f"{name}.json").read_text()
    # Sample events use paths relative to the repository; make them absolute for the test.
    return json.loads(text.replace('"tests/data/', f'"{ROOT}/tests/data/'))


def _invoke(function_dir: str, event: dict) -> tuple[object, bool]:
    spec = {
        "function_name": function_dir,
        "code_dir": str(ROOT / "functions" / function_dir),
        "handler": "app.handler",
        "environment": {"BUCKET_NAME": BUCKET, "DEFAULT_MAX_CONCURRENCY": "40",
                        "DEFAULT_TOLERATED_FAILURE_PERCENTAGE": "5", "MAX_RANGE_DAYS": "3660"},
        "memory_size": 512,
        "arn": f"arn:aws:lambda:us-west-2:123456789012:function:{function_dir}",
    }
    payload, errored, _ = worker.invoke(spec, event)
    return json.loads(payload), errored


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-west-2")
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        yield client


def _get_json(s3, key: str):
    return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def test_catalog_builder_writes_the_manifest_and_returns_only_references(s3) -> None:
    out, errored = _invoke("catalog_builder", _event("catalog_builder"))
    assert not errored, out
    assert out["catalog"] == {"bucket": BUCKET, "key": layout.manifest_key("example-run"), "count": 1,
                              "map_key": layout.map_items_key("example-run"), "map_count": 1,
                              "none_found": None, "notes": []}  # the folder gave an item: nothing to explain
    # the SST recipes' tolerance counts granules, in Aggregate: their Map tolerates any share of failed items
    assert out["map"] == {"max_concurrency": 40, "tolerated_failure_percentage": 5.0,
                          "item_tolerated_failure_percentage": 100.0}
    (item,) = _get_json(s3, out["catalog"]["key"])
    assert item["granules"][0]["url"].endswith("20181231090000-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2.nc")
    assert len(json.dumps(out)) < 2000  # the state payload does not grow with the number of granules


def test_catalog_builder_rejects_bad_input_with_invalid_input(s3) -> None:
    event = _event("catalog_builder")
    event["input"]["recipe"] = "no-such-recipe"
    out, errored = _invoke("catalog_builder", event)
    assert errored
    assert out["errorType"] == "InvalidInput"
    assert "field 'recipe'" in out["errorMessage"] and "no-such-recipe" in out["errorMessage"]
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET)


def test_credential_fetcher_needs_nothing_for_local_sources(s3) -> None:
    out, errored = _invoke("credential_fetcher", _event("credential_fetcher"))
    assert not errored and out is None


def test_processor_stores_the_result_then_skips_it(s3) -> None:
    event = _event("processor")
    out, errored = _invoke("processor", event)
    assert not errored, out
    assert out["status"] == "succeeded"
    stored = _get_json(s3, out["result_key"])
    path = Path(event["item"]["granules"][0]["url"])
    assert stored["run_id"] == "example-run"
    (row,) = stored["results"]  # a per-granule recipe's record: one result per granule of the item
    assert row["mean_sst_c"] == pytest.approx(ocean_mean_reference(path)["mean_sst_c"], abs=1e-6)
    assert stored["failures"] == []

    event["run"]["run_id"] = "a-later-run"
    event["item"]["done"] = True  # what the later run's catalog says of it (next test)
    again, _ = _invoke("processor", event)
    assert again == {"item": out["item"], "status": "skipped", "result_key": out["result_key"]}
    assert _get_json(s3, out["result_key"]) == stored  # found, not recomputed


def test_the_next_catalog_marks_the_items_with_a_result_done_and_their_processors_skip_them(s3) -> None:
    first, errored = _invoke("catalog_builder", _event("catalog_builder"))
    assert not errored, first
    (item,) = _get_json(s3, first["catalog"]["key"])
    assert "done" not in item  # nothing computed yet (false is left out of the manifest)
    # the Map's: the same item, its granules without their revisions (in its id and the manifest; no Processor reads
    # them)
    assert all(g["revision"] for g in item["granules"])
    for_the_map = {**item, "granules": [{k: v for k, v in g.items() if k != "revision"} for g in item["granules"]]}
    assert _get_json(s3, first["catalog"]["map_key"]) == [for_the_map] and first["catalog"]["map_count"] == 1
    out, errored = _invoke("processor", {"item": item, "run": first["run"]})
    assert not errored and out["status"] == "succeeded", out
    etag = s3.head_object(Bucket=BUCKET, Key=out["result_key"])["ETag"]

    later = _event("catalog_builder") | {"execution": "a-later-run"}
    second, errored = _invoke("catalog_builder", later)
    assert not errored, second
    assert second["run"]["config_id"] == first["run"]["config_id"]
    (again,) = _get_json(s3, second["catalog"]["key"])
    assert again == item | {"done": True}
    # the Map runs nothing for it (no child execution, no Processor call); Aggregate still accounts for it
    assert _get_json(s3, second["catalog"]["map_key"]) == [] and second["catalog"]["map_count"] == 0
    assert second["catalog"]["count"] == 1
    skipped, errored = _invoke("processor", {"item": again, "run": second["run"]})
    assert not errored and skipped == {"item": item["id"], "status": "skipped", "result_key": out["result_key"]}
    assert s3.head_object(Bucket=BUCKET, Key=out["result_key"])["ETag"] == etag  # not written again


def test_the_catalog_resolves_the_previous_month_from_the_execution_s_start(s3) -> None:
    """The state machine gives BuildCatalog the execution's start time ($$.Execution.StartTime, UTC): a scheduled run
    started at 23:59 on the last day of a month and catalogued a moment later, in the next one, still runs the month
    before the one it started in, the month granulemap status names."""
    event = _event("catalog_builder")
    event["input"] = {k: v for k, v in event["input"].items() if k not in ("start", "end")} | {
        "period": "previous-month"}
    out, errored = _invoke("catalog_builder", event | {"started": "2019-01-31T23:59:30.123Z"})
    # the sample folder holds one day of December 2018: the month is refused, naming it
    assert errored and out["errorType"] == "NoGranulesFound", out
    assert out["errorMessage"].startswith("30 day(s) of 2018-12-01..2018-12-31 (previous-month) have no granule")


def test_processor_raises_named_errors_for_missing_granules(s3) -> None:
    event = _event("processor")
    event["item"]["granules"][0]["url"] += ".missing"
    out, errored = _invoke("processor", event)
    assert errored and out["errorType"] == "GranuleUnreadable"


def _failed_item(s3) -> dict:
    """A Processor whose granule is gone fails; RecordFailure stores the caught error (Lambda's error payload) as it
    is, where the state machine's States.Format puts it (test_asl checks that it is layout.failure_key). Returns
    the item."""
    event = _event("processor")
    event["item"]["id"] = "20181230090000-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2"
    event["item"]["granules"][0]["url"] = event["item"]["granules"][0]["url"].replace("1231", "1230") + ".missing"
    out, errored = _invoke("processor", event)
    assert errored and out["errorType"] == "GranuleUnreadable", out
    s3.put_object(Bucket=BUCKET, Key=layout.failure_key(event["run"]["run_id"], event["item"]["id"]),
                  Body=json.dumps({"Error": out["errorType"], "Cause": json.dumps(out)}))
    return event["item"]


def test_a_stored_failure_reads_as_the_errors_name_and_readable_cause(s3) -> None:
    from granulemap.models import Item, RunContext
    from granulemap.processing import failure_record

    item = _failed_item(s3)
    stored = _get_json(s3, layout.failure_key("example-run", item["id"]))
    record = failure_record(Item.model_validate(item), RunContext.model_validate(_event("processor")["run"]), stored)
    assert record["error"] == "GranuleUnreadable" and record["granule"] == item["granules"][0]["url"].rsplit("/")[-1]
    assert record["cause"].startswith("granule ") and "does not exist" in record["cause"]
    assert "Traceback" not in record["cause"] and "errorType" not in record["cause"]


def test_aggregator_accounts_for_every_item_and_writes_the_csv(s3) -> None:
    processed, _ = _invoke("processor", _event("processor"))
    items = [_event("processor")["item"], _failed_item(s3)]
    s3.put_object(Bucket=BUCKET, Key=layout.manifest_key("example-run"), Body=json.dumps(items))
    event = _event("aggregator")
    event["map"]["tolerated_failure_percentage"] = 50
    out, errored = _invoke("aggregator", event)
    assert not errored, out
    assert out["items"] == {"total": 2, "succeeded": 1, "failed": 1, "skipped": 0}
    assert out["granules"] == {"total": 2, "succeeded": 1, "failed": 1, "skipped": 0}  # one granule per item here
    summary = _get_json(s3, layout.summary_key("example-run"))
    assert summary["failures"][0]["error"] == "GranuleUnreadable"
    csv_text = s3.get_object(Bucket=BUCKET, Key=out["outputs"][0])["Body"].read().decode()
    assert csv_text.splitlines()[0] == "time,granule,mean_sst_c,n_valid,min_sst_c,max_sst_c,computed_at"
    assert len(csv_text.splitlines()) == 2

    event["map"]["tolerated_failure_percentage"] = 10
    out, errored = _invoke("aggregator", event)
    assert errored and out["errorType"] == "TooManyFailures"
    assert "1 of 2 granules failed (50.0%)" in out["errorMessage"]  # the SST recipes' tolerance is in granules
    assert _get_json(s3, layout.summary_key("example-run"))["status"] == "FAILED"


def test_the_aggregator_says_why_the_map_stopped_when_it_failed_for_another_reason_than_its_items(s3) -> None:
    """The Map's Catch puts the Map's own error at $.map.error (statemachine/pipeline.asl.json), which Aggregate
    gets with the rest of $.map: an ItemReader failure used to leave only "NoResult" items in the summary."""
    asl = json.loads((ROOT / "statemachine" / "pipeline.asl.json").read_text())
    (catch,) = asl["States"]["ProcessItems"]["Catch"]
    assert catch["ResultPath"] == "$.map.error" and catch["Next"] == "Aggregate"
    assert asl["States"]["Aggregate"]["Parameters"]["map.$"] == "$.map"

    item = _event("processor")["item"]
    s3.put_object(Bucket=BUCKET, Key=layout.manifest_key("example-run"), Body=json.dumps([item]))
    event = _event("aggregator")
    event["map"]["error"] = {"Error": "States.ItemReaderFailed",
                             "Cause": "Unable to read the manifest: S3 answered SlowDown"}
    out, errored = _invoke("aggregator", event)
    assert errored and out["errorType"] == "TooManyFailures"
    summary = _get_json(s3, layout.summary_key("example-run"))
    assert summary["failures"][0]["error"] == "NoResult"
    assert summary["message"].startswith("The Distributed Map failed "
                                         "(States.ItemReaderFailed: Unable to read the manifest: S3 answered SlowDown)")


def test_a_map_stopped_at_its_tolerance_says_so_and_lists_the_recorded_failures_first(s3) -> None:
    """The Map stops at its tolerance with items it never ran (NoResult): the message said "2 of 2 items failed" and
    listed NoResult first, in manifest order, while the errors that stopped it came after."""
    failed = _failed_item(s3)  # its failure is recorded
    never_ran = _event("processor")["item"]
    s3.put_object(Bucket=BUCKET, Key=layout.manifest_key("example-run"), Body=json.dumps([never_ran, failed]))
    event = _event("aggregator")
    event["map"]["error"] = {"Error": "States.ExceedToleratedFailureThreshold", "Cause": "too many"}
    out, errored = _invoke("aggregator", event)
    assert errored and out["errorType"] == "TooManyFailures"
    message = _get_json(s3, layout.summary_key("example-run"))["message"]
    assert message.startswith("The Distributed Map stopped once more items failed than it tolerates (1 with a "
                              "failure recorded); the 1 it had not finished count as failed (NoResult). ")
    listed = message.split("; first failures: ", 1)[1]
    assert listed.index("GranuleUnreadable") < listed.index("NoResult")
    # summary.json lists them in that order too, and granulemap's printout shows each once, on its own line
    import io

    from granulemap.cloud import print_summary

    summary = _get_json(s3, layout.summary_key("example-run"))
    assert [f["error"] for f in summary["failures"]] == ["GranuleUnreadable", "NoResult"]
    printed = io.StringIO()
    print_summary(summary, file=printed)
    lines = printed.getvalue().splitlines()
    assert [line.split(": ")[1] for line in lines if line.startswith("  failed ")] == ["GranuleUnreadable", "NoResult"]
    assert printed.getvalue().count("does not exist") == 1
    # Every item recorded: the Map's stop says nothing Aggregate's own count does not
    s3.put_object(Bucket=BUCKET, Key=layout.manifest_key("example-run"), Body=json.dumps([failed]))
    _invoke("aggregator", event)
    assert "Distributed Map" not in _get_json(s3, layout.summary_key("example-run"))["message"]


def _log_lines(text: str) -> list[dict]:
    lines = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "level" in record and "message" in record:
            lines.append(record)
    return lines


def test_every_log_line_names_its_run_and_a_processor_s_its_item_also_when_the_function_is_warm(s3) -> None:
    """CloudWatch Logs keeps one stream per warm container: a month's lines were found only by their times. Every
    line now has the run (and, from Processors, the item); a warm container's next invocation does not keep the
    last one's."""
    import io

    from granulemap.observability import logger

    written = io.StringIO()
    # where the handlers' lines go (stdout, in Lambda); set_stream: the stream of import time may be a closed capture
    stream = set_stream(logger.registered_handler, written)
    try:
        event = _event("processor")  # a Processor logs a granule that failed alone (a success says nothing)
        missing = {**event["item"]["granules"][0]}
        missing["url"] = missing["url"].replace("1231", "1230") + ".missing"
        event["item"]["granules"].insert(0, missing)
        _invoke("processor", event)
        event["run"]["run_id"] = "a-later-run"
        _invoke("processor", event)
        _invoke("catalog_builder", _event("catalog_builder"))
    finally:
        set_stream(logger.registered_handler, stream)
    lines = _log_lines(written.getvalue())
    assert lines, "no log lines"
    processor = [line for line in lines if line.get("function_name") == "processor"]
    assert {line["run"] for line in processor} == {"example-run", "a-later-run"}
    assert all(line["item"] == event["item"]["id"] for line in processor)
    cataloguing = [line for line in lines if line.get("function_name") == "catalog_builder"]
    assert cataloguing and all(line["run"] == _event("catalog_builder")["execution"] for line in cataloguing)
    assert all("item" not in line for line in cataloguing)  # nothing kept from the Processor's invocations
