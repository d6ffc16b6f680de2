"""HEALPix cells of the ATL06 recipe: nested cell ids from mortie's default convention.

Cell ids are HEALPix **nested** ids of mortie's default grid: geodetic latitude on the WGS84 ellipsoid is converted
to authalic latitude before the spherical HEALPix kernel, so cells are equal-area on WGS84 (xdggs calls this
``ellipsoid: WGS84``). In the nested scheme the children ``levels`` orders below parent ``p`` are exactly the
contiguous ids ``[p << 2*levels, (p + 1) << 2*levels)``; everything here relies on that.
"""

from __future__ import annotations

from collections.abc import Sequence

import mortie
import numpy as np
from mortie.orders import MAX_ORDER

__all__ = [
    "MAX_ORDER",
    "cell_centres",
    "cell_ids",
    "children",
    "children_per_parent",
    "parents_of",
    "polygon_cells",
]

_MIN_COVERAGE_ORDER = 1
"""mortie's polygon coverer starts at order 1; order-0 covers are made at order 1 and coarsened."""


def children_per_parent(parent_order: int, child_order: int) -> int:
    """Number of child cells in one parent cell: 4**(child_order - parent_order)."""
    return 4 ** (child_order - parent_order)


def cell_ids(latitude: np.ndarray, longitude: np.ndarray, order: int) -> np.ndarray:
    """Nested ids (int64) at ``order`` of points given as WGS84 geodetic latitude/longitude in degrees.

    The points must be finite with latitude in [-90, 90]; callers filter them first.
    """
    lat = np.ascontiguousarray(latitude, dtype=np.float64)
    lon = np.ascontiguousarray(longitude, dtype=np.float64)
    if lat.size == 0:
        return np.empty(0, dtype=np.int64)
    # UNIQ = 4 * 4**order + nested (the HEALPix "unique" numbering); mortie's default latitude is authalic.
    return mortie.geo2uniq(lat, lon, order=order).astype(np.int64) - 4 * 4**order


def parents_of(cells: np.ndarray, child_order: int, parent_order: int) -> np.ndarray:
    """Nested ids at ``parent_order`` of nested ids at ``child_order`` (a bit shift in the nested scheme)."""
    return np.asarray(cells, dtype=np.int64) >> (2 * (child_order - parent_order))


def children(parent: int, parent_order: int, child_order: int) -> np.ndarray:
    """The nested ids at ``child_order`` inside nested cell ``parent``, ascending (a contiguous range)."""
    n = children_per_parent(parent_order, child_order)
    return np.arange(parent * n, (parent + 1) * n, dtype=np.int64)


def polygon_cells(rings: Sequence[tuple[Sequence[float], Sequence[float]]], order: int) -> np.ndarray:
    """Sorted unique nested ids at ``order`` of the cells that touch any of the polygons.

    ``rings``: (latitudes, longitudes) of each polygon's outer ring in degrees (WGS84 geodetic). Every ring is
    covered on its own and the covers are unioned, so overlapping rings never cancel out.
    """
    cover_order = max(order, _MIN_COVERAGE_ORDER)
    found: list[np.ndarray] = []
    for lats, lons in rings:
        words = mortie.morton_coverage(np.asarray(lats, float), np.asarray(lons, float), order=cover_order)
        if len(words):
            nested, _ = mortie.mort2healpix(np.asarray(words, dtype=np.uint64))
            found.append(np.asarray(nested, dtype=np.int64) >> (2 * (cover_order - order)))
    if not found:
        return np.empty(0, dtype=np.int64)
    return np.unique(np.concatenate(found))


def cell_centres(cells: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """(latitude, longitude) in degrees of the cells' centres: WGS84 geodetic, longitude in [-180, 180)."""
    uniq = np.asarray(cells, dtype=np.int64) + 4 * 4**order
    if uniq.size == 0:
        return np.empty(0), np.empty(0)
    lat, lon = mortie.uniq2geo(uniq)
    lon = (np.asarray(lon, dtype=np.float64) + 180.0) % 360.0 - 180.0
    return np.asarray(lat, dtype=np.float64), lon
