"""ProcessItems' per-item work: skip what is done, reduce one item, publish its result; record final failures."""

from __future__ import annotations

import datetime as dt
from typing import Any

from granulemap import faults, layout
from granulemap.errors import readable_cause
from granulemap.granule_access import GranuleAccess
from granulemap.models import FailureEvent, ProcessorEvent, ProcessorResult
from granulemap.recipes import get_recipe
from granulemap.storage import Bucket


def process_item(event: ProcessorEvent, bucket: Bucket, credentials_loader: Any | None = None) -> ProcessorResult:
    """Reduce one item and store its result, unless the catalog found it done (``item.done``): then it is skipped.

    The result object is written in one PUT after the work is complete, so a crash never leaves a result that
    looks complete; its ``run_id`` tells the aggregator whether this run computed it or found it (skipped). An
    item is not looked up again here: the catalog listed the results just before (one LIST page per 1,000 results
    that share the run's items' common start, instead of one GET per item). So an item whose first attempt wrote
    its result and then failed is computed again by the retry and written again (same values, a new
    ``computed_at``); and of two executions of one configuration that overlap, both compute the items neither had
    finished when its catalog was made, and the last writer's summary counts them (see README).
    """
    run, item = event.run, event.item
    recipe = get_recipe(run.recipe)
    key = layout.result_key(recipe.name, run.config_id, item.id)
    if item.done:
        return ProcessorResult(item=item.id, status="skipped", result_key=key)
    faults.before_item(item.id)
    params = recipe.parse_params(run.params)
    result = recipe.process(item, params, GranuleAccess(run, credentials_loader), run)
    bucket.put_json(
        key,
        {
            "item": item.id,
            "run_id": run.run_id,
            "computed_at": dt.datetime.now(dt.UTC).isoformat(),
            "result": result,
        },
    )
    return ProcessorResult(item=item.id, status="succeeded", result_key=key)


def record_failure(event: FailureEvent, bucket: Bucket) -> dict[str, str]:
    """Store the final failure of one item (after its retries) where the aggregator and the CLI find it."""
    error = str(event.error.get("Error", "Unknown"))
    cause = readable_cause(str(event.error.get("Cause", ""))) or ""
    record = {"item": event.item.id, "error": error, "cause": cause}
    bucket.put_json(layout.failure_key(event.run.run_id, event.item.id), record)
    return record
