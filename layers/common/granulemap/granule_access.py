"""How a recipe reaches a granule: in place on a local disk, or in S3 (with DAAC credentials when the run has them),
whole or by ranges."""

from __future__ import annotations

import contextlib
import gc
import io
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

from botocore.exceptions import ClientError

from granulemap.credentials import forget_cached
from granulemap.errors import CredentialsExpired, GranuleUnreadable, TransientError
from granulemap.models import RunContext, local_path_of
from granulemap.storage import NETWORK_ERRORS, split_s3_url, translate_s3_error

EXPIRED_CODES = {"ExpiredToken", "ExpiredTokenException", "InvalidToken", "TokenRefreshRequired"}
"""S3 error codes of temporary credentials that have expired or been revoked."""

HEAD_SIZE = 8 << 20
"""Bytes of an S3 object the first ranged GET asks for (``GranuleAccess.open``), which says the object's size: all
of a MUR25 granule (about 2 MB), and the netCDF-4 header and first chunk index of larger ones. Kept while the file is
open."""

SMALL_BLOCK = 512 << 10
"""Reads shorter than this beyond the head (HDF5 metadata: chunk indexes a few KB each, scattered through a file as
its chunks were written) are served from blocks of this size, ``SMALL_BLOCKS`` of them kept (least recently used
dropped, fsspec's BlockCache, imported only when a file needs it: a MUR25 granule never does): one GET for the nodes
that lie together, not one GET per node. Longer reads are one GET each of just what is read, unless ``prefetch``
asked for it."""

SMALL_BLOCKS = 16

MERGE_GAP = 1 << 20
"""``prefetch`` fetches ranges this close together in one GET, with the bytes between them."""

MAX_GET = 4 << 20
"""``prefetch``'s largest GET: at S3's 20-30 ms to a first byte and 80-90 MB/s from Lambda (estimate's assumptions),
a GET of this size spends about two thirds of its time moving bytes, and ``PREFETCH_THREADS`` of them overlap."""

PREFETCH_AHEAD = 32 << 20
"""Bytes ``prefetch`` has fetched or is fetching ahead of the reads at the most (a GET larger than this alone):
the memory that lets the next chunks come while the ones read are reduced."""

PREFETCH_THREADS = 4
"""GETs of ``prefetch`` in flight at once."""

_CONTENT_RANGE = re.compile(r"bytes \d+-\d+/(\d+)")

_gc_paused = {"files": 0, "was_enabled": False}
"""The cyclic garbage collector is paused while a RangedFile has prefetch threads (``_pause_gc``)."""
_gc_pause_lock = threading.Lock()


def _pause_gc() -> None:
    """Pause the cyclic garbage collector while prefetch threads run. A collection runs in whichever thread happens
    to trigger it, and freeing an h5py object takes h5py's global lock, which the reading thread holds through each
    h5py read: a prefetch thread collecting garbage would then wait for the reader while holding what the reader
    may wait for (botocore's connection pool, a Future), and both would wait forever. The threads themselves never
    hold an h5py object; with no collection in them they never take that lock. (Code that calls gc.enable() while
    such a file is open undoes this.)"""
    with _gc_pause_lock:
        if _gc_paused["files"] == 0:
            _gc_paused["was_enabled"] = gc.isenabled()
            gc.disable()
        _gc_paused["files"] += 1


def _resume_gc() -> None:
    with _gc_pause_lock:
        _gc_paused["files"] -= 1
        if _gc_paused["files"] == 0 and _gc_paused["was_enabled"]:
            gc.enable()


@dataclass
class _Get:
    """One ranged GET of ``prefetch``: bytes ``start`` to ``stop - 1``, holding ``unread`` ranges still to read;
    ``done`` once started, until its last range is read or let go."""

    start: int
    stop: int
    unread: int = 0
    done: Future[bytes] | None = None


class RangedFile(io.RawIOBase):
    """A read-only, seekable binary file over an object that is never held whole, for h5py (h5netcdf and xarray open
    it too). A read is served from the object's first ``len(head)`` bytes, or from a range that ``prefetch`` was
    asked for, or from a small block (``SMALL_BLOCK``), or else by one fetch of just its bytes. ``fetch(start,
    stop)`` gets bytes ``start`` to ``stop - 1`` (one ranged GET, from any thread); ``requests`` and
    ``bytes_fetched`` count them (the head's included)."""

    def __init__(self, fetch: Callable[[int, int], bytes], size: int, *, name: str, head: bytes = b""):
        super().__init__()
        self.name, self.size = name, size
        self.requests, self.bytes_fetched = (1, len(head)) if head else (0, 0)
        self._fetch, self._head, self._pos = fetch, head, 0
        self._small: Any = None  # fsspec's BlockCache, made at the first short read beyond the head
        self._parts: dict[int, tuple[int, _Get, int]] = {}
        """offset → (size, its GET, its place in the order told): the ranges ``prefetch`` was asked for, until read
        or let go."""
        self._told: deque[tuple[int, int]] = deque()
        """(place, offset) of the ranges in ``_parts``, in the order told."""
        self._places = 0
        self._queue: deque[_Get] = deque()
        """GETs of ``prefetch`` not started yet, in the order their ranges will be read."""
        self._ahead = 0
        """Bytes of the started GETs whose ranges are not all read yet."""
        self._pool: ThreadPoolExecutor | None = None
        self._count = threading.Lock()

    def _fetch_exact(self, start: int, stop: int) -> bytes:
        stop = min(stop, self.size)
        data = self._fetch(start, stop)
        if len(data) != stop - start:  # a response cut short
            raise TransientError(f"{self.name}: asked for bytes {start}-{stop - 1} of {self.size}, got {len(data)}")
        with self._count:
            self.requests += 1
            self.bytes_fetched += len(data)
        return data

    def prefetch(self, ranges: Iterable[tuple[int, int]]) -> None:
        """Fetch these (offset, size) ranges ahead of the reads, each to be read by one read of exactly it (an HDF5
        chunk), in the order given, which must be the order they are read in: ``PREFETCH_AHEAD`` bytes ahead at the
        most, ``PREFETCH_THREADS`` GETs at a time; a range that starts within ``MERGE_GAP`` after the end of one
        still to fetch joins its GET, up to ``MAX_GET``. A GET's bytes are dropped once all its ranges are read or
        let go: a range is let go when a range told after it is read first, or when it is read at another size (a
        range let go is fetched when read, if ever). Ranges beyond the object's end are left to the reads to find."""
        if self.closed:
            raise ValueError(f"{self.name}: prefetch on a closed file")
        for offset, size in ranges:
            if size <= 0 or offset in self._parts or offset + size <= len(self._head) or offset + size > self.size:
                continue
            get = next((g for g in reversed(self._queue) if g.stop <= offset <= g.stop + MERGE_GAP
                        and offset + size - g.start <= MAX_GET), None)
            if get is None:
                get = _Get(offset, offset)
                self._queue.append(get)
            get.stop = offset + size
            get.unread += 1
            self._parts[offset] = (size, get, self._places)
            self._told.append((self._places, offset))
            self._places += 1
        self._start_gets()

    def _start_gets(self) -> None:
        while self._queue and (self._ahead == 0 or self._ahead + self._queue[0].stop - self._queue[0].start
                               <= PREFETCH_AHEAD):
            get = self._queue.popleft()
            if self._pool is None:
                _pause_gc()
                self._pool = ThreadPoolExecutor(PREFETCH_THREADS, thread_name_prefix="granule-range")
            get.done = self._pool.submit(self._fetch_exact, get.start, get.stop)
            self._ahead += get.stop - get.start

    def _let_go(self, offset: int) -> None:
        """Take the told range at ``offset`` out of ``_parts``; its GET is dropped (or not started) if that was its
        last range."""
        _, get, _ = self._parts.pop(offset)
        get.unread -= 1
        if get.unread == 0:
            if get.done is None:
                self._queue.remove(get)
            else:
                self._ahead -= get.stop - get.start
                get.done = None

    def _fetch_now(self, get: _Get) -> None:
        """Fetch a GET not started yet, in this thread (its range is wanted before its turn)."""
        self._queue.remove(get)
        get.done = Future()
        self._ahead += get.stop - get.start
        try:
            get.done.set_result(self._fetch_exact(get.start, get.stop))
        except BaseException as exc:  # its other ranges raise it too when read, rather than wait
            get.done.set_exception(exc)
            raise

    def ready(self, offset: int) -> None:
        """Wait until the told range at ``offset`` has come (fetching its GET now if not started); raise its GET's
        error if it failed. A reader through h5py must call this before the read: h5py holds a global lock through
        each read, and a thread that waits inside it for another thread waits forever if that one ever needs the
        lock (to free an h5py object: ``_pause_gc`` keeps the prefetch threads from it, this keeps the reader from
        waiting there)."""
        found = self._parts.get(offset)
        if found is None:
            return
        get = found[1]
        if get.done is None:
            self._fetch_now(get)
        else:
            get.done.result()

    def _prefetched(self, pos: int, stop: int) -> memoryview | None:
        """The range ``pos``-``stop`` if ``prefetch`` was asked for exactly it (waiting for its GET); None if not.
        The ranges told before it and still unread are let go."""
        found = self._parts.get(pos)
        if found is None:
            return None
        if found[0] != stop - pos:
            self._let_go(pos)
            self._start_gets()
            return None
        while self._told and self._told[0][0] < found[2]:
            place, offset = self._told.popleft()
            if offset in self._parts and self._parts[offset][2] == place:
                self._let_go(offset)
        self._told.popleft()  # this one
        self.ready(pos)
        get = found[1]
        del self._parts[pos]
        assert get.done is not None
        data = memoryview(get.done.result())[pos - get.start:stop - get.start]
        get.unread -= 1
        if get.unread == 0:
            self._ahead -= get.stop - get.start
            get.done = None  # its bytes go with the last range read
        self._start_gets()
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError(f"{self.name}: cannot seek to {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")
        pos, stop = self._pos, min(self._pos + out.nbytes, self.size)
        if pos >= stop:
            return 0
        data: bytes | memoryview | None
        if stop <= len(self._head):
            data = memoryview(self._head)[pos:stop]
        elif (data := self._prefetched(pos, stop)) is not None:
            pass
        elif stop - pos >= SMALL_BLOCK:
            data = self._fetch_exact(pos, stop)
        else:
            if self._small is None:
                from fsspec.caching import BlockCache

                self._small = BlockCache(SMALL_BLOCK, self._fetch_exact, self.size, SMALL_BLOCKS)
            data = self._small._fetch(pos, stop)
        out[:len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:  # a prefetch thread that drops the file's last reference closes it: it cannot wait for itself
                pool.shutdown(wait=not threading.current_thread().name.startswith("granule-range"),
                              cancel_futures=True)
            finally:
                _resume_gc()
        self._parts.clear()
        self._told.clear()
        self._queue.clear()
        super().close()


class GranuleAccess:
    """Opens the granules of one item. Credentials are read by reference, cached and refreshed before expiry."""

    def __init__(self, run: RunContext, credentials_loader: Any | None = None):
        self.run = run
        self._credentials_loader = credentials_loader

    def local_path(self, url: str) -> str | None:
        path = local_path_of(url)
        if path is not None and not os.path.isfile(path):
            raise GranuleUnreadable(f"granule {path} does not exist or is not a file")
        return path

    def s3_credentials(self) -> dict[str, str] | None:
        """Temporary DAAC credentials (accessKeyId, secretAccessKey, sessionToken), or None to use the role's own."""
        if self.run.credentials is None or self._credentials_loader is None:
            return None
        return self._credentials_loader(self.run.credentials)

    def credentials_rejected(self, used: dict[str, str] | None) -> None:
        """S3 refused the credentials ``used`` as expired (the read then raises CredentialsExpired, which the state
        machine retries): forget this process's cached copy, so that the retry, perhaps in this same warm Lambda,
        reads the stored parameter again, or gets new credentials if it still holds these."""
        if self.run.credentials is not None and used is not None:
            forget_cached(self.run.credentials, rejected=used)

    def _s3_client(self, creds: dict[str, str] | None) -> Any:
        from granulemap.storage import s3_client

        if creds is None:
            return s3_client()
        import boto3

        return boto3.client(
            "s3",
            aws_access_key_id=creds["accessKeyId"],
            aws_secret_access_key=creds["secretAccessKey"],
            aws_session_token=creds["sessionToken"],
        )

    def read_bytes(self, url: str) -> bytes:
        """The whole granule in memory (local file, or S3 object in one GET). ``open`` holds no more of it than it
        reads: a granule of hundreds of MB needs it."""
        path = self.local_path(url)
        if path is not None:
            with open(path, "rb") as f:
                return f.read()
        bucket, key = split_s3_url(url)
        creds = self.s3_credentials()
        with self._s3_errors(url, creds):
            return self._s3_client(creds).get_object(Bucket=bucket, Key=key)["Body"].read()

    @contextlib.contextmanager
    def open(self, url: str) -> Iterator[BinaryIO]:
        """The granule as a read-only binary file: a local file, or an S3 object read by ranges (``RangedFile``: only
        the parts read are fetched and held, all of an object up to ``HEAD_SIZE`` in one GET). Errors of S3 are this
        class's (expired credentials: CredentialsExpired; a missing object: GranuleUnreadable; throttling and the
        network: StorageThrottled; the object replaced while read: TransientError), raised through h5py's reads as
        they are."""
        path = self.local_path(url)
        if path is not None:
            with open(path, "rb") as f:
                yield f
            return
        bucket, key = split_s3_url(url)
        creds = self.s3_credentials()
        client = self._s3_client(creds)
        with self._s3_errors(url, creds):
            first = client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{HEAD_SIZE - 1}")
            head = first["Body"].read()
        etag = first.get("ETag")
        found = _CONTENT_RANGE.fullmatch(first.get("ContentRange") or "")
        size = int(found[1]) if found else len(head)  # no Content-Range: the whole object came

        def fetch(start: int, stop: int) -> bytes:
            with self._s3_errors(url, creds):
                extra = {"IfMatch": etag} if etag else {}
                return client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{stop - 1}",
                                         **extra)["Body"].read()

        with RangedFile(fetch, size, name=url, head=head) as f:
            yield f  # type: ignore[misc]

    @contextlib.contextmanager
    def _s3_errors(self, url: str, creds: dict[str, str] | None) -> Iterator[None]:
        """S3's errors reading ``url`` as this package's (``open``)."""
        try:
            yield
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in EXPIRED_CODES:
                self.credentials_rejected(creds)
                raise CredentialsExpired(f"S3 credentials expired while reading {url}") from exc
            if code in {"NoSuchKey", "404", "AccessDenied", "403"}:
                raise GranuleUnreadable(f"cannot read granule {url}: {code}") from exc
            if code in {"InvalidRange", "416"}:  # the head's range of an empty object; a range beyond the end
                raise GranuleUnreadable(f"cannot read granule {url}: S3 refused the range (InvalidRange): the object "
                                        "is empty or shorter than its contents say") from exc
            if code in {"PreconditionFailed", "412"}:  # If-Match: not the object the first range came from
                raise TransientError(f"granule {url} was replaced while being read: read it again") from exc
            raise translate_s3_error(exc, f"reading {url}") from exc
        except NETWORK_ERRORS as exc:  # a timeout, a response cut short: StorageThrottled, retried
            raise translate_s3_error(exc, f"reading {url}") from exc
