"""The local engine holds each invocation to its function's Timeout (template.yaml), as Lambda does: an item whose
recipe loops for ever fails as ``Sandbox.Timedout`` and the run goes on with the others. Before, the local run waited
for ever (the context even told the handler it had 900 s left, whatever its Timeout)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import change_in_template, install_recipe_package, itemised_recipe
from granulemap.local import worker


def _spec(code_dir: Path, timeout: float | None) -> dict:
    return {"function_name": "TestFunction", "code_dir": str(code_dir), "handler": "app.handler",
            "environment": {}, "memory_size": 128, "arn": "arn:aws:lambda:us-west-2:123456789012:function:Test",
            "timeout": timeout}


@pytest.fixture
def limited() -> Iterator[None]:
    """Timeouts enforced in this (the test's main) thread, as in a worker process of the engine (the environment
    worker.invoke sets is put back by conftest's _environment_put_back, as after every test)."""
    undo = worker.enforce_timeouts()
    try:
        yield
    finally:
        undo()


def _handler(tmp_path: Path, body: str) -> Path:
    code = tmp_path / "fn"
    code.mkdir()
    (code / "app.py").write_text("import time\n\n\ndef handler(event, context):\n" + body)
    return code


def test_an_invocation_past_its_timeout_fails_as_lambdas_does_and_its_worker_retires(limited, tmp_path) -> None:
    code = _handler(tmp_path, (
        "    while True:\n"
        "        try:\n"  # a handler's own `except Exception` does not take the timeout for its error
        "            time.sleep(0.01)\n"
        "        except Exception:\n"
        "            pass\n"))
    began = time.monotonic()
    payload, errored, _ = worker.invoke(_spec(code, 1), {})
    took = time.monotonic() - began
    assert errored
    assert json.loads(payload) == {"errorType": "Sandbox.Timedout", "errorMessage": "Task timed out after 1.00 seconds"}
    assert 1.0 <= took < 1.0 + worker.TIMEOUT_GRACE_S
    # Lambda resets the environment after a timeout: this process runs no other invocation (the engine runs it in a
    # new pool), and no alarm is left: it would raise here, outside any invocation.
    assert worker.invoke(_spec(code, 1), {}) == worker.RETIRED
    time.sleep(1.5)


def test_the_context_says_the_time_left_of_the_functions_own_timeout(limited, tmp_path) -> None:
    code = _handler(tmp_path, "    return {'left_ms': context.get_remaining_time_in_millis()}\n")
    payload, errored, _ = worker.invoke(_spec(code, 3), {})
    assert not errored
    assert 2_000 < json.loads(payload)["left_ms"] <= 3_000  # not a fixed 900 s
    time.sleep(3.5)  # the limit ended with the invocation: no alarm, no watchdog


def test_a_request_stopped_half_way_does_not_leave_its_answer_for_the_next(tmp_path) -> None:
    """A timeout landing while a handler waited for the local endpoint's answer left that answer on the worker's
    connection: each later request of the worker read the one before's answer (S3 objects under other keys)."""
    import signal

    from granulemap.local.channel import ChannelClient, ChannelServer

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            time.sleep(1.0)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"answer to {environ['PATH_INFO']}".encode()]

    class Stopped(BaseException):
        pass

    def stop(signum, frame):
        raise Stopped

    server = ChannelServer(("127.0.0.1", 1), app)
    client = ChannelClient(server.path, "http://local")
    before = signal.signal(signal.SIGALRM, stop)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(Stopped):
            client._exchange("GET", "http://local/slow", [], b"")
        time.sleep(1.2)  # the slow answer has been written by now
        for key in ("object-A", "object-B"):
            assert client._exchange("GET", f"http://local/{key}", [], b"")[2] == f"answer to /{key}".encode()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)
        server.close()


def test_an_alarm_after_its_invocation_has_ended_does_nothing(limited) -> None:
    worker._raise_timed_out(14, None)  # not armed: returns (an invocation that has just ended is not failed)


def test_without_a_timeout_there_is_no_limit(limited, tmp_path) -> None:
    code = _handler(tmp_path, "    time.sleep(1.2)\n    return 'done'\n")
    assert worker.invoke(_spec(code, None), {}) == ('"done"', False, "")


STUCK_RECIPE = itemised_recipe("test-stuck", 12, """
    import signal
    import time

    if item.id == "item-0":  # code that signals cannot reach: its worker ends after the grace
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(120)
    if item.id == "item-11":  # Python code that never ends: the alarm stops it (the last to start)
        while True:
            try:
                time.sleep(0.01)
            except Exception:
                pass
    time.sleep(1)
    return {"item": item.id}
""", description="Test: of twelve items, two never end")


@pytest.fixture
def stuck(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    change_in_template(monkeypatch, "ProcessorFunction", timeout=5)  # template.yaml's 900; an item that ends: ~1.1 s
    yield from install_recipe_package(tmp_path / "site", monkeypatch, "granulemap_test_stuck", STUCK_RECIPE,
                                      {"test-stuck": "granulemap_test_stuck:recipe"})


def test_a_run_fails_the_items_past_the_processors_timeout_and_the_others_succeed(stuck, tmp_path: Path) -> None:
    """Only the two items that never end time out: the others, whether under way or waiting for a worker (for more
    than the timeout) in the pool that the stuck worker's end broke (retried), waiting in the pool retired after the
    other timeout (run in the next pool), or queued behind, succeed."""
    from granulemap.local.run import run_locally

    empty = tmp_path / "no-granules"
    empty.mkdir()
    doc = {"recipe": "test-stuck", "start": "2020-01-01", "end": "2020-01-01", "source": str(empty),
           "tolerated_failure_percentage": 50}
    summary = run_locally(doc, tmp_path / "out", workers=2, progress=False, timeout=240)  # hung for ever before
    assert summary["status"] == "SUCCEEDED", summary["message"]
    assert sorted((f["item"], f["error"], f["cause"]) for f in summary["failures"]) == [
        ("item-0", "Sandbox.Timedout", "Task timed out after 5.00 seconds"),
        ("item-11", "Sandbox.Timedout", "Task timed out after 5.00 seconds")]
    assert summary["items"] == {"total": 12, "succeeded": 10, "skipped": 0, "failed": 2}
    log = (tmp_path / "out" / "logs" / "functions.log").read_text()
    assert "Task timed out after 5.00 seconds (ProcessorFunction), stopped at:" in log  # item-11's, with its place
    assert "granulemap_test_stuck.py" in log
    assert "did not stop 5 s after its timeout (blocked in native code): its worker process ends" in log  # item-0's


GIL_RECIPE = itemised_recipe("test-gil", 4, """
    import ctypes
    import signal
    import time

    if item.id == "item-0":  # native code that holds the GIL (a PyDLL call) and that no alarm reaches
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        ctypes.PyDLL(None).sleep(120)
    time.sleep(0.5)
    return {"item": item.id}
""", description="Test: of four items, one holds the GIL for two minutes")


@pytest.fixture
def holds_the_gil(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from granulemap.local import engine

    change_in_template(monkeypatch, "ProcessorFunction", timeout=5)  # an item that ends takes ~0.6 s
    monkeypatch.setattr(engine, "STUCK_GRACE_S", 4.0)  # the engine's backstop: 4 s after the timeout, not 15
    yield from install_recipe_package(tmp_path / "site", monkeypatch, "granulemap_test_gil", GIL_RECIPE,
                                      {"test-gil": "granulemap_test_gil:recipe"})


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the engine's backstop needs Linux's /proc")
def test_a_worker_stuck_in_native_code_that_holds_the_gil_is_ended_by_the_engine(holds_the_gil, tmp_path) -> None:
    """The worker's own watchdog is a thread of its process: native code that holds the GIL stops it too, and the
    local run waited for that item for ever (here two minutes). The engine ends that worker, the item fails as timed
    out, and the others, in the pool that the worker's end broke, are retried and succeed."""
    from granulemap.local.run import run_locally

    empty = tmp_path / "no-granules"
    empty.mkdir()
    doc = {"recipe": "test-gil", "start": "2020-01-01", "end": "2020-01-01", "source": str(empty),
           "tolerated_failure_percentage": 50}
    began = time.monotonic()
    summary = run_locally(doc, tmp_path / "out", workers=2, progress=False, timeout=240)
    assert time.monotonic() - began < 100  # not the two minutes of the item's sleep
    assert summary["status"] == "SUCCEEDED", summary["message"]
    assert [(f["item"], f["error"], f["cause"]) for f in summary["failures"]] == [
        ("item-0", "Sandbox.Timedout", "Task timed out after 5.00 seconds")]
    assert summary["items"] == {"total": 4, "succeeded": 3, "skipped": 0, "failed": 1}
    log = (tmp_path / "out" / "logs" / "functions.log").read_text()
    assert re.search(r"invocation \d+ did not stop 4 s after its timeout and its worker process \(\d+\) did not end "
                     r"itself \(native code holding the GIL\): ended", log), log[-3000:]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the engine's backstop needs Linux's /proc")
def test_the_engines_backstop_ends_only_the_process_that_wrote_the_record(tmp_path: Path) -> None:
    """A record outlives its worker (one that ended itself, crashed, was killed): its number may be another
    process's since. Only the process that wrote it (its pid and its start) is ended, and the others' records are
    forgotten, not acted on."""
    from granulemap.local.engine import LocalEngine

    marks = tmp_path / "marks"
    marks.mkdir()
    past = time.monotonic() - 100  # the deadline, long gone

    def record(pid: int, invocation: int, started: str) -> None:
        Path(worker.armed_file(str(marks), pid)).write_text(
            worker.armed_record(past, str(invocation), started).ljust(worker.ARMED_RECORD))

    other = subprocess.Popen(["sleep", "60"])  # its number, an earlier process's record
    stuck = subprocess.Popen(["sleep", "60"])  # the process that wrote its record
    ended = subprocess.Popen(["true"])
    ended.wait()
    try:
        record(other.pid, 7, str(int(worker.process_started(other.pid)) - 1))
        record(ended.pid, 8, "12345")
        record(stuck.pid, 9, worker.process_started(stuck.pid))
        engine = LocalEngine(workers=1, log_path=tmp_path / "functions.log")  # not started: only its backstop
        backstop = threading.Thread(target=engine._end_stuck_workers, args=(str(marks),))
        backstop.start()
        assert stuck.wait(timeout=30) == -9
        time.sleep(2.5)  # another look or two
        engine._stopping.set()
        backstop.join(timeout=10)
        assert other.poll() is None
    finally:
        other.kill()
        stuck.kill()
    assert sorted(p.name for p in marks.iterdir()) == ["9"]  # the invocation marked timed out; records gone
    log = (tmp_path / "functions.log").read_text()
    assert log.count("[ERROR] invocation") == 1 and f"invocation 9 did not stop" in log and f"({stuck.pid})" in log
