"""Worker processes forked from a fork server of the engine's own, which has already imported the handlers' libraries.

A spawned worker spends about 0.6 s of CPU importing what the handlers need (numpy, h5py, boto3, Powertools,
pydantic, matplotlib) before its first invocation. On two cores the second worker's imports fell in the middle of the
items phase and took a core from the granules. Here one server process imports them once, while the engine process
starts moto, and every worker is a fork of it: ready at once, and sharing those pages with its siblings.

This is multiprocessing's own fork server (``multiprocessing.forkserver.ForkServer``), but a private instance: the
module's global one is shared by everything in the process, so its preload and its environment (taken when it starts)
would leak into other users of the ``forkserver`` start method (tests/test_atl06_store.py starts writers that way).
``context`` gives a ``multiprocessing`` context whose processes are forked by this instance; a
``ProcessPoolExecutor(mp_context=...)`` takes it as it is.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import signal
from collections.abc import Iterable
from multiprocessing import spawn, util
from typing import Any

try:
    from multiprocessing import forkserver, popen_forkserver
    from multiprocessing.context import ForkServerContext, ForkServerProcess, reduction, set_spawning_popen
except ImportError:  # no fork server on this platform (Windows): the engine spawns its workers
    forkserver = None  # type: ignore[assignment]

LOG_ENV = "GRANULEMAP_PRELOAD_LOG"
"""Where the fork server's own output goes (granulemap/local/preload.py reads it): the run's log, like the workers'."""


def available() -> bool:
    """The fork server needs to pass file descriptors over a Unix socket (Linux and macOS; not Windows)."""
    return forkserver is not None and "forkserver" in multiprocessing.get_all_start_methods()


class WarmForkServer:
    """One fork server process that imports ``preload`` when it starts; ``stop()`` ends it (its children keep
    running until their own end)."""

    def __init__(self, preload: Iterable[str]):
        self._server = forkserver.ForkServer()
        self._server.set_forkserver_preload(list(preload))

    def start(self) -> None:
        """Start the server process and return at once: it imports ``preload`` in the background, with this
        process's current environment, from a fresh interpreter's sys.path (Python 3.12's fork server does not use
        the sys.path it is handed: a module found only through a folder added to this process's sys.path is not
        preloaded, and its workers import it on first use). The first process forked waits for those imports."""
        self._server.ensure_running()

    def stop(self) -> None:
        """End the server at once (SIGKILL): it holds nothing to save, and a normal interpreter exit, tearing down
        what it imported, took 0.1-0.2 s that a local run waited for at its end. Its children keep running until
        their own end (the engine shuts its pool down first)."""
        pid = self._server._forkserver_pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._server._stop()  # closes its sockets, reaps it

    def context(self) -> multiprocessing.context.BaseContext:
        return _Context(self._server)


_MAIN_MODULE_KEYS = ("init_main_from_name", "init_main_from_path")
"""What multiprocessing hands a child so that it imports the parent's ``__main__`` (multiprocessing.spawn)."""

if forkserver is not None:

    class _Popen(popen_forkserver.Popen):
        def __init__(self, process_obj: Any, server: forkserver.ForkServer):
            self._server = server
            super().__init__(process_obj)

        def _launch(self, process_obj: Any) -> None:
            # CPython 3.12's popen_forkserver.Popen._launch, except that it asks this server, not the global one, and
            # that the child does not import the caller's main module: multiprocessing would run a script again in
            # every worker (a script without an `if __name__ == "__main__":` guard that opens a Workspace then fails
            # in each worker), and the workers only run functions of granulemap's modules.
            prep_data = {k: v for k, v in spawn.get_preparation_data(process_obj._name).items()
                         if k not in _MAIN_MODULE_KEYS}
            buf = io.BytesIO()
            set_spawning_popen(self)
            try:
                reduction.dump(prep_data, buf)
                reduction.dump(process_obj, buf)
            finally:
                set_spawning_popen(None)
            self.sentinel, w = self._server.connect_to_new_process(self._fds)
            _parent_w = os.dup(w)
            self.finalizer = util.Finalize(self, util.close_fds, (_parent_w, self.sentinel))
            with open(w, "wb", closefd=True) as f:
                f.write(buf.getbuffer())
            self.pid = forkserver.read_signed(self.sentinel)

    class _Process(ForkServerProcess):
        """A process forked by the server its context gives it (the server stays here: the process object itself is
        pickled to the child)."""

        _server: forkserver.ForkServer | None = None

        @staticmethod
        def _Popen(process_obj: Any) -> _Popen:  # noqa: N802 - multiprocessing's name
            return _Popen(process_obj, process_obj._server)

        def __getstate__(self) -> dict[str, Any]:
            return {k: v for k, v in self.__dict__.items() if k != "_server"}

    class _Context(ForkServerContext):
        def __init__(self, server: forkserver.ForkServer):
            self._server = server

        def Process(self, *args: Any, **kwargs: Any) -> _Process:  # type: ignore[override]  # noqa: N802
            process = _Process(*args, **kwargs)
            process._server = self._server
            return process
