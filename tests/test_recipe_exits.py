"""Local runs that do not end as planned. A recipe whose process() ends its process (sys.exit, a KeyboardInterrupt of
its own): in AWS the runtime exits and the invocation fails as Runtime.ExitError; a local run hung for ever (the error
ended the engine's thread that waited for the worker, and nothing recorded the item), and now fails those items,
naming what ended them. A Workspace run interrupted from a notebook is stopped, not left running. A recipe without
a description is listed as usable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import install_recipe_package, itemised_recipe

EXITING_RECIPE = itemised_recipe("test-exits", 4, """
    import sys

    if item.id == "item-1":
        sys.exit(3)
    if item.id == "item-2":
        raise KeyboardInterrupt("from the recipe")
    return {"item": item.id}
""", description="Test: of four items, one calls sys.exit(3) and one raises KeyboardInterrupt")


@pytest.fixture
def exits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield from install_recipe_package(tmp_path / "site", monkeypatch, "granulemap_test_exits", EXITING_RECIPE,
                                      {"test-exits": "granulemap_test_exits:recipe"})


def test_a_recipe_that_ends_its_process_fails_its_items_and_the_run_finishes(exits, tmp_path: Path) -> None:
    from granulemap.local.run import run_locally

    empty = tmp_path / "no-granules"
    empty.mkdir()
    doc = {"recipe": "test-exits", "start": "2020-01-01", "end": "2020-01-01", "source": str(empty),
           "tolerated_failure_percentage": 50}
    summary = run_locally(doc, tmp_path / "out", progress=False, timeout=120)  # it hung: TimeoutError now
    assert summary["status"] == "SUCCEEDED", summary["message"]
    assert summary["items"] == {"total": 4, "succeeded": 2, "skipped": 0, "failed": 2}
    failed = sorted((f["item"], f["error"], f["cause"]) for f in summary["failures"])
    assert [(item, error) for item, error, _ in failed] == [("item-1", "Runtime.ExitError"),
                                                            ("item-2", "Runtime.ExitError")]
    assert failed[0][2].startswith("the function's code ended its process: SystemExit(3), raised at File ")
    assert failed[1][2].startswith("the function's code ended its process: KeyboardInterrupt('from the recipe'), "
                                   "raised at File ")
    assert all("granulemap_test_exits.py" in cause for _, _, cause in failed)


PAUSING_RECIPE = itemised_recipe("test-pauses", 4, """
    import time

    time.sleep(2)
    return {"item": item.id}
""")


@pytest.fixture
def pauses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield from install_recipe_package(tmp_path / "site", monkeypatch, "granulemap_test_pauses", PAUSING_RECIPE,
                                      {"test-pauses": "granulemap_test_pauses:recipe"})


def test_an_interrupted_workspace_run_is_stopped_and_the_same_input_runs_again(pauses, tmp_path: Path) -> None:
    """A notebook's interrupt during ws.run left the execution running: the same input again was refused as
    RunInProgress, with advice (aws stepfunctions stop-execution) that cannot reach the local engine."""
    import _thread
    import threading

    from granulemap.local.run import Workspace

    empty = tmp_path / "no-granules"
    empty.mkdir()
    doc = {"recipe": "test-pauses", "start": "2020-01-01", "end": "2020-01-31", "source": str(empty)}
    with Workspace(tmp_path / "ws", workers=2) as ws:
        threading.Timer(4.0, _thread.interrupt_main).start()  # while items sleep (after the engine's start)
        with pytest.raises(KeyboardInterrupt):
            ws.run(doc, out=tmp_path / "first", timeout=120)
        again = ws.run(doc, out=tmp_path / "again", timeout=120)
    assert again["status"] == "SUCCEEDED", again["message"]
    assert again["items"]["total"] == 4 and again["items"]["failed"] == 0


UNDESCRIBED_RECIPE = itemised_recipe("test-undescribed", 1, 'return {"item": item.id}', description=None)


@pytest.fixture
def undescribed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield from install_recipe_package(tmp_path / "site", monkeypatch, "granulemap_test_undescribed",
                                      UNDESCRIBED_RECIPE, {"test-undescribed": "granulemap_test_undescribed:recipe"})


def test_a_recipe_without_a_description_is_listed_as_usable(undescribed, capsys) -> None:
    """granulemap recipes said such a recipe 'cannot be used' (an AttributeError), though runs use it."""
    from granulemap.cli import main

    assert "description =" not in UNDESCRIBED_RECIPE
    assert main(["recipes"]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("test-undescribed")]
    assert line.split(None, 1)[1] == "(no description)"
