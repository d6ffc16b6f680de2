"""The recipe interface: the science of a run, and nothing about AWS.

A recipe says what to search for (``collection``, ``file_pattern``, ``granule_time``), how to split the granules
into items (``make_items``), how to reduce one item (``process``), and how to combine the per-item results into
the products (``combine``). The state machine, the catalog, retries, skipping and failure accounting are the
pipeline's job. A recipe is one object; register it under the ``granulemap.recipes`` entry point group.
"""

from __future__ import annotations

import abc
import datetime as dt
import hashlib
import json
import re
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from granulemap.errors import InvalidInput
from granulemap.grouping import group_granules
from granulemap.models import Granule, Grouping, Item, may_hold_data_in, parse_model

if TYPE_CHECKING:
    from granulemap.granule_access import GranuleAccess
    from granulemap.models import ExecutionInput, RunContext
    from granulemap.storage import Bucket


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


_SLUG = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,63}")
"""A configuration id's readable prefix (``Recipe.slug``): one S3 key segment, not "." nor "..", nor hidden."""


class Recipe(abc.ABC):
    """Base class of every recipe. Subclasses set the class variables and implement the abstract methods."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    """One line, shown by ``granulemap recipes`` (optional: without it the recipe is listed as having none)."""
    collection: ClassVar[str | None] = None
    """Default CMR collection short name (the execution input's ``collection`` overrides it)."""
    file_pattern: ClassVar[str] = "*"
    """Glob of granule file names, for directory and S3-prefix sources."""
    Params: ClassVar[type[BaseModel]] = NoParams
    """Model of the recipe's parameters (the execution input's ``params``)."""
    per_granule: ClassVar[bool] = False
    """True when ``process`` reduces one granule to one result of its own (a row of a time series). The granules
    are then grouped into items (``default_grouping``, or the execution input's ``group``), the Processor calls
    ``process`` once per granule of its item with a one-granule item, and a granule whose error
    ``granulemap.processing.fails_alone`` (a permanent one, or any of the recipe's own code) fails alone: the item's
    other results are kept and the granule is listed among the run's failures."""
    default_grouping: ClassVar[Grouping] = "dekad"
    """Of a per-granule recipe: see ``granulemap.grouping``."""
    needs_footprints: ClassVar[bool] = False
    """True when ``make_items`` needs each CMR granule's polygons (``Granule.footprint``). The CMR search then also
    reads them, which can cost a second query; recipes that split by granule leave it False."""

    # --- parameters -------------------------------------------------------------------------------------
    def parse_params(self, raw: dict[str, Any]) -> BaseModel:
        return parse_model(self.Params, raw, f"params of recipe {self.name}")

    def collection_of(self, execution: ExecutionInput) -> str | None:
        """The collection a run of ``execution`` reads: the input's, else the recipe's."""
        return execution.collection or self.collection

    def config_id(self, params: BaseModel, execution: ExecutionInput | None = None) -> str:
        """Names one configuration of the recipe: results of equal configurations are interchangeable.

        BuildCatalog passes the execution input with its ``period`` already resolved into ``start``/``end``
        (``ExecutionInput.resolved``), the same one ``make_items`` gets.
        """
        identity: dict[str, object] = {"params": params.model_dump(mode="json")}
        if execution is not None and execution.bbox is not None and self.bbox_changes_results:
            identity["bbox"] = list(execution.bbox)
        if execution is not None and execution.collection not in (None, self.collection):
            # Another product (MUR at 0.01° for MUR25): a series of its own, not rows beside the default's in one
            # CSV (rows are keyed by granule name, so both would stay, a day twice). The default collection is left
            # out of the hash, so that the series deployed before this rule keep their ids.
            identity["collection"] = execution.collection
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
        slug = self.slug(params)
        if not isinstance(slug, str) or not _SLUG.fullmatch(slug):
            raise InvalidInput(f"recipe {self.name}: slug() gave {slug!r}, which names S3 keys of the run: it must be "
                               "1-64 letters, digits, '_', '-' or '.', not starting with '.' (a parameter with a '/' "
                               "or '..' in it would write outside the recipe's folders)")
        return f"{slug}-{digest}"

    bbox_changes_results: ClassVar[bool] = False
    """True when the execution input's bbox changes what ``process`` computes (not only which granules)."""
    same_area_every_granule: ClassVar[bool] = False
    """True when every granule of a collection the recipe reads covers the same area (a gridded L4 product: one grid
    per day, global or regional): a bbox then finds all of them or none, and BuildCatalog refuses one."""

    runs_on_schedule: ClassVar[bool] = True
    """Whether the monthly schedule's input (``"period": "previous-month"``, on the 5th) may run it: False for a
    collection published weeks or months after its data are taken (ATL06), whose previous month is not there yet on
    the 5th; the schedule does not run a month again, so such a month would stay incomplete."""
    one_granule_a_day: ClassVar[bool] = False
    """True when the recipe's collection has one granule for every day (a daily L4 analysis): a scheduled run
    (``period``) whose month lacks a day's granule then fails instead of summarizing the month without it, since the
    schedule does not run a month again."""

    one_period_per_run: ClassVar[bool] = False
    """True when a run's whole date range becomes one entry of the product (atl06-cell-stats: one time step of its
    store), so that monthly values take one run per month; ``granulemap estimate`` says so for longer ranges."""

    data_span: ClassVar[tuple[dt.timedelta, dt.timedelta] | None] = None
    """None: a granule belongs to the UTC day of its time (``granule_time``; in a CMR search without a name time, the
    middle of its CMR time range). Else how long before and after its name's time a granule's data may lie (ATL06:
    a stretch of one orbit, which may cross midnight): the recipe is given every granule whose data may fall in the
    run's range (from CMR, those whose time range overlaps it; from a folder, by ``may_hold_data_in``), and keeps
    only the data of the range itself."""

    def may_hold_data_in(self, when: dt.datetime | None, start: dt.date, end: dt.date) -> bool:
        """Whether a granule of time ``when`` (its file name's) belongs to, or with ``data_span`` may hold data of,
        the days ``start``..``end`` (UTC)."""
        return may_hold_data_in(when, start, end, self.data_span)

    def slug(self, params: BaseModel) -> str:
        """A readable prefix of the configuration id: 1-64 letters, digits, '_', '-' or '.', not starting with '.'
        (one segment of the run's S3 keys; ``config_id`` refuses another)."""
        return "default"

    # --- catalog ----------------------------------------------------------------------------------------
    def granule_time(self, name: str) -> dt.datetime | None:
        """The nominal UTC time of a granule from its file name, or None if the name is not one of ours."""
        return None

    def make_items(
        self, granules: list[Granule], params: BaseModel, execution: ExecutionInput
    ) -> list[Item]:
        """Split the granules into items. Default: a per-granule recipe's granules grouped by the execution's
        ``group`` (else ``default_grouping``); any other recipe's one item per granule, named after its file.

        ``execution`` has its ``period`` resolved into ``start``/``end``. Granules from CMR carry their footprints
        when the recipe sets ``needs_footprints``; BuildCatalog leaves footprints out of the manifest.
        """
        grouping = (execution.group or self.default_grouping) if self.per_granule else "granule"
        return group_granules(granules, grouping)

    def catalog_notes(self, granules: list[Granule], params: BaseModel) -> list[str]:
        """What a reader of the run's results should be told about the granules found (some left out by
        ``make_items``, say): each note goes into the summary (its ``notes`` and the message's end). No notes by
        default."""
        return []

    def prepare(self, items: list[Item], run: RunContext, params: BaseModel, bucket: Bucket) -> list[Item] | None:
        """Runs once in BuildCatalog, before the manifest is written (e.g. to create or grow an output store).

        May return the items to write to the manifest in place of ``items`` (e.g. with ids that name the store they
        write to); None keeps them. Default: nothing.
        """
        return None

    def product_notes(self, run: RunContext, params: BaseModel, bucket: Bucket) -> list[str]:
        """What a reader of the run's results should be told about the product it adds to, as ``prepare`` left it
        (atl06-cell-stats: periods of its store that overlap the run's): each note goes into the summary, as
        ``catalog_notes``' do. Called in BuildCatalog after ``prepare``, when the run has items. None by default."""
        return []

    # --- science ----------------------------------------------------------------------------------------
    @abc.abstractmethod
    def process(self, item: Item, params: BaseModel, access: GranuleAccess, run: RunContext) -> dict[str, Any]:
        """Reduce one item to a JSON-serialisable result (small: it is stored as one S3 object). A per-granule
        recipe's ``item`` holds one granule (the Processor calls it once for each granule of its item)."""

    @abc.abstractmethod
    def combine(
        self, results: list[dict[str, Any]], run: RunContext, params: BaseModel, bucket: Bucket
    ) -> list[str]:
        """Combine this run's results (one per item; a per-granule recipe's, one per granule; each result that is a
        dict with its item's ``computed_at`` added unless it has one) into the products in ``bucket``; return the
        keys written (an object's, or a prefix such as a Zarr store's): Aggregate fails the run when one is not in
        the bucket."""

    def notes(self, results: list[dict[str, Any]], params: BaseModel) -> list[str]:
        """What a reader of this run's results should be told that no failure says (results that hold no value, say);
        each note is added to the summary's message. None by default."""
        return []


def time_from_stamp(pattern: re.Pattern[str], name: str) -> dt.datetime | None:
    """The UTC time in a file name's YYYYMMDDHHMMSS stamp (``pattern``'s first group), or None if there is none.

    ``name`` may be a path or URL: only its last component is matched.
    """
    match = pattern.match(name.rsplit("/", 1)[-1])
    if not match:
        return None
    try:
        return dt.datetime.strptime(match.group(1), "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
