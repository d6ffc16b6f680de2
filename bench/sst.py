"""SST per granule: granulemap's processor vs the PO.DAAC tutorial's method (as they wrote it) and a floor.

Contenders, all on the same real MUR25 granule (tests/data/ghrsst), interleaved in every repeat:
- ``ours-ocean`` / ``ours-tutorial``: ``granulemap.recipes.sst_global_mean.global_mean_sst``, method ocean and
  podaac-tutorial (the code the Processor Lambda runs: granulemap/recipes/ghrsst.py opens the file with h5py, reads
  analysed_sst's and mask's (shuffle+)deflate chunks raw and inflates them with libdeflate, tests the mask on int8).
- ``podaac-as-written``: the tutorial's method as they describe it: ``xr.open_dataset(..., engine="h5netcdf")``
  (the engine their requirements name), analysed_sst of the first time in °C, cos(lat) weights zeroed poleward of
  60° by a Python loop over the latitudes, ``.weighted(weights).mean()``. Written by us from that description.
- ``floor-ocean`` / ``floor-tutorial``: the least work that gives the same numbers through the netCDF library:
  netCDF4 reads analysed_sst (and mask, for ocean) and lat, numpy reduces, with MUR25's attributes hard-coded (no
  checks, no metadata reads). Ours reads every attribute and checks it, but inflates faster than the HDF5 library's
  own filter does (the inflate table), so it can be below this floor.

Checked before timing, on the real and on three synthetic granules: ours reads analysed_sst and mask bit-identical
to HDF5's own read, the floor's numbers equal ours, and the tutorial's number is ours-tutorial's within 3e-5 °C.
Then, side by side: analysed_sst's one chunk inflated by each inflater installed, and the whole field read by
netCDF4, by h5py and by ours (``inflate_bench``).

Heavy imports happen inside the contenders, so that bench/rss_probe.py can measure each one's imports and its
processing separately in a fresh process.
"""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import ROOT, interleaved, ratio, run_json, timing_row  # noqa: E402

MUR25 = ROOT / "tests" / "data" / "ghrsst" / "20181231090000-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2.nc"
# MUR25's packing (from its analysed_sst attributes), hard-coded only by the floor contenders.
FILL, SCALE, OFFSET, KELVIN = -32768, 0.001, 298.15, 273.15
WATER_AND_EXCLUDED, WATER = 31, 1  # mask bits: 1 water, 2 land, 4 lake, 8 sea ice, 16 river


# ---- the contenders --------------------------------------------------------------------------------------------
def ours(method: str) -> Callable[[Path], dict[str, Any]]:
    def run(path: Path) -> dict[str, Any]:
        from granulemap.recipes.sst_global_mean import global_mean_sst

        return global_mean_sst(path.name, method=method, path=str(path))  # type: ignore[arg-type]
    return run


def podaac_as_written(path: Path) -> float:
    """PO.DAAC's tutorial method, written from its description (xarray + h5netcdf, a loop zeroes the weights)."""
    import numpy as np
    import xarray as xr

    ds = xr.open_dataset(path, engine="h5netcdf")
    data_var = ds.analysed_sst.isel(time=0) - 273.15
    weights = np.cos(np.deg2rad(data_var.lat))
    for i, lat in enumerate(data_var.lat.values):  # the tutorial's loop: zero weight poleward of 60°
        if abs(lat) > 60:
            weights[i] = 0
    global_mean = float(data_var.weighted(weights).mean())
    ds.close()
    return global_mean


def _floor_read(path: Path, with_mask: bool) -> tuple[Any, Any, Any]:
    import netCDF4
    import numpy as np

    with netCDF4.Dataset(path) as ds:
        sst = ds["analysed_sst"]
        sst.set_auto_maskandscale(False)
        raw = sst[0]
        mask = None
        if with_mask:
            mvar = ds["mask"]
            mvar.set_auto_maskandscale(False)
            mask = mvar[0]
        lat = ds["lat"]
        lat.set_auto_maskandscale(False)
        lat = np.asarray(lat[:], dtype=np.float64)
    return raw, mask, lat


def _floor_stats(raw: Any, selected: Any, weights: Any) -> dict[str, Any]:
    import numpy as np

    row_sum = (raw * selected).sum(axis=1, dtype=np.int64).astype(np.float64)
    row_count = np.count_nonzero(selected, axis=1).astype(np.float64)
    mean = float(np.dot(weights, row_sum) / np.dot(weights, row_count)) * SCALE + OFFSET - KELVIN
    values = raw[selected]
    return {"mean_sst_c": mean, "n_valid": int(values.size),
            "min_sst_c": float(values.min()) * SCALE + OFFSET - KELVIN,
            "max_sst_c": float(values.max()) * SCALE + OFFSET - KELVIN}


def floor_ocean(path: Path) -> dict[str, Any]:
    import numpy as np

    raw, mask, lat = _floor_read(path, with_mask=True)
    selected = (raw != FILL) & ((mask & np.int8(WATER_AND_EXCLUDED)) == np.int8(WATER))
    return _floor_stats(raw, selected, np.cos(np.deg2rad(lat)))


def floor_tutorial(path: Path) -> dict[str, Any]:
    import numpy as np

    raw, _, lat = _floor_read(path, with_mask=False)
    weights = np.where(np.abs(lat) <= 60.0, np.cos(np.deg2rad(lat)), 0.0)
    selected = (raw != FILL) & (weights > 0)[:, None]
    return _floor_stats(raw, selected, weights)


CONTENDERS: dict[str, Callable[[Path], Any]] = {
    "ours-ocean": ours("ocean"),
    "ours-tutorial": ours("podaac-tutorial"),
    "floor-ocean": floor_ocean,
    "floor-tutorial": floor_tutorial,
    "podaac-as-written": podaac_as_written,
}
IMPORTS: dict[str, list[str]] = {
    "ours-ocean": ["granulemap.recipes.sst_global_mean"],
    "ours-tutorial": ["granulemap.recipes.sst_global_mean"],
    "floor-ocean": ["netCDF4", "numpy"],
    "floor-tutorial": ["netCDF4", "numpy"],
    "podaac-as-written": ["xarray", "h5netcdf", "h5py", "numpy"],
    "ours-ocean-ranges": ["granulemap.recipes.sst_global_mean"],
}
"""What each contender imports: the baseline of its peak-RSS measurement (bench/rss_probe.py)."""


def h5netcdf_engine_available() -> bool:
    try:
        import h5netcdf  # noqa: F401
        import xarray  # noqa: F401
    except ImportError:
        return False
    return True


# ---- checks: every contender computes the same numbers ---------------------------------------------------------
def check_agreement(granules: list[Path]) -> list[str]:
    """Raise if a contender disagrees; return one line per check made."""
    import h5py
    import numpy as np

    from granulemap.recipes import ghrsst

    lines = []
    for path in granules:
        with h5py.File(path) as f:  # our raw-chunk inflate gives the HDF5 library's integers, bit for bit
            for var in ("analysed_sst", "mask"):
                mine_raw, hdf5_raw = ghrsst.read_plane(f[var]), f[var][0]
                if mine_raw.dtype != hdf5_raw.dtype or not np.array_equal(mine_raw, hdf5_raw):
                    raise AssertionError(f"ours reads {var} of {path.name} differently from HDF5")
        for method, floor in (("ocean", floor_ocean), ("podaac-tutorial", floor_tutorial)):
            mine = ours(method)(path)
            bottom = floor(path)
            if (round(bottom["mean_sst_c"], 6), bottom["n_valid"]) != (mine["mean_sst_c"], mine["n_valid"]):
                raise AssertionError(f"floor differs on {path.name} ({method}): {bottom} vs {mine}")
    lines.append(f"on {', '.join(p.name for p in granules)}: ours reads analysed_sst and mask bit-identical to "
                 "HDF5's own read, and the floor's numbers equal ours (mean to 1e-6 °C and cell count, methods "
                 "ocean and podaac-tutorial)")
    if h5netcdf_engine_available():
        theirs = podaac_as_written(granules[0])
        mine = ours("podaac-tutorial")(granules[0])["mean_sst_c"]
        # xarray adds the tutorial's float32 weights up in float32; we sum in float64 (README): < 3e-5 °C apart.
        if abs(theirs - mine) > 3e-5:
            raise AssertionError(f"podaac-as-written gives {theirs}, ours {mine}")
        lines.append(f"{granules[0].name}: podaac-as-written {theirs:.6f} °C vs ours-tutorial {mine:.6f} °C "
                     f"(|Δ| = {abs(theirs - mine):.1e}: the tutorial's float32 sum of its weights)")
    return lines


# ---- inflate: the one zlib+shuffle chunk of analysed_sst, by each inflater installed ---------------------------
def inflaters() -> dict[str, Callable[[bytes, int], bytes]]:
    found: dict[str, Callable[[bytes, int], bytes]] = {"zlib (stdlib)": lambda d, n: zlib.decompress(d)}
    try:
        from isal import isal_zlib

        found["isal (ISA-L)"] = lambda d, n: isal_zlib.decompress(d)
    except ImportError:
        pass
    try:
        from zlib_ng import zlib_ng

        found["zlib-ng"] = lambda d, n: zlib_ng.decompress(d)
    except ImportError:
        pass
    try:
        import deflate

        found["libdeflate (deflate)"] = lambda d, n: deflate.zlib_decompress(d, n)
    except ImportError:
        pass
    return found


def inflate_bench(repeats: int) -> dict[str, Any]:
    """Inflate analysed_sst's chunk bytes with each library; also the whole packed read, netCDF4 vs ours."""
    import h5py
    import netCDF4
    import numpy as np

    from granulemap.recipes import ghrsst

    with h5py.File(MUR25) as f:
        ds = f["analysed_sst"]
        _, payload = ds.id.read_direct_chunk((0, 0, 0))
        size = int(np.prod(ds.chunks)) * ds.dtype.itemsize
        reference = ds[()]
    expected = zlib.decompress(payload)
    libs = inflaters()
    for name, fn in libs.items():
        if fn(payload, size) != expected:
            raise AssertionError(f"{name} inflates differently")

    def netcdf4_read() -> Any:
        with netCDF4.Dataset(MUR25) as nc:
            var = nc["analysed_sst"]
            var.set_auto_maskandscale(False)
            return var[:]

    def h5py_read() -> Any:
        with h5py.File(MUR25) as f:
            return f["analysed_sst"][()]

    def direct_read() -> Any:
        with h5py.File(MUR25) as f:
            return ghrsst.read_plane(f["analysed_sst"])[np.newaxis]  # (time, lat, lon), as the others

    if not all(np.array_equal(read(), reference) for read in (direct_read, netcdf4_read, h5py_read)):
        raise AssertionError("raw-chunk read of analysed_sst differs from HDF5's")
    t = interleaved({**{name: (lambda fn=fn: fn(payload, size)) for name, fn in libs.items()},
                     "netCDF4 read (HDF5's own inflate)": netcdf4_read,
                     "h5py read (HDF5's own inflate)": h5py_read,
                     f"ours: raw chunk + {ghrsst.INFLATER} + numpy unshuffle": direct_read}, repeats * 2)
    base = t["zlib (stdlib)"]
    return {"compressed_bytes": len(payload), "bytes": size,
            "rows": {name: {**timing_row(x), "vs_zlib": ratio(x, base)} for name, x in t.items()}}


@dataclass
class SstResult:
    timings: dict[str, dict[str, float]]
    ratios: dict[str, dict[str, float]]
    rss: dict[str, dict[str, float]]
    inflate: dict[str, Any]
    checks: list[str]
    skipped: list[str]
    mur001: dict[str, Any]
    """The same reduction on a full-size MUR 0.01° granule (``mur001``)."""


def run(repeats: int) -> dict[str, Any]:
    from granulemap.synthetic import make_synthetic_series

    skipped = []
    contenders = dict(CONTENDERS)
    if not h5netcdf_engine_available():
        contenders.pop("podaac-as-written")
        skipped.append("podaac-as-written: xarray or h5netcdf is not installed (the tutorial's engine)")
    with tempfile.TemporaryDirectory() as tmp:
        synthetic = make_synthetic_series(MUR25, Path(tmp), dt.date(2019, 1, 1), 3)
        checks = check_agreement([MUR25, *synthetic])
    timings = interleaved({name: (lambda fn=fn: fn(MUR25)) for name, fn in contenders.items()}, repeats)
    pairs = [("ours-ocean", "floor-ocean"), ("ours-tutorial", "floor-tutorial")]
    if "podaac-as-written" in timings:
        pairs += [("podaac-as-written", "ours-tutorial"), ("podaac-as-written", "ours-ocean")]
    ratios = {f"{a} / {b}": ratio(timings[a], timings[b]) for a, b in pairs}
    rss = {name: run_json(["bench/rss_probe.py", "sst", name, str(MUR25)]) for name in contenders}
    return SstResult(
        timings={name: timing_row(t) for name, t in timings.items()}, ratios=ratios, rss=rss,
        inflate=inflate_bench(repeats), checks=checks, skipped=skipped, mur001=mur001(repeats),
    ).__dict__


def ours_by_ranges(path: Path, stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """``ours-ocean`` as the Processor runs it on an S3 object (GranuleAccess.open): a RangedFile whose first GET is
    the object's first HEAD_SIZE bytes and whose other GETs, and the prefetch's, are here reads of the file at an
    offset (no network: S3's latency and throughput are the cost model's assumptions). ``stats`` gets the GETs and
    the bytes they fetched."""
    import os

    from granulemap.granule_access import HEAD_SIZE, RangedFile
    from granulemap.recipes.sst_global_mean import global_mean_sst

    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        with RangedFile(lambda start, stop: os.pread(fd, stop - start, start), size, name=path.name,
                        head=os.pread(fd, HEAD_SIZE, 0)) as f:
            row = global_mean_sst(path.name, method="ocean", file=f)
        if stats is not None:
            stats.update(gets=f.requests, mb_fetched=round(f.bytes_fetched / 1e6, 1))
        return row
    finally:
        os.close(fd)


MUR001_REPEATS = 2


def mur001(repeats: int) -> dict[str, Any]:
    """ours-ocean and floor-ocean on a synthetic full-size MUR 0.01° granule (bench/mur001.py: 17999 × 36000 cells,
    MUR v4.1's chunks and filters: the mask's unlike analysed_sst's), side by side: ours reduces it tile by tile, the
    floor reads each whole field; and ours reading it by ranges, as the Processor reads an S3 object. Their numbers
    are checked equal first; peak RSS of each in a fresh process."""
    import mur001 as generator

    with tempfile.TemporaryDirectory() as tmp:
        path = generator.write(Path(tmp))
        ranges: dict[str, Any] = {}
        mine, bottom, by_ranges = ours("ocean")(path), floor_ocean(path), ours_by_ranges(path, ranges)
        if (round(bottom["mean_sst_c"], 6), bottom["n_valid"]) != (mine["mean_sst_c"], mine["n_valid"]):
            raise AssertionError(f"floor differs on the MUR 0.01° granule: {bottom} vs {mine}")
        if by_ranges != mine:
            raise AssertionError(f"read by ranges differs on the MUR 0.01° granule: {by_ranges} vs {mine}")
        timings = interleaved({"ours-ocean": lambda: ours("ocean")(path), "floor-ocean": lambda: floor_ocean(path),
                               "ours-ocean-ranges": lambda: ours_by_ranges(path)}, min(repeats, MUR001_REPEATS))
        rss = {name: run_json(["bench/rss_probe.py", "sst", name, str(path)])
               for name in ("ours-ocean", "ours-ocean-ranges", "floor-ocean")}
        return {"file_mb": round(path.stat().st_size / 1e6, 1), "cells": generator.N_LAT * generator.N_LON,
                "chunks": {"analysed_sst": list(generator.SST_CHUNKS), "mask": list(generator.MASK_CHUNKS)},
                "timings": {k: timing_row(t) for k, t in timings.items()},
                "ratio": ratio(timings["ours-ocean"], timings["floor-ocean"]), "rss": rss, "ranges": ranges,
                "mean_sst_c": mine["mean_sst_c"], "n_valid": mine["n_valid"]}


def process_one(name: str, path: Path) -> Any:
    """For bench/rss_probe.py: run contender ``name`` once."""
    if name == "ours-ocean-ranges":
        return ours_by_ranges(path)
    return CONTENDERS[name](path)
