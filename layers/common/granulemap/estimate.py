"""``granulemap estimate``: the expected AWS cost of a run, from measured per-item times and the template's memory.

What is counted (us-west-2 prices below): Lambda compute (GB-seconds: each function's billed duration × the
MemorySize template.yaml gives it) and requests; Step Functions Standard state transitions of the parent execution
and of every Map Run child execution; S3 requests on the stack's bucket. What is not: S3 storage and data transfer
(in-region, free), NASA's own buckets (the DAAC pays for reads of its granules), SSM standard parameters (free),
CloudWatch Logs and X-Ray (small, depend on log level and sampling) and the free tier.

The measured facts (seconds of compute per item on the benchmark machine, peak memory, cold import times) live in
``cost_model.json`` next to this module, written by ``make bench`` (bench/run.py); this module only does arithmetic
on them and on the prices, so ``tests/test_estimate.py`` can check it against a hand computation.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from granulemap.grouping import MAX_GRANULES_PER_ITEM, dekad_of
from granulemap.models import MAX_CONCURRENCY_LIMIT

COST_MODEL = Path(__file__).with_name("cost_model.json")

# ---- prices: AWS us-west-2 (Oregon) on-demand list prices, as I know them (assistant's knowledge, checked against
# AWS's pricing pages as of 2025; not fetched from AWS here). Change them here, in one place.
PRICES_AS_OF = "2025 (from the author's knowledge of AWS's public price list; not fetched live)"
LAMBDA_GB_SECOND_USD = 0.0000166667
"""Lambda compute, x86_64, first 6 billion GB-s per month."""
LAMBDA_REQUEST_USD = 0.20 / 1_000_000
"""Lambda requests (invocations)."""
SFN_STATE_TRANSITION_USD = 0.025 / 1_000
"""Step Functions Standard workflows: per state transition (Distributed Map child executions are Standard here)."""
S3_PUT_USD = 0.005 / 1_000
"""S3 Standard PUT, COPY, POST, LIST requests."""
S3_GET_USD = 0.0004 / 1_000
"""S3 Standard GET, SELECT and all other requests."""
FULL_VCPU_MB = 1769
"""Lambda gives a function one full vCPU at 1,769 MB; below that, CPU time is shared in proportion to memory."""
ORDER6_CELLS = 12 * 4**6
"""HEALPix cells at order 6 (the ATL06 recipe's default parent order): an upper bound on its items."""

FUNCTIONS = ("CatalogBuilderFunction", "CredentialFetcherFunction", "ProcessorFunction", "AggregatorFunction")


@dataclass(frozen=True)
class RecipeCost:
    """What one item of a recipe costs in time and requests (from cost_model.json)."""

    compute_s: float
    """CPU seconds of one item's work at one full vCPU (measured by make bench); of one granule's, when the recipe's
    granules are grouped into items (``grouping``)."""
    input_mb: float
    """MB read from the DAAC's S3 per item (granule bytes fetched); per granule when grouped."""
    items_per_day: float
    """Units of work per day of the date range: granules when grouped (SST: one); ATL06: a rough count of granule ×
    parent-cell pairs (an item is a parent cell with the granules that touch it, and ``compute_s`` and ``input_mb``
    are one granule's share of one parent cell), which are also items until ``max_items`` caps them."""
    grouping: str = "granule"
    """"dekad": a per-granule recipe whose granules are grouped into one item per dekad (granulemap.grouping)."""
    max_items: int | None = None
    """The most items the recipe can make (ATL06: the parent cells). Units beyond it are not more items but more
    granules in each: each item is priced as ``units / max_items`` granules."""
    granule_gets: float = 1
    """GETs that read one granule's bytes (one item's, when not grouped): a granule up to GranuleAccess's
    HEAD_SIZE comes in one; a larger one by ranges (granulemap.granule_access), as many as make bench counted. Each
    GET's first byte is priced as a latency, one after another (the prefetch's overlap of GETs and compute is not
    credited). The DAAC pays for them."""
    s3_gets_per_item: int = 1
    """The Aggregate step's GET of the result (BuildCatalog finds finished items by listing, see LIST below)."""
    s3_puts_per_item: int = 1
    """The Processor's PUT of its result (ATL06: plus the store's chunk writes, see cost_model.json)."""
    measured_on: str = ""
    """What make bench measured ``compute_s`` and ``input_mb`` on (a real MUR25 granule, ...)."""


COLLECTION_SEPARATOR = "@"
"""cost_model.json names a recipe's cost on another collection than its default ``<recipe>@<collection>``."""


def cost_key(recipe_name: str, collection: str | None) -> str:
    """The cost model's name for ``recipe_name`` run on ``collection`` (None: the recipe's default collection)."""
    return recipe_name if collection is None else f"{recipe_name}{COLLECTION_SEPARATOR}{collection}"


@dataclass(frozen=True)
class CostModel:
    recipes: dict[str, RecipeCost]
    cold_import_s: dict[str, float]
    """Measured ``import app`` of each handler with only the built layer: Lambda bills the init phase."""
    s3_mb_per_s: float
    """Assumed S3 read throughput of one Lambda (in-region)."""
    s3_request_latency_s: float
    """Assumed latency of one small S3 request from Lambda."""
    fixed_function_s: dict[str, float]
    """Assumed billed seconds of the run's single calls (BuildCatalog, FetchCredentials, Aggregate base)."""
    aggregate_s_per_item: float
    """Aggregate's seconds per item (reading each result object; parallel GETs)."""
    measured: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None = None) -> CostModel:
        """The cost model in ``path`` (default: cost_model.json next to this module)."""
        raw = json.loads((path or COST_MODEL).read_text())
        return cls(
            recipes={name: RecipeCost(**spec) for name, spec in raw["recipes"].items()},
            cold_import_s=raw["cold_import_s"], s3_mb_per_s=raw["s3_mb_per_s"],
            s3_request_latency_s=raw["s3_request_latency_s"], fixed_function_s=raw["fixed_function_s"],
            aggregate_s_per_item=raw["aggregate_s_per_item"], measured=raw.get("measured", {}),
        )


@dataclass(frozen=True)
class Estimate:
    items: int
    lines: list[tuple[str, float, str]]
    """(what, USD, how it was computed)."""
    assumptions: list[str]

    @property
    def total_usd(self) -> float:
        return sum(usd for _, usd, _ in self.lines)


def cpu_share(memory_mb: int) -> float:
    """The share of one vCPU a Lambda of ``memory_mb`` gets (1 at 1,769 MB and above)."""
    return min(1.0, memory_mb / FULL_VCPU_MB)


def billed_seconds(seconds: float) -> float:
    """Lambda bills duration rounded up to the next millisecond."""
    return math.ceil(round(seconds * 1000, 6)) / 1000


LIST_PAGE = 1000
"""Keys per S3 LIST page: BuildCatalog lists the configuration's results to find finished items."""

PARENT_STATES = 7
"""States a run that succeeds without failures enters: BuildCatalog, FetchCredentials, AnythingToDo, ProcessItems,
Aggregate, AnyFailedWithinTolerance, Done (a run with failures within the tolerance: one more, to tell the alert
topic). Each is a Step Functions Standard state transition."""

RUN_S3_GETS = 6
"""GETs of a run besides each item's: the Map's ItemReader (the items to run), Aggregate's of the manifest, a time
series' CSV, read by BuildCatalog (the SST recipes' product check) and by Aggregate (to merge into it), and Aggregate's
HEAD of each product (the CSV and its PNG) that the recipe's combine says it wrote (priced as GETs; a Zarr store's
prefix: a HEAD and a LIST, not counted)."""

RUN_S3_PUTS = 8
"""PUTs of a run besides each item's: the manifest, the Map's items, the products (a CSV and its PNG), summary.json
and provenance.json; and the Distributed Map's ResultWriter's manifest.json and SUCCEEDED_0.json (one more,
FAILED_0.json, when items fail)."""


def s3_requests(recipe: RecipeCost, n: int) -> tuple[int, int, int]:
    """(GET, PUT, LIST) requests of a run of ``n`` items, all to do. The LIST: BuildCatalog's of finished items, a page
    per 1,000 results under the items' common start, assumed to be about the run's own items (more when earlier
    results share that start). A time-series recipe's; atl06-cell-stats' store adds its metadata's requests."""
    return (n * recipe.s3_gets_per_item + RUN_S3_GETS, n * recipe.s3_puts_per_item + RUN_S3_PUTS,
            math.ceil(n / LIST_PAGE))


def processor_item_seconds(recipe: RecipeCost, model: CostModel, memory_mb: int, granules: float = 1.0) -> float:
    """One Processor call of ``granules`` granules (1 for an ungrouped recipe below its ``max_items``; may be a
    fraction, an average): each granule's compute scaled by the CPU share, its input read and the latency of each of
    its GETs' first byte, and the result's PUT."""
    compute = recipe.compute_s / cpu_share(memory_mb)
    read = recipe.input_mb / model.s3_mb_per_s + recipe.granule_gets * model.s3_request_latency_s
    return granules * (compute + read) + model.s3_request_latency_s


def _items_by_rate(recipe: RecipeCost, start: dt.date, end: dt.date) -> int:
    """Units of work (see ``RecipeCost.items_per_day``) the date range holds, before any cap."""
    return math.ceil(recipe.items_per_day * ((end - start).days + 1))


def capped_items(recipe: RecipeCost, units: int) -> tuple[int, float]:
    """Items of an ungrouped recipe for ``units`` units of work, and the granules each is priced as: one per unit,
    until the recipe's ``max_items``; beyond it, ``units / max_items`` granules in each of ``max_items`` items."""
    if recipe.max_items and units > recipe.max_items:
        return recipe.max_items, units / recipe.max_items
    return units, 1.0


def items_for(recipe: RecipeCost, start: dt.date, end: dt.date) -> int:
    return capped_items(recipe, _items_by_rate(recipe, start, end))[0]


def _items_basis(recipe: RecipeCost, start: dt.date, end: dt.date, n: int, units: int, given: bool) -> str:
    """The assumptions' line on the items: how many, from what, and the granules in each when capped."""
    what = " granule × parent-cell pairs (a rough count) a day" if recipe.max_items is not None else " per day"
    rate = "--items" if given else f"{recipe.items_per_day:g}{what} over {(end - start).days + 1} days"
    if recipe.grouping == "dekad":
        return (f"items: {n}, one per dekad (the 1st-10th, 11th-20th and 21st-last day of a month) of {units} "
                "granules" + ("" if given else f" ({rate})"))
    if n < units:
        return (f"items: {n} ({rate} would be {units}, more than the recipe's {recipe.max_items} possible items: at "
                f"most that, each of {units}/{n} = {units / n:.2f} granules)")
    return f"items: {n}" + ("" if given else f" ({rate})")


def dekad_items(start: dt.date, end: dt.date, granules: int) -> int:
    """Items of ``granules`` granules spread evenly over the days ``start``..``end``, grouped by dekad
    (granulemap.grouping): one per dekad the range touches, or more where a dekad holds more than
    ``MAX_GRANULES_PER_ITEM`` granules."""
    days = (end - start).days + 1
    per_dekad = Counter(dekad_of(start + dt.timedelta(days=d)) for d in range(days))
    return sum(math.ceil(round(granules * n / days, 9) / MAX_GRANULES_PER_ITEM) for n in per_dekad.values())


def estimate(recipe_name: str, start: dt.date, end: dt.date, memory_mb: dict[str, int], model: CostModel,
             max_concurrency: int, items: int | None = None, collection: str | None = None) -> Estimate:
    """The expected cost of one run. ``memory_mb``: MemorySize of each function (template.yaml's, or overridden);
    ``collection``: another than the recipe's default, whose granules make bench measured (MUR 0.01°)."""
    recipes = sorted(name for name in model.recipes if COLLECTION_SEPARATOR not in name)
    if recipe_name not in model.recipes:
        raise KeyError(f"no cost model for recipe {recipe_name!r}: estimate covers the recipes make bench measures "
                       f"({', '.join(recipes)}); for one of yours, price the built-in one of the most similar work: "
                       f"granulemap estimate --recipe sst-box-mean --start {start} --end {end} for a per-granule SST "
                       "reduction (and --items N, N the granules yours reads, if they differ from one a day; "
                       "they are priced grouped by dekad, as sst-box-mean's are)")
    key = cost_key(recipe_name, collection)
    if key not in model.recipes:
        measured = sorted(name.partition(COLLECTION_SEPARATOR)[2] for name in model.recipes
                          if name.startswith(recipe_name + COLLECTION_SEPARATOR))
        raise KeyError(f"no cost model for recipe {recipe_name} on collection {collection}: make bench measures it on "
                       f"its default collection{' and on ' + ', '.join(measured) if measured else ''}; price one of "
                       "those whose granules are most like yours")
    recipe = model.recipes[key]
    units = items if items is not None else _items_by_rate(recipe, start, end)
    if recipe.grouping == "dekad":  # units are granules, grouped into one item per dekad
        n = min(units, dekad_items(start, end, units))
        per_granule = units / n if n else 0.0
    else:  # units are items of one granule each, until max_items: then more granules per item
        n, per_granule = capped_items(recipe, units)
    gb = {fn: mb / 1024 for fn, mb in memory_mb.items()}
    per_item = billed_seconds(processor_item_seconds(recipe, model, memory_mb["ProcessorFunction"], per_granule))
    cold_starts = min(n, max_concurrency)

    processor_gbs = n * per_item * gb["ProcessorFunction"]
    processor_init_gbs = cold_starts * model.cold_import_s["ProcessorFunction"] * gb["ProcessorFunction"]
    single = {"CatalogBuilderFunction": model.fixed_function_s["CatalogBuilderFunction"],
              "CredentialFetcherFunction": model.fixed_function_s["CredentialFetcherFunction"],
              "AggregatorFunction": model.fixed_function_s["AggregatorFunction"] + n * model.aggregate_s_per_item}
    single_gbs = sum((billed_seconds(s) + model.cold_import_s[fn]) * gb[fn] for fn, s in single.items())
    requests = n + len(single)
    parent_transitions, child_transitions = PARENT_STATES, n * 1  # a child execution (one per item): ProcessItem
    s3_gets, s3_puts, s3_lists = s3_requests(recipe, n)

    lines = [
        ("Lambda compute, Processor", processor_gbs * LAMBDA_GB_SECOND_USD,
         f"{n} items × {per_item:.3f} s × {gb['ProcessorFunction']:.3f} GB = {processor_gbs:.2f} GB-s"),
        ("Lambda init (cold starts), Processor", processor_init_gbs * LAMBDA_GB_SECOND_USD,
         f"{cold_starts} cold starts × {model.cold_import_s['ProcessorFunction']:.2f} s × "
         f"{gb['ProcessorFunction']:.3f} GB = {processor_init_gbs:.2f} GB-s"),
        ("Lambda compute, BuildCatalog + FetchCredentials + Aggregate", single_gbs * LAMBDA_GB_SECOND_USD,
         f"{single_gbs:.2f} GB-s (one call each, init included)"),
        ("Lambda requests", requests * LAMBDA_REQUEST_USD, f"{requests} invocations"),
        ("Step Functions state transitions", (parent_transitions + child_transitions) * SFN_STATE_TRANSITION_USD,
         f"{parent_transitions} (parent) + {child_transitions} (Map Run child executions, 1 each)"),
        ("S3 requests", s3_gets * S3_GET_USD + (s3_puts + s3_lists) * S3_PUT_USD,
         f"{s3_gets} GET + {s3_puts} PUT + {s3_lists} LIST"),
    ]
    per_what = ("granule" if recipe.grouping == "dekad" else "item" if per_granule == 1.0
                else f"granule ({per_granule:.2f} per item)")
    assumptions = [
        f"prices: us-west-2 on-demand, {PRICES_AS_OF}: Lambda ${LAMBDA_GB_SECOND_USD}/GB-s and "
        f"${LAMBDA_REQUEST_USD * 1e6:.2f}/1M requests (x86_64), Step Functions Standard "
        f"${SFN_STATE_TRANSITION_USD * 1e3:.3f}/1,000 transitions, S3 ${S3_PUT_USD * 1e3:.4f}/1,000 PUT and "
        f"${S3_GET_USD * 1e3:.4f}/1,000 GET",
        _items_basis(recipe, start, end, n, units, items is not None),
        f"per {per_what}{' (' + recipe.measured_on + ')' if recipe.measured_on else ''}: "
        f"{recipe.compute_s * 1e3:.1f} ms of compute at "
        f"one vCPU (measured by make bench), scaled by {FULL_VCPU_MB}/{memory_mb['ProcessorFunction']} MB when below "
        f"one vCPU, + {recipe.input_mb:g} MB read at {model.s3_mb_per_s:g} MB/s + "
        + ("its first byte" if recipe.granule_gets == 1 else
           f"the first byte of each of its {recipe.granule_gets:g} GETs (by ranges), one after another")
        + f" ({model.s3_request_latency_s * 1e3:.0f} ms, assumed); and each item's result PUT "
        f"({model.s3_request_latency_s * 1e3:.0f} ms, assumed)",
        "memory (MB): " + ", ".join(f"{fn.removesuffix('Function')} {mb}" for fn, mb in memory_mb.items()),
        f"cold starts: one per concurrent Processor ({cold_starts}); Lambda bills the init phase (measured cold "
        "import of each handler)",
        "no retries, no failures, no skipped items; the free tier is not subtracted",
        "a run that lasts more than about half an hour also calls FetchCredentials about once an hour to refresh the "
        "DAAC credentials (a few seconds each, at a Processor's request): not counted",
        "not counted: S3 storage and transfer, NASA's buckets (the DAAC pays), SSM, CloudWatch Logs, X-Ray",
    ]
    return Estimate(items=n, lines=lines, assumptions=assumptions)


LAMBDA_MEMORY_RANGE_MB = (128, 10_240)
"""The memory sizes Lambda allows (template.yaml's *MemorySize parameters have the same bounds:
tests/test_template.py)."""


def template_memory(template: Any = None) -> dict[str, int]:
    """Each function's MemorySize from template.yaml (parameter defaults resolved; ``template``: as
    ``cli.local_template`` read it, if it has been)."""
    from granulemap.cli import local_template

    template = template or local_template()
    return {fn: template.functions[fn].memory_size for fn in FUNCTIONS}


def render(recipe: str, result: Estimate) -> str:
    lines = [f"granulemap estimate: recipe {recipe}, {result.items} items", ""]
    width = max(len(what) for what, _, _ in result.lines)
    for what, usd, how in result.lines:
        lines.append(f"  {what:<{width}}  ${usd:>10.4f}   {how}")
    lines += [f"  {'total':<{width}}  ${result.total_usd:>10.4f}", "", "assumptions:"]
    lines += [f"  - {a}" for a in result.assumptions]
    return "\n".join(lines)


def cmd_estimate(args: argparse.Namespace) -> int:
    from granulemap.errors import InvalidInput

    from granulemap.models import written_date

    if args.period is not None:
        if args.start is not None or args.end is not None:
            raise InvalidInput("give --period or --start and --end, not both")
        from granulemap.models import ExecutionInput

        try:  # a month not ended yet is priced too (a run refuses it until it has ended)
            start, end = ExecutionInput.model_validate({"recipe": args.recipe, "period": args.period}).date_range()
        except ValueError:
            raise InvalidInput(f"--period {args.period}: a month, YYYY-MM, or previous-month") from None
    elif args.start is None or args.end is None:
        raise InvalidInput("give --start and --end (YYYY-MM-DD), or --period YYYY-MM")
    else:
        try:
            start, end = written_date(args.start), written_date(args.end)
        except ValueError as exc:
            raise InvalidInput(f"--start/--end: {exc}") from None
    if end < start:
        raise InvalidInput(f"--end ({end}) is before --start ({start})")
    low, high = LAMBDA_MEMORY_RANGE_MB
    if args.memory_mb is not None and not low <= args.memory_mb <= high:
        raise InvalidInput(f"--memory-mb {args.memory_mb}: Lambda's memory sizes are {low} to {high} MB")
    if args.max_concurrency is not None and not 1 <= args.max_concurrency <= MAX_CONCURRENCY_LIMIT:
        raise InvalidInput(f"--max-concurrency {args.max_concurrency}: 1 to {MAX_CONCURRENCY_LIMIT}, as for a run")
    if args.items is not None and args.items < 0:
        raise InvalidInput(f"--items {args.items}: a count, 0 or more")
    from granulemap.recipes import get_recipe

    from granulemap.cli import local_settings, local_template

    recipe = get_recipe(args.recipe)  # an unknown recipe is named as such, with the installed ones
    template = local_template()  # read once: the memory sizes, DefaultMaxConcurrency and MaxRangeDays
    settings = local_settings(template)
    memory = template_memory(template)
    if args.memory_mb is not None:
        memory["ProcessorFunction"] = args.memory_mb
    try:
        model = CostModel.load()
    except FileNotFoundError:
        raise InvalidInput(f"{COST_MODEL} is missing: run `make bench` to measure the cost model") from None
    collection = args.collection if args.collection not in (None, recipe.collection) else None
    concurrency = args.max_concurrency or settings.default_max_concurrency
    try:
        result = estimate(args.recipe, start, end, memory, model, items=args.items, max_concurrency=concurrency,
                          collection=collection)
    except KeyError as exc:
        raise InvalidInput(str(exc.args[0])) from None
    print(render(args.recipe, result))
    monthly = None
    if recipe.one_period_per_run and args.items is None:  # priced as it is advised to be run too
        months = calendar_months(start, end)
        if len(months) > 1:
            monthly = (len(months), sum(estimate(args.recipe, first, last, memory, model, max_concurrency=concurrency,
                                                 collection=collection).total_usd for first, last in months))
    for note in range_notes(recipe, start, end, settings.max_range_days, monthly):
        print(f"note: {note}")
    return 0


def calendar_months(start: dt.date, end: dt.date) -> list[tuple[dt.date, dt.date]]:
    """The calendar months of ``start``..``end``, as (first day, last day), the first and last cut to the range."""
    months, first = [], start
    while first <= end:
        after = dt.date(first.year + first.month // 12, first.month % 12 + 1, 1)
        months.append((first, min(end, after - dt.timedelta(days=1))))
        first = after
    return months


def range_notes(recipe: Any, start: dt.date, end: dt.date, max_range_days: int,
                monthly: tuple[int, float] | None = None) -> list[str]:
    """What a run of this range would meet that the price does not show: a range longer than one run may take, and a
    range of several months for a recipe that makes one product entry per run (``monthly``: the number of months and
    their runs' cost, when priced)."""
    days = (end - start).days + 1
    notes = []
    if days > max_range_days:
        notes.append(f"one run takes at most {max_range_days} days (template.yaml's MaxRangeDays; your stack's may "
                     f"differ): start these {days} days as {math.ceil(days / max_range_days)} runs (this prices them "
                     "as one)")
    if recipe.one_period_per_run and (start.year, start.month) != (end.year, end.month):
        priced = "" if not monthly else (
            f"; as {monthly[0]} runs, one a month, it costs ${monthly[1]:.2f} in all (each month's run has an item for "
            "every parent cell its granules cross: a cell crossed every month is an item each month)")
        notes.append(f"{recipe.name} makes one entry of its product per run (one time step of its store): this range "
                     "would be one period; for monthly values run month by month (--period YYYY-MM: README, "
                     f"\"Backfilling years\"){priced}")
    return notes


def add_estimate_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``granulemap estimate`` on the ``granulemap`` parser."""
    est = sub.add_parser("estimate", help="expected AWS cost of a run (Lambda, Step Functions, S3), with assumptions")
    est.add_argument("--recipe", required=True, help="a recipe make bench has a cost model for (the built-in ones)")
    est.add_argument("--start", help="first date, inclusive (YYYY-MM-DD)")
    est.add_argument("--end", help="last date, inclusive (YYYY-MM-DD)")
    est.add_argument("--period", help="instead of --start and --end: a whole month, YYYY-MM (or previous-month)")
    est.add_argument("--collection", help="the run's collection, when not the recipe's default: the SST recipes are "
                                          "also measured on MUR 0.01° (MUR-JPL-L4-GLOB-v4.1)")
    est.add_argument("--memory-mb", type=int, dest="memory_mb",
                     help="Processor memory in MB (default: ProcessorMemorySize in template.yaml)")
    est.add_argument("--items", type=int, metavar="N",
                     help="price N units of work instead of the date range's: granules for the SST recipes (grouped "
                          "by dekad, so the items reported are fewer: 365 daily granules are 36 items); parent cells "
                          f"of one granule each for atl06-cell-stats (at most {ORDER6_CELLS} items: beyond, N counts "
                          "granule × parent-cell pairs, more granules per item). Default: from the date range")
    est.add_argument("--max-concurrency", type=int, dest="max_concurrency",
                     help="parallel Processor calls (sets the number of cold starts; default: DefaultMaxConcurrency "
                          "in template.yaml)")
    est.set_defaults(func=cmd_estimate)
