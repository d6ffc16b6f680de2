"""Independent computations of the SST statistics, written from the method's description with plain
netCDF4/numpy (CF unpacking and masking done by netCDF4 itself), never with granulemap's code."""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np

# GDS 2.0 mask bits, as documented in the MUR25 granule's flag_meanings/flag_masks attributes.
WATER, LAND, LAKE, SEA_ICE, RIVER = 1, 2, 4, 8, 16


def first_plane(var: netCDF4.Variable) -> np.ma.MaskedArray:
    """A (time, lat, lon) variable's first (lat, lon) plane, or a (lat, lon) variable whole, as netCDF4 unpacks it."""
    return var[0, :, :] if var.ndim == 3 else var[:, :]


def ocean_mean_reference(path: Path) -> dict[str, float]:
    with netCDF4.Dataset(path) as ds:
        celsius = ds["analysed_sst"].units.lower() in ("celsius", "degrees_c")
        sst_c = first_plane(ds["analysed_sst"]).astype(np.float64) - (0 if celsius else 273.15)  # fill, valid range
        mask = np.ma.filled(first_plane(ds["mask"]), 0).astype(int)
        lat = ds["lat"][:].astype(np.float64)
    open_water = ((mask & WATER) != 0) & ((mask & (LAND | LAKE | SEA_ICE | RIVER)) == 0)
    use = open_water & ~np.ma.getmaskarray(sst_c) & np.isfinite(sst_c.data)
    weights = np.broadcast_to(np.cos(np.radians(lat))[:, None], sst_c.shape)
    values = sst_c.data[use]
    return {
        "mean_sst_c": float(np.average(values, weights=weights[use])),
        "n_valid": int(use.sum()),
        "min_sst_c": float(values.min()),
        "max_sst_c": float(values.max()),
    }


def assert_the_ocean_reference(got: dict, path: Path) -> None:
    """``got`` (a row of sst-global-mean, method ocean) has the reference's cell count, and its mean, min and max to
    1e-6 °C (the CSV's rounding)."""
    import pytest

    want = ocean_mean_reference(path)
    assert got["n_valid"] == want["n_valid"]
    for key in ("mean_sst_c", "min_sst_c", "max_sst_c"):
        assert got[key] == pytest.approx(want[key], abs=1e-6), key


def podaac_tutorial_reference(path: Path, weight_dtype: str = "float64", sum_dtype: str | None = None) -> float:
    """The tutorial's method as described: xarray weighted mean, cos(lat) weights zeroed poleward of 60°.

    The tutorial computes the weights from the file's float32 latitudes, in float32 (``weight_dtype="float32"``), and
    xarray's weighted mean then adds them up in float32: that sum, not the weights' values, moves the MUR25 global
    mean by about 2e-5 °C from granulemap's (float64 sums). ``sum_dtype`` casts the weights, once computed, to it.
    """
    import xarray as xr

    with xr.open_dataset(path) as ds:
        sst_c = ds["analysed_sst"].isel(time=0) - 273.15
        lat = ds["lat"].astype(weight_dtype)
        weights = np.cos(np.deg2rad(lat))
        weights = weights.where(np.abs(lat) <= 60, 0.0)
        if sum_dtype is not None:
            weights = weights.astype(sum_dtype)
        return float(sst_c.weighted(weights).mean(("lat", "lon")))
