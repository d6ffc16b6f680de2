"""granulemap.local.run.Workspace: several local runs on one started engine (a notebook's or a script's way), their
results kept in the workspace's emulated bucket on disk and reused by later runs and later workspaces."""

from __future__ import annotations

import csv
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from granulemap.errors import InvalidInput
from granulemap.local.run import Workspace
from granulemap.models import Summary

from conftest import install_recipe_package, itemised_recipe, on_a_full_disk

pytestmark = pytest.mark.slow


def _rows(summary: dict) -> list[dict]:
    (path,) = [p for p in summary["outputs"] if p.endswith(".csv")]
    with open(path) as f:
        return list(csv.DictReader(f))


def test_runs_share_one_engine_and_reuse_results_across_runs_and_workspaces(tmp_path: Path, synthetic_month) -> None:
    source = tmp_path / "granules"
    source.mkdir()
    for path in synthetic_month:
        shutil.copy(path, source / path.name)
    folder = tmp_path / "workspace"
    december = {"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-03", "source": str(source),
                "group": "granule"}
    with Workspace(folder, workers=1) as workspace:
        started = (workspace.engine.endpoint, workspace.engine._fork_server._server._forkserver_pid)
        first = workspace.run({**december, "end": "2018-12-02"}, out=tmp_path / "first")
        second = workspace.run(december)
        # the progress counts the two items found done as skipped, though the Map never ran them
        assert workspace.engine.item_counts() == {"total": 3, "succeeded": 1, "skipped": 2, "failed": 0,
                                                  "found_done": 2}
        # one engine, started once: the same moto server and fork server served both runs
        assert (workspace.engine.endpoint, workspace.engine._fork_server._server._forkserver_pid) == started
        with pytest.raises(InvalidInput, match="in use by another granulemap run or Workspace"):
            Workspace(folder, workers=1).__enter__()
    assert first["status"] == second["status"] == "SUCCEEDED"
    assert first["granules"] == {"total": 2, "succeeded": 2, "failed": 0, "skipped": 0}
    assert second["granules"] == {"total": 3, "succeeded": 1, "failed": 0, "skipped": 2}  # one item per granule
    assert json.loads((tmp_path / "first" / "summary.json").read_text())["run_id"] == first["run_id"]
    second_out = folder / "runs" / second["run_id"]  # the default output folder
    assert (second_out / "summary.json").is_file() and (second_out / "logs" / "execution-history.json").is_file()
    calls = [json.loads(line) for line in (second_out / "logs" / "invocations.jsonl").read_text().splitlines()]
    # its own invocations, not the first run's: one Processor call, for the one item not done (the Map runs no other)
    assert [c["function"] for c in calls].count("ProcessorFunction") == 1
    assert [r["granule"] for r in _rows(second)] == sorted(p.name for p in synthetic_month)
    assert _rows(second)[:2] == _rows(first)  # the reused results are the first run's

    with Workspace(folder, workers=1) as again:  # a later session on the same folder
        third = again.run(december, out=tmp_path / "third")
    assert third["granules"] == {"total": 3, "succeeded": 0, "failed": 0, "skipped": 3}
    assert _rows(third) == _rows(second)
    assert "CatalogBuilderFunction" in (folder / "logs" / "functions.log").read_text()


def test_a_run_that_outlasts_its_timeout_is_stopped(tmp_path: Path, synthetic_month) -> None:
    from granulemap.faults import ENV as FAULTS_ENV

    source = tmp_path / "granules"
    source.mkdir()
    shutil.copy(synthetic_month[0], source / synthetic_month[0].name)
    slow = {FAULTS_ENV: json.dumps({"delay_seconds": 2})}  # every item sleeps 2 s first
    with Workspace(tmp_path / "workspace", workers=1, extra_env=slow) as workspace:
        with pytest.raises(TimeoutError):
            workspace.run({"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-01",
                           "source": str(source)}, timeout=0.5)
        # its invocations had finished when TimeoutError came: a next run's would have raced them (two BuildCatalogs
        # of atl06-cell-stats creating one store failed the second run)
        assert workspace.engine._in_flight == 0
        sfn = workspace.engine.client("stepfunctions")
        (execution,) = sfn.list_executions(stateMachineArn=workspace.engine.state_machine_arn)["executions"]
        deadline = time.monotonic() + 30
        while sfn.describe_execution(executionArn=execution["executionArn"])["status"] == "RUNNING":
            assert time.monotonic() < deadline, "the timed-out execution was not stopped"
            time.sleep(0.1)
        assert sfn.describe_execution(executionArn=execution["executionArn"])["status"] == "ABORTED"
        # and waiting for a stopped execution ends (ABORTED is an end)
        assert workspace.engine.wait(execution["executionArn"], timeout=30)["status"] == "ABORTED"


UNGUARDED = """
import json, sys
from granulemap.local.run import Workspace

with Workspace(sys.argv[1], workers=2) as ws:  # at module level: no `if __name__ == "__main__":` guard
    summary = ws.run({"recipe": "sst-global-mean", "start": "2018-12-31", "end": "2018-12-31", "source": sys.argv[2]})
print(json.dumps([summary["status"], summary["granules"]["succeeded"]]))
"""


def test_a_script_without_a_main_guard_runs_its_workspace_once(tmp_path: Path, mur25) -> None:
    """multiprocessing makes every worker import the caller's main script; the engine's workers skip that, so the
    README's example works pasted into a script as it is (each worker used to open the Workspace again and die)."""
    import subprocess
    import sys

    source = tmp_path / "granules"
    source.mkdir()
    shutil.copy(mur25, source / mur25.name)
    script = tmp_path / "example.py"
    script.write_text(UNGUARDED)
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "ws"), str(source)], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.splitlines()[-1]) == ["SUCCEEDED", 1]


def test_a_workspace_takes_dates_and_paths_refuses_a_non_dict_and_opens_once(tmp_path: Path, mur25) -> None:
    """An input with a date and a Path (as Python code naturally writes it) raised a TypeError after the run's
    folder was made; a list started an execution before failing; a closed Workspace opened again failed every run
    with "the local engine has stopped"."""
    import datetime as dt

    source = tmp_path / "granules"
    source.mkdir()
    shutil.copy(mur25, source / mur25.name)
    workspace = Workspace(tmp_path / "workspace", workers=1)
    with workspace:
        summary = workspace.run({"recipe": "sst-global-mean", "start": dt.date(2018, 12, 31),
                                 "end": dt.date(2018, 12, 31), "source": source}, out=tmp_path / "dated")
        assert summary["status"] == "SUCCEEDED" and summary["granules"]["succeeded"] == 1
        # its outputs as local paths, summary.json once and last
        assert summary["outputs"] == [str(tmp_path / "dated" / n) for n in
                                      ("global_mean_sst.csv", "global_mean_sst.png", "provenance.json", "summary.json")]
        with pytest.raises(TypeError, match="the execution input is a dict"):
            workspace.run([{"recipe": "sst-global-mean"}], out=tmp_path / "listed")  # type: ignore[arg-type]
        assert not (tmp_path / "listed").exists()
        sfn = workspace.engine.client("stepfunctions")
        assert len(sfn.list_executions(stateMachineArn=workspace.engine.state_machine_arn)["executions"]) == 1

        # No source: in AWS a NASA CMR search; here it searched CMR offline, retried as an outage for 45 minutes
        unsourced = workspace.run({"recipe": "sst-global-mean", "period": "2018-12"}, out=tmp_path / "unsourced")
        assert unsourced["status"] == "FAILED"
        assert unsourced["message"].startswith("InvalidInput: field 'source': a local run reads")
        assert (unsourced["start"], unsourced["end"]) == ("2018-12-01", "2018-12-31")  # the month it would have run
        assert json.loads((tmp_path / "unsourced" / "summary.json").read_text()) == unsourced
        assert unsourced["outputs"] == [str(tmp_path / "unsourced" / "summary.json")]
        # a source given as None (a script's variable not set) is no source either: not a CMR search retried for 45
        # minutes (the timeout stops that at once)
        nosource = workspace.run({"recipe": "sst-global-mean", "period": "2018-12", "source": None},
                                 out=tmp_path / "nosource", timeout=60)
        assert nosource["status"] == "FAILED"
        assert nosource["message"].startswith("InvalidInput: field 'source': a local run reads")
        # an input without a source that is wrong otherwise too: still a FAILED summary, without dates
        undated = workspace.run({"recipe": "sst-global-mean", "start": "2018-02-31", "end": "2018-03-01"},
                                out=tmp_path / "undated")
        assert undated["status"] == "FAILED" and undated["start"] is None and undated["end"] is None
        assert set(undated) == set(Summary.model_fields)  # the keys of every summary.json (README)
        assert len(sfn.list_executions(stateMachineArn=workspace.engine.state_machine_arn)["executions"]) == 1

        # An input BuildCatalog refuses: a FAILED summary that says why, not an exception
        refused = workspace.run({"recipe": "sst-global-mean", "start": "2018-12-31", "end": "2018-12-01",
                                 "source": source}, out=tmp_path / "refused")
        assert refused["status"] == "FAILED" and "end (2018-12-01) is before start (2018-12-31)" in refused["message"]
        assert refused["start"] is None and refused["outputs"] == [str(tmp_path / "refused" / "summary.json")]

        # A folder without granules of the dates: the summary says what it holds (granulemap run printed it alone)
        empty = workspace.run({"recipe": "sst-global-mean", "start": "2017-01-01", "end": "2017-01-31",
                               "source": source}, out=tmp_path / "empty")
        assert empty["status"] == "SUCCEEDED" and empty["granules"]["total"] == 0
        assert empty["message"].startswith("no granules matched the recipe, dates and source: nothing to do: ")
        assert f"{source} holds 1 file:" in empty["message"]
        assert "dated 2018-12-31 to 2018-12-31 by their names, none from 2017-01-01 to 2017-01-31" in empty["message"]

        # A month that stopped at BuildCatalog (it lacks 30 days): its dates, and to run it again here, not in AWS
        month = workspace.run({"recipe": "sst-global-mean", "period": "2018-12", "source": source},
                              out=tmp_path / "month")
        assert month["status"] == "FAILED" and (month["start"], month["end"]) == ("2018-12-01", "2018-12-31")
        assert "30 day(s) of 2018-12-01..2018-12-31 (2018-12) have no granule" in month["message"]
        assert month["message"].startswith("CatalogFailed: NoGranulesFound: ")  # the state's error, then the cause's
        assert "granulemap run --period 2018-12" in month["message"] and "start-execution" not in month["message"]

        # An empty prefix of the emulated bucket (kept in the state folder): nothing to do, and it holds nothing
        bucket = workspace.run({"recipe": "sst-global-mean", "start": "2018-12-31", "end": "2018-12-31",
                                "source": f"s3://{workspace.engine.bucket}/nothing-here/"}, out=tmp_path / "bucket")
        assert bucket["status"] == "SUCCEEDED" and bucket["granules"]["total"] == 0
        assert bucket["message"] == ("no granules matched the recipe, dates and source: nothing to do: "
                                     f"{workspace.engine.state_dir}/nothing-here/ holds no files")
        # Another bucket: a local run does not read S3 (BuildCatalog's message told to copy them into the bucket)
        other = workspace.run({"recipe": "sst-global-mean", "start": "2018-12-31", "end": "2018-12-31",
                               "source": "s3://podaac-ops-cumulus-protected/MUR25/"}, out=tmp_path / "other")
        assert other["status"] == "FAILED" and other["message"].startswith(
            "InvalidInput: field 'source': s3://podaac-ops-cumulus-protected/MUR25/ is in S3, which a local run does "
            "not read: a local run reads the granules in a folder of this machine")
        assert f"the files under {workspace.engine.state_dir}/" in other["message"]
        assert "aws s3 sync" in other["message"] and "copy the granules under it" not in other["message"]
    with pytest.raises(RuntimeError, match="opens once"):
        workspace.__enter__()
    with pytest.raises(RuntimeError, match="engine is stopped: make a new Workspace"):
        workspace.run({"recipe": "sst-global-mean", "period": "2018-12", "source": source})
    with Workspace(tmp_path / "workspace", workers=1):  # a new one on the folder: fine
        pass
    # without `with`: said, not an AttributeError of the engine's
    with pytest.raises(RuntimeError, match=r"engine is not started: use it as `with Workspace\(folder\) as ws:`"):
        Workspace(tmp_path / "workspace", workers=1).run({"recipe": "sst-global-mean", "source": source})


SLOW_ITEMS = 6
SLOW_RESULTS = itemised_recipe("test-slow-results", SLOW_ITEMS, """
    import time

    time.sleep(1.5)
    return {"item": item.id}
""", description="Test: six items of a second and a half each")


@pytest.fixture
def slow_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield from install_recipe_package(tmp_path / "site", monkeypatch, "granulemap_test_slow_results", SLOW_RESULTS,
                                      {"test-slow-results": "granulemap_test_slow_results:recipe"})


def test_a_disk_that_fills_mid_run_stops_it_at_once_and_the_next_run_resumes_it(
        slow_results, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk under the state folder fills after the first results: the run stops at its next poll (it went on with
    writes that changed only the bucket in memory), naming the file; the next run of the Workspace, with space again,
    computes only the items whose results were not kept (the refusal no longer stops every later run)."""
    import itertools
    import os

    from granulemap.local.mirror import StateNotKept

    empty = tmp_path / "no-granules"
    empty.mkdir()
    doc = {"recipe": "test-slow-results", "start": "2020-01-01", "end": "2020-01-01", "source": str(empty),
           "max_concurrency": 1}
    results = itertools.count(1)

    with Workspace(tmp_path / "ws", workers=1) as ws:
        with monkeypatch.context() as full:  # the results after the first two
            on_a_full_disk(full, lambda folder: f"{os.sep}results{os.sep}" in folder + os.sep and next(results) > 2)
            with pytest.raises(StateNotKept) as stopped:
                ws.run(doc, out=tmp_path / "first")
        items_run = [r["item"] for r in ws.engine.invocations if r["function"] == "ProcessorFunction"]
        kept = sorted(p.name for p in (tmp_path / "ws" / "state" / "results").rglob("*.json"))
        again = ws.run(doc, out=tmp_path / "again")  # space again

    assert f"({tmp_path / 'ws' / 'state' / 'results'}" in str(stopped.value)
    assert "No space left on device), so the run was stopped" in str(stopped.value)
    assert "Free space on that disk, then run it again: it resumes" in str(stopped.value)
    # the third result was refused; of the items after it (1.5 s each, one at a time) the next may have started
    # before the engine's poll (every 0.2 s) saw the refusal; the others never ran (without the stop, every one ran)
    assert len(items_run) <= 4, items_run
    assert len(kept) == 2
    assert again["status"] == "SUCCEEDED", again["message"]
    assert again["items"] == {"total": SLOW_ITEMS, "succeeded": SLOW_ITEMS - 2, "failed": 0, "skipped": 2}
