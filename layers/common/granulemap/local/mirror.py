"""Keeps the emulated bucket's contents on disk, so that whatever a local run finished survives the run being killed.

Every S3 write and delete reaches the moto server, which runs in the engine's process; the mirror hooks moto's S3
backend there and copies each object of our bucket into a folder (written to a temporary name, then renamed, so a
file on disk is always a complete object). The next run in the same folder loads it back before it starts.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from granulemap.errors import GranulemapError

PART = ".part-"
"""The start of the name of a file being written (renamed to its object's name once whole)."""

REFUSED_CODE = "LocalStateNotWritten"
"""The S3 error code of a write or delete that the disk refused (``BucketMirror._kept``)."""

T = TypeVar("T")

_KEY_LOCKS = 64
"""How many locks the keys' changes share (``BucketMirror._lock``)."""


class StateNotKept(GranulemapError):
    """A local run's state (its emulated bucket's folder) could not be changed on disk: the run was stopped."""


class BucketMirror:
    def __init__(self, bucket: str, directory: Path):
        self.bucket = bucket
        self.directory = directory.resolve()
        self._root = str(self.directory) + os.sep
        self._made: set[str] = set()
        self._originals: dict[str, Any] = {}
        self.refused: tuple[Path, OSError] | None = None
        """The first change of the folder that the disk refused (the file, the error), for the engine to stop the run
        (it clears it as the next run starts)."""
        self._locks = [threading.Lock() for _ in range(_KEY_LOCKS)]

    def _path(self, key: str) -> Path | None:
        """Where ``key`` is kept; None for a key that would land outside the folder ('..') or names a folder.

        Lexical (no symlinks are followed, as a resolve() would: nothing but this class writes in the folder),
        because it runs on every S3 write of a local run, in the engine's one process."""
        if key.endswith("/"):
            return None
        path = os.path.normpath(os.path.join(self._root, key))
        return Path(path) if path.startswith(self._root) else None

    @contextlib.contextmanager
    def _writing(self, key: str, value: bytes) -> Iterator[None]:
        """Write ``value`` to a temporary file beside ``key``'s, run the body (the put into the emulated bucket), then
        rename the file to ``key``'s. What fails first leaves both as they were: a disk that is full fails the put
        before the bucket holds the object (a result the next run would not find, a CSV whose new rows a later run
        would merge into the older one on disk); a put that fails leaves no file. A write the disk refuses is an S3
        error for the caller (``_kept``)."""
        path = self._path(key)
        if path is None:
            yield
            return
        tmp = self._kept(path, lambda: self._temporary(path, value))
        try:
            yield
        except BaseException:
            os.unlink(tmp)
            raise
        self._kept(path, lambda: os.replace(tmp, path))

    def _temporary(self, path: Path, value: bytes) -> str:
        """``value`` in a new temporary file in ``path``'s folder (made if missing); its name."""
        folder = str(path.parent)
        if folder not in self._made:
            os.makedirs(folder, exist_ok=True)
            self._made.add(folder)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=PART)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(value)
        except BaseException:
            os.unlink(tmp)
            raise
        return tmp

    def _delete(self, key: str) -> None:
        path = self._path(key)
        if path is not None:
            self._kept(path, lambda: path.unlink(missing_ok=True))

    def _kept(self, path: Path, change: Callable[[], T]) -> T:
        """``change()``; an OSError of it (a disk full, read-only, gone) noted in ``refused`` (the first one) and
        raised as an S3 error of its own, which the caller's S3 client does not retry, and which the engine takes for
        a reason to stop the run (moto's server logged any other exception's traceback on the user's terminal)."""
        try:
            return change()
        except OSError as exc:
            from moto.s3.exceptions import S3ClientError

            if self.refused is None:
                self.refused = (path, exc)
            raise S3ClientError(REFUSED_CODE, f"the local run's state cannot be written: {path}: "
                                              f"{exc.strerror or exc}") from exc

    def _lock(self, key: str) -> threading.Lock:
        """The lock of ``key``'s changes: two of one key at once (two puts, a put and a delete) each write the disk and
        the bucket in memory, in turn, so that both end with the same one. Keys share ``_KEY_LOCKS`` locks."""
        return self._locks[hash(key) % _KEY_LOCKS]

    def restore(self, put: Callable[[str, bytes], Any], stale: Callable[[str], bool] = lambda key: False) -> int:
        """Put every mirrored object back into the (new, empty) emulated bucket with ``put(key, body)``; returns how
        many. What a killed run left is removed instead: files half written (``PART``), and the objects ``stale``
        names (the locks its steps held: the folder is this engine's alone now, so no holder of one is alive, and a
        step waited for its lease to end, 15 minutes, without a word)."""
        count = 0
        if not self.directory.is_dir():
            return 0
        for path in sorted(self.directory.rglob("*")):
            if not path.is_file():
                continue
            key = path.relative_to(self.directory).as_posix()
            if path.name.startswith(PART) or stale(key):
                path.unlink(missing_ok=True)
                continue
            put(key, path.read_bytes())
            count += 1
        return count

    def install(self) -> None:
        from moto.s3.models import S3Backend

        mirror = self
        put, delete = S3Backend.put_object, S3Backend.delete_object
        self._originals = {"put_object": put, "delete_object": delete}

        # The disk first: a write or delete it refuses (full, read-only) fails the request before the bucket in
        # memory changes, so that what the run sees and what the next run restores do not differ.
        def put_object(backend: Any, bucket_name: str, key_name: str, value: bytes, *args: Any, **kwargs: Any) -> Any:
            if bucket_name != mirror.bucket:
                return put(backend, bucket_name, key_name, value, *args, **kwargs)
            with mirror._lock(key_name), mirror._writing(key_name, bytes(value)):
                return put(backend, bucket_name, key_name, value, *args, **kwargs)

        def delete_object(backend: Any, bucket_name: str, key_name: str, *args: Any, **kwargs: Any) -> Any:
            if bucket_name != mirror.bucket:
                return delete(backend, bucket_name, key_name, *args, **kwargs)
            with mirror._lock(key_name):
                mirror._delete(key_name)
                return delete(backend, bucket_name, key_name, *args, **kwargs)

        S3Backend.put_object = put_object  # type: ignore[method-assign]
        S3Backend.delete_object = delete_object  # type: ignore[method-assign]

    def uninstall(self) -> None:
        from moto.s3.models import S3Backend

        for name, original in self._originals.items():
            setattr(S3Backend, name, original)
        self._originals = {}
