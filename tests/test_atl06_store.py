"""The Zarr store under concurrent writers: one parent cell, one chunk, so neighbours never lose each other's data."""

# ruff: noqa: F811  (test parameters take the names of the fixtures imported from the support module)

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from granulemap import layout
from granulemap.errors import StorageThrottled
from granulemap.recipes.atl06.stats import STATISTICS, cell_statistics
from granulemap.recipes.atl06.store import (
    OutputStoreMismatch,
    StoreLayout,
    ensure_template,
    s3_store,
    storage_errors,
    write_parent,
)

from test_atl06_synthetic_granule import (  # noqa: F401  (fixtures are imported by name, for pytest)
    N_CHILDREN,
    SITE,
    MotoS3,
    moto_s3,
    run_pipeline,
    synthetic_dir,
)


def _process_when_both_are_ready(barrier: Any, item: dict, run: dict, results: Any) -> None:
    """Runs in its own process, as a Processor Lambda would: parse, wait for the other writer, process."""
    from granulemap.granule_access import GranuleAccess
    from granulemap.models import Item, RunContext
    from granulemap.recipes import get_recipe

    recipe = get_recipe("atl06-cell-stats")
    run_context = RunContext.model_validate(run)
    params = recipe.parse_params(run_context.params)
    barrier.wait(timeout=60)
    results.put(recipe.process(Item.model_validate(item), params, GranuleAccess(run_context), run_context))


def test_two_writers_on_neighbouring_parent_cells_lose_nothing(moto_s3: MotoS3, synthetic_dir: Path) -> None:
    catalogued = run_pipeline(synthetic_dir, moto_s3, "2019-03-05", "2019-03-27", aggregate=False)
    run = catalogued.catalog.run
    pair = [i for i in catalogued.items if i.extra.get("parent_cell") in (SITE.parent, SITE.neighbour)]
    assert len(pair) == 2
    store = s3_store(moto_s3.bucket, layout.output_key(run.recipe, run.config_id, "atl06-cell-stats.zarr"))
    group = zarr.open_group(store, mode="r+")
    for name in STATISTICS:  # wipe what the sequential pass wrote, so only the concurrent writers count
        group[name][:] = np.full(group[name].shape, 0 if name == "count" else np.nan)

    # Separate processes, as Lambdas are. A fork server that has imported the recipe once starts them quickly.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["granulemap.recipes.atl06_cell_stats", "zarr", "s3fs"])
    barrier, results = ctx.Barrier(2), ctx.Queue()
    workers = [ctx.Process(target=_process_when_both_are_ready,
                           args=(barrier, i.model_dump(mode="json"), run.model_dump(mode="json"), results))
               for i in pair]
    for w in workers:
        w.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    assert {o["parent_cell"] for o in outcomes} == {SITE.parent, SITE.neighbour}

    group = zarr.open_group(store, mode="r")
    cells, count, h_mean = (np.asarray(group[n][:]) for n in ("cell_ids", "count", "h_mean"))
    by_cell = dict(zip(cells.tolist(), zip(count.tolist(), h_mean.tolist(), strict=True), strict=True))
    # parent P: cell A holds 10, 12, 14, 20 (σ 1, 1, 2, 2) and 16 (σ 1); cell B holds -5.5
    assert by_cell[SITE.cell_a][0] == 5
    assert by_cell[SITE.cell_a][1] == pytest.approx((10 + 12 + 14 / 4 + 20 / 4 + 16) / 3.5, rel=1e-12)
    assert by_cell[SITE.cell_b] == (1, -5.5)
    # its neighbour Q: 3 (σ 0.1) and 4 (σ 0.2) in one cell, 2 in the next
    q = SITE.neighbour * N_CHILDREN
    assert by_cell[q + 7][0] == 2 and by_cell[q + 7][1] == pytest.approx((300 + 100) / (100 + 25), rel=1e-12)
    assert by_cell[q + 8] == (1, 2.0)
    per_parent = {o["parent_cell"]: o["segments"] for o in outcomes}
    for parent, segments in per_parent.items():
        block = (cells // N_CHILDREN) == parent
        assert count[block].sum() == segments


def test_each_parent_region_is_exactly_one_chunk_of_its_own(moto_s3: MotoS3) -> None:
    store_layout = StoreLayout.of(6, 12, [SITE.neighbour, SITE.parent, SITE.empty_parent])
    key = "outputs/atl06-cell-stats/chunk-test/atl06-cell-stats.zarr"
    store = s3_store(moto_s3.bucket, key)
    assert ensure_template(store, store_layout)
    for parent in store_layout.parents:
        cells = np.array([parent * N_CHILDREN, parent * N_CHILDREN + N_CHILDREN - 1])
        write_parent(store, store_layout.layout_id, parent, cell_statistics(cells, np.array([1.0, 2.0]),
                                                                             np.array([1.0, 1.0])))
    listed = moto_s3.client.list_objects_v2(Bucket=moto_s3.bucket, Prefix=f"{key}/h_mean/c/")
    assert sorted(o["Key"].rsplit("/", 1)[-1] for o in listed["Contents"]) == ["0", "1", "2"]
    group = zarr.open_group(store, mode="r")
    assert group["h_mean"].chunks == (N_CHILDREN,)
    assert group["cell_ids"][N_CHILDREN] == store_layout.parents[1] * N_CHILDREN
    for k, parent in enumerate(store_layout.parents):
        assert store_layout.region(parent) == slice(k * N_CHILDREN, (k + 1) * N_CHILDREN)
        np.testing.assert_array_equal(group["count"][store_layout.region(parent)][[0, -1]], [1, 1])


def test_a_processor_refuses_a_store_built_for_another_catalog(moto_s3: MotoS3) -> None:
    key = "outputs/atl06-cell-stats/mismatch-test/atl06-cell-stats.zarr"
    store = s3_store(moto_s3.bucket, key)
    old = StoreLayout.of(6, 12, [SITE.parent])
    new = StoreLayout.of(6, 12, [SITE.parent, SITE.neighbour])
    ensure_template(store, new)
    empty = cell_statistics(np.empty(0, np.int64), np.empty(0), np.empty(0))
    with pytest.raises(OutputStoreMismatch, match="run this execution again"):
        write_parent(store, old.layout_id, SITE.parent, empty)
    with pytest.raises(OutputStoreMismatch, match="not in the output store"):
        new.region(SITE.empty_parent)
    assert not ensure_template(store, new) and ensure_template(store, old)  # same layout kept, another rebuilt


def test_s3_failures_are_retried_unless_the_key_is_missing_or_refused() -> None:
    with pytest.raises(StorageThrottled, match="writing parent cell 7"):
        with storage_errors("writing parent cell 7"):
            raise OSError("503 Slow Down")
    for permanent in (FileNotFoundError("no such key"), PermissionError("Access Denied")):
        with pytest.raises(type(permanent)), storage_errors("reading"):
            raise permanent


def test_a_template_left_half_made_is_rebuilt(moto_s3: MotoS3) -> None:
    store = s3_store(moto_s3.bucket, "outputs/atl06-cell-stats/half-made/atl06-cell-stats.zarr")
    zarr.create_group(store, overwrite=True, attributes={"title": "a BuildCatalog that died here"})
    store_layout = StoreLayout.of(6, 12, [SITE.parent])
    assert ensure_template(store, store_layout)
    group = zarr.open_group(store, mode="r")
    assert group.attrs["layout_id"] == store_layout.layout_id and set(STATISTICS) <= set(group.array_keys())
