"""The local engine: statemachine/pipeline.asl.json executed by moto's Step Functions engine, offline.

- A moto server on 127.0.0.1 emulates S3, Lambda, SSM, IAM and Step Functions; its Step Functions engine really
  executes the state machine (Map in DISTRIBUTED mode, ItemReader, Retry, Catch, MaxConcurrency).
- moto's Lambda would run code in Docker. We replace its one entry point, ``LambdaFunction._invoke_lambda``, so each
  invocation runs the real handler from functions/*/app.py, with the environment template.yaml gives that function,
  in a pool of worker processes: per-item work is CPU bound, and this way a local run uses every core. Each
  invocation is held to its function's Timeout, failing as Lambda's does (granulemap/local/worker.py; not in an
  ``in_process`` engine, whose handlers run on a thread). The workers
  are forked from a fork server of the engine's own that imported the handlers' libraries once, while this process
  started moto (granulemap/local/warmfork.py, granulemap/local/preload.py). The engine's
  Lambda tasks reach the same dispatcher directly (its ``boto_client_for("lambda")`` is replaced), skipping an HTTP
  round trip through the moto server and a new boto3 client per task; errors still come back as Lambda error payloads.
  What reaches moto's Lambda API instead is an invocation a handler makes and waits for (a Processor asking
  FetchCredentials to refresh the credentials): it runs in a pool of its own (one worker), as in the pool it could
  wait for ever for a worker held by the handler waiting for it. Such an invocation may not itself invoke another.
- The handlers' boto3 requests to the emulated AWS reach the moto server's application over a local socket
  (granulemap/local/channel.py) instead of its HTTP port, and a few pure moto functions are memoized
  (granulemap/local/speedups.py): the same answers for less of this process's CPU per item.
- Nothing here re-implements the workflow: the engine only creates the resources the template describes.
"""

from __future__ import annotations

import contextlib
import gc
import io
import itertools
import json
import logging
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from concurrent.futures import CancelledError, Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import boto3

from granulemap import layout
from granulemap.errors import disk_advice
from granulemap.storage import LOCK_SUFFIX
from granulemap.local import warmfork, worker
from granulemap.local.channel import CHANNEL_ENV
from granulemap.local.mirror import StateNotKept
from granulemap.local.template import LocalTemplate, read_local_template, substitute_definition
from granulemap.models import CatalogRef
from granulemap.settings import DAAC_REGION

_RECURSION_LIMIT = 1_000_000
"""Frames allowed in the engine process (see LocalEngine.__enter__): about one per Map item a worker thread takes."""
REGION = DAAC_REGION  # where the stack runs in AWS
ACCOUNT = "123456789012"
LOCAL_STACK_NAME = "granulemap-local"
LOCAL_BUCKET = "granulemap-local"
TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}
USER_AWS_PROFILE = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE")
"""The user's profile variables, which botocore reads in every session: unset while an engine runs."""
_ENGINE_STOPPED = json.dumps({"errorType": "Lambda.ServiceException",
                              "errorMessage": "the local engine has stopped"}), True, ""
_WORKER_DIED = json.dumps({"errorType": "Lambda.ServiceException",
                           "errorMessage": "the local worker process died; restarted"}), True, ""
"""Invocation results (payload, errored, logs) the dispatcher answers itself, as Lambda errors."""


def project_root() -> Path:
    """The folder holding template.yaml: GRANULEMAP_ROOT, else the source checkout this package lives in."""
    env = os.environ.get("GRANULEMAP_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "template.yaml").is_file() and (parent / "statemachine").is_dir():
            return parent
    raise FileNotFoundError("cannot find template.yaml: run from a granulemap checkout or set GRANULEMAP_ROOT")


def execution_name() -> str:
    """A new local execution's name: unique, and sorted by start time."""
    return time.strftime("local-%Y%m%dT%H%M%S-") + uuid.uuid4().hex[:6]


def _engine_credentials() -> dict[str, str]:
    """Keys of this engine's emulated account, new for every engine: its moto server answers only requests signed
    with them (see _SignedWith)."""
    return {"AWS_ACCESS_KEY_ID": "GMLOCAL" + secrets.token_hex(7).upper(),
            "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30), "AWS_SESSION_TOKEN": secrets.token_urlsafe(30)}


class _SignedWith:
    """WSGI middleware of the moto server's TCP port: a request passes only if it is signed (SigV4 header, or a
    presigned URL) with ``access_key``. The port is open to every user of the machine; the key is in this
    process's and its workers' environments only."""

    def __init__(self, app: Any, access_key: str):
        self.app = app
        self._header, self._query = f"Credential={access_key}/", f"X-Amz-Credential={access_key}%2F"

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if (self._header in environ.get("HTTP_AUTHORIZATION", "")
                or self._query in environ.get("QUERY_STRING", "").replace("/", "%2F")):
            return self.app(environ, start_response)
        body = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code><Message>granulemap's "
                b"local engine answers only requests signed with its own credentials</Message></Error>")
        start_response("403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
        return [body]


def _route_own_calls(channel: Any, endpoints: list[str]) -> Any:
    """Answer in this process the requests this process sends to the moto server at ``endpoints``: moto's engine
    calling its own services (http://localhost:$MOTO_PORT, signed with moto's fixed test key, which the TCP port
    refuses), the engine's own clients, and handlers on threads of this process (``in_process``), which may sign
    with other keys (a run's temporary DAAC credentials). Returns what undoes it."""
    from granulemap.local.channel import InProcessClient, hook_sessions

    return hook_sessions([InProcessClient(channel, endpoint) for endpoint in endpoints])


STUCK_GRACE_S = worker.TIMEOUT_GRACE_S + 10.0
"""How long after its timeout an invocation may go on before the engine ends its worker process: past its own
watchdog's grace (``worker.TIMEOUT_GRACE_S``), which ends it unless native code holds the GIL."""


def _forget_ended_threads() -> None:
    """Let go of moto's Step Functions threads that have ended. moto keeps every thread it starts (two per item, one
    per Map concurrency slot of each run) in a list that nothing reads and nothing empties, across its resets: a
    Workspace's process grew by a couple of kB per item and a quarter of a MB per short run, for as long as it lived."""
    from moto.stepfunctions.parser.utils import TMP_THREADS

    TMP_THREADS[:] = [thread for thread in list(TMP_THREADS) if thread.is_alive()]


ENGINE_FOLDER = ".granulemap-engine"
"""In a Workspace's folder (beside state/), while its engine runs: the workers' marks (``_marks_folder``)."""


def _held_port() -> tuple[int, socket.socket | None]:
    """A port of 127.0.0.1 for the moto server, held from now until the server listens on it (a second or two later:
    its workers start with the endpoint first), so that no connection is given it meanwhile (a port found free and
    let go could be). Bound, not listening, with SO_REUSEADDR, which werkzeug's server sets too: on Linux it binds the
    port while this socket holds it. Elsewhere (macOS: a second bind needs SO_REUSEPORT, and werkzeug's server thread
    ended while moto's start waited for it for ever) it is let go at once, as before."""
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    held.bind(("127.0.0.1", 0))
    port = held.getsockname()[1]
    if not sys.platform.startswith("linux"):
        held.close()
        return port, None
    return port, held


def _dummy_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("app.py", "def handler(event, context):\n    raise RuntimeError('replaced by the local engine')\n")
    return buf.getvalue()


class LocalEngine:
    """Context manager: an emulated AWS account with the app's resources; runs executions of the real ASL file."""

    _active = False
    preload_modules = ("granulemap.local.preload",)
    """What the fork server imports before it forks the first worker."""
    worker_start = "warm-fork"
    """How worker processes start: "warm-fork" (forked from the engine's fork server, which imported the handlers'
    libraries once: the default where the platform has a fork server) or "spawn" (each a fresh interpreter that
    imports what its handlers need on first use: bench/function_memory_probe.py measures a cold Lambda that way)."""

    def __init__(
        self,
        root: Path | None = None,
        workers: int | None = None,
        log_path: Path | None = None,
        extra_env: dict[str, str] | None = None,
        parameter_overrides: dict[str, str] | None = None,
        state_dir: Path | None = None,
        in_process: bool = False,
    ):
        """``in_process``: run the handlers on one thread of this process instead of worker processes, one
        invocation at a time (they set the process's environment variables for their function), and leave stdout
        alone (``log_path`` then only gets the invocation record). For tests whose in-process fakes (`responses`,
        patched functions) must reach the handlers; a real run wants the default, every core."""
        self.root = root or project_root()
        self.in_process = in_process
        self.workers = 1 if in_process else (workers or os.cpu_count() or 1)
        self.log_path = log_path
        self.extra_env = extra_env or {}
        self.parameter_overrides = parameter_overrides or {}
        self.state_dir = state_dir
        self._mirror: Any = None
        self.bucket = LOCAL_BUCKET
        self.template: LocalTemplate
        self.state_machine_arn = ""
        self._server: Any = None
        self._channel: Any = None
        self._pool: Executor | None = None
        self._nested_pool: Executor | None = None
        """Runs the invocations a handler makes and waits for (a Processor asking FetchCredentials to refresh the
        credentials): in the pool they could wait for a worker that every waiting handler holds."""
        self._environ_before: dict[str, str] | None = None
        self._original_invoke: Any = None
        self._sfn_config: dict[str, Any] | None = None
        self._original_client_for: Any = None
        self._original_terminated: Any = None
        self._marks: str | None = None
        """The folder of the workers' marks (worker.MARKS)."""
        self._port_held: socket.socket | None = None
        self._stopping = threading.Event()
        self._ended = threading.Condition()
        self._ends = 0
        """Executions (and Map Runs) of this engine that have ended: ``wait`` wakes on each (see _watch_ends)."""
        self._restore_speedups: Any = None
        self._recursion_limit_before: int | None = None
        self._saved_env: dict[str, str | None] = {}
        self._fork_server: warmfork.WarmForkServer | None = None
        self._owns_active = False
        self._froze = False
        self._own_calls: Any = None
        self.credentials: dict[str, str] = {}
        self._engine_log_before: tuple[bool, list[Any]] | None = None
        self._pool_lock = threading.Lock()
        self._closing = False
        """Set as the engine stops: a dispatch then starts no new pool (moto's threads may still be dispatching)."""
        self._in_flight = 0
        self._dispatched = 0
        self._idle = threading.Condition()
        """Lambda invocations running now, and started so far: ``wait_idle`` waits for none to run."""
        self.total_items: int | None = None
        self.done_before: int = 0
        """Items BuildCatalog found done: left out of the Map, counted as skipped in the progress."""
        self._progress_run: str | None = None
        """The run whose progress is shown (BuildCatalog's answer names it): where its failure records are."""
        self._failures_seen: tuple[float, int] = (float("-inf"), 0)
        """(when, how many) failure records were last counted: the bucket's keys are scanned at most once a second."""
        self.invocations: list[dict[str, Any]] = []
        """Every Lambda invocation of this engine: moto does not expose the Distributed Map's child execution
        histories, so this is where a local run shows each item's attempts (also written to logs/invocations.jsonl)."""

    # ---- lifecycle -----------------------------------------------------------------------------------
    def __enter__(self) -> LocalEngine:
        if LocalEngine._active:
            raise RuntimeError("one LocalEngine per process at a time: moto's backends are process-wide")
        LocalEngine._active = self._owns_active = True
        # Starting imports moto and builds its backends and botocore's service models: objects that live as long as
        # the engine. With the cyclic garbage collector off meanwhile, collections do not traverse them over and over
        # as they pile up; frozen afterwards (gc.freeze), they are left out of every later collection, whose pauses
        # otherwise grew with them (a full one at the end of a run in a started Workspace took a tenth of a second).
        # One full collection first, so that no garbage is frozen with them (the caller's cycles waiting for a
        # collection, the start's own): it falls while the fork server is still importing, before the first
        # invocation can start. __exit__ unfreezes them, and with them anything else frozen in the caller's process
        # (gc unfreezes all or nothing), which later collections then see again.
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)  # what had started stops, the environment is put back
            raise
        finally:
            if collecting:
                gc.enable()
        gc.collect()
        gc.freeze()
        self._froze = True
        return self

    def _start(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        # moto warns on every Map that it ignores ToleratedFailurePercentage; Aggregate enforces it (see README).
        logging.getLogger("moto.stepfunctions.parser.asl.parse.preprocessor").setLevel(logging.ERROR)
        # moto's engine logs every failed state (caught or not) as an ERROR line of several kB, its internal repr of
        # the state: to the run's logs/engine.log, not the user's terminal (the execution history and summary.json
        # say what failed).
        engine_log = logging.getLogger("moto.stepfunctions.parser")
        self._engine_log_before = (engine_log.propagate, list(engine_log.handlers))
        engine_log.propagate = False
        if self.log_path is not None:
            handler = logging.FileHandler(self.log_path.parent / "engine.log", delay=True)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            engine_log.addHandler(handler)
        else:
            engine_log.addHandler(logging.NullHandler())

        if self.in_process:
            self._environ_before = dict(os.environ)  # the handlers change this process's environment
        port, self._port_held = _held_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self.credentials = _engine_credentials()
        # moto's engine calls its own services at http://localhost:$MOTO_PORT: set it before the server starts.
        self._setenv({"MOTO_PORT": str(port), "AWS_DEFAULT_REGION": REGION, **self.credentials})
        # The user's AWS profile has nothing to do with the emulated account, and one that is not in this machine's
        # config (another machine's, a typo) made every boto3 client raise ProfileNotFound: the run died at its
        # first client with a traceback. Unset while the engine runs (its workers and fork server start after).
        self._setenv(dict.fromkeys(USER_AWS_PROFILE))
        # moto's Distributed Map workers recurse once per item they take (IterationWorker._eval_pool calls itself
        # for the next job): past Python's default limit of 1,000 frames a worker thread dies of RecursionError and
        # the execution never ends (found at 1,200 items with max concurrency 1). The frames are Python's (no C
        # stack per call in 3.12), so a higher limit carries a worker through any manifest the template allows.
        self._recursion_limit_before = sys.getrecursionlimit()
        sys.setrecursionlimit(max(self._recursion_limit_before, _RECURSION_LIMIT))
        from granulemap.local.channel import ChannelServer

        self._channel = ChannelServer(("127.0.0.1", port))  # in_process too: this process's own calls go through it
        self.template = read_local_template(self.root, self.bucket, REGION, ACCOUNT, LOCAL_STACK_NAME,
                                            self.parameter_overrides)
        if not self.in_process:  # what glibc reads at a process's start (a handler thread's process has started)
            self._setenv(worker.process_start_environment([f.environment for f in self.template.functions.values()],
                                                          dict(os.environ)))
        # The fork server imports what the handlers need while this process imports moto and creates the
        # resources (on two cores the two start-ups overlap instead of adding up); every worker is then forked from
        # it when the pool first needs one, ready at once (granulemap/local/warmfork.py).
        if not self.in_process and self.worker_start == "warm-fork" and warmfork.available():
            if self.log_path is not None:
                self._setenv({warmfork.LOG_ENV: str(self.log_path)})
            self._fork_server = warmfork.WarmForkServer(self.preload_modules)
            self._fork_server.start()
        self._start_pool()
        from granulemap.local import speedups

        self._restore_speedups = speedups.install()  # first: it makes importing moto cheaper
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._server.start()
        if self._port_held is not None:  # listening: the server holds the port now
            self._port_held.close()
            self._port_held = None
        app = self._server._server.app
        self._channel.attach(app)
        # Over TCP (what the workers' s3fs and other non-botocore clients use, and anyone on this machine can
        # reach), only requests signed with this engine's own key; moto's calls to itself are answered in this process.
        self._server._server.app = _SignedWith(app, self.credentials["AWS_ACCESS_KEY_ID"])
        self._own_calls = _route_own_calls(self._channel, [f"http://localhost:{port}", self.endpoint])
        # moto's backends are process-wide: start from an empty account whatever ran before in this process.
        self._moto_api("reset", b"")
        from moto.core.config import default_user_config

        self._sfn_config = dict(default_user_config.get("stepfunctions", {}))  # put back at the end (__exit__)
        self._moto_api("config", json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode())
        self._patch_lambda()
        self._watch_ends()
        self._create_resources()

    def __exit__(self, *exc: object) -> None:
        self._closing = True
        if self._port_held is not None:  # a start that failed before the server listened
            self._port_held.close()
            self._port_held = None
        # Interrupted (Ctrl-C), a run's executions are still going: its workers are stopped at once instead of
        # finishing the items they hold (an ATL06 item can take minutes), and moto's Map threads, which go on
        # dispatching until they notice, get an error from the engine instead of moto's own Lambda (Docker).
        interrupted = len(exc) > 1 and isinstance(exc[1], KeyboardInterrupt)
        if self._mirror is not None:
            self._mirror.uninstall()
        if self._original_invoke is not None:
            from moto.awslambda.models import LambdaFunction
            from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

            if not interrupted:
                LambdaFunction._invoke_lambda = self._original_invoke  # type: ignore[method-assign]
                lambda_eval_utils.boto_client_for = self._original_client_for
            self._original_invoke = None
        if self._original_terminated is not None:
            from moto.stepfunctions.parser.backend.execution import BaseExecutionWorkerCommunication

            BaseExecutionWorkerCommunication.terminated = self._original_terminated  # type: ignore[method-assign]
            self._original_terminated = None
        if self._sfn_config is not None:  # moto's configuration is process-wide: as it was before this engine
            from moto.core.config import default_user_config

            default_user_config["stepfunctions"] = self._sfn_config
            self._sfn_config = None
        # The HTTP server (moto's own calls) stops while the workers exit: werkzeug notices a shutdown only at its
        # next 0.5 s poll, unless a connection wakes it, which _stop_server makes.
        stopping = None
        if self._server is not None:
            stopping = threading.Thread(target=self._stop_server, name="granulemap-stop-moto")
            stopping.start()
        for pool in (self._pool, self._nested_pool):
            if pool is None:
                continue
            if interrupted and isinstance(pool, ProcessPoolExecutor):
                for process in list((getattr(pool, "_processes", None) or {}).values()):
                    process.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
        self._nested_pool = None
        if self._fork_server is not None:
            self._fork_server.stop()
            self._fork_server = None
        _forget_ended_threads()
        self._stopping.set()  # after the pools' end, which waits for invocations still running: stuck ones too
        if self._marks is not None:
            shutil.rmtree(self._marks, ignore_errors=True)
            self._marks = None
        if self._own_calls is not None:
            self._own_calls()  # moto's own clients no longer answered here
            self._own_calls = None
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if stopping is not None:
            stopping.join()
            self._server = None
        if self._recursion_limit_before is not None:
            sys.setrecursionlimit(self._recursion_limit_before)
            self._recursion_limit_before = None
        if self._restore_speedups is not None:
            self._restore_speedups()
            self._restore_speedups = None
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if self._environ_before is not None:
            os.environ.clear()
            os.environ.update(self._environ_before)
            self._environ_before = None
        if self._engine_log_before is not None:
            engine_log = logging.getLogger("moto.stepfunctions.parser")
            for handler in list(engine_log.handlers):
                if handler not in self._engine_log_before[1]:
                    engine_log.removeHandler(handler)
                    handler.close()
            engine_log.propagate = self._engine_log_before[0]
            self._engine_log_before = None
        if self._froze:
            gc.unfreeze()
            self._froze = False
        if self._owns_active:
            LocalEngine._active = self._owns_active = False

    def _stop_server(self) -> None:
        server = self._server
        stopper = threading.Thread(target=server.stop, name="granulemap-moto-shutdown")
        stopper.start()
        address = server.get_host_and_port()
        while stopper.is_alive():
            try:
                socket.create_connection(address, timeout=0.1).close()
            except OSError:
                pass
            stopper.join(0.01)

    def _spawn_from_now_on(self) -> None:
        """Replace a pool whose fork server has died by one of spawned workers (each imports what its handlers need
        on first use): a local run is slower for it, not broken."""
        with self._pool_lock:
            if self._fork_server is None:
                return  # another dispatch thread did it
            for pool in (self._pool, self._nested_pool):
                if pool is not None:
                    pool.shutdown(wait=False, cancel_futures=False)
            self._nested_pool = None  # the next nested invocation starts one of spawned workers
            self._fork_server.stop()
            self._fork_server = None
            self._start_pool()

    def _replace(self, pool: Executor | None, retired: bool = False) -> None:
        """A worker of ``pool`` died, or (``retired``) has retired after a timeout (worker.RETIRED): the main pool is
        started again; the nested one, at its next invocation. Once, whichever of the invocations that were waiting
        on it gets here first. A retired pool's invocations under way finish in it; those still waiting for a worker
        are cancelled, and their dispatchers run them in the new pool."""
        with self._pool_lock:
            if pool is None or pool not in (self._pool, self._nested_pool):
                return  # replaced already
            if pool is self._nested_pool:
                self._nested_pool = None
            else:
                self._start_pool()
            pool.shutdown(wait=False, cancel_futures=retired)  # the new pool first: see _current_pool

    def _current_pool(self, nested: bool) -> Executor | None:
        """The pool an invocation would run in now. Under the lock: an invocation cancelled by ``_replace`` sees the
        pool that replaced its own."""
        with self._pool_lock:
            return self._nested_pool if nested else self._pool

    def _setenv(self, values: dict[str, str | None]) -> None:
        """Set (None: unset) these environment variables until the engine stops (``__exit__`` puts them back)."""
        for key, value in values.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def worker_env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            **self.credentials,
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_DEV": "false",
            "GRANULEMAP_LOCAL": "1",
            **({CHANNEL_ENV: f"{self._channel.path} {self.endpoint}"} if not self.in_process else {}),
            **self.extra_env,
        }

    def _start_pool(self) -> None:
        self._pool = self._new_pool(self.workers)

    def _new_pool(self, workers: int) -> Executor:
        if self.in_process:
            return ThreadPoolExecutor(max_workers=1, thread_name_prefix="granulemap-handler",
                                      initializer=worker.init_worker, initargs=(self.worker_env(), None))
        context = self._fork_server.context() if self._fork_server else multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=worker.init_worker,
            initargs=(self.worker_env(), str(self.log_path) if self.log_path else None, True),
        )

    def _pool_for(self, nested: bool) -> Executor:
        """The pool an invocation runs in: ``_nested_pool`` (one worker, started at the first such invocation) for
        one that a handler makes and waits for, else the main one."""
        if not nested:
            assert self._pool is not None
            return self._pool
        with self._pool_lock:
            if self._nested_pool is None:
                self._nested_pool = self._new_pool(1)
            return self._nested_pool

    def client(self, service: str) -> Any:
        """A boto3 client of the emulated account, answered in this process (no HTTP: ``_route_own_calls``)."""
        return boto3.client(service, region_name=REGION, endpoint_url=self.endpoint,
                            aws_access_key_id=self.credentials["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.credentials["AWS_SECRET_ACCESS_KEY"],
                            aws_session_token=self.credentials["AWS_SESSION_TOKEN"])

    def _moto_api(self, action: str, body: bytes) -> None:
        status, _, answer = self._channel.handle("POST", f"{self.endpoint}/moto-api/{action}",
                                                 [("Content-Type", "application/json"),
                                                  ("Content-Length", str(len(body)))], body)
        if not 200 <= status < 300:
            raise RuntimeError(f"moto's /moto-api/{action} answered {status}: {answer[:200]!r}")

    # ---- lambda dispatch -----------------------------------------------------------------------------
    def _patch_lambda(self) -> None:
        from moto.awslambda.models import LambdaFunction

        specs = {
            name: {
                "function_name": spec.function_name,
                "code_dir": spec.code_dir,
                "handler": spec.handler,
                "environment": spec.environment,
                "memory_size": spec.memory_size,
                "timeout": spec.timeout,
                "arn": spec.arn,
            }
            for name, spec in self.template.functions.items()
        }
        self._marks = self._marks_folder()
        if not self.in_process:
            self._stopping.clear()
            threading.Thread(target=self._end_stuck_workers, args=(self._marks,), daemon=True,
                             name="granulemap-stuck-workers").start()
        for spec in specs.values():
            spec[worker.MARKS] = self._marks
        specs.update({spec["arn"]: spec for spec in list(specs.values())})
        engine = self
        invocations = itertools.count()

        def dispatch(function: str, event: Any, nested: bool = False) -> tuple[str, bool, str]:
            """Run one invocation in the worker pool: (payload JSON, errored, logs). ``nested``: one that a handler
            makes (through the moto server's Lambda API) and waits for: it runs in ``_nested_pool``."""
            spec = specs.get(function)
            if spec is None:
                return json.dumps({"errorType": "ResourceNotFound",
                                   "errorMessage": f"{function} is not in template.yaml"}), True, ""
            if isinstance(event, (str, bytes)):
                event = json.loads(event) if event else {}
            if engine._closing:
                return _ENGINE_STOPPED
            started = time.time()
            with engine._idle:
                engine._in_flight += 1
                engine._dispatched += 1
            pool: Executor | None = None
            run = worker.invoke_nested if nested else worker.invoke
            call = {**spec, "invocation": next(invocations)}
            try:
                while True:
                    try:
                        try:
                            pool = engine._pool_for(nested)
                            future = pool.submit(run, call, event)
                        except (OSError, EOFError):  # the fork server could not fork a worker: it died
                            engine._spawn_from_now_on()
                            pool = engine._pool_for(nested)
                            future = pool.submit(run, call, event)
                        result = future.result()
                    except BrokenProcessPool:
                        if not engine._closing:
                            engine._replace(pool)
                        # A worker that ended itself past this invocation's timeout left its mark (worker._Watchdog)
                        mark = worker.timed_out_mark(call)
                        timed_out = mark is not None and os.path.exists(mark)
                        result = worker.timed_out(spec["timeout"]) if timed_out else _WORKER_DIED
                        break
                    except (RuntimeError, CancelledError):  # the pool shut down
                        if engine._closing:  # the engine stops under moto's threads
                            result = _ENGINE_STOPPED
                            break
                        if pool is not engine._current_pool(nested):  # retired after a timeout: in the new pool
                            continue
                        raise
                    if result == worker.RETIRED:  # the worker has retired after a timeout: again, in a new pool
                        engine._replace(pool, retired=True)
                        continue
                    if result[1] and json.loads(result[0]).get("errorType") == worker.TIMED_OUT:
                        engine._replace(pool, retired=True)  # its worker runs no more invocations
                    break
            finally:
                with engine._idle:
                    engine._in_flight -= 1
                    engine._idle.notify_all()
            engine._record(spec["function_name"], event, result, started)
            return result

        def _invoke_lambda(fn: Any, event: Any = None) -> tuple[str, bool, str]:
            # The state machine's Lambda tasks take DirectLambdaClient: what reaches moto's Lambda API comes from a
            # handler (or a script), which waits for it.
            return dispatch(fn.function_name, event, nested=True)

        class DirectLambdaClient:
            """What moto's engine asks of a boto3 Lambda client for a Lambda task, without the HTTP round trip
            through the moto server and a new boto3 client per task (most of the engine's per-item cost)."""

            def invoke(self, FunctionName: str, Payload: Any = None, **_: Any) -> dict[str, Any]:  # noqa: N803
                payload, errored, _logs = dispatch(FunctionName, Payload)
                response: dict[str, Any] = {"StatusCode": 200, "Payload": io.BytesIO(payload.encode())}
                if errored:
                    response["FunctionError"] = "Unhandled"
                return response

        direct = DirectLambdaClient()

        def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
            if service == "lambda":
                return direct
            return self._original_client_for(region=region, service=service, state_credentials=state_credentials)

        from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

        # moto's own functions, even when an interrupted engine left its own in place (see __exit__)
        self._original_client_for = getattr(lambda_eval_utils.boto_client_for, "moto_original",
                                            lambda_eval_utils.boto_client_for)
        self._original_invoke = getattr(LambdaFunction._invoke_lambda, "moto_original", LambdaFunction._invoke_lambda)
        boto_client_for.moto_original = self._original_client_for  # type: ignore[attr-defined]
        _invoke_lambda.moto_original = self._original_invoke  # type: ignore[attr-defined]
        lambda_eval_utils.boto_client_for = boto_client_for  # type: ignore[assignment]
        LambdaFunction._invoke_lambda = _invoke_lambda  # type: ignore[method-assign]

    def _watch_ends(self) -> None:
        """Wake ``wait`` as soon as an execution ends: moto's execution thread ends each program by calling its
        communication's ``terminated``, which records the final status; this engine's version then notifies."""
        from moto.stepfunctions.parser.backend.execution import BaseExecutionWorkerCommunication

        original = self._original_terminated = BaseExecutionWorkerCommunication.terminated
        engine = self

        def terminated(comm: Any) -> None:
            try:
                original(comm)
            finally:
                with engine._ended:
                    engine._ends += 1
                    engine._ended.notify_all()
                _forget_ended_threads()

        BaseExecutionWorkerCommunication.terminated = terminated  # type: ignore[method-assign]

    def _record(self, function: str, event: Any, result: tuple[str, bool, str], started: float) -> None:
        payload, errored, _ = result
        item = event.get("item", {}).get("id") if isinstance(event, dict) else None
        record = {"function": function, "item": item, "errored": errored, "start": started,
                  "seconds": round(time.time() - started, 4)}
        if errored:
            record["errorType"] = json.loads(payload).get("errorType")
        else:
            body = json.loads(payload) if payload else None
            if isinstance(body, dict):
                if "status" in body and "result_key" in body:
                    record["status"] = body["status"]
                if isinstance(body.get("catalog"), dict):
                    try:
                        catalog = CatalogRef.model_validate(body["catalog"])
                    except ValueError:  # not BuildCatalog's (ValidationError is one): no progress to show
                        pass
                    else:
                        self.total_items, self.done_before = catalog.count, catalog.found_done
                        run = body.get("run")
                        self._progress_run = run.get("run_id") if isinstance(run, dict) else None
        self.invocations.append(record)
        if self.log_path is not None:
            with open(self.log_path.parent / "invocations.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def item_counts(self) -> dict[str, int | None]:
        """Items finished so far in the current execution (for progress display): from the Processor invocations,
        and the failure records RecordFailure stored (in the emulated bucket, in this process)."""
        done = {"succeeded": 0, "skipped": 0, "failed": self._failures_recorded()}
        for inv in list(self.invocations):
            if inv["function"] == "ProcessorFunction" and inv.get("status") in done:
                done[inv["status"]] += 1
        done["skipped"] += self.done_before
        return {"total": self.total_items, **done, "found_done": self.done_before}

    def _failures_recorded(self) -> int:
        if self._progress_run is None:
            return 0
        when, count = self._failures_seen
        if time.monotonic() - when < 1.0:  # a workspace's bucket may hold a store's 100,000 chunks
            return count
        from moto.s3.models import s3_backends

        prefix = layout.failure_prefix(self._progress_run)
        bucket = s3_backends[ACCOUNT]["aws"].buckets.get(self.bucket)
        count = 0 if bucket is None else sum(1 for key in list(bucket.keys) if key.startswith(prefix))
        self._failures_seen = (time.monotonic(), count)
        return count

    def reset_progress(self) -> None:
        self.total_items = None
        self.done_before = 0
        self._progress_run = None
        self._failures_seen = (float("-inf"), 0)
        self.invocations.clear()

    # ---- resources -----------------------------------------------------------------------------------
    def _create_resources(self) -> None:
        s3 = self.client("s3")
        s3.create_bucket(Bucket=self.bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        if self.state_dir is not None:
            from granulemap.local.mirror import BucketMirror

            from moto.s3.models import s3_backends

            # Into moto's backend, in this process, not through the S3 API: a request per object made a folder of
            # many results slow to open, at every run into it. Before the mirror's hook: they are on disk already.
            backend = s3_backends[ACCOUNT]["aws"]
            self._mirror = BucketMirror(self.bucket, self.state_dir)
            self._mirror.restore(lambda key, body: backend.put_object(self.bucket, key, body),
                                 lambda key: key.startswith(layout.OUTPUTS_PREFIX) and key.endswith(LOCK_SUFFIX))
            self._mirror.install()
        iam = self.client("iam")
        role_arn = iam.create_role(
            RoleName="granulemap-local",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        lam = self.client("lambda")
        code = _dummy_zip()
        for spec in self.template.functions.values():
            lam.create_function(
                FunctionName=spec.function_name, Runtime="python3.12", Role=role_arn, Handler=spec.handler,
                Code={"ZipFile": code}, Timeout=spec.timeout, MemorySize=spec.memory_size,
                Environment={"Variables": spec.environment},
            )
        if self.template.topics:  # in moto's SNS backend itself: an SNS client would add 30 ms to every start
            from moto.sns.models import sns_backends

            for arn in self.template.topics.values():
                sns_backends[ACCOUNT][REGION].create_topic(arn.rsplit(":", 1)[1])
        sm = self.template.state_machine
        definition = substitute_definition(sm.definition_path.read_text(), sm.substitutions)
        self.state_machine_arn = self.client("stepfunctions").create_state_machine(
            name=f"{LOCAL_STACK_NAME}-pipeline", definition=definition, roleArn=role_arn
        )["stateMachineArn"]

    # ---- executions ----------------------------------------------------------------------------------
    def start(self, execution_input: dict[str, Any], name: str | None = None) -> str:
        self.reset_progress()
        if self._mirror is not None:  # an earlier run's refusal (it stopped that one): this run tries the disk again
            self._mirror.refused = None
        name = name or execution_name()
        return self.client("stepfunctions").start_execution(
            stateMachineArn=self.state_machine_arn, name=name, input=json.dumps(execution_input)
        )["executionArn"]

    def wait(self, execution_arn: str, poll: float = 0.2, timeout: float | None = None,
             on_poll: Any = None, check: float = 2.0) -> dict[str, Any]:
        """The execution's description once it has ended. One DescribeExecution (several ms of this process's CPU,
        taken from the workers on a busy machine) when any execution of this engine ends, and otherwise every
        ``check`` seconds, in case an execution ends without moto telling (its program raised); ``on_poll``
        (progress) is called every ``poll`` seconds in between, and ``timeout`` checked as often."""
        sfn = self.client("stepfunctions")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._ended:
                ends = self._ends
            desc = sfn.describe_execution(executionArn=execution_arn)
            if desc["status"] in TERMINAL:
                self.refuse_a_state_not_kept()  # it ended before a poll saw the refusal: the disk lacks some of it
                return desc
            described = time.monotonic()
            while True:
                self.refuse_a_state_not_kept()
                if on_poll is not None:
                    on_poll()
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise TimeoutError(f"execution {execution_arn} still {desc['status']} after {timeout} s")
                pause = min(poll, described + check - now, (deadline - now) if deadline is not None else poll)
                with self._ended:
                    if self._ended.wait_for(lambda: self._ends != ends, timeout=max(pause, 0.0)):
                        break  # an execution ended: describe it now
                if time.monotonic() - described >= check:
                    break

    def refuse_a_state_not_kept(self) -> None:
        """StateNotKept once the disk has refused a change of the state folder (full, read-only): the run's writes
        fail from then on (each is an S3 error for its function), and the next run would not find what this one did
        since. ``wait`` checks at every poll, and at the execution's end; the caller stops the execution."""
        refused = None if self._mirror is None else self._mirror.refused
        if refused is not None:
            path, exc = refused
            raise StateNotKept(f"the run's state cannot be written to disk ({path}: {exc.strerror or exc}), so the run "
                               f"was stopped: what it had written before is kept. "
                               f"{(disk_advice(exc) or 'once that is mended').capitalize()}, then run it again: it "
                               "resumes")

    def _marks_folder(self) -> str:
        """The folder where workers leave their marks (an invocation that timed out, those over their MemorySize),
        removed when the engine stops. Beside the state of a Workspace (its folder is locked while the engine runs,
        so one there is a killed engine's, removed now), where a killed run left it in the machine's /tmp for ever."""
        if self.state_dir is None:
            return tempfile.mkdtemp(prefix="granulemap-engine-")
        marks = Path(self.state_dir).parent / ENGINE_FOLDER
        shutil.rmtree(marks, ignore_errors=True)
        marks.mkdir(parents=True)
        return str(marks)

    def _end_stuck_workers(self, marks: str) -> None:
        """Kill the worker process of an invocation still running ``STUCK_GRACE_S`` after its timeout: one whose own
        watchdog (worker._Watchdog) could not end it, blocked in native code that holds the GIL. As that watchdog
        would have, mark the invocation timed out first: the engine answers it so and retries the others of its
        pool. Looks every ``worker.TIMEOUT_WATCH_S`` until the engine stops; only at the very process that wrote the
        record (its pid and its start, Linux's /proc: without it workers write none)."""
        while not self._stopping.wait(worker.TIMEOUT_WATCH_S):
            try:
                armed = [e for e in os.scandir(marks) if e.name.startswith("armed-")]
            except OSError:  # the engine has stopped
                return
            for entry in armed:
                running = worker.read_armed(entry.path)
                if running is None or time.monotonic() <= running[0] + STUCK_GRACE_S:
                    continue
                pid = int(entry.name.removeprefix("armed-"))
                if worker.process_started(pid) != running[2]:  # ended (by its own watchdog, a crash): forgotten
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                    continue
                with contextlib.suppress(OSError):
                    open(os.path.join(marks, running[1]), "x").close()
                message = (f"[ERROR] invocation {running[1]} did not stop {STUCK_GRACE_S:g} s after its timeout and "
                           f"its worker process ({pid}) did not end itself (native code holding the GIL): ended")
                logging.getLogger(__name__).error(message)
                if self.log_path is not None:
                    with contextlib.suppress(OSError), open(self.log_path, "a") as log:
                        log.write(message + "\n")
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)

    def over_memory(self, since: int = 0) -> tuple[list[dict[str, Any]], int]:
        """The invocations whose peak resident memory went over their function's MemorySize (worker._MemoryWatch),
        from the ``since``-th record on, and the number recorded so far (the next call's ``since``)."""
        if self._marks is None:  # not started, or stopped
            return [], 0
        try:
            lines = Path(worker.over_memory_log(self._marks)).read_text().splitlines()
        except OSError:  # none yet
            lines = []
        records = []
        for line in lines[since:]:
            try:
                records.append(json.loads(line))
            except ValueError:  # a line cut short (its worker ended as it wrote)
                continue
        return records, len(lines)

    def wait_idle(self, quiet: float = 0.5, timeout: float = 600.0) -> bool:
        """Wait until no Lambda invocation runs and none has started for ``quiet`` seconds (a stopped execution's
        Map threads notice the stop only between items; its invocations finish their work): True, or False after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while True:
                if not self._idle.wait_for(lambda: self._in_flight == 0, timeout=max(0.0, deadline - time.monotonic())):
                    return False
                seen = self._dispatched
                self._idle.wait(timeout=quiet)
                if self._in_flight == 0 and self._dispatched == seen:
                    return True
                if time.monotonic() > deadline:
                    return False

    def run(self, execution_input: dict[str, Any], name: str | None = None, **wait: Any) -> dict[str, Any]:
        return self.wait(self.start(execution_input, name), **wait)

    def history(self, execution_arn: str) -> list[dict[str, Any]]:
        sfn = self.client("stepfunctions")
        events, token = [], None
        while True:
            kwargs = {"executionArn": execution_arn, "maxResults": 1000}
            if token:
                kwargs["nextToken"] = token
            page = sfn.get_execution_history(**kwargs)
            events.extend(page["events"])
            token = page.get("nextToken")
            if not token:
                return events

    def download(self, key_or_prefix: str, dest: Path, name: str | None = None) -> list[Path]:
        """Copy an object, or every object under a prefix ending in '/' or '.zarr', to ``dest`` (as ``name``)."""
        from granulemap.storage import download_objects

        return download_objects(self.client("s3"), self.bucket, key_or_prefix, dest, name)
