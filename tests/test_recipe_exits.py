"""A recipe whose process() ends its process (sys.exit, a KeyboardInterrupt of its own): in AWS the runtime exits and
the invocation fails as Runtime.ExitError. A local run hung for ever (the error ended the engine's thread that waited
for the worker, and nothing recorded the item); it now fails those items, naming what ended them, and finishes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import install_recipe_package

EXITING_RECIPE = '''
import sys

from pydantic import BaseModel, ConfigDict

from granulemap.models import Item
from granulemap.recipes.base import Recipe


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Exits(Recipe):
    name = "test-exits"
    description = "Test: of four items, one calls sys.exit(3) and one raises KeyboardInterrupt"
    file_pattern = "*.never"
    Params = Params

    def make_items(self, granules, params, execution):
        return [Item(id=f"item-{i}", granules=[]) for i in range(4)]

    def process(self, item, params, access, run):
        if item.id == "item-1":
            sys.exit(3)
        if item.id == "item-2":
            raise KeyboardInterrupt("from the recipe")
        return {"item": item.id}

    def combine(self, results, run, params, bucket):
        return []


recipe = Exits()
'''


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
