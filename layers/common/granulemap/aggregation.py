"""Aggregate: account for every item of the run, combine the results into the products, write summary.json.

Failure accounting reads the per-item result and failure objects in S3, so it is the same in AWS and locally
(it never depends on the Map's ResultWriter output), and the tolerated failure percentage is enforced here as well
as by the Map: moto's engine ignores the Map's setting, and the user gets the same verdict and message either way.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from granulemap import layout
from granulemap.errors import TooManyFailures
from granulemap.models import AggregatorEvent, Failure, Item, ItemCounts, Summary
from granulemap.provenance import provenance_record
from granulemap.recipes import get_recipe
from granulemap.storage import Bucket

_READERS = 16
NO_RESULT = "NoResult"


def _fetch(bucket: Bucket, keys: list[str]) -> list[Any | None]:
    with ThreadPoolExecutor(_READERS) as pool:
        return list(pool.map(bucket.get_json_or_none, keys))


def account_items(
    event: AggregatorEvent, bucket: Bucket, items: list[Item]
) -> tuple[list[dict[str, Any]], ItemCounts, list[Failure]]:
    """(results of succeeded+skipped items, counts, failures) of the run's manifest ``items``."""
    run = event.run
    stored = _fetch(bucket, [layout.result_key(run.recipe, run.config_id, i.id) for i in items])
    missing = [i for i, s in zip(items, stored, strict=True) if s is None]
    failure_records = dict(zip((i.id for i in missing),
                               _fetch(bucket, [layout.failure_key(run.run_id, i.id) for i in missing]), strict=True))
    results, failures = [], []
    succeeded = skipped = 0
    for item, record in zip(items, stored, strict=True):
        if record is not None:
            results.append(record["result"])
            if record.get("run_id") == run.run_id:
                succeeded += 1
            else:
                skipped += 1
            continue
        failure = failure_records.get(item.id)
        if failure is None:
            failure = {"item": item.id, "error": NO_RESULT,
                       "cause": "no result and no failure record: the item's child execution did not finish, or "
                                "its result was deleted while the run was going"}
        failures.append(Failure.model_validate(failure))
    counts = ItemCounts(total=len(items), succeeded=succeeded, failed=len(failures), skipped=skipped)
    return results, counts, failures


def aggregate(event: AggregatorEvent, bucket: Bucket) -> Summary:
    """Write the products and summary.json; raise TooManyFailures (after writing them) above the tolerance."""
    run = event.run
    recipe = get_recipe(run.recipe)
    params = recipe.parse_params(run.params)
    items = [Item.model_validate(i) for i in bucket.get_json(event.catalog.key)]
    results, counts, failures = account_items(event, bucket, items)
    outputs: list[str] = []
    if results:
        outputs = recipe.combine(results, run, params, bucket)
    provenance_key = layout.provenance_key(run.recipe, run.config_id, run.run_id)
    bucket.put_json(provenance_key, provenance_record(run, items, counts))
    outputs.append(provenance_key)
    failed_pct = 100.0 * counts.failed / counts.total if counts.total else 0.0
    tolerance = event.map.tolerated_failure_percentage
    if failed_pct > tolerance:
        status, message = "FAILED", (
            f"{counts.failed} of {counts.total} items failed ({failed_pct:.1f}%), more than the tolerated "
            f"{tolerance:g}%; first failures: "
            + "; ".join(f"{f.item}: {f.error}: {f.cause}" for f in failures[:3])
        )
    elif counts.total == 0:
        status, message = "SUCCEEDED", "no granules matched the recipe, dates and source: nothing to do"
    else:
        status, message = "SUCCEEDED", (
            f"{counts.succeeded} items computed, {counts.skipped} skipped (already done), {counts.failed} failed"
        )
    summary_key = layout.summary_key(run.run_id)
    summary = Summary(
        status=status, run_id=run.run_id, recipe=run.recipe, params=run.params, items=counts,
        failures=failures, outputs=outputs + [summary_key], message=message,
    )
    bucket.put_json(summary_key, summary.model_dump(mode="json"))
    if status == "FAILED":
        raise TooManyFailures(message)
    return summary
