"""granulemap.local.run.Workspace: several local runs on one started engine (a notebook's or a script's way), their
results kept in the workspace's emulated bucket on disk and reused by later runs and later workspaces."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from granulemap.local.run import Workspace

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
        engine, machine = workspace.engine, workspace.engine.state_machine_arn
        first = workspace.run({**december, "end": "2018-12-02"}, out=tmp_path / "first")
        second = workspace.run(december)
        assert workspace.engine is engine and engine.state_machine_arn == machine  # one engine, started once
    assert first["status"] == second["status"] == "SUCCEEDED"
    assert first["granules"] == {"total": 2, "succeeded": 2, "failed": 0, "skipped": 0}
    assert second["granules"] == {"total": 3, "succeeded": 1, "failed": 0, "skipped": 2}  # one item per granule
    assert json.loads((tmp_path / "first" / "summary.json").read_text())["run_id"] == first["run_id"]
    second_out = folder / "runs" / second["run_id"]  # the default output folder
    assert (second_out / "summary.json").is_file() and (second_out / "logs" / "execution-history.json").is_file()
    assert [r["granule"] for r in _rows(second)] == sorted(p.name for p in synthetic_month)
    assert _rows(second)[:2] == _rows(first)  # the reused results are the first run's

    with Workspace(folder, workers=1) as again:  # a later session on the same folder
        third = again.run(december, out=tmp_path / "third")
    assert third["granules"] == {"total": 3, "succeeded": 0, "failed": 0, "skipped": 3}
    assert _rows(third) == _rows(second)
    assert "CatalogBuilderFunction" in (folder / "logs" / "functions.log").read_text()
