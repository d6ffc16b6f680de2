"""granulemap_bench_noop: a recipe that does nothing, to measure the local engine's cost per item.

Installed for a benchmark the way a user's recipe is (README tutorial; tests/test_tutorial.py): this file copied
into a temporary site folder as ``granulemap_bench_noop.py`` next to a ``*.dist-info`` whose entry_points.txt
registers it under ``granulemap.recipes``, the folder on sys.path and PYTHONPATH (so the engine's spawned worker
processes find it too). ``make_items`` makes ``params.items`` items without granules; ``process`` returns at once;
``combine`` writes nothing.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from granulemap.models import Item
from granulemap.recipes.base import Recipe


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: int = Field(default=100, ge=0, le=100_000, description="how many items make_items creates")


class NoOp(Recipe):
    name = "bench-noop"
    description = "Benchmark: N items that do nothing (measures the engine's overhead per item)"
    file_pattern = "*.never"
    Params = Params

    def make_items(self, granules: Any, params: Any, execution: Any) -> list[Item]:
        return [Item(id=f"noop-{i:06d}", granules=[]) for i in range(params.items)]

    def process(self, item: Any, params: Any, access: Any, run: Any) -> dict[str, Any]:
        return {"item": item.id}

    def combine(self, results: Any, run: Any, params: Any, bucket: Any) -> list[str]:
        return []


recipe = NoOp()
