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
import time
from pathlib import Path
from concurrent.futures import ProcessPoolExecutor

import pytest

from granulemap.local.warmfork import WarmForkServer, available

pytestmark = pytest.mark.skipif(not available(), reason="no fork server on this platform")


def _where_am_i() -> tuple[int, bool, bool]:
    return os.getppid(), "matplotlib.pyplot" in sys.modules, "granulemap.catalog" in sys.modules


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
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 0.1  # an interpreter exit tearing down its modules took 0.1-0.2 s
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


def _faults_per_granule(path: str, granules: int = 5) -> tuple[float, str | None]:
    """Pages this process had to map in per granule, after a first granule (which grows the heap once), and the
    GLIBC_TUNABLES it started with."""
    import resource

    from granulemap.recipes.sst_global_mean import global_mean_sst

    global_mean_sst("g.nc", method="ocean", path=path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(granules):
        global_mean_sst("g.nc", method="ocean", path=path)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / granules, os.environ.get("GLIBC_TUNABLES")


PAGES = 720 * 1440 * 2 / 4096
"""One int16 field of MUR25, in 4 KiB pages."""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc")
def test_the_engine_s_worker_processes_start_with_the_template_s_malloc_settings(monkeypatch, mur25) -> None:
    """The mechanism template.yaml's comment names, in the engine's own workers: with glibc's defaults every large
    array is a new mmap, faulted in page by page; with the settings the heap keeps and reuses the memory
    (BENCHMARKS.md has what that is worth)."""
    from granulemap.local.engine import LocalEngine

    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    with LocalEngine(workers=1) as engine:
        assert engine._fork_server is not None
        faults, tunables = engine._pool.submit(_faults_per_granule, str(mur25)).result(timeout=120)
    assert tunables == _template_tunables()
    assert faults < PAGES / 4
    assert "GLIBC_TUNABLES" not in os.environ  # the engine's process environment is put back


FAULTS = """
import sys
from test_warmfork import _faults_per_granule
print(_faults_per_granule(sys.argv[1])[0])
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc")
def test_without_the_settings_a_granule_s_arrays_are_fresh_pages_every_time(mur25) -> None:
    """The other side of the test above: what the settings change (so that test cannot pass for another reason)."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", FAULTS, str(mur25)], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    assert float(out.stdout.split()[-1]) > 2 * PAGES  # several fields' worth of fresh pages per granule


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
