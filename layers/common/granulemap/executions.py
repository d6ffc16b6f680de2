"""The state machine's other executions still running, as BuildCatalog sees them (Step Functions' API).

BuildCatalog refuses a run of a period that an earlier execution of the same state machine is still running with the
same recipe and configuration (``catalog.refuse_a_second_run_of_the_period``): the two would each rewrite the
period's results and, for atl06-cell-stats, the period's blocks of the store, so that the store ended with either
run's values block by block and the last Aggregate's record of what it holds. The monthly schedule firing while an
engineer re-runs the month by hand is the usual way to get there.

Only executions started before this one are looked at: of two runs started together, the later one is refused, the
earlier one goes on (each sees the other's start time). ListExecutions is eventually consistent, so two runs started
within the same second or so may both go on: the check is a guard against the usual overlaps, not a lock.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from granulemap.errors import TransientError
from granulemap.storage import NETWORK_ERRORS

_THROTTLED = {"ThrottlingException", "TooManyRequestsException", "ServiceUnavailable", "InternalServerError"}


@dataclasses.dataclass(frozen=True)
class OtherRun:
    """Another execution of the state machine, running."""

    arn: str
    name: str
    started: dt.datetime
    input: Any
    """Its execution input, as the JSON document it was started with (None if it is not JSON)."""


def _is_map_child(execution_arn: str) -> bool:
    """A Distributed Map's child execution: ``...:execution:<state machine>/<map run>:<name>``."""
    return "/" in execution_arn.split(":")[6]


_DESCRIBERS = 8
"""DescribeExecution calls at once: a backfill started as many runs together, each of which reads the others'."""


def running_before(state_machine_arn: str, own_arn: str, own_start: dt.datetime | None,
                   client: Any | None = None) -> list[OtherRun]:
    """The executions of ``state_machine_arn`` that are RUNNING and started before ``own_arn`` (at ``own_start``;
    None: now), with their inputs. Throttling and network errors become TransientError (the state machine retries
    BuildCatalog on it)."""
    sfn = client or boto3.client("stepfunctions", config=Config(retries={"max_attempts": 5, "mode": "standard"},
                                                                max_pool_connections=_DESCRIBERS))
    own = (own_start or dt.datetime.now(dt.UTC), own_arn)  # then the ARN, for runs started at the same instant

    def described(execution_arn: str) -> OtherRun | None:
        desc = sfn.describe_execution(executionArn=execution_arn)
        if desc["status"] != "RUNNING":
            return None  # ended since the listing
        try:
            document = json.loads(desc.get("input") or "null")
        except ValueError:
            document = None
        return OtherRun(arn=desc["executionArn"], name=desc["name"], started=desc["startDate"], input=document)

    try:
        earlier = []
        for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=state_machine_arn,
                                                                   statusFilter="RUNNING"):
            for execution in page["executions"]:
                if _is_map_child(execution["executionArn"]):
                    continue  # an item of a run (the listing should not hold them): not a run
                if execution["executionArn"] == own_arn or (execution["startDate"], execution["executionArn"]) >= own:
                    continue  # a later run checks against this one
                earlier.append(execution["executionArn"])
        with ThreadPoolExecutor(_DESCRIBERS) as pool:
            return [run for run in pool.map(described, earlier) if run is not None]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in _THROTTLED:
            raise TransientError(f"Step Functions throttled the listing of the running executions: {exc}") from exc
        raise
    except NETWORK_ERRORS as exc:
        raise TransientError(f"Step Functions did not answer the listing of the running executions: {exc}") from exc
