"""Reading ATL06 land-ice segments with h5coro: local files (FileDriver) or S3 objects (S3Driver).

What this module promises: heights ``h_li`` and their uncertainty ``h_li_sigma`` in metres above the WGS84
ellipsoid, positions in degrees (WGS84 geodetic), only segments with ``atl06_quality_summary == 0`` and a usable
height and sigma (not the fill value, finite, sigma > 0).

Why not ``H5Coro.readDatasets``: it swallows read errors (the dataset's values come back as None), and its fill
step is a Python loop (about 0.37 s per million elements). ``Atl06Granule._read`` builds h5coro's dataset reader
directly, so errors surface, and does the same fill with numpy (``_VectorFillDataset``).

Fill values come from each dataset's HDF5 fill-value message, which is where ATL06 (and netCDF-4) keep
``_FillValue``. The attribute itself is not read through h5coro: asked for an attribute a dataset lacks
(``.../atl06_quality_summary/_FillValue``), h5coro 1.0.7 returns the dataset's values instead of an error.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from h5coro.filedriver import FileDriver
from h5coro.h5coro import H5Coro
from h5coro.h5dataset import H5Dataset
from h5coro.h5metadata import H5Metadata
from h5coro.s3driver import S3Driver

from granulemap.errors import (
    CredentialsExpired,
    GranulemapError,
    GranuleUnreadable,
    StorageThrottled,
    VariableMissing,
)
from granulemap.recipes.atl06.cells import cell_ids, parents_of
from granulemap.storage import split_s3_url

BEAMS = ("gt1l", "gt1r", "gt2l", "gt2r", "gt3l", "gt3r")
SEGMENTS_GROUP = "land_ice_segments"
GOOD_QUALITY = 0
"""``atl06_quality_summary`` value of segments that pass ATL06's own quality screening."""
ATL06_FILL_VALUE = float(np.float32(3.4028235e38))
"""The ATL06 product's fill value of h_li and h_li_sigma; used when a file declares none."""

_READ_THREADS = 12
_EXPIRED_CODES = {"ExpiredToken", "ExpiredTokenException", "InvalidToken", "TokenRefreshRequired"}
_MISSING_CODES = {"NoSuchKey", "NoSuchBucket", "404", "NotFound", "AccessDenied", "403", "Forbidden"}


class _VectorFillDataset(H5Dataset):
    """h5coro's dataset reader with its fill step vectorised.

    h5coro pre-fills the output buffer with the HDF5 fill value, element by element in Python, so that chunks
    never written to the file read as fill. It is built here with ``enableFill=False`` and the same bytes are put
    in the buffer with numpy, at the same moment (just before the chunk B-tree is walked). The result is
    byte-identical to h5coro's own read (a test checks it on a file with unwritten chunks).
    """

    _prefilled = False

    def readBTreeV1(self, buffer: Any, dlvl: int) -> None:  # noqa: N802 (h5coro's name)
        if not self._prefilled:
            self._prefilled = True
            if self.meta.fillsize > 0:
                pattern = np.frombuffer(struct.pack("Q", self.meta.fillvalue)[: self.meta.fillsize], np.uint8)
                target = np.frombuffer(buffer, dtype=np.uint8)
                target[:] = np.resize(pattern, target.size)
        super().readBTreeV1(buffer, dlvl)


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
        paths = {name: f"{beam}/{SEGMENTS_GROUP}/{name}" for name in names}
        try:
            present = self._h5.inspectPath(f"/{beam}/{SEGMENTS_GROUP}", w_attr=False)[0]
        except Exception as exc:
            raise self._failure(exc, f"{beam}/{SEGMENTS_GROUP}") from exc
        missing = [name for name in paths if name not in present]
        if missing:
            raise VariableMissing(f"{self.name} lacks {', '.join(f'{beam}/{SEGMENTS_GROUP}/{m}' for m in missing)}: "
                                  "is it an ATL06 granule?")
        hyperslice = None if window is None else [window]
        with ThreadPoolExecutor(min(_READ_THREADS, len(paths))) as pool:
            futures = {name: pool.submit(self._read, path, hyperslice) for name, path in paths.items()}
            return {name: future.result() for name, future in futures.items()}

    def _read(self, path: str, hyperslice: list[tuple[int, int]] | None) -> Variable:
        try:
            dataset = _VectorFillDataset(
                self._h5, path, list(hyperslice) if hyperslice else None, enableFill=False,
                earlyExit=True, metaOnly=False, enableAttributes=False,
            )
        except Exception as exc:
            raise self._failure(exc, path) from exc
        if dataset.values is None:
            if dataset.numElements == 0:  # an empty dataset (a beam without segments): h5coro reads nothing
                return Variable(np.empty(0, dtype=_numpy_dtype(dataset.meta)), None)
            raise GranuleUnreadable(f"{self.name}: h5coro returned no values for {path}")
        values = np.asarray(dataset.values)
        return Variable(values, _fill_value(dataset.meta, values.dtype))

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
    """h5coro's S3Driver logs S3 errors and returns None, so the cause is asked of S3 with a HEAD request."""
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
        client.head_object(Bucket=bucket, Key=key)
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code"))
        if code in _EXPIRED_CODES:
            return CredentialsExpired(f"S3 credentials expired while reading {url}")
        if code in _MISSING_CODES:
            return GranuleUnreadable(f"cannot read granule {url}: S3 says {code}")
        return StorageThrottled(f"S3 answered {code} while reading {url}")
    except BotoCoreError as err:
        return StorageThrottled(f"S3 did not answer while reading {url}: {err}")
    if "NoneType" in detail:  # the object exists but a ranged GET failed: h5coro hid a transient S3 error
        return StorageThrottled(f"a ranged read of {url} failed (h5coro logged the S3 error): retry")
    return GranuleUnreadable(f"{where} is not an HDF5 file h5coro can read: {detail}")


@dataclass(frozen=True)
class Segments:
    """Land-ice segments that passed the filters: child cell id, height and sigma (metres, WGS84 ellipsoid)."""

    cells: np.ndarray
    h_li: np.ndarray
    h_li_sigma: np.ndarray

    @staticmethod
    def concatenate(parts: list[Segments]) -> Segments:
        if not parts:
            return Segments(np.empty(0, np.int64), np.empty(0), np.empty(0))
        return Segments(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("cells", "h_li", "h_li_sigma")))


def usable(variable: Variable, default_fill: float | None = None) -> np.ndarray:
    """True where the values are finite and not the fill value (the file's, else ``default_fill``)."""
    values = variable.values
    fill = variable.fill_value if variable.fill_value is not None else default_fill
    ok = np.isfinite(values) if np.issubdtype(values.dtype, np.floating) else np.ones(values.shape, bool)
    if fill is not None:
        ok &= values != np.asarray(fill, dtype=values.dtype)
    return ok


def _positions(granule: Atl06Granule, beam: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(latitude, longitude, valid) of all the beam's segments: degrees, and True where the position is usable."""
    read = granule.read(beam, ("latitude", "longitude"))
    lat, lon = read["latitude"].values.astype(np.float64), read["longitude"].values.astype(np.float64)
    with np.errstate(invalid="ignore"):
        valid = usable(read["latitude"]) & usable(read["longitude"]) & (np.abs(lat) <= 90.0)
    return lat, lon, valid


def beam_positions(granule: Atl06Granule, beam: str) -> tuple[np.ndarray, np.ndarray]:
    """(latitude, longitude) in degrees of the beam's segments with a usable position."""
    lat, lon, valid = _positions(granule, beam)
    return lat[valid], lon[valid]


def segments_in_parent(granule: Atl06Granule, parent: int, parent_order: int, child_order: int) -> Segments:
    """The good segments of every beam that lie in nested cell ``parent``, with their child cell ids.

    Positions are read whole; heights, sigma and quality only over the index range that reaches the parent cell.
    """
    parts = []
    for beam in granule.beams():
        lat, lon, valid = _positions(granule, beam)
        children = np.full(lat.shape, -1, dtype=np.int64)
        children[valid] = cell_ids(lat[valid], lon[valid], child_order)
        inside = valid & (parents_of(children, child_order, parent_order) == parent)
        where = np.flatnonzero(inside)
        if where.size == 0:
            continue
        start, stop = int(where[0]), int(where[-1]) + 1
        data = granule.read(beam, ("h_li", "h_li_sigma", "atl06_quality_summary"), (start, stop))
        h, sigma = data["h_li"], data["h_li_sigma"]
        keep = (
            inside[start:stop]
            & (data["atl06_quality_summary"].values == GOOD_QUALITY)
            & usable(h, ATL06_FILL_VALUE)
            & usable(sigma, ATL06_FILL_VALUE)
            & (sigma.values > 0)
        )
        parts.append(Segments(children[start:stop][keep], h.values[keep].astype(np.float64),
                              sigma.values[keep].astype(np.float64)))
    return Segments.concatenate(parts)
