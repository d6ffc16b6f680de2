"""Reading GHRSST L4 granules (GDS 2.0) without assumptions about one product.

Scale factor, offset, fill value, valid range, dtype, units and the mask's flag bits are all read from the file,
so MUR, MUR25, OSTIA, CMC and the other GDS 2.0 L4 products work alike.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import netCDF4
import numpy as np

from granulemap.errors import GranuleUnreadable, VariableMissing

GHRSST_STAMP = re.compile(r"^(\d{14})-")
"""GDS 2.0 file names start with the granule's date stamp, YYYYMMDDHHMMSS-."""

KELVIN_UNITS = {"kelvin", "k", "degrees_kelvin", "degree_kelvin"}
CELSIUS_UNITS = {"celsius", "degc", "degree_celsius", "degrees_celsius", "c"}
ZERO_CELSIUS_IN_KELVIN = 273.15


def time_from_name(name: str) -> dt.datetime | None:
    """The UTC time in a GHRSST file name's date stamp, or None if the name has none."""
    match = GHRSST_STAMP.match(name.rsplit("/", 1)[-1])
    if not match:
        return None
    try:
        return dt.datetime.strptime(match.group(1), "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


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


def _open(name: str, path: str | None, data: bytes | None) -> netCDF4.Dataset:
    try:
        if path is not None:
            return netCDF4.Dataset(path, "r")
        return netCDF4.Dataset(name, "r", memory=data)
    except OSError as exc:
        raise GranuleUnreadable(f"{name} is not a readable netCDF-4/HDF5 file: {exc}") from exc


def _variable(ds: netCDF4.Dataset, name: str, granule: str) -> netCDF4.Variable:
    if name not in ds.variables:
        raise VariableMissing(
            f"{granule} has no variable {name!r}: is it a GHRSST L4 granule? variables: {', '.join(ds.variables)}"
        )
    return ds.variables[name]


def _first_time_slice(var: netCDF4.Variable, granule: str) -> np.ndarray:
    try:
        data = var[0, :, :] if var.ndim == 3 else var[:, :]
    except (RuntimeError, OSError, IndexError) as exc:
        raise GranuleUnreadable(f"cannot read {var.name} of {granule}: {exc}") from exc
    return np.asarray(data)


def _celsius_shift(units: str, granule: str) -> float:
    u = units.strip().lower()
    if u in KELVIN_UNITS:
        return -ZERO_CELSIUS_IN_KELVIN
    if u in CELSIUS_UNITS:
        return 0.0
    raise VariableMissing(f"{granule}: analysed_sst has units {units!r}, expected kelvin or celsius")


def _packed_field(var: netCDF4.Variable, granule: str) -> PackedField:
    var.set_auto_maskandscale(False)
    raw = _first_time_slice(var, granule)
    attrs = set(var.ncattrs())
    fill = var.getncattr("_FillValue") if "_FillValue" in attrs else netCDF4.default_fillvals.get(raw.dtype.str[1:])
    valid = raw != fill if fill is not None else np.ones(raw.shape, bool)
    if np.issubdtype(raw.dtype, np.floating):
        valid &= np.isfinite(raw)
    if "valid_min" in attrs:
        valid &= raw >= var.getncattr("valid_min")
    if "valid_max" in attrs:
        valid &= raw <= var.getncattr("valid_max")
    if "valid_range" in attrs:
        lo, hi = var.getncattr("valid_range")
        valid &= (raw >= lo) & (raw <= hi)
    scale = float(var.getncattr("scale_factor")) if "scale_factor" in attrs else 1.0
    offset = float(var.getncattr("add_offset")) if "add_offset" in attrs else 0.0
    units = var.getncattr("units") if "units" in attrs else ""
    return PackedField(raw=raw, valid=valid, scale=scale, offset=offset, to_celsius=_celsius_shift(units, granule))


def _mask_flags(var: netCDF4.Variable, granule: str) -> dict[str, int]:
    attrs = set(var.ncattrs())
    if "flag_masks" not in attrs or "flag_meanings" not in attrs:
        raise VariableMissing(f"{granule}: variable 'mask' lacks flag_masks/flag_meanings (GDS 2.0 requires them)")
    masks = np.atleast_1d(var.getncattr("flag_masks")).astype(np.int64)
    meanings = var.getncattr("flag_meanings").split()
    if len(masks) != len(meanings):
        raise VariableMissing(f"{granule}: mask has {len(masks)} flag_masks but {len(meanings)} flag_meanings")
    return dict(zip(meanings, (int(m) for m in masks), strict=True))


def _time(ds: netCDF4.Dataset, name: str) -> dt.datetime:
    stamp = time_from_name(name)
    if "time" in ds.variables:
        tvar = ds.variables["time"]
        try:
            when = netCDF4.num2date(
                tvar[0], tvar.units.replace(" UTC", ""), only_use_cftime_datetimes=False,
                only_use_python_datetimes=True,
            )
            return when.replace(tzinfo=dt.UTC)
        except (AttributeError, ValueError, TypeError):
            pass
    if stamp is None:
        raise VariableMissing(f"{name}: no readable time variable and no YYYYMMDDHHMMSS- date stamp in its name")
    return stamp


def read_granule(name: str, *, path: str | None = None, data: bytes | None = None, with_mask: bool) -> GhrsstGranule:
    """Read what the SST recipes need from a GHRSST L4 granule given as a local path or as bytes in memory."""
    ds = _open(name, path, data)
    try:
        lat = np.asarray(_variable(ds, "lat", name)[:], dtype=np.float64)
        lon = np.asarray(_variable(ds, "lon", name)[:], dtype=np.float64)
        sst = _packed_field(_variable(ds, "analysed_sst", name), name)
        mask = None
        flags: dict[str, int] = {}
        if with_mask:
            mvar = _variable(ds, "mask", name)
            flags = _mask_flags(mvar, name)
            mvar.set_auto_maskandscale(False)
            mask = _first_time_slice(mvar, name)
        when = _time(ds, name)
    finally:
        ds.close()
    if sst.raw.shape != (lat.size, lon.size):
        raise GranuleUnreadable(f"{name}: analysed_sst has shape {sst.raw.shape}, expected (lat, lon) = "
                                f"({lat.size}, {lon.size})")
    return GhrsstGranule(name=name, time=when, lat=lat, lon=lon, sst=sst, mask=mask, mask_flags=flags)


def open_water(mask: np.ndarray, flags: dict[str, int], granule: str) -> np.ndarray:
    """True where the GDS 2.0 mask says open water: the water bit set and the land, lake, ice and river bits clear."""
    water = [bit for meaning, bit in flags.items() if meaning == "water"]
    if not water:
        raise VariableMissing(f"{granule}: mask has no 'water' flag (flag_meanings: {' '.join(flags)})")
    excluded = 0
    for meaning, bit in flags.items():
        if any(word in meaning for word in ("land", "lake", "ice", "river")):
            excluded |= bit
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
    Sums of the packed integers are exact, and unpacking is linear, so the mean is unpacked once at the end.
    """
    raw = field.raw
    selected = use & field.valid & (row_weights[:, None] > 0)
    n = int(np.count_nonzero(selected))
    if n == 0:
        return WeightedStats(mean_c=None, n_valid=0, min_c=None, max_c=None)
    acc = np.int64 if np.issubdtype(raw.dtype, np.integer) else np.float64
    row_sum = np.where(selected, raw, 0).sum(axis=1, dtype=acc).astype(np.float64)
    row_count = selected.sum(axis=1, dtype=np.int64).astype(np.float64)
    mean_raw = float(np.dot(row_weights, row_sum) / np.dot(row_weights, row_count))
    values = raw[selected]
    lo, hi = values.min(), values.max()
    # min/max of the packed values give min/max of the unpacked ones when the scale is positive.
    if field.scale < 0:
        lo, hi = hi, lo
    return WeightedStats(
        mean_c=field.unpack(mean_raw), n_valid=n, min_c=field.unpack(float(lo)), max_c=field.unpack(float(hi))
    )
