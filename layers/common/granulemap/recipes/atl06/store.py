"""The recipe's Zarr v3 store: one dense block of child cells per parent cell of the run, written through S3.

Layout. The ``cells`` dimension holds only the run's parent cells, sorted by nested id, each followed by all
of its 4**(child_order - parent_order) children: parent ``k`` of the sorted list owns cells ``[k*n, (k+1)*n)``.
The ``cell_ids`` coordinate holds the real nested ids (xdggs attributes: healpix, nested, WGS84). Every statistic
is chunked by exactly one parent's block, so two processors never write the same chunk (shared chunks or shards
lose regions silently when written concurrently). The parent list and an id of the layout are in the group's
attributes, so a processor finds its region and refuses a store built for another catalog.

Library: zarr's ``FsspecStore`` over s3fs. s3fs signs with botocore's credential chain and honours
``AWS_ENDPOINT_URL`` exactly as boto3 (``granulemap.storage``) does, so local runs against moto need nothing else;
obstore also reads the endpoint but refuses plain-http endpoints unless ``AWS_ALLOW_HTTP`` is set as well.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from zarr.abc.store import Store

from granulemap.errors import PermanentItemError, StorageThrottled
from granulemap.recipes.atl06.cells import children, children_per_parent
from granulemap.recipes.atl06.stats import STATISTICS, CellStatistics

STORE_NAME = "atl06-cell-stats.zarr"
DIMENSION = "cells"
CELL_IDS = "cell_ids"
CELL_ID_FILL = -1
_CELL_ID_CHUNK = 1 << 20
"""cell_ids is written once, by BuildCatalog alone, so its chunks may span many parents (fewer PUTs)."""

UNITS = {"count": "1", "h_variance": "m2"}
"""Units of the statistics; every other one is metres (height above the WGS84 ellipsoid)."""


class OutputStoreMismatch(PermanentItemError):
    """The output store was built for another catalog of the same configuration: re-run the whole execution."""


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


@dataclass(frozen=True)
class StoreLayout:
    """Which parent cells the store holds, in which order, at which orders."""

    parent_order: int
    child_order: int
    parents: tuple[int, ...]

    @classmethod
    def of(cls, parent_order: int, child_order: int, parents: Iterable[int]) -> StoreLayout:
        return cls(parent_order, child_order, tuple(sorted({int(p) for p in parents})))

    @property
    def cells_per_parent(self) -> int:
        return children_per_parent(self.parent_order, self.child_order)

    @property
    def size(self) -> int:
        return len(self.parents) * self.cells_per_parent

    @property
    def layout_id(self) -> str:
        """Names this layout: equal ids, equal regions."""
        text = json.dumps([self.parent_order, self.child_order, self.parents])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def region(self, parent: int) -> slice:
        """The cells of ``parent``'s block: [k*n, (k+1)*n) for its index k in the sorted parent list."""
        k = int(np.searchsorted(self.parents, parent))
        if k == len(self.parents) or self.parents[k] != parent:
            raise OutputStoreMismatch(f"parent cell {parent} is not in the output store's layout {self.layout_id}")
        n = self.cells_per_parent
        return slice(k * n, (k + 1) * n)

    def cell_ids(self) -> np.ndarray:
        """Every cell id of the store, in store order."""
        if not self.parents:
            return np.empty(0, dtype=np.int64)
        return np.concatenate([children(p, self.parent_order, self.child_order) for p in self.parents])

    def attrs(self) -> dict[str, Any]:
        return {"parent_order": self.parent_order, "child_order": self.child_order,
                "parent_cells": list(self.parents), "layout_id": self.layout_id}

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> StoreLayout:
        return cls.of(int(attrs["parent_order"]), int(attrs["child_order"]), attrs["parent_cells"])


def s3_store(bucket: str, key: str, *, read_only: bool = False) -> Store:
    """The Zarr store at s3://bucket/key, with fresh listings (a cached listing could hide another writer's keys)."""
    from zarr.storage import FsspecStore

    return FsspecStore.from_url(
        f"s3://{bucket}/{key.rstrip('/')}", read_only=read_only,
        storage_options={"use_listings_cache": False},
    )


def read_layout(store: Store) -> StoreLayout | None:
    """The layout recorded in the store, or None when there is no store (or not one of ours)."""
    try:
        attrs = dict(zarr.open_group(store, mode="r").attrs)
    except (FileNotFoundError, KeyError, ValueError, zarr.errors.GroupNotFoundError):
        return None
    try:
        return StoreLayout.from_attrs(attrs)
    except (KeyError, TypeError, ValueError):
        return None


def dggs_attrs(level: int) -> dict[str, Any]:
    """xdggs' attributes of the cell-id coordinate: HEALPix nested ids, equal-area on WGS84 (mortie's default)."""
    return {"grid_name": "healpix", "level": level, "indexing_scheme": "nested", "ellipsoid": "WGS84"}


def ensure_template(store: Store, layout: StoreLayout, attrs: dict[str, Any] | None = None) -> bool:
    """Create the empty store for ``layout`` (cell ids written, statistics all fill) unless it already exists.

    An existing store with the same layout is kept as it is, with any regions already written (a re-run skips
    finished items, so their regions must survive). A store with another layout is replaced. Returns True when
    the store was (re)created.
    """
    existing = read_layout(store)
    if existing is not None and existing.layout_id == layout.layout_id:
        return False
    group = zarr.create_group(store, overwrite=True, attributes=dict(attrs or {}))
    n = layout.cells_per_parent
    size = max(layout.size, 1)
    ids = group.create_array(
        CELL_IDS, shape=(layout.size,), chunks=(min(size, max(n, _CELL_ID_CHUNK // n * n)),), dtype="int64",
        fill_value=CELL_ID_FILL, dimension_names=[DIMENSION], attributes=dggs_attrs(layout.child_order),
    )
    ids[:] = layout.cell_ids()
    for name, meaning in STATISTICS.items():
        group.create_array(
            name, shape=(layout.size,), chunks=(n,), dtype=_dtype(name), fill_value=_fill(name),
            dimension_names=[DIMENSION],
            attributes={"long_name": meaning, "units": UNITS.get(name, "m"), "coordinates": CELL_IDS},
        )
    group.attrs.update(layout.attrs())  # last: a template left half-made by a crash has no layout, so is rebuilt
    _consolidate(store)  # each processor then opens the store with one read
    return True


def _consolidate(store: Store) -> None:
    with warnings.catch_warnings():
        # zarr warns that consolidated metadata is not yet in the v3 spec; xarray reads it, which is the point.
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        zarr.consolidate_metadata(store)


def write_parent(store: Store, layout_id: str, parent: int, stats: CellStatistics) -> int:
    """Write parent cell ``parent``'s whole block (cells without segments get the fill values); return the number
    of child cells with data. Raises OutputStoreMismatch if the store's layout is not ``layout_id``."""
    group = zarr.open_group(store, mode="r+")
    layout = StoreLayout.from_attrs(dict(group.attrs))
    if layout.layout_id != layout_id:
        raise OutputStoreMismatch(
            f"the output store has layout {layout.layout_id}, but this item was catalogued for {layout_id}: "
            "another execution of the same configuration rebuilt the store; run this execution again"
        )
    region = layout.region(parent)
    n = layout.cells_per_parent
    local = stats.cells - parent * n  # offsets inside the block: children of p are [p*n, (p+1)*n)
    if stats.size and (local.min() < 0 or local.max() >= n):
        raise ValueError(f"statistics of cells outside parent cell {parent} (order {layout.parent_order})")
    arrays = {name: _array(group, name) for name in STATISTICS}
    for name, array in arrays.items():
        if array.chunks != (n,):
            raise OutputStoreMismatch(f"{name} is not chunked by one parent cell ({n} cells): not our store")

    def write(name: str) -> None:
        block = np.full(n, _fill(name), dtype=_dtype(name))
        block[local] = stats.values[name]
        arrays[name][region] = block  # one whole chunk: one PUT; an all-fill block deletes the chunk instead

    with ThreadPoolExecutor(len(arrays)) as pool:  # the PUTs are independent: send them together
        list(pool.map(write, arrays))
    return stats.size


def _array(group: zarr.Group, name: str) -> zarr.Array:
    member = group[name]
    if not isinstance(member, zarr.Array):
        raise OutputStoreMismatch(f"{name} in the output store is not an array: not our store")
    return member


def finalize(store: Store, attrs: dict[str, Any]) -> None:
    """Add ``attrs`` to the group's attributes and consolidate the metadata (one read opens the store)."""
    group = zarr.open_group(store, mode="r+")
    group.attrs.update(attrs)
    _consolidate(store)


def read_cells_with_data(store: Store, name: str) -> tuple[StoreLayout, np.ndarray, np.ndarray]:
    """(layout, cell ids, values of ``name``) of the cells with count > 0."""
    group = zarr.open_group(store, mode="r")
    layout = StoreLayout.from_attrs(dict(group.attrs))
    has_data = np.asarray(_array(group, "count")[:]) > 0
    return layout, np.asarray(_array(group, CELL_IDS)[:])[has_data], np.asarray(_array(group, name)[:])[has_data]
