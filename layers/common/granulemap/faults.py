"""Fault injection for tests. Off unless the GRANULEMAP_FAULTS environment variable holds a JSON plan.

Plan keys (all optional):
- ``transient``: {item id: n}: the item's first n attempts raise TransientError (counted in ``state_dir``, which
  worker processes share);
- ``delay_seconds``: every item sleeps this long before its work (to make a run slow enough to kill part way).
"""

from __future__ import annotations

import json
import os
import pathlib
import time

from granulemap.errors import TransientError

ENV = "GRANULEMAP_FAULTS"


def _plan() -> dict | None:
    raw = os.environ.get(ENV)
    return json.loads(raw) if raw else None


def before_item(item_id: str) -> None:
    plan = _plan()
    if not plan:
        return
    if plan.get("delay_seconds"):
        time.sleep(float(plan["delay_seconds"]))
    times = int(plan.get("transient", {}).get(item_id, 0))
    if times <= 0:
        return
    counter = pathlib.Path(plan["state_dir"]) / f"{item_id}.attempts"
    attempts = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(attempts + 1))
    if attempts < times:
        raise TransientError(f"injected transient failure {attempts + 1} of {times} for {item_id}")
