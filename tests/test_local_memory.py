"""A local run holds no invocation to its function's MemorySize (Lambda ends one that goes over as
Runtime.OutOfMemory), but it measures each one's peak resident memory in its worker process and names, in the run's
notes, the invocations that went over: a recipe author learns it before deploying."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import change_in_template, install_recipe_package, itemised_recipe

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's /proc/self/clear_refs")]

BIG_MB = 600
MEMORY_MB = 450

GREEDY_RECIPE = itemised_recipe("test-greedy", 3, f"""
    import numpy as np

    if item.id == "item-1":  # {BIG_MB} MB written (every page resident), then let go
        block = np.ones({BIG_MB} * 2**20, dtype=np.uint8)
        total = int(block[::4096].sum())
        del block
        return {{"item": item.id, "pages": total}}
    return {{"item": item.id}}
""", description="Test: one item of three holds 600 MB")


@pytest.fixture
def greedy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    change_in_template(monkeypatch, "ProcessorFunction", memory_size=MEMORY_MB)
    yield from install_recipe_package(tmp_path / "site", monkeypatch, "granulemap_test_greedy", GREEDY_RECIPE,
                                      {"test-greedy": "granulemap_test_greedy:recipe"})


def test_an_invocation_over_its_memory_size_is_named_in_the_notes(greedy, tmp_path: Path) -> None:
    from granulemap.local.run import Workspace

    empty = tmp_path / "no-granules"
    empty.mkdir()
    doc = {"recipe": "test-greedy", "start": "2020-01-01", "end": "2020-01-01", "source": str(empty)}
    with Workspace(tmp_path / "ws", workers=1) as ws:
        summary = ws.run(doc, out=tmp_path / "first")
        assert summary["status"] == "SUCCEEDED", summary["message"]  # as a local run: noted, not failed
        records, count = ws.engine.over_memory()
        again = ws.run({**doc, "recompute": True}, out=tmp_path / "again")
        later, _ = ws.engine.over_memory(count)

    (record,) = records  # the item that held 600 MB, and none of the others
    assert record["function"] == "ProcessorFunction" and record["item"] == "item-1"
    assert record["memory_mb"] == MEMORY_MB
    # the peak is what the worker held before the call and the block: not the worker's peak of earlier calls
    assert record["before_mb"] + BIG_MB - 5 <= record["peak_mb"] <= record["before_mb"] + BIG_MB + 100, record
    assert record["before_mb"] < MEMORY_MB  # else every invocation would be over: the test would say nothing
    (note,) = [n for n in summary["notes"] if "MemorySize" in n]
    assert re.fullmatch(
        rf"ProcessorFunction: 1 invocation\(s\) \(items item-1\) peaked at up to {record['peak_mb']} MB, over its "
        rf"MemorySize of {MEMORY_MB} MB: in AWS, Lambda would end them \(Runtime\.OutOfMemory\)\. Deploy it with more "
        r"\(ProcessorMemorySize: sam deploy --parameter-overrides ProcessorMemorySize=\.\.\.\) or make the items "
        rf"smaller\. Measured in a worker of this machine that held {record['before_mb']} MB before the call .*",
        note), note
    # each run names its own: the second (the item computed again) has its own record, and its note
    assert [r["item"] for r in later] == ["item-1"]
    assert [n for n in again["notes"] if "MemorySize" in n] and json.loads(
        (tmp_path / "again" / "summary.json").read_text())["notes"] == again["notes"]
    log = (tmp_path / "ws" / "logs" / "functions.log").read_text()
    assert f"over its MemorySize of {MEMORY_MB} MB (Lambda: Runtime.OutOfMemory)" in log
