"""statemachine/pipeline.asl.json, checked offline: structure, targets, retry policy, and moto's parser."""

from __future__ import annotations

import json
import re

import boto3
import pytest
from moto import mock_aws

from granulemap.errors import LAMBDA_SERVICE_TRANSIENT_ERRORS, TRANSIENT_ERROR_NAMES, TransientError
from granulemap.local.template import read_local_template, substitute_definition
from granulemap import errors, layout

from conftest import ROOT

ASL_PATH = ROOT / "statemachine" / "pipeline.asl.json"


@pytest.fixture(scope="module")
def asl() -> dict:
    return json.loads(ASL_PATH.read_text())


def _state_sets(definition: dict):
    """Yield (states dict) of the top level and of every nested ItemProcessor/Iterator/Branch."""
    yield definition["States"]
    for state in definition["States"].values():
        for key in ("ItemProcessor", "Iterator"):
            if key in state:
                yield from _state_sets(state[key])
        for branch in state.get("Branches", []):
            yield from _state_sets(branch)


def test_every_transition_target_exists(asl: dict) -> None:
    for states in _state_sets(asl):
        names = set(states)
        for name, state in states.items():
            targets = [state.get("Next"), state.get("Default")]
            targets += [c["Next"] for c in state.get("Catch", [])]
            targets += [c["Next"] for c in state.get("Choices", [])]
            for target in filter(None, targets):
                assert target in names, f"{name} -> {target} does not exist"
            terminal = state["Type"] in {"Succeed", "Fail"} or state.get("End") or state["Type"] == "Choice"
            assert terminal or state.get("Next"), f"{name} has neither Next nor End"


def test_pipeline_shape(asl: dict) -> None:
    top = asl["States"]
    assert asl["StartAt"] == "BuildCatalog"
    assert top["BuildCatalog"]["Next"] == "FetchCredentials"
    # FetchCredentials every run (it tells how long an Earthdata Login token has left: the expiry alarm's metric);
    # nothing to do (every item done, or no granules): no Map, straight to Aggregate
    assert top["FetchCredentials"]["Next"] == "AnythingToDo"
    assert top["AnythingToDo"]["Choices"] == [{"Variable": "$.catalog.map_count", "NumericEquals": 0,
                                               "Next": "Aggregate"}]
    assert top["AnythingToDo"]["Default"] == "ProcessItems"
    assert top["ProcessItems"]["Next"] == "Aggregate"
    m = top["ProcessItems"]
    assert m["Type"] == "Map"
    assert m["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert m["ItemReader"]["Resource"] == "arn:aws:states:::s3:getObject"
    assert m["MaxConcurrencyPath"] == "$.map.max_concurrency"
    assert m["ToleratedFailurePercentagePath"] == "$.map.item_tolerated_failure_percentage"
    assert "ItemBatcher" not in m  # moto's engine cannot parse it (ARCHITECTURE.md)
    assert m["ResultWriter"]["Parameters"]["Prefix"] == layout.MAP_RESULTS_PREFIX  # under runs/: expires
    assert m["ResultPath"] is None  # child outputs never enter the state payload
    assert top["InputRejected"] == {"Type": "Fail", "Error": "InvalidInput", "CausePath": "$.error.Cause"}


def test_processor_retries_exactly_the_transient_errors_with_backoff_and_jitter(asl: dict) -> None:
    task = asl["States"]["ProcessItems"]["ItemProcessor"]["States"]["ProcessItem"]
    throttled, outage, retry = task["Retry"]  # Lambda's throttling first: it has its own, longer waits
    assert throttled["ErrorEquals"] == ["Lambda.TooManyRequestsException"]
    assert outage["ErrorEquals"] == ["SourceUnavailable"]
    assert set(throttled["ErrorEquals"]) | set(outage["ErrorEquals"]) | set(retry["ErrorEquals"]) == (
        set(TRANSIENT_ERROR_NAMES) | set(LAMBDA_SERVICE_TRANSIENT_ERRORS))
    for r in (outage, retry):
        assert r["BackoffRate"] > 1 and r["JitterStrategy"] == "FULL" and r["MaxDelaySeconds"] > 0
    # The login service down when credentials near their end: the Processor keeps those that still last (credentials
    # .load_credentials), and its item waits on average 20 minutes or more before it fails (full jitter waits a
    # random part of each longest wait: half of it on average).
    assert sum(_longest_waits(outage)) / 2 >= 20 * 60
    # A throttled SSM or S3: a minute of tries, not 15 s
    assert sum(_longest_waits(retry)) >= 60
    # Every transient error class is listed by name (Step Functions matches names, not base classes).
    transient = {c.__name__ for c in vars(errors).values() if isinstance(c, type) and issubclass(c, TransientError)}
    assert transient == set(TRANSIENT_ERROR_NAMES)
    assert task["Catch"][0]["ErrorEquals"] == ["States.ALL"] and task["Catch"][0]["Next"] == "RecordFailure"


def _longest_waits(retry: dict) -> list[float]:
    """The longest wait before each retry: IntervalSeconds × BackoffRate^n, capped by MaxDelaySeconds (full jitter
    waits a random part of it)."""
    return [min(retry["IntervalSeconds"] * retry["BackoffRate"] ** n, retry["MaxDelaySeconds"])
            for n in range(retry["MaxAttempts"])]


def test_every_lambda_task_waits_out_lambda_throttling_for_minutes(asl: dict) -> None:
    """A throttled invocation shared the transient errors' retrier (at most 15 s of waiting in all for an item):
    an account with a low concurrency quota turned throttled items into failures. Throttling gets its own retrier,
    first, as Step Functions uses the first retrier that names the error."""
    tasks = {name: state for states in _state_sets(asl) for name, state in states.items()
             if state.get("Type") == "Task" and "FunctionArn" in state["Resource"]}
    assert set(tasks) == {"BuildCatalog", "FetchCredentials", "ProcessItem", "Aggregate"}
    for name, task in tasks.items():
        first = task["Retry"][0]
        assert first["ErrorEquals"] == ["Lambda.TooManyRequestsException"], name
        assert sum(_longest_waits(first)) >= 300, name
        assert not any("Lambda.TooManyRequestsException" in r["ErrorEquals"] for r in task["Retry"][1:]), name


def test_every_retry_has_bounded_exponential_backoff(asl: dict) -> None:
    for states in _state_sets(asl):
        for name, state in states.items():
            for retry in state.get("Retry", []):
                assert retry["BackoffRate"] >= 2, name
                assert retry["MaxAttempts"] <= 6, name
                # Full jitter spreads many executions' retries; one execution (BuildCatalog, FetchCredentials) waiting
                # out an outage of NASA's services waits its whole time instead (next test). The Map's items are many
                # executions: their Processors' waits are spread.
                outage = retry["ErrorEquals"] == ["SourceUnavailable"] and name in ("BuildCatalog", "FetchCredentials")
                assert retry["JitterStrategy"] == ("NONE" if outage else "FULL"), name
                # 15 minutes between tries only for the outages of NASA's services (next test)
                assert 0 < retry["MaxDelaySeconds"] <= (900 if retry["ErrorEquals"] == ["SourceUnavailable"] else 120)


def test_the_catalog_and_the_credentials_wait_out_an_outage_of_nasa_s_services(asl: dict) -> None:
    """An outage of NASA CMR, Earthdata Login or the DAAC's s3credentials endpoint (SourceUnavailable) was retried
    with the transient errors, for about half a minute: an outage of half an hour failed the month's run, to be
    started again by hand. It has its own retrier in the two states that call them, waiting 45 minutes in all."""
    states = asl["States"]
    for name in ("BuildCatalog", "FetchCredentials"):
        (outage,) = [r for r in states[name]["Retry"] if "SourceUnavailable" in r["ErrorEquals"]]
        assert outage["ErrorEquals"] == ["SourceUnavailable"], name
        # Without jitter, every wait is the longest: with full jitter (a random part of each) the 45 minutes were
        # 22 on average, and a half-hour outage outlasted six tries 86 times in 100.
        assert outage["JitterStrategy"] == "NONE", name
        assert 40 * 60 <= sum(_longest_waits(outage)) <= 60 * 60, name
        assert states[name]["Retry"].index(outage) == 1, name  # after Lambda's throttling, before the others


def test_substitutions_are_all_provided_by_the_template() -> None:
    text = ASL_PATH.read_text()
    used = set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", text))
    template = read_local_template(ROOT, "bucket", "us-west-2", "123456789012", "stack")
    assert used == set(template.state_machine.substitutions)
    assert "${" not in substitute_definition(text, template.state_machine.substitutions)


def test_moto_parses_the_definition() -> None:
    template = read_local_template(ROOT, "bucket", "us-west-2", "123456789012", "stack")
    definition = substitute_definition(ASL_PATH.read_text(), template.state_machine.substitutions)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        sfn = boto3.client("stepfunctions", region_name="us-west-2")
        arn = sfn.create_state_machine(
            name="check", definition=definition, roleArn="arn:aws:iam::123456789012:role/x"
        )["stateMachineArn"]
        assert sfn.describe_state_machine(stateMachineArn=arn)["definition"] == definition


def test_the_map_tries_reading_its_manifest_again_and_nothing_else(asl: dict) -> None:
    """An S3 error reading the manifest (States.ItemReaderFailed) comes before any child starts: worth a retry. Any
    other error of the Map comes after children ran (a retry would run them all again): Aggregate accounts instead."""
    (retry,) = asl["States"]["ProcessItems"]["Retry"]
    assert retry["ErrorEquals"] == ["States.ItemReaderFailed"] and retry["MaxAttempts"] >= 2
    assert asl["States"]["ProcessItems"]["Catch"][0]["Next"] == "Aggregate"


def test_record_failure_stores_the_caught_error_at_the_items_failure_key_without_a_lambda(asl: dict) -> None:
    """RecordFailure ran on the Processor function: an item whose Processor could not run (throttled past its
    retries, a deploy that broke it) could not have its failure recorded either, and Aggregate reported NoResult."""
    item_states = asl["States"]["ProcessItems"]["ItemProcessor"]["States"]
    record = item_states["RecordFailure"]
    assert record["Resource"] == "arn:aws:states:::aws-sdk:s3:putObject" and record["ResultPath"] is None
    params = record["Parameters"]
    assert params["Bucket"] == "${DataBucketName}" and params["Body.$"] == "States.JsonToString($.error)"
    fmt = re.fullmatch(r"States\.Format\('([^']*)', \$\.run\.run_id, \$\.item\.id\)", params["Key.$"])
    assert fmt is not None, params["Key.$"]
    assert fmt[1].replace("{}", "RUN", 1).replace("{}", "ITEM", 1) == layout.failure_key("RUN", "ITEM")
    (retry,) = record["Retry"]  # S3 throttled or failing: tried again for about a minute
    assert retry["ErrorEquals"] == ["States.ALL"] and retry["MaxAttempts"] >= 5 and retry["JitterStrategy"] == "FULL"
    assert item_states["ProcessItem"]["Catch"][0]["ResultPath"] == "$.error"
    assert (item_states["ItemFailed"]["ErrorPath"], item_states["ItemFailed"]["CausePath"]) == (
        "$.error.Error", "$.error.Cause")
