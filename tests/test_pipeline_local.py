"""Full local executions of statemachine/pipeline.asl.json through moto's Step Functions engine, with the real
handlers in worker processes: the workflow as it runs in AWS, offline."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import shutil
from importlib.metadata import version
from pathlib import Path

import pytest

from granulemap import layout
from granulemap.local.engine import LocalEngine
from granulemap.synthetic import make_synthetic_series

from sst_reference import ocean_mean_reference, podaac_tutorial_reference

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine():
    with LocalEngine(workers=2) as eng:
        yield eng


@pytest.fixture(scope="module")
def source(tmp_path_factory, mur25: Path, synthetic_month: list[Path]) -> Path:
    """Three synthetic December granules, the real 2018-12-31 one, one outside the range and one foreign file."""
    src = tmp_path_factory.mktemp("source")
    for path in [*synthetic_month, mur25]:
        shutil.copy(path, src / path.name)
    shutil.copy(synthetic_month[0], src / synthetic_month[0].name.replace("20181201", "20190105"))
    (src / "README.txt").write_text("not a granule")
    return src


def _objects(engine: LocalEngine, prefix: str = "") -> list[str]:
    s3 = engine.client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=engine.bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _get(engine: LocalEngine, key: str) -> bytes:
    return engine.client("s3").get_object(Bucket=engine.bucket, Key=key)["Body"].read()


def _entered_states(history: list[dict]) -> list[str]:
    return [e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e]


def test_sst_run_through_the_state_machine(engine: LocalEngine, source: Path, synthetic_month, mur25) -> None:
    desc = engine.run(
        {"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-31", "source": str(source),
         "max_concurrency": 3},
        timeout=300,
    )
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    history = engine.history(desc["executionArn"])
    states = _entered_states(history)
    assert states[:4] == ["BuildCatalog", "FetchCredentials", "AnythingToDo", "ProcessItems"]
    assert states[-3:] == ["Aggregate", "AnyFailedWithinTolerance", "Done"]  # nothing failed: nobody told
    from granulemap.estimate import PARENT_STATES

    assert len(states) == PARENT_STATES  # what `granulemap estimate` prices a run's state transitions at
    assert any(e["type"] == "MapRunStarted" for e in history)
    run_id = desc["executionArn"].rsplit(":", 1)[-1]

    manifest = json.loads(_get(engine, layout.manifest_key(run_id)))
    granules = sorted(Path(g["url"]).name for i in manifest for g in i["granules"])
    expected = sorted(p.name for p in [*synthetic_month, mur25])
    assert granules == expected  # the 2019 granule and the README are not in range / not granules
    # Items are dekads (days 1-10, 11-20, 21-31 of the month): each item holds its dekad's granules.
    days = sorted(int(name[6:8]) for name in expected)
    dekads = {min((day - 1) // 10, 2) for day in days}
    assert len(manifest) == len(dekads)
    for item in manifest:
        assert len({min((int(Path(g["url"]).name[6:8]) - 1) // 10, 2) for g in item["granules"]}) == 1

    output = json.loads(desc["output"])
    csv_key = layout.output_key("sst-global-mean", output["run"]["config_id"], "global_mean_sst.csv")
    rows = list(csv.DictReader(io.StringIO(_get(engine, csv_key).decode())))
    assert list(rows[0]) == ["time", "granule", "mean_sst_c", "n_valid", "min_sst_c", "max_sst_c", "computed_at"]
    assert [r["granule"] for r in rows] == expected  # sorted by time; the real granule is the last day
    for row in rows:
        want = ocean_mean_reference(source / row["granule"])
        assert float(row["mean_sst_c"]) == pytest.approx(want["mean_sst_c"], abs=1e-6)
        assert int(row["n_valid"]) == want["n_valid"]
    assert sum("SYNTHETIC" in r["granule"] for r in rows) == 3

    summary = json.loads(_get(engine, layout.summary_key(run_id)))
    assert summary["status"] == "SUCCEEDED"
    n = len(dekads)
    assert summary["items"] == {"total": n, "succeeded": n, "failed": 0, "skipped": 0}
    assert summary["granules"] == {"total": 4, "succeeded": 4, "failed": 0, "skipped": 0}
    assert summary["failures"] == []
    assert csv_key in summary["outputs"]
    png = _get(engine, layout.output_key("sst-global-mean", output["run"]["config_id"], "global_mean_sst.png"))
    assert png.startswith(b"\x89PNG")
    provenance_key = layout.provenance_key("sst-global-mean", output["run"]["config_id"], run_id)
    assert provenance_key in summary["outputs"]
    provenance = json.loads(_get(engine, provenance_key))
    assert sorted(Path(u).name for u in provenance["input_granules"]) == expected
    assert provenance["params"] == {"method": "ocean"} and provenance["software"]["h5py"] == version("h5py")

    # The same input again: every item's result exists, so every item is skipped and the CSV is unchanged.
    again = engine.run(
        {"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-31", "source": str(source)},
        timeout=300,
    )
    assert again["status"] == "SUCCEEDED"
    # nothing to do: no Map run, no Processor called; Aggregate accounts for every item
    again_history = engine.history(again["executionArn"])
    assert _entered_states(again_history)[:4] == ["BuildCatalog", "FetchCredentials", "AnythingToDo", "Aggregate"]
    assert not any(e["type"] == "MapRunStarted" for e in again_history)
    summary2 = json.loads(_get(engine, layout.summary_key(again["executionArn"].rsplit(":", 1)[-1])))
    assert summary2["items"] == {"total": n, "succeeded": 0, "failed": 0, "skipped": n}
    assert summary2["granules"] == {"total": 4, "succeeded": 0, "failed": 0, "skipped": 4}
    # the days of December the folder has no granule for are noted (the run added no rows for them)
    have = {f"{name[:4]}-{name[4:6]}-{name[6:8]}" for name in expected}
    missing = [day for day in (f"2018-12-{d:02d}" for d in range(1, 32)) if day not in have]
    assert len(missing) == 31 - 4 and summary2["notes"] == summary["notes"]
    assert summary2["message"] == (
        f"granules: 0 computed, 4 skipped (already done), 0 failed. Note: {len(missing)} of the 31 days of "
        f"2018-12-01..2018-12-31 have no granule (none was found when the run started), so this run added no row "
        f"for them: {', '.join(missing[:5])} and {len(missing) - 5} more")
    assert list(csv.DictReader(io.StringIO(_get(engine, csv_key).decode()))) == rows

    # Stored results that are wrong (made by a version with a bug, say) stay until a run recomputes them.
    s3 = engine.client("s3")
    for item in manifest:
        key = layout.result_key("sst-global-mean", output["run"]["config_id"], item["id"])
        record = json.loads(_get(engine, key))
        for result in record["results"]:
            result["mean_sst_c"] = 99.0
        s3.put_object(Bucket=engine.bucket, Key=key, Body=json.dumps(record).encode())
    december = {"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-31", "source": str(source)}
    assert engine.run(december, timeout=300)["status"] == "SUCCEEDED"
    stale = list(csv.DictReader(io.StringIO(_get(engine, csv_key).decode())))
    assert {r["mean_sst_c"] for r in stale} == {"99.0"}
    fixed = engine.run({**december, "recompute": True}, timeout=300)
    assert fixed["status"] == "SUCCEEDED"
    summary3 = json.loads(_get(engine, layout.summary_key(fixed["executionArn"].rsplit(":", 1)[-1])))
    assert summary3["granules"] == {"total": 4, "succeeded": 4, "failed": 0, "skipped": 0}
    again = list(csv.DictReader(io.StringIO(_get(engine, csv_key).decode())))
    assert [{**r, "computed_at": None} for r in again] == [{**r, "computed_at": None} for r in rows]  # right again
    assert all(new["computed_at"] > old["computed_at"] for new, old in zip(again, rows, strict=True))


def test_invalid_input_fails_at_once_and_writes_nothing(engine: LocalEngine, source: Path) -> None:
    before = set(_objects(engine))
    desc = engine.run(
        {"recipe": "sst-global-mean", "start": "2018-12-31", "end": "2018-12-01", "source": str(source)},
        timeout=60,
    )
    assert desc["status"] == "FAILED"
    assert desc["error"] == "InvalidInput"
    assert "invalid execution input: end (" in desc["cause"] and "is before start (" in desc["cause"]
    assert "before start" in desc["cause"]
    assert set(_objects(engine)) == before
    states = _entered_states(engine.history(desc["executionArn"]))
    assert states == ["BuildCatalog", "InputRejected"]


def test_a_scheduled_run_that_finds_no_granules_fails_so_that_the_alert_tells(engine: LocalEngine,
                                                                            source: Path) -> None:
    """The monthly schedule's input ("period") with nothing to find: NASA has not published the month yet, or the
    collection moved. A SUCCEEDED run with nothing done would go unnoticed; a FAILED one sends the stack's alert.
    The input it says to run again names the month, and is refused again while the month is still empty; the same range
    given as dates (a person's run) succeeds with nothing to do."""
    desc = engine.run({"recipe": "sst-global-mean", "period": "previous-month", "source": str(source)}, timeout=120)
    assert desc["status"] == "FAILED" and desc["error"] == "CatalogFailed"
    assert "NoGranulesFound" in desc["cause"]
    # as granulemap status and a local run's summary say it: the Lambda error's type after the execution's error
    from granulemap.errors import readable_cause

    assert readable_cause(desc["cause"], desc["error"]).startswith("NoGranulesFound: no granules in ")
    assert not readable_cause(desc["cause"]).startswith("NoGranulesFound")  # elsewhere (item failures): the message
    started = desc["startDate"]  # previous-month is of the execution's start, in UTC (not this machine's today)
    assert started.tzinfo is not None
    last = started.astimezone(dt.UTC).date().replace(day=1) - dt.timedelta(days=1)
    # the whole input, its month named (JSON in JSON): run again, it is checked again
    again = {"recipe": "sst-global-mean", "period": last.strftime("%Y-%m"), "source": str(source)}
    assert json.dumps(again).replace('"', '\\"') in desc["cause"]
    # a folder of this machine: run locally again, not in AWS (start refuses a folder)
    assert f"run the month again later with granulemap run --period {last:%Y-%m} and the same options" in desc["cause"]
    assert "start-execution" not in desc["cause"]
    named = engine.run(again, timeout=120)
    assert named["status"] == "FAILED" and "NoGranulesFound" in named["cause"]
    by_hand = engine.run({"recipe": "sst-global-mean", "start": str(last.replace(day=1)), "end": str(last),
                          "source": str(source)}, timeout=120)
    assert by_hand["status"] == "SUCCEEDED"


def test_corrupt_granule_fails_alone_and_the_others_of_its_item_are_kept(engine: LocalEngine, tmp_path: Path,
                                                                          mur25) -> None:
    src = tmp_path / "src"
    src.mkdir()
    good = src / mur25.name
    shutil.copy(mur25, good)
    bad = src / mur25.name.replace("20181231", "20181230")
    bad.write_bytes(mur25.read_bytes()[:40_000])
    run_input = {"recipe": "sst-global-mean", "start": "2018-12-30", "end": "2018-12-31", "source": str(src),
                 "params": {"method": "podaac-tutorial"}}
    tolerant = engine.run({**run_input, "tolerated_failure_percentage": 50}, timeout=120)
    assert tolerant["status"] == "SUCCEEDED", tolerant.get("cause")
    run_id = tolerant["executionArn"].rsplit(":", 1)[-1]
    summary = json.loads(_get(engine, layout.summary_key(run_id)))
    (item,) = json.loads(_get(engine, layout.manifest_key(run_id)))  # December 30 and 31: one dekad, one item
    assert summary["items"] == {"total": 1, "succeeded": 1, "failed": 0, "skipped": 0}
    assert summary["granules"] == {"total": 2, "succeeded": 1, "failed": 1, "skipped": 0}
    # what granulemap status reads of them in the execution history (its item succeeded: "0 failed" items)
    from granulemap import cloud

    sfn = engine.client("stepfunctions")
    assert cloud._aggregated_granules(cloud._newest_events(sfn, tolerant["executionArn"])) == summary["granules"]
    (failure,) = summary["failures"]
    assert failure["item"] == item["id"] and failure["granule"] == bad.name
    assert failure["error"] == "GranuleUnreadable"
    assert bad.name in failure["cause"]
    config_id = json.loads(tolerant["output"])["run"]["config_id"]
    csv_key = layout.output_key("sst-global-mean", config_id, "global_mean_sst.csv")
    rows = list(csv.DictReader(io.StringIO(_get(engine, csv_key).decode())))
    assert [r["granule"] for r in rows] == [good.name]  # the good granule of the item is kept

    # The item is not done while a granule of it failed: its record is kept apart from the results.
    assert layout.partial_result_key("sst-global-mean", config_id, item["id"]) in _objects(engine, "results/")
    assert layout.result_key("sst-global-mean", config_id, item["id"]) not in _objects(engine, "results/")

    strict = engine.run({**run_input, "tolerated_failure_percentage": 0}, timeout=120)
    assert strict["status"] == "FAILED"
    assert strict["error"] == "TooManyFailures"
    assert "1 of 2 granules failed" in strict["cause"]
    assert cloud._aggregated_granules(cloud._newest_events(sfn, strict["executionArn"])) is None  # Aggregate raised

    # The file becomes readable under the same name (it had not finished arriving, say): the next run finds the item
    # not done and computes it again, whole.
    (replacement,) = make_synthetic_series(mur25, tmp_path / "replacement", dt.date(2018, 12, 30), 1)
    shutil.copy(replacement, bad)
    repaired = engine.run({**run_input, "tolerated_failure_percentage": 0}, timeout=120)
    assert repaired["status"] == "SUCCEEDED", repaired.get("cause")
    summary = json.loads(_get(engine, layout.summary_key(repaired["executionArn"].rsplit(":", 1)[-1])))
    (item,) = json.loads(_get(engine, layout.manifest_key(repaired["executionArn"].rsplit(":", 1)[-1])))
    assert summary["granules"] == {"total": 2, "succeeded": 2, "failed": 0, "skipped": 0}
    assert summary["failures"] == []
    rows = list(csv.DictReader(io.StringIO(_get(engine, csv_key).decode())))
    assert sorted(r["granule"] for r in rows) == sorted([good.name, bad.name])
    for row in rows:
        assert float(row["mean_sst_c"]) == pytest.approx(podaac_tutorial_reference(src / row["granule"]), abs=1e-5)
    again = engine.run({**run_input, "tolerated_failure_percentage": 0}, timeout=120)
    summary = json.loads(_get(engine, layout.summary_key(again["executionArn"].rsplit(":", 1)[-1])))
    assert summary["items"] == {"total": 1, "succeeded": 0, "failed": 0, "skipped": 1}  # now done


def test_with_one_granule_per_item_a_corrupt_granule_fails_its_item(engine: LocalEngine, tmp_path: Path,
                                                                    mur25) -> None:
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(mur25, src / mur25.name)
    bad = src / mur25.name.replace("20181231", "20181230")
    bad.write_bytes(mur25.read_bytes()[:40_000])
    desc = engine.run({"recipe": "sst-global-mean", "start": "2018-12-30", "end": "2018-12-31", "source": str(src),
                       "params": {"method": "podaac-tutorial"}, "group": "granule",
                       "tolerated_failure_percentage": 50}, timeout=120)
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    summary = json.loads(_get(engine, layout.summary_key(desc["executionArn"].rsplit(":", 1)[-1])))
    assert summary["items"] == {"total": 2, "succeeded": 1, "failed": 1, "skipped": 0}
    assert summary["granules"] == {"total": 2, "succeeded": 1, "failed": 1, "skipped": 0}
    (failure,) = summary["failures"]
    assert failure["item"].startswith(bad.name.removesuffix(".nc") + "-r")  # its name and revision
    assert failure["granule"] == bad.name  # its only granule
    assert failure["error"] == "GranuleUnreadable" and bad.name in failure["cause"]
    # what the progress line counted: the failure RecordFailure stored (no Lambda call of its own to count)
    assert {k: engine.item_counts()[k] for k in ("total", "succeeded", "failed")} == {
        "total": 2, "succeeded": 1, "failed": 1}


def test_s3_prefix_source_reads_granules_from_s3(engine: LocalEngine, mur25: Path, synthetic_month) -> None:
    s3 = engine.client("s3")
    for path in (mur25, synthetic_month[1]):
        s3.upload_file(str(path), engine.bucket, f"sources/mur25/{path.name}")
    s3.put_object(Bucket=engine.bucket, Key="sources/other/20181215090000-elsewhere.nc", Body=b"not in the prefix")
    source = f"s3://{engine.bucket}/sources/mur25"
    desc = engine.run({"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-31",
                       "source": source, "params": {"method": "podaac-tutorial"}}, timeout=120)
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    run_id = desc["executionArn"].rsplit(":", 1)[-1]
    manifest = json.loads(_get(engine, layout.manifest_key(run_id)))
    assert sorted(i["granules"][0]["url"] for i in manifest) == sorted(
        f"{source}/{p.name}" for p in (mur25, synthetic_month[1]))
    # Another bucket: the functions' role reads only the stack's own (template.yaml), so it is refused up front.
    s3.create_bucket(Bucket="granule-source", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    s3.upload_file(str(mur25), "granule-source", f"mur25/{mur25.name}")
    elsewhere = engine.run({"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-31",
                            "source": "s3://granule-source/mur25"}, timeout=120)
    assert elsewhere["status"] == "FAILED" and elsewhere["error"] == "InvalidInput"
    assert "is in bucket granule-source" in elsewhere["cause"] and f"s3://{engine.bucket}/" in elsewhere["cause"]
    summary = json.loads(_get(engine, layout.summary_key(run_id)))
    # an earlier test may have computed the real granule already: then it is skipped, not recomputed
    assert summary["items"]["succeeded"] + summary["items"]["skipped"] == 2 and summary["items"]["failed"] == 0


def test_a_run_that_succeeds_with_failures_within_the_tolerance_tells_the_alert_topic(engine: LocalEngine,
                                                                                    tmp_path: Path, mur25) -> None:
    """Within the tolerance a run SUCCEEDS, no alert rule fires, and the schedule never runs its month again: its
    failed granule stayed missing with nobody told. The state machine now publishes to the stack's alert topic (a
    queue subscribed here shows what a subscriber gets); a run without failures publishes nothing."""
    (topic,) = engine.template.topics.values()
    sqs, sns = engine.client("sqs"), engine.client("sns")
    queue = sqs.create_queue(QueueName="alerts-test")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(mur25, src / mur25.name)
    bad = src / mur25.name.replace("20181231", "20181229")
    bad.write_bytes(mur25.read_bytes()[:40_000])
    run_input = {"recipe": "sst-global-mean", "start": "2018-12-29", "end": "2018-12-31", "source": str(src),
                 "tolerated_failure_percentage": 50}
    told = engine.run(run_input, timeout=120)
    assert told["status"] == "SUCCEEDED", told.get("cause")
    assert "TellFailuresWithinTolerance" in _entered_states(engine.history(told["executionArn"]))
    (message,) = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    name = told["executionArn"].rsplit(":", 1)[-1]
    # which run, which recipe and days (a scheduled run's input says only "previous-month"), and how to redo them
    assert message["Body"].startswith(f"granulemap run {name} (sst-global-mean, 2018-12-29..2018-12-31) SUCCEEDED, "
                                      "but 1 of its 2 granules failed (within the tolerated percentage")
    assert f"Which, and why: granulemap results {told['executionArn']}. " in message["Body"]
    assert "granulemap start --recipe sst-global-mean --start 2018-12-29 --end 2018-12-31" in message["Body"]
    summary = json.loads(_get(engine, layout.summary_key(name)))
    assert (summary["start"], summary["end"]) == ("2018-12-29", "2018-12-31")
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])

    bad.unlink()
    clean = engine.run({**run_input, "end": "2018-12-31", "start": "2018-12-30"}, timeout=120)
    assert clean["status"] == "SUCCEEDED"
    assert "AnyFailedWithinTolerance" in _entered_states(engine.history(clean["executionArn"]))
    assert "TellFailuresWithinTolerance" not in _entered_states(engine.history(clean["executionArn"]))
    assert sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []) == []
