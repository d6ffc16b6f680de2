"""Typed models of everything that crosses an edge: execution input, manifest items, state payloads, summary.

State payloads stay small (the 256 KiB Step Functions limit): lists of granules and results live in S3
and payloads carry only their keys.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
from collections.abc import Iterable
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from granulemap.errors import InvalidInput

MAX_CONCURRENCY_LIMIT = 10_000
"""Step Functions' limit of parallel child executions of one Distributed Map."""


def written_date(value: Any) -> dt.date:
    """A date given as text, YYYY-MM-DD, or as a ``datetime.date``; ValueError, naming the format, for anything else.

    Pydantic alone took a number (20181201, the dates in GHRSST file names) for seconds since 1970, and named no
    format when refusing 2018-12-1."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        date = value
    elif isinstance(value, str) and len(value) == 10 and value[4] == value[7] == "-":
        try:
            date = dt.date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a date: {exc}") from None
    else:
        raise ValueError(f"{value!r} is not a date written YYYY-MM-DD (such as 2018-12-01)")
    if not EARLIEST_DATE <= date <= LATEST_DATE:  # a mistyped year (9999 broke the CMR search's date arithmetic)
        raise ValueError(f"{date} is not between {EARLIEST_DATE} and {LATEST_DATE}: is its year mistyped?")
    return date


EARLIEST_DATE, LATEST_DATE = dt.date(1800, 1, 1), dt.date(2199, 12, 31)
"""The dates an input may give: beyond any NASA Earthdata granule, and far from the ends of Python's calendar."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Grouping = Literal["granule", "dekad"]
"""How a per-granule recipe (``Recipe.per_granule``) groups its granules into items; see ``granulemap.grouping``."""


def as_utc(moment: dt.datetime) -> dt.datetime:
    """``moment`` in UTC; a naive one is taken as UTC (boto3 gives times in the machine's own zone)."""
    return moment.astimezone(dt.UTC) if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def iso_time(text: str) -> dt.datetime:
    """An ISO 8601 time (``Z`` for UTC allowed) as an aware datetime; one written without an offset is UTC. ValueError
    for text that is not one."""
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def utc_day(moment: dt.datetime) -> dt.date:
    """The UTC date of ``moment``: a granule's day (its dekad, the days a range covers), whatever zone it is given in."""
    return as_utc(moment).date()


def period_bounds(start: dt.date, end: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The days ``start``..``end`` as UTC instants [first, after): the first midnight, and the one after the last day
    (which belongs to the next period)."""
    def midnight(day: dt.date) -> dt.datetime:
        return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)

    return midnight(start), midnight(end + dt.timedelta(days=1))


def may_hold_data_in(when: dt.datetime | None, start: dt.date, end: dt.date,
                     span: tuple[dt.timedelta, dt.timedelta] | None = None) -> bool:
    """Whether a granule of time ``when`` belongs to the days ``start``..``end`` (UTC): its day is one of them, or with
    ``span`` (how long before and after ``when`` its data may lie: ``Recipe.data_span``) its data may fall in them."""
    if when is None:
        return False
    if span is None:
        return start <= utc_day(when) <= end
    first, after = period_bounds(start, end)
    when = as_utc(when)
    return when - span[0] < after and when + span[1] >= first


PREVIOUS_MONTH = "previous-month"
"""The monthly schedule's ``period``: the calendar month before the one the run starts in."""


def local_path_of(url: str) -> str | None:
    """The local path of a plain path or file:// URL (a granule's, a source folder's); None for an s3:// URL."""
    if url.startswith("s3://"):
        return None
    return url.removeprefix("file://")


class ExecutionInput(_Strict):
    """What a user (or the monthly schedule) passes to ``start-execution``.

    ``start``/``end`` are inclusive UTC dates. ``period`` replaces them with a calendar month: ``"previous-month"``
    (used by the schedule) is the one before the moment the run starts, ``"YYYY-MM"`` names one. A month given as a
    period must be complete (BuildCatalog refuses one without granules, or, for a daily recipe, missing a day); the
    same dates as start/end are taken as they are.
    """

    recipe: str = Field(min_length=1)
    start: dt.date | None = None
    end: dt.date | None = None
    period: str | None = Field(default=None, description='"previous-month" or a month, "YYYY-MM"; replaces start/end')
    source: str | None = Field(
        default=None, description="local directory, file:// or s3:// prefix of granules; omitted: search NASA CMR"
    )
    collection: str | None = Field(default=None, description="CMR short name; default: the recipe's collection")
    bbox: tuple[float, float, float, float] | None = Field(
        default=None, description="west, south, east, north in degrees (west > east crosses the antimeridian)"
    )
    params: dict[str, Any] = Field(default_factory=dict, description="recipe parameters")
    # strict: a JSON true is not 1 nor 1 %, and "no" is not false (pydantic's lax mode took them)
    max_concurrency: int | None = Field(default=None, ge=1, le=MAX_CONCURRENCY_LIMIT, strict=True)
    tolerated_failure_percentage: float | None = Field(default=None, ge=0, le=100, strict=True)
    recompute: bool = Field(
        default=False, strict=True, description="compute every item again, even those whose result is stored (after a fix of "
        "the software that changes results, say); the products then take the new values",
    )
    group: Grouping | None = Field(
        default=None, description="how a per-granule recipe groups its granules into items (Processor calls): "
        "'dekad' (the granules of one 1st-10th, 11th-20th or 21st-last day of a month) or 'granule' (one each); "
        "default: the recipe's. Results are the same either way",
    )

    @field_validator("start", "end", mode="before")
    @classmethod
    def _a_written_date(cls, value: Any) -> Any:
        return value if value is None else written_date(value)

    @field_validator("period")
    @classmethod
    def _a_month(cls, value: str | None) -> str | None:
        if value is None or value == PREVIOUS_MONTH:
            return value
        try:
            month = dt.datetime.strptime(value, "%Y-%m")
        except (TypeError, ValueError):
            month = None
        if month is None or f"{month.year:04d}-{month.month:02d}" != value:  # strftime writes year 1 as "1"
            raise ValueError(f'{value!r} is not a month: give "{PREVIOUS_MONTH}" or one as YYYY-MM, such as "2024-05"')
        written_date(f"{value}-01")  # its year in the dates an input may give
        return value

    @field_validator("params")
    @classmethod
    def _json_numbers(cls, params: dict[str, Any]) -> dict[str, Any]:
        """A NaN or an infinity is no JSON number: Step Functions' JSON would not carry it (it arrived as null)."""
        def check(value: Any, at: str) -> None:
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"params{at} is {value}, which JSON cannot carry: give a number")
            if isinstance(value, dict):
                for key, inner in value.items():
                    check(inner, f"{at}.{key}")
            elif isinstance(value, (list, tuple)):
                for n, inner in enumerate(value):
                    check(inner, f"{at}[{n}]")

        check(params, "")
        return params

    @field_validator("bbox")
    @classmethod
    def _check_bbox(cls, bbox: tuple[float, float, float, float] | None) -> tuple[float, float, float, float] | None:
        if bbox is None:
            return None
        west, south, east, north = bbox
        if not (-180 <= west <= 180 and -180 <= east <= 180):
            raise ValueError("west and east must be within [-180, 180] degrees")
        if not (-90 <= south <= 90 and -90 <= north <= 90):
            raise ValueError("south and north must be within [-90, 90] degrees")
        if south > north:
            raise ValueError("south must not be greater than north")
        return bbox

    @model_validator(mode="after")
    def _check_dates(self) -> ExecutionInput:
        if self.period is not None:
            if self.start is not None or self.end is not None:
                raise ValueError("give either period or start/end, not both")
            return self
        if self.start is None:
            raise ValueError("start is required (an ISO date such as 2022-01-01), or give period")
        if self.end is None:
            raise ValueError("end is required (an ISO date such as 2022-12-31), or give period")
        if self.end < self.start:
            raise ValueError(f"end ({self.end}) is before start ({self.start})")
        return self

    def date_range(self, now: dt.datetime | None = None) -> tuple[dt.date, dt.date]:
        """The inclusive (start, end) dates of this run, resolving ``period`` against ``now`` (UTC)."""
        if self.period is not None:
            if self.period == PREVIOUS_MONTH:
                today = as_utc(now or dt.datetime.now(dt.UTC)).date()
                year, month = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
            else:
                year, month = (int(part) for part in self.period.split("-"))
            return dt.date(year, month, 1), dt.date(year, month, calendar.monthrange(year, month)[1])
        assert self.start is not None and self.end is not None
        return self.start, self.end

    def resolved(self, now: dt.datetime | None = None) -> ExecutionInput:
        """This input with ``period`` replaced by the dates it means at ``now`` (UTC).

        BuildCatalog resolves the input once, so that everything derived from the dates (the CMR search, the items,
        a recipe's configuration id) agrees even when the run starts just before midnight at the end of a month.
        """
        if self.period is None:
            return self
        start, end = self.date_range(now)
        return self.model_copy(update={"period": None, "start": start, "end": end})


def parse_model[M: BaseModel](model: type[M], data: Any, what: str) -> M:
    """Validate ``data`` into ``model``; any problem becomes one ``InvalidInput`` naming the fields."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
                message += f" (known: {', '.join(model.model_fields) or 'none'})"
            problems.append(f"field '{field}': {message}" if field else message)  # a check of several fields
        raise InvalidInput(f"invalid {what}: " + "; ".join(problems)) from None


Ring = list[tuple[float, float]]
"""A polygon's outer ring: (longitude, latitude) pairs in degrees (WGS84), GeoJSON order, first point repeated last."""


class Granule(_Strict):
    """One file: a local path, file:// URL or s3:// URL, its nominal time when known, and, for recipes that ask for
    it (``Recipe.needs_footprints``), its footprint from CMR.

    The footprint is catalog-time information for ``Recipe.make_items``: BuildCatalog never writes it to the
    manifest, so items stay small however detailed the polygons are.
    """

    url: str
    time: dt.datetime | None = None
    revision: str | None = Field(
        default=None,
        description="what changes when the file is replaced under its name: from CMR, when its data were produced "
        "(UMM-G ProductionDateTime; the record's revision date if it has none); an S3 object's ETag; a local file's "
        "size and modification time; None when not known. It is part of the id of "
        "an item made by granulemap.grouping.item_of, so a granule NASA reprocessed in place is computed again, not "
        "found done",
    )
    footprint: list[Ring] | None = Field(
        default=None,
        description="outer rings of the granule's CMR polygons, (lon, lat) in degrees; None when not asked for or "
        "when CMR has none (holes are left out: covering a little more is harmless)",
    )


class Item(_Strict):
    """One unit of work of the Distributed Map: one Processor call."""

    id: str = Field(pattern=r"^[A-Za-z0-9._=+-]{1,200}$")
    granules: list[Granule]
    extra: dict[str, Any] = Field(default_factory=dict)
    done: bool = False
    """Its result (same recipe configuration) was in S3 when the catalog was built: the Processor reports it
    ``skipped`` without reading anything. BuildCatalog finds these with one listing of the configuration's results,
    instead of one look-up per item in the Processors."""


def days_without_a_granule(granules: Iterable[Granule], start: dt.date, end: dt.date) -> list[dt.date]:
    """The days of ``start``..``end`` (UTC) on which none of ``granules`` falls (those without a time count for
    none): for a recipe with one granule a day, the days a run over the range gets no row for."""
    have = {utc_day(g.time) for g in granules if g.time is not None}
    return [day for day in (start + dt.timedelta(days=n) for n in range((end - start).days + 1)) if day not in have]


class CredentialsRef(_Strict):
    """Where the temporary DAAC S3 credentials are stored: never the secret itself."""

    parameter: str
    daac: str
    expires: dt.datetime


class RunContext(_Strict):
    """What every item of a run shares: passed to each Processor call by the Map's ItemSelector."""

    run_id: str
    recipe: str
    params: dict[str, Any]
    config_id: str
    start: dt.date | None = None
    """The run's first and last day (``period`` resolved); None for single files (``granulemap process``)."""
    end: dt.date | None = None
    daac: str | None = None
    """The DAAC (CMR provider) whose granules the run reads; None for granules of a ``source``."""
    collection: str | None = None
    """The collection the granules are of: the input's, else the recipe's (for a ``source``, what the input says)."""
    bbox: tuple[float, float, float, float] | None = None
    """The input's bbox (west, south, east, north in degrees): what the CMR search was narrowed to, and for a recipe
    whose results it changes (``Recipe.bbox_changes_results``) part of the configuration."""
    credentials: CredentialsRef | None = None
    started: dt.datetime | None = None
    """When the run's execution started (BuildCatalog's time: the state machine's start time): Aggregate counts
    another run's result for an item this run's Map ran only if it was computed since (``aggregation.account_items``).
    None (``granulemap process``): not checked."""


class CatalogRef(_Strict):
    bucket: str
    key: str
    """The manifest: every item of the run (Aggregate accounts for each)."""
    count: int
    map_key: str | None = None
    """What the Distributed Map reads: the items not yet done (a done item starts no child execution)."""
    map_count: int | None = None
    none_found: str | None = None
    """For a run of a ``source`` folder that gave no items: what the folder holds (catalog.why_no_granules)."""
    notes: list[str] = Field(default_factory=list)
    """What BuildCatalog tells a reader of the results (Aggregate puts them in the summary's notes): the files of a
    ``source`` folder that match the recipe's pattern but whose names give no date, which no run reads
    (catalog.undated_note), and the recipe's ``catalog_notes`` and ``product_notes``."""

    @model_validator(mode="before")
    @classmethod
    def _undated_of_an_earlier_version(cls, data: Any) -> Any:
        """A run whose BuildCatalog ran before a deploy (an ATL06 backfill takes hours) reaches the new Aggregate
        with the field this one replaced, ``undated`` (a note or null)."""
        if isinstance(data, dict) and "undated" in data:
            data = dict(data)
            undated = data.pop("undated")
            if undated:
                data["notes"] = [undated, *data.get("notes", [])]
        return data

    @property
    def found_done(self) -> int:
        """Items BuildCatalog found done: in the manifest, not in the Map's list (which the Map runs)."""
        return self.count - self.map_count if self.map_count is not None else 0


def exceeds_tolerance(failed: int, total: int, tolerance: float) -> bool:
    """Whether ``failed`` of ``total`` is more than ``tolerance`` percent: the rule a run is judged by (Aggregate), and
    which the Distributed Map's own tolerance is made to follow (catalog)."""
    return bool(total) and 100.0 * failed / total > tolerance


class MapConfig(_Strict):
    max_concurrency: int
    tolerated_failure_percentage: float
    """The run's tolerance, which Aggregate enforces: of items, or of granules for a per-granule recipe."""
    item_tolerated_failure_percentage: int = Field(ge=0, le=100)
    """What the Distributed Map itself tolerates (it counts failed items, of those it runs: the items not yet done), a
    whole number (Step Functions: ToleratedFailurePercentagePath "must resolve to a positive integer between 0 and
    100"): for a recipe whose items are its unit, the least that lets as many of them fail as the run tolerates of
    all its items (catalog); 100 for a per-granule recipe, whose items differ in size (a partial dekad, a lone
    granule), so that a few failed granules never fail the Map before Aggregate has counted granules."""
    error: dict[str, Any] | None = Field(default=None, exclude=True)
    """Set by the Distributed Map's Catch (ResultPath ``$.map.error``) when the Map itself failed: its Error and
    Cause, which Aggregate puts in the summary's message (read from the state, never written: BuildCatalog's output
    has no such field)."""


class CatalogOutput(_Strict):
    """BuildCatalog's result: small, whatever the number of items."""

    run: RunContext
    catalog: CatalogRef
    map: MapConfig


class GranuleFailure(_Strict):
    """One granule of a per-granule recipe's item that failed alone (``processing.fails_alone``), stored with the
    item's result: the other granules of the item are kept."""

    granule: str
    error: str
    cause: str
    where: str | None = None
    """``file:LINE in FUNCTION`` where it failed, in the recipe's own code when it was there (errors.where_failed)."""
    trace: str | None = Field(default=None, exclude=True)
    """Its traceback, for the Processor's ``granule failed`` log line only: never stored nor returned."""


class ProcessorEvent(_Strict):
    item: Item
    run: RunContext


class ProcessorResult(_Strict):
    item: str
    status: Literal["succeeded", "skipped"]
    result_key: str
    granule_failures: list[GranuleFailure] = Field(default_factory=list)
    """Granules of a per-granule recipe's item that failed alone (the result then is at the partial key)."""


class AggregatorEvent(_Strict):
    run: RunContext
    catalog: CatalogRef
    map: MapConfig


FIRST_FAILURES = "; first failures: "
"""Where the message of a run that failed more than its tolerance starts listing its first failures (Aggregate's
verdict); a listing that shows every failure below the message leaves that part out."""


class Failure(_Strict):
    item: str
    error: str
    cause: str
    granule: str | None = None
    """Of a per-granule recipe: the one granule that failed, when the rest of its item succeeded, or the item's only
    granule; None: the item (every granule of it, or an item of another recipe)."""
    where: str | None = None
    """As ``GranuleFailure.where``."""

    def described(self) -> str:
        """As a person reads it: what failed, its error, and where."""
        at = f" (at {self.where})" if self.where else ""
        cause = self.cause.removeprefix(f"{self.granule}: ") if self.granule else self.cause  # its name once
        return f"{self.granule or self.item}: {self.error}: {cause}{at}"


class ItemCounts(_Strict):
    total: int
    succeeded: int
    failed: int
    skipped: int


Counts = TypeVar("Counts")


def counted(items: Counts, granules: Counts | None) -> tuple[Counts, str]:
    """What the failure tolerance counts, and in what unit: granules for a per-granule recipe (whose items group
    granules, and whose granules fail alone), else items. The one rule, for ItemCounts and for a summary's dicts."""
    return (granules, "granules") if granules is not None else (items, "items")


class Summary(_Strict):
    """summary.json: what a run did. Written by Aggregate to S3 and copied to ``--out`` locally."""

    status: Literal["SUCCEEDED", "FAILED"]
    run_id: str
    recipe: str
    params: dict[str, Any]
    start: dt.date | None = None
    """The run's first and last day (a period resolved: which month a scheduled run was)."""
    end: dt.date | None = None
    items: ItemCounts
    granules: ItemCounts | None = None
    """Per-granule recipes: the same counts in granules (the unit of their results and of the failure tolerance);
    None for recipes whose items are not single granules' results (ATL06 cells)."""
    failures: list[Failure]
    outputs: list[str]
    message: str = ""
    notes: list[str] = Field(default_factory=list)
    """What the recipe says a reader of the results should know (``Recipe.notes``); also at the message's end."""
