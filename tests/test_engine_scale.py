"""A local run whose Map workers each take more items than Python's default recursion limit still finishes.

moto's Distributed Map workers recurse once per item they take; before the engine raised the limit, a run of
1,200 items at max concurrency 1 hung for ever (its one worker thread died of RecursionError). The no-op recipe of
the benchmarks (bench/noop_recipe.py) is installed the way a user's recipe is, and ``granulemap run`` runs in a
fresh process, as a user runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import install_recipe_package

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ITEMS = 1_200
"""All taken by one Map worker: the run that hung before (600 finished)."""


@pytest.fixture
def noop_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The bench's recipe, installed as pip installs one (on PYTHONPATH, which the command inherits)."""
    yield from install_recipe_package(tmp_path / "site", monkeypatch, "granulemap_bench_noop",
                                      (ROOT / "bench" / "noop_recipe.py").read_text(),
                                      {"bench-noop": "granulemap_bench_noop:recipe"})


def test_a_map_worker_takes_more_items_than_the_default_recursion_limit(noop_recipe, tmp_path: Path) -> None:
    empty, out = tmp_path / "no-granules", tmp_path / "out"
    empty.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "granulemap.cli", "run", "--recipe", "bench-noop", "--start", "2020-01-01",
         "--end", "2020-01-01", "--source", str(empty), "--out", str(out), "--param", f"items={ITEMS}",
         "--max-concurrency", "1", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "SUCCEEDED"
    assert summary["items"] == {"total": ITEMS, "succeeded": ITEMS, "failed": 0, "skipped": 0}
