"""The workers' AWS requests to the local moto server, carried over a local socket instead of TCP/HTTP.

Why: moto's server is werkzeug's development server, which closes the connection after every response, so each
S3 request of a handler cost a TCP connection, a new server thread and HTTP parsing in Python on both sides — most
of the engine process's CPU per item (BENCHMARKS.md, "Local engine"). Here:

- the worker side is a botocore ``before-send`` hook, installed in each worker process. botocore does everything it
  always does (parameter validation, serialization, signing, retries, response parsing, checksums, error classes);
  only the last step, sending the prepared request, goes through a persistent Unix socket (one per thread) to the
  engine process instead of through urllib3 to the moto server's TCP port;
- the engine side hands each request to the moto server's own WSGI application (the same object its HTTP server
  calls, with the same environ that server builds: werkzeug's ``make_environ`` plus moto's header-name
  preservation), and returns what that application answers, as werkzeug's server would have sent it (status,
  headers plus ``Server`` and ``Date``, no body for HEAD/1xx/204/304; an unhandled error becomes a 500).

So the handlers' code and what S3 (or any other emulated service) answers them are unchanged; requests to any
other address (h5coro's own HTTP reads, NASA's servers) are untouched. Nothing on the worker side imports moto.
"""

from __future__ import annotations

import email.utils
import io
import os
import pickle
import socket
import struct
import sys
import tempfile
import threading
import uuid
from typing import Any
from urllib.parse import unquote, urlsplit

CHANNEL_ENV = "GRANULEMAP_LOCAL_CHANNEL"
"""Worker environment variable: ``<unix socket path> <endpoint URL>``; the hook serves requests to that endpoint."""

_HEADER = struct.Struct("!Q")
_NO_BODY_STATUS = {204, 304}


# ---- framing: 8-byte length + pickle ------------------------------------------------------------------------------
def _send(sock: socket.socket, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    header = _HEADER.pack(len(data))
    if len(data) < 65536:
        sock.sendall(header + data)
    else:
        sock.sendall(header)
        sock.sendall(data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise EOFError("local channel closed")
        got += k
    return bytes(buf)


def _recv(sock: socket.socket) -> Any:
    (size,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    return pickle.loads(_recv_exact(sock, size))


# ---- engine side --------------------------------------------------------------------------------------------------
def _wsgi_dance(s: str) -> str:
    return s.encode().decode("latin1")


class ChannelServer:
    """Answers the workers' requests with the moto server's WSGI application, one thread per worker connection."""

    def __init__(self, server_address: tuple[str, int], app: Any = None):
        self.app = app
        self._app_ready = threading.Event()
        if app is not None:
            self._app_ready.set()
        self.server_name, self.server_port = str(server_address[0]), str(server_address[1])
        self._dir: str | None = None
        if sys.platform.startswith("linux"):
            # Linux's abstract namespace: no file, so nothing is left behind by a process that is killed (a killed
            # local run, the kill-and-resume tests), as the socket folders in /tmp were. Such a socket has no file
            # permissions and its name is listed in /proc/net/unix: _accept_loop serves only this user's processes
            # (the messages are pickles, which run code when loaded).
            self.path = f"@granulemap-channel-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        else:
            self._dir = tempfile.mkdtemp(prefix="granulemap-channel-")
            self.path = os.path.join(self._dir, "s")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(socket_address(self.path))
        self._listener.listen(64)
        self._closed = False
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, name="granulemap-channel", daemon=True)
        self._thread.start()

    def attach(self, app: Any) -> None:
        """The WSGI application to answer with (the moto server's, once it has started)."""
        self.app = app
        self._app_ready.set()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if not _same_user(conn):
                conn.close()
                continue
            with self._lock:
                self._connections.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name="granulemap-channel-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while True:
                try:
                    method, url, headers, body = _recv(conn)
                except (EOFError, OSError):
                    return
                _send(conn, self.handle(method, url, headers, body))
        except OSError:
            return
        finally:
            with self._lock:
                self._connections.discard(conn)
            conn.close()

    def environ(self, method: str, url: str, headers: list[tuple[str, str]], body: bytes) -> dict[str, Any]:
        """What werkzeug's ``WSGIRequestHandler.make_environ`` and moto's ``MotoRequestHandler.make_environ`` build
        for this request arriving over HTTP/1.1 (request target as botocore's urllib3 session sends it)."""
        parsed = urlsplit(url)
        target = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
        request_url = urlsplit(target)
        environ: dict[str, Any] = {
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "SERVER_SOFTWARE": "granulemap-local-channel",
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": _wsgi_dance(unquote(request_url.path)),
            "QUERY_STRING": _wsgi_dance(request_url.query),
            "REQUEST_URI": _wsgi_dance(target),
            "RAW_URI": _wsgi_dance(target),
            "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_PORT": 0,
            "SERVER_NAME": self.server_name,
            "SERVER_PORT": self.server_port,
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
        transfer_encoding = ""
        for key, value in headers:
            if key.lower() == "transfer-encoding":
                transfer_encoding = value
            if "_" in key:
                continue
            key = key.upper().replace("-", "_")
            value = value.replace("\r\n", "")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = f"HTTP_{key}"
                if key in environ:
                    value = f"{environ[key]},{value}"
            environ[key] = value
        if "chunked" in transfer_encoding.lower():
            # werkzeug de-chunks the HTTP body and reads to its end; the body here was never HTTP-chunked.
            environ["wsgi.input_terminated"] = True
        # moto's MotoRequestHandler.make_environ: keep S3 metadata header names that contain underscores.
        from moto.core.request import (
            PRESERVED_HEADER_NAMES_ENVIRON_KEY,
            environ_key_for_header,
            should_preserve_original_header_name,
        )

        dashed_keys = {environ_key_for_header(name) for name, _ in headers if "_" not in name}
        names: dict[str, str] = {}
        values: dict[str, list[str]] = {}
        for name, value in headers:
            if not should_preserve_original_header_name(name):
                continue
            key = environ_key_for_header(name)
            if key in dashed_keys:
                continue
            names.setdefault(key, name)
            values.setdefault(key, []).append(value.replace("\r\n", ""))
        for key, key_values in values.items():
            environ[key] = ",".join(key_values)
        environ[PRESERVED_HEADER_NAMES_ENVIRON_KEY] = names
        return environ

    def handle(self, method: str, url: str, headers: list[tuple[str, str]],
               body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        environ = self.environ(method, url, headers, body)
        self._app_ready.wait()
        try:
            return self._run(environ)
        except Exception:  # noqa: BLE001 - as werkzeug's server: an unhandled error is a 500 for the client
            import logging

            logging.getLogger(__name__).exception("error on local channel request %s %s", method, url)
            from werkzeug.exceptions import InternalServerError

            return self._run(environ, InternalServerError())

    def _run(self, environ: dict[str, Any], app: Any = None) -> tuple[int, list[tuple[str, str]], bytes]:
        started: dict[str, Any] = {}

        def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            started["status"], started["headers"] = status, response_headers
            return lambda data: chunks.append(data)

        chunks: list[bytes] = []
        result = (app or self.app)(environ, start_response)
        try:
            for data in result:
                chunks.append(data)
        finally:
            if hasattr(result, "close"):
                result.close()
        code = int(started["status"].split(None, 1)[0])
        response_headers = list(started["headers"])
        keys = {k.lower() for k, _ in response_headers}
        if "server" not in keys:
            response_headers.append(("Server", "granulemap-local-channel"))
        if "date" not in keys:
            response_headers.append(("Date", email.utils.formatdate(usegmt=True)))
        if environ["REQUEST_METHOD"] == "HEAD" or code < 200 or code in _NO_BODY_STATUS:
            return code, response_headers, b""
        return code, response_headers, b"".join(chunks)

    def close(self) -> None:
        self._closed = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            for conn in list(self._connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._thread.join(timeout=5)
        if self._dir is not None:
            try:
                os.unlink(self.path)
                os.rmdir(self._dir)
            except OSError:
                pass


# ---- worker side --------------------------------------------------------------------------------------------------
class _RawBody(io.BytesIO):
    """The ``raw`` of a botocore ``AWSResponse``: what it reads (``read``) and streams (``stream``)."""

    def stream(self, amt: int = 65536, **_: Any) -> Any:
        while chunk := self.read(amt):
            yield chunk


class _Hook:
    """botocore ``before-send`` hook: requests to ``endpoint`` are answered by ``_exchange``, others are untouched."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint.rstrip("/")

    def _exchange(self, method: str, url: str, headers: list[tuple[str, str]],
                  body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        raise NotImplementedError

    def __call__(self, request: Any, **_: Any) -> Any:
        url = request.url
        if not (url == self.endpoint or url.startswith(self.endpoint + "/") or url.startswith(self.endpoint + "?")):
            return None
        from botocore.awsrequest import AWSResponse

        body = request.body
        if body is None:
            data = b""
        elif isinstance(body, (bytes, bytearray, memoryview)):
            data = bytes(body)
        elif isinstance(body, str):
            data = body.encode("utf-8")
        else:
            data = body.read()
            if isinstance(data, str):
                data = data.encode("utf-8")
        headers = [(k, v.decode("latin-1") if isinstance(v, bytes) else str(v)) for k, v in request.headers.items()]
        status, response_headers, content = self._exchange(request.method, url, headers, data)
        merged: dict[str, str] = {}
        for key, value in response_headers:
            lower = key.lower()
            merged[lower] = f"{merged[lower]}, {value}" if lower in merged else value
        return AWSResponse(url, status, merged, _RawBody(content))


class InProcessClient(_Hook):
    """For the engine process's own boto3 clients: the same answer as over the channel, without a socket."""

    def __init__(self, server: ChannelServer, endpoint: str):
        super().__init__(endpoint)
        self.server = server

    def _exchange(self, method: str, url: str, headers: list[tuple[str, str]],
                  body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        return self.server.handle(method, url, headers, body)


def _same_user(conn: socket.socket) -> bool:
    """Whether the process at the other end of ``conn`` runs as this process's user (Linux's SO_PEERCRED; elsewhere
    the socket is a file in a folder only this user may enter)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return True
    _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid == os.getuid()


def socket_address(path: str) -> str:
    """The address to bind or connect for ``path``: a file's path, or ``@name`` for Linux's abstract namespace (a
    NUL byte first, which an environment variable cannot hold)."""
    return "\0" + path[1:] if path.startswith("@") else path


class ChannelClient(_Hook):
    """In a worker process: requests to ``endpoint`` go over the local channel (one connection per thread)."""

    def __init__(self, path: str, endpoint: str):
        super().__init__(endpoint)
        self.path = path
        self._local = threading.local()

    def _connection(self) -> socket.socket:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(socket_address(self.path))
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def _exchange(self, method: str, url: str, headers: list[tuple[str, str]],
                  body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        try:
            conn = self._connection()
            _send(conn, (method, url, headers, body))
            return _recv(conn)
        except (OSError, EOFError) as exc:
            self._drop()
            from botocore.exceptions import EndpointConnectionError

            raise EndpointConnectionError(endpoint_url=url, error=exc) from exc
        except BaseException:
            # Stopped half way (an invocation's timeout, an interrupt): the answer to this request may still come on
            # the connection, where the thread's next request would read it as its own. A new connection instead.
            self._drop()
            raise


def hook_sessions(hooks: list[_Hook]) -> Any:
    """Give ``hooks`` (``before-send`` handlers for their endpoints) to boto3's default session, if it exists, and to
    every (synchronous) botocore session created afterwards; aiobotocore's sessions, whose responses must be
    awaitable, keep sending over HTTP. Returns what undoes it (for new sessions, and for the default session of the
    moment)."""
    import boto3
    from botocore.session import Session

    register_builtin_handlers = Session._register_builtin_handlers

    def _register_builtin_handlers(self: Any, events: Any) -> None:
        register_builtin_handlers(self, events)
        if not type(self).__module__.startswith("aiobotocore"):
            for hook in hooks:
                events.register("before-send", hook)

    def on_default_session(action: str) -> None:
        if boto3.DEFAULT_SESSION is not None:  # made before this (the engine's fork server preloads it)
            for hook in hooks:
                getattr(boto3.DEFAULT_SESSION._session, action)("before-send", hook)

    Session._register_builtin_handlers = _register_builtin_handlers  # type: ignore[method-assign]
    on_default_session("register")

    def undo() -> None:
        Session._register_builtin_handlers = register_builtin_handlers  # type: ignore[method-assign]
        on_default_session("unregister")

    return undo


def install_client_hook(value: str | None = None) -> ChannelClient | None:
    """In a worker process: send this process's botocore requests to the local endpoint over the channel given
    by ``value`` (default: the ``GRANULEMAP_LOCAL_CHANNEL`` variable), through ``hook_sessions`` (for the
    process's life)."""
    value = value if value is not None else os.environ.get(CHANNEL_ENV)
    if not value:
        return None
    path, _, endpoint = value.partition(" ")
    hook = ChannelClient(path, endpoint)
    hook_sessions([hook])
    return hook
