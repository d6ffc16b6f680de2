"""Agreement with zagg 0.61, the reference ATL06 aggregator, run side by side on the same parent cells.

zagg reads with h5coro, filters atl06_quality_summary == 0, assigns cells with mortie (order-29 points coarsened)
and reduces with numpy; it does not mask the h_li fill value. Counts, minima and maxima must be identical, the
other statistics equal within 1e-6 relative (zagg stores float32).
"""

# ruff: noqa: F811  (test parameters take the names of the fixtures imported from the support module)

from __future__ import annotations

import logging
from pathlib import Path

import mortie
import numpy as np
import pytest
import zarr
from h5coro.filedriver import FileDriver

from granulemap.recipes.atl06.stats import STATISTICS

from test_atl06_synthetic_granule import (  # noqa: F401  (fixtures are imported by name, for pytest)
    ATL06_FILL,
    CHILD_ORDER,
    DATA,
    N_CHILDREN,
    PARENT_ORDER,
    REAL_GRANULE,
    SITE,
    SYNTHETIC_ONE,
    SYNTHETIC_TWO,
    MotoS3,
    PipelineRun,
    centre,
    granule_one,
    granule_two,
    moto_s3,
    real_run,
    synthetic_dir,
    synthetic_run,
    without_unusable_values,
    write_granule,
)

import zagg.config as zagg_config  # noqa: E402  (pinned in requirements-dev.txt: a missing zagg fails, not skips)
from zagg.grids.healpix import HealpixGrid  # noqa: E402
from zagg.processing import process_shard  # noqa: E402

EXACT = ("count", "h_min", "h_max")

pytestmark = [
    # zagg reads the beams the synthetic files lack through h5coro, which warns with a deprecated call
    pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated:DeprecationWarning"),
    # zagg squares the fill value 3.4e38 when it is given the synthetic granules with their fills
    pytest.mark.filterwarnings("ignore:overflow encountered in square:RuntimeWarning"),
]


def zagg_parent(parent: int, files: list[Path]) -> dict[str, np.ndarray]:
    """zagg's statistics of every child cell of nested parent ``parent`` (dense, in nested order)."""
    config = zagg_config.default_config("atl06")
    grid = HealpixGrid(parent_order=PARENT_ORDER, child_order=CHILD_ORDER, config=config)
    lat, lon = centre(parent, PARENT_ORDER)
    shard = int(mortie.geo2mort(lat, lon, order=PARENT_ORDER)[0])  # zagg keys shards by mortie word
    assert int(mortie.mort2healpix(shard)[0]) == parent
    logging.getLogger("zagg").setLevel(logging.ERROR)
    frame, meta = process_shard(grid, shard, [str(f) for f in files], s3_credentials={}, h5coro_driver=FileDriver,
                                config=config, handoff="pandas")
    children, _ = mortie.mort2healpix(grid.children(shard))
    np.testing.assert_array_equal(children, np.arange(parent * N_CHILDREN, (parent + 1) * N_CHILDREN))
    if frame.empty:  # zagg reports "No data after filtering" with no rows
        return {"count": np.zeros(N_CHILDREN, np.int64)}
    return {name: frame[name].to_numpy() for name in STATISTICS}


def ours_parent(run: PipelineRun, parent: int) -> dict[str, np.ndarray]:
    """The statistics of ``parent``'s children in the run's period of the store."""
    group = zarr.open_group(run.store, mode="r")
    parents = list(group.attrs["parent_cells"])
    k, t = parents.index(parent), run.time_index()
    region = slice(k * N_CHILDREN, (k + 1) * N_CHILDREN)
    np.testing.assert_array_equal(group["cell_ids"][region], np.arange(parent * N_CHILDREN, (parent + 1) * N_CHILDREN))
    return {name: np.asarray(group[name][t, region]) for name in STATISTICS}


def assert_agree(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> int:
    np.testing.assert_array_equal(ours["count"], theirs["count"])
    filled = theirs["count"] > 0
    for name in STATISTICS:
        if name == "count" or not filled.any():
            continue
        mine, ref = ours[name][filled], theirs[name][filled].astype(np.float64)
        if name in EXACT:  # h_li is float32: the extremes are the same float32 numbers, exactly
            np.testing.assert_array_equal(mine, ref, err_msg=name)
        else:
            np.testing.assert_allclose(mine, ref, rtol=1e-6, atol=0, err_msg=name)
    return int(filled.sum())


def test_agrees_with_zagg_on_the_real_granule(real_run: PipelineRun) -> None:
    # This granule has no fill value among its quality-0 segments, so zagg needs no help here.
    from netCDF4 import Dataset

    with Dataset(REAL_GRANULE) as ds:
        fills_kept_by_zagg = sum(
            int(np.sum((ds[f"{b}/land_ice_segments/h_li"][:].data == ATL06_FILL)
                       & (ds[f"{b}/land_ice_segments/atl06_quality_summary"][:] == 0)))
            for b in ("gt1l", "gt1r", "gt2l", "gt2r", "gt3l", "gt3r"))
    assert fills_kept_by_zagg == 0
    run = real_run
    parents = sorted(r["parent_cell"] for r in run.results.values())
    assert len(parents) == 3 and not run.failures
    compared = sum(assert_agree(ours_parent(run, p), zagg_parent(p, [REAL_GRANULE])) for p in parents)
    assert compared == sum(r["cells_with_data"] for r in run.results.values()) > 0


def test_agrees_with_zagg_on_synthetic_granules_with_fills_removed_for_zagg(
        synthetic_run: PipelineRun, synthetic_dir: Path, tmp_path: Path) -> None:
    # The synthetic granules hold fill values (and a NaN) with quality 0, which zagg would average in. So zagg gets
    # the same granules written without them, while we read the originals and must mask them ourselves.
    for name, beams in ((SYNTHETIC_ONE, granule_one()), (SYNTHETIC_TWO, granule_two())):
        write_granule(tmp_path / name, without_unusable_values(beams))
    run = synthetic_run
    assert not run.failures
    for parent in (SITE.parent, SITE.neighbour, SITE.empty_parent):
        theirs = zagg_parent(parent, sorted(tmp_path.iterdir()))
        assert_agree(ours_parent(run, parent), theirs)
    with_fills = zagg_parent(SITE.parent, sorted(synthetic_dir.iterdir()))
    a = SITE.cell_a - SITE.parent * N_CHILDREN
    assert with_fills["count"][a] > ours_parent(run, SITE.parent)["count"][a]  # zagg counts the fills
