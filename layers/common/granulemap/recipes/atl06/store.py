"""The recipe's Zarr v3 store: statistics per (period, cell), one cumulative store per configuration, through S3.

Layout. Two dimensions:

- ``time``: one entry per period a run covered, in the order runs added them (the monthly runs append; a
  back-filled month lands at the end: ``ds.sortby("time")`` orders them). The ``time`` coordinate is the period's
  first day and ``time_bounds`` its [first day, day after the last day), CF-style, in days since 1970-01-01.
- ``cells``: every parent cell any run touched, each followed by all 4**(child_order - parent_order) of its
  children (a dense, ascending block), in the order runs added them (each run's new parents sorted by nested id).
  The ``cell_ids`` coordinate holds the real nested ids (xdggs attributes: healpix, nested, WGS84).

Every statistic is chunked by exactly one (period, parent block), so two processors never write the same chunk
(shared chunks or shards lose regions silently when written concurrently). Regions never move: growing the store
only appends periods and parent blocks, so a later run never disturbs what earlier runs wrote.

The group's attributes record the layout: the orders, the parents and periods in store order, and ``store_id``,
made when the store is created. ``incomplete_periods`` says which periods the last run of the period left
incomplete, keyed ``"<first day>/<last day>"`` (ISO 8601 interval): ``{"run_id": ..., "finished": false}`` from
the moment BuildCatalog grows the store until that run's Aggregate has written the period (a run that stopped
on the way, or whose every item failed, stays so); then ``{"run_id": ..., "finished": true,
"failed_parent_cells": [...], "unreadable_granules": [...]}`` when some of its items failed, and no entry when
none did. A failed parent cell's block holds fill values, or an earlier run's values of the same period: either
way not what this period's granules say; the cells an unreadable granule would have touched are unknown. Items carry the store id, so a store deleted and made again gets new item ids
(nothing is skipped as done into a store that no longer holds it), and a processor refuses a store that is not the
one its item was catalogued for. Only BuildCatalog grows a store, and only it and the aggregator's finalize rewrite
its attributes: they take turns under the store's lock (``Atl06CellStats`` holds ``storage.lease_lock``), so that
executions of one configuration over different periods may run at once; processors and the aggregator check their
regions.

Library: zarr's ``FsspecStore`` over s3fs. s3fs signs with botocore's credential chain and honours
``AWS_ENDPOINT_URL`` exactly as boto3 (``granulemap.storage``) does, so local runs against moto need nothing else;
obstore also reads the endpoint but refuses plain-http endpoints unless ``AWS_ALLOW_HTTP`` is set as well.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import uuid
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import zarr
from zarr.abc.store import Store

from granulemap.errors import GranulemapError, PermanentItemError, ProductDamaged, StorageThrottled, first_of
from granulemap.recipes.atl06.cells import children, children_per_parent
from granulemap.recipes.atl06.stats import STATISTICS, CellStatistics

STORE_NAME = "atl06-cell-stats.zarr"
CELLS = "cells"
TIME = "time"
CELL_IDS = "cell_ids"
TIME_BOUNDS = "time_bounds"
CELL_ID_FILL = -1
_CELL_ID_CHUNK = 1 << 20
"""cell_ids is written by BuildCatalog alone, so its chunks may span many parents (fewer PUTs)."""
_TIME_CHUNK = 1024
EPOCH = dt.date(1970, 1, 1)
TIME_UNITS = "days since 1970-01-01"

UNITS = {"count": "1", "h_variance": "m2"}
"""Units of the statistics; every other one is metres (height above the WGS84 ellipsoid)."""

Period = tuple[dt.date, dt.date]
"""A run's inclusive (first day, last day)."""


class OutputStoreMismatch(PermanentItemError):
    """The output store is not the one the item was catalogued for, or is not ours: re-run the execution."""


class OutputStoreDamaged(ProductDamaged):
    """A metadata document (zarr.json) or a chunk of the output store cannot be read: the message names which, and
    what writes it anew."""


def _address(store: Store) -> str:
    """Where ``store`` is, for a message: s3://bucket/key for the S3 stores runs use."""
    path = getattr(store, "path", None)
    return f"s3://{path}" if isinstance(path, str) and path else str(store)


_ARRAYS = (CELL_IDS, TIME, TIME_BOUNDS, *STATISTICS)


def _unreadable_documents(store: Store) -> list[str]:
    """Which of the store's metadata documents (the group's zarr.json and each array's) are not JSON: read one by one
    once opening the store failed, to name the damaged one."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    unreadable = []
    for key in ("zarr.json", *(f"{name}/zarr.json" for name in _ARRAYS)):
        document = sync(store.get(key, prototype=default_buffer_prototype()))
        try:
            if document is not None:
                json.loads(document.to_bytes())
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            unreadable.append(key)
    return unreadable


@contextlib.contextmanager
def _metadata_read(store: Store) -> Iterator[None]:
    """OutputStoreDamaged for a store whose metadata documents (zarr.json) are not all JSON (cut short, edited by
    hand), once zarr failed on it: naming them, and that the store has to be made anew. Any other error passes as it
    is."""
    try:
        yield
    except (FileNotFoundError, PermissionError, GranulemapError):
        raise
    except (ValueError, RuntimeError) as exc:  # JSON's errors, zarr's (ValueError), a codec's (zstd: RuntimeError)
        documents = _unreadable_documents(store)
        if not documents:
            raise
        raise OutputStoreDamaged(
            f"the output store {_address(store)} is damaged: {first_of(documents, 3)} "
            f"{'are' if len(documents) > 1 else 'is'} not JSON. Move the store away (or delete it): the next run "
            "makes a new one and computes its items anew (they belong to the store they were written to); then run "
            "again the other periods it held (its history attribute names them)") from exc


@contextlib.contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """s3fs reports S3 failures as OSError: a missing key or a refusal stays as it is, anything else (timeouts,
    SlowDown, 5xx after s3fs's own retries) becomes StorageThrottled, which the state machine retries."""
    try:
        yield
    except (FileNotFoundError, PermissionError):
        raise
    except (OSError, TimeoutError) as exc:
        raise StorageThrottled(f"S3 failed while {what}: {type(exc).__name__}: {exc}") from exc


def _fill(name: str) -> float | int:
    return 0 if name == "count" else float("nan")


def _dtype(name: str) -> str:
    return "int64" if name == "count" else "float64"


def _days(day: dt.date) -> int:
    return (day - EPOCH).days


@dataclass(frozen=True)
class StoreLayout:
    """Which parent cells and periods the store holds, in store order, at which orders, under which store id."""

    store_id: str
    parent_order: int
    child_order: int
    parents: tuple[int, ...] = ()
    periods: tuple[Period, ...] = ()

    @classmethod
    def new(cls, parent_order: int, child_order: int) -> StoreLayout:
        return cls(uuid.uuid4().hex[:16], parent_order, child_order)

    @property
    def cells_per_parent(self) -> int:
        return children_per_parent(self.parent_order, self.child_order)

    @property
    def size(self) -> int:
        """Length of the cells dimension."""
        return len(self.parents) * self.cells_per_parent

    def grown(self, parents: Iterable[int], period: Period) -> StoreLayout:
        """This layout with ``period`` and the parents it lacks appended (new parents sorted); regions never move."""
        known = set(self.parents)
        new = sorted({int(p) for p in parents} - known)
        periods = self.periods if period in self.periods else (*self.periods, period)
        return replace(self, parents=(*self.parents, *new), periods=periods)

    def region(self, parent: int) -> slice:
        """The cells of ``parent``'s block: [k*n, (k+1)*n) for its index k in the store's parent list."""
        try:
            k = self.parents.index(parent)
        except ValueError:
            raise OutputStoreMismatch(f"parent cell {parent} is not in the output store {self.store_id}") from None
        n = self.cells_per_parent
        return slice(k * n, (k + 1) * n)

    def time_index(self, period: Period) -> int:
        try:
            return self.periods.index(period)
        except ValueError:
            raise OutputStoreMismatch(
                f"period {period[0]}..{period[1]} is not in the output store {self.store_id}") from None

    def attrs(self) -> dict[str, Any]:
        return {"store_id": self.store_id, "parent_order": self.parent_order, "child_order": self.child_order,
                "parent_cells": list(self.parents),
                "periods": [[start.isoformat(), end.isoformat()] for start, end in self.periods]}

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> StoreLayout:
        return cls(str(attrs["store_id"]), int(attrs["parent_order"]), int(attrs["child_order"]),
                   tuple(int(p) for p in attrs["parent_cells"]),
                   tuple((dt.date.fromisoformat(s), dt.date.fromisoformat(e)) for s, e in attrs["periods"]))


def read_layout(store: Store) -> StoreLayout | None:
    """The layout recorded in the store; None when there is no store, or a group we began but never finished
    (``store_id`` is the last attribute written). A store whose layout cannot be read is an error, never None:
    None lets the caller make a new store over the old one."""
    try:
        with _metadata_read(store):
            group = zarr.open_group(store, mode="r", use_consolidated=False)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return None
    return _layout_of(dict(group.attrs))


def _layout_of(attrs: dict[str, Any]) -> StoreLayout | None:
    if "store_id" not in attrs:
        return None
    try:
        return StoreLayout.from_attrs(attrs)
    except (KeyError, TypeError, ValueError) as exc:
        raise OutputStoreMismatch(f"the output store's layout attributes cannot be read ({exc!r}): not our store, "
                                  "or damaged; move it away to start a new one") from exc


def dggs_attrs(level: int) -> dict[str, Any]:
    """xdggs' attributes of the cell-id coordinate: HEALPix nested ids, equal-area on WGS84 (mortie's default)."""
    return {"grid_name": "healpix", "level": level, "indexing_scheme": "nested", "ellipsoid": "WGS84"}


def _create(store: Store, layout: StoreLayout, attrs: dict[str, Any]) -> None:
    """An empty store (no periods, no cells) for ``layout``'s orders; its layout attributes are written later."""
    group = zarr.create_group(store, overwrite=True, attributes=dict(attrs))
    n = layout.cells_per_parent
    group.create_array(CELL_IDS, shape=(0,), chunks=(max(n, _CELL_ID_CHUNK // n * n),), dtype="int64",
                       fill_value=CELL_ID_FILL, dimension_names=[CELLS], attributes=dggs_attrs(layout.child_order))
    group.create_array(TIME, shape=(0,), chunks=(_TIME_CHUNK,), dtype="int64", fill_value=0, dimension_names=[TIME],
                       attributes={"standard_name": "time", "long_name": "first day of the period",
                                   "units": TIME_UNITS, "calendar": "proleptic_gregorian", "bounds": TIME_BOUNDS})
    group.create_array(TIME_BOUNDS, shape=(0, 2), chunks=(_TIME_CHUNK, 2), dtype="int64", fill_value=0,
                       dimension_names=[TIME, "nv"],
                       attributes={"long_name": "period: first day, day after the last day", "units": TIME_UNITS,
                                   "calendar": "proleptic_gregorian"})
    for name, meaning in STATISTICS.items():
        group.create_array(
            name, shape=(0, 0), chunks=(1, n), dtype=_dtype(name), fill_value=_fill(name),
            dimension_names=[TIME, CELLS],
            # CF: time_bounds belongs to time through its "bounds" attribute; it is no auxiliary coordinate (its nv
            # dimension is not one of the statistic's), so only cell_ids is listed.
            attributes={"long_name": meaning, "units": UNITS.get(name, "m"), "coordinates": CELL_IDS},
        )


def grow(store: Store, parent_order: int, child_order: int, parents: Iterable[int], period: Period,
         attrs: dict[str, Any] | None = None) -> StoreLayout:
    """Make sure the store holds ``period`` and every parent in ``parents``; return its layout.

    Creates the store (with ``attrs``) if there is none. Otherwise appends the period and the parents it lacks and
    leaves everything already written where it is, so a re-run or next month's run keeps earlier regions. The layout
    attributes are written last: a crash halfway leaves the old layout, and the next call redoes the growth (array
    shapes always follow the recorded layout).
    """
    old = read_layout(store)
    if old is None:
        old = StoreLayout.new(parent_order, child_order)
        _create(store, old, attrs or {})
    elif (old.parent_order, old.child_order) != (parent_order, child_order):
        raise OutputStoreMismatch(f"the output store holds orders {old.parent_order}/{old.child_order}, not "
                                  f"{parent_order}/{child_order}")
    new = old.grown(parents, period)
    if new == old:
        return old
    with _metadata_read(store):
        group = zarr.open_group(store, mode="r+", use_consolidated=False)
        arrays = {name: _array(group, name) for name in _ARRAYS}  # every document read before anything changes
        size, times = new.size, len(new.periods)
        for name in STATISTICS:
            arrays[name].resize((times, size))
        arrays[CELL_IDS].resize((size,))
        arrays[TIME].resize((times,))
        arrays[TIME_BOUNDS].resize((times, 2))
        if new.parents != old.parents:
            _write_cell_ids(arrays[CELL_IDS], old.size, new.parents[len(old.parents):], new.parent_order,
                            new.child_order)
        if new.periods != old.periods:
            start, end = period
            arrays[TIME][times - 1] = _days(start)
            arrays[TIME_BOUNDS][times - 1] = [_days(start), _days(end) + 1]
        group.attrs.update(new.attrs())  # last (see the docstring)
        _consolidate(store)  # each processor then opens the store with one read
    return new


def _write_cell_ids(array: zarr.Array, offset: int, parents: tuple[int, ...], parent_order: int,
                    child_order: int) -> None:
    """The children of ``parents``, block after block, into ``array`` from ``offset`` on, one chunk at a time: a global
    month adds all 49,152 order-6 parents, 201 million order-12 ids (1.6 GB at once, more than BuildCatalog has)."""
    n = children_per_parent(parent_order, child_order)
    chunk = array.chunks[0]  # a whole number of blocks (_create)
    start, i = offset, 0
    while i < len(parents):
        # up to the next chunk boundary: every write but a first partial one fills whole chunks
        count = max(1, (chunk - start % chunk) // n)
        batch = parents[i:i + count]
        array[start:start + len(batch) * n] = np.concatenate([children(p, parent_order, child_order) for p in batch])
        start += len(batch) * n
        i += len(batch)


def _consolidate(store: Store) -> None:
    with warnings.catch_warnings():
        # zarr warns that consolidated metadata is not yet in the v3 spec; xarray reads it, which is the point.
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        zarr.consolidate_metadata(store)


def open_layout(store: Store, store_id: str, mode: str = "r") -> tuple[zarr.Group, StoreLayout]:
    """The store's group and layout; OutputStoreMismatch unless it is store ``store_id``."""
    group, layout = _open(store, mode)
    if group is None or layout is None or layout.store_id != store_id:
        raise _not_catalogued_store(store_id, layout)
    return group, layout


def _open(store: Store, mode: str) -> tuple[zarr.Group | None, StoreLayout | None]:
    """The store's group (consolidated metadata: one read) and its layout; None for what is not there."""
    try:
        with _metadata_read(store):
            group = zarr.open_group(store, mode=mode)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return None, None
    return group, _layout_of(dict(group.attrs))


def _not_catalogued_store(store_id: str, found: StoreLayout | None) -> OutputStoreMismatch:
    what = "no output store" if found is None else f"output store {found.store_id}"
    return OutputStoreMismatch(
        f"found {what}, but this item was catalogued for output store {store_id}: the store was moved or made "
        "again after this execution's BuildCatalog; start the execution again")


def write_parent(store: Store, store_id: str, parent: int, period: Period, stats: CellStatistics) -> int:
    """Write parent cell ``parent``'s whole block for ``period`` (cells without segments get the fill values);
    return the number of child cells with data. Raises OutputStoreMismatch if the store is not ``store_id`` or
    lacks the region."""
    group, layout = open_layout(store, store_id, mode="r+")
    region, t = layout.region(parent), layout.time_index(period)
    n = layout.cells_per_parent
    local = stats.cells - parent * n  # offsets inside the block: children of p are [p*n, (p+1)*n)
    if stats.size and (local.min() < 0 or local.max() >= n):
        raise ValueError(f"statistics of cells outside parent cell {parent} (order {layout.parent_order})")
    arrays = {name: _array(group, name) for name in STATISTICS}
    for name, array in arrays.items():
        if array.chunks != (1, n) or array.shape[0] <= t or array.shape[1] < region.stop:
            raise OutputStoreMismatch(f"{name} has shape {array.shape} and chunks {array.chunks}: not the layout "
                                      f"of store {store_id} (one chunk per period and parent cell of {n} cells)")

    def write(name: str) -> None:
        block = np.full(n, _fill(name), dtype=_dtype(name))
        block[local] = stats.values[name]
        arrays[name][t, region] = block  # one whole chunk: one PUT; an all-fill block deletes the chunk instead

    with ThreadPoolExecutor(len(arrays)) as pool:  # the PUTs are independent: send them together
        list(pool.map(write, arrays))
    return stats.size


def _array(group: zarr.Group, name: str) -> zarr.Array:
    member = group[name]
    if not isinstance(member, zarr.Array):
        raise OutputStoreMismatch(f"{name} in the output store is not an array: not our store")
    return member


INCOMPLETE = "incomplete_periods"
"""The group attribute naming the periods whose last run left them incomplete (see the module's docstring)."""


def period_name(period: Period) -> str:
    """A period's key in ``incomplete_periods``: its first and last day as an ISO 8601 interval."""
    return f"{period[0].isoformat()}/{period[1].isoformat()}"


def _with_incomplete(group: zarr.Group, period: Period, entry: dict[str, Any] | None) -> dict[str, Any]:
    """The group's ``incomplete_periods`` with ``period``'s entry set to ``entry`` (None: removed)."""
    incomplete = dict(group.attrs.get(INCOMPLETE) or {})
    if entry is None:
        incomplete.pop(period_name(period), None)
    else:
        incomplete[period_name(period)] = entry
    return {INCOMPLETE: incomplete}


def cells_not_written(attrs: dict[str, Any], cell_ids: np.ndarray, period: Period | str) -> np.ndarray:
    """For a reader of the store: which of ``cell_ids`` (the store's ``cell_ids``, or some of them) the last run of
    ``period`` (dates, or its ``incomplete_periods`` key) did not write, from the store's attributes ``attrs``
    (``xr.open_zarr(...).attrs``): those of its failed parent cells; every cell while that run had not written the
    period. Mask them out (``ds.h_mean.where(~mask)``): they hold fill values or an earlier run's. The cells an
    unreadable granule would have touched are unknown (``incomplete_periods`` lists such granules). A period the
    store does not hold (a typo: "2019-3-01/2019-03-31", "March 2019") is a ValueError naming those it holds: a mask
    of nothing would pass for "every cell written"."""
    key = period if isinstance(period, str) else period_name(period)
    held = [f"{start}/{end}" for start, end in attrs.get("periods", [])]
    if key not in held:
        raise ValueError(f"the store holds no period {key!r}: its periods are {', '.join(held) or 'none'} "
                         "(first day/last day, as ISO dates)")
    entry = (attrs.get(INCOMPLETE) or {}).get(key)
    cells = np.asarray(cell_ids, dtype=np.int64)
    if entry is None:
        return np.zeros(cells.shape, dtype=bool)
    if not entry.get("finished"):
        return np.ones(cells.shape, dtype=bool)
    shift = 2 * (int(attrs["child_order"]) - int(attrs["parent_order"]))  # nested ids: a parent's children in a row
    return np.isin(cells >> shift, np.asarray(entry.get("failed_parent_cells", []), dtype=np.int64))


def mark_unfinished(store: Store, period: Period, run_id: str) -> None:
    """Record that run ``run_id`` is writing ``period``: until its ``finalize``, the period is incomplete."""
    with _metadata_read(store):
        group = zarr.open_group(store, mode="r+", use_consolidated=False)
        group.attrs.update(_with_incomplete(group, period, {"run_id": run_id, "finished": False}))
        _consolidate(store)


def finalize(store: Store, attrs: dict[str, Any], history: str, period: Period, run_id: str,
             failed_parents: Iterable[int] = (), unreadable_granules: Iterable[str] = ()) -> None:
    """Add ``attrs`` to the group's attributes, append a line to its ``history`` (one per run, CF-style), record
    what run ``run_id`` left incomplete of ``period`` (nothing: its entry is removed) and consolidate the metadata
    (one read opens the store)."""
    failed, unread = sorted({int(p) for p in failed_parents}), sorted(set(unreadable_granules))
    entry = ({"run_id": run_id, "finished": True, "failed_parent_cells": failed, "unreadable_granules": unread}
             if failed or unread else None)
    with _metadata_read(store):
        group = zarr.open_group(store, mode="r+", use_consolidated=False)
        earlier = str(group.attrs.get("history", ""))
        group.attrs.update({**attrs, "history": f"{earlier}\n{history}" if earlier else history,
                            **_with_incomplete(group, period, entry)})
        _consolidate(store)


_READ_BATCH_CELLS = 1 << 20
"""read_period reads at most this many cells of each array at a time: memory stays bounded however big the store."""


def read_period(store: Store, name: str, period: Period,
                parents: Iterable[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(cell ids, values of ``name``) of the cells with count > 0 in ``period``, among the blocks of ``parents``
    (default: every parent cell of the store), in store order: ``read_period_batches``, joined."""
    cells: list[np.ndarray] = []
    found: list[np.ndarray] = []
    for batch_cells, batch_values in read_period_batches(store, name, period, parents):
        cells.append(batch_cells)
        found.append(batch_values)
    if not cells:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=_dtype(name))
    return np.concatenate(cells), np.concatenate(found)


def read_period_batches(store: Store, name: str, period: Period,
                        parents: Iterable[int] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``read_period``'s (cell ids, values) a batch of blocks at a time, batches without data left out.

    The blocks are read a batch at a time and only the cells with data are kept, so a store of millions of cells is
    read in bounded memory, and a run reads only its own parents' chunks; a caller that reduces each batch (the
    period's map) never holds all of a global month's cells, tens of millions.
    """
    group, layout = _open(store, "r")
    if group is None or layout is None:
        raise OutputStoreMismatch("there is no output store to read")
    t, n = layout.time_index(period), layout.cells_per_parent
    counts, values = _array(group, "count"), _array(group, name)
    wanted = set(layout.parents if parents is None else (int(p) for p in parents))
    blocks = sorted(k for k, p in enumerate(layout.parents) if p in wanted)
    per_batch = max(1, _READ_BATCH_CELLS // n)
    for i in range(0, len(blocks), per_batch):
        batch = blocks[i:i + per_batch]
        index = (np.asarray(batch, dtype=np.int64)[:, None] * n + np.arange(n)).ravel()
        with _chunks_read(store, layout, period, batch, (counts, values)):
            has_data = np.asarray(counts.get_orthogonal_selection((t, index))) > 0
            if not has_data.any():
                continue
            found = np.asarray(values.get_orthogonal_selection((t, index[has_data])))
        ids = np.concatenate([children(layout.parents[k], layout.parent_order, layout.child_order) for k in batch])
        yield ids[has_data], found


@contextlib.contextmanager
def _chunks_read(store: Store, layout: StoreLayout, period: Period, blocks: list[int],
                 arrays: tuple[zarr.Array, ...]) -> Iterator[None]:
    """OutputStoreDamaged for chunks of ``period``'s ``blocks`` that cannot be decoded (cut short, edited): naming
    each (read again one by one) with its parent cell, and that a run of the period with recompute writes them anew
    (a processor writes its whole block: the damaged chunk is never read). Any other error passes as it is."""
    try:
        yield
    except (FileNotFoundError, PermissionError, GranulemapError):
        raise
    except (ValueError, RuntimeError) as exc:  # zarr's errors (ValueError), a codec's (zstd: RuntimeError)
        t, n = layout.time_index(period), layout.cells_per_parent
        damaged = []
        for array in arrays:
            for k in blocks:
                try:
                    array[t, k * n:(k + 1) * n]
                except (ValueError, RuntimeError):
                    damaged.append((f"{array.basename}/c/{t}/{k}", layout.parents[k]))
        if not damaged:  # each block reads: not a damaged chunk
            raise
        chunks = (f"chunk{'s' if len(damaged) > 1 else ''} "
                  + ", ".join(f"{key} (parent cell {parent})" for key, parent in damaged[:5])
                  + (f" and {len(damaged) - 5} more" if len(damaged) > 5 else ""))
        raise OutputStoreDamaged(
            f"the output store {_address(store)} is damaged: {chunks} of period {period[0]}..{period[1]} cannot be "
            f"read. Run the dates {period[0]}..{period[1]} again with recompute (--recompute; \"recompute\": true): "
            "its items write their blocks anew") from exc
