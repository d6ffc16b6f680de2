"""template.yaml, translated to CloudFormation offline the way `sam validate` does (aws-sam-translator through
samcli's validator, with a stub instead of the IAM call that lists AWS managed policies), and asserted.

IAM: no statement may grant an action on "*" except where AWS accepts nothing narrower; each exception is listed in
ALLOWED_STAR_ACTIONS / ALLOWED_MANAGED_POLICIES with its reason. The state machine may invoke only its four
functions, start/describe/stop only its own (child) executions and read/write only its own bucket's runs/ prefix.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from samcli.lib.translate.sam_template_validator import SamTemplateValidator
from samcli.yamlhelper import yaml_parse

from granulemap import layout
from granulemap.estimate import LAMBDA_MEMORY_RANGE_MB
from granulemap.local.template import LAMBDA_ONLY_VARIABLES, Resolver, read_local_template
from granulemap.local.worker import PROCESS_START_VARIABLES, process_start_environment
from granulemap.models import ExecutionInput
from granulemap.recipes import get_recipe
from granulemap.settings import _ENV as SETTINGS_ENVIRONMENT

from conftest import ROOT

FUNCTIONS = {
    "CatalogBuilderFunction": "functions/catalog_builder/",
    "CredentialFetcherFunction": "functions/credential_fetcher/",
    "ProcessorFunction": "functions/processor/",
    "AggregatorFunction": "functions/aggregator/",
}
STATE_MACHINE_NAME = {"Fn::Sub": "${AWS::StackName}-pipeline"}

ALLOWED_STAR_ACTIONS = {
    # X-Ray trace segments and telemetry cannot be scoped to a resource (the service defines no resource type).
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
}
ALLOWED_MANAGED_POLICIES = {
    # Added by SAM to the state machine's role for `Tracing: Enabled`: X-Ray's write and sampling actions, which
    # accept only "*". The functions' roles are written out in template.yaml instead (no AWSLambdaBasicExecutionRole:
    # its CloudWatch Logs actions on "*" are replaced by each function's own log group).
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
}


class _NoManagedPolicyLookup:
    """sam validate asks IAM for the managed policy list; the template names none, so nothing is needed."""

    def load(self) -> dict[str, str]:
        return {}


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    return yaml_parse((ROOT / "template.yaml").read_text())


@pytest.fixture(scope="module")
def cfn(sam: dict[str, Any]) -> dict[str, Any]:
    validator = SamTemplateValidator(json.loads(json.dumps(sam)), _NoManagedPolicyLookup(), region="us-west-2")
    return yaml_parse(validator.get_translated_template_if_valid())


def resources_of(cfn: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {lid: r for lid, r in cfn["Resources"].items() if r["Type"] == kind}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    return as_list(document["Statement"])


NO_VALUE = {"Ref": "AWS::NoValue"}


def decided(cfn: dict[str, Any], node: Any, parameters: dict[str, str] | None = None) -> Any:
    """``node`` as CloudFormation deploys it with ``parameters`` (the template's defaults for the others): each
    Fn::If replaced by its chosen branch, each AWS::NoValue left out; other intrinsics kept as they are."""
    refs = {name: str(p.get("Default", "")) for name, p in cfn["Parameters"].items()} | (parameters or {})
    resolver = Resolver(refs, {}, cfn.get("Conditions", {}))

    def walk(value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"Fn::If"}:
            name, yes, no = value["Fn::If"]
            return walk(yes if resolver.condition(name) else no)
        if isinstance(value, dict):
            return {k: v for k, v in ((k, walk(v)) for k, v in value.items()) if v != NO_VALUE}
        if isinstance(value, list):
            return [v for v in map(walk, value) if v != NO_VALUE]
        return value

    return walk(node)


def role_documents(cfn: dict[str, Any], role_id: str, parameters: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every policy document a role gets: inline, and template-defined managed policies it attaches (as deployed
    with ``parameters``: ``decided``)."""
    props = cfn["Resources"][role_id]["Properties"]
    docs = [p["PolicyDocument"] for p in props.get("Policies", [])]
    for arn in props.get("ManagedPolicyArns", []):
        if isinstance(arn, dict) and "Ref" in arn:
            docs.append(cfn["Resources"][arn["Ref"]]["Properties"]["PolicyDocument"])
    return decided(cfn, docs, parameters)


def role_statements(cfn: dict[str, Any], role_id: str,
                    parameters: dict[str, str] | None = None) -> list[dict[str, Any]]:
    return [s for doc in role_documents(cfn, role_id, parameters) for s in statements(doc)]


def grants(cfn: dict[str, Any], role_id: str, action: str, parameters: dict[str, str] | None = None) -> list[Any]:
    """The resources a role's Allow statements grant ``action`` on (as deployed with ``parameters``)."""
    return [r for s in role_statements(cfn, role_id, parameters)
            if s["Effect"] == "Allow" and action in as_list(s["Action"]) for r in as_list(s["Resource"])]


def role_of_function(cfn: dict[str, Any], function_id: str) -> str:
    role = cfn["Resources"][function_id]["Properties"]["Role"]
    assert role == {"Fn::GetAtt": [role["Fn::GetAtt"][0], "Arn"]}
    return role["Fn::GetAtt"][0]


def state_machine_role(cfn: dict[str, Any]) -> str:
    return cfn["Resources"]["PipelineStateMachine"]["Properties"]["RoleArn"]["Fn::GetAtt"][0]


# ---- functions and layer --------------------------------------------------------------------------------------
def test_four_python312_functions_share_the_one_layer(sam: dict[str, Any], cfn: dict[str, Any]) -> None:
    functions = resources_of(cfn, "AWS::Lambda::Function")
    assert set(functions) == set(FUNCTIONS)
    (layer_id,) = resources_of(cfn, "AWS::Lambda::LayerVersion")
    for props in (f["Properties"] for f in functions.values()):
        assert props["Runtime"] == "python3.12"
        assert props["Handler"] == "app.handler"
        assert props["Layers"] == [{"Ref": layer_id}]
        assert props["TracingConfig"] == {"Mode": "Active"}
    for lid, code_uri in FUNCTIONS.items():
        assert sam["Resources"][lid]["Properties"]["CodeUri"] == code_uri
        assert (ROOT / code_uri / "app.py").is_file()
    layer = sam["Resources"]["CommonLayer"]
    build_method = layer["Metadata"]["BuildMethod"]
    if build_method == "makefile":  # layers/common/Makefile: pip install for python3.12, minus test suites
        makefile = (ROOT / "layers" / "common" / "Makefile").read_text()
        assert "build-CommonLayer:" in makefile and "--python-version 3.12" in makefile
    else:
        assert build_method == "python3.12"
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.12"]
    assert layer["Properties"]["ContentUri"] == "layers/common/"


def test_every_function_environment_variable_is_a_setting_the_code_reads(cfn: dict[str, Any]) -> None:
    known = set(SETTINGS_ENVIRONMENT.values()) | {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE",
                                                   "LOG_LEVEL", *PROCESS_START_VARIABLES, *LAMBDA_ONLY_VARIABLES}
    for lid, fn in resources_of(cfn, "AWS::Lambda::Function").items():
        env = fn["Properties"]["Environment"]["Variables"]
        assert set(env) <= known, (lid, set(env) - known)
        assert env["BUCKET_NAME"] == {"Ref": "DataBucket"}


def test_metrics_and_logs_name_their_stack_so_that_two_stacks_of_an_account_are_told_apart(
        cfn: dict[str, Any]) -> None:
    """Every stack's functions put their metrics (GranulesFailed, ...) in namespace granulemap: with the service
    dimension "granulemap" for all, two stacks of one account (an SST one and an ATL06 one, or test and production)
    added up. The service is the stack's name, as the metrics and log lines a function writes show."""
    for lid, fn in resources_of(cfn, "AWS::Lambda::Function").items():
        env = fn["Properties"]["Environment"]["Variables"]
        assert env["POWERTOOLS_SERVICE_NAME"] == {"Ref": "AWS::StackName"}, lid
        assert env["POWERTOOLS_METRICS_NAMESPACE"] == "granulemap", lid
    code = ("import json; from aws_lambda_powertools.metrics import MetricUnit; "
            "from granulemap.observability import logger, metrics; "
            "metrics.add_metric(name='GranulesFailed', unit=MetricUnit.Count, value=1); "
            "emf = metrics.serialize_metric_set(); "
            "print(json.dumps([emf['_aws']['CloudWatchMetrics'][0], emf['service'], logger.service]))")
    env = {**os.environ, "POWERTOOLS_SERVICE_NAME": "sst-production", "POWERTOOLS_METRICS_NAMESPACE": "granulemap"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    emf, service, log_service = json.loads(done.stdout)
    assert emf["Namespace"] == "granulemap" and emf["Dimensions"] == [["service"]]
    assert service == log_service == "sst-production"


def test_the_function_that_draws_gives_matplotlib_a_writable_folder_in_lambda_only(cfn: dict[str, Any]) -> None:
    """Aggregate draws the plots. In Lambda only /tmp is writable (HOME is not): matplotlib's config and font cache
    go there, not to a new temporary folder each cold start. Locally the user's own folder is kept."""
    env = cfn["Resources"]["AggregatorFunction"]["Properties"]["Environment"]["Variables"]
    assert Path(env["MPLCONFIGDIR"]).is_relative_to("/tmp")
    from granulemap.local.engine import ACCOUNT, LOCAL_BUCKET, LOCAL_STACK_NAME, REGION

    local = read_local_template(ROOT, LOCAL_BUCKET, REGION, ACCOUNT, LOCAL_STACK_NAME)
    assert "MPLCONFIGDIR" not in local.functions["AggregatorFunction"].environment
    assert local.functions["AggregatorFunction"].environment["BUCKET_NAME"] == LOCAL_BUCKET  # the rest is there


def test_every_function_starts_with_the_same_malloc_settings(cfn: dict[str, Any]) -> None:
    environments = [fn["Properties"]["Environment"]["Variables"]
                    for fn in resources_of(cfn, "AWS::Lambda::Function").values()]
    tunables = process_start_environment(environments)["GLIBC_TUNABLES"]
    settings = {k: int(v) for k, v in (part.split("=") for part in tunables.split(":"))}
    assert set(settings) == {"glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold"}
    # The ceiling of glibc's dynamic mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX = 4 MiB * sizeof(long)):
    # no block that glibc's own adjustment could keep on the heap is given an mmap.
    assert settings["glibc.malloc.mmap_threshold"] == 4 * 1024 * 1024 * 8
    # More than a MUR25 granule's working memory (BENCHMARKS.md's SST table: about 10 MB) is kept for the next one.
    assert settings["glibc.malloc.trim_threshold"] > 10 * 1024**2


def test_functions_that_disagree_on_a_process_start_variable_are_refused() -> None:
    with pytest.raises(ValueError, match="GLIBC_TUNABLES differently"):
        process_start_environment([{"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1"}, {}])
    assert process_start_environment([{}, {"LOG_LEVEL": "INFO"}]) == {}


def test_a_user_s_own_glibc_tunables_are_kept_unless_the_template_sets_the_same_one() -> None:
    template = [{"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=100:glibc.malloc.trim_threshold=200"}]
    user = {"GLIBC_TUNABLES": "glibc.rtld.optional_static_tls=2048:glibc.malloc.trim_threshold=1"}
    merged = process_start_environment(template, user)["GLIBC_TUNABLES"]
    assert dict(part.split("=") for part in merged.split(":")) == {
        "glibc.rtld.optional_static_tls": "2048", "glibc.malloc.mmap_threshold": "100",
        "glibc.malloc.trim_threshold": "200"}
    assert process_start_environment(template, {})["GLIBC_TUNABLES"] == template[0]["GLIBC_TUNABLES"]


def test_each_function_has_a_memory_parameter_and_logs_with_retention(cfn: dict[str, Any]) -> None:
    for lid, fn in resources_of(cfn, "AWS::Lambda::Function").items():
        memory = fn["Properties"]["MemorySize"]
        assert memory == {"Ref": lid.removesuffix("Function") + "MemorySize"}
        parameter = cfn["Parameters"][memory["Ref"]]
        assert (parameter["MinValue"], parameter["MaxValue"]) == LAMBDA_MEMORY_RANGE_MB  # what estimate accepts too
        group = fn["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert cfn["Resources"][group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        # The function's role may write to that log group only.
        role = role_of_function(cfn, lid)
        assert grants(cfn, role, "logs:PutLogEvents") == [{"Fn::GetAtt": [group, "Arn"]}]
        assert grants(cfn, role, "logs:CreateLogStream") == [{"Fn::GetAtt": [group, "Arn"]}]


# ---- state machine --------------------------------------------------------------------------------------------
def test_definition_substitutions_match_the_asl_placeholders_both_ways(cfn: dict[str, Any]) -> None:
    text = (ROOT / "statemachine" / "pipeline.asl.json").read_text()
    placeholders = set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", text))
    props = cfn["Resources"]["PipelineStateMachine"]["Properties"]
    assert set(props["DefinitionSubstitutions"]) == placeholders
    assert props["DefinitionSubstitutions"] == {
        **{f"{lid}Arn": {"Ref": published_version(cfn, lid)} for lid in FUNCTIONS},
        "DataBucketName": {"Ref": "DataBucket"},
        "RunAlertsTopicArn": {"Ref": "RunAlertsTopic"},  # TellFailuresWithinTolerance publishes there
    }
    assert props["StateMachineName"] == STATE_MACHINE_NAME and props["StateMachineType"] == "STANDARD"
    assert props["TracingConfiguration"] == {"Enabled": True}


def published_version(cfn: dict[str, Any], function_id: str) -> str:
    """The logical id of the one version of ``function_id`` that this deploy publishes."""
    (version,) = [lid for lid, r in resources_of(cfn, "AWS::Lambda::Version").items()
                  if r["Properties"]["FunctionName"] == {"Ref": function_id}]
    return version


def test_the_state_machine_calls_the_versions_a_deploy_published_and_they_outlive_the_next_deploy(
        cfn: dict[str, Any]) -> None:
    """A run keeps the function versions of the definition it started with: a deploy during a run does not mix two
    versions of the code in its results. SAM keeps old versions (Retain), so a run started before a deploy still
    finds its own; the state machine may invoke every version of each function (function:<name>:<version>)."""
    for lid in FUNCTIONS:
        version = cfn["Resources"][published_version(cfn, lid)]
        assert version["DeletionPolicy"] == "Retain", lid
    role = state_machine_role(cfn)
    assert sorted(grants(cfn, role, "lambda:InvokeFunction"), key=json.dumps) == sorted(
        [{"Fn::Sub": f"${{{lid}.Arn}}:*"} for lid in FUNCTIONS], key=json.dumps)


@pytest.mark.parametrize("change", ["layer", "timeout", "environment", "memory"])
def test_a_change_of_the_layer_or_of_a_function_s_configuration_publishes_a_new_version(
        sam: dict[str, Any], cfn: dict[str, Any], change: str) -> None:
    """A version is published only for what its hash covers: the functions' code is their folders (thin handlers)
    and the layer (granulemap itself). Were a new layer, or a new timeout, not to publish new versions, the state
    machine would go on calling the old ones, and the deploy would reach only $LATEST, which nothing calls.
    (AutoPublishAliasAllProperties on each function, PublishLambdaVersion on the layer.)"""
    changed = json.loads(json.dumps(sam))
    if change == "layer":  # sam package puts the built layer's zip at an S3 key named by its content's hash
        changed["Resources"]["CommonLayer"]["Properties"]["ContentUri"] = "s3://artifacts/0123456789abcdef"
    for lid in FUNCTIONS:
        props = changed["Resources"][lid]["Properties"]
        if change == "environment":
            props.setdefault("Environment", {"Variables": {}})["Variables"]["LOG_LEVEL"] = "DEBUG"
        elif change == "memory":
            props["MemorySize"] = 2048
        elif change == "timeout":
            props["Timeout"] = 899
    validator = SamTemplateValidator(changed, _NoManagedPolicyLookup(), region="us-west-2")
    again = yaml_parse(validator.get_translated_template_if_valid())
    for lid in FUNCTIONS:
        assert published_version(again, lid) != published_version(cfn, lid), lid


def test_the_state_machine_invokes_only_its_four_functions(cfn: dict[str, Any]) -> None:
    role = state_machine_role(cfn)
    invoked = grants(cfn, role, "lambda:InvokeFunction")
    assert sorted(invoked, key=json.dumps) == sorted(
        [{"Fn::Sub": f"${{{lid}.Arn}}:*"} for lid in FUNCTIONS], key=json.dumps)  # their versions


def test_the_state_machine_starts_describes_and_stops_only_its_own_executions(cfn: dict[str, Any]) -> None:
    role = state_machine_role(cfn)
    prefix = "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}"
    own = STATE_MACHINE_NAME["Fn::Sub"]
    assert grants(cfn, role, "states:StartExecution") == [{"Fn::Sub": f"{prefix}:stateMachine:{own}"}]
    # A Distributed Map's child executions are named <state machine>/<map run label>:<id>; AWS's policy example for
    # a Distributed Map grants execution:<state machine>:*, the state machine's own executions. Both, and no other.
    own_executions = [{"Fn::Sub": f"{prefix}:execution:{own}:*"}, {"Fn::Sub": f"{prefix}:execution:{own}/*"}]
    assert grants(cfn, role, "states:DescribeExecution") == own_executions
    assert grants(cfn, role, "states:StopExecution") == own_executions
    # Each form matches this state machine's executions (its own, its Map's children) and no other state machine's,
    # not even one whose name starts with this one's.
    import fnmatch

    arn = f"arn:aws:states:us-west-2:123456789012:execution:{own.replace('${AWS::StackName}', 'gm')}"
    patterns = [r["Fn::Sub"].replace(prefix, "arn:aws:states:us-west-2:123456789012")
                .replace("${AWS::StackName}", "gm") for r in own_executions]

    def matched(name: str) -> list[bool]:  # IAM's * matches any characters, as fnmatch's does
        return [fnmatch.fnmatchcase(name, p) for p in patterns]

    assert matched(f"{arn}:sst-20190301-20190331-1a2b3c4d") == [True, False]
    assert matched(f"{arn}/ProcessItems:0c5a4b1e-8f5e-4a57-9f38-4b5d0e8b1c2d") == [False, True]
    assert not any(matched(arn.replace("gm-pipeline", "gm-pipeline2") + ":x"))
    actions = {a for s in role_statements(cfn, role) for a in as_list(s["Action"]) if a.startswith("states:")}
    assert actions == {"states:StartExecution", "states:DescribeExecution", "states:StopExecution"}


def test_only_buildcatalog_lists_and_describes_the_state_machine_s_own_runs(cfn: dict[str, Any]) -> None:
    """BuildCatalog reads the running executions' inputs to refuse a second run of a period (executions.py): the
    state machine by name (its ARN would be a circular reference) and its own executions only (not its Map's
    children, which it does not read)."""
    prefix = "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}"
    own = STATE_MACHINE_NAME["Fn::Sub"]
    for lid in FUNCTIONS:
        role = role_of_function(cfn, lid)
        actions = {a for s in role_statements(cfn, role) for a in as_list(s["Action"]) if a.startswith("states:")}
        if lid != "CatalogBuilderFunction":
            assert actions == set(), lid
            continue
        assert actions == {"states:ListExecutions", "states:DescribeExecution"}
        assert grants(cfn, role, "states:ListExecutions") == [{"Fn::Sub": f"{prefix}:stateMachine:{own}"}]
        assert grants(cfn, role, "states:DescribeExecution") == [{"Fn::Sub": f"{prefix}:execution:{own}:*"}]
    assert cfn["Resources"]["PipelineStateMachine"]["Properties"]["StateMachineName"] == STATE_MACHINE_NAME


def test_the_state_machine_reads_and_writes_only_run_data_in_its_bucket(cfn: dict[str, Any]) -> None:
    role = state_machine_role(cfn)
    s3 = [s for s in role_statements(cfn, role) if any(a.startswith("s3:") for a in as_list(s["Action"]))]
    # ItemReader reads the manifests (runs/<run>/manifest.json); ResultWriter writes (with multipart uploads) under
    # its prefix only, the ASL's, so that the state machine cannot overwrite a manifest or a summary.
    asl = json.loads((ROOT / "statemachine" / "pipeline.asl.json").read_text())

    def states(node: Any) -> Iterator[dict[str, Any]]:
        if isinstance(node, dict):
            yield node
            for value in node.values():
                yield from states(value)
        elif isinstance(node, list):
            for value in node:
                yield from states(value)

    (writer,) = [s["ResultWriter"] for s in states(asl) if "ResultWriter" in s]
    assert writer["Parameters"]["Prefix"] == layout.MAP_RESULTS_PREFIX
    assert [(set(as_list(s["Action"])), s["Resource"]) for s in s3] == [
        ({"s3:GetObject"}, {"Fn::Sub": f"${{DataBucket.Arn}}/{layout.RUNS_PREFIX}*"}),
        ({"s3:PutObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload"},
         {"Fn::Sub": f"${{DataBucket.Arn}}/{layout.MAP_RESULTS_PREFIX}/*"}),
        # RecordFailure's failure records (runs/<run>/failures/<item>.json), and nothing else of a run's
        ({"s3:PutObject"}, {"Fn::Sub": f"${{DataBucket.Arn}}/{layout.RUNS_PREFIX}*/failures/*"})]
    assert layout.failure_key("RUN", "ITEM") == f"{layout.RUNS_PREFIX}RUN/failures/ITEM.json"


# ---- schedule -------------------------------------------------------------------------------------------------
def test_the_monthly_schedule_runs_the_default_recipe_over_the_previous_month(cfn: dict[str, Any]) -> None:
    import datetime as dt

    (schedule,) = resources_of(cfn, "AWS::Scheduler::Schedule").values()
    props = schedule["Properties"]
    minute, hour, day_of_month, month, day_of_week, year = (
        re.fullmatch(r"cron\((.*)\)", props["ScheduleExpression"]).group(1).split())
    assert (month, day_of_week, year) == ("*", "?", "*")  # every month, on one day of the month
    # Not before the 3rd: a daily GHRSST L4 analysis is published about a day after its date, and a month is not run
    # again (on the 1st, every month's last day was missing). The README says which day.
    assert 3 <= int(day_of_month) <= 28
    day = int(day_of_month)
    ordinal = f"{day}{'th' if 11 <= day <= 13 else {1: 'st', 2: 'nd', 3: 'rd'}.get(day % 10, 'th')}"
    assert f"On the {ordinal} of each month at {int(hour):02d}:{int(minute):02d} UTC" in (ROOT / "README.md").read_text()
    assert props["ScheduleExpressionTimezone"] == "UTC"
    assert props["State"] == {"Fn::If": ["ScheduleOn", "ENABLED", "DISABLED"]}
    assert cfn["Conditions"]["ScheduleOn"] == {"Fn::Equals": [{"Ref": "ScheduleEnabled"}, "true"]}
    assert cfn["Parameters"]["ScheduleEnabled"]["Default"] == "false"
    assert props["Name"] == {"Fn::Sub": "${AWS::StackName}-monthly"}  # one schedule per stack, no name clash
    target = props["Target"]
    assert target["Arn"] == {"Ref": "PipelineStateMachine"}
    template_input = target["Input"]["Fn::Sub"]
    default_recipe = cfn["Parameters"]["DefaultRecipe"]["Default"]
    doc = json.loads(template_input.replace("${DefaultRecipe}", default_recipe))
    assert doc == {"recipe": "sst-global-mean", "period": "previous-month"}
    # What that input means when the schedule fires in March 2026: all of February.
    fired = dt.datetime(2026, 3, int(day_of_month), int(hour), int(minute), tzinfo=dt.UTC)
    assert ExecutionInput.model_validate(doc).date_range(fired) == (dt.date(2026, 2, 1), dt.date(2026, 2, 28))
    # The scheduler's role may start this state machine and put a start that failed in its queue, nothing else.
    role = target["RoleArn"]["Fn::GetAtt"][0]
    queue = {"Fn::GetAtt": ["ScheduleDeadLetterQueue", "Arn"]}
    assert role_statements(cfn, role) == [
        {"Action": "states:StartExecution", "Effect": "Allow", "Resource": {"Ref": "PipelineStateMachine"}},
        {"Action": "sqs:SendMessage", "Effect": "Allow", "Resource": queue}]
    # Scheduler may take it for this account's schedules only (the confused-deputy guard)
    (trust,) = statements(cfn["Resources"][role]["Properties"]["AssumeRolePolicyDocument"])
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"} and trust["Action"] == "sts:AssumeRole"
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


def test_a_scheduled_start_that_fails_is_retried_then_kept_and_told_to_the_alert_topic(cfn: dict[str, Any]) -> None:
    """An execution that fails is told by the rule below; a StartExecution that fails makes no execution. Scheduler
    retries it for up to a day (its limits: 0-185 attempts, 60-86,400 s), then puts it in the dead-letter queue,
    whose alarm publishes to the alert topic as soon as a message is visible."""
    (schedule,) = resources_of(cfn, "AWS::Scheduler::Schedule").values()
    target = schedule["Properties"]["Target"]
    retry = target["RetryPolicy"]
    assert 1 <= retry["MaximumRetryAttempts"] <= 185 and retry["MaximumEventAgeInSeconds"] == 86400
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["ScheduleDeadLetterQueue", "Arn"]}}
    queue = cfn["Resources"]["ScheduleDeadLetterQueue"]
    assert queue["Type"] == "AWS::SQS::Queue"
    assert queue["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600  # SQS's longest
    alarm = cfn["Resources"]["ScheduleCouldNotStartARunAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["ScheduleDeadLetterQueue",
                                                                                  "QueueName"]}}]
    # One message is enough: the largest count over the period, above 0; no data (an empty queue) is not an alarm.
    assert (alarm["Statistic"], alarm["ComparisonOperator"], alarm["Threshold"]) == ("Maximum", "GreaterThanThreshold", 0)
    assert alarm["EvaluationPeriods"] == 1 and alarm["TreatMissingData"] == "notBreaching"
    assert alarm["AlarmActions"] == [{"Ref": "RunAlertsTopic"}]
    # What the alarm's email says to do names only things that exist: the queue, and start's own options.
    description = alarm["AlarmDescription"]["Fn::Sub"]
    assert "${ScheduleDeadLetterQueue.QueueName}" in description
    import shlex

    from granulemap.cli import build_parser

    command = re.search(r"granulemap start (.*?)\)", description).group(1)
    for placeholder, value in {"${AWS::StackName}": "granulemap", "${AWS::Region}": "eu-west-1",
                               "${DefaultRecipe}": "sst-global-mean", "YYYY-MM": "2026-10"}.items():
        command = command.replace(placeholder, value)
    args = build_parser().parse_args(["start", *shlex.split(command)])  # exits (fails the test) on an unknown option
    # the month as a period: checked whole, as the schedule's run would have been (--start/--end accept a gap)
    assert (args.stack, args.recipe, args.period, args.start, args.end) == ("granulemap", "sst-global-mean", "2026-10",
                                                                            None, None)
    assert args.region == "eu-west-1"  # the stack's own region: the operator's default may be another
    assert cfn["Outputs"]["ScheduleDeadLetterQueueUrl"]["Value"] == {"Ref": "ScheduleDeadLetterQueue"}
    readme = (ROOT / "README.md").read_text()
    assert "ScheduleDeadLetterQueueUrl" in readme and "<stack>-schedule-could-not-start-a-run" in readme
    assert alarm["AlarmName"] == {"Fn::Sub": "${AWS::StackName}-schedule-could-not-start-a-run"}


# ---- alerts -----------------------------------------------------------------------------------------------------
STATE_MACHINE_ARN = "arn:aws:states:us-west-2:123456789012:stateMachine:granulemap-pipeline"


ERRORS = {"FAILED": "CatalogFailed", "TIMED_OUT": "States.Timeout", "ABORTED": "Stopped"}
"""An ended execution's error name, as its status change event carries it (a Fail state's Error, a timeout's)."""


def _status_change(status: str, state_machine_arn: str = STATE_MACHINE_ARN, name: str = "sst-2019-03") -> dict:
    """An EventBridge "Step Functions Execution Status Change" event, as AWS documents it: its detail is what
    DescribeExecution gives, an ended execution's error and cause included."""
    ended = {"error": ERRORS[status], "cause": "a cause"} if status in ERRORS else {}
    return {
        "version": "0", "id": "315c1398-40ff-a850-213b-158f73e60175", "source": "aws.states",
        "detail-type": "Step Functions Execution Status Change", "account": "123456789012",
        "time": "2019-04-01T06:12:00Z", "region": "us-west-2", "resources": [f"{state_machine_arn}:{name}"],
        "detail": {"executionArn": f"{state_machine_arn.replace(':stateMachine:', ':execution:')}:{name}",
                   "stateMachineArn": state_machine_arn, "name": name, "status": status,
                   "startDate": 1554098400000, "stopDate": 1554099120000, "input": "{}", "output": None, **ended},
    }


def test_a_run_that_ends_badly_is_told_once_to_the_alert_topic_and_nothing_else_is(cfn: dict[str, Any]) -> None:
    import boto3
    from moto import mock_aws

    rule = cfn["Resources"]["RunEndedBadlyRule"]["Properties"]
    pattern = json.loads(json.dumps(rule["EventPattern"]).replace(json.dumps({"Ref": "PipelineStateMachine"}),
                                                                  json.dumps(STATE_MACHINE_ARN)))
    child = f"{STATE_MACHINE_ARN}/ProcessItems:0c5a4b1e-8f5e-4a57-9f38-4b5d0e8b1c2d"
    cases = {"failed": ("FAILED", STATE_MACHINE_ARN, True), "expired": ("TIMED_OUT", STATE_MACHINE_ARN, True),
             "aborted": ("ABORTED", STATE_MACHINE_ARN, True), "succeeded": ("SUCCEEDED", STATE_MACHINE_ARN, False),
             "running": ("RUNNING", STATE_MACHINE_ARN, False),
             "child": ("FAILED", child, False),  # a failed item's child execution: its run decides, by tolerance
             "other": ("FAILED", STATE_MACHINE_ARN.replace("granulemap-pipeline", "someone-else"), False)}
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Ref": "RunAlertsTopic"}
    transformer = target["InputTransformer"]
    # moto's EventBridge matches patterns and applies input transformers for SQS targets (not SNS ones): the rule's
    # pattern and transformer, pointed at a queue, show which events it passes on and what it says of them. (No
    # execution name here may contain "time": moto then takes the message for an event with a time field.)
    with mock_aws():
        events = boto3.client("events", region_name="us-west-2")
        sqs = boto3.client("sqs", region_name="us-west-2")
        queue = sqs.create_queue(QueueName="run-alerts")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name="run-ended-badly", EventPattern=json.dumps(pattern))
        events.put_targets(Rule="run-ended-badly",
                           Targets=[{"Id": "alerts", "Arn": queue_arn, "InputTransformer": transformer}])
        sent = {}
        for name, (status, machine, _) in cases.items():
            event = _status_change(status, machine, name=f"sst-{name}")
            sent[name] = event
            events.put_events(Entries=[{"Source": event["source"], "DetailType": event["detail-type"],
                                        "Resources": event["resources"], "Detail": json.dumps(event["detail"])}])
        bodies = []
        while batch := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
            bodies += [json.loads(m["Body"]) for m in batch]
            sqs.delete_message_batch(QueueUrl=queue, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                                                              for i, m in enumerate(batch)])
    expected = [f"granulemap run sst-{name} ended {status} (error {ERRORS[status]}). Why, and how to run it again: "
                f"granulemap status "
                f"{sent[name]['detail']['executionArn']}. Every failed item and granule: granulemap results "
                f"{sent[name]['detail']['executionArn']}" for name, (status, _, told) in cases.items() if told]
    assert sorted(bodies) == sorted(expected)

    # Only this rule may publish to the topic; the email subscription exists only when an address is given.
    policy = cfn["Resources"]["RunAlertsTopicPolicy"]["Properties"]
    assert policy["Topics"] == [{"Ref": "RunAlertsTopic"}]
    token_alarm = {  # when a token is stored: the alarm that tells before it expires (below)
        "Sid": "OnlyThisStacksTokenAlarmMayPublish", "Effect": "Allow",
        "Principal": {"Service": "cloudwatch.amazonaws.com"}, "Action": "sns:Publish",
        "Resource": {"Ref": "RunAlertsTopic"},
        "Condition": {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["EarthdataTokenExpiresSoonAlarm", "Arn"]}}}}
    with_token = statements(decided(cfn, policy["PolicyDocument"], {"EdlTokenParameter": "/granulemap/edl/token"}))
    assert with_token[-1] == token_alarm
    assert token_alarm not in statements(decided(cfn, policy["PolicyDocument"]))  # the default: no token
    assert with_token[:-1] == statements(decided(cfn, policy["PolicyDocument"])) == [{
        "Sid": "OnlyThisStacksRuleMayPublish", "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
        "Action": "sns:Publish", "Resource": {"Ref": "RunAlertsTopic"},
        "Condition": {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["RunEndedBadlyRule", "Arn"]}}}}, {
        # and the schedule's alarm (a topic policy replaces SNS's default one: without this, the alarm may not)
        "Sid": "OnlyThisStacksScheduleAlarmMayPublish", "Effect": "Allow",
        "Principal": {"Service": "cloudwatch.amazonaws.com"}, "Action": "sns:Publish",
        "Resource": {"Ref": "RunAlertsTopic"},
        "Condition": {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["ScheduleCouldNotStartARunAlarm", "Arn"]}}}}]
    assert len(resources_of(cfn, "AWS::SNS::TopicPolicy")) == 1  # a second one for the topic would replace this one
    email = cfn["Resources"]["RunAlertsEmail"]
    assert email["Condition"] == "HasAlertEmail"
    assert email["Properties"] == {"TopicArn": {"Ref": "RunAlertsTopic"}, "Protocol": "email",
                                   "Endpoint": {"Ref": "AlertEmail"}}
    assert cfn["Conditions"]["HasAlertEmail"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlertEmail"}, ""]}]}
    parameter = cfn["Parameters"]["AlertEmail"]
    assert parameter["Default"] == ""
    allowed = re.compile(parameter["AllowedPattern"])
    assert [bool(allowed.fullmatch(v)) for v in ("", "ops@example.org", "first.last@lab.example.ac.uk")] == [True] * 3
    assert [bool(allowed.fullmatch(v)) for v in ("ops", "ops@example", "a b@example.org", "@example.org")] == [False] * 4
    assert cfn["Outputs"]["RunAlertsTopicArn"]["Value"] == {"Ref": "RunAlertsTopic"}


# ---- IAM everywhere -------------------------------------------------------------------------------------------
def test_no_iam_statement_uses_a_star_resource_or_action_unless_aws_requires_it(cfn: dict[str, Any]) -> None:
    roles = resources_of(cfn, "AWS::IAM::Role")
    assert roles, "no roles found"
    for role_id, role in roles.items():
        for arn in role["Properties"].get("ManagedPolicyArns", []):
            if isinstance(arn, str):
                assert arn in ALLOWED_MANAGED_POLICIES, (role_id, arn)
        for s in role_statements(cfn, role_id):
            assert s["Effect"] == "Allow", (role_id, s)
            actions = as_list(s["Action"])
            assert not any(a == "*" or a.endswith(":*") for a in actions), (role_id, s)
            if "*" in as_list(s["Resource"]):
                assert as_list(s["Resource"]) == ["*"] and set(actions) <= ALLOWED_STAR_ACTIONS, (role_id, s)


def test_aws_managed_policies_appear_only_where_documented(cfn: dict[str, Any]) -> None:
    attached = {
        role_id: {a for a in r["Properties"].get("ManagedPolicyArns", []) if isinstance(a, str)}
        for role_id, r in resources_of(cfn, "AWS::IAM::Role").items()
    }
    assert attached.pop(state_machine_role(cfn)) == ALLOWED_MANAGED_POLICIES
    assert all(not arns for arns in attached.values()), attached


EDL_KINDS = ("Username", "Password", "Token")


def edl_parameters(*named: str) -> dict[str, str]:
    """Values of the three Earthdata Login parameter-name parameters with only the ``named`` kinds set."""
    return {f"Edl{kind}Parameter": f"/granulemap/edl/{kind.lower()}" if kind in named else "" for kind in EDL_KINDS}


@pytest.mark.parametrize("named", [(), ("Username",), ("Password",), ("Token",), ("Username", "Password"),
                                   ("Username", "Password", "Token")])
def test_each_edl_parameter_is_readable_exactly_when_named(cfn: dict[str, Any], named: tuple[str, ...]) -> None:
    """Each EDL parameter name may be empty ("none"). FetchCredentials, which logs in, may read exactly those named;
    with none named there is no such statement at all (IAM refuses a statement without a resource). No other function
    may read any of them, whatever is named: the Processor runs users' recipe code."""
    parameters = edl_parameters(*named)
    readable = [{"Fn::Sub": f"arn:${{AWS::Partition}}:ssm:${{AWS::Region}}:${{AWS::AccountId}}:"
                            f"parameter${{Edl{kind}Parameter}}"} for kind in EDL_KINDS if kind in named]
    for lid in FUNCTIONS:
        edl = [r for r in grants(cfn, role_of_function(cfn, lid), "ssm:GetParameter", parameters)
               if "daac-credentials" not in r["Fn::Sub"]]
        assert edl == (readable if lid == "CredentialFetcherFunction" else []), (lid, named)


def test_the_earthdata_login_read_statement_is_dropped_when_no_parameter_is_named(cfn: dict[str, Any]) -> None:
    """Written out by hand, without the resolver the tests above decide conditions with: the statement granting
    ssm:GetParameter on the Earthdata Login parameters is an Fn::If on a condition that is the Or of the three
    "named" conditions, with AWS::NoValue otherwise."""
    assert cfn["Conditions"]["HasEdlParameter"] == {"Fn::Or": [{"Condition": f"HasEdl{kind}"} for kind in EDL_KINDS]}
    for kind in EDL_KINDS:
        assert cfn["Conditions"][f"HasEdl{kind}"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": f"Edl{kind}Parameter"}, ""]}]}
    wrapped = [s for r in cfn["Resources"].values() if r["Type"] == "AWS::IAM::ManagedPolicy"
               for s in r["Properties"]["PolicyDocument"]["Statement"] if "Fn::If" in s]
    (statement,) = [s for s in wrapped if s["Fn::If"][1].get("Action") == ["ssm:GetParameter"]]
    condition, granted, otherwise = statement["Fn::If"]
    assert condition == "HasEdlParameter" and otherwise == {"Ref": "AWS::NoValue"}
    assert len(granted["Resource"]) == 3


@pytest.mark.parametrize("named", [(), ("Username",), ("Token",), ("Username", "Password", "Token")])
def test_no_policy_statement_is_left_without_a_resource_or_an_action(cfn: dict[str, Any],
                                                                     named: tuple[str, ...]) -> None:
    """Conditions (Fn::If, AWS::NoValue) decided as CloudFormation would for these parameters: every statement of
    every policy in the template (roles' inline and managed policies, bucket and topic policies) still names an
    action and a resource, and every document has a statement."""
    documents = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                (documents.append if key in {"PolicyDocument", "AssumeRolePolicyDocument"} else collect)(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(decided(cfn, cfn["Resources"], edl_parameters(*named)))
    assert len(documents) > 10
    for document in documents:
        assert statements(document), document
        for statement in statements(document):
            assert as_list(statement["Action"]), statement
            assert "Principal" in statement or as_list(statement["Resource"]), statement


def test_functions_reach_only_their_bucket_and_their_own_parameters(cfn: dict[str, Any]) -> None:
    prefix_env = {"Fn::Sub": "/granulemap/${AWS::StackName}/daac-credentials"}
    stored = {"Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter"
                         "/granulemap/${AWS::StackName}/daac-credentials/*"}
    # The template's defaults name a username and a password parameter, no token.
    assert edl_parameters("Username", "Password") == {
        f"Edl{kind}Parameter": cfn["Parameters"][f"Edl{kind}Parameter"]["Default"] for kind in EDL_KINDS}
    edl = [{"Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:"
                       f"parameter${{Edl{kind}Parameter}}"} for kind in ("Username", "Password")]
    # FetchCredentials logs in and stores the credentials; Processors read them and ask FetchCredentials to refresh
    # them, which first reads them too (has another Processor's request refreshed them already?).
    needs_secrets = {"CredentialFetcherFunction"}
    reads_stored = {"CredentialFetcherFunction", "ProcessorFunction"}
    needs_bucket = {"CatalogBuilderFunction", "ProcessorFunction", "AggregatorFunction"}

    def bucket(objects: str) -> dict[str, str]:
        return {"Fn::Sub": f"${{DataBucket.Arn}}/{objects}"}

    zarr_chunks, store_locks = bucket(f"{layout.OUTPUTS_PREFIX}*.zarr/*"), bucket(f"{layout.OUTPUTS_PREFIX}*.zarr.lock")
    for lid in FUNCTIONS:
        role = role_of_function(cfn, lid)
        env = cfn["Resources"][lid]["Properties"]["Environment"]["Variables"]
        if lid in reads_stored:
            assert env["CREDENTIALS_PARAMETER_PREFIX"] == prefix_env
            assert grants(cfn, role, "ssm:GetParameter") == ([*edl, stored] if lid in needs_secrets else [stored])
        else:
            assert not grants(cfn, role, "ssm:GetParameter")
        assert grants(cfn, role, "ssm:PutParameter") == ([stored] if lid in needs_secrets else [])
        assert {k for k in env if k.startswith("EDL_")} == (
            {"EDL_USERNAME_PARAMETER", "EDL_PASSWORD_PARAMETER", "EDL_TOKEN_PARAMETER"} if lid in needs_secrets else set())
        # Only the Processor invokes a function itself: the FetchCredentials version it is given, to refresh.
        invokable = grants(cfn, role, "lambda:InvokeFunction")
        if lid == "ProcessorFunction":
            assert env["CREDENTIALS_FUNCTION"] == {"Ref": published_version(cfn, "CredentialFetcherFunction")}
            assert invokable == [{"Fn::Sub": "${CredentialFetcherFunction.Arn}:*"}]
        else:
            assert invokable == [] and "CREDENTIALS_FUNCTION" not in env
        s3_resources = [r for s in role_statements(cfn, role) for r in as_list(s["Resource"])
                        if any(a.startswith("s3:") for a in as_list(s["Action"]))]
        # only atl06-cell-stats' (all its configurations): a recipe's mistake cannot delete another recipe's results
        atl06_results = layout.result_prefix(get_recipe("atl06-cell-stats").name, "*").removesuffix("/*/")
        results = {"Fn::Sub": f"${{DataBucket.Arn}}/{atl06_results}/*"}
        # Each writes where its step does (three of them run recipes' code, users' too): BuildCatalog the run's
        # manifest, Processors their items' results, Aggregate the products and the summary; the Zarr stores' chunks
        # all three, their locks the two that change a store's layout (tests/test_iam_covers_runs.py checks real runs'
        # requests against these).
        writes = {"CatalogBuilderFunction": [bucket(layout.manifest_key("*")), bucket(layout.map_items_key("*")),
                                             zarr_chunks, store_locks],
                  "ProcessorFunction": [bucket(f"{layout.RESULTS_PREFIX}*"), zarr_chunks],
                  "AggregatorFunction": [bucket(f"{layout.OUTPUTS_PREFIX}*"), zarr_chunks, store_locks,
                                         bucket(layout.summary_key("*"))]}
        # Zarr chunks (zarr drops all-fill ones) and store locks may be deleted, no other product; results only by
        # BuildCatalog, atl06-cell-stats' only (it forgets those of blocks a run rewrites under other granules); run
        # data never.
        deletes = {"CatalogBuilderFunction": [zarr_chunks, store_locks, results], "ProcessorFunction": [zarr_chunks],
                   "AggregatorFunction": [zarr_chunks, store_locks]}
        if lid in needs_bucket:
            assert grants(cfn, role, "s3:ListBucket") == [{"Fn::GetAtt": ["DataBucket", "Arn"]}]
            assert grants(cfn, role, "s3:GetObject") == [bucket("*")]
            for action, expected in (("s3:PutObject", writes[lid]), ("s3:DeleteObject", deletes[lid])):
                assert sorted(map(json.dumps, grants(cfn, role, action))) == sorted(map(json.dumps, expected)), action
            s3_actions = {a for s in role_statements(cfn, role) for a in as_list(s["Action"]) if a.startswith("s3:")}
            assert s3_actions <= {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject"}
        else:
            assert s3_resources == []


def test_edl_parameter_names_must_be_absolute_ssm_paths(cfn: dict[str, Any]) -> None:
    for name in ("EdlUsernameParameter", "EdlPasswordParameter", "EdlTokenParameter"):
        pattern = cfn["Parameters"][name]["AllowedPattern"]
        assert re.fullmatch(pattern, cfn["Parameters"][name]["Default"])
        assert re.fullmatch(pattern, "/granulemap/edl/token")
        assert not re.fullmatch(pattern, "granulemap/edl/token")  # the ARN is built as "parameter" + name
        assert not re.fullmatch(pattern, "/granulemap/*")


# ---- bucket ---------------------------------------------------------------------------------------------------
def test_the_bucket_is_private_encrypted_tls_only_and_expires_run_data(cfn: dict[str, Any]) -> None:
    props = cfn["Resources"]["DataBucket"]["Properties"]
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    expiring = [r for r in props["LifecycleConfiguration"]["Rules"] if "ExpirationInDays" in r]
    assert expiring == [{"Id": "ExpireRunData", "Status": "Enabled", "Prefix": layout.RUNS_PREFIX,
                         "ExpirationInDays": {"Ref": "RunDataRetentionDays"}}]  # results/ and outputs/ are kept
    (policy,) = resources_of(cfn, "AWS::S3::BucketPolicy").values()
    assert policy["Properties"]["Bucket"] == {"Ref": "DataBucket"}
    (deny,) = statements(policy["Properties"]["PolicyDocument"])
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and deny["Action"] == "s3:*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Resource"] == [{"Fn::GetAtt": ["DataBucket", "Arn"]}, {"Fn::Sub": "${DataBucket.Arn}/*"}]


def test_deleting_the_stack_or_replacing_the_bucket_keeps_the_bucket_and_its_series(cfn: dict[str, Any]) -> None:
    """Kept, except when the stack's first deploy fails and rolls back: a bucket kept then (empty) stood in the way
    of every later try, whose new bucket of the same BucketName already existed."""
    bucket = cfn["Resources"]["DataBucket"]
    assert (bucket["DeletionPolicy"], bucket["UpdateReplacePolicy"]) == ("RetainExceptOnCreate", "Retain")
    readme = (ROOT / "README.md").read_text()
    teardown = readme[readme.index("### 7. Tear down"):]
    assert "sam delete" in teardown and "aws s3 rb" in teardown  # the bucket is removed by hand, once copied
    assert teardown.index("aws s3 sync") < teardown.index("aws s3 rb")


def test_the_earthdata_token_alarm_fires_below_the_days_the_fetcher_warns_at(cfn: dict[str, Any]) -> None:
    """One rule, in two places: FetchCredentials warns below TOKEN_WARNING and emits the days left; the alarm on that
    metric, in the functions' namespace and service dimension, tells the alert topic below the same number."""
    import datetime as dt

    from granulemap.credentials import TOKEN_WARNING

    alarm = cfn["Resources"]["EarthdataTokenExpiresSoonAlarm"]
    props = alarm["Properties"]
    assert alarm["Condition"] == "HasEdlToken"
    assert cfn["Conditions"]["HasEdlToken"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "EdlTokenParameter"}, ""]}]}
    env = cfn["Resources"]["CredentialFetcherFunction"]["Properties"]["Environment"]["Variables"]
    assert (props["Namespace"], props["MetricName"]) == (env["POWERTOOLS_METRICS_NAMESPACE"], "EarthdataTokenDaysLeft")
    assert props["Dimensions"] == [{"Name": "service", "Value": env["POWERTOOLS_SERVICE_NAME"]}]
    assert props["Threshold"] == TOKEN_WARNING / dt.timedelta(days=1)
    assert (props["ComparisonOperator"], props["Statistic"]) == ("LessThanThreshold", "Minimum")
    assert props["TreatMissingData"] == "notBreaching" and props["AlarmActions"] == [{"Ref": "RunAlertsTopic"}]
    handler = (ROOT / "functions" / "credential_fetcher" / "app.py").read_text()
    assert 'name="EarthdataTokenDaysLeft"' in handler
    # what it says to do stores the token as README does: from standard input, no newline, in the stack's region
    description = props["AlarmDescription"]["Fn::Sub"]
    store = ("printf '%s' \"$EDL_TOKEN\" | aws ssm put-parameter --overwrite --region ${AWS::Region} --type SecureString "
             "--name ${EdlTokenParameter} --value file:///dev/stdin")
    assert store in description
    readme = (ROOT / "README.md").read_text()
    assert ("printf '%s' \"$EDL_TOKEN\" | aws ssm put-parameter --overwrite --region us-west-2 --type SecureString \\\n"
            "      --name /granulemap/edl/token --value file:///dev/stdin") in readme


def test_the_processor_reserves_concurrency_only_when_asked(cfn: dict[str, Any]) -> None:
    """A reservation on an account whose quota is low (new accounts) fails the deploy: by default there is none."""
    parameter = cfn["Parameters"]["ProcessorReservedConcurrency"]
    assert parameter["Default"] == ""
    allowed = re.compile(parameter["AllowedPattern"])
    assert [bool(allowed.fullmatch(v)) for v in ("", "1", "50", "1000")] == [True] * 4
    assert [bool(allowed.fullmatch(v)) for v in ("0", "-5", "05", "ten", "5 ")] == [False] * 5  # 0 = never runs

    def reserved(parameters: dict[str, str]) -> dict[str, Any]:
        functions = decided(cfn, resources_of(cfn, "AWS::Lambda::Function"), parameters)
        return {lid: fn["Properties"]["ReservedConcurrentExecutions"] for lid, fn in functions.items()
                if "ReservedConcurrentExecutions" in fn["Properties"]}

    assert reserved({}) == {}
    assert reserved({"ProcessorReservedConcurrency": "50"}) == {
        "ProcessorFunction": {"Ref": "ProcessorReservedConcurrency"}}


def test_the_stack_name_limit_the_readme_gives_is_that_of_the_names_made_from_it(cfn: dict[str, Any]) -> None:
    """Resources named "<stack name><suffix>" and their services' longest names (botocore's models): the README's
    deploy section gives the longest stack name that fits them all."""
    import botocore.session

    session = botocore.session.get_session()

    def longest(service: str, shape: str) -> int:
        return int(session.get_service_model(service).shape_for(shape).metadata["max"])

    (schedule,) = resources_of(cfn, "AWS::Scheduler::Schedule").values()
    limits = [
        (cfn["Resources"]["PipelineStateMachine"]["Properties"]["StateMachineName"], longest("stepfunctions", "Name")),
        (schedule["Properties"]["Name"], longest("scheduler", "Name")),
        (cfn["Resources"]["ScheduleCouldNotStartARunAlarm"]["Properties"]["AlarmName"],
         longest("cloudwatch", "AlarmName")),
        (cfn["Resources"]["EarthdataTokenExpiresSoonAlarm"]["Properties"]["AlarmName"],
         longest("cloudwatch", "AlarmName")),
    ]
    room = {}
    for name, limit in limits:
        suffix = name["Fn::Sub"].removeprefix("${AWS::StackName}")
        assert "${" not in suffix, name
        room[suffix] = limit - len(suffix)
    assert room["-monthly"] == 56  # Scheduler's 64 characters are the tightest
    readme = (ROOT / "README.md").read_text()
    deploy = readme[readme.index("### 2. Build and deploy"):readme.index("### 3. Start a run")]
    assert f"at most {min(room.values())} characters" in deploy


# ---- parameters, outputs, samconfig ---------------------------------------------------------------------------
def test_parameters_and_outputs_the_operator_and_the_cli_need(cfn: dict[str, Any]) -> None:
    for name in ("BucketName", "EdlUsernameParameter", "EdlPasswordParameter", "EdlTokenParameter",
                 "DefaultRecipe", "DefaultMaxConcurrency", "ScheduleEnabled", "RunDataRetentionDays",
                 "CatalogBuilderMemorySize", "CredentialFetcherMemorySize", "ProcessorMemorySize",
                 "AggregatorMemorySize", "MaxRangeDays"):
        assert name in cfn["Parameters"], name
    # A monthly run's summary and logs outlive the next two scheduled runs, by default.
    assert int(cfn["Parameters"]["RunDataRetentionDays"]["Default"]) >= 62
    # S3 expires at the first midnight after the days: at 1, a run's manifest could be gone before its Aggregate.
    assert int(cfn["Parameters"]["RunDataRetentionDays"]["MinValue"]) >= 7
    assert int(cfn["Parameters"]["LogRetentionDays"]["Default"]) >= 62
    # the default the CLI's help names is the template's (and the settings' when the variable is unset)
    from granulemap.cli import TOLERANCE_HELP
    from granulemap.settings import Settings

    tolerance = cfn["Parameters"]["ToleratedFailurePercentage"]["Default"]
    assert f"ToleratedFailurePercentage parameter, {tolerance:g} in template.yaml" in TOLERANCE_HELP
    assert Settings.model_fields["default_tolerated_failure_percentage"].default == tolerance
    # granulemap start/status/results read these two outputs (granulemap.cloud.describe_stack).
    assert cfn["Outputs"]["StateMachineArn"]["Value"] == {"Ref": "PipelineStateMachine"}
    assert cfn["Outputs"]["BucketName"]["Value"] == {"Ref": "DataBucket"}


def test_samconfig_deploys_to_us_west_2_with_iam_capability() -> None:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    deploy = config["default"]["deploy"]["parameters"]
    from granulemap.settings import DAAC_REGION

    assert deploy["region"] == DAAC_REGION  # DAAC direct S3 access works only there
    assert config["default"]["global"]["parameters"]["region"] == DAAC_REGION
    assert "CAPABILITY_IAM" in deploy["capabilities"]
    assert config["default"]["global"]["parameters"]["stack_name"]
    assert config["default"]["global"]["parameters"]["region"] == "us-west-2"  # build, logs, delete too


@pytest.mark.slow
def test_sam_validate_lint_passes(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing", "HOME": str(tmp_path)}
    proc = subprocess.run([str(bin_dir / "sam"), "validate", "--lint", "--region", "us-west-2"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "is a valid SAM Template" in proc.stdout + proc.stderr


def test_the_schedule_cannot_be_deployed_with_a_recipe_that_refuses_the_previous_month(cfn: dict[str, Any]) -> None:
    """A recipe with runs_on_schedule = False refuses "period": "previous-month" (its granules come out weeks
    later): as DefaultRecipe with ScheduleEnabled=true every monthly run failed. CloudFormation refuses that deploy;
    the Rule names exactly the built-in recipes that refuse the schedule, and only when the schedule is on."""
    from granulemap.recipes import available, get_recipe

    (rule,) = cfn["Rules"].values()  # kept by SAM's translation, as CloudFormation evaluates it
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "ScheduleEnabled"}, "true"]}
    refused = set()
    for assertion in rule["Assertions"]:
        (not_,) = assertion["Assert"]["Fn::Not"]
        ref, recipe = not_["Fn::Equals"]
        assert ref == {"Ref": "DefaultRecipe"}
        refused.add(recipe)
        assert recipe in assertion["AssertDescription"] and "--period YYYY-MM" in assertion["AssertDescription"]
    assert refused == {name for name in available() if not get_recipe(name).runs_on_schedule} == {"atl06-cell-stats"}
