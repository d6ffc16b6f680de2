"""The engine's own fork server (granulemap/local/warmfork.py) and what it preloads (granulemap/local/preload.py).

- Workers are forked by the private server, with its preload already imported, and the module-global fork server
  that other code in the process may use is never started or changed.
- ``stop`` ends the server at once.
- What the preload leaves behind does not fix anything a function's environment decides: a client made afterwards
  still takes its region, endpoint and keys from the environment of the moment.
"""

from __future__ import annotations

import json
import multiprocessing.forkserver
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import pytest

from granulemap.local.warmfork import WarmForkServer, available

pytestmark = pytest.mark.skipif(not available(), reason="no fork server on this platform")


def _where_am_i() -> tuple[int, bool, bool]:
    return os.getppid(), "matplotlib.figure" in sys.modules, "granulemap.catalog" in sys.modules


def test_workers_are_forked_by_the_private_server_with_its_preload_imported() -> None:
    global_server = multiprocessing.forkserver._forkserver
    global_before = (global_server._forkserver_pid, global_server._preload_modules)
    server = WarmForkServer(["granulemap.local.preload"])
    server.start()
    try:
        pid = server._server._forkserver_pid
        assert pid is not None and pid != os.getpid()
        with ProcessPoolExecutor(2, mp_context=server.context()) as pool:
            answers = {pool.submit(_where_am_i).result(timeout=120) for _ in range(4)}
        assert answers == {(pid, True, True)}
    finally:
        server.stop()
    assert (global_server._forkserver_pid, global_server._preload_modules) == global_before


def test_stop_ends_the_server_at_once() -> None:
    server = WarmForkServer(["granulemap.local.preload"])
    server.start()
    pid = server._server._forkserver_pid
    with ProcessPoolExecutor(1, mp_context=server.context()) as pool:
        pool.submit(os.getpid).result(timeout=120)  # the preload has finished: the server is a full interpreter
    server.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert server._server._forkserver_pid is None


PROBE = """
import json, os
import granulemap.local.preload  # what the fork server runs, before any function's environment exists
os.environ.update(AWS_DEFAULT_REGION="eu-north-1", AWS_ENDPOINT_URL="http://127.0.0.1:4567",
                  AWS_ACCESS_KEY_ID="function-key", AWS_SECRET_ACCESS_KEY="function-secret")
from granulemap.storage import s3_client
client = s3_client()
print(json.dumps([client.meta.region_name, client.meta.endpoint_url,
                  client._request_signer._credentials.access_key]))
"""


def test_a_client_made_after_the_preload_follows_the_function_s_environment() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == ["eu-north-1", "http://127.0.0.1:4567", "function-key"]


# ---- the malloc settings of template.yaml, which worker processes must get when they start ------------------------
def _template_tunables() -> str:
    from granulemap.local.template import load_template

    from conftest import ROOT

    return load_template(ROOT / "template.yaml")["Globals"]["Function"]["Environment"]["Variables"]["GLIBC_TUNABLES"]


def _started_with() -> str | None:
    return os.environ.get("GLIBC_TUNABLES")  # before any invocation: what the process started with


def test_the_engine_s_worker_processes_start_with_the_template_s_malloc_settings(monkeypatch) -> None:
    from granulemap.local.engine import LocalEngine

    mine = "glibc.rtld.optional_static_tls=2048"  # a user's own tunable
    monkeypatch.setenv("GLIBC_TUNABLES", mine)
    with LocalEngine(workers=1) as engine:
        assert engine._fork_server is not None
        started_with = engine._pool.submit(_started_with).result(timeout=120)
    assert started_with == f"{mine}:{_template_tunables()}"
    assert os.environ["GLIBC_TUNABLES"] == mine  # the engine's process environment is put back


FAULTS = """
import resource, sys
from granulemap.recipes.sst_global_mean import global_mean_sst
global_mean_sst("g.nc", method="ocean", path=sys.argv[1])  # the first granule grows the heap once
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    global_mean_sst("g.nc", method="ocean", path=sys.argv[1])
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""
PAGES = 720 * 1440 * 2 / 4096
"""One int16 field of MUR25, in 4 KiB pages."""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc")
@pytest.mark.parametrize("tuned", [False, True], ids=["glibc defaults", "template's GLIBC_TUNABLES"])
def test_with_the_template_s_malloc_settings_a_granule_reuses_the_heap_instead_of_fresh_pages(mur25, tuned) -> None:
    """The mechanism template.yaml's comment names, in a process that did nothing else first: with glibc's defaults
    each large array is a new mmap, faulted in page by page, granule after granule; with the settings the heap
    keeps the memory and the next granule reuses it (BENCHMARKS.md's malloc section has what that is worth)."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tuned:
        env["GLIBC_TUNABLES"] = _template_tunables()
    out = subprocess.run([sys.executable, "-c", FAULTS, str(mur25)], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    faults = float(out.stdout.split()[-1])
    if tuned:
        assert faults < PAGES / 4
    else:
        assert faults > 2 * PAGES  # several fields' worth of fresh pages per granule


CLI_FAULTS = """
import contextlib, io, resource, sys
from granulemap.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    main(["process", "--recipe", "sst-global-mean", sys.argv[1]])  # the first granule grows the heap once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    main(["process", "--recipe", "sst-global-mean", *[sys.argv[1]] * 5])
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc")
def test_granulemap_process_started_without_the_settings_gives_itself_the_processor_s(mur25) -> None:
    """``granulemap process`` runs in the user's shell, without template.yaml's GLIBC_TUNABLES: it sets the
    Processor's with mallopt (granulemap/heap.py), and its granules reuse the heap as a Processor's do."""
    from granulemap.heap import parse_tunables, set_at_runtime

    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", CLI_FAULTS, str(mur25)], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    assert float(out.stdout.split()[-1]) < PAGES / 4  # the defaults: > 2 * PAGES (the test above)
    assert set_at_runtime("glibc.malloc.no_such_tunable=1:glibc.rtld.optional_static_tls=2048") == {}
    assert parse_tunables(_template_tunables()).keys() == {"glibc.malloc.mmap_threshold",
                                                           "glibc.malloc.trim_threshold"}  # both set by mallopt


def _list_through_the_default_client(bucket: str) -> int:
    from granulemap.storage import s3_client

    return s3_client().list_objects_v2(Bucket=bucket)["KeyCount"]


def test_the_handlers_requests_from_a_forked_worker_take_the_channel_not_http(monkeypatch) -> None:
    """The preload makes boto3's default session before the worker installs its channel hook: the handlers' client,
    made from that session, must still send over the channel (over HTTP every request cost the engine a thread
    and a connection: the overhead per item doubled)."""
    import requests

    from granulemap.local.engine import LocalEngine

    with LocalEngine(workers=1) as engine:
        server = engine._server._server
        http_requests = []
        handle = server.process_request
        monkeypatch.setattr(server, "process_request", lambda *a: (http_requests.append(a), handle(*a))[1])
        assert engine._pool.submit(_list_through_the_default_client, engine.bucket).result(timeout=120) == 0
        assert http_requests == []
        requests.get(f"{engine.endpoint}/{engine.bucket}", timeout=10)  # the counter does count HTTP requests
        assert len(http_requests) == 1



# ---- when the fork server fails, or the engine cannot start -------------------------------------------------------
def test_a_preload_step_that_fails_is_skipped_and_the_rest_still_done() -> None:
    probe = """
import json
import granulemap.local.preload as p
import sys
print(json.dumps([sorted(p.skipped), "numpy" in sys.modules, "boto3" in sys.modules]))
"""
    env = {**os.environ, "MPLBACKEND": "no-such-backend"}  # matplotlib raises ValueError when imported
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120,
                         check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == [["matplotlib.backends.backend_agg", "matplotlib.figure"],
                                                        True, True]


def test_when_the_fork_server_dies_the_engine_carries_on_with_spawned_workers(tmp_path, monkeypatch) -> None:
    from granulemap.local.engine import LocalEngine

    (tmp_path / "crashing_preload.py").write_text("import os\nos._exit(3)\n")  # a native crash, say
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(LocalEngine, "preload_modules", ("crashing_preload",))
    with LocalEngine(workers=1) as engine:
        desc = engine.run({"recipe": "sst-global-mean", "start": "2018-12-31", "end": "2018-12-01",
                           "source": str(tmp_path)}, timeout=120)
        assert engine._fork_server is None  # replaced by spawned workers
    assert desc["status"] == "FAILED" and desc["error"] == "InvalidInput"  # BuildCatalog itself ran and answered
    assert "before start" in desc["cause"]


def test_an_engine_that_fails_to_start_stops_what_it_started_and_puts_the_environment_back(monkeypatch) -> None:
    from granulemap.local.engine import LocalEngine

    started: list[int] = []

    def fail(self) -> None:
        started.append(self._fork_server._server._forkserver_pid)
        raise RuntimeError("cannot create resources")

    monkeypatch.setattr(LocalEngine, "_create_resources", fail)
    monkeypatch.delenv("MOTO_PORT", raising=False)
    engine = LocalEngine(workers=1)
    with pytest.raises(RuntimeError, match="cannot create resources"):
        engine.__enter__()
    with pytest.raises(ProcessLookupError):
        os.kill(started[0], 0)  # the fork server is gone
    assert "MOTO_PORT" not in os.environ
    assert not LocalEngine._active
    monkeypatch.undo()
    with LocalEngine(workers=1) as again:  # the next engine starts
        assert again.state_machine_arn


def test_what_the_fork_server_prints_goes_to_the_run_log_not_the_terminal(tmp_path, monkeypatch, capfd) -> None:
    from granulemap.local.engine import LocalEngine

    (tmp_path / "talking_preload.py").write_text(
        "import sys\nimport granulemap.local.preload\nprint('preload says hello')\nprint('and warns', file=sys.stderr)\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(LocalEngine, "preload_modules", ("talking_preload",))
    log = tmp_path / "functions.log"
    with LocalEngine(workers=1, log_path=log) as engine:
        assert engine._pool.submit(os.getpid).result(timeout=120)  # the server has preloaded and forked
    assert "preload says hello" in log.read_text() and "and warns" in log.read_text()
    printed = capfd.readouterr()
    assert "preload says" not in printed.out + printed.err and "and warns" not in printed.out + printed.err


def _loaded(names: tuple[str, ...]) -> list[str]:
    return [name for name in names if name in sys.modules]


def test_every_module_the_preload_imports_is_one_the_handlers_of_an_sst_run_import(tmp_path, monkeypatch,
                                                                                      mur25) -> None:
    """The preload is the critical path of a local run's start (the first invocation waits for it): a module there
    that no handler imports is start-up time for nothing. A spawned worker (fresh interpreter, nothing preloaded)
    runs every function of a one-granule SST run; then it must have imported each module of the preload, except the
    other built-in SST recipe's (preloaded for its runs, and tiny)."""
    import shutil

    from granulemap.local.engine import LocalEngine

    # What the preload lists, read in a process of its own: importing it here would run it in pytest's process.
    listed = subprocess.run([sys.executable, "-c", "import json, granulemap.local.preload as p; "
                             "print(json.dumps(p.MODULES))"], capture_output=True, text=True, timeout=120, check=True)
    modules = tuple(json.loads(listed.stdout.splitlines()[-1]))

    source = tmp_path / "granules"
    source.mkdir()
    shutil.copy(mur25, source / mur25.name)
    monkeypatch.setattr(LocalEngine, "worker_start", "spawn")
    with LocalEngine(workers=1) as engine:
        assert engine._fork_server is None
        desc = engine.run({"recipe": "sst-global-mean", "start": "2018-12-31", "end": "2018-12-31",
                           "source": str(source)}, timeout=300)
        assert desc["status"] == "SUCCEEDED", desc.get("cause")
        loaded = engine._pool.submit(_loaded, modules).result(timeout=60)
    assert sorted(set(modules) - set(loaded)) == ["granulemap.recipes.sst_box_mean"]


def _collector() -> tuple[bool, int]:
    import gc

    return gc.isenabled(), gc.get_freeze_count()


def test_workers_collect_garbage_and_leave_the_preloaded_objects_out_of_it() -> None:
    """The preload runs with the collector off and freezes what it made (granulemap/local/preload.py): a worker
    forked afterwards must have the collector on again, with those objects in the permanent generation."""
    server = WarmForkServer(["granulemap.local.preload"])
    server.start()
    try:
        with ProcessPoolExecutor(1, mp_context=server.context()) as pool:
            enabled, frozen = pool.submit(_collector).result(timeout=120)
    finally:
        server.stop()
    assert enabled
    assert frozen > 100_000  # numpy, boto3, matplotlib, ...: far more than an empty interpreter's objects


def test_the_engine_freezes_its_start_up_objects_while_open_and_gives_the_process_back_as_it_was() -> None:
    import gc

    from granulemap.local.engine import LocalEngine

    enabled_before, frozen_before = _collector()
    assert enabled_before
    with LocalEngine(workers=1) as engine:
        enabled, frozen = _collector()
        assert enabled and frozen > frozen_before + 100_000  # moto, botocore's models
        assert engine._pool.submit(_collector).result(timeout=120)[0]
    assert _collector() == (True, 0)  # unfrozen (the interpreter's own few frozen objects too: gc has no other way)
    gc.disable()
    try:
        with LocalEngine(workers=1):
            assert not gc.isenabled()  # a caller that turned the collector off keeps it off
    finally:
        gc.enable()
    assert _collector() == (True, 0)


def test_the_engine_does_not_freeze_garbage_the_caller_left_for_the_collector() -> None:
    """gc.freeze keeps what it freezes until the engine closes: cyclic garbage waiting for a collection must be
    collected first (a notebook's deleted data would otherwise stay in memory for the Workspace's whole life)."""
    import gc
    import weakref

    from granulemap.local.engine import LocalEngine

    class Cycle:
        pass

    gc.disable()  # so that only the engine's start may collect the cycle
    try:
        cycle = Cycle()
        cycle.me = cycle
        alive = weakref.ref(cycle)
        del cycle
        with LocalEngine(workers=1):
            assert alive() is None
    finally:
        gc.enable()
