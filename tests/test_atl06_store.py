"""The cumulative Zarr store: one chunk per (period, parent cell), so concurrent writers never lose each other's
data, and growth by later runs only appends, so nothing written moves."""

# ruff: noqa: F811  (test parameters take the names of the fixtures imported from the support module)

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr

from granulemap import layout
from granulemap.errors import StorageThrottled
from granulemap.recipes.atl06.stats import STATISTICS, cell_statistics
from granulemap.recipes.atl06 import store as store_module
from granulemap.recipes.atl06.store import (
    OutputStoreMismatch,
    grow,
    read_layout,
    read_period,
    storage_errors,
    write_parent,
)
from granulemap.storage import zarr_store

from test_atl06_synthetic_granule import (  # noqa: F401  (fixtures are imported by name, for pytest)
    N_CHILDREN,
    SITE,
    MotoS3,
    moto_s3,
    run_pipeline,
    synthetic_dir,
)

MARCH = (dt.date(2019, 3, 1), dt.date(2019, 3, 31))
APRIL = (dt.date(2019, 4, 1), dt.date(2019, 4, 30))


def _two_cells(parent: int, heights: tuple[float, float]) -> Any:
    """Statistics of one segment in the first and one in the last child of ``parent`` (σ 1)."""
    cells = np.array([parent * N_CHILDREN, parent * N_CHILDREN + N_CHILDREN - 1])
    return cell_statistics(cells, np.array(heights), np.array([1.0, 1.0]))


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
    store = zarr_store(moto_s3.bucket, layout.output_key(run.recipe, run.config_id, "atl06-cell-stats.zarr"))
    t = catalogued.time_index()
    group = zarr.open_group(store, mode="r+")
    for name in STATISTICS:  # wipe what the sequential pass wrote, so only the concurrent writers count
        group[name][t, :] = np.full(group[name].shape[1], 0 if name == "count" else np.nan)

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
    cells = np.asarray(group["cell_ids"][:])
    count, h_mean = (np.asarray(group[n][t, :]) for n in ("count", "h_mean"))
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


def test_each_period_and_parent_is_exactly_one_chunk_of_its_own(moto_s3: MotoS3) -> None:
    key = "outputs/atl06-cell-stats/chunk-test/atl06-cell-stats.zarr"
    store = zarr_store(moto_s3.bucket, key)
    store_layout = grow(store, 6, 12, [SITE.neighbour, SITE.parent, SITE.empty_parent], MARCH)
    assert store_layout.parents == tuple(sorted([SITE.neighbour, SITE.parent, SITE.empty_parent]))
    for parent in store_layout.parents:
        write_parent(store, store_layout.store_id, parent, MARCH, _two_cells(parent, (1.0, 2.0)))
    listed = moto_s3.client.list_objects_v2(Bucket=moto_s3.bucket, Prefix=f"{key}/h_mean/c/")
    assert sorted(o["Key"].rsplit("/c/", 1)[-1] for o in listed["Contents"]) == ["0/0", "0/1", "0/2"]
    group = zarr.open_group(store, mode="r")
    assert group["h_mean"].chunks == (1, N_CHILDREN) and group["h_mean"].shape == (1, 3 * N_CHILDREN)
    for k, parent in enumerate(store_layout.parents):
        block = slice(k * N_CHILDREN, (k + 1) * N_CHILDREN)
        assert store_layout.region(parent) == block
        np.testing.assert_array_equal(group["cell_ids"][block], np.arange(parent * N_CHILDREN,
                                                                          (parent + 1) * N_CHILDREN))
        np.testing.assert_array_equal(group["count"][0, block][[0, 1, -1]], [1, 0, 1])


def test_growing_appends_periods_and_parents_and_moves_nothing(moto_s3: MotoS3) -> None:
    key = "outputs/atl06-cell-stats/growth-test/atl06-cell-stats.zarr"
    store = zarr_store(moto_s3.bucket, key)
    march = grow(store, 6, 12, [SITE.parent, SITE.neighbour], MARCH)
    for parent, heights in ((SITE.parent, (1.0, 2.0)), (SITE.neighbour, (3.0, 4.0))):
        write_parent(store, march.store_id, parent, MARCH, _two_cells(parent, heights))
    before = xr.open_zarr(store).load()

    april = grow(store, 6, 12, [SITE.empty_parent, SITE.parent], APRIL)  # one parent known, one new
    assert april.store_id == march.store_id
    assert april.parents == (*march.parents, SITE.empty_parent) and april.periods == (MARCH, APRIL)
    write_parent(store, april.store_id, SITE.empty_parent, APRIL, _two_cells(SITE.empty_parent, (5.0, 6.0)))
    after = xr.open_zarr(store).load()
    assert dict(after.sizes) == {"time": 2, "cells": 3 * N_CHILDREN, "nv": 2}
    old = slice(0, 2 * N_CHILDREN)
    np.testing.assert_array_equal(after["cell_ids"].values[old], before["cell_ids"].values)
    np.testing.assert_array_equal(after["cell_ids"].values[old.stop:],
                                  np.arange(SITE.empty_parent * N_CHILDREN, (SITE.empty_parent + 1) * N_CHILDREN))
    for name in STATISTICS:  # March as it was; the new parent's March block and April's old blocks all fill
        np.testing.assert_array_equal(after[name].values[0, old], before[name].values[0], err_msg=name)
    assert after["count"].values[0, old.stop:].sum() == 0 and after["count"].values[1, old].sum() == 0
    assert after["count"].values[1, old.stop:].sum() == 2 and np.nanmax(after["h_max"].values[1]) == 6.0
    # CF time: each period's first day, and bounds [first day, day after the last day)
    np.testing.assert_array_equal(after["time"].values, np.array(["2019-03-01", "2019-04-01"], "datetime64[ns]"))
    np.testing.assert_array_equal(after["time_bounds"].values, np.array(
        [["2019-03-01", "2019-04-01"], ["2019-04-01", "2019-05-01"]], "datetime64[ns]"))

    # the same period and parents again (a re-run): nothing is written, not even metadata
    root = moto_s3.client.head_object(Bucket=moto_s3.bucket, Key=f"{key}/zarr.json")["ETag"]
    assert grow(store, 6, 12, [SITE.parent], APRIL) == april
    assert moto_s3.client.head_object(Bucket=moto_s3.bucket, Key=f"{key}/zarr.json")["ETag"] == root


def test_a_processor_refuses_a_store_or_region_it_was_not_catalogued_for(moto_s3: MotoS3) -> None:
    key = "outputs/atl06-cell-stats/mismatch-test/atl06-cell-stats.zarr"
    store = zarr_store(moto_s3.bucket, key)
    made = grow(store, 6, 12, [SITE.parent], MARCH)
    empty = cell_statistics(np.empty(0, np.int64), np.empty(0), np.empty(0))
    with pytest.raises(OutputStoreMismatch, match="start the execution again"):
        write_parent(store, "another-store", SITE.parent, MARCH, empty)
    with pytest.raises(OutputStoreMismatch, match=f"parent cell {SITE.neighbour} is not in"):
        write_parent(store, made.store_id, SITE.neighbour, MARCH, empty)
    with pytest.raises(OutputStoreMismatch, match="period 2019-04-01..2019-04-30 is not in"):
        write_parent(store, made.store_id, SITE.parent, APRIL, empty)
    with pytest.raises(OutputStoreMismatch, match="orders 6/12, not 6/13"):
        grow(store, 6, 13, [SITE.parent], MARCH)
    gone = zarr_store(moto_s3.bucket, "outputs/atl06-cell-stats/never-made/atl06-cell-stats.zarr")
    with pytest.raises(OutputStoreMismatch, match="found no output store"):
        write_parent(gone, made.store_id, SITE.parent, MARCH, empty)


def test_s3_failures_are_retried_unless_the_key_is_missing_or_refused() -> None:
    with pytest.raises(StorageThrottled, match="writing parent cell 7"):
        with storage_errors("writing parent cell 7"):
            raise OSError("503 Slow Down")
    for permanent in (FileNotFoundError("no such key"), PermissionError("Access Denied")):
        with pytest.raises(type(permanent)), storage_errors("reading"):
            raise permanent


def test_a_store_left_half_made_is_made_again(moto_s3: MotoS3) -> None:
    store = zarr_store(moto_s3.bucket, "outputs/atl06-cell-stats/half-made/atl06-cell-stats.zarr")
    zarr.create_group(store, overwrite=True, attributes={"title": "a BuildCatalog that died here"})
    assert read_layout(store) is None
    made = grow(store, 6, 12, [SITE.parent], MARCH)
    group = zarr.open_group(store, mode="r")
    assert group.attrs["store_id"] == made.store_id and set(STATISTICS) <= set(group.array_keys())


def test_a_store_that_is_not_ours_is_never_replaced(moto_s3: MotoS3) -> None:
    key = "outputs/atl06-cell-stats/foreign/atl06-cell-stats.zarr"
    store = zarr_store(moto_s3.bucket, key)
    made = grow(store, 6, 12, [SITE.parent], MARCH)
    write_parent(store, made.store_id, SITE.parent, MARCH, _two_cells(SITE.parent, (1.0, 2.0)))
    group = zarr.open_group(store, mode="r+")
    group.attrs["periods"] = "March"  # damaged: its layout cannot be read
    with pytest.raises(OutputStoreMismatch, match="cannot be read"):
        grow(store, 6, 12, [SITE.parent], APRIL)
    chunk = json.loads(moto_s3.client.get_object(Bucket=moto_s3.bucket, Key=f"{key}/count/zarr.json")["Body"].read())
    assert chunk["shape"] == [1, N_CHILDREN]  # untouched
    assert zarr.open_group(store, mode="r")["count"][0, 0] == 1


def test_a_period_is_read_in_bounded_batches_of_the_parents_asked_for(moto_s3: MotoS3,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    store = zarr_store(moto_s3.bucket, "outputs/atl06-cell-stats/read-test/atl06-cell-stats.zarr")
    parents = [SITE.parent, SITE.neighbour, SITE.empty_parent]
    made = grow(store, 6, 12, parents, MARCH)
    grow(store, 6, 12, parents, APRIL)
    write_parent(store, made.store_id, SITE.parent, MARCH, _two_cells(SITE.parent, (1.0, 2.0)))
    write_parent(store, made.store_id, SITE.neighbour, MARCH, _two_cells(SITE.neighbour, (3.0, 4.0)))
    write_parent(store, made.store_id, SITE.parent, APRIL, _two_cells(SITE.parent, (5.0, 6.0)))
    # expected, independently: xarray reads the whole store, March's row, cells with a count
    ds = xr.open_zarr(store).isel(time=0)
    has = ds["count"].values > 0
    want = dict(zip(ds["cell_ids"].values[has].tolist(), ds["h_max"].values[has].tolist(), strict=True))
    assert len(want) == 4
    monkeypatch.setattr(store_module, "_READ_BATCH_CELLS", N_CHILDREN)  # one parent block per batch
    cells, h_max = read_period(store, "h_max", MARCH)
    assert dict(zip(cells.tolist(), h_max.tolist(), strict=True)) == want
    cells, h_max = read_period(store, "h_max", MARCH, [SITE.neighbour, SITE.empty_parent])
    assert dict(zip(cells.tolist(), h_max.tolist(), strict=True)) == {
        c: v for c, v in want.items() if c // N_CHILDREN == SITE.neighbour}
    cells, h_max = read_period(store, "h_max", APRIL, [SITE.neighbour])
    assert cells.size == 0 and h_max.size == 0


def test_the_statistics_list_only_true_auxiliary_coordinates_and_xdggs_decodes_the_store(tmp_path: Path) -> None:
    """CF 5: an auxiliary coordinate's dimensions are a subset of its variable's; time_bounds (time, nv) is tied to
    time by ``bounds`` (CF 7.1) and is no coordinate of the statistics (time, cells)."""
    import xdggs
    from zarr.storage import LocalStore

    store = LocalStore(tmp_path / "cf.zarr")
    made = grow(store, 6, 12, [SITE.parent], MARCH)
    write_parent(store, made.store_id, SITE.parent, MARCH, _two_cells(SITE.parent, (1.0, 2.0)))
    group = zarr.open_group(store, mode="r")
    assert group["time"].attrs["bounds"] == "time_bounds"
    for name in STATISTICS:
        dims = set(group[name].metadata.dimension_names)
        for coordinate in str(group[name].attrs["coordinates"]).split():
            assert set(group[coordinate].metadata.dimension_names) <= dims, (name, coordinate)
    assert "independent" in group["h_sigma"].attrs["long_name"]  # a formal uncertainty, not the whole one

    ds = xr.open_zarr(store)
    assert "cell_ids" in ds["h_mean"].coords and "time_bounds" not in ds["h_mean"].coords
    np.testing.assert_array_equal(ds["time_bounds"].values, np.array([["2019-03-01", "2019-04-01"]], "datetime64[ns]"))
    decoded = xdggs.decode(ds.isel(time=0))
    assert (decoded.dggs.grid_info.level, decoded.dggs.grid_info.indexing_scheme) == (12, "nested")
    np.testing.assert_array_equal(decoded["cell_ids"].values,
                                  np.arange(SITE.parent * N_CHILDREN, (SITE.parent + 1) * N_CHILDREN))
    assert decoded["count"].values[[0, 1, -1]].tolist() == [1, 0, 1]
    assert decoded["h_mean"].values[[0, -1]].tolist() == [1.0, 2.0]


def test_growth_writes_cell_ids_a_chunk_at_a_time_with_memory_that_does_not_grow_with_the_parents() -> None:
    """A global month adds all 49,152 order-6 parents: 201 million order-12 ids, which BuildCatalog cannot hold at
    once. Growth writes them a chunk (about a million ids, 8 MB) at a time: here 4,000 parents (16.4 million ids,
    131 MB) peak under half of that in Python allocations (a chunk, its parts and its encoding), and a second growth
    that starts mid-chunk writes the right ids after the first."""
    import tracemalloc

    store = zarr.storage.MemoryStore()
    n = 4 ** 6
    first = list(range(0, 8000, 2))  # every other parent: the blocks are not one contiguous range
    later = [p for p in range(1, 601, 2)] + [first[0], first[5]]  # 300 new ones (odd), two already there
    tracemalloc.start()
    try:
        made = grow(store, 6, 12, reversed(first), MARCH)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert made.parents == tuple(first)
    whole = len(first) * n * 8  # the ids at once: what growth held, twice (twice that at its peak)
    assert peak < whole / 2, f"growth by {len(first)} parents peaked at {peak / 1e6:.0f} MB of allocations"
    grown = grow(store, 6, 12, later, APRIL)
    order = first + list(range(1, 601, 2))
    assert grown.parents == tuple(order)
    array = zarr.open_group(store, mode="r")["cell_ids"]
    assert len(first) * n % array.chunks[0] != 0  # the second growth began inside a chunk
    ids = array[:]
    assert ids.shape == (len(order) * n,)
    expected = (np.asarray(order, dtype=np.int64)[:, None] * n + np.arange(n, dtype=np.int64)).ravel()
    np.testing.assert_array_equal(ids, expected)


def _cut_short(moto_s3: MotoS3, key: str) -> bytes:
    """Cut the object at ``key`` to half its length (a copy or a write cut short); its bytes as they were."""
    whole = moto_s3.client.get_object(Bucket=moto_s3.bucket, Key=key)["Body"].read()
    moto_s3.client.put_object(Bucket=moto_s3.bucket, Key=key, Body=whole[:len(whole) // 2])
    return whole


@pytest.mark.parametrize("document", ["zarr.json", "h_mean/zarr.json"])
def test_a_damaged_metadata_document_is_named_and_the_store_is_left_as_it_is(moto_s3: MotoS3, document) -> None:
    """A zarr.json cut short failed the catalog with a bare JSONDecodeError, naming no file; the growth, which had
    resized the arrays read before the damaged one, now reads every document before it changes anything."""
    key = f"outputs/atl06-cell-stats/damaged-{document.replace('/', '-')}/atl06-cell-stats.zarr"
    store = zarr_store(moto_s3.bucket, key)
    made = grow(store, 6, 12, [SITE.parent], MARCH)
    write_parent(store, made.store_id, SITE.parent, MARCH, _two_cells(SITE.parent, (1.0, 2.0)))
    _cut_short(moto_s3, f"{key}/{document}")
    before = {o["Key"]: o["ETag"] for o in moto_s3.client.list_objects_v2(Bucket=moto_s3.bucket,
                                                                          Prefix=key)["Contents"]}
    with pytest.raises(store_module.OutputStoreDamaged) as damaged:
        grow(store, 6, 12, [SITE.parent, SITE.neighbour], APRIL)
    message = str(damaged.value)
    assert f"the output store s3://{moto_s3.bucket}/{key} is damaged: {document} is not JSON" in message
    assert "Move the store away (or delete it)" in message
    after = {o["Key"]: o["ETag"] for o in moto_s3.client.list_objects_v2(Bucket=moto_s3.bucket,
                                                                         Prefix=key)["Contents"]}
    assert after == before  # nothing changed


def test_a_damaged_chunk_is_named_with_its_parent_cell_and_a_recomputed_block_replaces_it(moto_s3: MotoS3) -> None:
    """A chunk cut short failed Aggregate with zstd's "invalid input data", and the advice to mend the recipe: the
    message names the chunk and its parent cell, and rewriting the block (what a run with recompute does) mends it."""
    key = "outputs/atl06-cell-stats/damaged-chunk/atl06-cell-stats.zarr"
    store = zarr_store(moto_s3.bucket, key)
    parents = sorted([SITE.parent, SITE.neighbour])
    made = grow(store, 6, 12, parents, MARCH)
    for parent in parents:
        write_parent(store, made.store_id, parent, MARCH, _two_cells(parent, (1.0, 2.0)))
    k = made.parents.index(SITE.neighbour)
    _cut_short(moto_s3, f"{key}/h_max/c/0/{k}")
    with pytest.raises(store_module.OutputStoreDamaged) as damaged:
        read_period(store, "h_max", MARCH)
    message = str(damaged.value)
    assert message.startswith(f"the output store s3://{moto_s3.bucket}/{key} is damaged: chunk h_max/c/0/{k} (parent "
                              f"cell {SITE.neighbour}) of period 2019-03-01..2019-03-31 cannot be read")
    assert "again with recompute" in message

    write_parent(store, made.store_id, SITE.neighbour, MARCH, _two_cells(SITE.neighbour, (3.0, 4.0)))
    cells, h_max = read_period(store, "h_max", MARCH)
    first, last = [p * N_CHILDREN for p in parents], [p * N_CHILDREN + N_CHILDREN - 1 for p in parents]
    want = {cell: 1.0 for cell in first} | {cell: 2.0 for cell in last}
    want |= {SITE.neighbour * N_CHILDREN: 3.0, SITE.neighbour * N_CHILDREN + N_CHILDREN - 1: 4.0}
    assert dict(zip(cells.tolist(), h_max.tolist(), strict=True)) == want


def test_an_error_that_is_no_damage_is_not_called_damage(moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error of zarr (or of our code) while every document and chunk reads whole passes as it is: telling the user
    to move a sound store away would lose the periods it holds."""
    key = "outputs/atl06-cell-stats/sound/atl06-cell-stats.zarr"
    store = zarr_store(moto_s3.bucket, key)
    made = grow(store, 6, 12, [SITE.parent], MARCH)
    write_parent(store, made.store_id, SITE.parent, MARCH, _two_cells(SITE.parent, (1.0, 2.0)))

    def fails(*args: Any, **kwargs: Any) -> None:
        raise ValueError("not damage")

    monkeypatch.setattr(store_module, "_consolidate", fails)
    with pytest.raises(ValueError, match="^not damage$"):
        store_module.mark_unfinished(store, MARCH, "run-2")
    monkeypatch.undo()
    read = zarr.Array.get_orthogonal_selection
    calls: list[int] = []

    def fails_once(self: zarr.Array, *args: Any, **kwargs: Any) -> Any:  # the batch's read, not each block's again
        calls.append(1)
        return fails() if len(calls) == 1 else read(self, *args, **kwargs)

    monkeypatch.setattr(zarr.Array, "get_orthogonal_selection", fails_once)
    with pytest.raises(ValueError, match="^not damage$"):
        read_period(store, "h_max", MARCH)
    assert len(calls) > 1  # each block was read again, and read whole
