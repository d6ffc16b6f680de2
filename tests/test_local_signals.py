"""A local run ended by a signal leaves no process behind.

``granulemap run`` runs its items in worker processes forked from a fork server of its own. Ctrl-C stopped them, but a
plain ``kill`` (SIGTERM: a batch scheduler, an editor's stop button) ended only the command's process, and SIGKILL
can end nothing else: the workers and the fork server, about 300 MB, ran on for ever, more at every such end. Now
SIGTERM (and SIGHUP) stops the run as Ctrl-C does, and a worker ends by itself once its engine's process is gone
(granulemap.local.worker.end_with), after which the fork server ends too.

The run is of a recipe whose items sleep (installed the way a user's recipe is, README tutorial), so that the signal
comes while every worker is busy; every process of the run is found by a variable only its environment holds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import install_recipe_package, itemised_recipe

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds processes through /proc")]

ROOT = Path(__file__).resolve().parent.parent
MARK = "GRANULEMAP_TEST_RUN_MARK"

SLOW_RECIPE = itemised_recipe("test-slow", 8, """
    import time
    from pathlib import Path

    (Path(params.started) / item.id).touch()
    time.sleep(60)
    return {"item": item.id}
""", description="Test: items that sleep for a minute, each saying it started", params="started: str")


@pytest.fixture
def slow_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The recipe, installed as pip installs a user's (on PYTHONPATH, which the command's processes inherit)."""
    yield from install_recipe_package(tmp_path / "site", monkeypatch, "granulemap_test_slow", SLOW_RECIPE,
                                      {"test-slow": "granulemap_test_slow:recipe"})


def _processes_marked(mark: str) -> list[int]:
    """The processes whose environment holds ``MARK=mark``: the command, its fork server and its workers."""
    found = []
    needle = f"{MARK}={mark}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # ended meanwhile, or not ours to read
            continue
        if needle in environ.split(b"\0") and state != "Z":  # a zombie has ended: only its exit status is left
            found.append(int(entry.name))
    return found


def _start_slow_run(tmp_path: Path, mark: str) -> tuple[subprocess.Popen[str], Path]:
    empty, started = tmp_path / "no-granules", tmp_path / "started"
    empty.mkdir()
    started.mkdir()
    env = {**os.environ, MARK: mark}
    run = subprocess.Popen(
        [sys.executable, "-m", "granulemap.cli", "run", "--recipe", "test-slow", "--start", "2020-01-01",
         "--end", "2020-01-01", "--source", str(empty), "--out", str(tmp_path / "out"), "--param",
         f"started={started}", "--workers", "2", "--max-concurrency", "2", "--quiet"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return run, started


def _wait_until_both_workers_are_busy(run: subprocess.Popen[str], started: Path) -> None:
    deadline = time.monotonic() + 180
    while len(list(started.iterdir())) < 2:
        if run.poll() is not None or time.monotonic() > deadline:
            run.kill()
            _, err = run.communicate()
            pytest.fail(f"the run never had two items going (exit {run.returncode}): {err[-3000:]}")
        time.sleep(0.1)


def _wait_until_none_left(mark: str, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := _processes_marked(mark)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _kill_left(pids: list[int]) -> None:
    for pid in pids:  # what a failing test found: not left to run on after it
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_run_ended_by_sigterm_or_sighup_stops_its_workers_and_fork_server_as_ctrl_c_does(
        slow_recipe, tmp_path: Path, signum: int) -> None:
    mark = uuid.uuid4().hex
    run, started = _start_slow_run(tmp_path, mark)
    _wait_until_both_workers_are_busy(run, started)
    running = _processes_marked(mark)
    assert len(running) >= 4, running  # the command, the fork server and two workers: found as they are looked for
    run.send_signal(signum)
    try:
        _, err = run.communicate(timeout=60)  # not the 60 s the items sleep: the workers are stopped, not waited for
    except subprocess.TimeoutExpired:
        run.kill()
        pytest.fail("the run did not end within 60 s of the signal")
    left = _wait_until_none_left(mark, 10)
    _kill_left(left)
    assert run.returncode == 128 + signum, err[-3000:]
    assert f"granulemap: stopped by {signal.Signals(signum).name} (the same command again resumes" in err
    assert "Traceback" not in err
    assert left == []


def test_a_run_killed_outright_leaves_no_worker_or_fork_server_running(slow_recipe, tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    run, started = _start_slow_run(tmp_path, mark)
    _wait_until_both_workers_are_busy(run, started)
    others = [pid for pid in _processes_marked(mark) if pid != run.pid]
    assert len(others) >= 3, others  # the fork server and two workers, busy for another minute
    run.kill()  # SIGKILL: the command can do nothing about it
    try:
        run.communicate(timeout=60)  # its output's pipes close when the last process holding them has ended
    except subprocess.TimeoutExpired:
        pass
    left = _wait_until_none_left(mark, 15)  # a worker looks for its parent every second
    _kill_left(left)
    assert left == []
