"""Which parent cells each granule touches: from its CMR polygons, or from the file's own segment positions."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from granulemap.granule_access import local_path_of
from granulemap.recipes.atl06.cells import cell_ids, polygon_cells
from granulemap.recipes.atl06.granule import Atl06Granule, beam_positions

ATL06_STAMP = re.compile(r"^ATL06_(\d{14})_")
"""ATL06 file names start ATL06_YYYYMMDDHHMMSS_ (the granule's start time, UTC)."""

Ring = list[tuple[float, float]]
"""A polygon's outer ring as (longitude, latitude) pairs in degrees, GeoJSON order."""


def granule_time(name: str) -> dt.datetime | None:
    """The UTC time stamp in an ATL06 file name, or None if the name is not an ATL06 one."""
    match = ATL06_STAMP.match(name.rsplit("/", 1)[-1])
    if not match:
        return None
    try:
        return dt.datetime.strptime(match.group(1), "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def footprint_from_umm(umm: dict[str, Any]) -> list[Ring]:
    """Outer rings of a CMR UMM-G record's ``GPolygons`` (none when it describes its extent otherwise, e.g. by
    ``Orbit`` parameters, as NSIDC's ECS ATL06 records do). Exclusion zones are ignored: covering a little more only
    adds parent cells that turn out empty."""
    geometry = umm.get("SpatialExtent", {}).get("HorizontalSpatialDomain", {}).get("Geometry", {})
    rings = []
    for polygon in geometry.get("GPolygons", []):
        points = polygon.get("Boundary", {}).get("Points", [])
        rings.append([(float(p["Longitude"]), float(p["Latitude"])) for p in points])
    return [r for r in rings if len(r) >= 3]


def footprint_from_legacy(entry: dict[str, Any]) -> list[Ring]:
    """Outer rings of a CMR legacy-JSON granule entry's ``polygons`` ("lat lon lat lon ..." strings, the first of
    each polygon its outer ring); CMR computes these even for records whose UMM-G has only orbit parameters."""
    rings = []
    for polygon in entry.get("polygons", []):
        numbers = [float(v) for v in polygon[0].split()]
        rings.append(list(zip(numbers[1::2], numbers[0::2], strict=True)))
    return [r for r in rings if len(r) >= 3]


def parents_of_footprint(rings: Sequence[Ring], order: int) -> np.ndarray:
    """Nested ids at ``order`` of the cells that the footprint's polygons touch."""
    return polygon_cells([([lat for _, lat in r], [lon for lon, _ in r]) for r in rings], order)


def parents_of_file(url: str, order: int, credentials: dict[str, str] | None = None) -> np.ndarray:
    """Nested ids at ``order`` of the cells holding at least one land-ice segment of the file (any quality)."""
    with Atl06Granule(url, local_path=local_path_of(url), credentials=credentials) as granule:
        found = [cell_ids(*beam_positions(granule, beam), order) for beam in granule.beams()]
    return np.unique(np.concatenate(found)) if found else np.empty(0, dtype=np.int64)
