"""Commands that drive a deployed stack: ``granulemap start``, ``granulemap status``, ``granulemap results``.

The stack is found by name in CloudFormation: its outputs give the state machine (StateMachineArn) and the
bucket (BucketName), and its parameters the limits BuildCatalog applies (MaxRangeDays, ...), so ``start``
rejects a bad input with the same message BuildCatalog would give, before anything runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shlex
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from granulemap import layout
from granulemap.errors import InvalidInput, StorageThrottled, readable_cause
from granulemap.models import (FIRST_FAILURES, PREVIOUS_MONTH, CatalogRef, ExecutionInput, Failure, as_utc,
                               counted, parse_model)
from granulemap.settings import DAAC_REGION, Settings
from granulemap.storage import Bucket, download_objects, split_s3_url

FAILED_STATUSES = {"FAILED", "TIMED_OUT", "ABORTED"}
ITEM_COUNT_KEYS = ("succeeded", "failed", "running", "pending", "aborted", "timedOut", "total")

# Template parameters that become BuildCatalog's settings (template.yaml gives them as environment variables).
_SETTINGS_FROM_PARAMETERS = {
    "DefaultMaxConcurrency": "default_max_concurrency",
    "ToleratedFailurePercentage": "default_tolerated_failure_percentage",
    "MaxRangeDays": "max_range_days",
}


@dataclass(frozen=True)
class Stack:
    """What the CLI needs of a deployed granulemap stack."""

    name: str
    state_machine_arn: str
    bucket: str
    parameters: dict[str, str] = field(default_factory=dict)

    def settings(self) -> Settings:
        """The settings BuildCatalog runs with in this stack (for validating an input before starting it)."""
        values: dict[str, Any] = {"bucket": self.bucket}
        for parameter, name in _SETTINGS_FROM_PARAMETERS.items():
            if self.parameters.get(parameter):
                values[name] = self.parameters[parameter]
        return Settings.model_validate(values)


DEFAULT_REGION = DAAC_REGION


def _settings_before_the_stack(doc: dict[str, Any]) -> Settings:
    """Settings for checking an input before its stack is known: no limit on the range, and an s3:// source's own
    bucket taken for the stack's (both are checked against the stack's once it is known)."""
    source = doc.get("source")
    bucket = split_s3_url(source)[0] if isinstance(source, str) and source.startswith("s3://") else "not-known-yet"
    return Settings(bucket=bucket, max_range_days=10**9)


def _client(service: str, region: str | None = None) -> Any:
    """A client in ``region``, else your AWS configuration's region, else DEFAULT_REGION (boto3's default session:
    its configuration is read once, not again in a session of its own for every client)."""
    if boto3.DEFAULT_SESSION is None:
        boto3.setup_default_session()
    session = boto3.DEFAULT_SESSION
    return session.client(service, region_name=region or session.region_name or DEFAULT_REGION)


def region_of(arn: str) -> str:
    """The region field of an ARN."""
    from granulemap.local.engine import ACCOUNT, LOCAL_STACK_NAME

    parts = arn.split(":")
    local_run = "a local run's products, summary.json and logs are in its --out folder already"
    if len(parts) < 6 or parts[0] != "arn":
        folder = f" ({arn} is a folder: {local_run})" if Path(arn).is_dir() else ""
        raise InvalidInput(f"not an ARN: {arn!r}: give the execution ARN granulemap start printed "
                           f"(arn:aws:states:REGION:ACCOUNT:execution:STACK-pipeline:NAME){folder}")
    if parts[4] == ACCOUNT and len(parts) > 6 and parts[6].startswith(f"{LOCAL_STACK_NAME}-"):
        raise InvalidInput(f"{arn} is an execution of granulemap run, on this machine: {local_run}; status and "
                           "results follow runs of a deployed stack")
    return parts[3]


def describe_stack(name: str, region: str | None = None, region_option: bool = False) -> Stack:
    """The state machine, bucket and parameters of the granulemap stack ``name`` (CloudFormation describe_stacks).
    ``region_option``: the command has a --region option, which a stack not found there may want."""
    cfn = _client("cloudformation", region)
    try:
        (stack,) = cfn.describe_stacks(StackName=name)["Stacks"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ValidationError":
            where = cfn.meta.region_name
            other = (" or give the stack's region with --region (granulemap's is us-west-2, where the DAACs' data "
                     "is)" if region_option else "")
            raise InvalidInput(f"no CloudFormation stack named {name!r} in {where}: check the name, deploy one with "
                               f"sam deploy --guided,{other}".rstrip(",")) from None
        raise
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    missing = [k for k in ("StateMachineArn", "BucketName") if k not in outputs]
    if missing:
        raise InvalidInput(f"stack {name!r} has no output {', '.join(missing)}: is it a granulemap stack "
                            f"(status {stack.get('StackStatus')})?")
    parameters = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}
    return Stack(name=name, state_machine_arn=outputs["StateMachineArn"], bucket=outputs["BucketName"],
                 parameters=parameters)


def stack_of_state_machine(state_machine_arn: str) -> str:
    """The name of the CloudFormation stack that owns a state machine (its physical id is its ARN)."""
    cfn = _client("cloudformation", region_of(state_machine_arn))
    try:
        resources = cfn.describe_stack_resources(PhysicalResourceId=state_machine_arn)["StackResources"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ValidationError":
            raise
        resources = []
    if not resources:
        raise InvalidInput(f"no CloudFormation stack owns {state_machine_arn}: give --stack")
    return str(resources[0]["StackName"])


# ---- start ------------------------------------------------------------------------------------------------------
EXECUTION_NAME_MAX = 80
"""Step Functions' longest execution name."""


def execution_name(doc: dict[str, Any]) -> str:
    """A readable, unique execution name (it is also the run id: runs/<name>/ in the bucket): recipe, dates (a month
    given as the period: YYYYMM) and a random suffix. A name too long loses the end of its recipe, never the suffix
    that makes it unique."""
    def safe(text: str) -> str:  # only what an execution name, an S3 key and a shell take as they are
        return re.sub(r"[^A-Za-z0-9_-]", "-", text)

    suffix = uuid.uuid4().hex[:8]
    month = doc.get("period") if doc.get("period") != PREVIOUS_MONTH else None  # that one is resolved at the start
    dates = safe("-".join(str(doc[k]).replace("-", "") for k in ("start", "end") if doc.get(k))
                 or str(month or "").replace("-", ""))
    room = EXECUTION_NAME_MAX - len(suffix) - 1  # for recipe and dates, each followed by "-"
    recipe = safe(str(doc.get("recipe", "run")))[: max(room - (len(dates) + 1 if dates else 0), 0)]
    head = "-".join(p for p in (recipe, dates) if p)[:room]
    return f"{head}-{suffix}" if head else suffix


def start_run(stack: Stack, doc: dict[str, Any], name: str | None = None) -> str:
    """Validate ``doc`` as BuildCatalog would (InvalidInput names the field), refuse it as BuildCatalog would if the
    stack runs its period already (RunInProgress: said here, the run is not started, and the stack's alert topic
    is not told of a failed run), then start an execution; its ARN."""
    from granulemap.catalog import plan_run, refuse_a_second_run_of_the_period
    from granulemap.executions import running_before

    settings = stack.settings()
    plan = plan_run(doc, settings)
    sfn = _client("stepfunctions", region_of(stack.state_machine_arn))
    try:
        running = running_before(stack.state_machine_arn, "", None, client=sfn)
    except ClientError as exc:  # rights to start runs but not to list them: BuildCatalog checks all the same
        if exc.response.get("Error", {}).get("Code") != "AccessDeniedException":
            raise
        running = []
    refuse_a_second_run_of_the_period(plan, running, settings)
    return str(sfn.start_execution(stateMachineArn=stack.state_machine_arn, name=name or execution_name(doc),
                                   input=json.dumps(doc))["executionArn"])


# ---- status -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunStatus:
    execution_arn: str
    status: str
    current_state: str | None
    items: dict[str, int] | None
    error: str | None = None
    cause: str | None = None
    run: str | None = None
    """Recipe and dates ("sst-global-mean, 2026-10-01..2026-10-31"): a scheduled run's input says only
    "previous-month", resolved when it started."""
    catalogued: CatalogRef | None = None
    """The catalog from BuildCatalog's output (its items, and those found done); None before it wrote it."""
    granules: dict[str, int] | None = None
    """A per-granule recipe's granule counts from Aggregate's output (an item's granules fail alone, so its items
    may all succeed with granules failed); None before Aggregate has returned, or when it raised."""
    again: str | None = None
    """For a run that failed: the command that starts its range again (only what is missing is computed)."""


def _what_it_runs(desc: dict[str, Any]) -> str | None:
    """The recipe and days of an execution, from its input and start time; None for an input BuildCatalog refuses."""
    try:
        execution = parse_model(ExecutionInput, json.loads(desc.get("input") or "null"), "execution input")
    except (InvalidInput, ValueError):
        return None
    start, end = execution.date_range(now=desc["startDate"])
    return f"{execution.recipe}, {start}..{end}"


def _newest_events(sfn: Any, execution_arn: str) -> list[dict[str, Any]]:
    """The execution's newest history events, newest first."""
    page = sfn.get_execution_history(executionArn=execution_arn, reverseOrder=True, maxResults=100)
    # Newest first by event id, whichever order the page came in (moto ignores reverseOrder).
    return sorted(page["events"], key=lambda e: e["id"], reverse=True)


PIPELINE_SUFFIX = "-pipeline"
"""template.yaml names the state machine STACK-pipeline."""


def _start_again(desc: dict[str, Any]) -> str | None:
    """The ``granulemap start`` command that runs a failed execution's range again, with its input's options: its
    month as ``--period`` when it named one (checked whole, as the schedule's is), else its dates. None for an input
    the model or BuildCatalog refused (InvalidInput: the same input again is refused again)."""
    if desc.get("error") == "InvalidInput":
        return None
    try:
        execution = parse_model(ExecutionInput, json.loads(desc.get("input") or "null"), "execution input")
    except (InvalidInput, ValueError):
        return None
    start, end = execution.date_range(now=desc["startDate"])
    state_machine = desc["stateMachineArn"]
    name = state_machine.rsplit(":", 1)[-1]
    stack = name.removesuffix(PIPELINE_SUFFIX) if name.endswith(PIPELINE_SUFFIX) else "STACK"
    words = ["granulemap", "start", "--stack", stack, "--region", region_of(state_machine),
             "--recipe", execution.recipe, *(["--period", f"{start:%Y-%m}"] if execution.period else
                                              ["--start", str(start), "--end", str(end)])]
    given = execution.model_dump(exclude_defaults=True)  # the options the run was given, as granulemap start takes them
    for field in ("source", "collection", "max_concurrency", "tolerated_failure_percentage", "group"):
        if field in given:
            words += [f"--{field.replace('_', '-')}", f"{given[field]:g}" if isinstance(given[field], float)
                      else str(given[field])]
    if "bbox" in given:
        words += ["--bbox", *(f"{edge:g}" for edge in given["bbox"])]
    for key, value in given.get("params", {}).items():
        words += ["--param", f"{key}={json.dumps(value)}"]
    if given.get("recompute"):
        words.append("--recompute")
    return shlex.join(words)


def _current_state(newest: list[dict[str, Any]]) -> str | None:
    """The state most recently entered."""
    for event in newest:
        if event["type"].endswith("StateEntered"):
            return str(event["stateEnteredEventDetails"]["name"])
    return None


def _aggregated_granules(newest: list[dict[str, Any]]) -> dict[str, int] | None:
    """The granule counts of Aggregate's output (ResultPath $.result), if it has returned them."""
    for event in newest:
        details = event.get("stateExitedEventDetails") or {}
        if details.get("name") != "Aggregate":
            continue
        try:
            granules = json.loads(details["output"])["result"]["granules"]
            return {key: int(granules[key]) for key in ("total", "succeeded", "failed", "skipped")}
        except (ValueError, TypeError, KeyError, AttributeError):  # not JSON, no granules (not a per-granule recipe)
            return None
    return None


def _item_counts(sfn: Any, execution_arn: str) -> dict[str, int] | None:
    """Item counts of the execution's latest Map Run (the Distributed Map), or None before it starts."""
    runs = sfn.list_map_runs(executionArn=execution_arn).get("mapRuns", [])
    if not runs:
        return None
    latest = max(runs, key=lambda r: r["startDate"])
    described = sfn.describe_map_run(mapRunArn=latest["mapRunArn"])
    counts = described["itemCounts"]
    out = {k: int(counts.get(k, 0)) for k in ITEM_COUNT_KEYS}
    start, stop = described.get("startDate"), described.get("stopDate")
    if start is not None:
        end = stop or dt.datetime.now(start.tzinfo or dt.UTC)
        out["elapsed_seconds"] = max((end - start).total_seconds(), 0.0)
    return out


def _catalogued(sfn: Any, execution_arn: str) -> CatalogRef | None:
    """The catalog BuildCatalog's output carries (the first state output with one: the oldest events, where
    BuildCatalog's are); None before it has written the manifest."""
    page = sfn.get_execution_history(executionArn=execution_arn, maxResults=50)
    for event in sorted(page["events"], key=lambda e: e["id"]):
        output = (event.get("stateExitedEventDetails") or {}).get("output")
        try:
            catalog = json.loads(output)["catalog"]
            # the fields this version knows: a newer stack's BuildCatalog may say more
            return CatalogRef.model_validate({k: v for k, v in catalog.items() if k in CatalogRef.model_fields})
        except (ValueError, TypeError, KeyError, AttributeError):  # not JSON, no catalog, or not one
            continue
    return None


def run_status(execution_arn: str) -> RunStatus:
    sfn = _client("stepfunctions", region_of(execution_arn))
    desc = sfn.describe_execution(executionArn=execution_arn)
    newest = _newest_events(sfn, execution_arn)
    return RunStatus(
        execution_arn=execution_arn,
        status=desc["status"],
        current_state=_current_state(newest),
        granules=_aggregated_granules(newest),
        again=_start_again(desc) if desc["status"] in FAILED_STATUSES else None,
        items=_item_counts(sfn, execution_arn),
        error=desc.get("error"),
        cause=readable_cause(desc.get("cause"), desc.get("error")),
        run=_what_it_runs(desc),
        catalogued=_catalogued(sfn, execution_arn),
    )


# ---- results ----------------------------------------------------------------------------------------------------
def fetch_results(execution_arn: str, out: Path | None, stack_name: str | None = None) -> dict[str, Any] | str:
    """Read runs/<execution name>/summary.json from the stack's bucket; return it with its outputs as s3:// URLs,
    or, given ``out``, download the outputs it lists into ``out`` and write ``out``/summary.json (outputs as local
    paths, like ``granulemap run``) first. Products accumulate: an ATL06 output is the whole cumulative Zarr store,
    hundreds of thousands of objects a global month, which the alert emails' command does not download.

    When the run has no summary (yet), return the reason instead, as one line for the user.
    """
    region = region_of(execution_arn)
    desc = _client("stepfunctions", region).describe_execution(executionArn=execution_arn)
    stack = describe_stack(stack_name or stack_of_state_machine(desc["stateMachineArn"]), region)
    key = layout.summary_key(desc["name"])
    s3 = _client("s3", region)
    try:
        summary = Bucket(stack.bucket, s3).get_json_or_none(key)
    except StorageThrottled as exc:  # AWS did not answer: the command's error, as any other AWS error's (exit 3)
        raise exc.__cause__ or exc from None
    if summary is None:
        why = f"the run is {desc['status']}"
        said = [desc.get("error"), readable_cause(desc.get("cause"), desc.get("error"))]  # a stop may give neither
        if desc["status"] in FAILED_STATUSES and any(said):
            why += f" ({': '.join(part for part in said if part)})"
        return f"no s3://{stack.bucket}/{key}: {why}. {_why_no_summary(desc, stack)}"
    summary["execution"] = {"arn": execution_arn, "status": desc["status"]}
    if out is None:
        summary["outputs"] = [f"s3://{stack.bucket}/{o}" for o in summary.get("outputs", [])]  # summary.json's too
        return summary
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    local: list[str] = []
    for output in summary.get("outputs", []):
        if output != key:
            local += [str(p) for p in download_objects(s3, stack.bucket, output, out)]
    summary["outputs"] = local + [str(out / "summary.json")]
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


NEVER_AGGREGATED = {"InvalidInput", "CatalogFailed", "CredentialsFailed"}
"""The errors of the state machine's Fail states before Aggregate (statemachine/pipeline.asl.json)."""


def _why_no_summary(desc: dict[str, Any], stack: Stack) -> str:
    """Why a run's summary.json is not in the bucket: not written yet, never written (the run ended before Aggregate
    wrote it), or written and since deleted or expired (runs/ objects last RunDataRetentionDays)."""
    if desc["status"] == "RUNNING":
        return "Aggregate writes it at the end of the run"
    error = desc.get("error")
    if error in NEVER_AGGREGATED:
        return "It ended before Aggregate, which writes it: granulemap status says why, and how to run it again"
    if error == "AggregateFailed":
        return "Aggregate failed before writing it: granulemap status says why, and how to run it again"
    if desc["status"] == "SUCCEEDED" or error == "TooManyFailures":  # Aggregate wrote it (before it raised)
        ended, retention = desc.get("stopDate"), stack.parameters.get("RunDataRetentionDays")
        if ended is not None and str(retention or "").isdigit():
            age = (dt.datetime.now(dt.UTC) - as_utc(ended)).days
            if age >= int(str(retention)):
                return f"Run data expire after RunDataRetentionDays ({retention} days): this run ended {age} days ago"
        return "Aggregate wrote it: it was deleted since, or expired (RunDataRetentionDays)"
    return ("It ended before Aggregate wrote it, or Aggregate's was deleted since: granulemap status says where it "
            "stopped")


def print_summary(summary: dict[str, Any], file: Any = None, failures_shown: int | None = 20) -> None:
    """The lines ``granulemap run`` and ``granulemap results`` print for a summary: its first ``failures_shown``
    failures (None: all), and how many more summary.json lists."""
    file = file or sys.stdout
    if summary.get("start") and summary.get("end"):
        print(f"run: {summary['recipe']}, {summary['start']}..{summary['end']}", file=file)
    items, granules = summary["items"], summary.get("granules")
    counts, unit = counted(items, granules)  # what the verdict counts
    print(f"{summary['status']}: {unit}: {counts['succeeded']} computed, {counts['skipped']} skipped (already done), "
          f"{counts['failed']} failed of {counts['total']}", file=file)
    if granules:
        print(f"  items (Processor calls): {items['succeeded']} computed, {items['skipped']} skipped, "
              f"{items['failed']} failed of {items['total']}", file=file)
    message = summary.get("message")
    # only the fields this version knows (a newer stack's: more)
    described = [Failure.model_construct(**{k: f.get(k) for k in Failure.model_fields}).described()
                 for f in summary.get("failures", [])]
    if message and described:  # the verdict's first failures (summary.json's first) are listed below, one a line
        message = message.replace(FIRST_FAILURES + "; ".join(described[:3]), "")
    for note in summary.get("notes", []):  # and its notes, one a line
        message = message.replace(f". Note: {note}", "") if message else message
    if message and (summary["status"] != "SUCCEEDED" or not counts["total"]):  # why it failed, or why nothing ran
        print(message, file=file)
    for line in described[:failures_shown]:
        print(f"  failed {line}", file=file)
    if failures_shown is not None and len(described) > failures_shown:
        print(f"  and {len(described) - failures_shown} more failed: summary.json lists them all", file=file)
    for note in summary.get("notes", []):
        print(f"note: {note}", file=file)
    print("outputs:", file=file)
    for path in summary.get("outputs", []):
        print(f"  {path}", file=file)


def above_the_reservation(stack: Stack, doc: dict[str, Any]) -> str | None:
    """What to say when a run's max concurrency is above the concurrency the stack reserves for the Processor (which
    caps it): the calls above it are throttled, and their items fail once their retries are spent; None if not."""
    reserved = stack.parameters.get("ProcessorReservedConcurrency")
    concurrency = doc.get("max_concurrency") or stack.settings().default_max_concurrency
    if not reserved or int(reserved) >= concurrency:
        return None
    return (f"the run's max concurrency, {concurrency}, is above the {reserved} executions the stack reserves for "
            f"the Processor, which caps it (ProcessorReservedConcurrency): the calls above {reserved} are throttled, "
            "retried for at most 6.5 minutes, then their items fail. Start it with --max-concurrency "
            f"{reserved} or less, or deploy with a larger reservation")


# ---- commands ---------------------------------------------------------------------------------------------------
def cmd_start(args: argparse.Namespace) -> int:
    from granulemap.catalog import validate_input
    from granulemap.cli import execution_input

    if args.source is not None and not args.source.startswith("s3://"):
        raise InvalidInput(f"--source {args.source}: a deployed run reads granules from S3 only, an s3:// prefix in "
                           "its stack's bucket (aws s3 sync them there); a folder of this machine is for granulemap run")
    doc = execution_input(args)
    # What does not depend on the stack first, before asking AWS anything: bad input exits 2 with its own message,
    # with or without credentials and network. The stack's limits (MaxRangeDays) are checked once it is known.
    validate_input(doc, _settings_before_the_stack(doc))
    stack = describe_stack(args.stack, args.region, region_option=True)
    arn = start_run(stack, doc, name=args.name)
    over = above_the_reservation(stack, doc)
    if over:
        print(f"granulemap: note: {over}; to do so, stop this run first: aws stepfunctions stop-execution --region "
              f"{region_of(arn)} --execution-arn {arn}", file=sys.stderr)
    print(arn)
    print(f"follow it with: granulemap status {arn}", file=sys.stderr)
    print(f"when it is done: granulemap results {arn} (and --out DIR to download the products)", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    st = run_status(args.execution_arn)
    print(f"execution: {st.execution_arn}")
    print(f"status: {st.status}")
    if st.run:
        print(f"run: {st.run}")
    print(f"state: {st.current_state or '-'}")
    found_done = st.catalogued.found_done if st.catalogued else 0
    if st.items is None:
        total = st.catalogued.count if st.catalogued else None
        if total == 0:
            why = st.catalogued.none_found if st.catalogued else None
            print("items: none (no granules found" + (f": {why})" if why else ")"))
        elif total is not None and total == found_done:
            print(f"items: all {total} found done: nothing for the Map to run")
        else:
            print("items: the Map has not started" + (f" ({found_done} of {total} found done)" if found_done else ""))
    else:
        c = st.items
        print(f"items: {c['succeeded']} succeeded, {c['failed']} failed, {c['running']} running, "
              f"{c['pending']} pending of {c['total']}"
              + (f" ({c['aborted']} aborted, {c['timedOut']} timed out)" if c["aborted"] or c["timedOut"] else "")
              + (f"; {found_done} more found done, not run" if found_done else ""))
        if "elapsed_seconds" in c:
            from granulemap.local.run import progress_line

            # The same progress line as a local run: the items found done count as skipped.
            done = {"total": c["total"] + found_done, "succeeded": c["succeeded"], "skipped": found_done,
                    "found_done": found_done, "failed": c["failed"] + c["aborted"] + c["timedOut"]}
            print(progress_line(done, c["elapsed_seconds"]))
    if st.granules:  # an item's granules fail alone: its items may all have succeeded
        g = st.granules
        print(f"granules: {g['succeeded']} computed, {g['skipped']} skipped (already done), {g['failed']} failed of "
              f"{g['total']}" + (": granulemap results lists them" if g["failed"] else ""))
    if st.error:
        print(f"error: {st.error}: {st.cause or ''}")
    if st.again:  # what is done is kept: the same range again computes the rest
        wait = (" (after a TooManyFailures, wait 15 minutes: the Map's last items may still be finishing)"
                if st.error == "TooManyFailures" else "")
        print(f"to run it again once the cause is mended: {st.again}{wait}")
    return 1 if st.status in FAILED_STATUSES else 0


def cmd_results(args: argparse.Namespace) -> int:
    summary = fetch_results(args.execution_arn, Path(args.out) if args.out else None, args.stack)
    if isinstance(summary, str):
        print(f"granulemap: {summary}", file=sys.stderr)
        return 1
    print_summary(summary, failures_shown=20 if args.out else None)
    return 0 if summary["status"] == "SUCCEEDED" else 1


EXECUTION_ARN_HELP = ("the run's execution ARN, as granulemap start printed it (arn:aws:states:REGION:ACCOUNT:"
                      "execution:STACK-pipeline:NAME); aws stepfunctions list-executions lists them")


def add_cloud_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the cloud subcommands on the ``granulemap`` parser."""
    from granulemap.cli import add_execution_options

    start = sub.add_parser("start", help="start a run of a deployed stack (validates the input first)")
    start.add_argument("--stack", required=True, help="CloudFormation stack name (sam deploy's stack_name)")
    add_execution_options(start)
    start.add_argument("--source", help="granules under an s3://BUCKET/PREFIX of the stack's own bucket instead of a "
                                        "NASA CMR search")
    start.add_argument("--name", help="execution name (default: recipe, dates and a random suffix)")
    start.add_argument("--region", help=f"AWS region of the stack (default: your AWS configuration's, else "
                                        f"{DEFAULT_REGION}, where samconfig.toml deploys it)")
    start.set_defaults(func=cmd_start, talks_to_aws=True)

    status = sub.add_parser("status", help="status, current state and item counts of a run, and for one that failed "
                                           "its error and the command that runs it again (exit 1 if it failed)")
    status.add_argument("execution_arn", metavar="EXECUTION_ARN", help=EXECUTION_ARN_HELP)
    status.set_defaults(func=cmd_status, talks_to_aws=True)

    results = sub.add_parser("results", help="a run's summary from the stack's bucket: counts, every failure and "
                                             "the products' S3 URLs; with --out, the products downloaded too")
    results.add_argument("execution_arn", metavar="EXECUTION_ARN", help=EXECUTION_ARN_HELP)
    results.add_argument("--out", help="download the products and summary.json into this directory (the products "
                                       "are cumulative: an atl06-cell-stats store holds every month so far)")
    results.add_argument("--stack", help="stack name (default: the stack that owns the run's state machine)")
    results.set_defaults(func=cmd_results, talks_to_aws=True)
