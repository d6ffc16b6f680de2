"""Which parent cells each granule touches: from its CMR polygons (``Granule.footprint``, filled by granulemap.cmr),
or from the file's own segment positions."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

import numpy as np

from granulemap.cmr import footprint_from_legacy, footprint_from_umm
from granulemap.models import local_path_of
from granulemap.models import Granule, Ring, period_bounds
from granulemap.recipes.atl06.cells import cell_ids, polygon_cells
from granulemap.recipes.atl06.granule import Atl06Granule, TimeWindow, beam_positions, delta_time_window
from granulemap.recipes.base import time_from_stamp

ATL06_STAMP = re.compile(r"^ATL06_(\d{14})_")
"""ATL06 file names start ATL06_YYYYMMDDHHMMSS_ (the granule's start time, UTC)."""
ATL06_RELEASE = re.compile(r"^ATL06_\d{14}_(\d{8})_(\d{3})_(\d{2})[._]")
"""ATL06_YYYYMMDDHHMMSS_TTTTCCSS_VVV_RR.h5: which granule (reference ground track TTTT, cycle CC and segment SS: one
granule each; not its start time, which a reprocessing may move) and which release of it (release VVV, revision RR).
A suffix after the revision (_SYNTHETIC, as this project names its made-up granules) keeps the name a release's."""
EARLY_RELEASES = 100
"""Release numbers from here up are the first processings' (version 1: the repo's sample granule is release 209, and
its identifier_product_doi is 10.5067/ATLAS/ATL06.001), older than every release numbered 001 to 099 since, which
count up with the product's version (005, 006, 007)."""


def _release_order(release: str, revision: str) -> tuple[bool, int, int]:
    """Sorts an ATL06 release and revision from oldest to newest (see EARLY_RELEASES)."""
    number = int(release)
    return number < EARLY_RELEASES, number, int(revision)

# The CMR formats are parsed in granulemap.cmr, which fills Granule.footprint; re-exported here for recipes.
__all__ = ["Ring", "footprint_from_legacy", "footprint_from_umm", "granule_time", "newest_releases",
           "parents_of_file", "parents_of_footprint", "time_window"]


def granule_time(name: str) -> dt.datetime | None:
    """The UTC time stamp in an ATL06 file name, or None if the name is not an ATL06 one."""
    return time_from_stamp(ATL06_STAMP, name)


DATA_SPAN = (dt.timedelta(minutes=5), dt.timedelta(minutes=95))
"""How long before and after its name's time an ATL06 granule's segments may lie. A granule is one of the 14
regions of one orbit (the RR of TTTTCCRR): its data lie within one orbit (94.2 minutes) of its start, which its name
gives (the repo's sample: named 23:56:45, nominal coverage 422 s, its data from 23:57:13). Five minutes before: a
margin, as the name is the region's start and no data precede it."""


def time_window(url: str, period: tuple[dt.date, dt.date]) -> TimeWindow | None:
    """The ``delta_time`` window of ``period`` (its first midnight to the one after its last day) for a granule whose
    segments may lie outside the period (its name is within ``DATA_SPAN`` of either midnight, or gives no time);
    None for one whose segments are all inside."""
    first, after = period_bounds(*period)
    when = granule_time(url)
    if when is not None and when - DATA_SPAN[0] >= first and when + DATA_SPAN[1] < after:
        return None
    return delta_time_window(first, after)


def newest_releases(granules: Sequence[Granule]) -> tuple[list[Granule], list[str]]:
    """(the granules with each ATL06 granule once, in its newest release; the file names of the older releases left
    out). CMR lists every version of ATL06 under one short name, and a folder may hold two: both counted would
    count every segment twice (doubled counts, a standard deviation of the mean too small by √2, statistics mixing
    two processings). Names that are not ATL06 release names are kept as they are. A first processing's release
    (209, say) is older than 005 (EARLY_RELEASES)."""
    names = [granule.url.rsplit("/", 1)[-1] for granule in granules]
    matches = [ATL06_RELEASE.match(name) for name in names]
    newest: dict[str, tuple[tuple[bool, int, int], int]] = {}  # granule → (its newest release, its first index)
    for i, match in enumerate(matches):
        if match is not None:
            release = _release_order(match[2], match[3])
            if match[1] not in newest or release > newest[match[1]][0]:
                newest[match[1]] = (release, i)
    keep = {i for _, i in newest.values()}
    kept = [g for i, (g, match) in enumerate(zip(granules, matches)) if match is None or i in keep]
    older = [name for i, (name, match) in enumerate(zip(names, matches)) if match is not None and i not in keep]
    return kept, older


def parents_of_footprint(rings: Sequence[Ring], order: int) -> np.ndarray:
    """Nested ids at ``order`` of the cells that the footprint's polygons touch."""
    return polygon_cells([([lat for _, lat in r], [lon for lon, _ in r]) for r in rings], order)


def parents_of_file(url: str, order: int, credentials: dict[str, str] | None = None,
                    times: TimeWindow | None = None) -> np.ndarray:
    """Nested ids at ``order`` of the cells holding at least one land-ice segment of the file (any quality; measured
    within ``times``)."""
    with Atl06Granule(url, local_path=local_path_of(url), credentials=credentials) as granule:
        found = [cell_ids(*beam_positions(granule, beam, times), order) for beam in granule.beams()]
    return np.unique(np.concatenate(found)) if found else np.empty(0, dtype=np.int64)
