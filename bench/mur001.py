"""A synthetic full-size MUR 0.01° granule (MUR-JPL-L4-GLOB-v4.1's layout), for measuring one Processor item on it.

MUR v4.1 is the 0.01° product README.md points SST users to beside MUR25 (0.25°). Its granules are 17999 × 36000
cells (about 650 million): analysed_sst int16 (scale 0.001, offset 298.15 K, fill -32768) in chunks of 1 × 1023 ×
2047 and mask int8 (values 1 open sea, 2 land, 5 open lake, 9 and 13 with ice, as v4.1's flag_values) in chunks of
1 × 1447 × 2895, as v4.1's granules chunk them, shuffled and deflated. No real one is in the repository (each is about 400 MB); this one is the real MUR25 granule's fields
(tests/data/ghrsst) repeated 25 × 25 onto the 0.01° grid (cut to 17999 latitudes), plus seeded noise of up to
±NOISE mK on each sea cell, so that neighbouring cells differ as in a real analysis and the field deflates to about
a real granule's size (blocks of one value would deflate many times smaller, and inflate faster). Its numbers are not
a real granule's; its size, layout and filters are.

    python bench/mur001.py OUT_DIR     writes OUT_DIR/<name> and prints its path
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MUR25 = ROOT / "tests" / "data" / "ghrsst" / "20181231090000-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2.nc"
NAME = "20181231090000-JPL-L4_GHRSST-SSTfnd-MUR-GLOB-v02.0-fv04.1.nc"
COLLECTION = "MUR-JPL-L4-GLOB-v4.1"
"""The CMR collection of MUR v4.1's granules: the cost model prices the SST recipes on it from this granule."""
N_LAT, N_LON, REPEAT = 17999, 36000, 25
SST_CHUNKS = (1, 1023, 2047)  # MUR v4.1's
MASK_CHUNKS = (1, 1447, 2895)  # MUR v4.1's (its sea_ice_fraction's too): not analysed_sst's
DEFLATE_LEVEL = 7  # MUR25's (its headers); v4.1's are deflated with shuffle too
NOISE = 8
"""mK (raw units) of noise each side: analysed_sst then deflates to about SIZE_MB."""
FLAG_VALUES = (1, 2, 5, 9, 13)
FLAG_MEANINGS = "1=open-sea, 2=land, 5=open-lake, 9=open-sea with ice in the grid, 13=open-lake with ice in the grid"


def mur25_fields() -> tuple[np.ndarray, np.ndarray]:
    """MUR25's analysed_sst as stored (int16) and its mask recoded to v4.1's values (1 sea, 2 land, 5 lake, 9 and
    13 with ice)."""
    import h5py

    with h5py.File(MUR25, "r") as f:
        sst = f["analysed_sst"][0]
        bits = f["mask"][0].astype(np.int16)
    mask = np.where(bits & 2, 2, np.where(bits & 4, 5, 1))  # land, lake, else sea
    mask = np.where(bits & 8, mask + 8, mask)  # with ice: 9, 13
    return sst, mask.astype(np.int8)


def write(out_dir: Path) -> Path:
    import netCDF4

    sst25, mask25 = mur25_fields()
    path = out_dir / NAME
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("time", 1)
        ds.createDimension("lat", N_LAT)
        ds.createDimension("lon", N_LON)
        t = ds.createVariable("time", "i4", ("time",))
        t.units = "seconds since 1981-01-01 00:00:00 UTC"
        t[:] = [int((dt.datetime(2018, 12, 31, 9) - dt.datetime(1981, 1, 1)).total_seconds())]  # the name's
        lat = ds.createVariable("lat", "f4", ("lat",), zlib=True, complevel=DEFLATE_LEVEL, shuffle=True)
        lat.units = "degrees_north"
        lat[:] = np.linspace(-89.99, 89.99, N_LAT, dtype=np.float32)
        lon = ds.createVariable("lon", "f4", ("lon",), zlib=True, complevel=DEFLATE_LEVEL, shuffle=True)
        lon.units = "degrees_east"
        lon[:] = np.linspace(-179.99, 180.0, N_LON, dtype=np.float32)
        sst = ds.createVariable("analysed_sst", "i2", ("time", "lat", "lon"), zlib=True, complevel=DEFLATE_LEVEL,
                                shuffle=True, chunksizes=SST_CHUNKS, fill_value=-32768)
        sst.set_auto_maskandscale(False)
        sst.units, sst.scale_factor, sst.add_offset = "kelvin", 0.001, 298.15
        sst.valid_min, sst.valid_max = np.int16(-32767), np.int16(32767)
        mask = ds.createVariable("mask", "i1", ("time", "lat", "lon"), zlib=True, complevel=DEFLATE_LEVEL,
                                 shuffle=True, chunksizes=MASK_CHUNKS, fill_value=-128)
        mask.set_auto_maskandscale(False)
        mask.flag_masks = np.array([1, 2, 4, 8, 16], dtype=np.int8)
        mask.flag_values = np.array(FLAG_VALUES, dtype=np.int8)
        mask.flag_meanings = FLAG_MEANINGS
        rng = np.random.default_rng(20181231)
        step = SST_CHUNKS[1]
        for top in range(0, N_LAT, step):  # one row of chunks at a time: a few hundred MB, not the whole field
            rows = np.arange(top, min(top + step, N_LAT)) // REPEAT
            block = np.repeat(sst25[rows], REPEAT, axis=1)
            noise = rng.integers(-NOISE, NOISE + 1, size=block.shape, dtype=np.int16)
            sst[0, top:top + rows.size] = np.where(block == -32768, block, block + noise)
            mask[0, top:top + rows.size] = np.repeat(mask25[rows], REPEAT, axis=1)
    return path


if __name__ == "__main__":
    print(write(Path(sys.argv[1])))
