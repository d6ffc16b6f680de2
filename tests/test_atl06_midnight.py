"""ATL06 granules that cross midnight: a granule is one stretch of an orbit, and one that starts before a period's
first or last midnight holds segments of two periods. Each period gets the segments measured in it, by their own
times (``delta_time``), whichever period the granule's name falls in.

Expected values are computed here from the segments the tests write and their times, and delta_time from its
definition (GPS seconds since the ATLAS SDP epoch), not from granulemap's conversion.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import netCDF4
import numpy as np
import pytest

from granulemap.recipes.atl06.footprints import time_window
from granulemap.recipes.atl06.granule import Atl06Granule, delta_time_window, segments_in_parent
from test_atl06_synthetic_granule import (  # noqa: F401  (fixtures are imported by name, for pytest)
    ATL06_FILL,
    BEAMS,
    GPS_EPOCH,
    GPS_MINUS_UTC,
    PARENT_ORDER,
    REAL_GRANULE,
    SITE,
    MotoS3,
    Segment,
    centre,
    delta_time,
    moto_s3,
    run_pipeline,
    wgs84_cells,
    write_granule,
)

ORDER = 13
PARAMS = {"parent_order": PARENT_ORDER, "child_order": ORDER}  # a store of its own
K = 4 ** (ORDER - PARENT_ORDER)
CELL_A, CELL_B = SITE.parent * K + 100, SITE.parent * K + 9000
DECEMBER = ("2020-12-01", "2020-12-31")
JANUARY = ("2021-01-01", "2021-01-31")


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def at(cell: int, h: float, when: str) -> Segment:
    lat, lon = centre(cell, ORDER)
    return Segment(lat=lat, lon=lon, h=h, sigma=1.0, time=utc(when))


GRANULES = {
    # named 23:30 on the 31st, every segment before midnight: December's only
    "ATL06_20201231233000_00010101_006_01_SYNTHETIC.h5": {"gt1l": [at(CELL_A, 30.0, "2020-12-31T23:31:00")]},
    # named 23:58, crossing midnight: its segments go to the month they were measured in (midnight is January's)
    "ATL06_20201231235800_00020101_006_01_SYNTHETIC.h5": {
        "gt1l": [at(CELL_A, 10.0, "2020-12-31T23:59:30"), at(CELL_B, 20.0, "2021-01-01T00:00:30")],
        "gt2r": [at(CELL_A, 11.0, "2020-12-31T23:59:59.500"), at(CELL_B, 21.0, "2021-01-01T00:00:00")],
    },
    # named 00:02 on the 1st: January's only
    "ATL06_20210101000200_00030101_006_01_SYNTHETIC.h5": {"gt1l": [at(CELL_B, 40.0, "2021-01-01T00:02:30")]},
}


@pytest.fixture(scope="module")
def crossing_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("atl06-midnight")
    for name, beams in GRANULES.items():
        write_granule(directory / name, beams, empty_beam_groups=())
    return directory


def expected(period: tuple[str, str]) -> dict[int, list[float]]:
    """The heights measured in the period's days (UTC), by cell."""
    first, end = utc(period[0]), utc(period[1]) + dt.timedelta(days=1)
    found: dict[int, list[float]] = {}
    for beams in GRANULES.values():
        for segments in beams.values():
            for s in segments:
                assert s.time is not None
                if first <= s.time < end:
                    found.setdefault(int(wgs84_cells(s.lat, s.lon, ORDER)[0]), []).append(s.h)
    return found


def test_the_test_cells_are_where_their_segments_are() -> None:
    for cell in (CELL_A, CELL_B):
        lat, lon = centre(cell, ORDER)
        assert int(wgs84_cells(lat, lon, ORDER)[0]) == cell and cell // K == SITE.parent
    assert set(expected(DECEMBER)) == {CELL_A} and set(expected(JANUARY)) == {CELL_B}


@pytest.mark.parametrize("period", [DECEMBER, JANUARY], ids=["december", "january"])
def test_each_month_gets_the_segments_measured_in_it(moto_s3: MotoS3, crossing_dir: Path,
                                                     period: tuple[str, str]) -> None:
    run = run_pipeline(crossing_dir, moto_s3, *period, params=PARAMS)
    assert run.summary is not None and run.summary.status == "SUCCEEDED" and not run.failures
    ds = run.dataset()
    cells, count = ds["cell_ids"].values, ds["count"].values
    want = expected(period)
    for cell, heights in want.items():
        i = int(np.flatnonzero(cells == cell)[0])
        assert int(count[i]) == len(heights), cell
        assert float(ds["h_mean"].values[i]) == pytest.approx(np.mean(heights), rel=1e-12)  # σ 1: the plain mean
        assert (float(ds["h_min"].values[i]), float(ds["h_max"].values[i])) == (min(heights), max(heights))
    assert int(count.sum()) == sum(len(h) for h in want.values())  # nothing of the other month
    # The items read only the granules with segments of the period: the files named within a granule's length of
    # a midnight are looked into by their segments' times (the 23:30 granule is not January's, 00:02 not December's)
    read = {g.url.rsplit("/", 1)[-1] for item in run.items for g in item.granules}
    before, crossing, after = sorted(GRANULES)
    assert read == ({before, crossing} if period == DECEMBER else {crossing, after})


def test_delta_time_is_seconds_since_2018_in_utc_on_the_real_granule() -> None:
    """The real granule's first and last segment times, converted by granulemap's window, are the UTC times its
    ancillary_data states, and its atlas_sdp_gps_epoch is the epoch the synthetic files assume."""
    with netCDF4.Dataset(REAL_GRANULE) as ds:
        anc = ds["ancillary_data"]
        epoch = float(anc["atlas_sdp_gps_epoch"][0])
        first_dt, last_dt = float(anc["start_delta_time"][0]), float(anc["end_delta_time"][0])
        first_utc, last_utc = (utc(str(anc[name][0]).rstrip("Z")) for name in ("data_start_utc", "data_end_utc"))
    by_gps = GPS_EPOCH + dt.timedelta(seconds=epoch + first_dt - GPS_MINUS_UTC)
    assert abs((by_gps - first_utc).total_seconds()) < 1e-3
    assert abs(delta_time(last_utc) - last_dt) < 1e-3
    window = delta_time_window(first_utc, last_utc)  # granulemap's conversion
    assert window[0] == pytest.approx(first_dt, abs=1e-3) and window[1] == pytest.approx(last_dt, abs=1e-3)


def _good_segment_times() -> np.ndarray:
    """Independently (netCDF4): the delta_time of the real granule's good segments."""
    times = []
    with netCDF4.Dataset(REAL_GRANULE) as ds:
        for beam in BEAMS:
            g = ds[f"{beam}/land_ice_segments"]
            g.set_auto_maskandscale(False)
            h, s = g["h_li"][:].astype(np.float64), g["h_li_sigma"][:].astype(np.float64)
            ok = ((g["atl06_quality_summary"][:] == 0) & np.isfinite(h) & (h != float(ATL06_FILL)) & np.isfinite(s)
                  & (s != float(ATL06_FILL)) & (s > 0))
            times.append(g["delta_time"][:][ok])
    return np.concatenate(times)


def test_the_real_granule_split_at_a_time_gives_each_side_its_own_segments() -> None:
    parents = (44325, 44338)  # the parent cells holding the real granule's good segments (order 6)
    good = _good_segment_times()
    cut = float(np.median(good))
    want_before, want_after = int(np.sum(good < cut)), int(np.sum(good >= cut))
    assert want_before > 0 and want_after > 0
    whole = (-1e12, 1e12)
    with Atl06Granule(str(REAL_GRANULE), local_path=str(REAL_GRANULE), credentials=None) as granule:
        got = {name: [segments_in_parent(granule, p, PARENT_ORDER, 12, window) for p in parents]
               for name, window in (("before", (whole[0], cut)), ("after", (cut, whole[1])), ("all", whole),
                                    ("unfiltered", None))}
    sizes = {name: sum(s.cells.size for s in parts) for name, parts in got.items()}
    assert (sizes["before"], sizes["after"]) == (want_before, want_after)
    assert sizes["all"] == sizes["unfiltered"] == want_before + want_after
    # the two sides are the unfiltered segments split, cells and heights
    for field in ("cells", "h_li"):
        sides = np.concatenate([getattr(p, field) for p in got["before"] + got["after"]])
        whole_read = np.concatenate([getattr(p, field) for p in got["unfiltered"]])
        np.testing.assert_array_equal(np.sort(sides), np.sort(whole_read))


@pytest.mark.parametrize(("name", "needs"), [
    ("ATL06_20201215120000_00010101_006_01.h5", False),  # mid-month: every segment inside
    ("ATL06_20201231233000_00010101_006_01.h5", True),  # may run past the last midnight
    ("ATL06_20201130235800_00010101_006_01.h5", True),  # named the day before, may hold the first day's
    ("ATL06_20201201000100_00010101_006_01.h5", True),  # named just after the first midnight
    ("not-an-atl06-name.h5", True),  # no time: always read by its segments' times
])
def test_only_granules_near_a_period_edge_read_their_segments_times(name: str, needs: bool) -> None:
    window = time_window(name, (dt.date(2020, 12, 1), dt.date(2020, 12, 31)))
    assert (window is not None) == needs
    if window is not None:  # [1 December, 1 January) UTC, by delta_time's definition
        assert window == (pytest.approx(delta_time(utc("2020-12-01T00:00:00"))),
                          pytest.approx(delta_time(utc("2021-01-01T00:00:00"))))


def test_items_holding_a_granule_near_a_midnight_are_not_those_an_earlier_version_computed(
        moto_s3: MotoS3, crossing_dir: Path, tmp_path: Path) -> None:
    """Before segments were dated by their own times, a crossing granule's segments all went to the period of its
    name, and the item's result was stored under an id made of the store and the granules. A run of such a period
    must compute those items again (another id), and skip nothing it need not: an item of granules far from both
    midnights keeps the id it had (granule revisions aside, which came later and changed every id once)."""
    import hashlib

    far = "ATL06_20201215120000_00040101_006_01_SYNTHETIC.h5"  # mid-December
    for name in (*GRANULES, far):
        source = crossing_dir / name
        if source.exists():
            (tmp_path / name).write_bytes(source.read_bytes())
    elsewhere = SITE.neighbour * K + 100  # another parent cell: an item of its own
    write_granule(tmp_path / far, {"gt1l": [at(elsewhere, 50.0, "2020-12-15T12:00:30")]}, empty_beam_groups=())
    run = run_pipeline(tmp_path, moto_s3, *DECEMBER, params={**PARAMS, "child_order": 14})  # a store of its own
    cells = [i for i in run.items if "parent_cell" in i.extra]
    assert sorted(i.extra["parent_cell"] for i in cells) == sorted([SITE.parent, SITE.neighbour])
    for item in cells:
        urls = sorted(g.url for g in item.granules)
        # as that version named the granules, with the revisions (Granule.revision) ids have held since
        named = sorted(g.url + (f"\t{g.revision}" if g.revision else "") for g in item.granules)
        text = "\n".join([item.extra["store_id"], *named])
        earlier = f"{item.id.rsplit('-', 1)[0]}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
        near_a_midnight = any(Path(u).name != far for u in urls)
        assert (item.id != earlier) == near_a_midnight, (item.id, urls)


def test_a_month_given_as_a_period_with_only_the_evening_before_is_not_published(moto_s3: MotoS3, crossing_dir: Path,
                                                                               tmp_path: Path) -> None:
    """January's run as a period, over a folder with only the granule crossing New Year's midnight: the granule is
    January's for its segments after midnight, but NASA has not published January's granules: the month is refused
    (else it would be summarized from two minutes of data and never run again), as with no granule at all."""
    from granulemap.errors import NoGranulesFound

    (tmp_path / sorted(GRANULES)[1]).write_bytes((crossing_dir / sorted(GRANULES)[1]).read_bytes())
    with pytest.raises(NoGranulesFound, match="no granules in .* for 2021-01-01..2021-01-31"):
        run_pipeline(tmp_path, moto_s3, None, None, now=utc("2021-02-10T00:00:00"), params=PARAMS, period="2021-01")


def test_a_recipe_with_a_data_span_may_give_naive_times() -> None:
    """A recipe's granule_time without a zone (taken as UTC, as everywhere): no error comparing it."""
    from granulemap.models import may_hold_data_in

    span = (dt.timedelta(minutes=5), dt.timedelta(minutes=95))
    day = dt.date(2021, 1, 1)
    assert may_hold_data_in(dt.datetime(2020, 12, 31, 23, 0), day, day, span)  # its data may run past midnight
    assert not may_hold_data_in(dt.datetime(2020, 12, 31, 22, 0), day, day, span)
    assert may_hold_data_in(dt.datetime(2021, 1, 1, 23, 56), day, day, span)
    assert not may_hold_data_in(dt.datetime(2021, 1, 2, 0, 5), day, day, span)  # 5 minutes: the margin's end
