"""Reading GHRSST L4 granules (GDS 2.0) without assumptions about one product.

Scale factor, offset, fill value, valid range, dtype, units and the mask's flag bits are all read from the file,
so MUR, MUR25, OSTIA, CMC and the other GDS 2.0 L4 products work alike.

The file is opened with h5py (netCDF-4 files are HDF5; the HDF5 library parses the file and its chunk index). A
packed field whose chunks are filtered by exactly (shuffle,) deflate is read as raw chunk bytes and inflated with
libdeflate (PyPI ``deflate``; else ISA-L ``isal``; else ``zlib``), then un-shuffled with numpy: inflate is lossless
and shuffle a fixed byte transpose, so the integers are bit-identical to the library's own read, about twice as fast
(BENCHMARKS.md). Any other filter, or a chunk whose filter mask says a filter was skipped, goes through h5py's read.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from granulemap.errors import GranuleUnreadable, VariableMissing
from granulemap.recipes.base import time_from_stamp

GHRSST_STAMP = re.compile(r"^(\d{14})-")
"""GDS 2.0 file names start with the granule's date stamp, YYYYMMDDHHMMSS-."""

KELVIN_UNITS = {"kelvin", "k", "degrees_kelvin", "degree_kelvin"}
CELSIUS_UNITS = {"celsius", "degc", "degree_celsius", "degrees_celsius", "c"}
ZERO_CELSIUS_IN_KELVIN = 273.15


def time_from_name(name: str) -> dt.datetime | None:
    """The UTC time in a GHRSST file name's date stamp, or None if the name has none."""
    return time_from_stamp(GHRSST_STAMP, name)


@dataclass(frozen=True)
class PackedField:
    """A 2-D (lat, lon) field as stored, with how to unpack it: value = raw * scale + offset (+ to_celsius)."""

    raw: np.ndarray
    valid: np.ndarray
    """True where raw is neither the fill value nor outside valid_min/valid_max."""
    scale: float
    offset: float
    to_celsius: float
    """Added after unpacking to get °C (−273.15 for kelvin, 0 for Celsius)."""

    def unpack(self, raw_value: float) -> float:
        """°C of a raw value (also of a mean of raw values: unpacking is linear)."""
        return raw_value * self.scale + self.offset + self.to_celsius


@dataclass(frozen=True)
class GhrsstGranule:
    name: str
    time: dt.datetime
    lat: np.ndarray
    lon: np.ndarray
    sst: PackedField
    mask: np.ndarray | None
    mask_flags: dict[str, int]


def _celsius_shift(units: str, granule: str) -> float:
    u = units.strip().lower()
    if u in KELVIN_UNITS:
        return -ZERO_CELSIUS_IN_KELVIN
    if u in CELSIUS_UNITS:
        return 0.0
    raise VariableMissing(f"{granule}: analysed_sst has units {units!r}, expected kelvin or celsius")


def _inflater() -> tuple[str, Callable[[bytes, int], bytes]]:
    """The fastest zlib-stream inflater installed: libdeflate, then ISA-L, then the standard library."""
    try:
        import deflate

        return "libdeflate", lambda data, size: deflate.zlib_decompress(data, size)
    except ImportError:
        pass
    try:
        from isal import isal_zlib

        return "isal", lambda data, size: isal_zlib.decompress(data)
    except ImportError:
        return "zlib", lambda data, size: zlib.decompress(data)


INFLATER, _inflate = _inflater()
_DEFLATE, _SHUFFLE = h5py.h5z.FILTER_DEFLATE, h5py.h5z.FILTER_SHUFFLE


def _unshuffle(data: bytes, itemsize: int) -> np.ndarray:
    """Undo HDF5's shuffle filter: byte j of element e is stored at data[j * n + e]."""
    raw = np.frombuffer(data, np.uint8)
    if itemsize == 1:
        return raw
    n = raw.size // itemsize
    planes = raw[: n * itemsize].reshape(itemsize, n)
    out = np.empty((n, itemsize), np.uint8)
    for j in range(itemsize):
        out[:, j] = planes[j]
    return out.reshape(-1)


def _filters(ds: h5py.Dataset) -> list[int]:
    plist = ds.id.get_create_plist()
    return [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]


def read_stored(ds: h5py.Dataset) -> np.ndarray:
    """The whole dataset as stored (no scale, no fill masking), inflating (shuffle+)deflate chunks ourselves."""
    filters = _filters(ds)
    if ds.chunks is None or filters not in ([_SHUFFLE, _DEFLATE], [_DEFLATE]):
        return ds[()]
    shuffled = filters[0] == _SHUFFLE
    chunk_shape = ds.chunks
    chunk_bytes = int(np.prod(chunk_shape)) * ds.dtype.itemsize
    out = np.full(ds.shape, ds.fillvalue, dtype=ds.dtype)  # chunks never written read as the fill value
    dsid = ds.id
    for i in range(dsid.get_num_chunks()):
        info = dsid.get_chunk_info(i)
        if info.filter_mask != 0:  # a filter was skipped for this chunk: let HDF5 read the dataset
            return ds[()]
        _, payload = dsid.read_direct_chunk(info.chunk_offset)
        data = _inflate(payload, chunk_bytes)
        flat = _unshuffle(data, ds.dtype.itemsize) if shuffled else np.frombuffer(data, np.uint8)
        chunk = flat.view(ds.dtype).reshape(chunk_shape)
        region = tuple(slice(o, min(o + c, s)) for o, c, s in zip(info.chunk_offset, chunk_shape, ds.shape, strict=True))
        out[region] = chunk[tuple(slice(0, r.stop - r.start) for r in region)]
    return out


def _attr(ds: h5py.Dataset, name: str) -> Any:
    value = ds.attrs[name]
    if isinstance(value, bytes | np.bytes_):
        return value.decode()
    if isinstance(value, np.ndarray) and value.size == 1:
        return value.reshape(()).item()
    return value


def _variable(f: h5py.File, name: str, granule: str) -> h5py.Dataset:
    ds = f.get(name)
    if not isinstance(ds, h5py.Dataset):
        raise VariableMissing(f"{granule} has no variable {name!r}: is it a GHRSST L4 granule?")
    return ds


def _first_slice(ds: h5py.Dataset, granule: str) -> np.ndarray:
    try:
        data = read_stored(ds)
    except (OSError, ValueError, zlib.error) as exc:
        raise GranuleUnreadable(f"cannot read {ds.name} of {granule}: {exc}") from exc
    return data[0] if data.ndim == 3 else data


def _packed_field(ds: h5py.Dataset, granule: str) -> PackedField:
    raw = _first_slice(ds, granule)
    attrs = set(ds.attrs)
    fill = _attr(ds, "_FillValue") if "_FillValue" in attrs else ds.fillvalue
    valid = raw != fill
    if np.issubdtype(raw.dtype, np.floating):
        valid &= np.isfinite(raw)
    if "valid_min" in attrs:
        valid &= raw >= _attr(ds, "valid_min")
    if "valid_max" in attrs:
        valid &= raw <= _attr(ds, "valid_max")
    if "valid_range" in attrs:
        lo, hi = ds.attrs["valid_range"]
        valid &= (raw >= lo) & (raw <= hi)
    scale = float(_attr(ds, "scale_factor")) if "scale_factor" in attrs else 1.0
    offset = float(_attr(ds, "add_offset")) if "add_offset" in attrs else 0.0
    units = _attr(ds, "units") if "units" in attrs else ""
    return PackedField(raw=raw, valid=valid, scale=scale, offset=offset, to_celsius=_celsius_shift(units, granule))


_TIME_UNITS = re.compile(r"^\s*(seconds|minutes|hours|days)\s+since\s+(\d{4}-\d{2}-\d{2})(?:[ T](\d{2}:\d{2}:\d{2}))?")
_SECONDS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}


def _time(f: h5py.File, name: str) -> dt.datetime:
    if "time" in f and "units" in f["time"].attrs:
        match = _TIME_UNITS.match(_attr(f["time"], "units"))
        if match:
            unit, day, clock = match.groups()
            epoch = dt.datetime.fromisoformat(f"{day}T{clock or '00:00:00'}").replace(tzinfo=dt.UTC)
            return epoch + dt.timedelta(seconds=float(f["time"][0]) * _SECONDS[unit])
    stamp = time_from_name(name)
    if stamp is None:
        raise VariableMissing(f"{name}: no readable time variable and no YYYYMMDDHHMMSS- date stamp in its name")
    return stamp


def read_granule(name: str, *, path: str | None = None, data: bytes | None = None, with_mask: bool) -> GhrsstGranule:
    """Read what the SST recipes need from a GHRSST L4 granule given as a local path or as bytes in memory."""
    try:
        f = h5py.File(path if path is not None else io.BytesIO(data or b""), "r")
    except OSError as exc:
        raise GranuleUnreadable(f"{name} is not a readable netCDF-4/HDF5 file: {exc}") from exc
    with f:
        lat = np.asarray(_variable(f, "lat", name)[()], dtype=np.float64)
        lon = np.asarray(_variable(f, "lon", name)[()], dtype=np.float64)
        sst = _packed_field(_variable(f, "analysed_sst", name), name)
        mask, flags = None, {}
        if with_mask:
            mds = _variable(f, "mask", name)
            masks = np.atleast_1d(mds.attrs["flag_masks"]).astype(np.int64)
            flags = dict(zip(_attr(mds, "flag_meanings").split(), (int(m) for m in masks), strict=True))
            mask = _first_slice(mds, name)
        when = _time(f, name)
    if sst.raw.shape != (lat.size, lon.size):
        raise GranuleUnreadable(f"{name}: analysed_sst has shape {sst.raw.shape}, expected ({lat.size}, {lon.size})")
    return GhrsstGranule(name=name, time=when, lat=lat, lon=lon, sst=sst, mask=mask, mask_flags=flags)


def open_water(mask: np.ndarray, flags: dict[str, int], granule: str) -> np.ndarray:
    """True where the GDS 2.0 mask says open water: the water bit set and the land, lake, ice and river bits clear.

    Computed in the mask's own integer type when the bits fit (one ``&`` and one ``==`` on int8).
    """
    water = [bit for meaning, bit in flags.items() if meaning == "water"]
    if not water:
        raise VariableMissing(f"{granule}: mask has no 'water' flag (flag_meanings: {' '.join(flags)})")
    excluded = 0
    for meaning, bit in flags.items():
        if any(word in meaning for word in ("land", "lake", "ice", "river")):
            excluded |= bit
    both = water[0] | excluded
    single_bit = water[0] > 0 and water[0] & (water[0] - 1) == 0 and not water[0] & excluded
    if single_bit and mask.dtype.kind in "iu" and both <= np.iinfo(mask.dtype).max:
        # water bit set and every excluded bit clear <=> (mask & (water|excluded)) == water, for one water bit.
        return (mask & mask.dtype.type(both)) == mask.dtype.type(water[0])
    m = mask.astype(np.int64, copy=False)
    return ((m & water[0]) != 0) & ((m & excluded) == 0)


@dataclass(frozen=True)
class WeightedStats:
    mean_c: float | None
    n_valid: int
    min_c: float | None
    max_c: float | None


def cos_lat_weighted_stats(field: PackedField, use: np.ndarray, row_weights: np.ndarray) -> WeightedStats:
    """Weighted mean (°C), count, min and max of ``field`` over the cells where ``use`` is True.

    Each cell's weight is its row's weight (cos latitude for a regular lat/lon grid): mean = Σ w·x / Σ w.
    Sums of the packed integers are exact (int64 accumulation of ``raw * selected``: each term is x or 0), and
    unpacking is linear, so the mean is unpacked once at the end.
    """
    raw = field.raw
    selected = use & field.valid
    if not (row_weights > 0).all():
        selected &= (row_weights > 0)[:, None]
    row_count_i = np.count_nonzero(selected, axis=1)
    n = int(row_count_i.sum())
    if n == 0:
        return WeightedStats(mean_c=None, n_valid=0, min_c=None, max_c=None)
    if np.issubdtype(raw.dtype, np.integer):
        row_sum = (raw * selected).sum(axis=1, dtype=np.int64).astype(np.float64)  # exact: each term is x or 0
    else:
        row_sum = np.where(selected, raw, 0).sum(axis=1, dtype=np.float64)
    row_count = row_count_i.astype(np.float64)
    mean_raw = float(np.dot(row_weights, row_sum) / np.dot(row_weights, row_count))
    values = raw[selected]
    lo, hi = values.min(), values.max()
    # min/max of the packed values give min/max of the unpacked ones when the scale is positive.
    if field.scale < 0:
        lo, hi = hi, lo
    return WeightedStats(mean_c=field.unpack(mean_raw), n_valid=n, min_c=field.unpack(float(lo)),
                         max_c=field.unpack(float(hi)))
