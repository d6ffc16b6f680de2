"""Fault injection for tests. Off unless the GRANULEMAP_FAULTS environment variable holds a JSON plan.

Plan keys: ``transient``: {item id: number of times to fail with TransientError before succeeding};
``state_dir``: a directory where attempt counts are kept (shared by worker processes).
"""

from __future__ import annotations

import json
import os
import pathlib

from granulemap.errors import TransientError

ENV = "GRANULEMAP_FAULTS"


def _plan() -> dict | None:
    raw = os.environ.get(ENV)
    return json.loads(raw) if raw else None


def before_item(item_id: str) -> None:
    plan = _plan()
    if not plan:
        return
    times = int(plan.get("transient", {}).get(item_id, 0))
    if times <= 0:
        return
    counter = pathlib.Path(plan["state_dir"]) / f"{item_id}.attempts"
    attempts = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(attempts + 1))
    if attempts < times:
        raise TransientError(f"injected transient failure {attempts + 1} of {times} for {item_id}")
