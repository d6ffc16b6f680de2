"""Executions that change one thing in S3 take turns (storage.lease_lock): the atl06-cell-stats store's attributes
(its layout: parent cells and periods) are rewritten whole by growth (BuildCatalog) and by finalize (Aggregate), so two
months of one configuration run at once lost one month's cells or period from the layout."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from typing import Any

import boto3
import pytest
import zarr
from moto import mock_aws

from granulemap import layout, storage
from granulemap.errors import LockHeld, TransientError
from granulemap.models import Item, RunContext
from granulemap.recipes.atl06 import store as store_module
from granulemap.storage import Bucket, lease_lock, zarr_store

from test_atl06_synthetic_granule import MotoS3, moto_s3  # noqa: F401  (a fixture, imported by name for pytest)

BUCKET = "granulemap-lock-tests"
KEY = "outputs/atl06-cell-stats/c-1/atl06-cell-stats.zarr.lock"
MARCH = (dt.date(2019, 3, 1), dt.date(2019, 3, 31))
APRIL = (dt.date(2019, 4, 1), dt.date(2019, 4, 30))


@pytest.fixture
def atomic_conditional_writes(monkeypatch) -> None:
    """S3 makes a conditional write atomic (one of two If-None-Match: * writes of a key wins); moto 5.2.5 checks, then
    writes, without a lock, so that two threads can both create the key. Its handler is made atomic here, as S3's."""
    from moto.s3.responses import S3Response

    put = S3Response.put_object
    one_at_a_time = threading.Lock()

    def atomic_put(self: Any) -> Any:
        with one_at_a_time:
            return put(self)

    monkeypatch.setattr(S3Response, "put_object", atomic_put)


@pytest.fixture
def bucket() -> Any:
    with mock_aws():
        client = boto3.client("s3", region_name="us-west-2")
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        yield Bucket(BUCKET, client)


def test_a_lock_is_held_for_the_block_and_released_after_it(bucket: Bucket) -> None:
    with lease_lock(bucket, KEY, "run a", "the store"):
        held = json.loads(bucket.get_bytes(KEY))
        assert held["holder"] == "run a" and abs(held["since"] - time.time()) < 60
    assert not bucket.exists(KEY)
    with pytest.raises(RuntimeError, match="the block failed"), lease_lock(bucket, KEY, "run a", "the store"):
        raise RuntimeError("the block failed")
    assert not bucket.exists(KEY)  # released however the block ends


def test_a_lock_held_by_another_run_waits_then_is_a_retried_error_naming_the_holder(bucket: Bucket) -> None:
    with lease_lock(bucket, KEY, "run a", "the store"):
        started = time.monotonic()
        with pytest.raises(LockHeld, match=r"the store is being changed by run a since 20\d\d-.*Z \(lock s3://"
                                           + BUCKET + "/" + KEY + r"\)") as refused:
            with lease_lock(bucket, KEY, "run b", "the store", wait_s=0.5):
                pytest.fail("two holders at once")
        assert 0.5 <= time.monotonic() - started < 10
        assert isinstance(refused.value, TransientError)  # what the state machine's Retry takes
        assert json.loads(bucket.get_bytes(KEY))["holder"] == "run a"  # the waiter left it alone


def test_a_lock_of_the_same_holder_is_not_taken_over_before_its_lease_ends(bucket: Bucket) -> None:
    """The state machine retries a step after a Lambda service error while its first try may still be running:
    taking its lock over at once would let both write what each read."""
    bucket.put_json(KEY, {"holder": "run a (growing)", "since": time.time() - 5})
    with pytest.raises(LockHeld, match=r"being changed by run a \(growing\)"):
        with lease_lock(bucket, KEY, "run a (growing)", "the store", wait_s=0.3):
            pytest.fail("taken over before its lease ended")
    assert json.loads(bucket.get_bytes(KEY))["holder"] == "run a (growing)"


def test_a_lock_older_than_its_lease_is_taken_over_and_its_old_holder_does_not_release_it(bucket: Bucket) -> None:
    """A holder that died (a Lambda stopped by its timeout) leaves its lock: after the lease another takes it over,
    and should the old holder come back, its end leaves the new holder's lock in place."""
    bucket.put_json(KEY, {"holder": "run dead", "since": time.time() - 1000})
    with lease_lock(bucket, KEY, "run b", "the store", wait_s=5, lease_s=900):
        assert json.loads(bucket.get_bytes(KEY))["holder"] == "run b"
    assert not bucket.exists(KEY)
    bucket.put_bytes(KEY, b"not json")  # not a lock this code wrote: taken over too
    with lease_lock(bucket, KEY, "run c", "the store", wait_s=5):
        assert json.loads(bucket.get_bytes(KEY))["holder"] == "run c"

    with lease_lock(bucket, KEY, "run slow", "the store", lease_s=900):
        bucket.put_json(KEY, {"holder": "run new", "since": time.time()})  # taken over while the slow one ran
    assert json.loads(bucket.get_bytes(KEY))["holder"] == "run new"


def test_holders_take_turns_so_that_no_read_modify_write_is_lost(bucket: Bucket, atomic_conditional_writes) -> None:
    """Four threads each add one to a counter object, read and written back under the lock with a pause between:
    without turns, writes would overwrite each other."""
    bucket.put_json("counter", 0)
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def add_one(name: str) -> None:
        try:
            start.wait()
            with lease_lock(bucket, KEY, name, "the counter", wait_s=30):
                value = bucket.get_json("counter")
                time.sleep(0.05)
                bucket.put_json("counter", value + 1)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add_one, args=(f"run {k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert bucket.get_json("counter") == 4


def _run(run_id: str, period: tuple[dt.date, dt.date]) -> RunContext:
    return RunContext(run_id=run_id, recipe="atl06-cell-stats", params={}, config_id="lock-test", start=period[0],
                      end=period[1])


def test_two_months_of_one_atl06_configuration_grown_at_once_keep_both_in_the_layout(moto_s3: MotoS3, monkeypatch,
                                                                                      atomic_conditional_writes) -> None:
    """BuildCatalog grows the store in prepare: two runs (March, April) growing it at the same moment each read the
    layout, and the one that wrote last dropped the other's parent cells and period. Growth is slowed between
    reading the layout and writing it, so that without turns the second always reads before the first writes."""
    from granulemap.recipes.atl06_cell_stats import recipe

    bucket = Bucket(moto_s3.bucket, moto_s3.client)
    params = recipe.parse_params({})
    key = layout.output_key(recipe.name, "lock-test", store_module.STORE_NAME)
    read = store_module.read_layout
    monkeypatch.setattr(store_module, "read_layout", lambda store: (read(store), time.sleep(0.5))[0])
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def month(run: RunContext, parents: list[int]) -> None:
        try:
            items = [Item(id=f"p{p}", granules=[], extra={"parent_cell": p}) for p in parents]
            start.wait()
            recipe.prepare(items, run, params, bucket)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=month, args=(_run("march", MARCH), [200, 201])),
               threading.Thread(target=month, args=(_run("april", APRIL), [300]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    final = read(zarr_store(moto_s3.bucket, key))
    assert set(final.parents) == {200, 201, 300} and set(final.periods) == {MARCH, APRIL}
    ids = zarr.open_group(zarr_store(moto_s3.bucket, key), mode="r", use_consolidated=False)["cell_ids"][:]
    n = 4 ** (params.child_order - params.parent_order)
    for parent in final.parents:  # each block holds its own parent's children
        block = ids[final.region(parent)]
        assert block[0] == parent * n and block[-1] == (parent + 1) * n - 1
    assert not bucket.exists(f"{key}.lock")


def test_prepare_and_combine_of_atl06_wait_for_the_store_s_lock(moto_s3: MotoS3, monkeypatch, tmp_path) -> None:
    """Growth (prepare) and finalize (combine) are the two writers of the store's attributes: while another run holds
    the store's lock, both wait, then fail with LockHeld (the state machine retries them). The lock lies beside the
    store, not in it: a download of the store does not copy it."""
    from granulemap.recipes.atl06_cell_stats import recipe

    bucket = Bucket(moto_s3.bucket, moto_s3.client)
    params = recipe.parse_params({})
    run = _run("may", (dt.date(2019, 5, 1), dt.date(2019, 5, 31)))
    key = layout.output_key(recipe.name, "lock-test", store_module.STORE_NAME)
    items = [Item(id="p400", granules=[], extra={"parent_cell": 400})]
    monkeypatch.setattr(storage, "LOCK_WAIT_S", 0.3)
    with lease_lock(bucket, f"{key}.lock", "run other (growing)", "the store"):
        with pytest.raises(LockHeld, match=r"is being changed by run other \(growing\)"):
            recipe.prepare(items, run, params, bucket)
        unchanged = read_layout_or_none(moto_s3.bucket, key)
        assert unchanged is None or 400 not in unchanged.parents  # refused before growing
    (prepared,) = recipe.prepare(items, run, params, bucket)
    bucket.put_json(layout.manifest_key(run.run_id), [prepared.model_dump(mode="json")])  # as BuildCatalog does
    result = {"parent_cell": 400, "store_id": prepared.extra["store_id"], "cells_with_data": 0, "granules": []}
    with lease_lock(bucket, f"{key}.lock", "run other", "the store"):
        with pytest.raises(LockHeld, match="is being changed by run other"):
            recipe.combine([result], run, params, bucket)
    assert recipe.combine([result], run, params, bucket)[0] == key
    assert not bucket.exists(f"{key}.lock")
    with lease_lock(bucket, f"{key}.lock", "run other", "the store"):  # a download while a run holds it
        copied = storage.download_objects(moto_s3.client, moto_s3.bucket, key, tmp_path)
    assert copied == [tmp_path / "atl06-cell-stats.zarr"] and (tmp_path / "atl06-cell-stats.zarr" / "zarr.json").exists()
    assert [p.name for p in tmp_path.rglob("*.lock")] == []


def read_layout_or_none(bucket_name: str, key: str) -> Any:
    return store_module.read_layout(zarr_store(bucket_name, key))


def test_the_steps_that_take_the_store_s_lock_try_until_a_dead_holder_s_lease_has_ended() -> None:
    """Step Functions matches an error's name, not its base class: BuildCatalog (growth) and Aggregate (finalize)
    retry LockHeld with a retrier of its own (not sharing the throttling errors' tries), and their tries, each waiting
    LOCK_WAIT_S for the lock, outlast the lease: a lock whose holder died is taken over before the step gives up. Each
    try fits the function's timeout."""
    from conftest import ROOT

    states = json.loads((ROOT / "statemachine" / "pipeline.asl.json").read_text())["States"]
    template = (ROOT / "template.yaml").read_text()
    timeout = int(re.search(r"Globals:\n  Function:\n(?:    .*\n)*?    Timeout: (\d+)", template).group(1))
    for name in ("BuildCatalog", "Aggregate"):
        (retry,) = [r for r in states[name]["Retry"] if "LockHeld" in r["ErrorEquals"]]
        assert retry["ErrorEquals"] == ["LockHeld"] and retry["BackoffRate"] >= 2, name
        assert (retry["MaxAttempts"] + 1) * storage.LOCK_WAIT_S > storage.LOCK_LEASE_S, name
        assert storage.LOCK_WAIT_S < timeout / 2, name


def test_delete_many_deletes_in_batches_of_a_thousand_and_names_what_s3_refused(moto_s3: MotoS3) -> None:
    bucket = Bucket(moto_s3.bucket, moto_s3.client)
    keys = [f"results/many/{i:05d}.json" for i in range(1500)]
    for key in keys:
        moto_s3.client.put_object(Bucket=moto_s3.bucket, Key=key, Body=b"{}")
    kept = "results/many-kept.json"
    moto_s3.client.put_object(Bucket=moto_s3.bucket, Key=kept, Body=b"{}")
    calls = []
    delete_objects = moto_s3.client.delete_objects

    def counted(**kwargs: Any) -> Any:
        calls.append(len(kwargs["Delete"]["Objects"]))
        return delete_objects(**kwargs)

    bucket._client = type("Counting", (), {"delete_objects": staticmethod(counted)})()
    bucket.delete_many(keys)
    bucket._client = moto_s3.client
    assert calls == [1000, 500]  # S3's limit per request
    assert list(bucket.keys("results/many")) == [kept]

    def refusing(**kwargs: Any) -> dict[str, Any]:
        return {"Errors": [{"Key": kwargs["Delete"]["Objects"][0]["Key"], "Code": code, "Message": "no"}]}

    for code, error, says in [("AccessDenied", RuntimeError, "S3 refused deleting s3://"),
                              ("SlowDown", TransientError, "S3 throttled while deleting s3://")]:
        bucket._client = type("Refusing", (), {"delete_objects": staticmethod(refusing)})()
        with pytest.raises(error, match=re.escape(says) + rf".*a\.json \(1 of 2 keys failed\): {code}: no"):
            bucket.delete_many(["a.json", "b.json"])
