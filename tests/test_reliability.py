"""Reliability, proven by fault injection through local executions of the real state machine."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from granulemap import layout
from granulemap.cli import main as cli_main
from granulemap.faults import ENV as FAULTS_ENV
from granulemap.local.engine import LocalEngine
from granulemap.synthetic import make_synthetic_series

from conftest import MUR25

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ten_granules(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("ten")
    make_synthetic_series(MUR25, src, __import__("datetime").date(2019, 1, 1), 10)
    return src


def _values(csv_text: str) -> list[dict]:
    """A time-series CSV's rows without ``computed_at`` (when each was computed: differs between two runs), having
    checked that every row says when."""
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    for row in rows:
        __import__("datetime").datetime.fromisoformat(row.pop("computed_at"))
    return rows


def _rows(engine: LocalEngine, key: str) -> list[dict]:
    body = engine.client("s3").get_object(Bucket=engine.bucket, Key=key)["Body"].read().decode()
    return list(csv.DictReader(io.StringIO(body)))


def _item_ids(folder: Path, group: str) -> list[str]:
    """The ids of the items a run on ``folder`` has, written out here from README's rule: a granule's revision is
    its file's size and modification time; one granule alone is its name (no .nc), "-r" and a digest of its name
    and revision; a dekad (here one, January 1-10) is its first and last day, its count and a digest of them all."""
    import hashlib
    import os

    def named(path: Path) -> str:
        stat = os.stat(path)
        return f"{path.name}\t{stat.st_size}-{stat.st_mtime_ns}"

    paths = sorted(folder.iterdir())
    if group == "granule":
        return [f"{p.name.removesuffix('.nc')}-r{hashlib.sha256(named(p).encode()).hexdigest()[:8]}" for p in paths]
    text = "\n".join(sorted(named(p) for p in paths))
    return [f"20190101-20190110-{len(paths)}g-{hashlib.sha256(text.encode()).hexdigest()[:10]}"]


def test_transient_failures_are_retried_until_every_item_succeeds(ten_granules: Path, tmp_path: Path) -> None:
    names = _item_ids(ten_granules, "granule")
    assert len(names) == 10
    flaky = {names[0]: 1, names[3]: 2, names[7]: 1}  # 30 % of the items fail once or twice
    plan = {"transient": flaky, "state_dir": str(tmp_path)}
    with LocalEngine(workers=2, extra_env={FAULTS_ENV: json.dumps(plan)}) as engine:
        # One granule per item (group): 30 % of ten items; the retries are the state machine's, per item.
        desc = engine.run({"recipe": "sst-global-mean", "start": "2019-01-01", "end": "2019-01-10", "group": "granule",
                           "source": str(ten_granules), "tolerated_failure_percentage": 0}, timeout=300)
        assert desc["status"] == "SUCCEEDED", desc.get("cause")
        # moto keeps the Map's child executions out of the parent's history; the engine's invocation record
        # (logs/invocations.jsonl in a CLI run) shows each attempt instead.
        attempts = [i for i in engine.invocations if i["function"] == "ProcessorFunction"]
        failed = [i for i in attempts if i["errored"]]
        assert sorted(i["item"] for i in failed) == sorted(k for k, n in flaky.items() for _ in range(n))
        assert {i["errorType"] for i in failed} == {"TransientError"}
        assert len(attempts) == 10 + sum(flaky.values())
        map_run = [e for e in engine.history(desc["executionArn"]) if e["type"] == "MapRunStarted"]
        counts = engine.client("stepfunctions").describe_map_run(
            mapRunArn=map_run[0]["mapRunStartedEventDetails"]["mapRunArn"])["itemCounts"]
        assert counts["succeeded"] == 10 and counts["failed"] == 0
        summary = json.loads(engine.client("s3").get_object(
            Bucket=engine.bucket, Key=layout.summary_key(desc["executionArn"].rsplit(":", 1)[-1]))["Body"].read())
        assert summary["items"] == {"total": 10, "succeeded": 10, "failed": 0, "skipped": 0}
    for item, times in flaky.items():
        assert (tmp_path / f"{item}.attempts").read_text() == str(times + 1)


def test_a_dekad_item_that_fails_transiently_is_retried_whole_and_its_granules_counted_once(
        ten_granules: Path, tmp_path: Path) -> None:
    names = sorted(p.name for p in ten_granules.iterdir())  # January 1-10: one dekad, one item
    (item_id,) = _item_ids(ten_granules, "dekad")
    assert item_id.startswith("20190101-20190110-10g-")
    plan = {"transient": {item_id: 2}, "state_dir": str(tmp_path)}
    with LocalEngine(workers=1, extra_env={FAULTS_ENV: json.dumps(plan)}) as engine:
        desc = engine.run({"recipe": "sst-global-mean", "start": "2019-01-01", "end": "2019-01-10",
                           "source": str(ten_granules), "tolerated_failure_percentage": 0}, timeout=300)
        assert desc["status"] == "SUCCEEDED", desc.get("cause")
        attempts = [i for i in engine.invocations if i["function"] == "ProcessorFunction"]
        assert [(i["item"], i["errored"]) for i in attempts] == [(item_id, True), (item_id, True), (item_id, False)]
        run_id = desc["executionArn"].rsplit(":", 1)[-1]
        summary = json.loads(engine.client("s3").get_object(
            Bucket=engine.bucket, Key=layout.summary_key(run_id))["Body"].read())
        assert summary["items"] == {"total": 1, "succeeded": 1, "failed": 0, "skipped": 0}
        assert summary["granules"] == {"total": 10, "succeeded": 10, "failed": 0, "skipped": 0}
        config = json.loads(desc["output"])["run"]["config_id"]
        rows = _rows(engine, layout.output_key("sst-global-mean", config, "global_mean_sst.csv"))
        assert [r["granule"] for r in rows] == names  # each granule once, in time order
    assert (tmp_path / f"{item_id}.attempts").read_text() == "3"


def _accounted(objects: dict, item, done: bool = False, started: str | None = None):
    from granulemap.aggregation import account_items
    from granulemap.models import AggregatorEvent

    run = {"run_id": "run-2", "recipe": "sst-global-mean", "params": {}, "config_id": "cfg", "started": started}
    event = AggregatorEvent.model_validate({
        "run": run, "catalog": {"bucket": "b", "key": "k", "count": 1},
        "map": {"max_concurrency": 1, "tolerated_failure_percentage": 0, "item_tolerated_failure_percentage": 100}})
    return account_items(event, _MemoryBucket(objects), [item.model_copy(update={"done": done})])


def _two_granule_item():
    from granulemap.models import Granule, Item

    return Item(id="20190301-20190302-2g-abc", granules=[Granule(url="s3://b/g1.nc"), Granule(url="s3://b/g2.nc")])


def _earlier_full_record(item) -> dict:
    """What run-1 stored for ``item``: both granules, values 1.0."""
    return {layout.result_key("sst-global-mean", "cfg", item.id): {
        "item": item.id, "run_id": "run-1", "results": [{"granule": "g1.nc", "mean_sst_c": 1.0},
                                                         {"granule": "g2.nc", "mean_sst_c": 1.0}], "failures": []}}


def test_an_item_computed_again_some_of_whose_granules_failed_counts_this_runs_record_not_the_earlier_one() -> None:
    """recompute: the Map ran the item again, g2 failed this time: its record went to the partial key, and the earlier
    run's full result is still at the result key. This run's values and its failure count, not the old ones."""
    item = _two_granule_item()
    objects = {**_earlier_full_record(item), layout.partial_result_key("sst-global-mean", "cfg", item.id): {
        "item": item.id, "run_id": "run-2", "results": [{"granule": "g1.nc", "mean_sst_c": 2.0}],
        "failures": [{"granule": "g2.nc", "error": "GranuleUnreadable", "cause": "truncated"}]}}
    found = _accounted(objects, item)
    assert found.results == [{"granule": "g1.nc", "mean_sst_c": 2.0, "computed_at": None}]  # the record has none
    assert (found.granules.succeeded, found.granules.failed, found.granules.skipped) == (1, 1, 0)
    assert [(f.granule, f.error) for f in found.failures] == [("g2.nc", "GranuleUnreadable")]


def test_an_item_computed_again_that_failed_whole_is_failed_not_skipped_with_the_earlier_result() -> None:
    item = _two_granule_item()
    objects = {**_earlier_full_record(item),
               layout.failure_key("run-2", item.id): {"item": item.id, "error": "GranuleUnreadable", "cause": "bad"}}
    found = _accounted(objects, item)
    assert found.results == []
    assert (found.items.failed, found.items.skipped, found.granules.failed) == (1, 0, 2)
    assert [f.cause for f in found.failures] == ["bad"]


def test_another_runs_result_without_a_record_of_this_run_counts_as_skipped() -> None:
    """An overlapping run of the same configuration computed the item first (this run's Processor found it stored);
    and an item found done at catalog time is never looked up for records of this run."""
    item = _two_granule_item()
    for done in (False, True):
        found = _accounted(_earlier_full_record(item), item, done=done)
        assert [r["mean_sst_c"] for r in found.results] == [1.0, 1.0]
        assert (found.items.skipped, found.granules.skipped, found.failures) == (1, 2, [])


@pytest.mark.parametrize("computed_at", ["2026-11-30T23:59:59+00:00", None])
def test_a_result_from_before_the_run_does_not_stand_for_an_item_the_run_left_without_a_record(computed_at) -> None:
    """recompute, and the Map stopped (or a failure could not be stored): no child wrote a result or a failure record.
    The earlier run's stored result counted as skipped, and the run SUCCEEDED with the old values and no alert. Only
    an overlapping run's result, computed after this run started, counts; this run's records win over both."""
    item = _two_granule_item()
    objects = _earlier_full_record(item)
    next(iter(objects.values()))["computed_at"] = computed_at  # before the run started, or not said
    found = _accounted(objects, item, started="2026-12-01T00:00:00Z")
    assert found.results == []
    assert (found.items.failed, found.items.skipped, found.granules.failed) == (1, 0, 2)
    (failure,) = found.failures
    assert failure.error == "NoResult" and "its only result is run run-1's" in failure.cause
    assert "before this run started (2026-12-01 00:00:00 UTC)" in failure.cause

    objects = _earlier_full_record(item)
    next(iter(objects.values()))["computed_at"] = "2026-12-01T00:00:05+00:00"  # an overlapping run's, since
    found = _accounted(objects, item, started="2026-12-01T00:00:00Z")
    assert (found.items.skipped, found.granules.skipped, found.failures) == (1, 2, [])
    next(iter(objects.values()))["computed_at"] = computed_at
    found = _accounted(objects, item, done=True, started="2026-12-01T00:00:00Z")  # found done by the catalog
    assert (found.items.skipped, found.granules.skipped, found.failures) == (1, 2, [])
    # this run's own records over the earlier result: its partial record, or its failure (as RecordFailure stores it)
    partial = {layout.partial_result_key("sst-global-mean", "cfg", item.id): {
        "item": item.id, "run_id": "run-2", "results": [{"granule": "g1.nc", "mean_sst_c": 2.0}],
        "failures": [{"granule": "g2.nc", "error": "GranuleUnreadable", "cause": "truncated"}]}}
    found = _accounted({**objects, **partial}, item, started="2026-12-01T00:00:00Z")
    assert [r["mean_sst_c"] for r in found.results] == [2.0] and (found.granules.succeeded, found.granules.failed) == (
        1, 1)
    failed = {layout.failure_key("run-2", item.id): {"Error": "GranuleUnreadable", "Cause": "bad"}}
    found = _accounted({**objects, **failed}, item, started="2026-12-01T00:00:00Z")
    assert found.results == [] and [(f.error, f.cause) for f in found.failures] == [("GranuleUnreadable", "bad")]


def test_a_recompute_whose_granule_became_unreadable_fails_by_the_tolerance(tmp_path: Path) -> None:
    """End to end: a granule of a dekad computed before is unreadable when the range is computed again: the run
    counts it failed (the earlier result of its item does not stand for it), and the CSV keeps its earlier row."""
    src = tmp_path / "src"
    names = [p.name for p in make_synthetic_series(MUR25, src, __import__("datetime").date(2019, 1, 1), 3)]
    run = {"recipe": "sst-global-mean", "start": "2019-01-01", "end": "2019-01-03", "source": str(src),
           "tolerated_failure_percentage": 0}
    with LocalEngine(workers=1) as engine:
        first = engine.run(run, timeout=300)
        assert first["status"] == "SUCCEEDED", first.get("cause")
        csv_key = layout.output_key("sst-global-mean", json.loads(first["output"])["run"]["config_id"],
                                    "global_mean_sst.csv")
        before = {r["granule"]: r["mean_sst_c"] for r in _rows(engine, csv_key)}
        (src / names[1]).write_bytes(b"not an HDF5 file")
        again = engine.run({**run, "recompute": True}, timeout=300)
        assert again["status"] == "FAILED" and again["error"] == "TooManyFailures", again
        assert "1 of 3 granules failed" in again["cause"] and names[1] in again["cause"]
        summary = json.loads(engine.client("s3").get_object(
            Bucket=engine.bucket, Key=layout.summary_key(again["executionArn"].rsplit(":", 1)[-1]))["Body"].read())
        assert summary["granules"] == {"total": 3, "succeeded": 2, "failed": 1, "skipped": 0}
        assert {r["granule"]: r["mean_sst_c"] for r in _rows(engine, csv_key)} == before


def test_a_result_found_stored_does_not_undo_a_recompute_of_its_granules_in_another_item(tmp_path: Path) -> None:
    """Days 1-3 computed as one item; days 2-3 computed again ("recompute": a partial dekad is an item of its own);
    then days 1-3 run again find the first item done and merge its older results: days 2-3 keep the recompute's."""
    src = tmp_path / "src"
    make_synthetic_series(MUR25, src, __import__("datetime").date(2019, 1, 1), 3)
    run = {"recipe": "sst-global-mean", "source": str(src), "start": "2019-01-01", "end": "2019-01-03"}
    with LocalEngine(workers=1) as engine:
        s3 = engine.client("s3")
        first = engine.run(run, timeout=300)
        assert first["status"] == "SUCCEEDED", first.get("cause")
        csv_key = layout.output_key("sst-global-mean", json.loads(first["output"])["run"]["config_id"],
                                    "global_mean_sst.csv")
        # The first item's stored results as an earlier, wrong version of a recipe would have left them: +1 °C.
        (key,) = [o["Key"] for o in s3.list_objects_v2(Bucket=engine.bucket, Prefix="results/")["Contents"]]
        record = json.loads(s3.get_object(Bucket=engine.bucket, Key=key)["Body"].read())
        right = {r["granule"]: r["mean_sst_c"] for r in record["results"]}
        for r in record["results"]:
            r["mean_sst_c"] += 1.0
        s3.put_object(Bucket=engine.bucket, Key=key, Body=json.dumps(record).encode())
        names = sorted(right)
        again = engine.run({**run, "start": "2019-01-02", "recompute": True}, timeout=300)
        assert again["status"] == "SUCCEEDED", again.get("cause")
        plain = engine.run(run, timeout=300)
        assert plain["status"] == "SUCCEEDED", plain.get("cause")
        summary = json.loads(s3.get_object(Bucket=engine.bucket, Key=layout.summary_key(
            plain["executionArn"].rsplit(":", 1)[-1]))["Body"].read())
        assert summary["granules"] == {"total": 3, "succeeded": 0, "failed": 0, "skipped": 3}
        got = {r["granule"]: float(r["mean_sst_c"]) for r in _rows(engine, csv_key)}
    assert got[names[0]] == pytest.approx(right[names[0]] + 1.0, abs=1e-9)  # only the first item ever had day 1
    assert [got[n] for n in names[1:]] == [pytest.approx(right[n], abs=1e-9) for n in names[1:]]


def test_two_corrupt_granules_among_thirty(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_synthetic_series(MUR25, src, __import__("datetime").date(2019, 2, 1), 28)
    corrupt = []
    for day in (1, 2):  # two more days in March, truncated
        good = make_synthetic_series(MUR25, tmp_path / "tmp", __import__("datetime").date(2019, 3, day), 1)[0]
        bad = src / good.name
        bad.write_bytes(good.read_bytes()[:30_000])
        corrupt.append(bad.name.removesuffix(".nc"))
    with LocalEngine(workers=2) as engine:
        run = {"recipe": "sst-global-mean", "start": "2019-02-01", "end": "2019-03-31", "source": str(src)}
        ok = engine.run({**run, "tolerated_failure_percentage": 10}, timeout=300)
        assert ok["status"] == "SUCCEEDED", ok.get("cause")
        summary = json.loads(engine.client("s3").get_object(
            Bucket=engine.bucket, Key=layout.summary_key(ok["executionArn"].rsplit(":", 1)[-1]))["Body"].read())
        # Items are dekads: February's three, and March 1-2, whose two granules are both corrupt, so that item fails
        # (naming both); the tolerance counts granules.
        assert summary["items"] == {"total": 4, "succeeded": 3, "failed": 1, "skipped": 0}
        assert summary["granules"] == {"total": 30, "succeeded": 28, "failed": 2, "skipped": 0}
        (failure,) = summary["failures"]
        assert failure["item"].startswith("20190301-20190302-2g-") and failure["error"] == "GranuleUnreadable"
        assert all(f"{name}.nc" in failure["cause"] for name in corrupt)
        config = json.loads(ok["output"])["run"]["config_id"]
        assert len(_rows(engine, layout.output_key("sst-global-mean", config, "global_mean_sst.csv"))) == 28

        strict = engine.run({**run, "tolerated_failure_percentage": 5}, timeout=300)
        assert strict["status"] == "FAILED" and strict["error"] == "TooManyFailures"
        assert "2 of 30 granules failed (6.7%)" in strict["cause"]


def _granulemap(*args: str, env: dict | None = None, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "granulemap.cli", *args], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_killed_run_resumes_without_redoing_or_duplicating(ten_granules: Path, tmp_path: Path) -> None:
    args = ["run", "--recipe", "sst-global-mean", "--start", "2019-01-01", "--end", "2019-01-10", "--group", "granule",
            "--source", str(ten_granules), "--quiet", "--workers", "1", "--max-concurrency", "1"]
    whole = _granulemap(*args, "--out", str(tmp_path / "whole"))
    assert whole.wait(timeout=300) == 0, whole.stderr.read()

    out = tmp_path / "killed"
    slow = {FAULTS_ENV: json.dumps({"delay_seconds": 0.4})}
    proc = _granulemap(*args, "--out", str(out), env=slow, start_new_session=True)
    results = out / "state" / "results"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = list(results.rglob("*.json")) if results.exists() else []
        if len(done) >= 3:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = len(list(results.rglob("*.json")))
    assert 3 <= finished_before < 10, "the run was not killed part way"

    resumed = _granulemap(*args, "--out", str(out))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["items"]["skipped"] == finished_before
    assert summary["items"]["succeeded"] == 10 - finished_before
    assert summary["items"]["failed"] == 0
    resumed_csv = (out / "global_mean_sst.csv").read_text()
    assert _values(resumed_csv) == _values((tmp_path / "whole" / "global_mean_sst.csv").read_text())
    assert len(resumed_csv.splitlines()) == 11  # header + each granule exactly once


def test_killed_run_of_dekad_items_resumes_by_item_counting_each_granule_once(tmp_path: Path) -> None:
    """The default items (a dekad's granules each): a run killed after its first item resumes with that item's
    granules skipped and the other items' computed, and the CSV equals an uninterrupted run's."""
    source = tmp_path / "month"
    make_synthetic_series(MUR25, source, __import__("datetime").date(2019, 1, 1), 30)  # three dekads of ten
    args = ["run", "--recipe", "sst-global-mean", "--start", "2019-01-01", "--end", "2019-01-30",
            "--source", str(source), "--quiet", "--workers", "1", "--max-concurrency", "1"]
    whole = _granulemap(*args, "--out", str(tmp_path / "whole"))
    assert whole.wait(timeout=300) == 0, whole.stderr.read()
    assert json.loads((tmp_path / "whole" / "summary.json").read_text())["items"]["total"] == 3

    out = tmp_path / "killed"
    # Killed once the first item's result is stored: the next one's would be 5 s later (1 s was a race a busy
    # machine's stall of the test's process could lose).
    slow = {FAULTS_ENV: json.dumps({"delay_seconds": 5.0})}
    proc = _granulemap(*args, "--out", str(out), env=slow, start_new_session=True)
    results = out / "state" / "results"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (results.exists() and list(results.rglob("*.json"))):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = [p.name for p in results.rglob("*.json")]
    assert len(finished) == 1 and "@partial" not in finished[0], finished

    resumed = _granulemap(*args, "--out", str(out))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["items"] == {"total": 3, "succeeded": 2, "failed": 0, "skipped": 1}
    assert summary["granules"] == {"total": 30, "succeeded": 20, "failed": 0, "skipped": 10}
    resumed_csv = (out / "global_mean_sst.csv").read_text()
    assert _values(resumed_csv) == _values((tmp_path / "whole" / "global_mean_sst.csv").read_text())
    assert len(resumed_csv.splitlines()) == 31  # header + each granule exactly once


BAD_INPUTS = [
    ({"recipe": "nope"}, "field 'recipe'"),
    ({"start": "2019-13-01"}, "field 'start'"),
    ({"start": "2019-01-10", "end": "2019-01-01"}, "before start"),
    ({"start": "2000-01-01", "end": "2019-01-01"}, "field 'end'"),
    ({"bbox": [10, 5, 20, -5]}, "field 'bbox'"),
    ({"bbox": [-170, -5, -120, 5]}, "field 'bbox': it narrows a NASA CMR search, not a 'source' folder"),
    ({"max_concurrency": 0}, "field 'max_concurrency'"),
    ({"max_concurrency": 20000}, "field 'max_concurrency'"),
    ({"tolerated_failure_percentage": 120}, "field 'tolerated_failure_percentage'"),
    ({"params": {"method": "median"}}, "field 'method'"),
    ({"group": "week"}, "field 'group'"),
]


@pytest.fixture(scope="module")
def engine():
    with LocalEngine(workers=1) as eng:
        yield eng


@pytest.mark.parametrize(("change", "message"), BAD_INPUTS)
def test_bad_input_fails_the_execution_at_once_naming_the_field(engine, ten_granules, change, message) -> None:
    run = {"recipe": "sst-global-mean", "start": "2019-01-01", "end": "2019-01-10", "source": str(ten_granules),
           **change}
    s3 = engine.client("s3")
    before = s3.list_objects_v2(Bucket=engine.bucket).get("KeyCount", 0)
    desc = engine.run(run, timeout=60)
    assert desc["status"] == "FAILED" and desc["error"] == "InvalidInput"
    assert message in json.loads(desc["cause"])["errorMessage"]
    assert s3.list_objects_v2(Bucket=engine.bucket).get("KeyCount", 0) == before


def test_cli_reports_bad_input_before_starting_anything(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = cli_main(["run", "--recipe", "sst-global-mean", "--start", "2019-01-10", "--end", "2019-01-01",
                     "--source", str(tmp_path), "--out", str(out)])
    assert code == 2
    assert "before start" in capsys.readouterr().err
    assert not out.exists()
    code = cli_main(["run", "--recipe", "sst-global-mean", "--start", "2019-01-01", "--end", "2019-01-02",
                     "--source", str(tmp_path / "missing"), "--out", str(out)])
    assert code == 2
    assert "field 'source'" in capsys.readouterr().err
    assert not out.exists()


# --- G7: a partial record of an earlier run is not this run's result ------------------------------------------------
class _MemoryBucket:
    def __init__(self, objects):
        self.objects = objects

    def get_json_or_none(self, key):
        return self.objects.get(key)

    def get_bytes_or_none(self, key):
        return None if key not in self.objects else json.dumps(self.objects[key]).encode()


def test_an_earlier_runs_partial_record_does_not_count_when_the_item_failed_whole_in_this_run() -> None:
    from granulemap import layout
    from granulemap.aggregation import account_items
    from granulemap.models import AggregatorEvent, Granule, Item

    run = {"run_id": "run-2", "recipe": "sst-global-mean", "params": {}, "config_id": "cfg"}
    item = Item(id="20190301-20190302-2g-abc", granules=[Granule(url="s3://b/g1.nc"), Granule(url="s3://b/g2.nc")])
    bucket = _MemoryBucket({
        layout.partial_result_key("sst-global-mean", "cfg", item.id): {
            "item": item.id, "run_id": "run-1", "results": [{"granule": "g1.nc", "mean_sst_c": 1.0}],
            "failures": [{"granule": "g2.nc", "error": "GranuleUnreadable", "cause": "truncated"}]},
        layout.failure_key("run-2", item.id): {"item": item.id, "error": "GranuleUnreadable", "cause": "both bad"},
    })
    event = AggregatorEvent.model_validate({
        "run": run, "catalog": {"bucket": "b", "key": "k", "count": 1},
        "map": {"max_concurrency": 1, "tolerated_failure_percentage": 0, "item_tolerated_failure_percentage": 100}})
    found = account_items(event, bucket, [item])
    assert found.results == []
    assert (found.items.failed, found.items.succeeded, found.items.skipped) == (1, 0, 0)
    assert (found.granules.failed, found.granules.succeeded, found.granules.skipped) == (2, 0, 0)
    assert [f.cause for f in found.failures] == ["both bad"]


def test_a_result_computed_at_the_instant_the_run_started_is_not_from_before_it() -> None:
    """The boundary of which stored results a run may count as done (aggregation's rule): one computed before the run
    started is what a recompute was to replace; one computed at or after it, an overlapping run's, counts."""
    import datetime as dt

    from granulemap.aggregation import _computed_before

    started = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
    assert not _computed_before({"computed_at": "2026-12-01T08:00:00+00:00"}, started)
    assert not _computed_before({"computed_at": "2026-12-01T09:00:00+01:00"}, started)  # the same instant
    assert _computed_before({"computed_at": "2026-12-01T07:59:59.999999+00:00"}, started)
    assert _computed_before({"computed_at": "not a time"}, started)  # a record that does not say when: before
    assert not _computed_before({"computed_at": "2020-01-01T00:00:00Z"}, None)  # granulemap process: not checked
