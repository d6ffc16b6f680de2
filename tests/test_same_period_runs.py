"""One run of a period at a time: BuildCatalog refuses a run of a period that an earlier execution of the state machine
is still running with the same recipe and configuration (granulemap/executions.py, catalog.py)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from granulemap.catalog import build_catalog, plan_run, refuse_a_second_run_of_the_period
from granulemap.errors import RunInProgress, TransientError
from granulemap.executions import OtherRun, running_before
from granulemap.settings import Settings
from granulemap.storage import Bucket

SETTINGS = Settings(bucket="bucket")
MARCH = {"recipe": "atl06-cell-stats", "start": "2019-03-01", "end": "2019-03-31"}
STARTED = dt.datetime(2019, 4, 1, 6, tzinfo=dt.UTC)


def _other(doc: Any, name: str = "monthly-2019-03", started: dt.datetime = STARTED) -> OtherRun:
    arn = f"arn:aws:states:us-west-2:123456789012:execution:stack-pipeline:{name}"
    return OtherRun(arn=arn, name=name, started=started, input=doc)


def _refuse(doc: dict, earlier: list[OtherRun]) -> None:
    refuse_a_second_run_of_the_period(plan_run(doc, SETTINGS, STARTED), earlier, SETTINGS)


def test_a_run_of_the_period_and_configuration_an_earlier_execution_runs_is_refused_naming_it() -> None:
    other = _other(MARCH)
    with pytest.raises(RunInProgress) as refused:
        _refuse(MARCH, [other])
    message = str(refused.value)
    assert "monthly-2019-03" in message and other.arn in message
    assert "2019-03-01..2019-03-31" in message and "Nothing was written" in message
    region = other.arn.split(":")[3]  # the command reaches the run whatever region the AWS CLI is set to
    assert f"aws stepfunctions stop-execution --region {region} --execution-arn {other.arn})" in message
    # a start time read by boto3 on a machine whose clock is not UTC (botocore gives it in local time) is said in UTC
    paris = dt.timezone(dt.timedelta(hours=1))
    with pytest.raises(RunInProgress, match=r"started 2019-04-01 06:00:00 UTC"):
        _refuse(MARCH, [_other(MARCH, started=STARTED.astimezone(paris))])
    # the same configuration given with its defaults spelled out is the same series
    with pytest.raises(RunInProgress):
        _refuse({**MARCH, "params": {"parent_order": 6, "child_order": 12}}, [other])
    # a run of the month given as its period runs March too
    with pytest.raises(RunInProgress, match="monthly-2019-03"):
        _refuse(MARCH, [_other({"recipe": "atl06-cell-stats", "period": "2019-03"})])
    # and the schedule's run of the previous month (an SST recipe's), started on April 1st, runs March
    with pytest.raises(RunInProgress, match="monthly-2019-03"):
        _refuse({"recipe": "sst-global-mean", "start": "2019-03-01", "end": "2019-03-31"},
                [_other({"recipe": "sst-global-mean", "period": "previous-month"})])


def test_other_periods_configurations_recipes_and_inputs_that_fail_on_their_own_go_on() -> None:
    _refuse(MARCH, [
        _other({**MARCH, "end": "2019-03-30"}, "overlapping"),  # another period of the store: runs may write at once
        _other({**MARCH, "params": {"parent_order": 5, "child_order": 12}}, "other-orders"),  # another store
        _other({**MARCH, "recipe": "sst-global-mean"}, "other-recipe"),
        _other({**MARCH, "end": "2019-02-31"}, "invalid"),  # refused by its own BuildCatalog
        _other("not a document", "not-json"),
        _other({"recipe": "atl06-cell-stats", "period": "2019-02"}, "february",
               started=dt.datetime(2019, 3, 1, 6, tzinfo=dt.UTC)),  # February's run
    ])
    _refuse(MARCH, [])


def test_the_check_comes_before_anything_is_searched_or_written(tmp_path: Path) -> None:
    """A refused run has not listed its source, made items nor written its manifest."""
    bucket = Bucket("never-touched")
    asked = []

    def earlier() -> list[OtherRun]:
        asked.append(True)
        return [_other({**MARCH, "source": str(tmp_path)})]

    with pytest.raises(RunInProgress):
        build_catalog({**MARCH, "source": str(tmp_path)}, "second", SETTINGS, bucket, earlier_runs=earlier)
    assert asked == [True]  # (the bucket does not exist: a write or a listing would have raised another error)


@pytest.fixture
def state_machine() -> Any:
    with mock_aws(config={"stepfunctions": {"execute_state_machine": False}}):  # (another test may have set it)
        sfn = boto3.client("stepfunctions", region_name="us-west-2")
        arn = sfn.create_state_machine(
            name="stack-pipeline", roleArn="arn:aws:iam::123456789012:role/sfn",
            definition=json.dumps({"StartAt": "Wait", "States": {"Wait": {"Type": "Pass", "End": True}}}),
        )["stateMachineArn"]
        yield sfn, arn


def test_running_before_lists_the_running_executions_started_earlier_with_their_inputs(state_machine) -> None:
    sfn, arn = state_machine  # moto without its engine: executions stay RUNNING until stopped
    started = {}
    for name, doc in [("first", MARCH), ("stopped", MARCH), ("second", {**MARCH, "end": "2019-03-30"}),
                      ("own", MARCH), ("later", MARCH)]:
        started[name] = sfn.start_execution(stateMachineArn=arn, name=name, input=json.dumps(doc))["executionArn"]
        time.sleep(0.01)  # distinct start times
    sfn.stop_execution(executionArn=started["stopped"])
    own = sfn.describe_execution(executionArn=started["own"])
    found = running_before(arn, started["own"], own["startDate"], client=sfn)
    assert sorted((run.name, run.arn, json.dumps(run.input)) for run in found) == [
        ("first", started["first"], json.dumps(MARCH)), ("second", started["second"], json.dumps({**MARCH, "end": "2019-03-30"}))]
    assert all(run.started < own["startDate"] for run in found)
    # with no start time given, "now": every running execution but its own is earlier
    assert {run.name for run in running_before(arn, started["own"], None, client=sfn)} == {"first", "second", "later"}


def test_throttling_is_a_transient_error_and_a_refusal_of_rights_is_not(state_machine) -> None:
    sfn, arn = state_machine

    class Refusing:
        def __init__(self, code: str):
            self.code = code

        def get_paginator(self, name: str) -> Any:
            raise ClientError({"Error": {"Code": self.code, "Message": "no"}}, "ListExecutions")

    with pytest.raises(TransientError, match="throttled"):
        running_before(arn, f"{arn}:own", None, client=Refusing("ThrottlingException"))
    with pytest.raises(ClientError, match="AccessDeniedException"):
        running_before(arn, f"{arn}:own", None, client=Refusing("AccessDeniedException"))


@pytest.mark.slow
def test_a_second_run_of_a_period_started_while_the_first_runs_fails_and_the_first_succeeds(
        tmp_path: Path, synthetic_month) -> None:
    """Through the state machine (the local engine): the ASL hands BuildCatalog its ARN and its state machine's, and a
    run of another period goes on beside them."""
    from granulemap.faults import ENV as FAULTS_ENV
    from granulemap.local.run import Workspace

    source = tmp_path / "granules"
    source.mkdir()
    for path in synthetic_month:
        shutil.copy(path, source / path.name)
    day = {"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-01", "source": str(source)}
    from moto.core.config import default_user_config

    before = dict(default_user_config["stepfunctions"])
    slow = {FAULTS_ENV: json.dumps({"delay_seconds": 3})}  # every item sleeps 3 s: the first run is still running
    with Workspace(tmp_path / "workspace", workers=2, extra_env=slow) as workspace:
        engine = workspace.engine
        first = engine.start(day, "first")
        second = engine.start(day, "second")
        other_day = engine.start({**day, "start": "2018-12-02", "end": "2018-12-02"}, "other-day")
        refused = engine.wait(second, timeout=120)
        assert engine.client("stepfunctions").describe_execution(executionArn=first)["status"] == "RUNNING"
        assert engine.wait(first, timeout=120)["status"] == "SUCCEEDED"
        assert engine.wait(other_day, timeout=120)["status"] == "SUCCEEDED"
        written = [o["Key"] for o in engine.client("s3").list_objects_v2(Bucket=engine.bucket).get("Contents", [])]
    # the engine puts back moto's process-wide configuration (it had moto execute state machines): a later test's
    # mock_aws() whose executions must stay RUNNING would otherwise see them run
    assert default_user_config["stepfunctions"] == before
    assert [key for key in written if "/first/" in key] and not [key for key in written if "/second/" in key]
    assert (refused["status"], refused["error"]) == ("FAILED", "CatalogFailed")
    cause = json.loads(refused["cause"])
    assert cause["errorType"] == "RunInProgress"
    assert "execution first " in cause["errorMessage"] and first in cause["errorMessage"]


def test_a_map_s_child_executions_are_not_runs_and_are_not_read() -> None:
    """Should the listing hold the Distributed Map's children (named <state machine>/<map run>:<id>), they are
    skipped without a DescribeExecution each: a run has thousands."""
    sm = "arn:aws:states:us-west-2:123456789012:stateMachine:stack-pipeline"
    parent = "arn:aws:states:us-west-2:123456789012:execution:stack-pipeline:monthly"
    child = "arn:aws:states:us-west-2:123456789012:execution:stack-pipeline/ProcessItems:0c5a4b1e"
    described = []

    class Listing:
        def get_paginator(self, name: str) -> Any:
            assert name == "list_executions"
            return self

        def paginate(self, **kwargs: Any) -> list[dict]:
            assert kwargs == {"stateMachineArn": sm, "statusFilter": "RUNNING"}
            return [{"executions": [{"executionArn": arn, "startDate": STARTED} for arn in (child, parent)]}]

        def describe_execution(self, executionArn: str) -> dict:
            described.append(executionArn)
            return {"executionArn": executionArn, "name": "monthly", "startDate": STARTED, "status": "RUNNING",
                    "input": json.dumps(MARCH)}

    (run,) = running_before(sm, f"{parent}-own", None, client=Listing())
    assert (run.arn, run.input, described) == (parent, MARCH, [parent])
