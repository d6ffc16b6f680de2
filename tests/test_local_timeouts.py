"""The local engine holds each invocation to its function's Timeout (template.yaml), as Lambda does: an item whose
recipe loops for ever fails as ``Sandbox.Timedout`` and the run goes on with the others. Before, the local run waited
for ever (the context even told the handler it had 900 s left, whatever its Timeout)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import install_recipe_package, itemised_recipe
from granulemap.local import worker


def _spec(code_dir: Path, timeout: float | None) -> dict:
    return {"function_name": "TestFunction", "code_dir": str(code_dir), "handler": "app.handler",
            "environment": {}, "memory_size": 128, "arn": "arn:aws:lambda:us-west-2:123456789012:function:Test",
            "timeout": timeout}


@pytest.fixture
def limited() -> Iterator[None]:
    """Timeouts enforced in this (the test's main) thread, as in a worker process of the engine."""
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


def test_an_invocation_past_its_timeout_fails_as_lambdas_does_and_the_next_one_runs(limited, tmp_path) -> None:
    code = _handler(tmp_path, (
        "    if event.get('loop'):\n"
        "        while True:\n"
        "            try:\n"  # a handler's own `except Exception` does not take the timeout for its error
        "                time.sleep(0.01)\n"
        "            except Exception:\n"
        "                pass\n"
        "    return {'left_ms': context.get_remaining_time_in_millis()}\n"))
    began = time.monotonic()
    payload, errored, _ = worker.invoke(_spec(code, 1), {"loop": True})
    took = time.monotonic() - began
    assert errored
    assert json.loads(payload) == {"errorType": "Sandbox.Timedout", "errorMessage": "Task timed out after 1.00 seconds"}
    assert 1.0 <= took < 1.0 + worker.TIMEOUT_GRACE_S

    payload, errored, _ = worker.invoke(_spec(code, 3), {})
    assert not errored
    assert 2_000 < json.loads(payload)["left_ms"] <= 3_000  # the function's own Timeout, not a fixed 900 s
    time.sleep(1.5)  # no alarm left from either invocation: it would raise here, outside any invocation


def test_an_alarm_after_its_invocation_has_ended_does_nothing(limited) -> None:
    worker._raise_timed_out(14, None)  # not armed: returns (an invocation that has just ended is not failed)


def test_without_a_timeout_there_is_no_limit(limited, tmp_path) -> None:
    code = _handler(tmp_path, "    time.sleep(1.2)\n    return 'done'\n")
    assert worker.invoke(_spec(code, None), {}) == ('"done"', False, "")


STUCK_RECIPE = itemised_recipe("test-stuck", 4, """
    import signal
    import time

    if item.id == "item-1":  # Python code that never ends: the alarm stops it
        while True:
            try:
                time.sleep(0.01)
            except Exception:
                pass
    if item.id == "item-2":  # code that signals cannot reach: its worker ends after the grace
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(120)
    return {"item": item.id}
""", description="Test: of four items, two never end")


@pytest.fixture
def stuck(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from granulemap.local import engine

    read = engine.read_local_template

    def processor_timeout_of_3_s(*args, **kwargs):
        template = read(*args, **kwargs)
        processor = template.functions["ProcessorFunction"]
        assert processor.timeout == 900  # template.yaml's: the test shortens it
        template.functions["ProcessorFunction"] = dataclasses.replace(processor, timeout=3)
        return template

    monkeypatch.setattr(engine, "read_local_template", processor_timeout_of_3_s)
    yield from install_recipe_package(tmp_path / "site", monkeypatch, "granulemap_test_stuck", STUCK_RECIPE,
                                      {"test-stuck": "granulemap_test_stuck:recipe"})


def test_a_run_fails_the_items_past_the_processors_timeout_and_finishes(stuck, tmp_path: Path) -> None:
    from granulemap.local.run import run_locally

    empty = tmp_path / "no-granules"
    empty.mkdir()
    doc = {"recipe": "test-stuck", "start": "2020-01-01", "end": "2020-01-01", "source": str(empty),
           "tolerated_failure_percentage": 50}
    summary = run_locally(doc, tmp_path / "out", workers=2, progress=False, timeout=240)  # hung for ever before
    assert summary["status"] == "SUCCEEDED", summary["message"]
    assert summary["items"] == {"total": 4, "succeeded": 2, "skipped": 0, "failed": 2}
    assert sorted((f["item"], f["error"], f["cause"]) for f in summary["failures"]) == [
        ("item-1", "Sandbox.Timedout", "Task timed out after 3.00 seconds"),
        ("item-2", "Sandbox.Timedout", "Task timed out after 3.00 seconds")]
    log = (tmp_path / "out" / "logs" / "functions.log").read_text()
    assert "Task timed out after 3.00 seconds (ProcessorFunction), stopped at:" in log  # item-1's, with its place
    assert "granulemap_test_stuck.py" in log
    assert "did not stop 5 s after its timeout (blocked in native code): its worker process ends" in log  # item-2's
