"""Reading GHRSST L4 granules (GDS 2.0) without assumptions about one product.

Scale factor, offset, fill and missing values, valid range, dtype, units, the time units and the mask's flags are all
read from the file, so MUR (0.01°, v4.1), MUR25, OSTIA, CMC and the other GDS 2.0 L4 products work alike. What cannot
be read without guessing is refused with ``VariableMissing`` naming the file, the variable and what is wrong.

The file is opened with h5py (netCDF-4 files are HDF5; the HDF5 library parses the file and its chunk index). A
packed field whose chunks are filtered by exactly (shuffle,) deflate is read as raw chunk bytes and inflated with
libdeflate (PyPI ``deflate``; else ISA-L ``isal``; else ``zlib``), then un-shuffled with numpy: inflate is lossless
and shuffle a fixed byte transpose, so the integers are bit-identical to the library's own read, about twice as fast
(BENCHMARKS.md). Any other filter, or a chunk whose filter mask says a filter was skipped, sends the variable through
h5py's read.

The recipes read analysed_sst and the mask a tile at a time (``GranuleReader.tiles``: whole chunks, about a million
cells or more), reducing each before the next is read: a MUR 0.01° field is 650 million cells (1.3 GB as int16),
which whole would need several GB of memory; tile by tile its reduction needs about 100 MB (BENCHMARKS.md). Per-row
sums of the packed integers are exact, so the statistics do not depend on the tiling.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import operator
import os
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import h5py
import numpy as np

from granulemap.errors import GranuleUnreadable, VariableMissing
from granulemap.models import utc_day
from granulemap.recipes.base import time_from_stamp

GHRSST_STAMP = re.compile(r"^(\d{14})-")
"""GDS 2.0 file names start with the granule's date stamp, YYYYMMDDHHMMSS-."""

KELVIN_UNITS = {"kelvin", "k", "°k", "degk", "deg_k", "degreek", "degree_k", "degreesk", "degrees_k", "degree_kelvin",
                "degrees_kelvin"}
CELSIUS_UNITS = {"celsius", "°c", "degc", "deg_c", "degreec", "degree_c", "degreesc", "degrees_c", "degree_celsius",
                 "degrees_celsius", "c"}
"""Lower-cased spellings of kelvin and degrees Celsius (UDUNITS' K, degK, degree_C, degC, Celsius, ...; and "C")."""
ZERO_CELSIUS_IN_KELVIN = 273.15


SYNTHETIC_TAG = "SYNTHETIC"
"""What follows the date stamp in the name of a synthetic copy of a granule (granulemap.synthetic)."""


def time_from_name(name: str) -> dt.datetime | None:
    """The UTC time in a GHRSST file name's date stamp, or None if the name has none."""
    return time_from_stamp(GHRSST_STAMP, name)


GDS2_NAME = re.compile(
    rf"^\d{{14}}-(?:{SYNTHETIC_TAG}-)?(?P<product>[^-_]+-L[^-_]+_GHRSST-[^-]+-[^-]+-[^-]+-v\d+\.\d+-fv\d+\.\d+)\.nc$")
"""A GDS 2.0 file name: ``<date><time>-<RDAC>-<level>_GHRSST-<SST type>-<product string>-<additional segregator>-
v<GDS version>-fv<file version>.nc`` (GHRSST's GDS 2.0 file naming: dashes separate the fields, and no field holds
one), after the stamp the tag of a synthetic copy (granulemap.synthetic)."""

COLLECTION_PRODUCTS = {
    "MUR25-JPL-L4-GLOB-v04.2": "JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2",
    "MUR-JPL-L4-GLOB-v4.1": "JPL-L4_GHRSST-SSTfnd-MUR-GLOB-v02.0-fv04.1",
}
"""The product (as ``product_from_name`` reads it) whose granules a CMR collection holds, for the collections whose
granule names are known here: MUR25's from tests/data/ghrsst, MUR's from PO.DAAC's archive
(podaac-ops-cumulus-protected/MUR-JPL-L4-GLOB-v4.1/20020601090000-JPL-L4_GHRSST-SSTfnd-MUR-GLOB-v02.0-fv04.1.nc)."""


def product_from_name(name: str) -> str | None:
    """The product and version a GDS 2.0 file name names, ``JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2`` for
    ``20190101090000-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2.nc`` and for its synthetic copies (which are of its
    product). None for any other name (renamed, subsetted, another convention): it does not say its product."""
    match = GDS2_NAME.match(name.rsplit("/", 1)[-1])
    return match["product"] if match else None


@dataclass(frozen=True)
class PackedField:
    """How a 2-D (lat, lon) field is stored: which raw values are values, and how they unpack: value = raw * scale +
    offset (+ to_celsius). Read from its attributes (``_packed_field``); its values are read a tile at a time."""

    not_values: tuple[Any, ...]
    """The fill value and any missing_value, in the field's own type where it holds them (``_in_type``)."""
    lows: tuple[Any, ...]
    """valid_min and valid_range's low end, as given: a value is valid at or above each."""
    highs: tuple[Any, ...]
    """valid_max and valid_range's high end."""
    floating: bool
    scale: float
    offset: float
    to_celsius: float
    """Added after unpacking to get °C (−273.15 for kelvin, 0 for Celsius)."""

    def valid(self, raw: np.ndarray) -> np.ndarray:
        """True where ``raw`` is neither the fill value nor a missing_value, is within valid_min/valid_max/
        valid_range (all in packed units, edges included) and, for a float field, is finite."""
        valid = raw != self.not_values[0]
        for value in self.not_values[1:]:
            valid &= raw != value
        if self.floating:
            valid &= np.isfinite(raw)
        for low in self.lows:
            valid &= raw >= low
        for high in self.highs:
            valid &= raw <= high
        return valid

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
    mask_flags: OpenWaterRule | None
    """The mask's flag attributes as read: which of its values are open water (None when the mask was not read)."""


@dataclass(frozen=True)
class Tile:
    """A block of a granule's first (lat, lon) plane, rows ``rows`` by columns ``cols``: analysed_sst as stored,
    where it is a value, and the mask."""

    rows: slice
    cols: slice
    raw: np.ndarray
    valid: np.ndarray
    mask: np.ndarray | None


def _celsius_shift(units: str, granule: str) -> float:
    u = units.strip().lower()
    if u in KELVIN_UNITS:
        return -ZERO_CELSIUS_IN_KELVIN
    if u in CELSIUS_UNITS:
        return 0.0
    raise VariableMissing(f"{granule}: analysed_sst has units {units!r}, expected kelvin or celsius")


def _inflater() -> tuple[str, Callable[[bytes, int], bytes], type[Exception]]:
    """The fastest zlib-stream inflater installed: libdeflate, then ISA-L, then the standard library; and the error
    it raises for a stream it cannot inflate."""
    try:
        import deflate

        return "libdeflate", lambda data, size: deflate.zlib_decompress(data, size), deflate.DeflateError
    except ImportError:
        pass
    try:
        from isal import isal_zlib

        return "isal", lambda data, size: isal_zlib.decompress(data), isal_zlib.error
    except ImportError:
        return "zlib", lambda data, size: zlib.decompress(data), zlib.error


INFLATER, _inflate, _INFLATE_ERROR = _inflater()
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


TILE_CELLS = 1 << 20
"""Cells of a tile at the least (see ``GranuleReader.tiles``): whole chunks of analysed_sst, as many as that takes."""


class _PlaneReader:
    """Blocks of a variable's first (lat, lon) plane, as stored (no scale, no fill masking). Chunks filtered by
    exactly (shuffle+)deflate are read raw and inflated here, each kept until the blocks have passed it (``_chunk``);
    any other layout, or a variable with a chunk whose filter mask says a filter was skipped, through HDF5's own
    read. Chunks never written read as the HDF5 fill value, as the library reads them."""

    def __init__(self, ds: h5py.Dataset, granule: str, ready: Callable[[int], None] | None = None):
        self.ds, self.granule = ds, granule
        self._ready = ready  # a RangedFile's: wait for a prefetched chunk outside h5py
        self.lead: tuple[int, ...] = (0,) * (ds.ndim - 2)  # the first time of a (time, lat, lon) variable
        self.shape: tuple[int, int] = ds.shape[-2:]
        chunks = ds.chunks
        # contiguous: blocks of whole rows, about TILE_CELLS each (HDF5 reads a hyperslab of them)
        self.chunk_shape: tuple[int, int] = (chunks[-2:] if chunks is not None else
                                             (max(1, TILE_CELLS // max(1, self.shape[1])), self.shape[1]))
        filters = _filters(ds) if chunks is not None else []
        self.direct = filters in ([_SHUFFLE, _DEFLATE], [_DEFLATE])
        self.shuffled = filters[:1] == [_SHUFFLE]
        self._kept: dict[tuple[int, int], np.ndarray] = {}
        self._infos: dict[tuple[int, int], Any] = {}
        if self.direct:
            try:
                for info in _chunk_infos(ds):
                    if tuple(info.chunk_offset[:-2]) == self.lead:
                        self._infos[(info.chunk_offset[-2], info.chunk_offset[-1])] = info
            except (OSError, ValueError) as exc:
                raise GranuleUnreadable(f"cannot read {ds.name} of {granule}: {exc}") from exc
            if any(info.filter_mask != 0 for info in self._infos.values()):
                self.direct = False

    def block(self, rows: slice, cols: slice) -> np.ndarray:
        """The block ``rows`` × ``cols`` (slices with start and stop); GranuleUnreadable if it cannot be read."""
        try:
            if not self.direct:
                return np.asarray(self.ds[(*self.lead, rows, cols)])
            ch_rows, ch_cols = self.chunk_shape
            for key in [k for k in self._kept if k[0] + ch_rows <= rows.start]:  # above: rows of tiles skipped
                del self._kept[key]
            tops, lefts = self._chunk_origins(rows, cols)
            if len(tops) == 1 and len(lefts) == 1:
                chunk = self._chunk(tops[0], lefts[0])
                out = chunk[rows.start - tops[0]:rows.stop - tops[0], cols.start - lefts[0]:cols.stop - lefts[0]]
            else:
                out = np.empty((rows.stop - rows.start, cols.stop - cols.start), self.ds.dtype)
                for top in tops:
                    for left in lefts:
                        chunk = self._chunk(top, left)
                        r0, r1 = max(rows.start, top), min(rows.stop, top + ch_rows)
                        c0, c1 = max(cols.start, left), min(cols.stop, left + ch_cols)
                        out[r0 - rows.start:r1 - rows.start, c0 - cols.start:c1 - cols.start] = \
                            chunk[r0 - top:r1 - top, c0 - left:c1 - left]
            # Blocks come left to right, row by row: a chunk up to this block's right and bottom edges is done.
            n_rows, n_cols = self.shape
            for key in [k for k in self._kept
                        if min(k[0] + ch_rows, n_rows) <= rows.stop and min(k[1] + ch_cols, n_cols) <= cols.stop]:
                del self._kept[key]
            return out
        except (OSError, ValueError, zlib.error, _INFLATE_ERROR) as exc:
            raise GranuleUnreadable(f"cannot read {self.ds.name} of {self.granule}: {exc}") from exc

    def chunk_ranges(self, rows: slice, cols: slice) -> list[tuple[int, int]]:
        """Where the stored chunks that ``block(rows, cols)`` reads lie in the file, as (offset, size), in the order it
        reads them: for a prefetch (``RangedFile``). Nothing when HDF5 reads the variable itself."""
        if not self.direct:
            return []
        tops, lefts = self._chunk_origins(rows, cols)
        infos = (self._infos.get((top, left)) for top in tops for left in lefts)
        return [(info.byte_offset, info.size) for info in infos if info is not None]

    def _chunk_origins(self, rows: slice, cols: slice) -> tuple[range, range]:
        """The first rows and first columns of the chunks that the block ``rows`` × ``cols`` overlaps."""
        ch_rows, ch_cols = self.chunk_shape
        return (range(rows.start - rows.start % ch_rows, rows.stop, ch_rows),
                range(cols.start - cols.start % ch_cols, cols.stop, ch_cols))

    def _chunk(self, top: int, left: int) -> np.ndarray:
        """The chunk at (top, left) of the plane, cut to the plane's edges; kept until the blocks have passed it (a
        mask chunked otherwise than analysed_sst spans several tiles: each chunk is inflated once)."""
        kept = self._kept.get((top, left))
        if kept is not None:
            return kept
        ds = self.ds
        height = min(self.chunk_shape[0], self.shape[0] - top)
        width = min(self.chunk_shape[1], self.shape[1] - left)
        info = self._infos.get((top, left))
        if info is None:  # never written: the fill value
            chunk = np.full((height, width), ds.fillvalue, dtype=ds.dtype)
        else:
            if self._ready is not None:
                self._ready(info.byte_offset)
            _, payload = ds.id.read_direct_chunk(info.chunk_offset)
            data = _inflate(payload, int(np.prod(ds.chunks)) * ds.dtype.itemsize)
            flat = _unshuffle(data, ds.dtype.itemsize) if self.shuffled else np.frombuffer(data, np.uint8)
            chunk = flat.view(ds.dtype).reshape(ds.chunks)[self.lead][:height, :width]
        self._kept[(top, left)] = chunk
        return chunk


def _chunk_infos(ds: h5py.Dataset) -> list[Any]:
    """Where each chunk of ``ds`` is stored: HDF5's chunk iteration, one pass (asking chunk by chunk, by index, takes
    time growing with the square of their number: seconds for a mask stored a row per chunk)."""
    dsid = ds.id
    if hasattr(dsid, "chunk_iter"):
        infos: list[Any] = []
        dsid.chunk_iter(infos.append)
        return infos
    return [dsid.get_chunk_info(i) for i in range(dsid.get_num_chunks())]


def read_plane(ds: h5py.Dataset, granule: str = "") -> np.ndarray:
    """A variable's whole first (lat, lon) plane as stored, read block by block as the recipes read it (for checks:
    the built-in recipes never hold a whole field)."""
    reader = _PlaneReader(ds, granule or ds.name)
    out = np.empty(reader.shape, ds.dtype)
    for rows, cols in _tiling(reader):
        out[rows, cols] = reader.block(rows, cols)
    return out


def _tiling(reader: _PlaneReader) -> Iterator[tuple[slice, slice]]:
    """Tiles of whole chunks of ``reader``'s plane, of ``TILE_CELLS`` cells at the least (as wide as the plane before
    they grow taller), row of tiles by row of tiles."""
    (n_rows, n_cols), (ch_rows, ch_cols) = reader.shape, reader.chunk_shape
    ch_rows, ch_cols = max(ch_rows, 1), max(ch_cols, 1)
    across = min(-(-n_cols // ch_cols), max(1, -(-TILE_CELLS // (ch_rows * ch_cols))))
    width = across * ch_cols
    height = ch_rows * max(1, -(-TILE_CELLS // (ch_rows * min(width, n_cols)))) if width >= n_cols else ch_rows
    for top in range(0, n_rows, height):
        for left in range(0, n_cols, width):
            yield slice(top, min(top + height, n_rows)), slice(left, min(left + width, n_cols))


def _attr(ds: h5py.Dataset, name: str) -> Any:
    value = ds.attrs[name]
    if isinstance(value, bytes | np.bytes_):
        return value.decode()
    if isinstance(value, np.ndarray) and value.size == 1:
        return value.reshape(()).item()
    return value


def _where(ds: h5py.Dataset, granule: str) -> str:
    """``file: variable 'name'``, for the messages."""
    return f"{granule}: variable {ds.name.lstrip('/')!r}"


def _numbers(ds: h5py.Dataset, name: str, granule: str, size: int | None = None) -> np.ndarray:
    """A numeric attribute in its own type (missing_value, valid_range, flag_masks, ...), of ``size`` values if
    given; VariableMissing if it is not that."""
    value = np.atleast_1d(np.asarray(ds.attrs[name]))
    if value.dtype.kind not in "iuf" or (size is not None and value.size != size):
        wanted = "numbers" if size is None else f"{size} number{'s' if size > 1 else ''}"
        raise VariableMissing(f"{_where(ds, granule)} has {name} {value.tolist()!r}: expected {wanted}")
    return value


def _number(ds: h5py.Dataset, name: str, granule: str) -> float:
    """A numeric scalar attribute (scale_factor, add_offset) as a float."""
    return float(_numbers(ds, name, granule, size=1)[0])


def _variable(f: h5py.File, name: str, granule: str) -> h5py.Dataset:
    ds = f.get(name)
    if not isinstance(ds, h5py.Dataset):
        raise VariableMissing(f"{granule} has no variable {name!r}: is it a GHRSST L4 granule?")
    return ds


def _in_type(value: Any, raw: Any) -> Any:
    """``value`` (an attribute) in the type of ``raw`` (a field, or its dataset) when that holds it exactly, so that
    comparing the field with it makes no copy of the field in a wider type (an int32 or float64 attribute of int16
    data); else as it is."""
    try:
        same = raw.dtype.type(value)
    except (OverflowError, ValueError):
        return value
    return same if same == value else value


def _packed_field(ds: h5py.Dataset, granule: str) -> PackedField:
    """How the field is stored and which of its values are values, as CF says: not equal to ``_FillValue`` (else the
    HDF5 fill value) nor to any ``missing_value``, within ``valid_min``/``valid_max``/``valid_range`` (all in packed
    units) and finite."""
    attrs = set(ds.attrs)
    fill = _numbers(ds, "_FillValue", granule) if "_FillValue" in attrs else np.atleast_1d(ds.fillvalue)
    missing = _numbers(ds, "missing_value", granule) if "missing_value" in attrs else ()
    not_values = tuple(_in_type(v, ds) for v in dict.fromkeys([*fill, *missing]))  # once each (missing = fill, often)
    lows, highs = [], []
    if "valid_min" in attrs:
        lows.append(_in_type(_numbers(ds, "valid_min", granule, size=1)[0], ds))
    if "valid_max" in attrs:
        highs.append(_in_type(_numbers(ds, "valid_max", granule, size=1)[0], ds))
    if "valid_range" in attrs:
        low, high = (_in_type(v, ds) for v in _numbers(ds, "valid_range", granule, size=2))
        lows.append(low)
        highs.append(high)
    scale = _number(ds, "scale_factor", granule) if "scale_factor" in attrs else 1.0
    offset = _number(ds, "add_offset", granule) if "add_offset" in attrs else 0.0
    units = _attr(ds, "units") if "units" in attrs else ""
    return PackedField(not_values=not_values, lows=tuple(lows), highs=tuple(highs),
                       floating=bool(np.issubdtype(ds.dtype, np.floating)), scale=scale, offset=offset,
                       to_celsius=_celsius_shift(units, granule))


_TIME_UNITS = re.compile(
    r"\s*(?P<unit>[a-z]+)\s+(?:since|after|from)\s+"
    r"(?P<year>\d{4})-(?P<month>\d{1,2})(?:-(?P<day>\d{1,2}))?"
    r"(?:(?:\s+|T)(?P<hour>\d{1,2}):(?P<minute>\d{1,2})(?::(?P<second>\d{1,2}(?:\.\d*)?))?)?"
    r"\s*(?P<zone>Z|UTC|GMT|[+-]?\d{1,2}:\d{2}|[+-]\d{1,2}(?:\d{2})?)?\s*",
    re.IGNORECASE,
)
"""UDUNITS/CF time units: ``<unit> since YYYY-M[-D][( |T)h:m[:s[.f]]][ zone]``, zone ``Z``/``UTC``/``GMT`` or an offset
``±h``, ``[±]hh:mm`` or ``±hhmm`` from UTC (the reference time is the local time there)."""
_SECONDS = {
    **dict.fromkeys(("ms", "msec", "msecs", "millisecond", "milliseconds"), 0.001),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
}
_GREGORIAN = {"standard", "gregorian", "proleptic_gregorian"}
_GREGORIAN_START = dt.datetime(1582, 10, 15, tzinfo=dt.UTC)
"""Before this day the CF ``standard`` calendar is Julian, which Python's (proleptic Gregorian) datetime is not."""


def time_from_units(value: float, units: str, calendar: str = "standard") -> dt.datetime:
    """The UTC time ``value`` ``units`` (CF/UDUNITS, e.g. "seconds since 1981-01-01 00:00:00 UTC") in ``calendar``.

    ValueError, saying why, for anything that cannot be read without guessing: months or years (not fixed lengths),
    a calendar other than the (proleptic) Gregorian one, or a date before 1582-10-15 in the mixed ``standard`` one.
    """
    match = _TIME_UNITS.fullmatch(units)
    if match is None:
        raise ValueError("expected '<seconds|minutes|hours|days> since YYYY-MM-DD[ hh:mm[:ss]][ zone]'")
    unit = match["unit"].lower()
    if unit not in _SECONDS:
        raise ValueError(f"unit {match['unit']!r} is not one of milliseconds, seconds, minutes, hours or days "
                         "(as CF and cftime: months and years have no fixed length)")
    if calendar.strip().lower() not in _GREGORIAN:
        raise ValueError(f"calendar {calendar!r} is not supported (only standard, gregorian, proleptic_gregorian)")
    zone = (match["zone"] or "Z").upper()
    offset = dt.timedelta(0)
    if zone not in ("Z", "UTC", "GMT"):
        digits = zone.lstrip("+-").replace(":", "")
        hours, minutes = (digits[:-2], digits[-2:]) if len(digits) > 2 else (digits, "0")
        offset = (-1 if zone[0] == "-" else 1) * dt.timedelta(hours=int(hours), minutes=int(minutes))
    second = float(match["second"] or 0)
    try:
        local = dt.datetime(int(match["year"]), int(match["month"]), int(match["day"] or 1), int(match["hour"] or 0),
                            int(match["minute"] or 0), tzinfo=dt.timezone(offset))
        when = local.astimezone(dt.UTC) + dt.timedelta(seconds=second + value * _SECONDS[unit])
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"not a time: {exc}") from exc
    if calendar.strip().lower() != "proleptic_gregorian" and min(local, when) < _GREGORIAN_START:
        raise ValueError("a date before 1582-10-15 in the mixed Julian/Gregorian calendar is not supported")
    return when


def _time(f: h5py.File, name: str) -> dt.datetime:
    """The ``time`` variable's (first) value as UTC; the file name's date stamp when there is no time or no units."""
    tvar = f.get("time")
    if isinstance(tvar, h5py.Dataset) and "units" in tvar.attrs:
        units = str(_attr(tvar, "units"))
        calendar = str(_attr(tvar, "calendar")) if "calendar" in tvar.attrs else "standard"
        try:
            value = float(np.ravel(tvar[()])[0])
        except (IndexError, OSError, TypeError, ValueError) as exc:
            raise GranuleUnreadable(f"{name}: variable 'time' has no readable value: {exc}") from exc
        if "scale_factor" in tvar.attrs:
            value *= _number(tvar, "scale_factor", name)
        if "add_offset" in tvar.attrs:
            value += _number(tvar, "add_offset", name)
        try:
            return time_from_units(value, units, calendar)
        except ValueError as exc:
            raise VariableMissing(f"{name}: variable 'time' has units {units!r} (calendar {calendar!r}) that cannot "
                                  f"be read: {exc}") from exc
    stamp = time_from_name(name)
    if stamp is None:
        raise VariableMissing(f"{name}: no readable time variable and no YYYYMMDDHHMMSS- date stamp in its name")
    return stamp


def _refuse_a_name_of_another_day(name: str, when: dt.datetime) -> None:
    """A granule whose time variable is of another UTC day than its name's date stamp (a renamed file: copied under
    another day's name) would be found for the name's day and give a row at its own time, outside the run's dates or
    twice at one time: it fails alone, naming both. Another hour of the same day is a product's own habit (OSTIA
    stamps 12:00 in its name, 00:00 in its time)."""
    stamp = time_from_name(name)
    if stamp is not None and utc_day(when) != utc_day(stamp):
        raise GranuleUnreadable(
            f"{name}: its variable 'time' is {when:%Y-%m-%d %H:%M}Z, but its name is dated {stamp:%Y-%m-%d}, by which "
            f"runs find it: a file renamed or copied under another day's name? Give it the name NASA gave it (dated "
            f"{when:%Y%m%d})")


@dataclass(frozen=True)
class OpenWaterRule:
    """Which values of a GHRSST ``mask`` mean open water, as the file's attributes say.

    By bits (GDS 2.0: ``flag_masks`` 1 2 4 8 16 with ``flag_meanings`` "water land optional_lake_surface sea_ice
    optional_river_surface"): a water bit set and every land, lake, ice and river bit clear. By value (MUR v4.1's
    ``flag_meanings`` "1=open-sea, 2=land, 5=open-lake, 9=open-sea with ice in the grid, 13=open-lake with ice in the
    grid", the same GDS 2.0 bits added up; or CF ``flag_values`` with one word each): one of the values whose meaning
    is water and not land, lake, ice or river (MUR v4.1: 1 alone, as the bit test gives).
    """

    water_bits: int = 0
    excluded_bits: int = 0
    water_values: tuple[int, ...] = ()


_NOT_OPEN_WATER = ("land", "lake", "ice", "river")
_WATER_WORDS = {"water", "sea", "ocean"}
_NUMBERED_MEANING = re.compile(r"\s*([+-]?\d+)\s*=\s*(\S.*?)\s*")


def _kind(meaning: str) -> str:
    """'excluded' (land, lake, any ice, river), 'water' (water, sea or ocean and none of those) or 'other'."""
    text = meaning.lower()
    if any(word in text for word in _NOT_OPEN_WATER):
        return "excluded"
    return "water" if _WATER_WORDS & set(re.findall(r"[a-z]+", text)) else "other"


def _open_water_rule(mds: h5py.Dataset, granule: str) -> OpenWaterRule:
    """Read the mask's flag attributes; VariableMissing, naming the file, the variable and what is wrong, if they do
    not say which values are open water."""
    where = _where(mds, granule)
    if mds.dtype.kind not in "iu":
        raise VariableMissing(f"{where} is {mds.dtype}, not integer flags")
    if "flag_meanings" not in mds.attrs:
        raise VariableMissing(f"{where} has no flag_meanings: which cells are open water is not said")
    meanings = _attr(mds, "flag_meanings")
    if not isinstance(meanings, str):
        raise VariableMissing(f"{where} has flag_meanings {meanings!r}: expected text")
    masks = [int(m) for m in _numbers(mds, "flag_masks", granule)] if "flag_masks" in mds.attrs else None
    values = [int(v) for v in _numbers(mds, "flag_values", granule)] if "flag_values" in mds.attrs else None
    said = f"flag_meanings {meanings!r}, flag_masks {masks}, flag_values {values}"
    words = meanings.split()
    if "=" in meanings:  # "N=meaning, N=meaning, ..." (MUR v4.1): each N a whole value of the mask
        items = [_NUMBERED_MEANING.fullmatch(part) for part in re.split(r"[,;]", meanings) if part.strip()]
        numbered = [(int(m[1]), m[2]) for m in items if m]
        if not numbered or len(numbered) != len(items):
            raise VariableMissing(f"{where}: cannot read {said}: expected 'N=meaning' items separated by commas")
        numbers = [n for n, _ in numbered]
        if len(set(numbers)) != len(numbers) or (values is not None and sorted(numbers) != sorted(values)):
            raise VariableMissing(f"{where}: the values in flag_meanings do not match flag_values ({said})")
        rule = OpenWaterRule(water_values=tuple(n for n, meaning in numbered if _kind(meaning) == "water"))
    elif masks is not None and len(words) == len(masks) and values in (None, masks) and all(
            m > 0 and m & (m - 1) == 0 for m in masks):  # CF flag_masks: one bit per meaning
        kinds = [_kind(w) for w in words]
        rule = OpenWaterRule(
            water_bits=functools.reduce(operator.or_, (m for m, k in zip(masks, kinds) if k == "water"), 0),
            excluded_bits=functools.reduce(operator.or_, (m for m, k in zip(masks, kinds) if k == "excluded"), 0))
    elif masks is None and values is not None and len(words) == len(values):  # CF flag_values: one value each
        rule = OpenWaterRule(water_values=tuple(v for v, w in zip(values, words, strict=True) if _kind(w) == "water"))
    else:
        raise VariableMissing(f"{where}: cannot tell open water from {said}: expected one flag_meanings word per "
                              "single-bit flag_masks, one per flag_values, or 'N=meaning' items")
    if not (rule.water_bits or rule.water_values):
        raise VariableMissing(f"{where}: no flag means open water ({said})")
    return rule


def _opened(file: BinaryIO) -> BinaryIO | str:
    """What h5py opens for ``file``: a file opened on a local path (GranuleAccess.open's local files) by that path,
    which HDF5's own driver reads faster than through Python's file object (about 5 % on MUR25); others as given."""
    name = getattr(file, "name", None)
    if isinstance(file, io.BufferedReader | io.FileIO) and isinstance(name, str) and os.path.isfile(name):
        return name
    return file


class GranuleReader:
    """A GHRSST L4 granule (a local path, its bytes, or a binary file such as GranuleAccess.open's) open for
    reading: its coordinates, time and how its analysed_sst is stored (``granule``), then analysed_sst and the mask a
    tile at a time (``tiles``), so that no whole field is ever held: a MUR 0.01° field is 650 million cells. Use as a
    context manager."""

    def __init__(self, name: str, *, path: str | None = None, data: bytes | None = None,
                 file: BinaryIO | None = None, with_mask: bool):
        source = path if path is not None else _opened(file) if file is not None else io.BytesIO(data or b"")
        try:
            self._file = h5py.File(source, "r")
            self._source = source
        except OSError as exc:
            raise GranuleUnreadable(f"{name} is not a readable netCDF-4/HDF5 file: {exc}") from exc
        try:
            f = self._file
            lat = np.asarray(_variable(f, "lat", name)[()], dtype=np.float64)
            lon = np.asarray(_variable(f, "lon", name)[()], dtype=np.float64)
            sds = _variable(f, "analysed_sst", name)
            sst = _packed_field(sds, name)
            mds, flags = None, None
            if with_mask:
                mds = _variable(f, "mask", name)
                flags = _open_water_rule(mds, name)
            when = _time(f, name)
            _refuse_a_name_of_another_day(name, when)
            plane = sds.shape[1:] if sds.ndim == 3 else sds.shape  # the first time of (time, lat, lon)
            if plane != (lat.size, lon.size):
                raise GranuleUnreadable(f"{name}: analysed_sst has shape {plane}, expected ({lat.size}, {lon.size})")
            mask_plane = None if mds is None else mds.shape[1:] if mds.ndim == 3 else mds.shape
            if mask_plane is not None and mask_plane != plane:
                raise GranuleUnreadable(f"{name}: mask has shape {mask_plane}, analysed_sst {plane}")
            ready = getattr(source, "ready", None)  # a RangedFile's (see its ``ready``)
            self._sst = _PlaneReader(sds, name, ready)
            self._mask = _PlaneReader(mds, name, ready) if mds is not None else None
        except BaseException:
            self._file.close()
            raise
        self.granule = GhrsstGranule(name=name, time=when, lat=lat, lon=lon, sst=sst, mask_flags=flags)

    @property
    def sst_dtype(self) -> np.dtype:
        return self._sst.ds.dtype

    @property
    def mask_dtype(self) -> np.dtype | None:
        return self._mask.ds.dtype if self._mask is not None else None

    def __enter__(self) -> GranuleReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def tiles(self, rows: np.ndarray | None = None) -> Iterator[Tile]:
        """analysed_sst (and the mask) a tile at a time: whole chunks of analysed_sst, ``TILE_CELLS`` cells at the
        least, row of tiles by row of tiles; leaving out the rows of tiles with no row that ``rows`` (True per row)
        wants, which are not read. A file that can ``prefetch`` (an S3 object's ``RangedFile``) is told first which
        chunks will be read, in order, so that the next ones come while a tile is reduced (a chunk spanning several
        tiles, inflated once, is told once)."""
        plan = [(r, c) for r, c in _tiling(self._sst) if rows is None or rows[r].any()]
        prefetch = getattr(self._source, "prefetch", None)
        if prefetch is not None:
            readers = [self._sst] if self._mask is None else [self._sst, self._mask]
            prefetch(list(dict.fromkeys(
                found for r, c in plan for reader in readers for found in reader.chunk_ranges(r, c))))
        for r, c in plan:
            raw = self._sst.block(r, c)
            mask = self._mask.block(r, c) if self._mask is not None else None
            yield Tile(rows=r, cols=c, raw=raw, valid=self.granule.sst.valid(raw), mask=mask)


@dataclass(frozen=True)
class WholeField:
    """A field read whole (``read_granule``): its values as stored, where they are values, and how they unpack."""

    raw: np.ndarray
    valid: np.ndarray
    packing: PackedField

    @property
    def scale(self) -> float:
        return self.packing.scale

    @property
    def offset(self) -> float:
        return self.packing.offset

    @property
    def to_celsius(self) -> float:
        return self.packing.to_celsius

    def unpack(self, raw_value: float) -> float:
        return self.packing.unpack(raw_value)


@dataclass(frozen=True)
class WholeGranule:
    name: str
    time: dt.datetime
    lat: np.ndarray
    lon: np.ndarray
    sst: WholeField
    mask: np.ndarray | None
    mask_flags: OpenWaterRule | None


def read_granule(name: str, *, path: str | None = None, data: bytes | None = None, file: BinaryIO | None = None,
                 with_mask: bool) -> WholeGranule:
    """A GHRSST L4 granule's analysed_sst (and mask) whole, for a recipe of your own (README's tutorial): simple, and
    right for granules of a few million cells such as MUR25's. A whole MUR 0.01° field takes several GB: read such a
    granule a tile at a time with ``GranuleReader``, as the built-in recipes do."""
    with GranuleReader(name, path=path, data=data, file=file, with_mask=with_mask) as reader:
        g = reader.granule
        shape = (g.lat.size, g.lon.size)
        raw, valid = np.empty(shape, reader.sst_dtype), np.empty(shape, bool)
        mask = np.empty(shape, reader.mask_dtype) if with_mask else None
        for tile in reader.tiles():
            raw[tile.rows, tile.cols] = tile.raw
            valid[tile.rows, tile.cols] = tile.valid
            if mask is not None:
                mask[tile.rows, tile.cols] = tile.mask
    return WholeGranule(name=g.name, time=g.time, lat=g.lat, lon=g.lon, sst=WholeField(raw, valid, g.sst), mask=mask,
                        mask_flags=g.mask_flags)


def open_water(mask: np.ndarray, flags: OpenWaterRule | None, granule: str) -> np.ndarray:
    """True where ``mask`` is open water by its ``flags`` (``GhrsstGranule.mask_flags``; see ``OpenWaterRule``).

    Computed in the mask's own integer type where it can be: one ``==`` for one water value, or for one water bit one
    ``&`` and one ``==`` on int8.
    """
    if flags is None:
        raise ValueError(f"{granule}: its mask was not read: give with_mask=True to GranuleReader or read_granule")
    if flags.water_values:
        info = np.iinfo(mask.dtype)
        values = [v for v in flags.water_values if info.min <= v <= info.max]
        if len(values) == 1:
            return mask == mask.dtype.type(values[0])
        return np.isin(mask, values)
    water, excluded = flags.water_bits, flags.excluded_bits
    both = water | excluded
    single_bit = water & (water - 1) == 0 and not water & excluded
    if single_bit and both <= np.iinfo(mask.dtype).max:
        # water bit set and every excluded bit clear <=> (mask & (water|excluded)) == water, for one water bit.
        return (mask & mask.dtype.type(both)) == mask.dtype.type(water)
    m = mask.astype(np.int64, copy=False)
    return ((m & water) != 0) & ((m & excluded) == 0)


@dataclass(frozen=True)
class WeightedStats:
    mean_c: float | None
    n_valid: int
    min_c: float | None
    max_c: float | None


def cos_lat_weighted_stats(reader: GranuleReader, row_weights: np.ndarray,
                           use: Callable[[Tile], np.ndarray | None], rows: np.ndarray | None = None) -> WeightedStats:
    """Weighted mean (°C), count, min and max of analysed_sst over its valid cells where ``use(tile)`` is True
    (None: every cell of the tile) and whose row's weight is above 0 (and, given ``rows``, whose row it wants).

    Each cell's weight is its row's weight (cos latitude for a regular lat/lon grid): mean = Σ w·x / Σ w. Per-row
    sums of the packed integers are exact (int64 accumulation of ``raw * selected``: each term is x or 0), gathered
    tile by tile; unpacking is linear, so the mean is unpacked once at the end. Rows of tiles with no row wanted
    (zero weight, or not in ``rows``) are not read.
    """
    field = reader.granule.sst
    wanted = row_weights > 0
    if rows is not None:
        wanted = wanted & rows
    integer = np.issubdtype(reader.sst_dtype, np.integer)
    row_sum = np.zeros(row_weights.size, dtype=np.int64 if integer else np.float64)
    row_count = np.zeros(row_weights.size, dtype=np.int64)
    lo = hi = None
    for tile in reader.tiles(wanted):
        cells = use(tile)
        selected = tile.valid if cells is None else tile.valid & cells
        if not wanted[tile.rows].all():
            selected = selected & wanted[tile.rows][:, None]
        counts = np.count_nonzero(selected, axis=1)
        if not counts.any():
            continue
        row_count[tile.rows] += counts
        if integer:
            row_sum[tile.rows] += (tile.raw * selected).sum(axis=1, dtype=np.int64)  # exact: each term is x or 0
        else:
            row_sum[tile.rows] += np.where(selected, tile.raw, 0).sum(axis=1, dtype=np.float64)
        values = tile.raw[selected]
        lo = values.min() if lo is None else min(lo, values.min())
        hi = values.max() if hi is None else max(hi, values.max())
    n = int(row_count.sum())
    if n == 0:
        return WeightedStats(mean_c=None, n_valid=0, min_c=None, max_c=None)
    mean_raw = float(np.dot(row_weights, row_sum.astype(np.float64)) /
                     np.dot(row_weights, row_count.astype(np.float64)))
    # min/max of the packed values give min/max of the unpacked ones when the scale is positive.
    if field.scale < 0:
        lo, hi = hi, lo
    return WeightedStats(mean_c=field.unpack(mean_raw), n_valid=n, min_c=field.unpack(float(lo)),
                         max_c=field.unpack(float(hi)))
