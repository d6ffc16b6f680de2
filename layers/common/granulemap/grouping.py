"""How a per-granule recipe's granules become items (Processor calls): one each, or the granules of one dekad.

Every item costs the same whatever it holds: a Map child execution (its state transitions are most of a run's
cost in AWS, BENCHMARKS.md), a Lambda invocation, a result object to write and to read back, and locally the
engine's work per item, which was as much CPU as reducing a 0.25° granule. Grouping the granules of a dekad (the
1st-10th, 11th-20th and 21st-last day of a month, a period climatology uses) into one item divides all of that by
up to 11 for daily products.

Dekads follow the calendar, so the items of a monthly run are those of a yearly run over the same months: results
found done are reused either way. An item of one dekad is named by its first and last granule's date, its number
of granules and a digest of their file names and revisions, so a dekad whose granules differ (a range that starts
or ends inside it, a granule added since, or reprocessed under its name: ``Granule.revision``) is a different item,
computed anew. A one-granule item's id is the granule's file name, with a digest of its revision when it has one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from itertools import groupby

from granulemap.models import Granule, Grouping, Item, utc_day

REVISION_CUT = 190
"""A one-granule item's id keeps at most this much of the file name before its revision's ``-r`` and digest."""

MAX_GRANULES_PER_ITEM = 16
"""A dekad of a product with several granules a day is split into items of at most this many granules."""


def item_id_for(url: str) -> str:
    """An item id from a granule URL: its file name without extension, limited to safe characters."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    for ext in (".nc", ".h5", ".nc4", ".hdf5", ".he5"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    safe = "".join(c if c.isalnum() or c in "._=+-" else "_" for c in name)
    return safe[:200]


def dekad_of(day: dt.date) -> tuple[int, int, int]:
    """(year, month, dekad) of a day: dekad 0 is days 1-10, 1 is days 11-20, 2 is day 21 to the month's end."""
    return day.year, day.month, min((day.day - 1) // 10, 2)


def granules_digest(granules: list[Granule], length: int = 10) -> str:
    """A digest of ``granules``' file names and revisions (``Granule.revision``), in any order: for an item id that
    changes when its granules do, whether one is added or left out, or replaced under its name."""
    lines = sorted(g.url.rsplit("/", 1)[-1] + (f"\t{g.revision}" if g.revision else "") for g in granules)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:length]


def item_of(granules: list[Granule]) -> Item:
    """An item of ``granules`` (in time order) whose id names them: a lone granule's file name (with a digest of its
    revision when it has one), else the first and last day, the count and a digest of the file names and revisions.
    An item's id is the key its result is stored, and reused, under: a recipe's ``make_items`` gives each item an
    id that changes when its granules do, as this one does."""
    if len(granules) == 1:
        name = item_id_for(granules[0].url)
        if not granules[0].revision:
            return Item(id=name, granules=granules)
        return Item(id=f"{name[:REVISION_CUT]}-r{granules_digest(granules, 8)}", granules=granules)
    digest = granules_digest(granules)
    first, last = granules[0].time, granules[-1].time
    assert first is not None and last is not None
    return Item(id=f"{first:%Y%m%d}-{last:%Y%m%d}-{len(granules)}g-{digest}", granules=granules)


def group_granules(granules: list[Granule], grouping: Grouping) -> list[Item]:
    """Items of ``granules`` (in time order), grouped by ``grouping``; a granule without a time is an item alone."""
    if grouping == "granule":
        return [item_of([g]) for g in granules]
    untimed = [g for g in granules if g.time is None]
    timed = sorted((g for g in granules if g.time is not None), key=lambda g: (g.time, g.url))
    items = []
    for _, members in groupby(timed, key=lambda g: dekad_of(utc_day(g.time))):  # type: ignore[union-attr]
        group = list(members)
        for i in range(0, len(group), MAX_GRANULES_PER_ITEM):
            items.append(item_of(group[i:i + MAX_GRANULES_PER_ITEM]))
    return items + group_granules(untimed, "granule")
