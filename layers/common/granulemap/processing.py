"""ProcessItems' per-item work: skip what is done, reduce one item, publish its result; read a final failure the
state machine stored (failure_record)."""

from __future__ import annotations

import datetime as dt
import traceback
from typing import Any

from granulemap import faults, layout
from pydantic import BaseModel

from granulemap.errors import (
    GranulemapError,
    PermanentItemError,
    RecipeResultInvalid,
    StorageThrottled,
    first_of,
    frames_in_cause,
    readable_cause,
    shortened,
    where_failed,
)
from granulemap.granule_access import GranuleAccess
from granulemap.grouping import item_id_for
from granulemap.models import GranuleFailure, Item, ProcessorEvent, ProcessorResult, RunContext
from granulemap.recipes import Recipe, defined_at, failed_at, get_recipe, home_of
from granulemap.storage import NETWORK_ERRORS, Bucket


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
    (one per granule) and ``failures`` (granules whose error ``fails_alone``) instead of one ``result``. When some
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
        record["result"] = stored_value(recipe.process(item, params, access, run), f"recipe {recipe.name}: process() "
                                        f"for item {item.id}")
    record["computed_at"] = dt.datetime.now(dt.UTC).isoformat()
    bucket.put_json(key, record)
    return ProcessorResult(item=item.id, status="succeeded", result_key=key, granule_failures=failures)


def reduce_granules(
    recipe: Recipe, item: Item, params: BaseModel, access: GranuleAccess, run: RunContext
) -> tuple[list[dict[str, Any]], list[GranuleFailure]]:
    """(results, failures) of a per-granule recipe's item: ``recipe.process`` on each granule alone.

    A granule whose error ``fails_alone`` is listed in the failures, with where it failed, and the others are kept;
    any other error fails the whole item, for the state machine to retry or record (a network error as
    StorageThrottled: retried). When every granule failed, so does the item, with the first granule's error (naming
    how many others failed): there is nothing to store.
    """
    results: list[dict[str, Any]] = []
    errors: list[tuple[str, Exception]] = []
    for granule in item.granules:
        name = granule.url.rsplit("/", 1)[-1]
        one = Item(id=item_id_for(granule.url), granules=[granule])
        try:
            results.append(reduce_granule(recipe, one, params, access, run, name))
        except Exception as exc:  # noqa: BLE001 - sorted below: which errors fail this granule alone
            if isinstance(exc, NETWORK_ERRORS + (ConnectionError, TimeoutError)):
                raise StorageThrottled(f"{name}: the network failed: {type(exc).__name__}: {exc}") from exc
            if not fails_alone(exc):
                raise
            errors.append((name, exc))
    if errors and not results:
        raise _every_granule_failed(errors)
    failures = [GranuleFailure(granule=name, error=type(exc).__name__, cause=shortened(str(exc)),
                               where=failed_at(exc, recipe.name), trace=_trace(exc)) for name, exc in errors]
    return results, failures


def _every_granule_failed(errors: list[tuple[str, Exception]]) -> Exception:
    """The item's error when every granule failed: the first one's, its message naming the others, with its
    traceback (the item's failure record says where that was: failure_record). An error of another library or of
    the recipe's own class is given as it is: its constructor may take other arguments (botocore's do)."""
    first_name, first = errors[0]
    if len(errors) == 1:  # the item's one granule: its failure record names it (failure_record)
        return first
    # each with its error's name: another error than the first's (a KeyError beside ValueErrors) is said somewhere
    others = first_of([f"{name} ({type(exc).__name__})" for name, exc in errors[1:]], 3)
    if not isinstance(first, GranulemapError) and type(first).__module__ != "builtins":
        return first
    try:
        combined = type(first)(f"{first_name}: {first} (every other granule of the item failed too: {others})")
    except Exception:  # noqa: BLE001 - a subclass with another signature: the first error as it is
        return first
    combined.__cause__ = first
    return combined.with_traceback(first.__traceback__)


def _trace(exc: BaseException, limit: int = 4000) -> str:
    """``exc``'s traceback as Lambda's runtime prints it (no chained causes), its message shortened and its frames
    cut to the innermost ``limit`` characters."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    frames = frames if len(frames) <= limit else "...\n" + frames[-limit:]
    return f"Traceback (most recent call last):\n{frames}{type(exc).__name__}: {shortened(str(exc))}"


def reduce_granule(recipe: Recipe, one: Item, params: BaseModel, access: GranuleAccess, run: RunContext,
                   name: str) -> dict[str, Any]:
    """A per-granule recipe's result for the one granule of ``one`` (called ``name``), as it is stored. A result
    that cannot be stored is RecipeResultInvalid, its ``where`` the recipe's ``process``."""
    value = recipe.process(one, params, access, run)
    try:
        result = stored_value(value, f"recipe {recipe.name}: process() for {name}")
        if not isinstance(result, dict):
            raise RecipeResultInvalid(f"recipe {recipe.name}: process() for {name} returned a "
                                      f"{type(result).__name__}; a per-granule recipe returns one dict per granule")
    except RecipeResultInvalid as exc:
        exc.where = defined_at(type(recipe).process, recipe.name)  # type: ignore[attr-defined]
        raise
    return result


def fails_alone(exc: BaseException) -> bool:
    """The one rule of which errors of a per-granule recipe's ``process`` fail that granule alone: a
    PermanentItemError (GranuleUnreadable, VariableMissing, RecipeResultInvalid) and any error that is not
    granulemap's (the recipe's own code: a ValueError on one odd granule). Every other error fails the whole item:
    granulemap's other errors (TransientError and its kind: retried; InvalidInput, CredentialsUnavailable and the
    rest: about the whole run) and MemoryError; ``reduce_granules`` raises network errors as StorageThrottled."""
    return isinstance(exc, PermanentItemError) or not isinstance(exc, (GranulemapError, MemoryError))


def stored_value(value: Any, what: str) -> Any:
    """``value`` as it is stored (JSON): numpy's scalars become Python's numbers (``arr.sum()`` is a numpy.int64);
    anything else JSON cannot hold (an array, a date, a set, a dict with keys that are not strings) raises
    RecipeResultInvalid naming where in the value it is. A float NaN is a float: stored as it is (None says "no value"
    more plainly)."""
    return _stored(value, what, "")


def _stored(value: Any, what: str, at: str) -> Any:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    numpy_scalar = type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0 and hasattr(value, "item")
    if numpy_scalar and type(value).__name__ not in ("datetime64", "timedelta64", "void"):
        return _stored(value.item(), what, at)  # a number or a bool (a date says below what to give instead)
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise RecipeResultInvalid(f"{what}: key {key!r} of the result{at} is a {type(key).__name__}; "
                                          "JSON keys are strings")
        return {key: _stored(v, what, f"{at}[{key!r}]") for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_stored(v, what, f"{at}[{i}]") for i, v in enumerate(value)]
    kind = type(value).__name__
    hint = " (an ISO 8601 string, e.g. value.isoformat())" if isinstance(value, dt.date) or kind == "datetime64" else (
        " (.tolist() for a small one; a large one belongs in a product, not a result)" if kind == "ndarray" else (
            " (numpy's masked value: every value it was computed from was masked, e.g. the mean of a granule with "
            "no valid cell; give None for no value)" if kind == "MaskedConstant" else (
                " (netCDF4 masks fill values: float(x) of a masked scalar, x.filled(np.nan).tolist() or "
                "x.compressed().tolist() of an array)" if kind == "MaskedArray" else "")))
    raise RecipeResultInvalid(f"{what}: the result{at} is a {type(value).__name__}, which a result cannot hold: "
                              f"give str, int, float, bool, None, or lists and dicts of them{hint}")


def _per_granule(recipe_name: str) -> bool:
    try:
        return get_recipe(recipe_name).per_granule
    except Exception:  # noqa: BLE001 - a recipe that cannot be loaded: its items' failures are recorded as items'
        return False


def failure_record(item: Item, run: RunContext, stored: dict[str, Any]) -> dict[str, Any]:
    """One item's final failure (after its retries) as Aggregate and the summary give it, from what the Map's Catch
    stored at ``layout.failure_key``: the caught ``{"Error", "Cause"}`` as it is (the state machine's RecordFailure
    writes it to S3 itself, with no Lambda: a Processor that cannot run, throttled or broken by a deploy, still has
    its failures recorded). The cause is made readable and shortened; the granule, for a per-granule recipe's item
    of one granule, and where the recipe's code failed, from the traceback in the cause, are added. A record already
    in this form (``error``, not ``Error``) is taken as it is."""
    if "Error" not in stored and "error" in stored:
        return {"item": item.id, **stored}
    raw_cause = str(stored.get("Cause", ""))
    record: dict[str, Any] = {"item": item.id, "error": str(stored.get("Error") or "Unknown"),
                              "cause": shortened(readable_cause(raw_cause) or "")}
    if len(item.granules) == 1 and _per_granule(run.recipe):  # the item's one granule is what failed
        record["granule"] = item.granules[0].url.rsplit("/", 1)[-1]
    frames = frames_in_cause(raw_cause)
    where = where_failed(frames, home_of(run.recipe))  # the recipe need not load
    # A result that cannot be stored is found here once process() has returned: no frame of the recipe's is left
    # (a RecipeResultInvalid of the recipe's own raising keeps its own place).
    found_here = bool(frames) and frames[-1][0].replace("\\", "/").endswith("/granulemap/processing.py")
    if record["error"] == RecipeResultInvalid.__name__ and found_here:
        where = _process_of(run.recipe) or where
    if where:
        record["where"] = where
    return record


def _process_of(recipe_name: str) -> str | None:
    """Where the recipe's ``process`` is defined (what reduce_granule gives a RecipeResultInvalid as its ``where``,
    which the Lambda error payload does not carry); None if the recipe cannot be loaded."""
    try:
        return defined_at(type(get_recipe(recipe_name)).process, recipe_name)
    except Exception:  # noqa: BLE001 - a record must not depend on the recipe loading
        return None
