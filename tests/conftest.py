"""Shared fixtures: the real sample granules (copied into tests/data with their provenance) and synthetic ones."""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import io
import logging
import os
import signal
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
MUR25 = DATA / "ghrsst" / "20181231090000-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2.nc"


def pytest_configure(config: pytest.Config) -> None:
    """In pytest's process only (a hook, not this module's code: the processes that tests start with multiprocessing
    import this module too, by way of the test modules their functions come from, and would lose the endpoints their
    parent set for them)."""
    # Handlers and the local engine must never reach real AWS from a test, whatever the machine's own AWS settings (a
    # profile, an endpoint, another region, ~/.aws): these, not theirs.
    for key in [k for k in os.environ if k in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION")
                or k.startswith("AWS_ENDPOINT_URL")]:
        del os.environ[key]
    os.environ.update({
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-west-2",
        "AWS_CONFIG_FILE": str(Path(__file__).resolve().parent / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(Path(__file__).resolve().parent / "no-aws-credentials"),
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_DISABLED": "true",
    })
    # The tests that interrupt or end a run send it SIGINT, SIGTERM or SIGHUP (or interrupt_main, which does nothing
    # while SIGINT is ignored). A suite started in the background (`make test &`: SIGINT ignored) or under nohup
    # (SIGHUP ignored) would start its runs with those signals ignored, and they (rightly: one ignored at the start
    # stays so) would go on. This process keeps ignoring them, by a handler of its own, which its commands do not
    # inherit.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, as a process started in a terminal
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name) and signal.getsignal(getattr(signal, name)) is signal.SIG_IGN:
            signal.signal(getattr(signal, name), lambda signum, frame: None)


@pytest.fixture(autouse=True)
def _environment_put_back() -> Iterator[None]:
    """Each test leaves the environment as it found it: handlers invoked in pytest's own process (worker.invoke)
    leave their functions' variables set, and took POWERTOOLS_METRICS_DISABLED away from every later test (and the
    engine workers they start)."""
    before = dict(os.environ)
    yield
    if dict(os.environ) != before:
        os.environ.clear()
        os.environ.update(before)
        worker = sys.modules.get("granulemap.local.worker")
        if worker is not None:  # the variables it set in this test are gone: not to be taken away at its next call
            worker._function_env_keys &= set(before)


@pytest.fixture(scope="session")
def mur25() -> Path:
    return MUR25


@pytest.fixture(scope="session")
def synthetic_month(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three synthetic MUR25-format granules (2018-12-01..03) made from the real one."""
    from granulemap.synthetic import make_synthetic_series

    return make_synthetic_series(MUR25, tmp_path_factory.mktemp("synthetic"), dt.date(2018, 12, 1), 3)


@functools.cache
def moto_server_endpoint() -> str:
    """A moto server on 127.0.0.1 (one per test process, stopped at exit): its endpoint URL, for boto3, s3fs and
    h5coro alike (AWS_ENDPOINT_URL)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    atexit.register(server.stop)
    host, port = server.get_host_and_port()
    return f"http://{host}:{port}"


def install_recipe_package(site: Path, monkeypatch: pytest.MonkeyPatch, module: str, code: str,
                           entry_points: dict[str, str]) -> Iterator[Path]:
    """A user's recipe package as pip installs it: ``module``.py with ``code`` and a distribution whose
    ``granulemap.recipes`` entry points are ``entry_points`` (name → "module:attribute"), on sys.path and PYTHONPATH
    (for the workers); the recipe registry forgets what it knew before and after. A generator for a fixture."""
    from granulemap import recipes

    site.mkdir()
    (site / f"{module}.py").write_text(code)
    dist = site / f"{module}-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[granulemap.recipes]\n"
                                           + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    recipes.available.cache_clear()
    recipes.get_recipe.cache_clear()
    yield site
    recipes.available.cache_clear()
    recipes.get_recipe.cache_clear()
    sys.modules.pop(module, None)


def on_a_full_disk(monkeypatch: pytest.MonkeyPatch, refused: Callable[[str], bool] = lambda folder: True) -> None:
    """The local engine's bucket mirror, from now on, writes the temporary files it makes in the folders ``refused``
    says (asked once a file) to /dev/full, where every write fails with ENOSPC, as on a full disk: the folder's
    temporary file is made, and left for the mirror to remove. ``monkeypatch.context()`` gives the space back."""
    import tempfile

    from granulemap.local import mirror

    make_temporary = tempfile.mkstemp

    def mkstemp(dir: str, prefix: str) -> tuple[int, str]:  # noqa: A002 - mkstemp's own names
        fd, path = make_temporary(dir=dir, prefix=prefix)
        if not refused(dir):
            return fd, path
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), path

    monkeypatch.setattr(mirror.tempfile, "mkstemp", mkstemp)


def change_in_template(monkeypatch: pytest.MonkeyPatch, function: str, **changes: Any) -> None:
    """Local engines started in the test read template.yaml with ``function``'s fields changed (``changes``, as
    dataclasses.replace takes them: ``timeout=5``, ``memory_size=450``)."""
    import dataclasses

    from granulemap.local import engine

    read = engine.read_local_template

    def changed(*args: Any, **kwargs: Any) -> Any:
        template = read(*args, **kwargs)
        template.functions[function] = dataclasses.replace(template.functions[function], **changes)
        return template

    monkeypatch.setattr(engine, "read_local_template", changed)


def itemised_recipe(name: str, items: int, process: str, *, description: str | None = "Test recipe",
                    params: str = "") -> str:
    """The source of a recipe module (its ``recipe``) for tests of the local engine: ``items`` items named
    item-0, item-1, ... that hold no granules (its file pattern matches none), each given to ``process`` (the
    body of ``process(self, item, params, access, run)``), with ``params`` the fields of its Params (one a line) and
    no products. ``description`` None leaves it out."""
    body = textwrap.indent(textwrap.dedent(process).strip(), " " * 8)
    fields = textwrap.indent(textwrap.dedent(params).strip(), " " * 4)
    described = f"    description = {description!r}\n" if description is not None else ""
    return (
        "from pydantic import BaseModel, ConfigDict\n\n"
        "from granulemap.models import Item\n"
        "from granulemap.recipes.base import Recipe\n\n\n"
        "class Params(BaseModel):\n"
        "    model_config = ConfigDict(extra=\"forbid\")\n"
        f"{fields}\n\n\n"
        "class TestRecipe(Recipe):\n"
        f"    name = {name!r}\n"
        f"{described}"
        "    file_pattern = \"*.never\"\n"
        "    Params = Params\n\n"
        "    def make_items(self, granules, params, execution):\n"
        f"        return [Item(id=f\"item-{{i}}\", granules=[]) for i in range({items})]\n\n"
        "    def process(self, item, params, access, run):\n"
        f"{body}\n\n"
        "    def combine(self, results, run, params, bucket):\n"
        "        return []\n\n\n"
        "recipe = TestRecipe()\n"
    )


class LogCapture(logging.Handler):
    """Every log record (message, arguments, extra fields, exception text), and everything the process's existing
    stream handlers print: Powertools' handler writes to the sys.stdout of import time, which no capture fixture
    replaces, so its stream is swapped for the duration of the test."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []
        self.printed = io.StringIO()

    def emit(self, record: logging.LogRecord) -> None:
        exc = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        self.records.append(f"{record.name} {record.getMessage()} {vars(record)!r} {exc}")

    def text(self) -> str:
        return "\n".join(self.records) + "\n" + self.printed.getvalue()


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    return [h for lg in loggers for h in lg.handlers
            if type(h) is logging.StreamHandler or type(h).__module__.startswith("aws_lambda_powertools")]


def set_stream(handler: logging.StreamHandler, stream: Any) -> Any:
    """``handler.setStream``, also for a handler whose stream an earlier test closed (a handler made while pytest
    captured the output holds pytest's stream, closed since): setStream would flush it and fail."""
    if getattr(handler.stream, "closed", False):
        old, handler.stream = handler.stream, stream
        return old
    return handler.setStream(stream)


@pytest.fixture
def log_capture() -> Iterator[LogCapture]:
    capture = LogCapture()
    loggers = {name: logging.getLogger(name) for name in ("", "granulemap", "earthaccess")}
    levels = {name: lg.level for name, lg in loggers.items()}
    streams = [(h, set_stream(h, capture.printed)) for h in _stream_handlers()]
    for name, lg in loggers.items():
        lg.addHandler(capture)
        lg.setLevel(logging.INFO if name == "" else logging.DEBUG)
    try:
        yield capture
    finally:
        for name, lg in loggers.items():
            lg.removeHandler(capture)
            lg.setLevel(levels[name])
        for handler, stream in streams:
            set_stream(handler, stream)
