"""Aggregate: account for every item of the run, combine the results into the products, write summary.json.

Failure accounting reads the per-item result and failure objects in S3, so it is the same in AWS and locally
(it never depends on the Map's ResultWriter output), and the tolerated failure percentage is enforced here as well
as by the Map: moto's engine ignores the Map's setting, and the user gets the same verdict and message either way.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from granulemap import layout
from botocore.exceptions import BotoCoreError, ClientError

from granulemap.errors import (
    InvalidInput,
    ProductDamaged,
    ProductMismatch,
    RecipeFailed,
    RecipeResultInvalid,
    TooManyFailures,
    TransientError,
    first_of,
    readable_cause,
    shortened,
)
from granulemap.models import (FIRST_FAILURES, AggregatorEvent, Failure, Item, ItemCounts, Summary, as_utc, counted,
                               days_without_a_granule, exceeds_tolerance)
from granulemap.observability import logger
from granulemap.processing import failure_record
from granulemap.provenance import provenance_record
from granulemap.recipes import Recipe, failed_at, get_recipe
from granulemap.recipes.timeseries import COMPUTED_AT
from granulemap.storage import Bucket, translate_s3_error

_READERS = 16
NO_RESULT = "NoResult"
RESULT_DAMAGED = "ResultDamaged"


def _fetch(bucket: Bucket, keys: list[str], read: Callable[[str], Any] | None = None) -> list[Any]:
    """``read`` (default: the object's JSON, None where there is none) of each of ``keys``, ``_READERS`` at a time."""
    with ThreadPoolExecutor(_READERS) as pool:
        return list(pool.map(read or bucket.get_json_or_none, keys))


def _fetch_results(bucket: Bucket, keys: list[str]) -> tuple[list[dict[str, Any] | None], dict[int, str]]:
    """The stored result records at ``keys`` (None where there is none), and why each one that is not a record is
    not (by position): not JSON, or not what a Processor writes (a JSON object with a ``result``, or with a list of
    ``results`` and a list of granule ``failures``) — a file edited by hand, or written by something else. Such a one
    is left out and its item fails, not the whole run. (What a result holds is the recipe's to judge.)"""
    def read(key: str) -> tuple[dict[str, Any] | None, str | None]:
        data = bucket.get_bytes_or_none(key)
        if data is None:
            return None, None
        try:
            record = json.loads(data)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            return None, f"not JSON ({exc})"
        why = _not_a_record(record)
        return (None, f"{why}: {shortened(json.dumps(record), 200)}") if why else (record, None)

    read_back = _fetch(bucket, keys, read)
    return [record for record, _ in read_back], {n: why for n, (_, why) in enumerate(read_back) if why}


def _not_a_record(record: object) -> str | None:
    """Why ``record`` is not a result record as the Processor writes one; None if it is."""
    expected = "not a result record (a JSON object with 'result', or with a list of 'results' and of 'failures')"
    if not isinstance(record, dict) or ("result" in record) == ("results" in record):
        return expected
    if "results" in record:
        failures = record.get("failures", [])
        if not isinstance(record["results"], list) or not isinstance(failures, list):
            return expected
        for failure in failures:
            try:  # as Aggregate lists it (account_items)
                Failure(item="", **failure)
            except (TypeError, ValueError) as exc:  # not a mapping, a field twice; pydantic's ValidationError
                return f"not a result record (a granule failure it lists is not one: {shortened(str(exc), 200)})"
    return None


@dataclass
class Accounting:
    """What Aggregate found of a run's items: the results to combine, the counts and the failures."""

    results: list[dict[str, Any]]
    items: ItemCounts
    granules: ItemCounts
    """In granules: an item's granules count as its results and its stored granule failures when it has a result
    (a per-granule recipe's items), as failed when it has none."""
    failures: list[Failure]


def account_items(event: AggregatorEvent, bucket: Bucket, items: list[Item]) -> Accounting:
    """Account for every item of the run's manifest ``items`` from the result and failure objects in S3."""
    run = event.run
    result_keys = [layout.result_key(run.recipe, run.config_id, i.id) for i in items]
    stored, damaged = _fetch_results(bucket, result_keys)
    # This run's own records: of the items without a result, and of those the Map ran (not found done) whose result
    # is another run's: an item computed again ("recompute") that failed, or some of whose granules failed, left
    # the earlier result in place, which must not stand for this run's failure. (Another run's result with no
    # record of this run's is a run of the same configuration that overlapped this one: its result counts.)
    own = [i for i, s in zip(items, stored, strict=True) if s is None or (not i.done and s.get("run_id") != run.run_id)]
    # An overlapping run's result was computed after this run started (after its catalog, which did not find it);
    # one computed before is what this run's Map was to replace ("recompute"): if this run left no record of its
    # own (the Map stopped, its failure could not be stored), it must not count as done.
    earlier = {i.id: s for i, s in zip(items, stored, strict=True) if s is not None and not i.done
               and s.get("run_id") != run.run_id and _computed_before(s, run.started)}
    stored_failures = _fetch(bucket, [layout.failure_key(run.run_id, i.id) for i in own])
    failure_records = {i.id: None if f is None else failure_record(i, run, f)
                       for i, f in zip(own, stored_failures, strict=True)}
    partial: dict[str, Any] = {}
    if get_recipe(run.recipe).per_granule and own:
        # An item some of whose granules failed keeps its record at the partial key; one from an earlier run is
        # stale (this run computed the item again: its new record or failure counts).
        partials = _fetch(bucket, [layout.partial_result_key(run.recipe, run.config_id, i.id) for i in own])
        partial = {i.id: p for i, p in zip(own, partials, strict=True) if p is not None and p.get("run_id") == run.run_id}
    stored = [partial.get(i.id) or (None if failure_records.get(i.id) is not None or i.id in earlier else s)
              for i, s in zip(items, stored, strict=True)]
    results: list[dict[str, Any]] = []
    failures: list[Failure] = []
    done = {"succeeded": 0, "skipped": 0}
    granules = {"succeeded": 0, "skipped": 0, "failed": 0}
    for n, (item, record) in enumerate(zip(items, stored, strict=True)):
        if record is not None:
            # A per-granule recipe's record has results (one per granule) and failures; any other, one result.
            # Each result that is a dict says when it was computed (a time series keeps the later of two computations).
            found = [{COMPUTED_AT: record.get("computed_at"), **r} if isinstance(r, dict) else r
                     for r in (record["results"] if "results" in record else [record["result"]])]
            outcome = "succeeded" if record.get("run_id") == run.run_id else "skipped"
            done[outcome] += 1
            granules[outcome] += len(found)
            results.extend(found)
            for f in record.get("failures", []):
                failures.append(Failure(item=item.id, **f))
                granules["failed"] += 1
            continue
        failure = failure_records.get(item.id)
        why = damaged.get(n)
        if failure is None and why is not None:
            failure = {"item": item.id, "error": RESULT_DAMAGED,
                       "cause": f"its stored result s3://{bucket.name}/{result_keys[n]} is {why}; "
                                "the run left it out. Run the same dates again with recompute (\"recompute\": true; "
                                "--recompute) to compute it anew"}
        elif failure is None and item.id in earlier:
            before = earlier[item.id]
            failure = {"item": item.id, "error": NO_RESULT,
                       "cause": f"this run ran the item again, and its only result is run {before.get('run_id')}'s, "
                                f"computed {before.get('computed_at') or 'at an unknown time'}, before this run "
                                f"started ({as_utc(run.started):%Y-%m-%d %H:%M:%S} UTC): this run left neither a "
                                "result nor a failure record (its child execution did not finish: the Map Run's "
                                "failed children in the Step Functions console say why); the earlier result is left "
                                "as it was"}
        elif failure is None:
            failure = {"item": item.id, "error": NO_RESULT,
                       "cause": "no result and no failure record: the item's child execution did not finish (it "
                                "was stopped, the Map stopped before it ran, or its failure could not be stored: the "
                                "Map Run's children in the Step Functions console say which), or its result was "
                                "deleted while the run was going"}
        failures.append(Failure.model_validate(failure))
        granules["failed"] += len(item.granules)
    failed_items = len(items) - done["succeeded"] - done["skipped"]
    return Accounting(
        results=results,
        items=ItemCounts(total=len(items), failed=failed_items, **done),
        granules=ItemCounts(total=sum(granules.values()), **granules),
        failures=failures,
    )


def _computed_before(record: dict[str, Any], started: dt.datetime | None) -> bool:
    """Whether a stored result was computed before ``started`` (a record that does not say when: yes)."""
    if started is None:
        return False
    try:
        return as_utc(dt.datetime.fromisoformat(str(record.get("computed_at")))) < as_utc(started)
    except ValueError:
        return True


def map_stopped(error: dict[str, Any] | None, failures: list[Failure]) -> str | None:
    """Why the Distributed Map itself failed (its Catch's Error and Cause). Stopped for its failed items
    (States.ExceedToleratedFailureThreshold, which Aggregate judges anyway from its own count): how many failures
    were recorded, and that the items it had not finished are among the failed, as NoResult."""
    if not error:
        return None
    if error.get("Error") == "States.ExceedToleratedFailureThreshold":
        never = sum(1 for f in failures if f.error == NO_RESULT)
        if not never:
            return None
        recorded = len({f.item for f in failures if f.error != NO_RESULT})
        return (f"The Distributed Map stopped once more items failed than it tolerates ({recorded} with a failure "
                f"recorded); the {never} it had not finished count as failed ({NO_RESULT}).")
    cause = readable_cause(str(error.get("Cause") or "")) or "no cause given"
    return (f"The Distributed Map failed ({error.get('Error')}: {cause}); items it did not finish, if any, count as "
            f"{NO_RESULT}.")


def verdict(counts: ItemCounts, unit: str, tolerance: float, failures: list[Failure]) -> tuple[str, str]:
    """(status, message) of a run whose ``counts`` are in ``unit`` ("items" or "granules")."""
    failed_pct = 100.0 * counts.failed / counts.total if counts.total else 0.0
    if exceeds_tolerance(counts.failed, counts.total, tolerance):
        return "FAILED", (
            f"{counts.failed} of {counts.total} {unit} failed ({failed_pct:.1f}%), more than the tolerated "
            f"{tolerance:g}%{FIRST_FAILURES}"
            + "; ".join(f.described() for f in _recorded_first(failures)[:3])
        )
    if counts.total == 0:
        return "SUCCEEDED", "no granules matched the recipe, dates and source: nothing to do"
    return "SUCCEEDED", (
        f"{unit}: {counts.succeeded} computed, {counts.skipped} skipped (already done), {counts.failed} failed"
    )


def _recorded_first(failures: list[Failure]) -> list[Failure]:
    """The failures with an error of their own before the items that left no record (NoResult: which say less)."""
    return sorted(failures, key=lambda f: f.error == NO_RESULT)


def aggregate(event: AggregatorEvent, bucket: Bucket) -> Summary:
    """Write the products and summary.json; raise TooManyFailures (after writing them) above the tolerance.

    The tolerance applies to granules for a per-granule recipe (whose items group granules, and whose granules
    fail alone), to items otherwise."""
    run = event.run
    recipe = get_recipe(run.recipe)
    params = recipe.parse_params(run.params)
    items = [Item.model_validate(i) for i in bucket.get_json(event.catalog.key)]
    found = account_items(event, bucket, items)
    outputs: list[str] = []
    recipe_failed: RecipeFailed | None = None
    notes: list[str] = []
    try:
        if found.results:
            outputs = recipe.combine(found.results, run, params, bucket)
    except (TransientError, MemoryError):
        raise  # tried again by the state machine
    except Exception as exc:  # noqa: BLE001 - the recipe's own code: the counts are still written, and say so
        recipe_failed = RecipeFailed(recipe_failure(recipe, exc))
    if found.results and recipe_failed is None:
        outputs, problem = _written(recipe, outputs, bucket)
        recipe_failed = RecipeFailed(problem) if problem else None
    if found.results and recipe_failed is None:
        try:
            notes = recipe.notes(found.results, params)
        except Exception as exc:  # noqa: BLE001 - the products are written: the run stands, without its notes
            notes = [f"the recipe's notes could not be made: {_what_failed(recipe, exc)}"]
            logger.exception("the recipe's notes could not be made", extra={"recipe": recipe.name})  # the traceback
    provenance_key = layout.provenance_key(run.recipe, run.config_id, run.run_id)
    granules = found.granules if recipe.per_granule else None  # counts of items that are not single granules' results
    bucket.put_json(provenance_key, provenance_record(run, items, found.items, granules, found.failures))
    outputs.append(provenance_key)
    counts, unit = counted(found.items, granules)
    status, message = verdict(counts, unit, event.map.tolerated_failure_percentage, found.failures)
    if not counts.total and event.catalog.none_found:
        message = f"{message}: {event.catalog.none_found}"
    stopped = map_stopped(event.map.error, found.failures)
    if stopped:
        message = f"{stopped} {message}"
    notes = event.catalog.notes + notes
    if recipe.one_granule_a_day and run.start is not None and run.end is not None:
        notes = _days_without_a_granule(items, run.start, run.end) + notes
    for note in notes:
        message = f"{message}. Note: {note}"
    if recipe_failed is not None:
        status, message = "FAILED", f"{recipe_failed} ({message})"
    summary_key = layout.summary_key(run.run_id)
    summary = Summary(
        status=status, run_id=run.run_id, recipe=run.recipe, params=run.params, start=run.start, end=run.end,
        items=found.items,
        granules=granules, failures=_recorded_first(found.failures),
        outputs=outputs + [summary_key], message=message, notes=notes,
    )
    bucket.put_json(summary_key, summary.model_dump(mode="json"))
    if recipe_failed is not None:
        raise recipe_failed
    if status == "FAILED":
        raise TooManyFailures(message)
    return summary


def _written(recipe: Recipe, outputs: object, bucket: Bucket) -> tuple[list[str], str | None]:
    """What ``combine`` returned, checked: the keys it wrote that are in the bucket (an object, or a prefix such as a
    Zarr store's), and why the run has no products if it did not return the list of keys it wrote there."""
    advice = "The results are stored and are used again: mend the recipe and run the same range again"
    if not isinstance(outputs, (list, tuple)) or not all(isinstance(key, str) for key in outputs):
        return [], (f"recipe {recipe.name}'s combine() returned {shortened(repr(outputs))}: it must return the list "
                    f"of the bucket keys it wrote ([] if none). {advice}")
    there, missing = [], []
    for key in outputs:
        try:
            found = bool(key) and (bucket.exists(key) or next(bucket.keys(f"{key.rstrip('/')}/"), None))
        except Exception as exc:  # noqa: BLE001 - a key S3 refuses (too long, not allowed): not a product either
            error = translate_s3_error(exc, f"looking up the product s3://{bucket.name}/{key}")
            if isinstance(error, TransientError):
                raise error from exc  # S3 throttled or did not answer: Aggregate is tried again
            found, key = False, f"{key} ({type(exc).__name__}: {shortened(str(exc))})"
        (there if found else missing).append(key)
    if missing:
        return there, (f"recipe {recipe.name}'s combine() returned keys that are not in the bucket: "
                       f"{first_of(missing, 3)}. It must write its products to the bucket it is given, "
                       "bucket.put_bytes(layout.output_key(run.recipe, run.config_id, name), body) (not to local "
                       f"files: a Lambda's are lost), and return their keys. {advice}")
    return list(outputs), None


def _days_without_a_granule(items: list[Item], start: dt.date, end: dt.date) -> list[str]:
    """A note on the days of the range no granule was found for, when the catalog was built, and some were: this
    run added no row for them (a run of a month given as a period refuses such a month instead; an empty range is
    the message's own subject; granules without a time, which a recipe's own items may hold, leave the days
    unknown)."""
    granules = [g for item in items for g in item.granules]
    if not granules or any(g.time is None for g in granules):
        return []
    missing = days_without_a_granule(granules, start, end)
    if not missing:
        return []
    return [f"{len(missing)} of the {(end - start).days + 1} days of {start}..{end} have no granule (none was found "
            f"when the run started), so this run added no row for them: {first_of(missing, 5)}"]


def recipe_failure(recipe: Recipe, exc: Exception) -> str:
    """Why the run has no products when the recipe's ``combine`` raised, and what to do."""
    if isinstance(exc, (BotoCoreError, ClientError)):  # S3 refused or failed: not the recipe's code
        return f"recipe {recipe.name} could not write its products: {_what_failed(recipe, exc)}"
    if isinstance(exc, InvalidInput):  # the input's granules cannot join the products (two products in one series)
        return f"recipe {recipe.name} refused to combine the results into its products: {shortened(str(exc))}"
    if isinstance(exc, (ProductDamaged, ProductMismatch)):  # its message says what to do
        return f"recipe {recipe.name} could not combine the results into its products: {shortened(str(exc))}"
    advice = ("The results process() returned are stored and would be used again: once the recipe is mended, run "
              "the range again with --recompute" if isinstance(exc, RecipeResultInvalid) else
              "The results are stored and are used again: mend the recipe and run the same range again")
    return f"recipe {recipe.name} could not combine the results into its products: {_what_failed(recipe, exc)}. {advice}"


def _what_failed(recipe: Recipe, exc: Exception) -> str:
    where = failed_at(exc, recipe.name)
    return f"{type(exc).__name__}: {shortened(str(exc))}" + (f" (at {where})" if where else "")
