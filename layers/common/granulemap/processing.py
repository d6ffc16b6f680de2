"""ProcessItems' per-item work: skip what is done, reduce one item, publish its result; record final failures."""

from __future__ import annotations

import datetime as dt
from typing import Any

from granulemap import faults, layout
from pydantic import BaseModel

from granulemap.errors import PermanentItemError, readable_cause
from granulemap.granule_access import GranuleAccess
from granulemap.grouping import item_id_for
from granulemap.models import FailureEvent, GranuleFailure, Item, ProcessorEvent, ProcessorResult, RunContext
from granulemap.recipes import Recipe, get_recipe
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

    A per-granule recipe's item is reduced granule by granule (``reduce_granules``): its record holds ``results``
    (one per granule) and ``failures`` (granules that could not be read) instead of one ``result``. When some
    granules failed, the record goes to the item's partial key instead: the next catalog does not find the item done,
    so a later run tries the failed granules again (a granule not yet in the DAAC's bucket, a file since replaced).
    """
    run, item = event.run, event.item
    recipe = get_recipe(run.recipe)
    key = layout.result_key(recipe.name, run.config_id, item.id)
    if item.done:
        return ProcessorResult(item=item.id, status="skipped", result_key=key)
    faults.before_item(item.id)
    params = recipe.parse_params(run.params)
    access = GranuleAccess(run, credentials_loader)
    record: dict[str, Any] = {"item": item.id, "run_id": run.run_id}
    failures: list[GranuleFailure] = []
    if recipe.per_granule:
        results, failures = reduce_granules(recipe, item, params, access, run)
        record.update(results=results, failures=[f.model_dump() for f in failures])
        if failures:
            key = layout.partial_result_key(recipe.name, run.config_id, item.id)
    else:
        record["result"] = recipe.process(item, params, access, run)
    record["computed_at"] = dt.datetime.now(dt.UTC).isoformat()
    bucket.put_json(key, record)
    return ProcessorResult(item=item.id, status="succeeded", result_key=key, granule_failures=failures)


def reduce_granules(
    recipe: Recipe, item: Item, params: BaseModel, access: GranuleAccess, run: RunContext
) -> tuple[list[dict[str, Any]], list[GranuleFailure]]:
    """(results, failures) of a per-granule recipe's item: ``recipe.process`` on each granule alone.

    A granule with a permanent error (unreadable, a variable missing) is listed in the failures and the others are
    kept. A transient error fails the whole item, for the state machine to retry. When every granule failed, so does
    the item, with the first granule's error (naming how many others failed): there is nothing to store.
    """
    results: list[dict[str, Any]] = []
    errors: list[tuple[str, PermanentItemError]] = []
    for granule in item.granules:
        one = Item(id=item_id_for(granule.url), granules=[granule])
        try:
            results.append(recipe.process(one, params, access, run))
        except PermanentItemError as exc:
            errors.append((granule.url.rsplit("/", 1)[-1], exc))
    if errors and not results:
        first = errors[0][1]
        if len(errors) == 1:
            raise first
        others = ", ".join(name for name, _ in errors[1:4]) + (", ..." if len(errors) > 4 else "")
        try:
            combined = type(first)(f"{first} (every other granule of the item failed too: {others})")
        except TypeError:  # a recipe's own error class with another signature: its first error as it is
            raise first from None
        raise combined from first
    failures = [GranuleFailure(granule=name, error=type(exc).__name__, cause=str(exc)) for name, exc in errors]
    return results, failures


def record_failure(event: FailureEvent, bucket: Bucket) -> dict[str, str]:
    """Store the final failure of one item (after its retries) where the aggregator and the CLI find it."""
    error = str(event.error.get("Error", "Unknown"))
    cause = readable_cause(str(event.error.get("Cause", ""))) or ""
    record = {"item": event.item.id, "error": error, "cause": cause}
    bucket.put_json(layout.failure_key(event.run.run_id, event.item.id), record)
    return record
