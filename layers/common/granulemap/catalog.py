"""BuildCatalog: validate the execution input, find the granules, split them into items, write the manifest to S3."""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel

from granulemap import layout
from granulemap.errors import CatalogError, InvalidInput, NoGranulesFound, RunInProgress, first_of
from granulemap.executions import OtherRun
from granulemap.grouping import item_id_for
from granulemap.models import (
    CatalogOutput,
    CatalogRef,
    ExecutionInput,
    Granule,
    Item,
    PREVIOUS_MONTH,
    MapConfig,
    RunContext,
    as_utc,
    days_without_a_granule,
    exceeds_tolerance,
    iso_time,
    local_path_of,
    may_hold_data_in,
    parse_model,
    utc_day,
)
from granulemap.recipes import Recipe, available, get_recipe
from granulemap.settings import Settings
from granulemap.storage import Bucket, split_s3_url


def validate_input(raw: object, settings: Settings, now: dt.datetime | None = None) -> tuple[ExecutionInput, Recipe]:
    """Everything that can be wrong with the input, checked before any work: raises InvalidInput naming the field."""
    execution = parse_model(ExecutionInput, raw, "execution input")
    recipe = get_recipe(execution.recipe)
    # a slug() that cannot name the configuration's folders: refused here, before anything is written (was in
    # BuildCatalog: a FAILED run, its out folder made)
    recipe.config_id(recipe.parse_params(execution.params), execution)
    start, end = execution.date_range(now)
    today = as_utc(now or dt.datetime.now(dt.UTC)).date()
    if execution.period not in (None, PREVIOUS_MONTH) and end >= today:
        raise InvalidInput(
            f"field 'period': {execution.period} has not ended (today is {today}, UTC), and a month given as the period "
            f"is checked whole: run it from {end + dt.timedelta(days=1)} on, or give start and end for the days there are"
        )
    if execution.period == PREVIOUS_MONTH and not recipe.runs_on_schedule:
        raise InvalidInput(
            f"field 'period': recipe {recipe.name}'s granules are published weeks to months after their data are taken, "
            f"so the previous month is not whole early in this one, and a month summarized without them would stay so "
            f"(the schedule does not run a month again): run each month once its granules are out, with \"period\": "
            f"\"YYYY-MM\" (granulemap start --period YYYY-MM); the stack's DefaultRecipe should be an SST recipe")
    days = (end - start).days + 1
    if days > settings.max_range_days:
        raise InvalidInput(
            f"field 'end': the range {start}..{end} covers {days} days, more than the limit of "
            f"{settings.max_range_days} days (template parameter MaxRangeDays); split the run"
        )
    if execution.source is not None and execution.source.startswith("s3://"):
        bucket_name, _ = split_s3_url(execution.source)
        if bucket_name != settings.bucket:
            raise InvalidInput(
                f"field 'source': {execution.source} is in bucket {bucket_name}, and the functions read only their "
                f"own bucket, s3://{settings.bucket}/: copy the granules under it (aws s3 sync), or for a local run "
                "give a folder of this machine; with no source, a deployed stack's run searches NASA CMR"
            )
    directory = local_path_of(execution.source) if execution.source is not None else None
    if directory is not None:
        if not os.path.isdir(directory):
            what = "is a file, not a directory" if os.path.exists(directory) else "does not exist here"
            raise InvalidInput(f"field 'source': {directory} {what}: give the folder that holds the granules")
    if execution.group is not None and not recipe.per_granule:
        per_granule = sorted(name for name in available() if get_recipe(name).per_granule)
        raise InvalidInput(f"field 'group': recipe {recipe.name} makes its own items; group applies to the recipes "
                           f"that reduce each granule on its own ({', '.join(per_granule)})")
    if execution.bbox is not None:
        _refuse_a_bbox_that_changes_nothing(execution, recipe)
    if execution.source is None and execution.collection is None and recipe.collection is None:
        raise InvalidInput(f"field 'collection': recipe {recipe.name} has no default collection; give one")
    return execution, recipe


def _refuse_a_scheduled_period_with_missing_granules(granules: list[Granule], execution: ExecutionInput,
                                                     recipe: Recipe, start: dt.date, end: dt.date,
                                                     period: str) -> None:
    """A run of a month given as ``period`` (the monthly schedule's, or "YYYY-MM") fails, so that the stack's alert
    says so, when its month has no granules (NASA has not published them yet, or the collection or source changed),
    or, for a recipe with one granule a day, lacks some days: the schedule does not run a month again, so a month
    summarized without them would stay so. The input it says to run again names the month as a period, so that the
    check is made again; the same dates as start and end accept what is there."""
    where = (f"in {execution.source}" if execution.source is not None
             else f"of {recipe.collection_of(execution)} in NASA CMR")
    month = execution.model_copy(update={"period": start.strftime("%Y-%m"), "start": None, "end": None})
    again = json.dumps(month.model_dump(mode="json", exclude_none=True, exclude_defaults=True))
    local = execution.source is not None and not execution.source.startswith("s3://")
    how = (f"run the month again later with granulemap run --period {month.period} and the same options (or this "
           f"input to a Workspace): {again}" if local else
           f"run the month again later with this input (aws stepfunctions start-execution --input, or the same "
           f"fields as granulemap start's options): {again}")
    not_yet = ("if NASA has not published them yet" if execution.source is None
               else f"if they are not in {execution.source} yet")
    # A granule of the evening before the month (a recipe with data_span gets it for its segments after midnight)
    # does not make the month published.
    if not any(may_hold_data_in(g.time, start, end) for g in granules):  # by day, without the span
        raise NoGranulesFound(f"no granules {where} for {start}..{end} ({period}): {not_yet}, {how}")
    if recipe.one_granule_a_day:
        missing = days_without_a_granule(granules, start, end)
        if missing:
            raise NoGranulesFound(
                f"{len(missing)} day(s) of {start}..{end} ({period}) have no granule {where}: {first_of(missing, 5)}. "
                f"{not_yet[0].upper()}{not_yet[1:]}, {how}. To accept the gap, run the month with its dates instead "
                f'of a period: "start": "{start}", "end": "{end}"')


def _refuse_a_bbox_that_changes_nothing(execution: ExecutionInput, recipe: Recipe) -> None:
    """A bbox narrows only the NASA CMR search (which granules are found; no recipe clips to it): with a ``source``
    folder, or granules that all cover one grid, the run would quietly ignore it, and a reader of the results take
    them for the box's."""
    instead = (" To reduce over an area, use a recipe that takes one: sst-box-mean with params {\"box\": [W, S, E, N]}"
               " for SST" if recipe.same_area_every_granule else "")
    if execution.source is not None:
        raise InvalidInput(f"field 'bbox': it narrows a NASA CMR search, not a 'source' folder, and recipe "
                           f"{recipe.name} reads every granule it is given: the bbox would change nothing (put only "
                           f"the granules you want in the folder).{instead}")
    if recipe.same_area_every_granule and not recipe.bbox_changes_results:
        raise InvalidInput(f"field 'bbox': it narrows which granules the NASA CMR search finds, but every granule of "
                           f"{recipe.collection_of(execution)} covers the same area (one grid a day), and "
                           f"recipe {recipe.name} reduces each whole granule: the bbox would change nothing.{instead}")


def _source_folder(source: str) -> tuple[str, dict[str, str], list[str]]:
    """A ``source`` as a folder (a local directory, file:// URL or s3:// prefix): where it is (a directory's path, an
    s3:// prefix ending in ``/``), the files in it by name, each with its revision (``Granule.revision``: an
    object's ETag, a file's size and modification time), and the names of its subfolders, each sorted."""
    path = local_path_of(source)
    if path is None:
        bucket_name, prefix = split_s3_url(source)
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        files, folders = Bucket(bucket_name).folder(prefix)
        return f"s3://{bucket_name}/{prefix}", dict(sorted(files.items())), sorted(folders)
    directory = os.path.abspath(path)
    revisions: dict[str, str] = {}
    folders = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if entry.is_dir():
            folders.append(entry.name)
        else:
            try:
                stat = entry.stat()
            except OSError:  # a link to nothing: listed, and refused by name where it is read
                revisions[entry.name] = ""
            else:
                revisions[entry.name] = f"{stat.st_size}-{stat.st_mtime_ns}"
    return directory, revisions, folders


def list_source(source: str, recipe: Recipe, start: dt.date, end: dt.date) -> tuple[list[Granule], list[str]]:
    """Granules in a local directory, file:// URL or s3:// prefix ("folder": its "subfolders" are not searched,
    as a local directory's are not) whose file-name time puts them in the range (``Recipe.may_hold_data_in``), and
    the names of the files that match the recipe's file-name pattern but give no time (no run reads them)."""
    where, files, _ = _source_folder(source)
    granules, undated = [], []
    for name, revision in files.items():
        if not fnmatch.fnmatch(name, recipe.file_pattern):
            continue
        when = recipe.granule_time(name)
        if when is None:
            undated.append(name)
        elif recipe.may_hold_data_in(when, start, end):
            url = f"{where}{name}" if where.startswith("s3://") else os.path.join(where, name)
            granules.append(Granule(url=url, time=when, revision=revision or None))
    return sorted(granules, key=lambda g: (g.time, g.url)), undated


def undated_note(source: str, recipe: Recipe, undated: list[str]) -> str | None:
    """A note for the summary of a run that found granules in ``source``, on the files beside them whose names match
    the recipe's pattern but give no date (renamed granules, a land mask): no run reads them, and their days count as
    having no granule."""
    if not undated:
        return None
    return (f"{len(undated)} file(s) in {source} match recipe {recipe.name}'s file-name pattern "
            f"{recipe.file_pattern!r} but their names give no date, so no run reads them: {first_of(undated, 3)} "
            "(a granule keeps the name NASA gave it)")


def why_no_granules(source: str, recipe: Recipe, start: dt.date, end: dt.date) -> str:
    """Why a ``source`` folder gave no items for ``recipe`` between ``start`` and ``end``: what it holds, what the
    recipe looks for, and that subfolders are not searched."""
    where, files, folders = _source_folder(source)
    matching = [n for n in files if fnmatch.fnmatch(n, recipe.file_pattern)]
    dated = [recipe.granule_time(n) for n in matching]
    dates = sorted(utc_day(t) for t in dated if t is not None)
    inside = sum(recipe.may_hold_data_in(t, start, end) for t in dated)
    found = f"{len(matching)} match recipe {recipe.name}'s file-name pattern {recipe.file_pattern!r}"
    if inside:  # granules in range, and still no item: the recipe found nothing to do in them
        near = sorted({utc_day(when) for when in dated if when is not None and recipe.may_hold_data_in(
            when, start, end) and not start <= utc_day(when) <= end})
        how = (f"dated from {start} to {end}" if not near else
               f"dated from {start} to {end} or close enough to hold data of those days (the recipe's data_span: "
               f"named for {first_of([str(day) for day in near], 3)})")
        found += f", {inside} of them {how}, which gave the recipe no items"
    elif dates:
        found += f", dated {dates[0]} to {dates[-1]} by their names, none from {start} to {end}"
    elif matching:
        found += (f", but their names give no date: recipe {recipe.name}'s granule_time() returned None for "
                  f"{matching[0]!r}" + (" (the base class's: define granule_time in the recipe; for GHRSST "
                                        "names, granulemap.recipes.ghrsst.time_from_name)"
                                        if type(recipe).granule_time is Recipe.granule_time else ""))
    here = f"; subfolders are not searched ({len(folders)} here: {', '.join(folders[:3])})" if folders else ""
    if not files:
        return f"{where} holds no files{here}"
    return f"{where} holds {len(files)} file{'s' if len(files) != 1 else ''}: {found}{here}"


CHILD_INPUT_LIMIT = 200 * 1024
"""Bytes of JSON a Map child's input, one manifest item and the run (the ItemSelector), may take: Step Functions
limits a state's input to 256 KiB, and a failed item's RecordFailure state gets the caught error besides (its Cause
up to 32,768 characters, more once escaped as JSON) and the run its credentials' reference."""


def _refuse_items_too_large_for_the_map(manifest: list[dict[str, Any]], run: RunContext, start: dt.date,
                                        end: dt.date) -> None:
    """An item whose JSON with the run's exceeds ``CHILD_INPUT_LIMIT`` (an ATL06 parent cell crossed by some 1,300
    granules or more: a long range over a polar cell, a coarse parent_order; or a run whose parameters are large)
    would fail its child execution, or the state that records its failure, with States.DataLimitExceeded, which no
    Catch records; refused before anything starts."""
    run_size = len(run.model_dump_json().encode())  # UTF-8 bytes, as Step Functions counts (pydantic does not escape)
    sizes = [(len(json.dumps(entry, separators=(",", ":"))), entry) for entry in manifest]
    too_large = [(size, entry) for size, entry in sizes if size + run_size > CHILD_INPUT_LIMIT]
    if not too_large:
        return
    size, entry = max(too_large, key=lambda pair: pair[0])
    if run_size > CHILD_INPUT_LIMIT // 2:  # the parameters, not the granules, are what takes the room
        raise InvalidInput(
            f"field 'params': the run's parameters take {run_size:,} bytes of JSON, which every Map child's input "
            f"carries with its item (Step Functions' 256 KiB, {CHILD_INPUT_LIMIT:,} bytes for the two here): give "
            "the recipe less (a file in S3 that it reads, say)")
    raise InvalidInput(
        f"field 'end': {len(too_large)} item(s) of {start}..{end} are too large for a Map child's input "
        f"(Step Functions' 256 KiB), the largest {entry['id']} with {len(entry.get('granules', []))} granules "
        f"({size:,} bytes, and the run's {run_size:,}): split the range (a month at a time) or, for "
        "atl06-cell-stats, use a finer parent_order")


def _by_day(granules: list[Granule]) -> dict[dt.date, list[Granule]]:
    """``granules`` by their UTC day, in their order (those without a time left out)."""
    by_day: dict[dt.date, list[Granule]] = {}
    for granule in granules:
        if granule.time is not None:
            by_day.setdefault(utc_day(granule.time), []).append(granule)
    return by_day


def _refuse_two_granules_of_a_day(granules: list[Granule], recipe: Recipe, source: str) -> None:
    """A recipe of a collection with one granule a day, given a folder holding two of one day: two products (MUR25
    and MUR at 0.01°, two versions of one), whose rows would alternate in one series (rows are keyed by granule name,
    so both stay). A CMR search names its collection (another collection is a configuration of its own)."""
    twice = {day: [g.url.rsplit("/", 1)[-1] for g in of_day] for day, of_day in _by_day(granules).items()
             if len(of_day) > 1}
    if twice:
        day, names = min(twice.items())
        raise InvalidInput(
            f"field 'source': {len(twice)} day(s) have several granules in {source}, {day}: {', '.join(names[:3])}. "
            f"Recipe {recipe.name} reduces a collection of one granule a day, and two products (or two versions of "
            "one) would alternate in one time series: keep one product in the folder (each in a folder of its own), "
            "and for another product's granules name their collection (\"collection\"; --collection), which gives "
            "them a time series of their own")


def _newest_of_each_day(granules: list[Granule], collection: str) -> tuple[list[Granule], str | None]:
    """For a recipe of a collection with one granule a day (``Recipe.one_granule_a_day``), a CMR search's granules
    with one a day: of several granules of one day (a near-real-time granule and the final one that replaces it, a
    reprocessed granule under a new name while the old one is still listed) the one produced last
    (``Granule.revision``: when its data were produced; of two alike, or without one, the last by name), and a note
    naming those left out, or None. Both read, a day would have two rows in the time series, and a monthly mean
    weigh that day twice."""
    def newest_first(granule: Granule) -> tuple[dt.datetime, str]:
        try:
            revised = iso_time(granule.revision) if granule.revision else None
        except ValueError:
            revised = None
        return revised or dt.datetime.min.replace(tzinfo=dt.UTC), granule.url.rsplit("/", 1)[-1]

    by_day = _by_day(granules)
    left_out = {id(g) for day in by_day.values() for g in sorted(day, key=newest_first)[:-1]}
    if not left_out:
        return granules, None
    days = sorted(day for day, of_day in by_day.items() if len(of_day) > 1)
    names = [g.url.rsplit("/", 1)[-1] for g in granules if id(g) in left_out]
    return [g for g in granules if id(g) not in left_out], (
        f"NASA CMR lists more than one granule of {collection} for {len(days)} day(s) ({first_of(days, 3)}): each "
        f"day's most recently produced granule was read, and {len(names)} left out: {first_of(names, 3)}")


WITHOUT_FOOTPRINTS = {"granules": {"__all__": {"footprint"}}}
"""What the manifest leaves out of each item (``Item.model_dump``'s ``exclude``)."""
FOR_THE_MAP = {"granules": {"__all__": {"footprint", "revision"}}}
"""What the Distributed Map's list (map-items.json) leaves out of each item: what the Processor does not read."""


def _repeated(ids: Iterable[str]) -> list[str]:
    return [i for i, n in Counter(ids).items() if n > 1]


def _unique_ids(items: list[Item], recipe: Recipe, step: str) -> list[Item]:
    """``items`` if their ids are unique; else InvalidInput naming the recipe's step that made them."""
    duplicates = _repeated(item.id for item in items)
    if duplicates:
        raise InvalidInput(f"recipe {recipe.name}'s {step}() gave more than one item the same id: {duplicates[:5]}. "
                           "An item's id is the key its result is stored and reused under: each must be unique, and "
                           "change when its granules do (granulemap.grouping.item_of makes such items)")
    return items


def mark_done(items: list[Item], run: RunContext, bucket: Bucket) -> list[Item]:
    """``items`` with ``done`` set on those whose result of this configuration is in S3.

    One listing, of the keys that start with what the items' ids have in common: a month of daily granules lists
    that month's results (ids start with the granule's date), an ATL06 run its period's (ids start with it), not
    everything the configuration gathered over the years."""
    if not items:
        return items
    keys = [layout.result_key(run.recipe, run.config_id, item.id) for item in items]
    existing = set(bucket.keys(os.path.commonprefix(keys)))
    return [item.model_copy(update={"done": key in existing}) for item, key in zip(items, keys, strict=True)]


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """What an execution input runs, ``period`` resolved once: the search, the items and the configuration id see the
    same dates even when a run starts just before midnight at the end of a month."""

    validated: ExecutionInput
    """The input as given (``period`` unresolved: the scheduled month's checks look at it)."""
    execution: ExecutionInput
    """The input with ``period`` replaced by its dates."""
    recipe: Recipe
    params: BaseModel
    start: dt.date
    end: dt.date
    config_id: str


def plan_run(raw_input: object, settings: Settings, now: dt.datetime | None = None) -> RunPlan:
    """Validate ``raw_input`` (InvalidInput names the field) and resolve what it runs at ``now``."""
    validated, recipe = validate_input(raw_input, settings, now)
    execution = validated.resolved(now)
    params = recipe.parse_params(execution.params)
    start, end = execution.date_range()
    return RunPlan(validated=validated, execution=execution, recipe=recipe, params=params, start=start, end=end,
                   config_id=recipe.config_id(params, execution))


def refuse_a_second_run_of_the_period(plan: RunPlan, earlier: Iterable[OtherRun], settings: Settings) -> None:
    """Raise RunInProgress if one of the ``earlier`` executions (still running) runs the same recipe and
    configuration over the same dates as ``plan``: each would rewrite the period's results (granulemap/executions.py).
    An input that does not validate is not such a run (it fails on its own); overlapping but different dates are
    different periods, which runs may write at once."""
    for other in earlier:
        try:
            theirs = plan_run(other.input, settings, other.started)
        except InvalidInput:
            continue
        if (theirs.recipe.name, theirs.config_id, theirs.start, theirs.end) == (
                plan.recipe.name, plan.config_id, plan.start, plan.end):
            raise RunInProgress(
                f"execution {other.name} (started {as_utc(other.started):%Y-%m-%d %H:%M:%S} UTC) is running "
                f"{plan.recipe.name} {plan.config_id} over {plan.start}..{plan.end} too: two runs of one period at "
                f"once would each rewrite its results. Nothing was written. Let it end (granulemap status "
                f"{other.arn}) or stop it (aws stepfunctions stop-execution --region {other.arn.split(':')[3]} "
                f"--execution-arn {other.arn}), then start "
                "this run again")


def build_catalog(
    raw_input: object, run_id: str, settings: Settings, bucket: Bucket, now: dt.datetime | None = None,
    earlier_runs: Callable[[], Iterable[OtherRun]] | None = None,
) -> CatalogOutput:
    """Validate the input, find its granules, split them into items and write the manifest (without footprints).

    ``period`` is resolved once, against ``now`` (``plan_run``). ``earlier_runs`` gives the state machine's executions
    still running that started before this one: a run of the same period and configuration among them refuses this
    one, before the search.
    """
    plan = plan_run(raw_input, settings, now)
    if earlier_runs is not None:
        refuse_a_second_run_of_the_period(plan, earlier_runs(), settings)
    validated, execution, recipe, params = plan.validated, plan.execution, plan.recipe, plan.params
    start, end = plan.start, plan.end
    provider, collection, undated = None, recipe.collection_of(execution), []
    if execution.source is not None:
        granules, undated = list_source(execution.source, recipe, start, end)
    else:
        from granulemap.cmr import search_granules

        assert collection is not None
        granules, provider, _ = search_granules(collection, start, end, execution.bbox,
                                                footprints=recipe.needs_footprints, time_from_name=recipe.granule_time,
                                                data_span=recipe.data_span)
    if validated.period is not None:
        _refuse_a_scheduled_period_with_missing_granules(granules, execution, recipe, start, end, validated.period)
    run = RunContext(
        run_id=run_id,
        recipe=recipe.name,
        params=params.model_dump(mode="json"),
        config_id=plan.config_id,
        start=start,
        end=end,
        daac=provider,
        collection=collection,
        bbox=execution.bbox,
        started=as_utc(now or dt.datetime.now(dt.UTC)),
    )
    if recipe.per_granule:  # results are merged by granule name: two granules of one name would be one row
        twice = _repeated(item_id_for(g.url) for g in granules)
        if twice:  # (a source is one folder: its names are unique)
            raise CatalogError(f"CMR listed granules of collection {collection} under the same file name more than "
                               f"once (two records of one granule?): {twice[:5]}")
    replaced_note = None
    if execution.source is not None and recipe.one_granule_a_day:
        _refuse_two_granules_of_a_day(granules, recipe, execution.source)
    elif recipe.one_granule_a_day:
        granules, replaced_note = _newest_of_each_day(granules, collection)
    items = _unique_ids(recipe.make_items(granules, params, execution), recipe, "make_items")
    notes = list(recipe.catalog_notes(granules, params)) if items else []
    if replaced_note:
        notes.insert(0, replaced_note)
    # A folder that gave nothing: what it holds, for the summary (the name of a subfolder the granules are in, say).
    none_found = why_no_granules(execution.source, recipe, start, end) if execution.source and not items else None
    undated_files = undated_note(execution.source, recipe, undated) if execution.source and items else None
    if undated_files:
        notes.insert(0, undated_files)
    # Before prepare, which may write (atl06-cell-stats grows its store): a refused input changes nothing. prepare
    # only adds names (a store id) to items, well within the limit's margin.
    _refuse_items_too_large_for_the_map(
        [item.model_dump(mode="json", exclude_defaults=True, exclude=FOR_THE_MAP) for item in items], run, start, end)
    items = _unique_ids(recipe.prepare(items, run, params, bucket) or items, recipe, "prepare")
    if items:
        notes += recipe.product_notes(run, params, bucket)
    if not execution.recompute:
        items = mark_done(items, run, bucket)
    tolerance = (execution.tolerated_failure_percentage if execution.tolerated_failure_percentage is not None
                 else settings.default_tolerated_failure_percentage)
    key, map_key = layout.manifest_key(run_id), layout.map_items_key(run_id)
    # Footprints serve make_items only: the manifest stays small. Revisions are in its ids, and in the manifest for
    # provenance, but the Processor does not read them: the Map's items (each a child's input, within 256 KiB) go
    # without.
    bucket.put_json(key, [item.model_dump(mode="json", exclude_defaults=True, exclude=WITHOUT_FOOTPRINTS)
                          for item in items])
    # The Map runs the items not yet done: one already done would cost a child execution and a Processor call that
    # only finds it done (a year run again for its last month: 33 of 36 items). Aggregate reads the whole manifest.
    to_do = [item.model_dump(mode="json", exclude_defaults=True, exclude=FOR_THE_MAP) for item in items
             if not item.done]
    bucket.put_json(map_key, to_do)
    return CatalogOutput(
        run=run,
        catalog=CatalogRef(bucket=bucket.name, key=key, count=len(items), map_key=map_key, map_count=len(to_do),
                           none_found=none_found, notes=notes),
        map=MapConfig(
            max_concurrency=execution.max_concurrency or settings.default_max_concurrency,
            tolerated_failure_percentage=tolerance,
            item_tolerated_failure_percentage=100 if recipe.per_granule else _of_the_map(tolerance, len(items),
                                                                                       len(to_do)),
        ),
    )


def _of_the_map(tolerance: float, count: int, map_count: int) -> int:
    """The Distributed Map's tolerated percentage for a run that tolerates ``tolerance`` % of its ``count`` items:
    the Map runs only the ``map_count`` not yet done, judges its failed children against those, and takes a whole
    percentage (ToleratedFailurePercentagePath "must resolve to a positive integer between 0 and 100"). The run may
    lose ``allowed`` items (Aggregate's rule, models.exceeds_tolerance); the Map gets the least whole percentage that
    lets that many of its items fail, ceil(100 allowed / map_count). With up to 100 items to run, one more failure is
    then over it, so the Map stops exactly when the run has failed; with more, a whole percent is more than one item,
    and the Map may run on past the run's tolerance (Aggregate, which judges the run, fails it all the same)."""
    if not map_count:  # nothing to run: the run's own, whole
        return min(100, math.ceil(tolerance))
    allowed = min(count, int(tolerance * count / 100))
    while allowed < count and not exceeds_tolerance(allowed + 1, count, tolerance):  # float rounding, either way
        allowed += 1
    while allowed and exceeds_tolerance(allowed, count, tolerance):
        allowed -= 1
    return min(100, -(-100 * allowed // map_count))
