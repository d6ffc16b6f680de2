"""Orchestration and reliability rules that hand-made mutations of the code broke without any other test noticing.

Each test states the rule it guards and derives what it expects from that rule (Step Functions' limits, the
template's timeouts, the input given), not from what the code happens to return.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
import responses
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from moto import mock_aws
from pydantic import BaseModel

from granulemap import aggregation, credentials, layout
from granulemap.catalog import build_catalog, validate_input
from granulemap.errors import (
    CredentialsUnavailable,
    InvalidInput,
    LockHeld,
    RecipeFailed,
    StorageThrottled,
)
from granulemap.models import AggregatorEvent, CatalogRef, Granule, Item, MapConfig, RunContext
from granulemap.processing import reduce_granules
from granulemap.recipes import get_recipe
from granulemap.recipes.base import Recipe
from granulemap.settings import Settings
from granulemap.storage import Bucket, lease_lock

from conftest import ROOT
from test_credentials import (
    PASSWORD_PARAMETER,
    TOKEN_PARAMETER,
    USERNAME_PARAMETER,
    daac_credentials,
    edl_jwt,
    password_settings,
    put_secure,
    replay_edl,
    reset_caches,
    stored_ref,
)
from test_template import cfn, grants, sam, state_machine_role  # noqa: F401  (cfn, sam: fixtures, by name)

BUCKET = "granulemap-mutation-survivors"
STEP_FUNCTIONS_PAYLOAD_LIMIT = 256 * 1024
"""Bytes of a state's input or output, a Map child execution's input included (Step Functions' quota)."""
SST_NAME = "{:%Y%m%d}090000-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2.nc"


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    with mock_aws():
        client = boto3.client("s3", region_name="us-west-2")
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        yield Bucket(BUCKET, client)


def sst_folder(folder: Path, first: dt.date, days: int) -> Path:
    """A folder of empty files named as daily MUR25 granules: BuildCatalog reads names only."""
    for n in range(days):
        (folder / SST_NAME.format(first + dt.timedelta(days=n))).write_bytes(b"")
    return folder


# ---- BuildCatalog ---------------------------------------------------------------------------------------------
def test_the_range_limit_counts_both_end_days(tmp_path: Path) -> None:
    """MaxRangeDays is a number of days, the first and the last one included."""
    limit = 10
    settings = Settings(bucket=BUCKET, max_range_days=limit)
    start = dt.date(2018, 12, 1)
    longest = start + dt.timedelta(days=limit - 1)  # start..longest: exactly `limit` days
    doc = {"recipe": "sst-global-mean", "start": str(start), "source": str(tmp_path)}
    validate_input({**doc, "end": str(longest)}, settings)
    with pytest.raises(InvalidInput, match=f"covers {limit + 1} days, more than the limit of {limit} days"):
        validate_input({**doc, "end": str(longest + dt.timedelta(days=1))}, settings)


def test_the_input_s_tolerance_even_zero_and_its_concurrency_are_the_run_s(tmp_path: Path, bucket: Bucket) -> None:
    """A user who tolerates no failure (0 %) must not get the stack's default tolerance (a 0 taken for "not given"
    would let a failed granule pass in a SUCCEEDED run). The input's max_concurrency is the Map's too."""
    source = sst_folder(tmp_path, dt.date(2018, 12, 1), 3)
    settings = Settings(bucket=BUCKET, default_tolerated_failure_percentage=5, default_max_concurrency=40)
    doc = {"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-03", "source": str(source)}
    strict = build_catalog({**doc, "tolerated_failure_percentage": 0, "max_concurrency": 3}, "run-strict", settings,
                           bucket)
    assert (strict.map.tolerated_failure_percentage, strict.map.max_concurrency) == (0.0, 3)
    default = build_catalog(doc, "run-default", settings, bucket)
    assert (default.map.tolerated_failure_percentage, default.map.max_concurrency) == (5.0, 40)


def _atl06_catalog(monkeypatch: pytest.MonkeyPatch, made: list[Item], prepared: list[Item] | None) -> None:
    """atl06-cell-stats' make_items and prepare replaced: they give ``made`` and ``prepared`` (None: the items kept);
    and with no store made, product_notes has none to read (zarr's S3 client does not work under mock_aws)."""
    atl06 = type(get_recipe("atl06-cell-stats"))
    monkeypatch.setattr(atl06, "make_items", lambda self, granules, params, execution: list(made))
    monkeypatch.setattr(atl06, "prepare", lambda self, items, run, params, bucket: prepared)
    monkeypatch.setattr(atl06, "product_notes", lambda self, run, params, bucket: [])


def _granule(n: int) -> Granule:
    when = dt.datetime(2019, 3, 1, tzinfo=dt.UTC) + dt.timedelta(hours=n)
    return Granule(url=f"s3://daac/ATL06_{when:%Y%m%d%H%M%S}_{n:04d}0101_006_01.h5", time=when)


ATL06_MARCH = {"recipe": "atl06-cell-stats", "start": "2019-03-01", "end": "2019-03-31"}


def test_two_items_of_one_id_are_refused_whether_made_or_prepared(tmp_path: Path, bucket: Bucket,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An item's id names its result object: two items of one id write one result, the later overwriting the
    other's, and the next run skips both as done. Refused before the manifest is written, whichever step made
    them (make_items, or prepare, which renames items)."""
    doc = {**ATL06_MARCH, "source": str(tmp_path)}
    twins = [Item(id="20190301-20190331-p6-7-same", granules=[_granule(1)]),
             Item(id="20190301-20190331-p6-7-same", granules=[_granule(2)])]
    distinct = [Item(id="20190301-20190331-p6-7-a", granules=[_granule(1)]),
                Item(id="20190301-20190331-p6-8-b", granules=[_granule(2)])]
    for run_id, made, prepared, step in (("run-made", twins, None, "make_items"),
                                         ("run-prepared", distinct, twins, "prepare")):
        _atl06_catalog(monkeypatch, made, prepared)
        # the step that made them is named (the message blamed the input's source folder)
        with pytest.raises(InvalidInput, match=rf"recipe atl06-cell-stats's {step}\(\) gave more than one item the "
                                               r"same id: \['20190301-20190331-p6-7-same'\]"):
            build_catalog(doc, run_id, Settings(bucket=BUCKET), bucket)
        assert bucket.get_json_or_none(layout.manifest_key(run_id)) is None
    _atl06_catalog(monkeypatch, distinct, None)
    assert build_catalog(doc, "run-distinct", Settings(bucket=BUCKET), bucket).catalog.count == 2


def _item_of_json_size(item_id: str, size: int) -> Item:
    """An item whose manifest entry (compact JSON, as BuildCatalog writes it) is ``size`` bytes: one granule with a
    long name."""
    def of(pad: int) -> Item:
        g = _granule(3)
        return Item(id=item_id, granules=[Granule(url=g.url.replace(".h5", "x" * pad + ".h5"), time=g.time)])

    base = len(json.dumps(of(0).model_dump(mode="json", exclude_defaults=True), separators=(",", ":")))
    item = of(size - base)
    assert len(json.dumps(item.model_dump(mode="json", exclude_defaults=True), separators=(",", ":"))) == size
    return item


def test_any_item_whose_child_input_would_exceed_step_functions_limit_is_refused(tmp_path: Path, bucket: Bucket,
                                                                                  monkeypatch: pytest.MonkeyPatch
                                                                                  ) -> None:
    """A Map child's input is {"item": ..., "run": ...} (the ItemSelector): an item that fits 256 KiB alone but not
    with the run fails its child with States.DataLimitExceeded, which no Catch records. Every item is checked, not
    only the first."""
    doc = {**ATL06_MARCH, "source": str(tmp_path)}
    small = [Item(id=f"20190301-20190331-p6-{n}-s", granules=[_granule(n)]) for n in range(3)]
    _atl06_catalog(monkeypatch, small, None)
    run = build_catalog(doc, "run-small", Settings(bucket=BUCKET), bucket).run.model_dump(mode="json")
    item_selector = json.loads((ROOT / "statemachine" / "pipeline.asl.json").read_text())[
        "States"]["ProcessItems"]["ItemSelector"]
    assert set(item_selector) == {"item.$", "run.$"}  # what a child's input is made of

    big = _item_of_json_size("20190301-20190331-p6-99-big", STEP_FUNCTIONS_PAYLOAD_LIMIT - 100)
    child_input = json.dumps({"item": big.model_dump(mode="json", exclude_defaults=True), "run": run},
                             separators=(",", ":"))
    assert len(child_input) > STEP_FUNCTIONS_PAYLOAD_LIMIT  # with the run it does not fit, alone it would
    _atl06_catalog(monkeypatch, [*small, big], None)  # the large one last
    with pytest.raises(InvalidInput, match=r"too large for a Map child's input.*20190301-20190331-p6-99-big"):
        build_catalog(doc, "run-big", Settings(bucket=BUCKET), bucket)
    assert bucket.get_json_or_none(layout.manifest_key("run-big")) is None


def test_a_run_whose_parameters_leave_no_room_in_a_map_child_s_input_is_refused_naming_them() -> None:
    """The room left for a failed item's caught error (its Cause, up to 32,768 characters before JSON escaping) is
    kept whatever the run's size: an item that fits beside a small run is refused beside a large one, and when the
    parameters are what take the room, the message names them, not the range."""
    from granulemap.catalog import CHILD_INPUT_LIMIT, _refuse_items_too_large_for_the_map

    day = dt.date(2019, 3, 1)
    item = _item_of_json_size("20190301-20190331-p6-7-x", 150 * 1024).model_dump(mode="json", exclude_defaults=True)
    small = RunContext(run_id="r", recipe="user-recipe", params={"n": 1}, config_id="c")
    _refuse_items_too_large_for_the_map([item], small, day, day)  # 150 KiB beside a small run: fits
    # a run of 80 KiB: the child input (item and run) would still be under 256 KiB, but not with an error's Cause
    medium = small.model_copy(update={"params": {"polygon": "x" * 80 * 1024}})
    child_input = len(json.dumps({"item": item, "run": medium.model_dump(mode="json")}, separators=(",", ":")))
    assert child_input < STEP_FUNCTIONS_PAYLOAD_LIMIT < child_input + 32_768
    with pytest.raises(InvalidInput, match=r"field 'end': 1 item\(s\).*20190301-20190331-p6-7-x"):
        _refuse_items_too_large_for_the_map([item], medium, day, day)
    large = small.model_copy(update={"params": {"polygon": "x" * CHILD_INPUT_LIMIT}})
    tiny = {"id": "20190301-20190331-p6-8-x", "granules": []}
    with pytest.raises(InvalidInput, match=r"field 'params': the run's parameters take 204,[0-9]{3} bytes"):
        _refuse_items_too_large_for_the_map([tiny], large, day, day)


# ---- Processor ------------------------------------------------------------------------------------------------
class _Failing(Recipe):
    """A per-granule recipe whose process raises, for the granules named in ``errors``, the error given."""

    name = "test-failing-granules"
    description = "raises the given error for the given granules"
    per_granule = True

    def __init__(self, errors: dict[str, BaseException]) -> None:
        self.errors = errors

    def process(self, item: Item, params: BaseModel, access: Any, run: RunContext) -> dict[str, Any]:
        name = item.granules[0].url.rsplit("/", 1)[-1]
        if name in self.errors:
            raise self.errors[name]
        return {"granule": name}

    def combine(self, results: list[dict[str, Any]], run: RunContext, params: BaseModel, bucket: Bucket) -> list[str]:
        return []


def _reduce(errors: dict[str, BaseException]) -> Any:
    names = ["g1.nc", "g2.nc", "g3.nc"]
    recipe = _Failing(errors)
    run = RunContext(run_id="r", recipe=recipe.name, params={}, config_id="c")
    item = Item(id="dekad", granules=[Granule(url=f"/data/{n}") for n in names])
    return reduce_granules(recipe, item, recipe.parse_params({}), None, run)


@pytest.mark.parametrize("error", [ConnectionResetError("connection reset by peer"), TimeoutError("timed out"),
                                   ConnectionError("the connection broke")])
def test_a_granule_cut_short_by_python_s_own_network_errors_fails_the_item_to_be_retried(error: Exception) -> None:
    """A network error (a socket's, not only botocore's) says nothing about the granule: recorded as the granule's
    failure, it would leave a granule out of a run that succeeds; the item fails as StorageThrottled instead, which
    the state machine retries."""
    results, failures = _reduce({})
    assert len(results) == 3 and failures == []
    with pytest.raises(StorageThrottled, match="g2.nc: the network failed"):
        _reduce({"g2.nc": error})


def test_running_out_of_memory_on_one_granule_fails_the_whole_item() -> None:
    """A MemoryError is about the process, not about the granule: the item fails whole (documented in
    processing.fails_alone), instead of a partial result that lists the granule as bad."""
    with pytest.raises(MemoryError):
        _reduce({"g2.nc": MemoryError()})
    results, failures = _reduce({"g2.nc": ValueError("an odd granule")})  # an error of the recipe's: alone
    assert [r["granule"] for r in results] == ["g1.nc", "g3.nc"] and [f.granule for f in failures] == ["g2.nc"]


# ---- Aggregate ------------------------------------------------------------------------------------------------
class _Whole(Recipe):
    """A recipe whose items are its unit (not per granule): one result per item. ``combine`` raises ``fails``."""

    name = "test-whole-items"
    description = "one result per item"

    def __init__(self, fails: Exception | None = None) -> None:
        self.fails = fails

    def process(self, item: Item, params: BaseModel, access: Any, run: RunContext) -> dict[str, Any]:
        return {}

    def combine(self, results: list[dict[str, Any]], run: RunContext, params: BaseModel, bucket: Bucket) -> list[str]:
        if self.fails is not None:
            raise self.fails
        key = layout.output_key(self.name, run.config_id, "count.json")
        bucket.put_json(key, len(results))
        return [key]


def _aggregate_event(bucket: Bucket, monkeypatch: pytest.MonkeyPatch, recipe: Recipe, items: list[Item],
                     failed: set[str], tolerance: float) -> AggregatorEvent:
    """A run of ``recipe`` whose ``items`` all succeeded but ``failed`` (failure records stored, as RecordFailure
    stores them): its manifest and records in the bucket, and Aggregate's event."""
    monkeypatch.setattr(aggregation, "get_recipe", lambda name: recipe)
    run = RunContext(run_id="run-agg", recipe=recipe.name, params={}, config_id="cfg")
    bucket.put_json(layout.manifest_key(run.run_id), [i.model_dump(mode="json") for i in items])
    for item in items:
        if item.id in failed:
            bucket.put_json(layout.failure_key(run.run_id, item.id),
                            {"item": item.id, "error": "GranuleUnreadable", "cause": "broken"})
        else:
            bucket.put_json(layout.result_key(run.recipe, run.config_id, item.id),
                            {"item": item.id, "run_id": run.run_id, "result": {"n": 1}})
    return AggregatorEvent(run=run, catalog=CatalogRef(bucket=BUCKET, key=layout.manifest_key(run.run_id),
                                                       count=len(items)),
                           map=MapConfig(max_concurrency=1, tolerated_failure_percentage=tolerance,
                                         item_tolerated_failure_percentage=tolerance))


def test_the_tolerance_of_a_recipe_whose_items_are_its_unit_counts_items_not_their_granules(
        bucket: Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    """1 of 20 items failed is 5 %, within a 5 % tolerance, however many granules the failed item had: a count in
    granules (each succeeded item one result, the failed one its 5 granules) would fail the run."""
    items = [Item(id=f"item-{n:02d}", granules=[Granule(url=f"/g/{n}-{k}") for k in range(5 if n == 0 else 1)])
             for n in range(20)]
    event = _aggregate_event(bucket, monkeypatch, _Whole(), items, {"item-00"}, tolerance=5.0)
    assert 100 * 1 / 20 <= event.map.tolerated_failure_percentage
    summary = aggregation.aggregate(event, bucket)
    assert summary.status == "SUCCEEDED"
    assert (summary.items.total, summary.items.succeeded, summary.items.failed) == (20, 19, 1)
    assert summary.granules is None  # items are this recipe's unit: no count in granules
    assert bucket.get_json(layout.summary_key("run-agg"))["status"] == "SUCCEEDED"


def test_a_run_whose_combine_failed_says_failed_in_its_summary(bucket: Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every item succeeded but the products could not be made: summary.json (what granulemap results and a reader
    of the bucket see) must not say SUCCEEDED."""
    items = [Item(id=f"item-{n}", granules=[Granule(url=f"/g/{n}")]) for n in range(3)]
    event = _aggregate_event(bucket, monkeypatch, _Whole(fails=KeyError("no such column")), items, set(), 5.0)
    with pytest.raises(RecipeFailed):
        aggregation.aggregate(event, bucket)
    stored = bucket.get_json(layout.summary_key("run-agg"))
    assert stored["status"] == "FAILED" and "no such column" in stored["message"]
    assert stored["items"]["succeeded"] == 3  # the counts are still written


def test_a_throttled_write_of_the_products_is_left_to_the_state_machine_to_retry(
        bucket: Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 throttling while combine writes the products is no fault of the recipe: Aggregate raises it as it is, and
    the state machine's Aggregate retries it, instead of failing the run for good as a broken recipe."""
    items = [Item(id="item-0", granules=[Granule(url="/g/0")])]
    event = _aggregate_event(bucket, monkeypatch, _Whole(fails=StorageThrottled("SlowDown")), items, set(), 5.0)
    with pytest.raises(StorageThrottled):
        aggregation.aggregate(event, bucket)
    asl = json.loads((ROOT / "statemachine" / "pipeline.asl.json").read_text())
    assert any("StorageThrottled" in r["ErrorEquals"] for r in asl["States"]["Aggregate"]["Retry"])


# ---- S3: the lease lock and the error translation -------------------------------------------------------------
KEY = "outputs/atl06-cell-stats/c-1/atl06-cell-stats.zarr.lock"


def _longest_function_timeout() -> int:
    from samcli.yamlhelper import yaml_parse

    template = yaml_parse((ROOT / "template.yaml").read_text())
    default = int(template["Globals"]["Function"]["Timeout"])
    return max(int(r["Properties"].get("Timeout", default)) for r in template["Resources"].values()
               if r["Type"] == "AWS::Serverless::Function")


def test_a_lock_younger_than_the_longest_a_function_may_run_is_never_taken_over(bucket: Bucket) -> None:
    """Its holder may still be running: taking it over lets two runs rewrite the store's attributes at once."""
    alive = _longest_function_timeout() - 30
    bucket.put_json(KEY, {"holder": "run alive", "since": time.time() - alive})
    with pytest.raises(LockHeld, match="being changed by run alive"):
        with lease_lock(bucket, KEY, "run b", "the store", wait_s=0.3):
            pytest.fail(f"a lock held {alive} s was taken over")
    assert json.loads(bucket.get_bytes(KEY))["holder"] == "run alive"


class _RivalTakesOver(Bucket):
    """Between this waiter's read of a dead holder's lock and its takeover, another waiter takes the lock over."""

    raced = False

    def get_bytes_and_etag(self, key: str) -> tuple[bytes | None, str | None]:
        held = super().get_bytes_and_etag(key)
        if not self.raced and held[0] is not None:
            self.raced = True
            self.put_json(key, {"holder": "run rival", "since": time.time()})
        return held


def test_of_two_waiters_taking_over_a_dead_holder_s_lock_only_one_gets_it(bucket: Bucket) -> None:
    bucket.put_json(KEY, {"holder": "run dead", "since": time.time() - 10_000})
    racing = _RivalTakesOver(BUCKET, bucket.client)
    with pytest.raises(LockHeld, match="being changed by run rival"):
        with lease_lock(racing, KEY, "run me", "the store", wait_s=0.5):
            pytest.fail("the lock was taken from the rival that had just taken it over")
    assert json.loads(bucket.get_bytes(KEY))["holder"] == "run rival"


class _ReleasedMeanwhile(Bucket):
    """The lock is held when this waiter first tries to create it, and released before it reads it."""

    def __init__(self, name: str, client: Any) -> None:
        super().__init__(name, client)
        self.tries = 0

    def put_bytes_if_unchanged(self, key: str, body: bytes, content_type: str, etag: str | None) -> bool:
        self.tries += 1
        if self.tries == 1:
            return False  # another holder's lock was there
        return super().put_bytes_if_unchanged(key, body, content_type, etag)

    def get_bytes_and_etag(self, key: str) -> tuple[bytes | None, str | None]:
        return (None, None) if self.tries == 1 else super().get_bytes_and_etag(key)


def test_a_lock_released_between_two_looks_is_created_before_the_block_runs(bucket: Bucket) -> None:
    waiter = _ReleasedMeanwhile(BUCKET, bucket.client)
    with lease_lock(waiter, KEY, "run me", "the store", wait_s=5):
        assert json.loads(bucket.get_bytes(KEY))["holder"] == "run me"  # held while the block runs
    assert not bucket.exists(KEY)


def _client_error(code: str, operation: str = "GetObject") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} (test)"}}, operation)


class _Raising:
    """An S3 client every call of which raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        def call(*_: Any, **__: Any) -> Any:
            raise self.error
        return call

    def get_paginator(self, operation: str) -> Any:
        return self  # whose paginate(...) raises


def test_a_read_s3_refuses_is_an_error_not_a_missing_object() -> None:
    """get_json_or_none's None means "no such object" (an item without a result, counted as failed): an S3 refusal
    (AccessDenied) or outage must not read as one."""
    assert Bucket("b", _Raising(_client_error("NoSuchKey"))).get_json_or_none("k") is None
    with pytest.raises(ClientError, match="AccessDenied"):
        Bucket("b", _Raising(_client_error("AccessDenied"))).get_json_or_none("k")


@pytest.mark.parametrize("error", [
    EndpointConnectionError(endpoint_url="https://s3.us-west-2.amazonaws.com"),
    ReadTimeoutError(endpoint_url="https://s3.us-west-2.amazonaws.com"),
    _client_error("SlowDown"), _client_error("503"), _client_error("InternalError"), _client_error("500"),
])
def test_s3_s_throttling_outages_and_network_errors_are_storage_throttled_for_every_operation(error: Exception
                                                                                              ) -> None:
    """Errors AWS documents as worth a retry (5xx: InternalError, ServiceUnavailable, SlowDown) and the network's
    own: StorageThrottled, which the state machine retries, for reads, writes, listings and deletes alike."""
    bucket = Bucket("b", _Raising(error))
    for call in (lambda: bucket.get_bytes("k"), lambda: bucket.put_json("k", {}), lambda: list(bucket.keys("p/")),
                 lambda: bucket.delete("k"), lambda: bucket.delete_many(["k"])):
        with pytest.raises(StorageThrottled):
            call()


@pytest.mark.parametrize("code", ["PreconditionFailed", "412", "ConditionalRequestConflict", "409"])
def test_a_conditional_write_that_lost_a_race_reads_as_changed_not_as_an_error(code: str) -> None:
    """S3 answers 409 ConditionalRequestConflict to a conditional write made while another one of the same key is in
    progress, 412 when the object changed: the lock's loop then reads it again, instead of failing the step."""
    bucket = Bucket("b", _Raising(_client_error(code, "PutObject")))
    assert bucket.put_bytes_if_unchanged("k", b"x", "application/json", None) is False


# ---- credentials ----------------------------------------------------------------------------------------------
@pytest.fixture
def ssm(monkeypatch: pytest.MonkeyPatch) -> Any:
    """moto's SSM, with test_credentials' setting: the least refresh margin, and no cached parameter or credential."""
    monkeypatch.setattr(credentials, "refresh_margin", credentials.REFRESH_MARGIN)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    reset_caches()
    with mock_aws():
        yield boto3.client("ssm", region_name="us-west-2")
    reset_caches()


def test_a_token_that_expired_a_minute_ago_is_refused_before_asking_earthdata_login(ssm) -> None:
    expired = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=1)
    put_secure(ssm, TOKEN_PARAMETER, edl_jwt(expired))
    with responses.RequestsMock(), pytest.raises(CredentialsUnavailable, match="expired on"):  # no HTTP at all
        credentials.fetch_credentials("POCLOUD", password_settings(edl_token_parameter=TOKEN_PARAMETER))


def test_a_warm_processor_s_refresh_logs_no_secret(ssm, log_capture) -> None:
    """A Processor that holds credentials (cached) and has them refreshed near their expiry, here in this process
    (the settings name no FetchCredentials function): the riskiest path, where the old and the new credentials and
    the Earthdata Login secrets are all in hand. None reaches a log."""
    put_secure(ssm, USERNAME_PARAMETER, "edl-user-c0ffee")
    put_secure(ssm, PASSWORD_PARAMETER, "edl-password-c0ffee")
    old = daac_credentials("oldc0ffee", "2030-01-01 01:00:00+00:00")
    new = daac_credentials("newc0ffee", "2030-01-01 02:00:00+00:00")
    ref = stored_ref(ssm, old)
    with responses.RequestsMock() as rs:
        replay_edl(rs, username="edl-user-c0ffee", password="edl-password-c0ffee", edl_token="edl-bearer-c0ffee",
                   creds=new)
        assert credentials.load_credentials(ref, password_settings(),
                                            now=dt.datetime(2030, 1, 1, 0, 0, tzinfo=dt.UTC)) == old  # cached
        assert credentials.load_credentials(ref, password_settings(),
                                            now=dt.datetime(2030, 1, 1, 0, 50, tzinfo=dt.UTC)) == new  # refreshed
    logged = log_capture.text()
    assert "near expiry: refreshing" in logged  # the capture sees the refresh's log line
    secrets = ["edl-user-c0ffee", "edl-password-c0ffee", "edl-bearer-c0ffee",
               *(v for c in (old, new) for k, v in c.items() if k != "expiration")]
    assert [s for s in secrets if s in logged] == []


def test_an_s3credentials_answer_without_every_field_is_refused_without_repeating_it(ssm) -> None:
    """An answer missing a field (here the expiration) is refused; its message (a Lambda error, so the execution's
    history) must not quote the answer, which holds the other secrets."""
    put_secure(ssm, TOKEN_PARAMETER, "edl-token-5eed")
    partial = {k: v for k, v in daac_credentials("partial5eed", "2030-01-01 01:00:00+00:00").items()
               if k != "expiration"}
    with responses.RequestsMock() as rs:
        replay_edl(rs, username=None, password=None, edl_token="edl-token-5eed", creds=partial)
        with pytest.raises(CredentialsUnavailable, match="without temporary credentials") as refused:
            credentials.fetch_credentials("POCLOUD", password_settings(edl_token_parameter=TOKEN_PARAMETER))
    assert [v for v in partial.values() if v in str(refused.value)] == []


# ---- the state machine ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def asl() -> dict[str, Any]:
    return json.loads((ROOT / "statemachine" / "pipeline.asl.json").read_text())


def _all_states(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = dict(definition["States"])
    for state in definition["States"].values():
        if "ItemProcessor" in state:
            found |= _all_states(state["ItemProcessor"])
    return found


LAMBDA_SERVICE_ERRORS = {"Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
                         "Lambda.TooManyRequestsException"}
RAISED_TRANSIENT = {
    # What each step's code raises that another try can mend: S3 through storage.Bucket (StorageThrottled), the
    # store's lock (LockHeld), NASA's services (SourceUnavailable: CMR, Earthdata Login), SSM (TransientError).
    "BuildCatalog": {"TransientError", "StorageThrottled", "LockHeld", "SourceUnavailable"},
    "FetchCredentials": {"TransientError", "SourceUnavailable"},
    "Aggregate": {"TransientError", "StorageThrottled", "LockHeld"},
}


@pytest.mark.parametrize("step", sorted(RAISED_TRANSIENT))
def test_every_lambda_step_retries_what_its_code_raises_as_transient_and_the_lambda_service_s_errors(
        asl: dict[str, Any], step: str) -> None:
    """Only ProcessItem's retriers were checked: a transient error dropped from another step's Retry failed the whole
    run at the first S3 throttling."""
    task = _all_states(asl)[step]

    def retried(error: str) -> bool:
        return any((error in r["ErrorEquals"] or "States.ALL" in r["ErrorEquals"]) and r["MaxAttempts"] >= 1
                   for r in task.get("Retry", []))

    missing = sorted(e for e in RAISED_TRANSIENT[step] | LAMBDA_SERVICE_ERRORS if not retried(e))
    assert missing == [], (step, missing)


def _ends(states: dict[str, dict[str, Any]], name: str) -> list[str]:
    """The terminal states reachable from ``name`` (Next, Default, the choices' and catchers' Next)."""
    seen, todo, ends = set(), [name], []
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        state = states[current]
        if state["Type"] in ("Succeed", "Fail") or state.get("End"):
            ends.append(current)
        todo += [n for n in [state.get("Next"), state.get("Default")] if n]
        todo += [c["Next"] for c in state.get("Choices", []) + state.get("Catch", [])]
    return ends


def test_no_caught_error_ends_a_run_as_succeeded_unless_aggregate_judged_it(asl: dict[str, Any]) -> None:
    """A Catch that leads to success hides the failure from the alert rule (it tells FAILED runs only). Caught errors
    end in a Fail state, except the Map's (Aggregate accounts for every item and fails the run above the tolerance)
    and the best-effort alert's (the run has succeeded already; it must not fail for want of an email)."""
    top = asl["States"]
    judged_by_aggregate = {"ProcessItems"}
    for name, state in top.items():
        for catcher in state.get("Catch", []):
            if name in judged_by_aggregate:
                assert catcher["Next"] == "Aggregate", name
                continue
            if name == "TellFailuresWithinTolerance":
                assert "States.ALL" in catcher["ErrorEquals"]
                assert {top[e]["Type"] for e in _ends(top, catcher["Next"])} == {"Succeed"}, name
                continue
            assert {top[e]["Type"] for e in _ends(top, catcher["Next"])} == {"Fail"}, (name, catcher)
    assert any("States.ALL" in c["ErrorEquals"] for c in top["TellFailuresWithinTolerance"].get("Catch", []))
    child = asl["States"]["ProcessItems"]["ItemProcessor"]["States"]
    for name, state in child.items():  # a failed item's child execution fails, for the Map to count it
        for catcher in state.get("Catch", []):
            assert {child[e]["Type"] for e in _ends(child, catcher["Next"])} == {"Fail"}, name


# ---- template.yaml --------------------------------------------------------------------------------------------


def test_the_state_machine_may_publish_to_the_topic_its_alert_state_publishes_to(cfn: dict[str, Any],
                                                                                  asl: dict[str, Any]) -> None:
    """TellFailuresWithinTolerance catches every error (best effort): without sns:Publish on its topic, every
    alert of failures within the tolerance would be dropped, and nobody told."""
    substitutions = cfn["Resources"]["PipelineStateMachine"]["Properties"]["DefinitionSubstitutions"]
    publishing = [s for s in _all_states(asl).values() if s.get("Resource") == "arn:aws:states:::sns:publish"]
    assert publishing
    allowed = grants(cfn, state_machine_role(cfn), "sns:Publish")
    for state in publishing:
        (placeholder,) = re.fullmatch(r"\$\{(\w+)\}", state["Parameters"]["TopicArn"]).groups()
        assert substitutions[placeholder] in allowed


def test_every_template_parameter_is_used(cfn: dict[str, Any]) -> None:
    """A parameter nothing refers to is a setting the operator changes to no effect (the default tolerance, the range
    limit: the functions would keep their built-in values)."""
    text = json.dumps({k: v for k, v in cfn.items() if k != "Parameters"})
    unused = [name for name in cfn["Parameters"]
              if json.dumps({"Ref": name}) not in text and "${" + name + "}" not in text]
    assert unused == []


def test_the_credential_fetcher_s_timeout_outlasts_the_waits_its_code_allows(cfn: dict[str, Any]) -> None:
    """A Lambda timeout is not retried: Earthdata Login's token request (earthaccess waits 10 s) and each of the up
    to four requests of the s3credentials redirect chain (S3CREDENTIALS_TIMEOUT_SECONDS each) must fit."""
    timeout = cfn["Resources"]["CredentialFetcherFunction"]["Properties"]["Timeout"]
    assert int(timeout) >= 10 + 4 * credentials.S3CREDENTIALS_TIMEOUT_SECONDS
