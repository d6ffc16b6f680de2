"""Reading ATL06 land-ice segments with h5coro: local files (FileDriver) or S3 objects (S3Driver).

What this module promises: heights ``h_li`` and their uncertainty ``h_li_sigma`` in metres above the WGS84
ellipsoid, positions in degrees (WGS84 geodetic), only segments with ``atl06_quality_summary == 0`` and a usable
height and sigma (not the fill value, finite, sigma > 0).

Why not ``H5Coro.readDatasets``: it swallows read errors (the dataset's values come back as None), and its fill
step is a Python loop (about 0.37 s per million elements). ``Atl06Granule._read`` builds h5coro's dataset reader
directly, so errors surface, and ``_VectorFillDataset`` changes two of its steps without changing a byte of what
it returns: the fill is one numpy assignment, and chunks are inflated by libdeflate (PyPI ``deflate``, 1.7 to 3
times as fast as ``zlib`` on ATL06's chunks). ``read_many`` runs many reads at once on one long-lived pool of
threads: libdeflate releases the GIL, and over S3 the requests overlap.

What is read (``segments_in_parent``): latitudes whole, then longitude, height, sigma and quality only over the
stretch of each track whose latitudes fall in a box around the parent cell (``cells.cell_box``), and the segments'
times (``delta_time``) too for a granule that may cross its period's first or last midnight; cell ids only for the
good segments in the box. bench/atl06.py measures it against zagg, which reads every beam whole.

Fill values come from each dataset's HDF5 fill-value message, which is where ATL06 (and netCDF-4) keep
``_FillValue``. The attribute itself is not read through h5coro: asked for an attribute a dataset lacks
(``.../atl06_quality_summary/_FillValue``), h5coro 1.0.7 returns the dataset's values instead of an error.
"""

from __future__ import annotations

import datetime as dt
import os
import struct
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import deflate
import numpy as np
from h5coro.filedriver import FileDriver
from h5coro.h5coro import H5Coro
from h5coro.h5dataset import INVALID_VALUE, H5Dataset
from h5coro.h5metadata import H5Metadata
from h5coro.s3driver import S3Driver

from granulemap.errors import (
    CredentialsExpired,
    GranulemapError,
    GranuleUnreadable,
    StorageThrottled,
    VariableMissing,
)
from granulemap.granule_access import EXPIRED_CODES as _EXPIRED_CODES
from granulemap.recipes.atl06.cells import CellBox, cell_box, cell_ids, parents_of
from granulemap.storage import split_s3_url

BEAMS = ("gt1l", "gt1r", "gt2l", "gt2r", "gt3l", "gt3r")
SEGMENTS_GROUP = "land_ice_segments"
GOOD_QUALITY = 0
"""``atl06_quality_summary`` value of segments that pass ATL06's own quality screening."""
ATL06_FILL_VALUE = float(np.float32(3.4028235e38))
"""The ATL06 product's fill value of h_li and h_li_sigma; used when a file declares none."""

_READ_THREADS = 12
"""Datasets read at once (S3 latency hides behind this many)."""
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_EMPTY_OBJECT_CODES = {"InvalidRange", "416"}
"""A ranged GET of an empty object: it exists, with nothing in it."""
_MISSING_CODES = {"NoSuchKey", "NoSuchBucket", "404", "NotFound", "AccessDenied", "403", "Forbidden"}


def _read_pool() -> ThreadPoolExecutor:
    """The process's dataset readers, long-lived: starting threads for every read cost more than the reads of a
    small beam (a new thread waits for the GIL to start). Its tasks never wait on each other, so any number of
    granules may share it."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_READ_THREADS, thread_name_prefix="atl06-read")
        return _pool


def _forget_read_pool() -> None:
    """In a forked child the pool's threads do not exist (its tasks would wait forever): start afresh."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_read_pool)


class _VectorFillDataset(H5Dataset):
    """h5coro's dataset reader with its fill step vectorised and its chunks inflated by libdeflate.

    h5coro pre-fills the output buffer with the HDF5 fill value, element by element in Python, so that chunks
    never written to the file read as fill. It is built here with ``enableFill=False`` and the same bytes are put
    in the buffer with numpy, at the same moment (just before the chunk B-tree is walked). The result is
    byte-identical to h5coro's own read (a test checks it on a file with unwritten chunks).

    Chunks are inflated with libdeflate (``_inflate``) instead of ``zlib.decompress``: deflate is lossless, so the
    bytes are the same; a chunk that does not inflate to exactly one chunk's bytes is an error, where h5coro would
    have let a wrong length resize its buffer.
    """

    _prefilled = False

    def readBTreeV1(self, buffer: Any, dlvl: int) -> None:  # noqa: N802 (h5coro's name)
        if not self._prefilled:
            self._prefilled = True
            _prefill(buffer, self.meta)
        super().readBTreeV1(buffer, dlvl)

    def inflateChunk(self, input: Any) -> Any:  # noqa: N802, A002 (h5coro's names)
        return _inflate(input, self.dataChunkBufferSize)


def _prefill(buffer: Any, meta: H5Metadata) -> None:
    """Put the HDF5 fill value in every element of ``buffer``, as h5coro's ``enableFill`` does byte by byte."""
    size = meta.fillsize
    if size <= 0:
        return
    pattern = struct.pack("Q", meta.fillvalue)[:size]
    if not any(pattern):  # the buffer is a new bytearray: zeros already
        return
    target = np.frombuffer(buffer, dtype=np.uint8)
    if target.size % size:
        target[:] = np.resize(np.frombuffer(pattern, np.uint8), target.size)
    elif size in (1, 2, 4, 8):
        word = np.dtype(f"u{size}")
        target.view(word).fill(np.frombuffer(pattern, word)[0])
    else:
        target.reshape(-1, size)[...] = np.frombuffer(pattern, np.uint8)


def _inflate(data: Any, size: int) -> Any:
    """One deflate-filtered HDF5 chunk, inflated: exactly ``size`` bytes (one chunk) or an error (``_read`` names
    the file and dataset)."""
    out = deflate.zlib_decompress(data, size)  # DeflateError if the stream is corrupt or holds more than size
    if len(out) != size:
        raise ValueError(f"a deflated chunk inflated to {len(out)} bytes instead of {size}")
    return out


class _TlsS3Driver(S3Driver):
    """h5coro's S3Driver over HTTPS. h5coro builds its client with ``use_ssl=False``, which any bucket that denies
    insecure transport (``aws:SecureTransport`` false, as this stack's own bucket does) refuses. An endpoint given
    in the environment (AWS_ENDPOINT_URL_S3, a local moto) keeps its own scheme."""

    client: Any

    def __init__(self, resource: str, credentials: dict[str, str], session: Any = None,
                 max_connections: int | None = None):
        super().__init__(resource, credentials, session, max_connections)
        # the same pool size, retries and timeouts as h5coro's client; only the scheme changes
        self.client = self.session.client("s3", config=self.client.meta.config)

    def copy(self, max_connections: int | None = None) -> _TlsS3Driver:
        return _TlsS3Driver("/".join(self.resourcePath), self.cached_credentials, self.session, max_connections)


@dataclass(frozen=True)
class Variable:
    """A dataset's values as stored, and its declared fill value (None when the file declares none)."""

    values: np.ndarray
    fill_value: float | int | None


def _fill_value(meta: H5Metadata, dtype: np.dtype) -> float | int | None:
    """The HDF5 fill value of a dataset, as a number of its dtype (netCDF-4 and ATL06 write _FillValue there)."""
    if not meta.fillsize or meta.fillvalue is None or meta.fillsize != dtype.itemsize:
        return None
    raw = struct.pack("Q", meta.fillvalue)[: meta.fillsize]
    return np.frombuffer(raw, dtype=dtype)[0].item()


class Atl06Granule:
    """One open ATL06 file. Use as a context manager; every failure is a named granulemap error."""

    def __init__(self, url: str, *, local_path: str | None, credentials: dict[str, str] | None):
        self.url = url
        self.name = url.rstrip("/").rsplit("/", 1)[-1]
        self._credentials = credentials or {}
        self._listings: dict[str, set[str]] = {}
        try:
            if local_path is not None:
                self._h5 = H5Coro(local_path, FileDriver)
            else:
                bucket, key = split_s3_url(url)
                self._h5 = H5Coro(f"{bucket}/{key}", _TlsS3Driver, credentials=self._credentials)
        except Exception as exc:
            raise self._failure(exc) from exc

    def __enter__(self) -> Atl06Granule:
        return self

    def __exit__(self, *exc: object) -> None:
        self._h5.close()

    def beams(self) -> list[str]:
        """The beams (of gt1l…gt3r) that have land-ice segments in this file."""
        try:
            present = self._h5.inspectPath("/", w_attr=False)[0]
            beams = [b for b in BEAMS if b in present
                     and SEGMENTS_GROUP in self._h5.inspectPath(f"/{b}", w_attr=False)[0]]
        except Exception as exc:
            raise self._failure(exc) from exc
        if not beams:
            raise VariableMissing(f"{self.name} has none of the groups {'/'.join(BEAMS)}/{SEGMENTS_GROUP}: "
                                  "is it an ATL06 granule?")
        return beams

    def read(self, beam: str, names: Iterable[str], window: tuple[int, int] | None = None) -> dict[str, Variable]:
        """Datasets ``names`` of ``beam``'s land-ice segments, optionally only the index range [start, stop)."""
        names = list(names)
        return dict(zip(names, self.read_many([(beam, name, window) for name in names]), strict=True))

    def read_many(self, requests: Sequence[tuple[str, str, tuple[int, int] | None]]) -> list[Variable]:
        """Several datasets at once, read in parallel: one ``(beam, name, window)`` per dataset of a beam's
        land-ice segments, ``window`` an index range [start, stop) or None for all of it."""
        for beam in dict.fromkeys(beam for beam, _, _ in requests):
            present = self._datasets(beam)
            missing = [name for b, name, _ in requests if b == beam and name not in present]
            if missing:
                raise VariableMissing(f"{self.name} lacks "
                                      f"{', '.join(f'{beam}/{SEGMENTS_GROUP}/{m}' for m in dict.fromkeys(missing))}: "
                                      "is it an ATL06 granule?")
        pool = _read_pool()
        futures = [pool.submit(self._read, f"{beam}/{SEGMENTS_GROUP}/{name}", None if window is None else [window])
                   for beam, name, window in requests]
        wait(futures)  # every read has ended before one's error is raised (the file may be closed after it)
        return [future.result() for future in futures]

    def _datasets(self, beam: str) -> set[str]:
        """The names in ``beam``'s land-ice segments group (looked up once per file)."""
        if beam not in self._listings:
            try:
                self._listings[beam] = set(self._h5.inspectPath(f"/{beam}/{SEGMENTS_GROUP}", w_attr=False)[0])
            except Exception as exc:
                raise self._failure(exc, f"{beam}/{SEGMENTS_GROUP}") from exc
        return self._listings[beam]

    def _read(self, path: str, hyperslice: list[tuple[int, int]] | None) -> Variable:
        try:
            dataset = _VectorFillDataset(
                self._h5, path, list(hyperslice) if hyperslice else None, enableFill=False,
                earlyExit=True, metaOnly=False, enableAttributes=False,
            )
        except Exception as exc:
            unallocated = self._unallocated(path, hyperslice)
            if unallocated is not None:
                return unallocated
            raise self._failure(exc, path) from exc
        if dataset.values is None:
            if dataset.numElements == 0:  # an empty dataset (a beam without segments): h5coro reads nothing
                return Variable(np.empty(0, dtype=_numpy_dtype(dataset.meta)), None)
            raise GranuleUnreadable(f"{self.name}: h5coro returned no values for {path}")
        values = np.asarray(dataset.values)
        return Variable(values, _fill_value(dataset.meta, values.dtype))

    def _unallocated(self, path: str, hyperslice: list[tuple[int, int]] | None) -> Variable | None:
        """An empty dataset whose storage was never allocated (a beam of 0 segments, as h5py and netCDF-4 write it)
        reads as empty; h5coro 1.0.7 raises "invalid data address" for it. None for any other dataset, an unallocated
        one of more elements included: HDF5 would read it as its fill value, or from an external file, which h5coro
        does not read, so it stays an error (GranuleUnreadable) rather than becoming fill values or zeros."""
        meta = self._h5.metadataTable.get(path)
        if (meta is None or meta.typeSize <= 0 or meta.ndims != 1 or list(meta.dimensions) != [0]
                or meta.address != INVALID_VALUE[self._h5.offsetSize]):
            return None
        if hyperslice and tuple(hyperslice[0]) != (0, 0):
            return None
        dtype = _numpy_dtype(meta)
        return Variable(np.empty(0, dtype=dtype), _fill_value(meta, dtype))

    def _failure(self, exc: Exception, path: str | None = None) -> GranulemapError:
        """A named error for a failed open or read; for S3, asks S3 itself what is wrong (h5coro hides it)."""
        if isinstance(exc, GranulemapError):
            return exc
        where = f"{self.name}" + (f" ({path})" if path else "")
        detail = f"{type(exc).__name__}: {exc}"
        if not self.url.startswith("s3://"):
            return GranuleUnreadable(f"{where} is not an HDF5 file h5coro can read: {detail}")
        return _diagnose_s3(self.url, self._credentials, where, detail)


def _numpy_dtype(meta: H5Metadata) -> np.dtype:
    return np.dtype(H5Metadata.TO_NUMPY_TYPE[meta.type][meta.signedval][meta.typeSize])


def _diagnose_s3(url: str, credentials: dict[str, str], where: str, detail: str) -> GranulemapError:
    """h5coro's S3Driver logs S3 errors and returns None, so the cause is asked of S3 with a GET of the object's
    first byte: its error has a body naming the error (ExpiredToken), which a HEAD's has not (botocore then gives
    only the HTTP status, 400 for an expired token)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3_url(url)
    client = boto3.client(
        "s3",
        aws_access_key_id=credentials.get("accessKeyId"),
        aws_secret_access_key=credentials.get("secretAccessKey"),
        aws_session_token=credentials.get("sessionToken"),
    )  # with no credentials given, boto3's own chain (the role), as h5coro's S3Driver does
    try:
        client.get_object(Bucket=bucket, Key=key, Range="bytes=0-0")["Body"].close()
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code"))
        if code in _EXPIRED_CODES:
            return CredentialsExpired(f"S3 credentials expired while reading {url}")
        if code in _MISSING_CODES:
            return GranuleUnreadable(f"cannot read granule {url}: S3 says {code}")
        if code in _EMPTY_OBJECT_CODES:
            return GranuleUnreadable(f"cannot read granule {url}: it is empty (S3 says {code} to its first byte)")
        return StorageThrottled(f"S3 answered {code} while reading {url}")
    except BotoCoreError as err:
        return StorageThrottled(f"S3 did not answer while reading {url}: {err}")
    if "NoneType" in detail:  # the object exists but a ranged GET failed: h5coro hid a transient S3 error
        return StorageThrottled(f"a ranged read of {url} failed (h5coro logged the S3 error): retry")
    return GranuleUnreadable(f"{where} is not an HDF5 file h5coro can read: {detail}")


@dataclass(frozen=True)
class Segments:
    """Land-ice segments that passed the filters: child cell id (int64), height and sigma in metres (WGS84
    ellipsoid) in the file's own precision (float32 in ATL06; ``cell_statistics`` sums in float64)."""

    cells: np.ndarray
    h_li: np.ndarray
    h_li_sigma: np.ndarray

    @staticmethod
    def concatenate(parts: list[Segments]) -> Segments:
        parts = [p for p in parts if p.cells.size] or parts[:1]
        if not parts:
            return Segments(np.empty(0, np.int64), np.empty(0, np.float32), np.empty(0, np.float32))
        if len(parts) == 1:
            return parts[0]
        return Segments(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("cells", "h_li", "h_li_sigma")))


def usable(variable: Variable, default_fill: float | None = None) -> np.ndarray:
    """True where the values are finite and not the fill value (the file's, else ``default_fill``)."""
    values = variable.values
    fill = variable.fill_value if variable.fill_value is not None else default_fill
    ok = np.isfinite(values) if np.issubdtype(values.dtype, np.floating) else np.ones(values.shape, bool)
    if fill is not None:
        ok &= values != np.asarray(fill, dtype=values.dtype)
    return ok


POSITION_NAMES = ("latitude", "longitude")
WINDOW_NAMES = ("longitude", "h_li", "h_li_sigma", "atl06_quality_summary")
"""What ``segments_in_parent`` reads over each beam's window, in this order (and ``delta_time`` for a time window)."""
SDP_EPOCH = dt.datetime(2018, 1, 1, tzinfo=dt.UTC)
"""``delta_time`` counts GPS seconds since the ATLAS SDP epoch, ``/ancillary_data/atlas_sdp_gps_epoch`` = 1198800018
GPS seconds: 2018-01-01T00:00:00 UTC (GPS runs 18 s ahead of UTC since 2017). No leap second has been inserted since,
so UTC = SDP_EPOCH + delta_time; a future leap second would shift later times by 1 s."""

TimeWindow = tuple[float, float]
"""[first, end) in ``delta_time`` seconds: the segments measured in a period."""


def delta_time_window(first: dt.datetime, end: dt.datetime) -> TimeWindow:
    """The ``delta_time`` window of the UTC times [first, end)."""
    return (first - SDP_EPOCH).total_seconds(), (end - SDP_EPOCH).total_seconds()


def _in_window(delta_time: Variable, window: TimeWindow) -> np.ndarray:
    """True where the segment's time is usable and inside the window."""
    with np.errstate(invalid="ignore"):
        return usable(delta_time) & (delta_time.values >= window[0]) & (delta_time.values < window[1])


def _valid_positions(latitude: Variable, longitude: Variable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(latitude, longitude, valid): degrees as float64, and True where the position is usable."""
    lat = np.asarray(latitude.values, dtype=np.float64)
    lon = np.asarray(longitude.values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        valid = usable(latitude) & usable(longitude) & (np.abs(lat) <= 90.0)
    return lat, lon, valid


def beam_positions(granule: Atl06Granule, beam: str, times: TimeWindow | None = None,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(latitude, longitude) in degrees of the beam's segments with a usable position (measured within ``times``)."""
    names = POSITION_NAMES if times is None else (*POSITION_NAMES, "delta_time")
    read = granule.read_many([(beam, name, None) for name in names])
    lat, lon, valid = _valid_positions(*read[:2])
    if times is not None:
        valid &= _in_window(read[2], times)
    return lat[valid], lon[valid]


def segments_in_parent(granule: Atl06Granule, parent: int, parent_order: int, child_order: int,
                       times: TimeWindow | None = None) -> Segments:
    """The good segments of every beam that lie in nested cell ``parent`` (and were measured within ``times``: a
    granule that may cross the period's first or last midnight), with their child cell ids.

    ``cell_box`` gives a latitude/longitude box that contains the parent cell, so a segment outside it cannot lie
    in the cell and needs no cell id.

    1. The latitudes of all beams are read whole, in parallel. Per beam, the index range from the first to the
       last usable latitude within the box's latitudes is the window (ICESat-2 tracks run mostly north-south, so
       it is short: the parent cell's stretch of the track).
    2. Longitude, height, sigma and quality (and with ``times``, delta_time) of every beam's window are read, in
       parallel.
    3. Cell ids are computed (mortie) only for the window's segments inside the box with a usable position, good
       quality, and usable height and sigma; the segments whose cell is not a child of ``parent`` are dropped.

    The result is the segments and cell ids that computing the cell of every usable position and then filtering
    gives, in the same order (beams, then along track): the box only skips segments outside the parent cell,
    and a segment's cell id does not depend on which other segments mortie is given.
    """
    beams = granule.beams()
    latitudes = granule.read_many([(beam, "latitude", None) for beam in beams])
    box = cell_box(int(parent), int(parent_order))
    windows = []
    for beam, latitude in zip(beams, latitudes, strict=True):
        lat = np.asarray(latitude.values, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            band = usable(latitude) & (np.abs(lat) <= 90.0) & box.holds_latitude(lat)
        where = np.flatnonzero(band)
        if where.size:
            start, stop = int(where[0]), int(where[-1]) + 1
            windows.append((beam, start, stop, lat[start:stop], band[start:stop]))
    del latitudes
    names = WINDOW_NAMES if times is None else (*WINDOW_NAMES, "delta_time")
    data = granule.read_many([(beam, name, (start, stop)) for beam, start, stop, _, _ in windows for name in names])
    n = len(names)
    found = []
    for k, (_, _, _, lat, band) in enumerate(windows):
        if times is not None:
            band = band & _in_window(data[n * k + 4], times)
        found.append(_good_inside(lat, band, *data[n * k: n * k + 4], box, parent, parent_order, child_order))
    return _gather(found)


def _good_inside(lat: np.ndarray, band: np.ndarray, longitude: Variable, h: Variable, sigma: Variable,
                 quality: Variable, box: CellBox, parent: int, parent_order: int, child_order: int,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One beam's window: ``cells``, the cell ids of its good segments in the box; ``inside``, which of them are
    children of ``parent``; ``rows``, where those are in the window; and the window's heights and sigmas."""
    lon = np.asarray(longitude.values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        keep = (band & usable(longitude) & (quality.values == GOOD_QUALITY) & usable(h, ATL06_FILL_VALUE)
                & usable(sigma, ATL06_FILL_VALUE) & (sigma.values > 0))
    rows = np.flatnonzero(keep)
    rows = rows[box.holds_longitude(lon[rows])]
    cells = cell_ids(lat[rows], lon[rows], child_order)
    inside = parents_of(cells, child_order, parent_order) == parent
    return cells, inside, rows[inside], h.values, sigma.values


def _gather(found: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> Segments:
    """One Segments from each beam's (cells, inside, rows, h_li, h_li_sigma), written straight into its arrays."""
    if not found:
        return Segments.concatenate([])
    total = sum(int(rows.size) for _, _, rows, _, _ in found)
    out = Segments(np.empty(total, np.int64), np.empty(total, np.result_type(*(f[3] for f in found))),
                   np.empty(total, np.result_type(*(f[4] for f in found))))
    at = 0
    for cells, inside, rows, h, sigma in found:
        end = at + rows.size
        np.compress(inside, cells, out=out.cells[at:end])
        np.take(h, rows, out=out.h_li[at:end])
        np.take(sigma, rows, out=out.h_li_sigma[at:end])
        at = end
    return out
