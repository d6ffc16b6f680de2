"""Recipe ``atl06-cell-stats``: ICESat-2 ATL06 land-ice height statistics per HEALPix cell, as one Zarr v3 store.

Items are parent cells (HEALPix nested, ``parent_order``, default 6), each with the granules that touch it; a granule
found in several releases (CMR lists every ATL06 version under one short name) is read in its newest only. One
Processor call reads its granules' land-ice segments inside its parent cell, keeps those with
``atl06_quality_summary == 0`` and a usable ``h_li``/``h_li_sigma`` (no fill value, finite, sigma > 0) measured
within the run's period (a granule crossing its first or last midnight: ``data_span``), and computes for every
child cell (``child_order``, default 12): count, h_min, h_max, h_mean (weighted by 1/h_li_sigma²), h_sigma
(1/√Σ(1/σ²)), h_variance (population), h_q25, h_q50, h_q75 — heights in metres above the WGS84 ellipsoid. Cell
ids are mortie's default (authalic latitude on WGS84), which xdggs calls ``ellipsoid: WGS84``.

Products (outputs/atl06-cell-stats/<config id>/): ``atl06-cell-stats.zarr``, one cumulative store per configuration
(orders and bbox) with dimensions (time, cells): every run adds its period, and the parent cells it touched that the
store lacks (recipes/atl06/store.py), so the monthly runs build one time series per cell. Read it with
``xdggs.decode(xr.open_zarr(store))``. Each run also draws its period's h_mean map,
``atl06-cell-stats-h_mean-<first day>-<last day>.png``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

import granulemap
from granulemap import layout
from granulemap.errors import (CatalogError, CredentialsExpired, GranuleUnreadable, InvalidInput, PermanentItemError,
                               VariableMissing, first_of)
from granulemap.granule_access import GranuleAccess
from granulemap.grouping import item_id_for
from granulemap.models import ExecutionInput, Granule, Item, RunContext
from granulemap.recipes.atl06.cells import MAX_ORDER
from granulemap.observability import logger
from granulemap.recipes.atl06.footprints import (
    DATA_SPAN,
    granule_time,
    newest_releases,
    parents_of_file,
    parents_of_footprint,
    time_window,
)
from granulemap.recipes.atl06.granule import Atl06Granule, Segments, segments_in_parent
from granulemap.recipes.atl06.plot import plot_cell_batches
from granulemap.recipes.atl06.stats import cell_statistics
from granulemap.recipes.atl06.store import (
    INCOMPLETE,
    STORE_NAME,
    OutputStoreMismatch,
    Period,
    StoreLayout,
    finalize,
    grow,
    mark_unfinished,
    read_layout,
    read_period_batches,
    storage_errors,
    write_parent,
)
from granulemap.recipes.base import Recipe
from granulemap.settings import load_settings
from granulemap.storage import LOCK_SUFFIX, Bucket, lease_lock, zarr_store



def png_name(period: Period) -> str:
    """The h_mean map of one period."""
    from granulemap.plotting import period_png_name

    return period_png_name(Path(STORE_NAME).stem, "h_mean", period[0], period[1])


MAX_LEVELS = 10
"""At most this many orders between parent and child: one parent's block (4**levels cells) is one Zarr chunk."""
_CATALOG_READERS = 8
_GRANULE_READERS = 4


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    parent_order: int = Field(default=6, ge=0, le=MAX_ORDER, description="HEALPix order of the items (parent cells)")
    child_order: int = Field(default=12, ge=0, le=MAX_ORDER, description="HEALPix order of the output cells")

    @model_validator(mode="after")
    def _check_orders(self) -> Params:
        if self.child_order <= self.parent_order:
            raise ValueError(
                f"child_order ({self.child_order}) must be greater than parent_order ({self.parent_order})")
        if self.child_order - self.parent_order > MAX_LEVELS:
            raise ValueError(f"child_order may be at most {MAX_LEVELS} orders finer than parent_order (one parent's "
                             f"4**(child-parent) cells are one Zarr chunk); got child_order {self.child_order} with "
                             f"parent_order {self.parent_order}: {self.child_order - self.parent_order} orders")
        return self


class CellItem(BaseModel):
    """``Item.extra`` of a parent-cell item."""

    model_config = ConfigDict(extra="forbid")
    parent_cell: int = Field(ge=0, description="nested id at parent_order")
    store_id: str | None = Field(default=None, description="the output store the item was catalogued for "
                                 "(set by prepare, which makes or grows the store)")


class UnreadableItem(BaseModel):
    """``Item.extra`` of a granule whose positions could not be read at catalog time: it fails as its own item."""

    model_config = ConfigDict(extra="forbid")
    unreadable: str
    """Why, as the reader said (it names the file)."""
    error: str = GranuleUnreadable.__name__
    """The reader's error (GranuleUnreadable, VariableMissing): the item fails with it."""


def _cell_item(parent_order: int, parent: int, granules: list[Granule], period: Period,
               store_id: str | None) -> Item:
    """The item of one parent cell and period. Its id is readable and unique per (store, period, parent, granules):
    a new granule, one replaced under its name (``Granule.revision``), or a store made again, is never skipped as
    already done. It starts with the period, so that
    BuildCatalog finds a run's finished items by listing that period's results only (catalog.mark_done), not the
    results of every month the store has. An item with a granule that may cross one of the period's midnights
    (``time_window``) has another id than granulemap before 2026-12 gave it, when such a granule's segments all went
    to the period of its name: a run of a period computed then computes those items again."""
    edges = ["segments by delta_time"] if any(time_window(g.url, period) is not None for g in granules) else []
    text = "\n".join([store_id or "", *sorted(g.url + (f"\t{g.revision}" if g.revision else "") for g in granules),
                      *edges])
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return Item(id=f"{_cell_items_start(parent_order, period)}{parent}-{digest}", granules=granules,
                extra=CellItem(parent_cell=parent, store_id=store_id).model_dump())


def _cell_items_start(parent_order: int, period: Period) -> str:
    """What the ids of a period's parent-cell items start with; the parent cell's number follows, then ``-``."""
    return f"{period[0]:%Y%m%d}-{period[1]:%Y%m%d}-p{parent_order}-"


def _period(run: RunContext) -> Period:
    if run.start is None or run.end is None:
        raise InvalidInput("atl06-cell-stats needs the run's dates (the period the store's time entry names): "
                           "its items come from its own catalog (granulemap run), not from single files")
    return run.start, run.end


def read_parent_segments(
    item: Item, cell: CellItem, params: Params, access: GranuleAccess, period: Period
) -> tuple[Segments, list[str]]:
    """The good segments of the item's granules in its parent cell measured in the period, and the granules that
    contributed any."""

    def one(granule: Granule) -> Segments:
        path = access.local_path(granule.url)
        credentials = access.s3_credentials() if path is None else None
        try:
            with Atl06Granule(granule.url, local_path=path, credentials=credentials) as opened:
                return segments_in_parent(opened, cell.parent_cell, params.parent_order, params.child_order,
                                          time_window(granule.url, period))
        except CredentialsExpired:
            access.credentials_rejected(credentials)  # so that the retry does not reuse them
            raise

    with ThreadPoolExecutor(min(_GRANULE_READERS, max(len(item.granules), 1))) as pool:
        parts = list(pool.map(one, item.granules))
    used = [g.url for g, part in zip(item.granules, parts, strict=True) if part.cells.size]
    return Segments.concatenate(parts), used


class Atl06CellStats(Recipe):
    name = "atl06-cell-stats"
    description = "ICESat-2 ATL06 land-ice height statistics (m, WGS84) per HEALPix cell → xdggs Zarr store"
    collection = "ATL06"
    file_pattern = "ATL06_*.h5"
    Params = Params
    bbox_changes_results = True
    """The bbox decides which granules the CMR search finds, and so which parent cells the store holds (every cell
    those granules touch): different bboxes get different stores."""
    needs_footprints = True
    """Items are the parent cells each granule's CMR polygons touch."""
    one_period_per_run = True
    """A run's range is one time step of the store."""
    runs_on_schedule = False
    """NSIDC publishes ATL06 weeks to months after the data are taken: each month is run by hand once it is out."""

    def slug(self, params: BaseModel) -> str:
        assert isinstance(params, Params)
        return f"p{params.parent_order}-c{params.child_order}"

    data_span = DATA_SPAN
    """A granule may cross midnight: each period gets the segments measured in it (``time_window``)."""

    def granule_time(self, name: str) -> dt.datetime | None:
        return granule_time(name)

    # --- catalog ----------------------------------------------------------------------------------------
    def catalog_notes(self, granules: list[Granule], params: BaseModel) -> list[str]:
        older = newest_releases(granules)[1]
        if not older:
            return []
        return [f"{len(older)} granule file(s) were left out as older releases, or other copies, of granules also "
                f"found in a newer one (each granule is read once, in its newest release): {first_of(older, 3)}"]

    def make_items(self, granules: list[Granule], params: BaseModel, execution: ExecutionInput) -> list[Item]:
        """One item per parent cell touched by any granule (CMR polygons, or the files' own positions), each granule
        in its newest release only."""
        assert isinstance(params, Params)
        granules, _ = newest_releases(granules)  # catalog_notes names the others
        unreadable: dict[str, UnreadableItem] = {}
        if execution.source is None:
            touched = self._parents_from_cmr(granules, params.parent_order)
        else:
            touched, unreadable = self._parents_from_files(granules, params.parent_order, execution.date_range())
        by_parent: dict[int, list[Granule]] = defaultdict(list)
        for granule in granules:
            for parent in touched.get(granule.url, ()):
                by_parent[int(parent)].append(  # no footprint: small
                    Granule(url=granule.url, time=granule.time, revision=granule.revision))
        period = execution.date_range()
        items = [_cell_item(params.parent_order, parent, members, period, store_id=None)
                 for parent, members in sorted(by_parent.items())]
        # The period first, as in every item id of this recipe (catalog.mark_done lists by the ids' common start).
        items += [Item(id=f"{period[0]:%Y%m%d}-{period[1]:%Y%m%d}-unreadable-{item_id_for(g.url)}", granules=[g],
                       extra=unreadable[g.url].model_dump())
                  for g in granules if g.url in unreadable]
        return items

    @staticmethod
    def _parents_from_cmr(granules: list[Granule], order: int) -> dict[str, np.ndarray]:
        """Parent cells of each granule from its CMR polygons (``Granule.footprint``, filled by the CMR search
        because this recipe ``needs_footprints``)."""
        missing = [g.url for g in granules if not g.footprint]
        if missing:
            raise CatalogError(
                f"{len(missing)} of {len(granules)} granules from CMR have no polygon footprint (first: {missing[0]}); "
                "atl06-cell-stats needs each granule's polygons to find its cells. Give a 'source' (directory or "
                "s3:// prefix of the files) instead: their own positions are used then"
            )
        return {g.url: parents_of_footprint(g.footprint or [], order) for g in granules}

    @staticmethod
    def _parents_from_files(granules: list[Granule], order: int, period: Period,
                            ) -> tuple[dict[str, np.ndarray], dict[str, UnreadableItem]]:
        """Parent cells of each file from its own positions measured in the period (a file that may cross its first
        or last midnight: ``time_window``); files that cannot be read, with the reason (they become items of their
        own that fail, so the run accounts for them like any failed item)."""
        def one(granule: Granule) -> tuple[str, np.ndarray, UnreadableItem | None]:
            try:
                return granule.url, parents_of_file(granule.url, order, times=time_window(granule.url, period)), None
            except PermanentItemError as exc:
                return granule.url, np.empty(0, np.int64), UnreadableItem(unreadable=str(exc),
                                                                          error=type(exc).__name__)

        with ThreadPoolExecutor(_CATALOG_READERS) as pool:
            found = list(pool.map(one, granules))
        return ({url: parents for url, parents, _ in found},
                {url: cause for url, _, cause in found if cause is not None})

    def prepare(self, items: list[Item], run: RunContext, params: BaseModel, bucket: Bucket) -> list[Item] | None:
        """Make the store, or grow it by this run's period and the parent cells it lacks; return the items with the
        store's id (in their ids too). Nothing is written when the run has no parent cells."""
        assert isinstance(params, Params)
        cells = {i.id: CellItem.model_validate(i.extra) for i in items if "parent_cell" in i.extra}
        if not cells:
            return None
        period = _period(run)
        store_key = layout.output_key(self.name, run.config_id, STORE_NAME)
        store = zarr_store(bucket.name, store_key)
        with _store_lock(bucket, store_key, run, "growing"), \
                storage_errors(f"making or growing s3://{bucket.name}/{store_key}"):
            store_layout = grow(store, params.parent_order, params.child_order,
                                [c.parent_cell for c in cells.values()], period, {
                                    "title": "ICESat-2 ATL06 land-ice height statistics per HEALPix cell",
                                    "recipe": self.name, "config_id": run.config_id,
                                    "height_reference": "h_li: metres above the WGS84 ellipsoid",
                                })
            mark_unfinished(store, period, run.run_id)  # until this run's Aggregate says what it wrote
        prepared = [_cell_item(params.parent_order, cells[i.id].parent_cell, i.granules, period, store_layout.store_id)
                    if i.id in cells else i for i in items]
        every_granule_read = not any("unreadable" in i.extra for i in items)  # else a parent may be hidden by an error
        # Results first, blocks second: a clear that fails half way is done again by the retry, which finds only the
        # blocks still holding data; their results are gone by then whatever the clear did.
        _forget_superseded_results(bucket, run, params.parent_order, period, prepared, every_granule_read)
        if every_granule_read:
            self._clear_parents_gone(bucket, store_key, store_layout, period, {c.parent_cell for c in cells.values()})
        return prepared

    def product_notes(self, run: RunContext, params: BaseModel, bucket: Bucket) -> list[str]:
        """The store's periods that share days with the run's, other than the run's own: a segment of a shared day is
        in both time steps, and a sum over time counts it twice."""
        start, end = _period(run)
        store_layout = read_layout(zarr_store(bucket.name, layout.output_key(self.name, run.config_id, STORE_NAME),
                                            read_only=True))
        overlapping = [(a, b) for a, b in (store_layout.periods if store_layout else ())
                       if a <= end and start <= b and (a, b) != (start, end)]
        if not overlapping:
            return []
        return [f"the store's period(s) {', '.join(f'{a}..{b}' for a, b in overlapping)} share days with this run's, "
                f"{start}..{end}: the segments of those days are in both time steps (a sum over time counts them "
                "twice; tell periods apart by time_bounds). Keep a store to whole months, one run each"]

    @staticmethod
    def _clear_parents_gone(bucket: Bucket, store_key: str, store_layout: StoreLayout, period: Period,
                            touched: set[int]) -> None:
        """Blank this period's block of every parent cell that holds data for it but that no granule of this run
        touches (a granule withdrawn or replaced by a release with another footprint, a file removed from the
        source): a run of the period leaves it as its granules say, not with a former granule's values. A block's
        data is its ``count`` chunk (an all-fill block has none), listed in one request."""
        prefix = f"{store_key}/count/c/{store_layout.time_index(period)}/"
        stale = [parent for parent in (store_layout.parents[int(key[len(prefix):])] for key in bucket.keys(prefix))
                 if parent not in touched]
        if stale:
            store = zarr_store(bucket.name, store_key)
            nothing = cell_statistics(np.empty(0, np.int64), np.empty(0), np.empty(0))
            with storage_errors(f"clearing parent cells no granule touches in s3://{bucket.name}/{store_key}"):
                for parent in stale:
                    write_parent(store, store_layout.store_id, parent, period, nothing)
            logger.info("parent cells no granule of the period touches any more, cleared",
                        extra={"period": [str(d) for d in period], "parents": stale[:20]})

    # --- science ----------------------------------------------------------------------------------------
    def process(self, item: Item, params: BaseModel, access: GranuleAccess, run: RunContext) -> dict[str, Any]:
        """Statistics of one parent cell's child cells, written to its own region of the run's store."""
        assert isinstance(params, Params)
        if "unreadable" in item.extra:  # the catalog could not read its positions: the reader's error, as it said it
            failed = UnreadableItem.model_validate(item.extra)
            error = VariableMissing if failed.error == VariableMissing.__name__ else GranuleUnreadable
            raise error(failed.unreadable)
        if "parent_cell" not in item.extra:
            raise InvalidInput(f"item {item.id} is not a parent cell: atl06-cell-stats items come from its own "
                               "catalog (granulemap run), not from single files")
        cell = CellItem.model_validate(item.extra)
        if cell.store_id is None:
            raise InvalidInput(f"item {item.id} names no output store: items come from BuildCatalog's manifest")
        period = _period(run)
        segments, used = read_parent_segments(item, cell, params, access, period)
        stats = cell_statistics(segments.cells, segments.h_li, segments.h_li_sigma)
        bucket, store_key = load_settings().bucket, layout.output_key(self.name, run.config_id, STORE_NAME)
        with storage_errors(f"writing parent cell {cell.parent_cell} to s3://{bucket}/{store_key}"):
            written = write_parent(zarr_store(bucket, store_key), cell.store_id, cell.parent_cell, period, stats)
        return {"parent_cell": cell.parent_cell, "parent_order": params.parent_order, "store_id": cell.store_id,
                "cells_with_data": written, "segments": int(segments.cells.size), "granules": used}

    def combine(self, results: list[dict[str, Any]], run: RunContext, params: BaseModel, bucket: Bucket) -> list[str]:
        """Check that every result's region is in the store, record the run in its attributes, consolidate, and draw
        this period's h_mean; return the keys written."""
        assert isinstance(params, Params)
        period = _period(run)
        store_key = layout.output_key(self.name, run.config_id, STORE_NAME)
        png_key = layout.output_key(self.name, run.config_id, png_name(period))
        granules = {url for result in results for url in result.get("granules", [])}
        store = zarr_store(bucket.name, store_key)
        with storage_errors(f"finishing s3://{bucket.name}/{store_key}"):
            store_layout = read_layout(store)
            held = set() if store_layout is None else set(store_layout.parents)
            lost = [r["parent_cell"] for r in results
                    if store_layout is None or r.get("store_id") != store_layout.store_id
                    or r["parent_cell"] not in held]
            if store_layout is None or lost or period not in store_layout.periods:
                raise OutputStoreMismatch(
                    f"the output store s3://{bucket.name}/{store_key} no longer holds this run's regions (parent "
                    f"cells {lost[:5]} of {len(results)}, period {period[0]}..{period[1]}): it was moved, or "
                    "another execution of the same configuration made it again; start this execution again")
            created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            attrs = {
                # CF-style discovery attributes, so the store can be cited and understood on its own.
                "Conventions": "CF-1.10",
                "title": f"ICESat-2 ATL06 land-ice height statistics per HEALPix order-{params.child_order} cell",
                "source": "ICESat-2 ATL06 land_ice_segments: h_li and h_li_sigma of the segments with "
                          "atl06_quality_summary == 0, h_li and h_li_sigma finite and not the fill value, "
                          "h_li_sigma > 0, measured (delta_time) within the period",
                "provenance": "each run's input granules, parameters and software versions: "
                              + layout.provenance_key(self.name, run.config_id, "<run id>")
                              + " (history names the run of each period)",
                "granulemap_version": granulemap.__version__,
                "date_modified": created,
            }
            if run.bbox is not None:  # part of the configuration (bbox_changes_results): the store is this bbox's
                attrs["bbox"] = list(run.bbox)
                attrs["bbox_comment"] = ("west, south, east, north in degrees: the CMR search for the granules was "
                                         "narrowed to it; every parent cell those granules touch is here, with their "
                                         "segments only: a cell inside the box holds every track found there, one "
                                         "outside it or across its edge only the tracks that also cross the box")
            failed_parents, unreadable = _not_written(bucket, run, results)
            not_written = (f" ({len(failed_parents)} failed, {len(unreadable)} unreadable granules: see "
                           f"{INCOMPLETE})" if failed_parents or unreadable else "")
            history = (f"{created} granulemap {granulemap.__version__} recipe {self.name} run {run.run_id}: period "
                       f"{period[0]}..{period[1]}, {len(results)} parent cells of order {params.parent_order}"
                       f"{not_written}, {len(granules)} granules")
            with _store_lock(bucket, store_key, run, "finishing"):  # its attributes are rewritten whole, as in growth
                finalize(store, attrs, history, period, run.run_id, failed_parents, unreadable)
            with_data = [r["parent_cell"] for r in results if r.get("cells_with_data")]
            # a batch of parents at a time: a global month has tens of millions of cells with data
            png = plot_cell_batches(read_period_batches(store, "h_mean", period, with_data), params.child_order,
                                    label="h_mean (m above the WGS84 ellipsoid)",
                                    title=lambda drawn: f"ATL06 weighted mean height per HEALPix order-"
                                                        f"{params.child_order} cell, {period[0]}..{period[1]} ({drawn} "
                                                        f"cells, {len(granules)} granule"
                                                        f"{'s' if len(granules) != 1 else ''})")
        bucket.put_bytes(png_key, png, "image/png")
        return [store_key, png_key]


recipe = Atl06CellStats()


def _forget_superseded_results(bucket: Bucket, run: RunContext, parent_order: int, period: Period,
                               items: list[Item], untouched_too: bool) -> None:
    """Delete the stored results of this period's blocks that this run rewrites under other item ids (other granules:
    one withdrawn, a file removed from the folder), and with ``untouched_too`` those of the blocks no granule of this
    run touches (``_clear_parents_gone`` blanks them). A stored result says its item's values are in the block;
    left, a later run over those same granules again (the file put back) would skip that item as done and keep what
    the block holds now. Before the catalog marks items done: this run's own items are kept."""
    mine = {int(i.extra["parent_cell"]): layout.result_key(run.recipe, run.config_id, i.id)
            for i in items if "parent_cell" in i.extra}
    prefix = layout.result_prefix(run.recipe, run.config_id) + _cell_items_start(parent_order, period)
    superseded = []
    for key in bucket.keys(prefix):
        parent = key[len(prefix):].split("-", 1)[0]
        if parent.isdigit() and ((int(parent) in mine and key != mine[int(parent)])
                                 or (untouched_too and int(parent) not in mine)):
            superseded.append(key)
    if superseded:
        bucket.delete_many(superseded)
        logger.info("results of blocks this run rewrites or clears, under other granules, forgotten",
                    extra={"period": [str(d) for d in period], "results": len(superseded)})


def _not_written(bucket: Bucket, run: RunContext, results: list[dict[str, Any]]) -> tuple[list[int], list[str]]:
    """The run's parent cells without a result (their items failed) and its granules that could not be read at
    catalog time (the cells they would touch are unknown), from the run's manifest."""
    done = {int(r["parent_cell"]) for r in results}
    failed: list[int] = []
    unreadable: list[str] = []
    for raw in bucket.get_json(layout.manifest_key(run.run_id)):
        item = Item.model_validate(raw)
        if "parent_cell" in item.extra and int(item.extra["parent_cell"]) not in done:
            failed.append(int(item.extra["parent_cell"]))
        elif "unreadable" in item.extra:
            unreadable.extend(g.url for g in item.granules)
    return failed, unreadable


def _store_lock(bucket: Bucket, store_key: str, run: RunContext, step: str) -> contextlib.AbstractContextManager[None]:
    """The store's lock, for what rewrites its group attributes (its layout, its history): growth in BuildCatalog
    and finalize in Aggregate. Two executions of one configuration at once (two months of a backfill) would
    otherwise each write the attributes they read, and one run's parent cells or period be lost from the layout.
    The holder names the run and the step."""
    return lease_lock(bucket, f"{store_key}{LOCK_SUFFIX}", f"run {run.run_id} ({step})",
                      f"the output store s3://{bucket.name}/{store_key}")
