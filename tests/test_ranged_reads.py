"""A granule in S3 is read by ranges (granulemap/granule_access.py: GranuleAccess.open, RangedFile), never held whole:
a MUR 0.01° granule is about 400 MB. Every read gives the object's bytes; a small granule comes in one GET; the
chunks a GHRSST reader will read are fetched ahead, several to a GET, never more than PREFETCH_AHEAD ahead; the
statistics are those of the whole field computed independently (tests/sst_reference.py); and S3's errors, raised
inside h5py's reads, reach the state machine as the same error classes as a whole-object read's.
"""

from __future__ import annotations

import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import h5py
import numpy as np
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from granulemap import granule_access
from granulemap.errors import CredentialsExpired, GranuleUnreadable, StorageThrottled, TransientError
from granulemap.granule_access import GranuleAccess, RangedFile
from granulemap.models import RunContext
from granulemap.recipes import ghrsst
from granulemap.recipes.sst_box_mean import box_mean_sst
from granulemap.recipes.sst_global_mean import global_mean_sst

from sst_reference import assert_the_ocean_reference
from test_sst_tiles import LAYOUTS, write_granule

KB = 1 << 10


class Recorded:
    """A fetch over ``data`` that records each (start, stop) and the thread that asked."""

    def __init__(self, data: bytes):
        self.data, self.calls, self.threads = data, [], []
        self._lock = threading.Lock()

    def __call__(self, start: int, stop: int) -> bytes:
        with self._lock:
            self.calls.append((start, stop))
            self.threads.append(threading.current_thread().name)
        return self.data[start:stop]


def test_every_read_gives_the_bytes_of_the_object_at_that_place() -> None:
    data = random.Random(1).randbytes(3 * granule_access.SMALL_BLOCK + 12345)
    rng = random.Random(2)
    for head in (b"", data[:100_000]):
        fetch = Recorded(data)
        with RangedFile(fetch, len(data), name="obj", head=head) as f:
            assert f.seek(0, os.SEEK_END) == len(data) and f.tell() == len(data)
            assert f.read(10) == b""  # at the end
            for _ in range(300):
                offset = rng.randrange(len(data))
                size = rng.choice([1, 8, 4000, granule_access.SMALL_BLOCK - 1, granule_access.SMALL_BLOCK,
                                   2 * granule_access.SMALL_BLOCK + 7])
                f.seek(offset)
                assert f.read(size) == data[offset:offset + size]
                assert f.tell() == min(offset + size, len(data))
            f.seek(-5, os.SEEK_END)
            assert f.read() == data[-5:]
            f.seek(10)
            f.seek(20, os.SEEK_CUR)
            assert f.read(4) == data[30:34]
            with pytest.raises(ValueError, match="obj: cannot seek to -1"):
                f.seek(-1)
            f.seek(0)
            assert f.read() == data
        if head:  # reads within the head never fetch
            assert all(stop > len(head) for _, stop in fetch.calls)
        assert all(0 <= start < stop <= len(data) for start, stop in fetch.calls)


def test_short_reads_share_small_blocks_and_long_ones_fetch_just_their_bytes() -> None:
    block = granule_access.SMALL_BLOCK
    data = bytes(range(256)) * (4 * block // 256)
    fetch = Recorded(data)
    with RangedFile(fetch, len(data), name="obj") as f:
        for offset in range(block, 2 * block - 4096, 4096):  # metadata-like reads within one block
            f.seek(offset)
            assert f.read(100) == data[offset:offset + 100]
        assert fetch.calls == [(block, 2 * block)]
        f.seek(2 * block + 3)
        assert f.read(block + 5) == data[2 * block + 3:3 * block + 8]
        assert fetch.calls[1:] == [(2 * block + 3, 3 * block + 8)]
    assert f.requests == 2 and f.bytes_fetched == 2 * block + 5


def test_prefetched_ranges_come_several_to_a_get_and_never_too_far_ahead(monkeypatch) -> None:
    monkeypatch.setattr(granule_access, "MAX_GET", 1 << 20)
    monkeypatch.setattr(granule_access, "MERGE_GAP", 64 * KB)
    monkeypatch.setattr(granule_access, "PREFETCH_AHEAD", 2 << 20)
    size = 100 * 1000  # 10 of them (1,000,000 bytes) fit one GET of 1 MiB, 11 do not
    together = [(n * size, size) for n in range(20)]  # back to back: two GETs of ten
    apart = [(3_000_000 + n * (size + 200 * KB), size) for n in range(5)]  # gaps beyond MERGE_GAP: a GET each
    near = [(5_000_000 + n * (size + 10 * KB), size) for n in range(4)]  # gaps within it: one GET, gaps included
    told = together + apart + near
    data = random.Random(3).randbytes(6_000_000)
    fetch = Recorded(data)
    with RangedFile(fetch, len(data), name="obj") as f:
        f.prefetch(told)
        for n, (offset, length) in enumerate(told):
            f.seek(offset)
            assert f.read(length) == data[offset:offset + length]
            # fetches asked for whose ranges are not all read yet: within PREFETCH_AHEAD (a GET at a time beyond)
            with fetch._lock:
                calls = list(fetch.calls)
            read = told[:n + 1]
            pending = [(a, b) for a, b in calls if any(a <= o and o + s <= b for o, s in told if (o, s) not in read)]
            assert sum(b - a for a, b in pending) <= 2 << 20
    first_near, last_near = near[0][0], near[-1][0] + size
    assert sorted(fetch.calls) == sorted([(0, 10 * size), (10 * size, 20 * size)] +
                                         [(o, o + s) for o, s in apart] + [(first_near, last_near)])
    assert set(fetch.threads) != {threading.current_thread().name}  # fetched by the prefetch's threads


def held(f: RangedFile) -> tuple[int, int, int]:
    """What a file still holds for its prefetch: bytes of started GETs not all read, ranges told, GETs queued."""
    return f._ahead, len(f._parts), len(f._queue)


def one_get_ahead(monkeypatch: pytest.MonkeyPatch, get_size: int) -> None:
    monkeypatch.setattr(granule_access, "MAX_GET", get_size)
    monkeypatch.setattr(granule_access, "PREFETCH_AHEAD", get_size)


def test_a_range_read_before_its_turn_lets_the_earlier_ones_go_and_the_prefetch_goes_on(monkeypatch) -> None:
    """Read out of order, in part, or never told: the bytes are right. Ranges told before one read are let go (and
    fetched if read later); the ranges after it still come ahead, each in one GET, and nothing is held at the end."""
    one_get_ahead(monkeypatch, 64 * KB)  # a GET of each 40 KB range, one at a time
    data = random.Random(4).randbytes(2 << 20)
    ranges = [(n * 40 * KB, 40 * KB) for n in range(40)]
    fetch = Recorded(data)
    with RangedFile(fetch, len(data), name="obj") as f:
        f.prefetch(ranges)
        for offset, length in [ranges[30], *ranges[31:], ranges[0], (5, 100), (ranges[3][0], 10), ranges[3]]:
            f.seek(offset)
            assert f.read(length) == data[offset:offset + length]
        assert held(f) == (0, 0, 0)
    for offset, length in ranges[30:]:  # fetched once each, ahead of their reads but for the first
        assert fetch.calls.count((offset, offset + length)) == 1, offset
    ahead = {call for call, thread in zip(fetch.calls, fetch.threads, strict=True) if thread != "MainThread"}
    assert {(o, o + n) for o, n in ranges[31:]} <= ahead


def test_a_range_read_at_another_size_is_let_go_and_the_prefetch_goes_on(monkeypatch) -> None:
    one_get_ahead(monkeypatch, 64 * KB)
    data = random.Random(5).randbytes(1 << 20)
    ranges = [(n * 40 * KB, 40 * KB) for n in range(10)]
    fetch = Recorded(data)
    with RangedFile(fetch, len(data), name="obj") as f:
        f.prefetch(ranges)
        f.seek(0)
        assert f.read(40 * KB - 1) == data[:40 * KB - 1]  # not the size told
        for offset, length in ranges[1:]:
            f.seek(offset)
            assert f.read(length) == data[offset:offset + length]
        assert held(f) == (0, 0, 0)
    ahead = [call for call, thread in zip(fetch.calls, fetch.threads, strict=True) if thread != "MainThread"]
    assert sorted(ahead)[-9:] == [(o, o + n) for o, n in ranges[1:]]  # not one by one in the reading thread


def test_ranges_beyond_the_end_are_not_fetched_ahead(monkeypatch) -> None:
    data = bytes(range(200)) * 5
    fetch = Recorded(data)
    with RangedFile(fetch, len(data), name="obj") as f:
        f.prefetch([(990, 100), (2000, 10)])
        assert held(f) == (0, 0, 0) and fetch.calls == []
        f.seek(990)
        assert f.read(100) == data[990:]  # short: the reader finds the object ends there


def test_prefetch_gets_run_at_once_and_none_outlives_the_file(monkeypatch) -> None:
    one_get_ahead(monkeypatch, 1000)
    monkeypatch.setattr(granule_access, "PREFETCH_AHEAD", 10_000)
    data = bytes(20_000)
    assert granule_access.PREFETCH_THREADS > 1
    together = threading.Barrier(granule_access.PREFETCH_THREADS, timeout=10)
    running, lock = [0], threading.Lock()

    def fetch(start: int, stop: int) -> bytes:
        with lock:
            running[0] += 1
        if start < granule_access.PREFETCH_THREADS * 1000:  # the first GETs wait for each other: all at once
            together.wait()
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return data[start:stop]

    with RangedFile(fetch, len(data), name="obj") as f:
        f.prefetch([(n * 1000, 1000) for n in range(20)])
        f.seek(0)
        assert f.read(1000) == data[:1000]
    assert running[0] == 0  # closing waited for the GETs under way


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_the_statistics_from_ranges_are_those_of_the_whole_field_and_each_chunk_is_fetched_ahead_once(
        tmp_path: Path, monkeypatch, layout: str) -> None:
    monkeypatch.setattr(ghrsst, "TILE_CELLS", 1)  # a tile per chunk: many prefetched ranges
    monkeypatch.setattr(granule_access, "SMALL_BLOCK", 64)  # metadata in tiny blocks, chunks in their own GETs
    monkeypatch.setattr(granule_access, "MERGE_GAP", 0)
    monkeypatch.setattr(granule_access, "MAX_GET", 1)
    monkeypatch.setattr(granule_access, "PREFETCH_AHEAD", 2 * KB)
    path = write_granule(tmp_path / "20200101090000-RANGES-L4.nc", LAYOUTS[layout])
    fetch = Recorded(path.read_bytes())
    with RangedFile(fetch, path.stat().st_size, name=path.name) as f:
        got = global_mean_sst(path.name, method="ocean", file=f)
        assert held(f) == (0, 0, 0)  # every range told was read
    assert_the_ocean_reference(got, path)
    assert f.bytes_fetched < path.stat().st_size + 64 * len(fetch.calls)
    with h5py.File(path) as h5:  # the chunks of the first plane of a variable the recipe inflates itself
        chunks = [info for var in ("analysed_sst", "mask") if h5[var].chunks and not LAYOUTS[layout].fletcher32
                  for info in ghrsst._chunk_infos(h5[var]) if info.chunk_offset[:-2] in ((), (0,))]
    prefetched = [call for call, thread in zip(fetch.calls, fetch.threads, strict=True)
                  if thread.startswith("granule-range")]
    assert sorted(prefetched) == sorted((c.byte_offset, c.byte_offset + c.size) for c in chunks)
    asked_when_read = set(fetch.calls) - set(prefetched)  # none of them a chunk: each came ahead of its read
    assert not asked_when_read & {(c.byte_offset, c.byte_offset + c.size) for c in chunks}


def test_a_box_prefetches_only_the_rows_of_tiles_it_reads(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ghrsst, "TILE_CELLS", 1)
    monkeypatch.setattr(granule_access, "MERGE_GAP", 0)
    monkeypatch.setattr(granule_access, "MAX_GET", 1)
    path = write_granule(tmp_path / "20200101090000-RBOX-L4.nc", LAYOUTS["same chunks, cut at the edges"])
    fetch = Recorded(path.read_bytes())
    box = (-100.0, -10.0, 60.0, 10.0)
    with RangedFile(fetch, path.stat().st_size, name=path.name) as f:
        from_ranges = box_mean_sst(path.name, box, file=f)
    assert from_ranges == box_mean_sst(path.name, box, path=str(path))
    with h5py.File(path) as h5:
        lat = h5["lat"][()]
        rows = {info.chunk_offset[1] for info in ghrsst._chunk_infos(h5["analysed_sst"])
                if info.chunk_offset[0] == 0 and abs(lat[info.chunk_offset[1]:info.chunk_offset[1] + 10]).min() <= 10}
        wanted = {(i.byte_offset, i.byte_offset + i.size) for var in ("analysed_sst", "mask")
                  for i in ghrsst._chunk_infos(h5[var]) if i.chunk_offset[0] == 0 and i.chunk_offset[1] in rows}
    prefetched = {c for c, t in zip(fetch.calls, fetch.threads, strict=True) if t.startswith("granule-range")}
    assert prefetched == wanted and 0 < len(rows) < 5


# ---- GranuleAccess.open against S3 (moto) -------------------------------------------------------------------
@pytest.fixture
def s3() -> Any:
    with mock_aws():
        client = boto3.client("s3", region_name="us-west-2")
        client.create_bucket(Bucket="daac-bucket", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        yield client


def access_through(client: Any, monkeypatch: pytest.MonkeyPatch) -> GranuleAccess:
    access = GranuleAccess(RunContext(run_id="r", recipe="sst-global-mean", params={}, config_id="c"))
    monkeypatch.setattr(access, "_s3_client", lambda creds: client)
    return access


def test_a_small_granule_comes_in_one_get_and_a_large_one_by_ranges(s3, mur25: Path, monkeypatch) -> None:
    s3.put_object(Bucket="daac-bucket", Key="sst/" + mur25.name, Body=mur25.read_bytes())
    url = f"s3://daac-bucket/sst/{mur25.name}"
    access = access_through(s3, monkeypatch)
    with access.open(url) as f:
        whole = global_mean_sst(mur25.name, method="ocean", file=f)
    assert (f.requests, f.bytes_fetched) == (1, mur25.stat().st_size)
    assert_the_ocean_reference(whole, mur25)

    monkeypatch.setattr(granule_access, "HEAD_SIZE", 64 * KB)  # as if MUR25 were a MUR 0.01° granule
    monkeypatch.setattr(granule_access, "MAX_GET", 256 * KB)
    with access.open(url) as f:
        assert global_mean_sst(mur25.name, method="ocean", file=f) == whole
    assert f.requests > 2 and f.bytes_fetched <= mur25.stat().st_size


def test_what_cannot_be_read_from_s3_is_named(s3, monkeypatch) -> None:
    access = access_through(s3, monkeypatch)
    with pytest.raises(GranuleUnreadable, match="s3://daac-bucket/nothing.nc: NoSuchKey"):
        with access.open("s3://daac-bucket/nothing.nc"):
            pass
    s3.put_object(Bucket="daac-bucket", Key="empty.nc", Body=b"")
    with pytest.raises(GranuleUnreadable, match="s3://daac-bucket/empty.nc: S3 refused the range .InvalidRange.: "
                                                "the object is empty"):
        with access.open("s3://daac-bucket/empty.nc"):
            pass
    s3.put_object(Bucket="daac-bucket", Key="text.nc", Body=b"not HDF5 " * 1000)
    with pytest.raises(GranuleUnreadable, match="text.nc is not a readable netCDF-4/HDF5 file"):
        with access.open("s3://daac-bucket/text.nc") as f:
            global_mean_sst("text.nc", method="ocean", file=f)


def test_a_granule_replaced_while_read_by_ranges_is_read_again_not_mixed(s3, mur25: Path, monkeypatch) -> None:
    monkeypatch.setattr(granule_access, "HEAD_SIZE", 64 * KB)
    s3.put_object(Bucket="daac-bucket", Key=mur25.name, Body=mur25.read_bytes())
    access = access_through(s3, monkeypatch)
    with pytest.raises(TransientError, match="was replaced while being read"):
        with access.open(f"s3://daac-bucket/{mur25.name}") as f:
            s3.put_object(Bucket="daac-bucket", Key=mur25.name, Body=mur25.read_bytes()[::-1])
            f.seek(1 << 20)
            f.read(100)


class FailingLater:
    """The moto client for the first ``good`` GETs, then ``error`` for every GET (raised inside h5py's reads)."""

    def __init__(self, client: Any, error: Exception | None, good: int = 1, short: bool = False):
        self.client, self.error, self.good, self.short, self.gets = client, error, good, short, 0

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        self.gets += 1
        if self.gets <= self.good:
            return self.client.get_object(**kwargs)
        if self.short:
            response = self.client.get_object(**kwargs)
            body = response["Body"].read()
            return {**response, "Body": type("Body", (), {"read": lambda self: body[:-1]})()}
        raise self.error


READ_ERRORS = {
    "expired": (ClientError({"Error": {"Code": "ExpiredToken", "Message": "expired"}}, "GetObject"),
                CredentialsExpired, "S3 credentials expired while reading"),
    "throttled": (ClientError({"Error": {"Code": "SlowDown", "Message": "slow"}}, "GetObject"),
                  StorageThrottled, "S3 throttled while reading"),
    "timeout": (botocore.exceptions.ReadTimeoutError(endpoint_url="https://s3"), StorageThrottled,
                "S3 did not answer while reading"),
    "cut short": (botocore.exceptions.IncompleteReadError(actual_bytes=1, expected_bytes=2), StorageThrottled,
                  "S3 did not answer while reading"),
    "denied": (ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetObject"),
               GranuleUnreadable, "cannot read granule"),
}


@pytest.mark.parametrize("case", list(READ_ERRORS))
def test_an_s3_error_within_h5py_s_reads_keeps_its_class(s3, mur25: Path, monkeypatch, case: str) -> None:
    """The first range (the head) is read; a later one, asked for from inside h5py, fails: the recipe raises this
    package's error (which the state machine retries or not), not h5py's OSError (GranuleUnreadable, permanent)."""
    error, expected, message = READ_ERRORS[case]
    monkeypatch.setattr(granule_access, "HEAD_SIZE", 64 * KB)
    s3.put_object(Bucket="daac-bucket", Key=mur25.name, Body=mur25.read_bytes())
    client = FailingLater(s3, error)
    access = access_through(client, monkeypatch)
    rejected: list[Any] = []
    monkeypatch.setattr(access, "credentials_rejected", rejected.append)
    with pytest.raises(expected, match=message):
        with access.open(f"s3://daac-bucket/{mur25.name}") as f:
            global_mean_sst(mur25.name, method="ocean", file=f)
    assert client.gets > 1
    assert rejected == ([None] if case == "expired" else [])  # the credentials used (here the role's) are dropped


def test_a_range_that_comes_short_is_read_again(s3, mur25: Path, monkeypatch) -> None:
    monkeypatch.setattr(granule_access, "HEAD_SIZE", 64 * KB)
    s3.put_object(Bucket="daac-bucket", Key=mur25.name, Body=mur25.read_bytes())
    access = access_through(FailingLater(s3, None, short=True), monkeypatch)
    with pytest.raises(TransientError, match=r"asked for bytes \d+-\d+ of \d+, got"):
        with access.open(f"s3://daac-bucket/{mur25.name}") as f:
            global_mean_sst(mur25.name, method="ocean", file=f)


def test_a_get_that_failed_when_read_early_fails_its_other_ranges_too_rather_than_hang(monkeypatch) -> None:
    monkeypatch.setattr(granule_access, "PREFETCH_AHEAD", 1)  # one GET under way at a time
    monkeypatch.setattr(granule_access, "MERGE_GAP", 0)
    data = bytes(1000)
    failing = {(150, 350)}  # the second GET: ranges (150, 100) and (250, 100), back to back

    def fetch(start: int, stop: int) -> bytes:
        if (start, stop) in failing:
            raise StorageThrottled("slow down")
        return data[start:stop]

    def read_all() -> list[str]:
        errors = []
        with RangedFile(fetch, len(data), name="obj") as f:
            f.prefetch([(0, 100), (150, 100), (250, 100)])
            for offset in (150, 250):  # the second GET's ranges, the first GET's let go: fetched when read
                f.seek(offset)
                try:
                    f.read(100)
                except StorageThrottled as exc:
                    errors.append(str(exc))
        return errors

    reader = ThreadPoolExecutor(1)
    assert reader.submit(read_all).result(timeout=30) == ["slow down", "slow down"]
    reader.shutdown()


@pytest.mark.parametrize("granule", ["MUR25", "mask chunked otherwise"])
def test_a_failed_get_at_any_point_of_a_read_raises_its_own_error(tmp_path: Path, mur25: Path, monkeypatch,
                                                                  granule: str) -> None:
    """Whichever GET fails — opening the file, the chunk index, a chunk fetched ahead or when read, HDF5's own
    reads — the recipe raises that GET's error (here StorageThrottled, retried), never h5py's OSError."""
    monkeypatch.setattr(ghrsst, "TILE_CELLS", 1)
    monkeypatch.setattr(granule_access, "SMALL_BLOCK", 1024)
    monkeypatch.setattr(granule_access, "MAX_GET", 64 * KB)
    path = mur25 if granule == "MUR25" else write_granule(tmp_path / "20200101090000-FAIL-L4.nc", LAYOUTS[granule])
    data = path.read_bytes()
    head = data[:4 * KB]  # as GranuleAccess.open's first GET, much shorter

    def reduce(fetch: Any) -> dict[str, Any]:
        with RangedFile(fetch, len(data), name=path.name, head=head) as f:
            return global_mean_sst(path.name, method="ocean", file=f)

    clean = Recorded(data)
    expected = reduce(clean)
    assert len(clean.calls) > 3
    for failing in range(len(clean.calls)):
        count, lock = [0], threading.Lock()

        def fetch(start: int, stop: int) -> bytes:
            with lock:
                count[0] += 1
                if count[0] == failing + 1:
                    raise StorageThrottled(f"GET {failing} throttled")
            return data[start:stop]

        with pytest.raises(StorageThrottled, match=f"GET {failing} throttled"):
            assert reduce(fetch) == expected  # (a failed GET that was not needed would let it succeed: never here)


def test_a_local_file_is_read_by_hdf5_s_own_driver_and_an_s3_object_through_python(mur25: Path) -> None:
    """GranuleAccess.open gives local granules as Python files: HDF5 reads them by their path (faster than through
    Python's file object); a RangedFile (or any other file object) through Python."""
    data = mur25.read_bytes()
    with open(mur25, "rb") as f, ghrsst.GranuleReader(mur25.name, file=f, with_mask=False) as reader:
        assert reader._file.driver == "sec2"
    with RangedFile(lambda a, b: data[a:b], len(data), name=mur25.name) as f, \
            ghrsst.GranuleReader(mur25.name, file=f, with_mask=False) as reader:
        assert reader._file.driver == "fileobj"


def test_no_deadlock_when_a_prefetch_thread_needs_h5py_s_lock(tmp_path: Path, monkeypatch) -> None:
    """h5py holds a global lock (``phil``) through each read, and takes it to free any h5py object, which the garbage
    collector may do in any thread. A read that waited inside h5py for a prefetch thread that needed that lock would
    wait forever: the reader waits for the chunks it tells before it reads them through h5py."""
    from h5py._objects import phil

    monkeypatch.setattr(ghrsst, "TILE_CELLS", 1)
    monkeypatch.setattr(granule_access, "MAX_GET", 1)
    path = write_granule(tmp_path / "20200101090000-LOCK-L4.nc", LAYOUTS["mask chunked otherwise"])
    data = path.read_bytes()

    def fetch(start: int, stop: int) -> bytes:
        if threading.current_thread().name.startswith("granule-range"):
            time.sleep(0.01)  # the reader gets there first
            with phil:  # as freeing an h5py object in this thread would
                pass
        return data[start:stop]

    def reduce() -> dict[str, Any]:
        with RangedFile(fetch, len(data), name=path.name) as f:
            return global_mean_sst(path.name, method="ocean", file=f)

    reader = ThreadPoolExecutor(1)
    try:
        assert_the_ocean_reference(reader.submit(reduce).result(timeout=60), path)
    finally:
        reader.shutdown(wait=False)


def test_xarray_s_h5netcdf_engine_opens_a_ranged_file_too(mur25: Path) -> None:
    """README: a user's recipe may open ``access.open``'s file with xarray (h5netcdf engine) where it is installed."""
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    import netCDF4

    data = mur25.read_bytes()
    with netCDF4.Dataset(mur25) as nc:
        expected = nc["analysed_sst"][0]  # unpacked and masked by netCDF4
    with RangedFile(lambda a, b: data[a:b], len(data), name=mur25.name) as f:
        with xr.open_dataset(f, engine="h5netcdf") as ds:
            got = ds["analysed_sst"].isel(time=0).values
    assert got.shape == expected.shape
    assert np.allclose(got[~expected.mask], expected.compressed()) and np.isnan(got[expected.mask]).all()


def test_the_garbage_collector_is_paused_while_prefetch_threads_run_and_restored_after() -> None:
    """A collection in a prefetch thread could free an h5py object, which takes h5py's lock that the reader holds:
    no collection runs while the threads do (granule_access._pause_gc); the collector's state is restored after."""
    import gc

    data = bytes(10_000)
    assert gc.isenabled()
    try:
        with RangedFile(lambda a, b: data[a:b], len(data), name="one") as one:
            assert gc.isenabled()  # no prefetch, no threads
            one.prefetch([(0, 100)])
            assert not gc.isenabled()
            with RangedFile(lambda a, b: data[a:b], len(data), name="two") as two:
                two.prefetch([(200, 100)])
            assert not gc.isenabled()  # the first file's threads still run
        assert gc.isenabled()
        gc.disable()  # off before: left off
        with RangedFile(lambda a, b: data[a:b], len(data), name="three") as three:
            three.prefetch([(0, 100)])
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_file_dropped_with_gets_under_way_or_prefetched_after_closing_leaves_the_collector_on() -> None:
    """The pause ends however a file ends: dropped while a GET is under way (the prefetch thread then holds the last
    reference and closes it), or asked to prefetch once closed (refused)."""
    import gc

    data = bytes(10_000)

    def slow(start: int, stop: int) -> bytes:
        time.sleep(0.2)
        return data[start:stop]

    f = RangedFile(slow, len(data), name="dropped")
    f.prefetch([(0, 100)])
    assert not gc.isenabled()
    del f  # the GET under way keeps it until it ends
    deadline = time.monotonic() + 10
    while not gc.isenabled() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gc.isenabled()
    closed = RangedFile(slow, len(data), name="closed")
    closed.close()
    with pytest.raises(ValueError, match="closed: prefetch on a closed file"):
        closed.prefetch([(0, 100)])
    assert gc.isenabled()
