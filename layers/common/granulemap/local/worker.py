"""Runs Lambda handlers in a worker process, the way the Lambda runtime would: the function's environment
variables, its module loaded from its CodeUri, errors returned as a Lambda error payload (errorType, errorMessage)
so that the state machine's Retry and Catch match on the error's name.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import signal
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from granulemap.heap import VARIABLE as TUNABLES, parse_tunables

_base_env: dict[str, str] = {}
_function_env_keys: set[str] = set()
_modules: dict[str, ModuleType] = {}


@dataclass
class LocalLambdaContext:
    """The attributes of the Lambda context object that handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int
    invoked_function_arn: str
    aws_request_id: str
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = ""
    deadline: float | None = None
    """time.monotonic() at which the invocation times out (None: no limit)."""

    def get_remaining_time_in_millis(self) -> int:
        if self.deadline is None:
            return 900_000
        return max(0, int((self.deadline - time.monotonic()) * 1000))


class _TimedOut(BaseException):
    """Raised in a handler's thread when its function's Timeout has passed. A BaseException, so that the handler's
    own ``except Exception`` (a recipe failing one granule alone) does not take it for one of its errors."""


TIMEOUT_GRACE_S = 5.0
"""How long after its deadline a timed-out invocation that the alarm could not interrupt (blocked in native code
that ignores signals) may go on before its worker process ends (``_Watchdog``, which looks every
``TIMEOUT_WATCH_S``)."""
TIMEOUT_WATCH_S = 1.0
MARKS = "marks"
"""The key of a function's spec naming the engine's folder for its workers' marks: the file a worker that ends
itself past an invocation's timeout leaves, named by the invocation (its ``invocation`` key: how the engine tells it
from the other invocations its pool's end fails, ``timed_out_mark``), each worker's ``armed_file``, and the
``over_memory_log``."""
RETIRED = ("", True, "granulemap: this worker process has retired")
"""What a worker process answers to every invocation after one of its invocations timed out: Lambda resets the
execution environment after a timeout (code stopped anywhere may have left its process's state half changed), so the
engine runs the invocation again in a new pool of workers."""


class _Watchdog:
    """A worker process's backstop for a timeout the alarm could not raise: ``TIMEOUT_GRACE_S`` after the deadline
    of an invocation still running, the process marks the invocation as timed out and ends, as Lambda ends the
    sandbox of a timed-out invocation. The engine answers that invocation as timed out and the other invocations under
    way in its pool as a dead worker's (retried). It looks every ``TIMEOUT_WATCH_S``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: tuple[float, str | None] | None = None
        self._stopped = threading.Event()
        self._said: tuple[int, str, int, str] | None = None  # (pid, folder, fd, start) of this process's armed_file
        threading.Thread(target=self._watch, name="granulemap-timeout-watch", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()

    def arm(self, deadline: float, mark: str | None) -> None:
        with self._lock:
            self._running = (deadline, mark)
        if mark is not None:
            self._say(mark, deadline)

    def disarm(self) -> None:
        with self._lock:  # not while _watch ends the process: an invocation that ends then has timed out
            running, self._running = self._running, None
        if running is not None and running[1] is not None:
            self._say(running[1], None)

    def _say(self, mark: str, deadline: float | None) -> None:
        """Tell the engine (``armed_file``, beside ``mark``) what this process runs now: the invocation ``mark`` names
        and its deadline, or nothing (None). Its backstop for a process in which this thread cannot run either
        (native code that holds the GIL)."""
        folder = os.path.dirname(mark)
        said = self._said
        if said is None or said[0] != os.getpid() or said[1] != folder:
            started = process_started(os.getpid())  # with the pid, which process this is (pids are reused)
            if started is None:  # no /proc (macOS): no backstop
                return
            with contextlib.suppress(OSError):
                said = self._said = (os.getpid(), folder, os.open(armed_file(folder, os.getpid()),
                                                                  os.O_WRONLY | os.O_CREAT, 0o600), started)
        if said is not None and said[0] == os.getpid():
            record = "-" if deadline is None else armed_record(deadline, os.path.basename(mark), said[3])
            with contextlib.suppress(OSError):
                os.pwrite(said[2], record.ljust(ARMED_RECORD).encode(), 0)

    def _watch(self) -> None:
        # Event.wait, not time.sleep: a test that replaces time.sleep (to skip backoff waits) in a process that has
        # enforced timeouts made this thread spin, and every test after it run many times slower.
        while not self._stopped.wait(TIMEOUT_WATCH_S):
            with self._lock:
                if self._running is None or time.monotonic() <= self._running[0] + TIMEOUT_GRACE_S:
                    continue
                mark = self._running[1]
                if mark is not None:
                    with contextlib.suppress(OSError):
                        open(mark, "x").close()
                os.write(2, f"[ERROR] the invocation did not stop {TIMEOUT_GRACE_S:g} s after its timeout (blocked "
                            "in native code): its worker process ends\n".encode())
                os._exit(1)


ARMED_RECORD = 80
"""Bytes of a worker's ``armed_file``: "<deadline> <invocation> <process start>" or "-", padded with spaces."""


def process_started(pid: int) -> str | None:
    """When process ``pid`` started (Linux's /proc: clock ticks since boot), which tells it from a later process
    given the same number; None without /proc, or with no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def armed_file(folder: str, pid: int) -> str:
    """The file in the engine's marks folder where worker ``pid`` says which invocation it runs, and until when
    (time.monotonic(), the machine's: the engine reads the same clock)."""
    return os.path.join(folder, f"armed-{pid}")


def armed_record(deadline: float, invocation: str, started: str) -> str:
    """What an ``armed_file`` holds while its worker runs ``invocation`` until ``deadline``: "<deadline> <invocation>
    <process start>" (``read_armed``)."""
    return f"{deadline:.6f} {invocation} {started}"


def read_armed(path: str) -> tuple[float, str, str] | None:
    """(deadline, invocation, process start) from an ``armed_file``; None when its worker runs nothing under a time
    limit."""
    try:
        with open(path) as f:
            deadline, invocation, started = f.read(ARMED_RECORD).split()
        return float(deadline), invocation, started
    except (OSError, ValueError):
        return None


def timed_out_mark(spec: dict[str, Any]) -> str | None:
    """The file a worker leaves when it ends itself past the timeout of the invocation ``spec`` describes."""
    folder, invocation = spec.get(MARKS), spec.get("invocation")
    return None if folder is None or invocation is None else os.path.join(folder, str(invocation))


_watchdog: _Watchdog | None = None
"""Set in a worker process that enforces its functions' Timeout (``enforce_timeouts``)."""
_armed = False
"""An invocation's time limit is running: the alarm's handler raises ``_TimedOut`` only then (an alarm handled
just after the invocation ended does nothing)."""
_retired = False
"""One of this process's invocations timed out: it runs no other (``RETIRED``)."""


def _raise_timed_out(signum: int, frame: Any) -> None:
    if _armed:
        raise _TimedOut


def enforce_timeouts() -> Any:
    """From now on, an invocation on this process's main thread that runs past its function's Timeout is stopped
    (SIGALRM) and fails as Lambda's does, ``Sandbox.Timedout``, and the process runs no other invocation
    (``RETIRED``): a local run goes on with its other items instead of waiting for ever. Returns what undoes it (for
    a test in its own process)."""
    global _watchdog
    before = signal.signal(signal.SIGALRM, _raise_timed_out)
    if _watchdog is None:
        _watchdog = _Watchdog()

    def undo() -> None:
        global _watchdog, _retired
        _disarm()
        signal.signal(signal.SIGALRM, before)
        if _watchdog is not None:
            _watchdog.stop()
        _watchdog = None
        _retired = False

    return undo


TIMED_OUT = "Sandbox.Timedout"
"""The errorType of a timed-out invocation's payload, as current Lambda runtimes give it (AWS's Step Functions guide
names the error of a timeout Lambda.Unknown; the state machine's Retry lists neither, and its Catch takes both)."""


def timed_out(seconds: float) -> tuple[str, bool, str]:
    """The result (payload, errored, logs) of an invocation that ran past its function's Timeout of ``seconds``:
    Lambda's error payload for it."""
    return json.dumps({"errorType": TIMED_OUT,
                       "errorMessage": f"Task timed out after {seconds:.2f} seconds"}), True, ""


def _limited() -> bool:
    """Invocations here have time limits: ``enforce_timeouts`` was called, and this is the main thread (the one
    signals reach; an ``in_process`` engine's handler thread has none)."""
    return _watchdog is not None and threading.current_thread() is threading.main_thread()


def _arm(spec: dict[str, Any], deadline: float | None) -> None:
    """Start the time limit of the invocation ``spec`` describes, which ends at ``deadline`` (time.monotonic())."""
    global _armed
    if deadline is None or _watchdog is None or not _limited():
        return
    _watchdog.arm(deadline, timed_out_mark(spec))
    _armed = True
    signal.setitimer(signal.ITIMER_REAL, max(deadline - time.monotonic(), 1e-6))


def _disarm() -> None:
    """End the time limit. The alarm's ``_TimedOut`` may land in here, before ``_armed`` is cleared (not after: the
    handler raises only while it is set): ``invoke`` then calls this again as it handles the timeout."""
    global _armed
    _armed = False
    if _limited():
        signal.setitimer(signal.ITIMER_REAL, 0)
        if _watchdog is not None:
            _watchdog.disarm()


def over_memory_log(folder: str) -> str:
    """The file (JSON lines) in the engine's marks folder where a worker process records each invocation whose peak
    resident memory went over the function's MemorySize (``_MemoryWatch``): Lambda would have ended it as
    Runtime.OutOfMemory; a local run names them in its notes."""
    return os.path.join(folder, "over-memory.jsonl")


class _MemoryWatch:
    """Each invocation's peak resident memory in a worker process (Linux): the peak (VmHWM) is reset as the
    invocation starts (/proc/self/clear_refs) and read as it ends, about 20 µs in all. It counts what the worker held
    before the call too (the libraries it preloads for every recipe, which a Lambda function's own imports may not
    all need), so it errs high; the invocation's starting size is kept to say so."""

    def __init__(self) -> None:
        self._pid = 0
        self._reset = self._status = -1

    def _open(self) -> bool:
        if self._pid != os.getpid():  # opened by this process, not the one it was forked from
            self._pid = os.getpid()
            try:
                self._reset = os.open("/proc/self/clear_refs", os.O_WRONLY)
                self._status = os.open("/proc/self/status", os.O_RDONLY)
            except OSError:  # not Linux, or /proc not writable: no measurement
                self._reset = self._status = -1
        return self._status >= 0

    def _kb(self, field: bytes) -> int:
        status = os.pread(self._status, 8192, 0)
        at = status.index(field) + len(field)
        return int(status[at:status.index(b"kB", at)])

    def start(self) -> int | None:
        """Reset the peak; the resident memory now, in kB (None: not measured here)."""
        if not self._open():
            return None
        try:
            os.write(self._reset, b"5")
            return self._kb(b"VmRSS:")
        except (OSError, ValueError):
            return None

    def peak(self) -> int | None:
        """The peak resident memory since ``start``, in kB."""
        try:
            return self._kb(b"VmHWM:") if self._status >= 0 else None
        except (OSError, ValueError):
            return None


_memory = _MemoryWatch()
_watch_memory = False
"""Set in a worker process of the engine's pool (``init_worker``): a thread of the caller's process (an
``in_process`` engine) shares that process's memory with whatever else it runs."""


def _record_memory(spec: dict[str, Any], event: Any, started_kb: int) -> None:
    """Record the invocation if its peak went over its function's MemorySize (``over_memory_log``), and say so in the
    function's log (locally logs/functions.log), as Lambda's REPORT line would show Max Memory Used."""
    peak_kb = _memory.peak()
    folder = spec.get(MARKS)
    if peak_kb is None or folder is None or peak_kb <= spec["memory_size"] * 1024:
        return
    item = event.get("item") if isinstance(event, dict) else None
    record = {"function": spec["function_name"], "item": item.get("id") if isinstance(item, dict) else None,
              "peak_mb": round(peak_kb / 1024), "memory_mb": spec["memory_size"], "before_mb": round(started_kb / 1024)}
    print(f"[WARNING] {spec['function_name']}: this invocation's peak resident memory was {record['peak_mb']} MB, "
          f"over its MemorySize of {spec['memory_size']} MB (Lambda: Runtime.OutOfMemory); {record['before_mb']} MB "
          "of it was held before the call", file=sys.stderr)
    with contextlib.suppress(OSError):
        with open(over_memory_log(folder), "a") as log:
            log.write(json.dumps(record) + "\n")


def init_worker(base_env: dict[str, str], log_path: str | None, own_process: bool = False) -> None:
    """Process initializer: the local AWS endpoint and the engine's credentials; stdout/stderr to the run's log file.

    ``own_process``: this is a worker process of the engine's pool (not a thread of the caller's process), which may
    therefore end without tearing down its modules (``_exit_without_finalizing``), and ignores SIGINT: a Ctrl-C in
    a terminal reaches every process of the command, and the engine, interrupted, stops its workers itself (each
    dying of its own KeyboardInterrupt printed a traceback per worker, and broke the pool under moto's threads);
    and it ends by itself when the engine's process has ended without stopping it (``end_with_parent``)."""
    global _base_env, _watch_memory
    _base_env = dict(base_env)
    os.environ.update(base_env)
    from granulemap.local.channel import install_client_hook

    install_client_hook()
    if own_process:
        _watch_memory = True
        enforce_timeouts()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        atexit.register(_exit_without_finalizing)
        end_with_parent()
    if log_path:
        send_output_to(log_path)


PARENT_WATCH_S = 1.0
"""How often a worker process looks whether its parent is still there."""


def end_with_parent(every_s: float = PARENT_WATCH_S) -> None:
    """End this worker process soon after its parent: the engine's process (a spawned worker), or the fork server
    that forked it, which ends when the engine's process does once no worker holds it (``_release_fork_server``).

    A worker waits for work from the engine, and the fork server for the end of every process it forked, both for
    ever: an engine ended without stopping them (by SIGKILL, or a crash) left them running, about 150 MB each, at
    every such end. A process whose parent has ended has a new one (the parent's end, not its reaping, moves it)."""
    _release_fork_server()
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(1)

    threading.Thread(target=watch, name="granulemap-parent-watch", daemon=True).start()


def _release_fork_server() -> None:
    """Close this process's end of its fork server's "alive" pipe. The server ends when every process holding that
    end has closed it (``multiprocessing.forkserver``): the engine, which has it from starting the server, and each
    forked process, which multiprocessing hands one so that it could ask the server for processes of its own (a
    worker never does). Held by the workers, the server outlived an engine killed outright, and so did they."""
    try:
        from multiprocessing import forkserver
    except ImportError:  # no fork server on this platform: the workers were spawned by the engine itself
        return
    fd = forkserver._forkserver._forkserver_alive_fd  # set in a forked process only (multiprocessing's _serve_one)
    if fd is not None:
        forkserver._forkserver._forkserver_alive_fd = None
        with contextlib.suppress(OSError):
            os.close(fd)


def send_output_to(log_path: str) -> None:
    """This process's stdout and stderr (its own and its native libraries') appended to ``log_path``."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _exit_without_finalizing() -> None:
    """The last exit handler of a worker process (registered first): flush what it wrote, then leave at once.

    A spawned process ends with a normal interpreter exit, and with the handlers' libraries loaded, tearing down its
    modules took 0.2-0.4 s per process (a local run waits for it at the end); nothing of a worker's is left to save
    after its output is flushed and the handlers that ran after this was registered (atexit runs them first). Exit
    handlers registered before the pool's initializer (coverage.py's subprocess hook, say) do not run, and the exit
    status is 0: the pool reads neither."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


PROCESS_START_VARIABLES = (TUNABLES,)
"""Variables of a function's environment that act only when its process starts: glibc reads GLIBC_TUNABLES before
Python runs (template.yaml says why it is set). Lambda starts a function's process with its environment; the local
engine starts its worker processes with these (``process_start_environment``), since ``invoke`` sets the rest of a
function's environment only per invocation, too late for them."""


def process_start_environment(environments: list[dict[str, str]],
                              current: dict[str, str] | None = None) -> dict[str, str]:
    """The ``PROCESS_START_VARIABLES`` the functions' environments give, which one pool of worker processes shared
    by every function needs them all to give alike (template.yaml sets them in Globals). ``current`` (this
    process's environment) keeps its own GLIBC_TUNABLES entries unless the template sets the same tunable."""
    found: dict[str, str] = {}
    for name in PROCESS_START_VARIABLES:
        values = {env.get(name) for env in environments}
        if len(values) > 1:
            raise ValueError(f"template.yaml: the functions set {name} differently ({sorted(map(str, values))}); "
                             "the local engine's workers serve every function and start with one value: set it in "
                             "Globals.Function.Environment")
        value = values.pop() if values else None
        if value is not None:
            found[name] = value
    mine = (current or {}).get(TUNABLES)
    if TUNABLES in found and mine:
        merged = {**parse_tunables(mine), **parse_tunables(found[TUNABLES])}
        found[TUNABLES] = ":".join(f"{k}={v}" for k, v in merged.items())
    return found


def _set_function_env(env: dict[str, str]) -> None:
    global _function_env_keys
    for key in _function_env_keys - env.keys():
        if key in _base_env:
            os.environ[key] = _base_env[key]
        else:
            os.environ.pop(key, None)
    os.environ.update(env)
    _function_env_keys = set(env)


def _load_handler(code_dir: str, handler: str) -> Any:
    module_name, _, func_name = handler.rpartition(".")
    path = os.path.join(code_dir, *module_name.split(".")) + ".py"
    module = _modules.get(path)
    if module is None:
        unique = "granulemap_local_fn_" + os.path.basename(code_dir.rstrip("/"))
        spec = importlib.util.spec_from_file_location(unique, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load handler module {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _modules[path] = module
    return getattr(module, func_name)


def invoke_nested(spec: dict[str, Any], event: Any) -> tuple[str, bool, str]:
    """``invoke`` for an invocation that another handler waits for (the engine's ``_nested_pool``). On a thread of
    the waiting handler's own process (an ``in_process`` engine) that handler's environment is put back after."""
    global _function_env_keys
    environ, keys = dict(os.environ), set(_function_env_keys)
    try:
        return invoke(spec, event)
    finally:
        for key in os.environ.keys() - environ.keys():
            os.environ.pop(key, None)
        for key, value in environ.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
        _function_env_keys = keys


def invoke(spec: dict[str, Any], event: Any) -> tuple[str, bool, str]:
    """One invocation: (payload JSON, errored, logs), the triple moto's Lambda returns. In a worker process of the
    engine's pool, one that runs past ``spec["timeout"]`` seconds fails as ``Sandbox.Timedout``
    (``enforce_timeouts``)."""
    global _retired
    if _retired:
        return RETIRED
    timeout = spec.get("timeout")
    _set_function_env(
        {
            **spec["environment"],
            "AWS_LAMBDA_FUNCTION_NAME": spec["function_name"],
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec["memory_size"]),
        }
    )
    context = LocalLambdaContext(
        function_name=spec["function_name"],
        memory_limit_in_mb=spec["memory_size"],
        invoked_function_arn=spec["arn"],
        aws_request_id=str(uuid.uuid4()),
        deadline=None if timeout is None else time.monotonic() + timeout,
    )
    started_kb = _memory.start() if _watch_memory else None
    try:
        try:
            _arm(spec, context.deadline)
            handler = _load_handler(spec["code_dir"], spec["handler"])
            result = handler(event, context)
        finally:
            _disarm()
            if started_kb is not None:
                _record_memory(spec, event, started_kb)
        return json.dumps(result), False, ""
    except _TimedOut as exc:
        _disarm()  # again, in case the timeout landed in the first one
        _retired = True
        # As Lambda's log says it (here FOLDER/logs/functions.log), and where the code was when it was stopped.
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {context.aws_request_id} Task timed out after "
              f"{timeout:.2f} seconds ({spec['function_name']}), stopped at:\n"
              f"{''.join(traceback.format_tb(exc.__traceback__))}", file=sys.stderr)
        return timed_out(timeout)
    except (Exception, SystemExit, KeyboardInterrupt) as exc:  # noqa: BLE001 - every error becomes a Lambda error
        # payload, as in AWS: the whole stack trace in the payload, and the error with its traceback in the function's
        # log (here FOLDER/logs/functions.log). Code that ended its process (sys.exit) fails the invocation as
        # Runtime.ExitError, as Lambda's runtime says when it exits; here the worker goes on serving (not caught, it
        # ended the engine's thread that waited for it, and the run hung).
        frames = traceback.format_tb(exc.__traceback__)
        if isinstance(exc, Exception):
            error, said = type(exc).__name__, str(exc)
            message = said
        else:
            error, said = "Runtime.ExitError", f"{type(exc).__name__}({', '.join(map(repr, exc.args))})"
            message = f"the function's code ended its process: {said}, raised at {frames[-1].strip().splitlines()[0]}"
        payload = {"errorType": error, "errorMessage": message, "stackTrace": frames}
        print(f"[ERROR] {spec['function_name']} {error}: {said}\n"
              f"{''.join(traceback.format_exception(exc, chain=False))}", file=sys.stderr)
        return json.dumps(payload), True, ""
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
