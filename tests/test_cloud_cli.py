"""`granulemap start | status | results` against moto: a CloudFormation stack whose outputs name the bucket and
the state machine, and a state machine that moto's Step Functions engine really runs.

moto's CloudFormation creates state machines that its executing engine does not know, so the state machine is made
directly and the stack's StateMachineArn output points to it; the stack itself (outputs, MaxRangeDays) is real moto.
The state machine is a stand-in with the pipeline's shape and state names (no Lambdas: moto runs those in Docker):
BuildCatalog, a Distributed Map over an S3 manifest whose items fail when {"ok": false}, and Aggregate.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from granulemap import cloud, layout
from granulemap.cli import main
from granulemap.local import worker

from conftest import ROOT

REGION = "us-west-2"
STACK = "gm-test"
BUCKET = "gm-test-data"
MANIFEST_KEY = "runs/stand-in/manifest.json"
MAX_RANGE_DAYS = 31

EMPTY_FOLDER = "s3://gm-test-data/sources/mur25/ holds no files; subfolders are not searched (1 here: 2018)"

STAND_IN = {
    "StartAt": "BuildCatalog",
    "States": {
        "BuildCatalog": {"Type": "Choice", "Default": "CatalogWritten",
                         "Choices": [{"Variable": "$.collection", "StringEquals": "NO-SUCH-COLLECTION",
                                      "Next": "CatalogFailed"},
                                     {"Variable": "$.collection", "StringEquals": "SLOW", "Next": "Slow"},
                                     {"Variable": "$.collection", "StringEquals": "ALL-DONE", "Next": "AllDone"},
                                     {"Variable": "$.collection", "StringEquals": "EMPTY", "Next": "Empty"},
                                     {"Variable": "$.collection", "StringEquals": "EMPTY-FOLDER",
                                      "Next": "EmptyFolder"}]},
        "Slow": {"Type": "Wait", "Seconds": 10, "Next": "CatalogWritten"},
        # BuildCatalog's catalog: 5 items, 2 found done, the manifest's 3 for the Map
        "CatalogWritten": {"Type": "Pass", "Result": {"bucket": BUCKET, "key": MANIFEST_KEY, "count": 5,
                                                      "map_key": MANIFEST_KEY, "map_count": 3},
                           "ResultPath": "$.catalog", "Next": "ProcessItems"},
        "AllDone": {"Type": "Pass", "Result": {"bucket": BUCKET, "key": MANIFEST_KEY, "count": 3, "map_count": 0},
                    "ResultPath": "$.catalog", "Next": "Aggregate"},
        "Empty": {"Type": "Pass", "Result": {"bucket": BUCKET, "key": MANIFEST_KEY, "count": 0, "map_count": 0},
                  "ResultPath": "$.catalog", "Next": "Aggregate"},
        # a run of a source folder that gave nothing: BuildCatalog says what the folder holds (and a field of a
        # newer version's BuildCatalog, which the commands leave aside)
        "EmptyFolder": {"Type": "Pass", "Result": {"bucket": BUCKET, "key": MANIFEST_KEY, "count": 0, "map_count": 0,
                                                   "none_found": EMPTY_FOLDER, "said_by_a_newer_stack": True},
                        "ResultPath": "$.catalog", "Next": "Aggregate"},
        "CatalogFailed": {"Type": "Fail", "Error": "CatalogFailed", "Cause": "CMR refused the search"},
        "ProcessItems": {
            "Type": "Map",
            "ItemReader": {"Resource": "arn:aws:states:::s3:getObject", "ReaderConfig": {"InputType": "JSON"},
                           "Parameters": {"Bucket.$": "$.catalog.bucket", "Key.$": "$.catalog.key"}},
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                "StartAt": "ProcessItem",
                "States": {
                    "ProcessItem": {"Type": "Choice", "Default": "ItemDone",
                                    "Choices": [{"Variable": "$.ok", "BooleanEquals": False, "Next": "ItemFailed"}]},
                    "ItemDone": {"Type": "Succeed"},
                    "ItemFailed": {"Type": "Fail", "Error": "GranuleUnreadable", "Cause": "truncated"},
                },
            },
            "ResultPath": None,
            "Next": "Aggregate",
        },
        "Aggregate": {"Type": "Pass", "End": True},
    },
}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        yield


@pytest.fixture
def stack(aws) -> dict[str, str]:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    state_machine = sfn.create_state_machine(
        name=f"{STACK}-pipeline", definition=json.dumps(STAND_IN),
        roleArn="arn:aws:iam::123456789012:role/stand-in")["stateMachineArn"]
    template = {
        "Parameters": {"MaxRangeDays": {"Type": "Number", "Default": MAX_RANGE_DAYS}},
        "Resources": {"DataBucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": BUCKET}}},
        "Outputs": {"StateMachineArn": {"Value": state_machine}, "BucketName": {"Value": {"Ref": "DataBucket"}}},
    }
    boto3.client("cloudformation", region_name=REGION).create_stack(StackName=STACK,
                                                                    TemplateBody=json.dumps(template))
    manifest = [{"ok": True}, {"ok": True}, {"ok": False}]
    boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key=MANIFEST_KEY, Body=json.dumps(manifest))
    return {"state_machine": state_machine}


def wait(execution_arn: str, timeout: float = 20.0) -> dict[str, Any]:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    deadline = time.monotonic() + timeout
    while (desc := sfn.describe_execution(executionArn=execution_arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline, f"{execution_arn} still running"
        time.sleep(0.05)
    return desc


def start(capsys: pytest.CaptureFixture[str], *flags: str) -> str:
    rc = main(["start", "--stack", STACK, "--recipe", "sst-global-mean", *flags])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out.out.strip()


# ---- start ----------------------------------------------------------------------------------------------------
def test_start_runs_the_stacks_state_machine_with_the_input_the_flags_describe(stack, capsys) -> None:
    arn = start(capsys, "--start", "2018-12-01", "--end", "2018-12-31", "--collection", "MUR25-JPL-L4-GLOB-v04.2",
                "--max-concurrency", "8", "--param", "method=podaac-tutorial")
    desc = wait(arn)
    assert desc["stateMachineArn"] == stack["state_machine"]
    assert json.loads(desc["input"]) == {
        "recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-31",
        "collection": "MUR25-JPL-L4-GLOB-v04.2", "max_concurrency": 8, "params": {"method": "podaac-tutorial"},
    }
    assert desc["name"].startswith("sst-global-mean-20181201-20181231-")  # the run id: runs/<name>/ in the bucket
    assert desc["status"] == "SUCCEEDED"


def test_start_refuses_a_period_the_stack_is_running_and_starts_nothing(stack, capsys) -> None:
    """As BuildCatalog would refuse it (RunInProgress), but before a failed execution tells the alert topic."""
    month = ["--start", "2018-12-01", "--end", "2018-12-31", "--collection", "SLOW"]  # SLOW: a run still running
    first = start(capsys, *month)
    assert main(["start", "--stack", STACK, "--recipe", "sst-global-mean", *month]) == 1
    err = capsys.readouterr().err
    assert "RunInProgress" in err and first in err and "2018-12-01..2018-12-31" in err
    sfn = boto3.client("stepfunctions", region_name=REGION)
    assert [e["executionArn"] for e in sfn.list_executions(stateMachineArn=stack["state_machine"])["executions"]] == [
        first]
    other_days = start(capsys, "--start", "2018-12-01", "--end", "2018-12-30", "--collection", "SLOW")
    other_method = start(capsys, *month[:4], "--param", "method=podaac-tutorial")  # another configuration
    assert wait(other_method)["status"] == "SUCCEEDED"
    for arn in (first, other_days):
        sfn.stop_execution(executionArn=arn)


@pytest.mark.parametrize("recipe", ["sst-global-mean", "my-lab-" + "sea-surface-temperature-anomaly-" * 3, "x" * 200])
def test_an_execution_name_keeps_its_dates_and_unique_suffix_whatever_the_recipe_s_length(recipe: str) -> None:
    """Step Functions takes execution names of up to 80 characters; a long recipe name loses its end, never the
    dates or the random suffix that makes each run's name (its run id) unique."""
    doc = {"recipe": recipe, "start": "2019-03-01", "end": "2019-03-31"}
    names = [cloud.execution_name(doc) for _ in range(20)]
    assert len(set(names)) == len(names)
    for name in names:
        assert len(name) <= cloud.EXECUTION_NAME_MAX == 80
        head, suffix = name.rsplit("-", 1)
        assert re.fullmatch(r"[0-9a-f]{8}", suffix)
        assert head.endswith("-20190301-20190331")
        kept = head.removesuffix("-20190301-20190331")
        assert kept and recipe.startswith(kept)
        assert re.fullmatch(r"[A-Za-z0-9_-]+", name)  # nothing an execution name, an S3 key or a shell minds
    scheduled = cloud.execution_name({"recipe": "sst-global-mean", "period": "previous-month"})
    assert re.fullmatch(r"sst-global-mean-[0-9a-f]{8}", scheduled)
    redone = cloud.execution_name({"recipe": "sst-global-mean", "period": "2024-05"})  # a month named: it shows
    assert re.fullmatch(r"sst-global-mean-202405-[0-9a-f]{8}", redone)


def test_an_execution_name_is_valid_and_unique_even_for_input_not_yet_validated() -> None:
    """Dates not written YYYY-MM-DD (start refuses them, but the name is made of the raw input): characters no
    execution name may hold are replaced, and the suffix is kept."""
    name = cloud.execution_name({"recipe": "a-recipe-name-of-forty-characters-or-so-",
                                 "start": "2019-03-01T06:00:00+00:00", "end": "2019-03-31T06:00:00+00:00"})
    assert len(name) <= 80 and re.fullmatch(r"[A-Za-z0-9_-]+-[0-9a-f]{8}", name), name


def _catalog_builder_rejection(doc: dict[str, Any]) -> str:
    """What BuildCatalog itself answers to ``doc`` in a stack with MAX_RANGE_DAYS (its real handler)."""
    spec = {"function_name": "CatalogBuilderFunction", "code_dir": str(ROOT / "functions" / "catalog_builder"),
            "handler": "app.handler", "memory_size": 512,
            "environment": {"BUCKET_NAME": BUCKET, "MAX_RANGE_DAYS": str(MAX_RANGE_DAYS)},
            "arn": f"arn:aws:lambda:{REGION}:123456789012:function:CatalogBuilderFunction"}
    payload, errored, _ = worker.invoke(spec, {"input": doc, "execution": "rejected"})
    error = json.loads(payload)
    assert errored and error["errorType"] == "InvalidInput", error
    return error["errorMessage"]


@pytest.mark.parametrize("dates, field", [
    (("2018-12-31", "2018-12-01"), "is before start"),
    (("2018-01-01", "2018-03-31"), "MaxRangeDays"),  # 90 days: over this stack's MaxRangeDays (31)
])
def test_start_rejects_bad_input_with_buildcatalogs_own_message_and_starts_nothing(
        stack, capsys, dates: tuple[str, str], field: str) -> None:
    rc = main(["start", "--stack", STACK, "--recipe", "sst-global-mean", "--start", dates[0], "--end", dates[1]])
    err = capsys.readouterr().err
    assert rc == 2
    expected = _catalog_builder_rejection({"recipe": "sst-global-mean", "start": dates[0], "end": dates[1]})
    assert field in expected and f"granulemap: {expected}" in err
    sfn = boto3.client("stepfunctions", region_name=REGION)
    assert sfn.list_executions(stateMachineArn=stack["state_machine"])["executions"] == []


def test_start_passes_a_bbox_on_and_refuses_one_that_would_change_nothing(stack, capsys) -> None:
    from granulemap.cli import build_parser, execution_input

    args = build_parser().parse_args(["start", "--stack", STACK, "--recipe", "atl06-cell-stats", "--start",
                                      "2018-10-13", "--end", "2018-10-13", "--bbox", "170", "-80", "-170", "-60"])
    assert execution_input(args)["bbox"] == [170.0, -80.0, -170.0, -60.0]  # west > east: across the antimeridian
    rc = main(["start", "--stack", STACK, "--recipe", "sst-global-mean", "--start", "2018-12-01", "--end",
               "2018-12-31", "--bbox", "170", "-10", "-170", "10"])
    assert rc == 2 and "field 'bbox'" in capsys.readouterr().err
    sfn = boto3.client("stepfunctions", region_name=REGION)
    assert sfn.list_executions(stateMachineArn=stack["state_machine"])["executions"] == []


def test_start_takes_a_source_in_the_stack_s_bucket_and_refuses_a_folder_of_this_machine(stack, capsys,
                                                                                          tmp_path: Path) -> None:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    assert main(["start", "--stack", STACK, "--recipe", "sst-global-mean", "--start", "2018-12-01", "--end",
                 "2018-12-31", "--source", str(tmp_path)]) == 2
    assert "a deployed run reads granules from S3 only" in capsys.readouterr().err
    assert sfn.list_executions(stateMachineArn=stack["state_machine"])["executions"] == []
    arn = start(capsys, "--period", "2018-12", "--source", f"s3://{BUCKET}/sources/mur25/")
    assert json.loads(sfn.describe_execution(executionArn=arn)["input"]) == {
        "recipe": "sst-global-mean", "period": "2018-12", "source": f"s3://{BUCKET}/sources/mur25/"}


def test_an_input_whose_source_is_outside_the_stack_s_bucket_is_refused_before_starting(stack) -> None:
    """The functions' role reads only the stack's bucket: a prefix elsewhere would fail in BuildCatalog with
    AccessDenied (CatalogFailed); it is refused before starting (aws stepfunctions start-execution gets the same
    message from BuildCatalog), naming the bucket to use."""
    from granulemap import cloud
    from granulemap.errors import InvalidInput

    doc = {"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-31"}
    with pytest.raises(InvalidInput, match=f"is in bucket someone-elses-bucket.*s3://{BUCKET}/"):
        cloud.start_run(cloud.describe_stack(STACK), {**doc, "source": "s3://someone-elses-bucket/mur25/"})
    sfn = boto3.client("stepfunctions", region_name=REGION)
    assert sfn.list_executions(stateMachineArn=stack["state_machine"])["executions"] == []
    cloud.start_run(cloud.describe_stack(STACK), {**doc, "source": f"s3://{BUCKET}/sources/mur25/"})
    assert len(sfn.list_executions(stateMachineArn=stack["state_machine"])["executions"]) == 1


@pytest.mark.parametrize(("reserved", "flags", "over"), [
    ("", [], None),  # no reservation: the account's pool, which start cannot see
    ("50", [], None),  # DefaultMaxConcurrency 40
    ("20", [], "max concurrency, 40, is above the 20 executions"),
    ("20", ["--max-concurrency", "20"], None),
    ("20", ["--max-concurrency", "21"], "max concurrency, 21, is above the 20 executions"),
])
def test_start_notes_a_max_concurrency_above_the_processors_reservation(
        stack, capsys, monkeypatch, reserved: str, flags: list[str], over: str | None) -> None:
    """The Processor's reserved concurrency caps it: the calls above it are throttled, retried for 6.5 minutes, then
    their items fail. The run still starts (light items may get through); start says so."""
    describe = cloud.describe_stack

    def with_parameters(*args, **kwargs) -> cloud.Stack:
        found = describe(*args, **kwargs)
        parameters = {**found.parameters, "DefaultMaxConcurrency": "40", "ProcessorReservedConcurrency": reserved}
        return cloud.Stack(found.name, found.state_machine_arn, found.bucket, parameters)

    monkeypatch.setattr(cloud, "describe_stack", with_parameters)
    rc = main(["start", "--stack", STACK, "--recipe", "sst-global-mean", "--start", "2018-12-01",
               "--end", "2018-12-31", *flags])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert out.out.strip().startswith("arn:aws:states:")  # started
    if over is None:
        assert "ProcessorReservedConcurrency" not in out.err
    else:
        assert f"granulemap: note: the run's {over} the stack reserves for the Processor" in out.err
        assert "ProcessorReservedConcurrency" in out.err and "--max-concurrency 20 or less" in out.err
        assert f"stop this run first: aws stepfunctions stop-execution --region {REGION} --execution-arn " \
               f"{out.out.strip()}" in out.err


def test_start_names_a_missing_stack_and_the_region_it_looked_in(aws, capsys, monkeypatch) -> None:
    """Without the region searched, a user whose AWS configuration names another region than the stack's could not
    tell why the stack they had deployed was not found."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    rc = main(["start", "--stack", "no-such-stack", "--recipe", "sst-global-mean",
               "--start", "2018-12-01", "--end", "2018-12-31"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no CloudFormation stack named 'no-such-stack' in us-east-1: " in err
    assert "or give the stack's region with --region" in err
    rc = main(["start", "--stack", "no-such-stack", "--recipe", "sst-global-mean", "--region", "eu-west-1",
               "--start", "2018-12-01", "--end", "2018-12-31"])
    assert rc == 2 and "named 'no-such-stack' in eu-west-1: " in capsys.readouterr().err


# ---- status ---------------------------------------------------------------------------------------------------
def test_status_shows_the_current_state_and_the_map_runs_item_counts(stack, capsys) -> None:
    arn = start(capsys, "--start", "2018-12-01", "--end", "2018-12-31")
    wait(arn)
    assert main(["status", arn]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:5] == [
        f"execution: {arn}",
        "status: SUCCEEDED",
        "run: sst-global-mean, 2018-12-01..2018-12-31",
        "state: Aggregate",
        "items: 2 succeeded, 1 failed, 0 running, 0 pending of 3; 2 more found done, not run",  # two ok, one not
    ]
    # and the same progress line a local run shows, from the Map Run's counts and times
    assert re.fullmatch(r"\[#{30}\] 5/5 items \(2 ok, 2 skipped, 1 failed\) [0-9.]+ items/s", lines[5])


def test_status_shows_the_granules_that_failed_in_items_that_succeeded(capsys, monkeypatch) -> None:
    """An SST item's granules fail alone: the alert said "2 of its 28 granules failed" and status, which it names
    first, said "0 failed" (items). Aggregate's counts, when it has returned them (tests/test_pipeline_local.py reads
    them from a real execution history), are shown too."""
    found = cloud.RunStatus(execution_arn="arn", status="SUCCEEDED", current_state="Done", items=None,
                            granules={"total": 28, "succeeded": 26, "failed": 2, "skipped": 0})
    monkeypatch.setattr(cloud, "run_status", lambda arn: found)
    assert main(["status", "arn"]) == 0
    assert "granules: 26 computed, 0 skipped (already done), 2 failed of 28: granulemap results lists them" in (
        capsys.readouterr().out.splitlines())


def test_status_of_a_run_with_every_item_found_done_says_the_map_had_nothing_to_run(stack, capsys) -> None:
    arn = start(capsys, "--start", "2018-12-01", "--end", "2018-12-31", "--collection", "ALL-DONE")
    wait(arn)
    assert main(["status", arn]) == 0
    assert capsys.readouterr().out.splitlines()[3:] == ["state: Aggregate",
                                                        "items: all 3 found done: nothing for the Map to run"]


def test_status_of_a_run_that_found_no_granules_says_so(stack, capsys) -> None:
    arn = start(capsys, "--start", "2018-12-01", "--end", "2018-12-31", "--collection", "EMPTY")
    wait(arn)
    assert main(["status", arn]) == 0
    assert capsys.readouterr().out.splitlines()[3:] == ["state: Aggregate", "items: none (no granules found)"]
    arn = start(capsys, "--start", "2018-12-01", "--end", "2018-12-31", "--collection", "EMPTY-FOLDER")
    wait(arn)
    assert main(["status", arn]) == 0
    assert capsys.readouterr().out.splitlines()[3:] == ["state: Aggregate",
                                                        f"items: none (no granules found: {EMPTY_FOLDER})"]


def test_status_names_the_month_a_scheduled_run_resolved_to(stack, capsys) -> None:
    """The schedule's input says only "previous-month": status says which month, from when the run started, in UTC
    as BuildCatalog resolves it (boto3 gives the start in the machine's own time zone: here 14 hours ahead)."""
    zone = os.environ.get("TZ")
    os.environ["TZ"] = "Pacific/Kiritimati"
    time.tzset()
    try:  # the C library's zone is put back whatever happens: left, the rest of the suite ran 14 hours ahead
        sfn = boto3.client("stepfunctions", region_name=REGION)
        arn = sfn.start_execution(stateMachineArn=stack["state_machine"], name="scheduled", input=json.dumps(
            {"recipe": "sst-global-mean", "period": "previous-month"}))["executionArn"]
        started = sfn.describe_execution(executionArn=arn)["startDate"].astimezone(dt.UTC)
        year, month = (started.year, started.month - 1) if started.month > 1 else (started.year - 1, 12)
        last = (dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)).day
        wait(arn)
        main(["status", arn])
    finally:
        if zone is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = zone
        time.tzset()
    assert f"run: sst-global-mean, {year}-{month:02d}-01..{year}-{month:02d}-{last}" in capsys.readouterr().out.splitlines()


def test_status_of_a_failed_run_shows_the_error_and_exits_1(stack, capsys) -> None:
    arn = start(capsys, "--start", "2018-12-01", "--end", "2018-12-31", "--collection", "NO-SUCH-COLLECTION")
    wait(arn)
    assert main(["status", arn]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:] == ["status: FAILED", "run: sst-global-mean, 2018-12-01..2018-12-31", "state: CatalogFailed",
                         "items: the Map has not started",
                         "error: CatalogFailed: CMR refused the search",
                         # what the operator does next, the alert having named only status and results
                         f"to run it again once the cause is mended: granulemap start --stack {STACK} --region "
                         f"{REGION} --recipe sst-global-mean --start 2018-12-01 --end 2018-12-31 --collection "
                         "NO-SUCH-COLLECTION"]
    arn = start(capsys, "--period", "2018-12", "--collection", "NO-SUCH-COLLECTION")  # a month: checked whole again
    wait(arn)
    assert main(["status", arn]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"to run it again once the cause is mended: granulemap start --stack {STACK} --region {REGION} --recipe "
        "sst-global-mean --period 2018-12 --collection NO-SUCH-COLLECTION")


def test_the_command_to_run_a_failed_range_again_gives_back_its_input() -> None:
    """status's "to run it again" command, parsed as granulemap start parses it, is the failed run's input: its
    parameters, bbox, source and other options (a float as given), and its month as a period; a scheduled run's
    "previous-month" the month it ran. None for an input that was refused (it would be refused again)."""
    from granulemap.cli import build_parser, execution_input

    doc = {"recipe": "sst-box-mean", "start": "2019-03-01", "end": "2019-03-31", "source": f"s3://{BUCKET}/mur/",
           "collection": "MUR-JPL-L4-GLOB-v4.1", "bbox": [-170.5, -5, -120, 5.25],
           "params": {"box": [-170, -5, -120, 5]},
           "max_concurrency": 7, "tolerated_failure_percentage": 2.5, "group": "granule", "recompute": True}
    desc = {"input": json.dumps(doc), "status": "FAILED", "error": "TooManyFailures",
            "startDate": dt.datetime(2019, 4, 5, 6, tzinfo=dt.UTC),
            "stateMachineArn": f"arn:aws:states:{REGION}:123456789012:stateMachine:{STACK}-pipeline"}
    words = shlex.split(cloud._start_again(desc))
    assert words[:7] == ["granulemap", "start", "--stack", STACK, "--region", REGION, "--recipe"]
    assert execution_input(build_parser().parse_args(words[1:])) == doc
    scheduled = {**desc, "input": json.dumps({"recipe": "sst-global-mean", "period": "previous-month"})}
    assert cloud._start_again(scheduled).endswith("--recipe sst-global-mean --period 2019-03")
    assert cloud._start_again({**desc, "error": "InvalidInput"}) is None
    other = {**desc, "stateMachineArn": f"arn:aws:states:{REGION}:123456789012:stateMachine:renamed"}
    assert "--stack STACK " in cloud._start_again(other)  # a state machine not named by the template: a placeholder


# ---- results --------------------------------------------------------------------------------------------------
def _publish_run(run_id: str, status: str = "SUCCEEDED") -> dict[str, bytes]:
    """What Aggregate leaves in the bucket: products, a Zarr store and summary.json. Returns key → bytes."""
    objects = {
        "outputs/sst-global-mean/ocean-abc/global_mean_sst.csv":
            b"time,granule,mean_sst_c\n2018-12-31T09:00:00Z,g,20.1\n",
        "outputs/sst-global-mean/ocean-abc/global_mean_sst.png": b"\x89PNG\r\n\x1a\nnot really",
        "outputs/atl06/cells.zarr/zarr.json": b'{"zarr_format": 3}',
        "outputs/atl06/cells.zarr/h_mean/c/0": b"\x00\x01",
    }
    summary = {
        "status": status, "run_id": run_id, "recipe": "sst-global-mean", "params": {"method": "ocean"},
        "items": {"total": 3, "succeeded": 2, "failed": 1, "skipped": 0},
        "failures": [{"item": "g3", "error": "GranuleUnreadable", "cause": "truncated"}],
        "outputs": ["outputs/sst-global-mean/ocean-abc/global_mean_sst.csv",
                    "outputs/sst-global-mean/ocean-abc/global_mean_sst.png",
                    "outputs/atl06/cells.zarr", layout.summary_key(run_id)],
        "message": "items: 2 computed, 0 skipped (already done), 1 failed",
    }
    s3 = boto3.client("s3", region_name=REGION)
    for key, body in {**objects, layout.summary_key(run_id): json.dumps(summary).encode()}.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return objects


@pytest.mark.parametrize("how", ["owner of the state machine", "--stack"])
def test_results_download_what_the_summary_lists_and_print_the_failures(
        stack, capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    arn = start(capsys, "--start", "2018-12-01", "--end", "2018-12-31")
    desc = wait(arn)
    objects = _publish_run(desc["name"])
    flags = ["--stack", STACK] if how == "--stack" else []
    if how != "--stack":
        # moto cannot look a stack up by a resource's physical id (describe_stack_resources PhysicalResourceId).
        asked = []
        monkeypatch.setattr(cloud, "stack_of_state_machine", lambda sm: asked.append(sm) or STACK)

    rc = main(["results", arn, "--out", str(tmp_path), *flags])
    out = capsys.readouterr().out
    assert rc == 0
    if how != "--stack":
        assert asked == [stack["state_machine"]]
    assert (tmp_path / "global_mean_sst.csv").read_bytes() == objects[
        "outputs/sst-global-mean/ocean-abc/global_mean_sst.csv"]
    assert (tmp_path / "global_mean_sst.png").read_bytes() == objects[
        "outputs/sst-global-mean/ocean-abc/global_mean_sst.png"]
    assert (tmp_path / "cells.zarr" / "zarr.json").read_bytes() == b'{"zarr_format": 3}'
    assert (tmp_path / "cells.zarr" / "h_mean" / "c" / "0").read_bytes() == b"\x00\x01"
    local = json.loads((tmp_path / "summary.json").read_text())
    assert local["outputs"] == [str(tmp_path / n) for n in
                                ("global_mean_sst.csv", "global_mean_sst.png", "cells.zarr", "summary.json")]
    assert local["execution"] == {"arn": arn, "status": "SUCCEEDED"}
    assert "SUCCEEDED: items: 2 computed, 0 skipped (already done), 1 failed of 3" in out
    assert "computed" not in out.split("SUCCEEDED:", 1)[1].split("\n", 1)[1]  # the counts once, not again as the message
    assert "  failed g3: GranuleUnreadable: truncated" in out


def test_results_without_out_print_every_failure_and_the_products_urls_and_download_nothing(
        stack, capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the alert emails say to run: an atl06-cell-stats product is the whole cumulative store (hundreds of
    thousands of objects a global month), which `results --out` downloads; without --out nothing is."""
    arn = start(capsys, "--start", "2018-12-01", "--end", "2018-12-31")
    name = wait(arn)["name"]
    _publish_run(name)
    s3 = boto3.client("s3", region_name=REGION)
    summary = json.loads(s3.get_object(Bucket=BUCKET, Key=layout.summary_key(name))["Body"].read())
    summary["failures"] = [{"item": f"g{k}", "error": "GranuleUnreadable", "cause": "truncated"} for k in range(25)]
    summary.update(start="2018-12-01", end="2018-12-31")
    s3.put_object(Bucket=BUCKET, Key=layout.summary_key(name), Body=json.dumps(summary).encode())
    monkeypatch.chdir(tmp_path)
    downloads: list[Any] = []
    monkeypatch.setattr(cloud, "download_objects", lambda *a: downloads.append(a) or [])

    assert main(["results", arn, "--stack", STACK]) == 0
    out = capsys.readouterr().out
    assert downloads == [] and list(tmp_path.iterdir()) == []
    assert "run: sst-global-mean, 2018-12-01..2018-12-31" in out
    assert [line for line in out.splitlines() if line.startswith("  failed ")] == [
        f"  failed g{k}: GranuleUnreadable: truncated" for k in range(25)]
    assert "more failed" not in out
    assert out.split("outputs:\n", 1)[1].split() == [
        f"s3://{BUCKET}/outputs/sst-global-mean/ocean-abc/global_mean_sst.csv",
        f"s3://{BUCKET}/outputs/sst-global-mean/ocean-abc/global_mean_sst.png",
        f"s3://{BUCKET}/outputs/atl06/cells.zarr", f"s3://{BUCKET}/{layout.summary_key(name)}"]

    monkeypatch.undo()
    assert main(["results", arn, "--stack", STACK, "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert len([line for line in out.splitlines() if line.startswith("  failed ")]) == 20
    assert "  and 5 more failed: summary.json lists them all" in out
    assert len(json.loads((tmp_path / "out" / "summary.json").read_text())["failures"]) == 25


def test_results_of_a_run_that_failed_too_often_exit_1(stack, capsys, tmp_path: Path) -> None:
    arn = start(capsys, "--start", "2018-12-01", "--end", "2018-12-31")
    _publish_run(wait(arn)["name"], status="FAILED")
    assert main(["results", arn, "--out", str(tmp_path), "--stack", STACK]) == 1
    assert "FAILED: items: 2 computed" in capsys.readouterr().out


def test_results_before_a_summary_exists_say_why(stack, capsys, tmp_path: Path) -> None:
    arn = start(capsys, "--start", "2018-12-01", "--end", "2018-12-31", "--collection", "NO-SUCH-COLLECTION")
    desc = wait(arn)
    assert main(["results", arn, "--out", str(tmp_path), "--stack", STACK]) == 1
    err = capsys.readouterr().err
    assert f"no s3://{BUCKET}/{layout.summary_key(desc['name'])}" in err
    assert "the run is FAILED (CatalogFailed: CMR refused the search). It ended before Aggregate" in err
    assert "expire" not in err  # it was never written: no hint that it expired
    assert list(tmp_path.iterdir()) == []
    # Why there is none, by how the run ended: never written (a state before Aggregate failed), Aggregate's own
    # failure, or written (it wrote it before raising TooManyFailures) and deleted or expired since.
    client = cloud._client
    now = dt.datetime.now(dt.UTC)

    def ended(status: str, error: str | None, days_ago: int) -> Any:
        def made(service: str, region: str | None = None) -> Any:
            made_client = client(service, region)
            if service == "stepfunctions":
                describe = made_client.describe_execution
                made_client.describe_execution = lambda **kw: {
                    **describe(**kw), "status": status, "error": error, "cause": None,
                    "stopDate": now - dt.timedelta(days=days_ago)}
            return made_client
        return made

    for status, error, days_ago, says in (
            ("FAILED", "CatalogFailed", 400, "It ended before Aggregate, which writes it"),  # never, however old
            ("FAILED", "AggregateFailed", 1, "Aggregate failed before writing it"),
            ("FAILED", "TooManyFailures", 2, "Aggregate wrote it: it was deleted since, or expired"),
            ("FAILED", "TooManyFailures", 8, "Run data expire after RunDataRetentionDays (7 days): this run ended 8 "
                                             "days ago"),
            ("SUCCEEDED", None, 8, "Run data expire after RunDataRetentionDays (7 days)")):
        with pytest.MonkeyPatch.context() as patch:
            found = cloud.describe_stack(STACK)
            patch.setattr(cloud, "describe_stack", lambda *a, **k: cloud.Stack(
                found.name, found.state_machine_arn, found.bucket, {**found.parameters, "RunDataRetentionDays": "7"}))
            patch.setattr(cloud, "_client", ended(status, error, days_ago))
            assert main(["results", arn, "--stack", STACK]) == 1
        err = capsys.readouterr().err
        assert says in err, (status, error, err)
        assert ("expire" in err) == (days_ago == 8 or "deleted" in says), err


def test_results_ask_for_the_stack_when_no_stack_owns_the_state_machine(stack, capsys, tmp_path: Path) -> None:
    arn = start(capsys, "--start", "2018-12-01", "--end", "2018-12-31")
    wait(arn)
    assert main(["results", arn, "--out", str(tmp_path)]) == 2
    assert f"no CloudFormation stack owns {stack['state_machine']}: give --stack" in capsys.readouterr().err


def test_status_of_an_execution_that_does_not_exist_says_what_to_check(stack, capsys) -> None:
    arn = stack["state_machine"].replace(":stateMachine:", ":execution:") + ":no-such-run"
    assert main(["status", arn]) == 3
    err = capsys.readouterr().err
    assert "ExecutionDoesNotExist" in err and "check the ARN" in err and "keeps an execution 90 days" in err


def test_results_of_a_stack_not_found_do_not_suggest_an_option_they_lack(stack, capsys, tmp_path: Path) -> None:
    """results (and status) take the region from the ARN: they have no --region, which the message suggested."""
    arn = start(capsys, "--start", "2018-12-01", "--end", "2018-12-31")
    wait(arn)
    assert main(["results", arn, "--stack", "no-such-stack"]) == 2
    err = capsys.readouterr().err
    assert f"no CloudFormation stack named 'no-such-stack' in {REGION}: check the name" in err
    assert "--region" not in err


def _no_aws_credentials(monkeypatch) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # one made by an earlier test keeps the keys it found


def test_without_aws_credentials_a_command_says_so_in_one_line_and_exits_3(monkeypatch, capsys) -> None:
    """Not a traceback, and not exit 1, which `status` keeps for a run that failed."""
    _no_aws_credentials(monkeypatch)
    rc = main(["status", f"arn:aws:states:{REGION}:123456789012:execution:sm:run"])
    err = capsys.readouterr().err
    assert rc == 3
    assert err.strip().splitlines() == ["granulemap: AWS: NoCredentialsError: Unable to locate credentials (set up "
                                        "AWS credentials: aws configure, aws sso login, or AWS_PROFILE)"]


@pytest.mark.parametrize("flags, field", [
    (["--recipe", "sst-global-meen", "--start", "2018-12-01", "--end", "2018-12-31"], "field 'recipe'"),
    (["--recipe", "sst-global-mean", "--start", "2018-12-31", "--end", "2018-12-01"], "end (2018-12-01) is before start"),
    (["--recipe", "sst-global-mean", "--start", "2018-13-01", "--end", "2018-12-31"], "field 'start'"),
    (["--recipe", "sst-global-mean", "--start", "2018-12-01", "--end", "2018-12-31", "--param", "method=foo"],
     "field 'method'"),
])
def test_start_checks_the_input_before_asking_aws_anything(monkeypatch, capsys, flags: list[str], field: str) -> None:
    """Bad input is exit 2 with its own message even without AWS credentials or network: start used to look the
    stack up first, so every mistake came back as an AWS error (exit 3)."""
    from granulemap import cloud

    _no_aws_credentials(monkeypatch)
    asked: list[str] = []
    monkeypatch.setattr(cloud, "_client", lambda service, *a, **k: asked.append(service))
    rc = main(["start", "--stack", STACK, *flags])
    err = capsys.readouterr().err
    assert rc == 2 and field in err, err
    assert asked == []


def test_a_store_copied_again_is_the_bucket_s_store_not_a_mix_with_the_old_copy(tmp_path: Path) -> None:
    """A Zarr store downloaded over an earlier copy kept the files the bucket no longer has (a chunk that became all
    fill, another configuration's chunk of another shape): the copy then read as a different store."""
    from granulemap.storage import download_objects

    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="copy-test", CreateBucketConfiguration={"LocationConstraint": REGION})
        for key in ("out/x.zarr/zarr.json", "out/x.zarr/h/c/0/0", "out/x.zarr/h/c/0/1"):
            s3.put_object(Bucket="copy-test", Key=key, Body=key.encode())
        (first,) = download_objects(s3, "copy-test", "out/x.zarr", tmp_path)
        assert sorted(p.relative_to(first).as_posix() for p in first.rglob("*") if p.is_file()) == [
            "h/c/0/0", "h/c/0/1", "zarr.json"]
        s3.delete_object(Bucket="copy-test", Key="out/x.zarr/h/c/0/1")
        s3.put_object(Bucket="copy-test", Key="out/x.zarr/h/c/0/0", Body=b"new")
        (again,) = download_objects(s3, "copy-test", "out/x.zarr", tmp_path)
    assert again == first == tmp_path / "x.zarr"
    assert sorted(p.relative_to(again).as_posix() for p in again.rglob("*") if p.is_file()) == ["h/c/0/0", "zarr.json"]
    assert (again / "h/c/0/0").read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["x.zarr"]  # no temporary folder left


def test_results_when_s3_throttles_is_an_aws_error_exit_3(stack, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """README: 3 when AWS refused or could not be reached; S3's SlowDown came out as StorageThrottled, exit 1."""
    from botocore.exceptions import ClientError

    arn = start(capsys, "--start", "2018-12-01", "--end", "2018-12-31")
    wait(arn)
    slow_down = ClientError({"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."}}, "GetObject")
    made = cloud._client

    def client(service: str, region: str) -> Any:
        c = made(service, region)
        if service == "s3":
            c.get_object = lambda **_: (_ for _ in ()).throw(slow_down)  # S3 throttles every read
        return c

    monkeypatch.setattr(cloud, "_client", client)
    assert main(["results", arn, "--stack", STACK]) == 3
    assert "granulemap: AWS: ClientError: An error occurred (SlowDown)" in capsys.readouterr().err


def test_the_stack_of_a_state_machine_is_asked_of_cloudformation_by_its_arn(monkeypatch) -> None:
    """moto cannot look a stack up by a resource's physical id, so DescribeStackResources is stubbed with the answers
    CloudFormation gives: the owning stack's resource, none, a ValidationError (no such resource), another error."""
    from botocore.exceptions import ClientError
    from botocore.stub import Stubber

    from granulemap.errors import InvalidInput

    arn = "arn:aws:states:eu-west-1:123456789012:stateMachine:granulemap-Pipeline-AbC"
    client = boto3.client("cloudformation", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y")
    asked: list[tuple[str, str | None]] = []
    monkeypatch.setattr(cloud, "_client", lambda service, region=None: asked.append((service, region)) or client)
    owner = {"StackName": "my-granulemap", "StackId": "arn:aws:cloudformation:eu-west-1:123456789012:stack/x/1",
             "LogicalResourceId": "PipelineStateMachine", "PhysicalResourceId": arn,
             "ResourceType": "AWS::StepFunctions::StateMachine", "Timestamp": dt.datetime(2026, 1, 1),
             "ResourceStatus": "CREATE_COMPLETE"}
    with Stubber(client) as stub:
        stub.add_response("describe_stack_resources", {"StackResources": [owner]}, {"PhysicalResourceId": arn})
        assert cloud.stack_of_state_machine(arn) == "my-granulemap"
        stub.add_response("describe_stack_resources", {"StackResources": []}, {"PhysicalResourceId": arn})
        with pytest.raises(InvalidInput, match=f"no CloudFormation stack owns {arn}: give --stack"):
            cloud.stack_of_state_machine(arn)
        stub.add_client_error("describe_stack_resources", "ValidationError", "Stack for x does not exist")
        with pytest.raises(InvalidInput, match="give --stack"):
            cloud.stack_of_state_machine(arn)
        stub.add_client_error("describe_stack_resources", "AccessDenied", "not allowed")
        with pytest.raises(ClientError, match="AccessDenied"):
            cloud.stack_of_state_machine(arn)
        stub.assert_no_pending_responses()
    assert asked == [("cloudformation", "eu-west-1")] * 4  # in the state machine's own region
