"""No secret ever leaves the credential store: not in a state payload, a handler's result, the execution history,
stdout/stderr or any log record.

The secrets are unique strings made for each test: the Earthdata Login username and password (in SSM), the EDL
bearer token EDL hands out, and two sets of temporary DAAC credentials (the first expires within the Processors'
refresh margin, so a Processor has them refreshed: the riskiest path, where FetchCredentials, invoked by the
Processor, reads the EDL secrets again).

1. The four real handlers (functions/*/app.py, with the environment template.yaml gives each) are called in this
   process in the order and with the payloads the state machine builds, against moto (S3, SSM) and `responses`
   (CMR, Earthdata Login, PO.DAAC's s3credentials).
2. The same, as a full execution of statemachine/pipeline.asl.json by the local engine. Its handlers normally run in
   worker processes, which `responses` in this process cannot reach; here the engine runs them on one thread of this
   process (``LocalEngine(in_process=True)``, the only change), so the same answers reach them.

Logs are captured at DEBUG for granulemap and earthaccess (the code that touches the secrets) and at INFO, the
functions' LOG_LEVEL, for everything else: the AWS SDK's DEBUG wire log prints request bodies (an SSM PutParameter's
value among them) and is never on in the deployed functions.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import responses
from moto import mock_aws

from granulemap import credentials, layout
from granulemap.local import worker
from granulemap.local.template import read_local_template

from conftest import MUR25, ROOT
from test_cmr import edited_granule, replay_cmr, ssh_page
from test_credentials import daac_credentials, replay_edl

REGION = "us-west-2"
ACCOUNT = "123456789012"
STACK = "secrets-test"
BUCKET = "granulemap-secrets-test"
DAAC_BUCKET = "podaac-ops-cumulus-protected"
USERNAME_PARAMETER = "/granulemap/edl/username"  # template.yaml's defaults
PASSWORD_PARAMETER = "/granulemap/edl/password"
EXECUTION_INPUT = {"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-31"}


class Secrets:
    """Unique secret values for one test, and the DAAC answers that carry them."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:12]
        self.username = f"edl-user-{tag}"
        self.password = f"edl-password-{tag}"
        self.edl_token = f"edl-bearer-{tag}"
        soon = dt.datetime.now(dt.UTC) + credentials.REFRESH_MARGIN / 2  # inside the refresh margin
        later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        self.first = daac_credentials(f"first{tag}", soon.isoformat(sep=" ", timespec="seconds"))
        self.refreshed = daac_credentials(f"second{tag}", later.isoformat(sep=" ", timespec="seconds"))

    def values(self) -> list[str]:
        return [self.username, self.password, self.edl_token,
                *(v for c in (self.first, self.refreshed) for k, v in c.items() if k != "expiration")]

    def leaked_into(self, text: str) -> list[str]:
        return [s for s in self.values() if s in text]


def mur25_page() -> dict[str, Any]:
    """An edited copy of the real CMR page: its granule renamed to the MUR25 sample and given MUR25's time range."""
    page = edited_granule(ssh_page(), "ssh_grids_v2205_2020010212", MUR25.stem,
                          "2018-12-30T21:00:00.000Z", "2018-12-31T21:00:00.000Z")
    return json.loads(json.dumps(page).replace("SEA_SURFACE_HEIGHT_ALT_GRIDS_L4_2SATS_5DAY_6THDEG_V_JPL2205",
                                               "MUR25-JPL-L4-GLOB-v04.2"))


def granule_key(page: dict[str, Any]) -> str:
    (link,) = [u["URL"] for u in page["items"][0]["umm"]["RelatedUrls"] if u["Type"] == "GET DATA VIA DIRECT ACCESS"]
    assert link.startswith(f"s3://{DAAC_BUCKET}/")
    return link.removeprefix(f"s3://{DAAC_BUCKET}/")


def replay_services(rs: responses.RequestsMock, secrets: Secrets) -> dict[str, Any]:
    """CMR once; EDL + s3credentials twice: FetchCredentials, then the Processor's refresh."""
    page = mur25_page()
    replay_cmr(rs, [page])
    for creds in (secrets.first, secrets.refreshed):
        replay_edl(rs, username=secrets.username, password=secrets.password, edl_token=secrets.edl_token,
                   creds=creds)
    return page


@pytest.fixture
def clean_process() -> Iterator[None]:
    """Forget cached AWS clients and credentials, and restore the environment the handlers change."""
    from aws_lambda_powertools.utilities import parameters

    from granulemap.storage import s3_client

    def forget() -> None:
        s3_client.cache_clear()
        parameters.clear_caches()
        parameters.base.DEFAULT_PROVIDERS.clear()
        credentials.clear_caches()

    saved = dict(os.environ)
    forget()
    try:
        yield
    finally:
        forget()
        os.environ.clear()
        os.environ.update(saved)


def buckets_and_secrets(secrets: Secrets) -> tuple[Any, Any]:
    """(s3, ssm) clients of the mocked account, with the stack's and the DAAC's buckets and the stored EDL secrets."""
    s3 = boto3.client("s3", region_name=REGION)
    for name in (BUCKET, DAAC_BUCKET):
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    ssm = boto3.client("ssm", region_name=REGION)
    ssm.put_parameter(Name=USERNAME_PARAMETER, Value=secrets.username, Type="SecureString")
    ssm.put_parameter(Name=PASSWORD_PARAMETER, Value=secrets.password, Type="SecureString")
    return s3, ssm


def lambda_runs_the_handlers(specs: dict[str, dict[str, Any]], payloads: list[Any],
                             monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """In a mock_aws account: the functions exist in moto's Lambda, and an invocation made through its API (the
    Processor's refresh request to FetchCredentials) runs the real handler, as the local engine does. Each event and
    answer goes into ``payloads``; returns the names of the functions invoked, as they are."""
    from moto.awslambda.models import LambdaFunction

    role = boto3.client("iam").create_role(RoleName="secrets-test", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    lam = boto3.client("lambda", region_name=REGION)
    for spec in specs.values():
        lam.create_function(FunctionName=spec["function_name"], Runtime="python3.12", Role=role,
                            Handler="app.handler", Code={"ZipFile": b"PK\x05\x06" + bytes(18)})
    invoked: list[str] = []

    def run_handler(fn: Any, event: Any = None) -> tuple[str, bool, str]:
        invoked.append(fn.function_name)
        event = json.loads(event) if isinstance(event, (str, bytes)) else event
        answer = worker.invoke_nested(specs[fn.function_name], event)
        payloads.extend([event, json.loads(answer[0])])
        return answer

    monkeypatch.setattr(LambdaFunction, "_invoke_lambda", run_handler)
    return invoked


def function_specs(bucket: str, stack: str) -> dict[str, dict[str, Any]]:
    """Each function as template.yaml describes it (code, handler, environment), in worker.invoke's form."""
    template = read_local_template(ROOT, bucket, REGION, ACCOUNT, stack)
    return {lid: {"function_name": lid, "code_dir": f.code_dir, "handler": f.handler, "environment": f.environment,
                  "memory_size": f.memory_size, "arn": f.arn} for lid, f in template.functions.items()}


# ---- 1. the handlers, in this process -------------------------------------------------------------------------
def test_no_secret_in_payloads_results_output_or_logs_of_the_handlers(clean_process, log_capture, capfd,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", REGION)
    secrets = Secrets()
    specs = function_specs(BUCKET, STACK)
    payloads: list[Any] = []

    def invoke(function: str, event: dict[str, Any]) -> Any:
        payload, errored, _ = worker.invoke(specs[function], event)
        result = json.loads(payload)
        assert not errored, result
        payloads.extend([event, result])
        return result

    with mock_aws(), responses.RequestsMock() as rs:
        s3, ssm = buckets_and_secrets(secrets)
        page = replay_services(rs, secrets)
        s3.put_object(Bucket=DAAC_BUCKET, Key=granule_key(page), Body=MUR25.read_bytes())
        invoked = lambda_runs_the_handlers(specs, payloads, monkeypatch)

        # The payloads pipeline.asl.json builds: BuildCatalog's Parameters, FetchCredentials' ResultPath
        # ($.run.credentials), the Map's ItemSelector ({item, run}) and Aggregate's Parameters.
        state = invoke("CatalogBuilderFunction", {"input": EXECUTION_INPUT, "execution": "secrets-run"})
        state["run"]["credentials"] = invoke("CredentialFetcherFunction", {"run": state["run"]})
        manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=state["catalog"]["key"])["Body"].read())
        results = [invoke("ProcessorFunction", {"item": item, "run": state["run"]}) for item in manifest]
        summary = invoke("AggregatorFunction", {"run": state["run"], "catalog": state["catalog"], "map": state["map"]})
        stored = json.loads(ssm.get_parameter(Name=state["run"]["credentials"]["parameter"],
                                              WithDecryption=True)["Parameter"]["Value"])

    # The run really used (and refreshed) the credentials: otherwise there would be nothing to leak.
    assert [r["status"] for r in results] == ["succeeded"] and summary["status"] == "SUCCEEDED"
    assert state["run"]["credentials"]["daac"] == "POCLOUD"
    assert stored == secrets.refreshed  # the Processor's refresh was stored for the other Processors
    assert invoked == ["CredentialFetcherFunction"]  # by FetchCredentials, which the Processor invoked
    import hashlib

    (asked,) = [p for p in payloads if isinstance(p, dict) and "refresh" in p]
    assert asked == {"refresh": {"daac": "POCLOUD", "run": "secrets-run",
                                 "stale": hashlib.sha256(secrets.first["accessKeyId"].encode()).hexdigest()[:16]}}
    assert any('"run":"secrets-run"' in line and "stored temporary S3 credentials" in line
               and '"function_name":"CredentialFetcherFunction"' in line
               for line in log_capture.printed.getvalue().splitlines()[1:])  # the refresh's, found with its run
    # The Processor, which runs recipe code, is not even told where the Earthdata Login secrets are.
    assert not {USERNAME_PARAMETER, PASSWORD_PARAMETER} & set(specs["ProcessorFunction"]["environment"].values())
    out, err = capfd.readouterr()
    # The captures see the handlers' log lines (so they would see a secret in one).
    assert '"message":"stored temporary S3 credentials"' in log_capture.printed.getvalue()
    assert "temporary S3 credentials near expiry: refreshing" in log_capture.text()

    assert secrets.leaked_into(json.dumps(payloads)) == []
    assert secrets.leaked_into(out + err) == []
    assert secrets.leaked_into(log_capture.text()) == []


# ---- 2. a full local execution of the state machine -----------------------------------------------------------
@pytest.mark.slow
def test_no_secret_in_the_execution_history_or_logs_of_a_local_run(clean_process, log_capture, capfd,
                                                                    tmp_path: Path) -> None:
    from granulemap.local.engine import LocalEngine

    secrets = Secrets()
    with responses.RequestsMock() as rs:
        rs.add_passthru(re.compile(r"http://(127\.0\.0\.1|localhost):\d+"))  # the moto server
        page = replay_services(rs, secrets)
        with LocalEngine(in_process=True) as engine:
            s3, ssm = engine.client("s3"), engine.client("ssm")
            s3.create_bucket(Bucket=DAAC_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
            s3.put_object(Bucket=DAAC_BUCKET, Key=granule_key(page), Body=MUR25.read_bytes())
            ssm.put_parameter(Name=USERNAME_PARAMETER, Value=secrets.username, Type="SecureString")
            ssm.put_parameter(Name=PASSWORD_PARAMETER, Value=secrets.password, Type="SecureString")
            desc = engine.run(EXECUTION_INPUT, name="secrets-run", timeout=120)
            history = engine.history(desc["executionArn"])
            summary = json.loads(s3.get_object(Bucket=engine.bucket,
                                               Key=layout.summary_key("secrets-run"))["Body"].read())
            executions = [desc] + [engine.client("stepfunctions").describe_execution(executionArn=e["executionArn"])
                                   for e in engine.client("stepfunctions").list_executions(
                                       stateMachineArn=engine.state_machine_arn)["executions"]]

    assert desc["status"] == "SUCCEEDED", desc
    assert summary["items"] == {"total": 1, "succeeded": 1, "failed": 0, "skipped": 0}
    assert {i["function"] for i in engine.invocations} == {"CatalogBuilderFunction", "CredentialFetcherFunction",
                                                           "ProcessorFunction", "AggregatorFunction"}
    # FetchCredentials twice: for the run, then to refresh at the Processor's request (which holds no EDL secret).
    assert [i["function"] for i in engine.invocations].count("CredentialFetcherFunction") == 2
    # The history carries FetchCredentials' reference (so it is where a secret would show if one were returned).
    assert "/granulemap/granulemap-local/daac-credentials/POCLOUD" in json.dumps(history, default=str)
    out, err = capfd.readouterr()
    assert '"message":"stored temporary S3 credentials"' in log_capture.printed.getvalue()
    assert "temporary S3 credentials near expiry: refreshing" in log_capture.text()

    assert secrets.leaked_into(json.dumps(history, default=str)) == []
    assert secrets.leaked_into(json.dumps(executions, default=str)) == []
    assert secrets.leaked_into(out + err) == []
    assert secrets.leaked_into(log_capture.text()) == []


# ---- 3. the error paths ---------------------------------------------------------------------------------------
def test_no_secret_in_the_errors_of_failed_handlers(clean_process, log_capture, capfd,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The paths where code that holds the secrets fails: FetchCredentials refused by PO.DAAC's s3credentials (after
    logging in with the username and password), then, with credentials in hand, a Processor whose only granule is
    gone from the DAAC bucket (its item fails: Lambda's error payload with the stack trace, the worker's [ERROR]
    traceback), the failure RecordFailure stores and a failing Aggregate."""
    monkeypatch.setenv("AWS_REGION", REGION)
    secrets = Secrets()
    specs = function_specs(BUCKET, STACK)
    payloads: list[Any] = []

    def invoke(function: str, event: dict[str, Any]) -> tuple[Any, bool]:
        payload, errored, _ = worker.invoke(specs[function], event)
        result = json.loads(payload)
        payloads.extend([event, result])
        return result, errored

    with mock_aws(), responses.RequestsMock() as rs:
        s3, ssm = buckets_and_secrets(secrets)
        replay_cmr(rs, [mur25_page()])  # the granule itself is never put in the DAAC bucket
        replay_edl(rs, username=secrets.username, password=secrets.password, edl_token=secrets.edl_token,
                   creds=secrets.refreshed, s3credentials_status=401)
        replay_edl(rs, username=secrets.username, password=secrets.password, edl_token=secrets.edl_token,
                   creds=secrets.refreshed)

        state, errored = invoke("CatalogBuilderFunction", {"input": EXECUTION_INPUT, "execution": "secrets-run"})
        assert not errored, state
        refused, errored = invoke("CredentialFetcherFunction", {"run": state["run"]})
        assert errored and refused["errorType"] == "CredentialsUnavailable" and refused["stackTrace"], refused
        state["run"]["credentials"], errored = invoke("CredentialFetcherFunction", {"run": state["run"]})
        assert not errored
        manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=state["catalog"]["key"])["Body"].read())
        (item,) = manifest
        failed, errored = invoke("ProcessorFunction", {"item": item, "run": state["run"]})
        assert errored and failed["errorType"] == "GranuleUnreadable", failed
        # RecordFailure: the state machine stores the caught error (Lambda's error payload) as it is
        caught = {"Error": failed["errorType"], "Cause": json.dumps(failed)}
        s3.put_object(Bucket=BUCKET, Key=layout.failure_key(state["run"]["run_id"], item["id"]), Body=json.dumps(caught))
        verdict, errored = invoke("AggregatorFunction", {"run": state["run"], "catalog": state["catalog"],
                                                         "map": state["map"]})
        assert errored and verdict["errorType"] == "TooManyFailures", verdict

    out, err = capfd.readouterr()
    # The captures saw the failures (so they would see a secret printed with one).
    assert "[ERROR] ProcessorFunction GranuleUnreadable" in out + err + log_capture.text()
    assert secrets.leaked_into(json.dumps(payloads)) == []
    assert secrets.leaked_into(out + err) == []
    assert secrets.leaked_into(log_capture.text()) == []
