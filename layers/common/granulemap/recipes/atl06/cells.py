"""HEALPix cells of the ATL06 recipe: nested cell ids from mortie's default convention.

Cell ids are HEALPix **nested** ids of mortie's default grid: geodetic latitude on the WGS84 ellipsoid is converted
to authalic latitude before the spherical HEALPix kernel, so cells are equal-area on WGS84 (xdggs calls this
``ellipsoid: WGS84``). In the nested scheme the children ``levels`` orders below parent ``p`` are exactly the
contiguous ids ``[p << 2*levels, (p + 1) << 2*levels)``; everything here relies on that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import mortie
import numpy as np
from mortie.orders import MAX_ORDER

__all__ = [
    "MAX_ORDER",
    "CellBox",
    "cell_box",
    "cell_centres",
    "cell_ids",
    "children",
    "children_per_parent",
    "parents_of",
    "polygon_cells",
]

_BOX_STEP = 32
"""Boundary points per cell side used to bound a cell (mortie's ``step``; 32 traces the curved polar edges)."""
_BOX_MARGIN = 0.05
"""Margin added on every side of a cell's box, as a fraction of the box's extent."""
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
    west_edges = (lon == -180.0) | (lon == -90.0)
    if west_edges.any():
        # Points exactly on a base cells' edge in the polar caps: mortie puts -180° in another cell than 180° (one
        # meridian, two ids), and -90° in another than healpix_geo (which xdggs uses) does; as 180° and 270° they
        # get healpix_geo's cells. (Elsewhere the two agree, but for -0.0 and longitudes within 1e-14° west of 0°,
        # which mortie takes as 0°: healpix_geo itself puts -0.0 in another cell than 0.0.)
        lon = np.where(west_edges, lon + 360.0, lon)
    # UNIQ = 4 * 4**order + nested (the HEALPix "unique" numbering); mortie's default latitude is authalic.
    ids = np.require(mortie.geo2uniq(lat, lon, order=order), dtype=np.int64, requirements=["W"])
    ids -= 4 * 4**order
    return ids


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


@dataclass(frozen=True)
class CellBox:
    """A latitude/longitude box that contains a cell: a cheap pre-test before computing cell ids.

    ``contains`` is True for every point of the cell, and for some points around it; only the cell ids decide.
    Longitudes are an arc ``west`` → ``west + width`` (eastwards, any representation of a longitude: the test is
    modulo 360°); ``width`` 360 means any longitude (a cell that reaches a pole).
    """

    south: float
    north: float
    west: float
    width: float

    def contains(self, latitude: np.ndarray, longitude: np.ndarray) -> np.ndarray:
        """True where the point (degrees, WGS84 geodetic, finite) may lie in the cell; False where it cannot."""
        return self.holds_latitude(latitude) & self.holds_longitude(longitude)

    def holds_latitude(self, latitude: np.ndarray) -> np.ndarray:
        """True where the latitude (degrees, finite) is within the box's."""
        return (latitude >= self.south) & (latitude <= self.north)

    def holds_longitude(self, longitude: np.ndarray) -> np.ndarray:
        """True where the longitude (degrees, finite, any representation) is on the box's arc."""
        if self.width >= 360.0:
            return np.ones(np.shape(longitude), dtype=bool)
        if longitude.size and -180.0 <= longitude.min() and longitude.max() <= 180.0:
            return self._on_arc(longitude)
        return np.remainder(longitude - self.west, 360.0) <= self.width  # any representation (slower)

    def _on_arc(self, longitude: np.ndarray) -> np.ndarray:
        """The arc test for longitudes in [-180, 180], by comparisons only."""
        west = (self.west + 180.0) % 360.0 - 180.0  # in [-180, 180)
        east = west + self.width
        if east <= 180.0:
            on = (longitude >= west) & (longitude <= east)
        else:  # the arc crosses the antimeridian
            on = (longitude >= west) | (longitude <= east - 360.0)
        if any((x - self.west) % 360.0 <= self.width for x in (-180.0, 180.0)):
            on |= np.abs(longitude) == 180.0  # -180 and 180 are one meridian
        return on


@lru_cache(maxsize=256)
def cell_box(cell: int, order: int) -> CellBox:
    """A box (WGS84 geodetic degrees) that contains nested cell ``cell`` at ``order``, with a margin.

    The box bounds mortie's own boundary of the cell (``mort2polygon``, 32 points per side, geodetic latitude),
    widened by 5 % of its extent on every side: HEALPix cell edges are monotonic in latitude and longitude between
    vertices, so the points bound the cell and the margin covers the curvature between them and rounding. A cell
    that comes within the margin of a pole gets every longitude (longitude is undefined at the pole).
    """
    lat_c, lon_c = cell_centres(np.array([cell]), order)
    word = mortie.geo2mort(lat_c, lon_c, order=order)
    nested, found_order = mortie.mort2healpix(word)
    if int(np.asarray(nested).ravel()[0]) != cell or int(found_order) != order:
        raise ValueError(f"mortie does not map the centre of cell {cell} (order {order}) back to it")
    ring = np.asarray(mortie.mort2polygon(word, step=_BOX_STEP), dtype=np.float64).reshape(-1, 2)
    lat, lon = ring[:, 0], ring[:, 1]
    margin = _BOX_MARGIN * (lat.max() - lat.min())
    south, north = float(lat.min() - margin), float(lat.max() + margin)
    if north >= 90.0 or south <= -90.0:
        return CellBox(max(south, -90.0), min(north, 90.0), -180.0, 360.0)
    offset = np.remainder(lon - lon_c[0] + 180.0, 360.0) - 180.0  # from the centre's meridian, in [-180, 180)
    margin = _BOX_MARGIN * (offset.max() - offset.min())
    width = float(offset.max() - offset.min() + 2 * margin)
    if width >= 360.0:
        return CellBox(south, north, -180.0, 360.0)
    return CellBox(south, north, float(lon_c[0] + offset.min() - margin), width)
