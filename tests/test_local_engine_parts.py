"""Parts of the local engine that make it cheaper, checked to change nothing a run can see.

- speedups.install: moto's request ids keep their form; botocore's data files load once for every session and give
  what botocore itself loads; everything is put back by the function install returns.
- worker processes end without tearing down their modules, after flushing what they printed and logged; a handler
  thread in the caller's own process (``in_process``) never registers that exit.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import botocore.loaders
import pytest
import botocore.session

from granulemap.local import speedups, worker

from conftest import on_a_full_disk

def test_request_ids_have_moto_s_form_and_use_every_letter_and_digit() -> None:
    headers: dict[str, str] = {}
    first = speedups.request_id(headers)
    assert re.fullmatch(r"[A-Za-z0-9]{52}", first) and headers == {"x-amzn-requestid": first}
    many = [speedups.request_id() for _ in range(2000)]
    assert len(set(many)) == len(many)
    counts = {c: 0 for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"}
    for rid in many:
        for c in rid:
            counts[c] += 1
    # Each symbol equally likely: 1,677 draws each (σ ≈ 41, so ±15 % is 6σ: never by chance). Mapping all 256
    # byte values onto 62 symbols would give 8 of them 5/256 instead of 1/62 (+21 %).
    expected = 2000 * 52 / 62
    assert all(abs(n - expected) < 0.15 * expected for n in counts.values()), counts


def test_install_shares_botocore_data_across_sessions_and_restores_everything() -> None:
    from moto import settings
    from moto.core import responses

    original_load = botocore.loaders.JSONFileLoader.load_file
    original_id = responses.gen_amzn_requestid_long
    plain = botocore.session.get_session().get_data("endpoints")
    restore = speedups.install()
    try:
        assert settings.S3_IGNORE_SUBDOMAIN_BUCKETNAME is True
        assert responses.gen_amzn_requestid_long is speedups.request_id
        one = botocore.session.get_session().get_data("endpoints")
        two = botocore.session.get_session().get_data("endpoints")
        assert one is two  # loaded once, for two sessions
        assert one == plain  # and the same data botocore loads itself
    finally:
        restore()
    assert botocore.loaders.JSONFileLoader.load_file is original_load
    assert responses.gen_amzn_requestid_long is original_id
    assert settings.S3_IGNORE_SUBDOMAIN_BUCKETNAME is False


def _print_and_log(text: str) -> int:
    print(text, end="")  # no newline: still in the stream's buffer when the process ends, unless flushed
    logging.getLogger("granulemap.test").warning("logged %s", text)
    return 1


def _write_marker(path: str) -> None:
    Path(path).write_text("the interpreter ran its earlier exit handlers")


def _init_with_an_earlier_exit_handler(marker: str, log: str) -> None:
    atexit.register(_write_marker, marker)  # registered before the worker's own: atexit would run it after
    worker.init_worker({}, log, True)


LAZY_BATCH_PROBE = """
import sys
from granulemap.local import speedups
speedups.install()  # imports moto's server and Step Functions engine
print("moto.ec2" in sys.modules)
from moto.batch.utils import JobStatus  # a submodule, from the package's own folder
print(JobStatus.SUCCEEDED.name, "moto.ec2" in sys.modules)
import moto.batch
print(type(moto.batch.batch_backends).__name__, "moto.ec2" in sys.modules)  # what moto.batch's __init__ exports
"""


def test_moto_s_batch_package_loads_its_models_only_when_they_are_used() -> None:
    import subprocess

    out = subprocess.run([sys.executable, "-c", LAZY_BATCH_PROBE], capture_output=True, text=True, check=True,
                         timeout=120).stdout.split("\n")
    assert out[:3] == ["False", "SUCCEEDED False", "BackendDict True"]
    # The lazy package stands for moto.batch's __init__ only while that does nothing but re-export the models:
    # after an upgrade of moto that changes it, this fails, and speedups._lazy_package needs a look.
    import importlib.util

    init = Path(importlib.util.find_spec("moto.batch").origin).read_text()
    code = [line.split("#")[0].strip() for line in init.splitlines() if line.split("#")[0].strip()]
    assert code == ["from .models import batch_backends"]


def test_a_worker_process_ends_at_once_without_losing_what_it_printed_and_logged(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # the worker's stdout is then block-buffered
    log, marker = tmp_path / "functions.log", tmp_path / "marker"
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_with_an_earlier_exit_handler, initargs=(str(marker), str(log)))
    try:
        assert pool.submit(_print_and_log, "printed-before-exit").result(timeout=120) == 1
    finally:
        pool.shutdown(wait=True)
    text = log.read_text()
    assert "printed-before-exit" in text and "logged printed-before-exit" in text
    assert not marker.exists()  # the process left at the worker's exit handler: no teardown after it


def test_a_handler_thread_in_the_caller_s_process_does_not_change_how_it_exits(monkeypatch) -> None:
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # init_worker leaves the streams alone without a log path
    monkeypatch.setattr(worker, "_base_env", dict(worker._base_env))  # put back after the test
    monkeypatch.delenv("GRANULEMAP_LOCAL_CHANNEL", raising=False)  # no channel: no client hook installed
    before = atexit._ncallbacks()
    worker.init_worker({}, None)
    assert atexit._ncallbacks() == before


def test_the_bucket_mirror_keeps_keys_inside_its_folder_and_whole(tmp_path: Path) -> None:
    from granulemap.local.mirror import BucketMirror

    mirror = BucketMirror("bucket", tmp_path / "state")

    def write(key: str, value: bytes) -> None:  # as a put into the bucket does, around the put
        with mirror._writing(key, value):
            pass

    write("results/r/c/item-1.json", b'{"a": 1}')
    write("results/r/c/item-1.json", b'{"a": 2}')  # replaced whole, never appended to
    write("outputs/x.csv", b"t,v\n")
    write("../escaped.json", b"no")
    write("results/../../escaped-too.json", b"no")
    write("folder/", b"")
    files = sorted(p.relative_to(tmp_path / "state").as_posix() for p in (tmp_path / "state").rglob("*") if p.is_file())
    assert files == ["outputs/x.csv", "results/r/c/item-1.json"]
    assert (tmp_path / "state/results/r/c/item-1.json").read_bytes() == b'{"a": 2}'
    assert not list(tmp_path.glob("escaped*"))
    mirror._delete("outputs/x.csv")
    mirror._delete("../escaped.json")  # outside: nothing to do, no error
    assert not (tmp_path / "state/outputs/x.csv").exists()


def test_a_write_the_disk_refuses_leaves_the_emulated_bucket_as_it_was_too(tmp_path: Path, monkeypatch) -> None:
    """A full disk: the object was put in the bucket in memory, then its copy on disk failed. The run went on with
    what the next run (restored from disk) would not have (a result; a CSV's new rows, which a later run would
    merge into the older file, losing them). The disk is written first now: the put fails, and changes nothing; it
    fails with an S3 error that names the file (moto's server logged the OSError's traceback on the terminal)."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError
    from moto import mock_aws

    from granulemap.local.mirror import PART, REFUSED_CODE, BucketMirror

    bucket = "granulemap-mirror-test"
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-west-2", config=Config(retries={"max_attempts": 1}))
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        mirror = BucketMirror(bucket, tmp_path / "state")
        mirror.install()
        try:
            s3.put_object(Bucket=bucket, Key="outputs/series.csv", Body=b"t,v\n1,1\n")
            on_a_full_disk(monkeypatch)
            with pytest.raises(ClientError, match=f"{REFUSED_CODE}.*series.csv: No space left on device"):
                s3.put_object(Bucket=bucket, Key="outputs/series.csv", Body=b"t,v\n1,1\n2,2\n")
            with pytest.raises(ClientError, match="No space left on device"):
                s3.put_object(Bucket=bucket, Key="results/item-2.json", Body=b"{}")
            assert mirror.refused is not None and mirror.refused[0] == tmp_path / "state/outputs/series.csv"  # first
            held = s3.get_object(Bucket=bucket, Key="outputs/series.csv")["Body"].read()
            listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
        finally:
            mirror.uninstall()
    assert held == b"t,v\n1,1\n" and listed == ["outputs/series.csv"]
    files = sorted(p.relative_to(tmp_path / "state").as_posix() for p in (tmp_path / "state").rglob("*") if p.is_file())
    assert files == ["outputs/series.csv"] and not any(PART in name for name in files)
    assert (tmp_path / "state/outputs/series.csv").read_bytes() == held


def test_two_puts_of_one_key_at_once_leave_the_same_object_on_disk_and_in_memory(tmp_path: Path, monkeypatch) -> None:
    """Put A has written its file and the bucket in memory; put B of the same key comes before A renames its file:
    without a lock per key, B's file was renamed first and A's over it (memory B, disk A: the next run restores A)."""
    import threading

    import boto3
    from moto import mock_aws
    from moto.s3.models import S3Backend

    from granulemap.local.mirror import BucketMirror

    bucket, key = "granulemap-mirror-race", "outputs/series.csv"
    put = S3Backend.put_object
    b_done = threading.Event()

    def a_pauses_after_its_put(backend, bucket_name, key_name, value, *args, **kwargs):  # type: ignore[no-untyped-def]
        stored = put(backend, bucket_name, key_name, value, *args, **kwargs)
        if value == b"A":
            b_done.wait(timeout=1.0)  # with the lock, B waits for A instead: A goes on after a second
        return stored

    monkeypatch.setattr(S3Backend, "put_object", a_pauses_after_its_put)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-west-2")
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        mirror = BucketMirror(bucket, tmp_path / "state")
        mirror.install()
        try:
            a = threading.Thread(target=lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"A"))
            a.start()
            time.sleep(0.3)  # A is in its pause
            s3.put_object(Bucket=bucket, Key=key, Body=b"B")
            b_done.set()
            a.join()
            held = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        finally:
            mirror.uninstall()
    assert held == b"B" and (tmp_path / "state" / key).read_bytes() == held


def test_moto_s_report_of_each_failed_state_goes_to_the_run_s_engine_log_not_the_terminal(tmp_path: Path,
                                                                                          capfd) -> None:
    """moto logs every failed state as a multi-kB ERROR line (its internal repr): a failed local run showed that on
    the terminal, even with --quiet."""
    from granulemap.local.engine import LocalEngine

    engine_logger = logging.getLogger("moto.stepfunctions.parser")
    before = (engine_logger.propagate, list(engine_logger.handlers))
    (tmp_path / "logs").mkdir()
    with LocalEngine(workers=1, log_path=tmp_path / "logs" / "functions.log") as engine:
        desc = engine.run({"recipe": "sst-global-mean", "start": "2018-12-31", "end": "2018-12-01",
                           "source": str(tmp_path)}, timeout=120)
    assert desc["status"] == "FAILED" and desc["error"] == "InvalidInput"
    assert "Exception=" not in capfd.readouterr().err
    assert "Error=InvalidInput" in (tmp_path / "logs" / "engine.log").read_text()
    assert (engine_logger.propagate, list(engine_logger.handlers)) == before  # put back


def test_wait_wakes_when_the_execution_ends_not_at_its_next_poll(tmp_path: Path) -> None:
    """The engine's wait is woken by moto's end of an execution: with a poll of a minute, a run that fails at once
    still returns at once; and moto's own ``terminated`` is put back when the engine stops."""
    from moto.stepfunctions.parser.backend.execution import BaseExecutionWorkerCommunication

    from granulemap.local.engine import LocalEngine

    before = BaseExecutionWorkerCommunication.terminated
    with LocalEngine(workers=1) as engine:
        engine.run({"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-01",
                    "source": str(tmp_path)}, timeout=120)  # forks the workers: not part of what is timed below
        arn = engine.start({"recipe": "sst-global-mean", "start": "2018-12-31", "end": "2018-12-01",
                            "source": str(tmp_path)})
        started = time.monotonic()
        desc = engine.wait(arn, poll=60, check=60, timeout=120)
        waited = time.monotonic() - started
        assert BaseExecutionWorkerCommunication.terminated is not before
    assert desc["status"] == "FAILED" and desc["error"] == "InvalidInput"
    assert waited < 30, f"wait returned after {waited:.1f} s: at its poll, not at the execution's end"
    assert BaseExecutionWorkerCommunication.terminated is before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's abstract Unix sockets")
def test_a_killed_engine_leaves_no_socket_file_behind(tmp_path: Path) -> None:
    """The channel's socket has no file (Linux's abstract namespace): folders of killed runs' sockets used to pile
    up in /tmp."""
    import glob
    import os
    import signal
    import subprocess

    temporary = tmp_path / "tmp"  # its own: what the killed engine leaves there is not left in the machine's /tmp
    temporary.mkdir()
    pattern = os.path.join(temporary, "granulemap-channel-*")
    before = set(glob.glob(pattern))
    script = ("from granulemap.local.engine import LocalEngine\nimport time\n"
              "with LocalEngine(workers=1) as e:\n    print(e._channel.path, flush=True)\n    time.sleep(300)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "TMPDIR": str(temporary)})
    try:
        path = proc.stdout.readline().strip()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert path.startswith("@granulemap-channel-")
    assert set(glob.glob(pattern)) == before


class _Marker:
    """A pickle that, when loaded, creates the file named by ``path``: what another user could send."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.getuid() != 0,
                    reason="needs Linux and root, to connect as another user")
def test_the_channel_serves_only_its_own_user(tmp_path: Path) -> None:
    """The channel's abstract socket has no file permissions and its name is public (/proc/net/unix); its messages
    are pickles. Another user's connection is closed unread."""
    import pickle
    import socket
    import struct

    from granulemap.local.channel import ChannelServer, socket_address

    server = ChannelServer(("127.0.0.1", 9))
    marker = tmp_path / "loaded"
    tmp_path.chmod(0o777)
    try:
        pid = os.fork()
        if pid == 0:  # the other user
            code = 1
            try:
                os.setuid(65534)
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.connect(socket_address(server.path))
                data = pickle.dumps(_Marker(str(marker)))
                conn.settimeout(10)
                try:
                    conn.sendall(struct.pack("!Q", len(data)) + data)
                    code = 0 if conn.recv(1) == b"" else 2  # closed without an answer
                except (BrokenPipeError, ConnectionResetError):
                    code = 0  # closed before it had all of it
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert not marker.exists()
    finally:
        server.close()


def test_the_moto_server_s_port_answers_only_requests_signed_with_the_engine_s_own_key() -> None:
    """The TCP port is open to every user of the machine; the key is new per engine and only in the engine's and its
    workers' environments. moto's own calls to itself and this process's clients are answered in-process, and the
    engine gives this process's botocore back as it found it."""
    import requests
    from botocore.session import Session

    from granulemap.local.engine import LocalEngine

    registered_before = Session._register_builtin_handlers
    with LocalEngine(workers=1) as engine:
        key = engine.credentials["AWS_ACCESS_KEY_ID"]
        assert key.startswith("GMLOCAL") and key != "testing"
        url = f"{engine.endpoint}/{engine.bucket}"

        def signed_by(access_key: str) -> dict[str, str]:
            return {"Authorization": f"AWS4-HMAC-SHA256 Credential={access_key}/20261130/us-west-2/s3/aws4_request, "
                                     "SignedHeaders=host, Signature=0"}

        assert requests.get(url, timeout=10).status_code == 403
        assert requests.get(url, headers=signed_by("testing"), timeout=10).status_code == 403  # moto's usual key
        assert requests.get(url, headers=signed_by(key), timeout=10).status_code == 200
        assert requests.get(f"{engine.endpoint}/moto-api/reset", timeout=10).status_code == 403
        # this process's own clients (moto's engine's among them) do not go over the port
        assert engine.client("s3").head_bucket(Bucket=engine.bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert Session._register_builtin_handlers is registered_before


def test_an_engine_after_an_interrupted_one_puts_moto_s_own_lambda_back() -> None:
    """An interrupted engine leaves its dispatcher in moto's place (moto's threads may still be dispatching); the
    next engine of the process must still restore moto's own function when it closes, not that dispatcher."""
    from moto.awslambda.models import LambdaFunction
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

    from granulemap.local.engine import LocalEngine

    moto_invoke, moto_client_for = LambdaFunction._invoke_lambda, lambda_eval_utils.boto_client_for
    engine = LocalEngine(workers=1)
    engine.__enter__()
    engine.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)
    assert LambdaFunction._invoke_lambda is not moto_invoke  # left in place: answers "the local engine has stopped"
    with LocalEngine(workers=1):
        pass
    assert LambdaFunction._invoke_lambda is moto_invoke
    assert lambda_eval_utils.boto_client_for is moto_client_for


def test_a_processor_in_a_worker_process_has_fetch_credentials_refresh_while_it_waits() -> None:
    """A Processor whose stored credentials are about to expire invokes FetchCredentials (through the engine's
    Lambda API) and waits for its answer. With one worker, held by that waiting Processor, the refresh still runs (in
    the engine's pool for invocations that a handler makes: in the same pool it would wait for ever). Here
    FetchCredentials cannot log in, since no Earthdata Login secret is stored: its error reaches the Processor, and
    the state, by name and with its reason."""
    import datetime as dt
    import json

    from granulemap.grouping import item_id_for
    from granulemap.local.engine import ACCOUNT, LOCAL_STACK_NAME, REGION, LocalEngine
    from granulemap.models import CredentialsRef, Granule, Item, ProcessorEvent, RunContext
    from granulemap.recipes import get_recipe

    from test_credentials import USERNAME_PARAMETER, daac_credentials

    recipe = get_recipe("sst-global-mean")
    params = recipe.parse_params({})
    soon = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(minutes=5)  # within every refresh margin
    ref = CredentialsRef(parameter=f"/granulemap/{LOCAL_STACK_NAME}/daac-credentials/POCLOUD", daac="POCLOUD",
                         expires=soon)
    url = "s3://podaac-ops-cumulus-protected/MUR25-JPL-L4-GLOB-v04.2/20181231090000-mur25.nc"
    event = ProcessorEvent(
        item=Item(id=item_id_for(url), granules=[Granule(url=url, time=dt.datetime(2018, 12, 31, 9, tzinfo=dt.UTC))]),
        run=RunContext(run_id="refresh-run", recipe=recipe.name, params=params.model_dump(mode="json"),
                       config_id=recipe.config_id(params), daac="POCLOUD", credentials=ref))
    processor = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ProcessorFunction"
    definition = {"StartAt": "Process", "States": {"Process": {
        "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "OutputPath": "$.Payload", "End": True,
        "Parameters": {"FunctionName": processor, "Payload.$": "$"}}}}
    with LocalEngine(workers=1) as engine:
        engine.client("ssm").put_parameter(Name=ref.parameter, Type="SecureString", Value=json.dumps(
            daac_credentials("soon", soon.isoformat(sep=" "))))
        sfn = engine.client("stepfunctions")
        role = engine.client("iam").get_role(RoleName="granulemap-local")["Role"]["Arn"]
        machine = sfn.create_state_machine(name="one-processor", definition=json.dumps(definition),
                                           roleArn=role)["stateMachineArn"]
        execution = sfn.start_execution(stateMachineArn=machine, input=event.model_dump_json())["executionArn"]
        desc = engine.wait(execution, timeout=120)
    assert desc["status"] == "FAILED" and desc["error"] == "CredentialsUnavailable", desc
    assert f"SSM parameter {USERNAME_PARAMETER} does not exist" in desc["cause"]
    assert [(i["function"], i["errored"], i.get("errorType")) for i in engine.invocations] == [
        ("CredentialFetcherFunction", True, "CredentialsUnavailable"),  # ended first: the Processor waited for it
        ("ProcessorFunction", True, "CredentialsUnavailable")]


def test_a_nested_worker_that_dies_fails_its_invocation_and_the_next_one_gets_a_new_worker() -> None:
    """The nested pool's worker killed: the invocation then made fails as a Lambda service error (which a refresh
    takes for an outage), the next starts a new worker, and the pool of the state machine's tasks is left alone."""
    import json
    import signal

    from granulemap.local.engine import LocalEngine

    refresh = json.dumps({"refresh": {"daac": "POCLOUD", "stale": "0123456789abcdef"}})
    with LocalEngine(workers=1) as engine:
        lam = engine.client("lambda")

        def invoke() -> str:
            answer = lam.invoke(FunctionName="CredentialFetcherFunction", Payload=refresh)
            assert answer.get("FunctionError")  # no Earthdata Login secret is stored: it cannot succeed here
            return json.loads(answer["Payload"].read())["errorType"]

        main_pool = engine._pool
        assert invoke() == "CredentialsUnavailable"  # the nested pool's worker ran FetchCredentials
        (process,) = engine._nested_pool._processes.values()
        os.kill(process.pid, signal.SIGKILL)
        process.join()
        assert invoke() == "Lambda.ServiceException"
        assert invoke() == "CredentialsUnavailable"  # a new worker
        assert engine._pool is main_pool


def test_wait_shows_progress_often_and_asks_moto_only_every_check_or_at_an_end() -> None:
    """A DescribeExecution every 0.2 s (the progress line's pace) cost the engine process several ms each, taken from
    the workers: about a tenth of its CPU in a 1,000-item run. Progress is drawn from what the engine already knows;
    moto is asked at an execution's end, or every ``check`` seconds in case an end goes untold."""
    import threading

    from granulemap.local.engine import LocalEngine

    engine = LocalEngine(workers=1)  # not started: wait only needs a client and the end notifications
    described: list[float] = []
    status = {"now": "RUNNING"}

    asked = threading.Event()

    class Sfn:
        def describe_execution(self, executionArn: str) -> dict:  # noqa: N803 - boto3's name
            described.append(time.monotonic())
            asked.set()
            return {"status": status["now"]}

    engine.client = lambda service: Sfn()  # type: ignore[method-assign]
    polls: list[float] = []
    with pytest.raises(TimeoutError):
        engine.wait("arn", poll=0.05, check=0.5, timeout=2.5, on_poll=lambda: polls.append(time.monotonic()))
    assert 2 <= len(described) <= 7, described  # at the start, then about every 0.5 s (not every poll: 50)
    assert len(polls) >= 10  # progress every 0.05 s

    def end() -> None:  # what moto's terminated() does through the engine's hook, once wait has asked moto
        assert asked.wait(30)
        time.sleep(0.05)
        status["now"] = "SUCCEEDED"
        with engine._ended:
            engine._ends += 1
            engine._ended.notify_all()

    described.clear()
    asked.clear()
    threading.Thread(target=end).start()
    started = time.monotonic()
    assert engine.wait("arn", poll=0.05, check=60, timeout=30)["status"] == "SUCCEEDED"
    assert time.monotonic() - started < 10 and len(described) == 2  # woken by the end, not by check


def test_a_profile_this_machine_does_not_know_does_not_stop_a_local_run(monkeypatch, mur25: Path) -> None:
    """AWS_PROFILE naming a profile missing from ~/.aws/config (another machine's, a typo) made the engine's first
    boto3 client raise ProfileNotFound: `granulemap run` died with a traceback, though it never uses the account."""
    from granulemap.local.engine import LocalEngine

    monkeypatch.setenv("AWS_PROFILE", "granulemap-no-such-profile")
    monkeypatch.setenv("AWS_DEFAULT_PROFILE", "granulemap-no-such-profile-either")
    with LocalEngine(workers=1) as engine:
        assert "AWS_PROFILE" not in os.environ
        desc = engine.run({"recipe": "sst-global-mean", "start": "2018-12-31", "end": "2018-12-31",
                           "source": str(mur25.parent)}, timeout=120)
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    assert os.environ["AWS_PROFILE"] == "granulemap-no-such-profile"  # the user's, put back
    assert os.environ["AWS_DEFAULT_PROFILE"] == "granulemap-no-such-profile-either"


def test_a_workspaces_engine_keeps_its_marks_in_its_folder_and_removes_a_killed_ones(tmp_path: Path,
                                                                                      monkeypatch) -> None:
    """The workers' marks (timeouts, invocations over their MemorySize) were kept in a folder of /tmp that a killed
    run (SIGKILL) left there for ever: one per killed run. Now beside the Workspace's state/, where its next engine
    (the folder is locked while one runs) removes what a killed one left."""
    import tempfile

    from granulemap.local.engine import ENGINE_FOLDER
    from granulemap.local.run import Workspace

    folder = tmp_path / "ws"
    left = folder / ENGINE_FOLDER / "over-memory.jsonl"
    left.parent.mkdir(parents=True)
    left.write_text('{"function": "ProcessorFunction", "item": "a killed run\'s"}\n')
    temporary = tmp_path / "tmp"  # this process's temporary folders: not /tmp, which other processes use too
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    with Workspace(folder, workers=1) as ws:
        assert (folder / ENGINE_FOLDER).is_dir() and not left.exists()
        assert ws.engine.over_memory() == ([], 0)
        assert [p.name for p in temporary.iterdir() if p.name.startswith("granulemap-")] == []
    assert not (folder / ENGINE_FOLDER).exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a bound port is held only on Linux")
def test_the_moto_servers_port_is_held_for_it_until_it_listens() -> None:
    """The engine found a free port, let it go, and bound the moto server to it a second or two later (its workers
    start with the endpoint first): meanwhile any process's connection could be given that port. Held, nothing else
    binds it, and the server (SO_REUSEADDR, as werkzeug's) still can."""
    import socket

    from moto.server import ThreadedMotoServer

    from granulemap.local.engine import _held_port

    port, held = _held_port()
    assert held is not None  # Linux
    try:
        with socket.socket() as other, pytest.raises(OSError):
            other.bind(("127.0.0.1", port))
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
    finally:
        held.close()
    try:
        assert server.get_host_and_port() == ("127.0.0.1", port)
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass
    finally:
        server.stop()


def test_a_workspace_opens_with_its_folders_objects_as_they_were_stored(tmp_path: Path) -> None:
    """state/ is put back into the emulated bucket straight into moto's backend (not a request per object): each
    object as it was, bytes, listing and ETag (MD5) alike, and nothing written back to disk."""
    import hashlib

    from granulemap.local.run import Workspace

    state = tmp_path / "ws" / "state"
    objects = {"results/run/config/item-1.json": b'{"result": 1}',
               "outputs/sst/config/global_mean_sst.csv": b"time,v\n2019-01-01T00:00:00Z,1.5\n",
               "outputs/atl06/config/store.zarr/h_mean/c/0/0": bytes(range(256)) * 3}
    for key, body in objects.items():
        (state / key).parent.mkdir(parents=True, exist_ok=True)
        (state / key).write_bytes(body)
    (state / "results" / ".part-left-by-a-killed-write").write_bytes(b"half")  # never an object
    written = {key: (state / key).stat().st_mtime_ns for key in objects}
    with Workspace(tmp_path / "ws", workers=1) as ws:
        s3 = ws.engine.client("s3")
        listed = [o["Key"] for o in s3.list_objects_v2(Bucket=ws.engine.bucket)["Contents"]]
        assert sorted(listed) == sorted(objects)
        for key, body in objects.items():
            got = s3.get_object(Bucket=ws.engine.bucket, Key=key)
            assert got["Body"].read() == body and got["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert {key: (state / key).stat().st_mtime_ns for key in objects} == written


def test_a_workspace_lets_go_of_moto_s_ended_threads(tmp_path: Path, mur25: Path) -> None:
    """moto keeps every Step Functions thread it starts in a list nothing empties (two per item, one per Map
    concurrency slot: 40 by default): a notebook's Workspace grew with every run."""
    from moto.stepfunctions.parser.utils import TMP_THREADS

    from granulemap.local.run import Workspace

    source = tmp_path / "granules"
    source.mkdir()
    (source / mur25.name).symlink_to(mur25)
    before = len(TMP_THREADS)
    with Workspace(tmp_path / "ws", workers=1) as ws:
        for run in range(3):
            summary = ws.run({"recipe": "sst-global-mean", "start": "2018-12-31", "end": "2018-12-31",
                              "source": str(source), "recompute": True}, out=tmp_path / f"run-{run}")
            assert summary["status"] == "SUCCEEDED", summary["message"]
        assert len(TMP_THREADS) - before < 10, len(TMP_THREADS) - before  # was 3 × ~45
    assert [thread for thread in TMP_THREADS if not thread.is_alive()] == []


def test_a_folder_stays_locked_when_its_lock_file_is_deleted_and_a_workspace_run_locks_its_out(
        tmp_path: Path, mur25: Path) -> None:
    """The lock file stays after a run, so it looks stale: deleted while a run held it, a second run got in (both
    merged their rows into one state's CSV, and rows were lost). And a Workspace's run did not lock its out: a
    `granulemap run --out` there meanwhile had its products replaced by the Workspace's."""
    from granulemap.errors import InvalidInput
    from granulemap.local.run import Workspace, _lock_folder

    folder = tmp_path / "folder"
    folder.mkdir()
    held = _lock_folder(folder)
    try:
        (folder / ".granulemap-lock").unlink()
        with pytest.raises(InvalidInput, match="is in use by another granulemap run or Workspace"):
            _lock_folder(folder)
    finally:
        held.close()
    _lock_folder(folder).close()  # free again

    source = tmp_path / "granules"
    source.mkdir()
    (source / mur25.name).symlink_to(mur25)
    doc = {"recipe": "sst-global-mean", "start": "2018-12-31", "end": "2018-12-31", "source": str(source)}
    out = tmp_path / "out"
    out.mkdir()
    other = _lock_folder(out)  # what a `granulemap run --out out` holds while it runs
    try:
        with Workspace(tmp_path / "ws", workers=1) as ws:
            with pytest.raises(InvalidInput, match=f"{out} is in use"):
                ws.run(doc, out=out)
            assert not (out / "global_mean_sst.csv").exists()
    finally:
        other.close()


def test_a_killed_runs_locks_and_half_written_files_are_removed_as_a_workspace_opens(tmp_path: Path) -> None:
    """A run killed while a step held the ATL06 store's lock left it in state/: the next run's step waited for the
    lease to end (15 minutes) saying nothing. The folder is the new engine's alone, so no holder is alive."""
    from granulemap.local.run import Workspace
    from granulemap.storage import LOCK_SUFFIX

    state = tmp_path / "ws" / "state"
    store = "outputs/atl06-cell-stats/config/atl06-cell-stats.zarr"
    kept = {f"{store}/zarr.json": b"{}", "results/run/config/item.json": b"{}"}
    gone = [f"{store}{LOCK_SUFFIX}", "results/run/config/.part-abc123"]
    for key in [*kept, *gone]:
        (state / key).parent.mkdir(parents=True, exist_ok=True)
        (state / key).write_bytes(kept.get(key, b'{"holder": "run killed (growth)", "since": 0}'))
    with Workspace(tmp_path / "ws", workers=1) as ws:
        listed = ws.engine.client("s3").list_objects_v2(Bucket=ws.engine.bucket)["Contents"]
        assert sorted(o["Key"] for o in listed) == sorted(kept)
    assert [key for key in gone if (state / key).exists()] == []


def test_a_download_removes_the_copy_a_killed_one_left(tmp_path: Path) -> None:
    """A run killed while it copied its store into --out left a hidden copy there (.<name>.<hex>) for ever."""
    import boto3
    from moto import mock_aws

    from granulemap.storage import download_objects

    left = tmp_path / ".atl06-cell-stats.zarr.0123456789ab"
    (left / "h_mean").mkdir(parents=True)
    mine = tmp_path / ".atl06-cell-stats.zarr.notes"  # not one of ours: kept
    mine.mkdir()
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-west-2")
        s3.create_bucket(Bucket="bucket", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        s3.put_object(Bucket="bucket", Key="outputs/x/atl06-cell-stats.zarr/zarr.json", Body=b"{}")
        (copy,) = download_objects(s3, "bucket", "outputs/x/atl06-cell-stats.zarr", tmp_path)
    assert (copy / "zarr.json").read_bytes() == b"{}"
    assert not left.exists() and mine.is_dir()
