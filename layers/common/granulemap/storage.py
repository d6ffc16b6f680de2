"""S3 access for the shared code. boto3 honours AWS_ENDPOINT_URL, which is how local runs reach the emulated S3.

Errors that are worth retrying become ``StorageThrottled`` so that the state machine's Retry matches them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import random
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionError, HTTPClientError, IncompleteReadError

from granulemap.errors import LockHeld, StorageThrottled

_THROTTLE_CODES = {"SlowDown", "503", "ServiceUnavailable", "RequestTimeout", "InternalError", "500"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
"""S3's answers for an object that does not exist (NotFound: HEAD's)."""
_CHANGED_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409", "NoSuchKey", "404"}
"""A conditional write refused: the object is not the version read (412), another conditional write of it is in
progress (409), or it was deleted since (If-Match on no object)."""


MAX_CONNECTIONS = 32
"""HTTP connections the shared client keeps: at least as many as the threads that use it at once (Aggregate's
``_READERS``). botocore's default is 10; a thread beyond the pool opens a connection (TLS handshake included, in
AWS) and discards it after one request. (The ATL06 store goes through s3fs, with its own connections.)"""


@functools.cache
def s3_client() -> Any:
    return boto3.client("s3", config=Config(retries={"max_attempts": 3, "mode": "standard"},
                                            max_pool_connections=MAX_CONNECTIONS))


NETWORK_ERRORS = (ConnectionError, HTTPClientError, IncompleteReadError)
"""botocore's errors of the network itself (no connection, a timeout, a response cut short): worth a retry."""


def zarr_store(bucket: str, key: str, *, read_only: bool = False) -> Any:
    """The Zarr store at s3://bucket/key (zarr's FsspecStore), with fresh listings (a cached listing could hide
    another writer's keys): what a recipe opens, ``zarr.open_group(zarr_store(bucket.name, key), mode="a")``, to keep
    a store of its own in the bucket, as atl06-cell-stats does. zarr is imported only when a store is made."""
    from zarr.storage import FsspecStore

    return FsspecStore.from_url(f"s3://{bucket}/{key.rstrip('/')}", read_only=read_only,
                                storage_options={"use_listings_cache": False})


def translate_s3_error(exc: Exception, what: str) -> Exception:
    if isinstance(exc, NETWORK_ERRORS):
        return StorageThrottled(f"S3 did not answer while {what}: {exc}")
    if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in _THROTTLE_CODES:
        return StorageThrottled(f"S3 throttled while {what}: {exc}")
    return exc


class Bucket:
    """A bucket with the few operations the pipeline needs."""

    def __init__(self, name: str, client: Any | None = None):
        self.name = name
        self._client = client

    @property
    def client(self) -> Any:
        return self._client or s3_client()

    def put_bytes(self, key: str, body: bytes, content_type: str = "application/octet-stream") -> None:
        try:
            self.client.put_object(Bucket=self.name, Key=key, Body=body, ContentType=content_type)
        except Exception as exc:
            raise translate_s3_error(exc, f"writing s3://{self.name}/{key}") from exc

    def put_json(self, key: str, value: Any) -> None:
        self.put_bytes(key, json.dumps(value, separators=(",", ":")).encode(), "application/json")

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
        except Exception as exc:
            raise translate_s3_error(exc, f"reading s3://{self.name}/{key}") from exc

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    def get_bytes_or_none(self, key: str) -> bytes | None:
        """The object, or None when there is none."""
        try:
            return self.get_bytes(key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING_CODES:
                return None
            raise

    def get_json_or_none(self, key: str) -> Any | None:
        data = self.get_bytes_or_none(key)
        return None if data is None else json.loads(data)

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.name, Key=key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING_CODES:
                return False
            raise translate_s3_error(exc, f"looking up s3://{self.name}/{key}") from exc

    def get_bytes_and_etag(self, key: str) -> tuple[bytes | None, str | None]:
        """The object and its ETag, for ``put_bytes_if_unchanged``; (None, None) when there is none."""
        try:
            response = self.client.get_object(Bucket=self.name, Key=key)
            return response["Body"].read(), response["ETag"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING_CODES:
                return None, None
            raise translate_s3_error(exc, f"reading s3://{self.name}/{key}") from exc
        except Exception as exc:
            raise translate_s3_error(exc, f"reading s3://{self.name}/{key}") from exc

    def put_bytes_if_unchanged(self, key: str, body: bytes, content_type: str, etag: str | None) -> bool:
        """Write ``key`` only if it is still the version read (``etag``), or still absent (None): an S3 conditional
        write. False when another writer changed it (or created, or deleted it) in between: read it again."""
        condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
        try:
            self.client.put_object(Bucket=self.name, Key=key, Body=body, ContentType=content_type, **condition)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _CHANGED_CODES:
                return False
            raise translate_s3_error(exc, f"writing s3://{self.name}/{key}") from exc
        except Exception as exc:
            raise translate_s3_error(exc, f"writing s3://{self.name}/{key}") from exc

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.name, Key=key)
        except Exception as exc:
            raise translate_s3_error(exc, f"deleting s3://{self.name}/{key}") from exc

    def delete_many(self, keys: list[str]) -> None:
        """Delete ``keys`` (DeleteObjects, 1,000 a request); a key S3 could not delete is an error naming it."""
        for i in range(0, len(keys), 1000):
            batch = keys[i:i + 1000]
            try:
                answer = self.client.delete_objects(Bucket=self.name, Delete={
                    "Objects": [{"Key": k} for k in batch], "Quiet": True})
            except Exception as exc:
                raise translate_s3_error(exc, f"deleting {len(batch)} objects in s3://{self.name}/") from exc
            errors = answer.get("Errors") or []
            if errors:
                first = errors[0]
                what = (f"deleting s3://{self.name}/{first.get('Key')} ({len(errors)} of {len(batch)} keys failed): "
                        f"{first.get('Code')}: {first.get('Message')}")
                if any(e.get("Code") in _THROTTLE_CODES for e in errors):
                    raise StorageThrottled(f"S3 throttled while {what}")
                raise RuntimeError(f"S3 refused {what}")

    def keys(self, prefix: str) -> Iterator[str]:
        """The keys that start with ``prefix``."""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.name, Prefix=prefix):
                for obj in page.get("Contents", []):
                    yield obj["Key"]
        except Exception as exc:
            raise translate_s3_error(exc, f"listing s3://{self.name}/{prefix}") from exc

    def folder(self, prefix: str) -> tuple[dict[str, str], list[str]]:
        """What the "folder" ``prefix`` (ending in ``/``, or empty) holds, as a directory listing gives it: the names
        (after the prefix) of the objects directly in it, each with its ETag (without quotes: it changes when the
        object is written anew), and the names of its "subfolders" (without their ``/``)."""
        paginator = self.client.get_paginator("list_objects_v2")
        files: dict[str, str] = {}
        folders: list[str] = []
        try:
            for page in paginator.paginate(Bucket=self.name, Prefix=prefix, Delimiter="/"):
                for obj in page.get("Contents", []):
                    files[obj["Key"][len(prefix):]] = obj.get("ETag", "").strip('"')
                folders += [p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", [])]
        except Exception as exc:
            raise translate_s3_error(exc, f"listing s3://{self.name}/{prefix}") from exc
        return files, folders


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key)."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url}")
    bucket, _, key = url[5:].partition("/")
    return bucket, key


def download_objects(s3: Any, bucket: str, key_or_prefix: str, dest: Path, name: str | None = None) -> list[Path]:
    """Copy an object, or every object under a prefix ending in '/' or '.zarr', into ``dest`` (an object as
    ``name``); return the paths written (a prefix: its folder).

    A prefix replaces the folder of its name in ``dest`` whole: it is copied into a new folder beside it, which then
    takes the old one's place. Copied over it, files the bucket no longer has stayed (a Zarr chunk that became all
    fill and was deleted, or another configuration's chunk of another shape), and the copy read as a different store.
    """
    if key_or_prefix.endswith("/") or key_or_prefix.endswith(".zarr"):
        import glob
        import re
        import shutil
        import uuid

        prefix = key_or_prefix.rstrip("/") + "/"
        base = dest / Path(key_or_prefix.rstrip("/")).name
        token = 12  # hex digits that tell a copy from its name
        for left in dest.glob(f".{glob.escape(base.name)}.*"):  # a copy that a killed download left half made
            if (re.fullmatch(f"[0-9a-f]{{{token}}}", left.name.rsplit(".", 1)[-1]) and left.is_dir()
                    and not left.is_symlink()):
                shutil.rmtree(left, ignore_errors=True)
        fresh = dest / f".{base.name}.{uuid.uuid4().hex[:token]}"
        fresh.mkdir(parents=True)
        try:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    target = fresh / obj["Key"][len(prefix):]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    s3.download_file(bucket, obj["Key"], str(target))
            if base.is_dir() and not base.is_symlink():
                shutil.rmtree(base)
            elif base.exists() or base.is_symlink():
                base.unlink()
            fresh.rename(base)
        finally:
            shutil.rmtree(fresh, ignore_errors=True)
        return [base]
    target = dest / (name or Path(key_or_prefix).name)
    target.parent.mkdir(parents=True, exist_ok=True)
    s3.download_file(bucket, key_or_prefix, str(target))
    return [target]


LOCK_SUFFIX = ".lock"
"""A lock's key is the key of what it guards with this suffix (``lease_lock``'s callers; a local engine removes a
killed run's at its start)."""
LOCK_LEASE_S = 900.0
"""A lock held longer is taken over: its holder died holding it (a Lambda stopped by its timeout, at most 900 s)."""
LOCK_WAIT_S = 300.0
"""How long ``lease_lock`` waits for a lock before it raises LockHeld. The state machine's retrier of LockHeld tries
again 3 times: 4 waits outlast the lease, so that a lock whose holder died is taken over within one step's tries."""


@contextlib.contextmanager
def lease_lock(bucket: Bucket, key: str, holder: str, what: str, *, wait_s: float | None = None,
               lease_s: float | None = None) -> Iterator[None]:
    """Hold the lock object ``key`` while the block runs: one holder at a time, among executions that may run at
    once (S3 conditional writes: created only where there is none). A lock older than ``lease_s`` is taken over,
    replacing exactly the version read; one still held after ``wait_s`` raises LockHeld naming its holder and ``what``
    it guards. A lock of the same ``holder`` waits like any other: an earlier try of a step that the state machine
    retried after a Lambda service error may still be running. Released (deleted) at the end if it is still this
    holder's."""
    wait_s = LOCK_WAIT_S if wait_s is None else wait_s
    lease_s = LOCK_LEASE_S if lease_s is None else lease_s
    deadline = time.monotonic() + wait_s
    while True:
        now = time.time()
        mine = json.dumps({"holder": holder, "since": now}).encode()
        if bucket.put_bytes_if_unchanged(key, mine, "application/json", None):
            break
        held, etag = bucket.get_bytes_and_etag(key)
        if held is None:
            continue  # released in between: try again at once
        try:
            other = json.loads(held)
            since, other_holder = float(other["since"]), str(other["holder"])
        except (ValueError, KeyError, TypeError):
            since, other_holder = 0.0, "unknown"  # not a lock this code wrote: as old as can be
        if now - since > lease_s and bucket.put_bytes_if_unchanged(key, mine, "application/json", etag):
            from granulemap.observability import logger

            logger.warning("took over a lock its holder left", extra={
                "lock": key, "previous_holder": other_holder, "held_s": round(now - since)})
            break
        if time.monotonic() >= deadline:
            taken = dt.datetime.fromtimestamp(since, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            raise LockHeld(f"{what} is being changed by {other_holder} since {taken} (lock s3://{bucket.name}/{key}): "
                           f"runs that change it take turns. A lock held more than {lease_s / 60:g} minutes, its "
                           "holder dead, is taken over")
        time.sleep(random.uniform(0.1, 0.5))
    try:
        yield
    finally:
        try:
            held, _ = bucket.get_bytes_and_etag(key)
            if held == mine:  # not taken over meanwhile
                bucket.delete(key)
        except Exception as exc:  # noqa: BLE001 - the block's own outcome stands; the lease frees the lock
            from granulemap.observability import logger

            logger.warning("lock not released: it is taken over once its lease ends",
                           extra={"lock": key, "error": f"{type(exc).__name__}: {exc}"})
