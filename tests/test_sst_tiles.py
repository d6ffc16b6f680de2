"""The SST recipes read a granule a tile at a time (granulemap/recipes/ghrsst.py: GranuleReader), never holding a
whole field: a MUR 0.01° field is 650 million cells. Whatever the layout — analysed_sst and mask chunked alike or
not, edge chunks cut by the grid, chunks never written, contiguous storage, many tiles or one — the statistics are
those of the whole field computed independently here (tests/sst_reference.py: netCDF4 unpacks and masks, numpy
reduces), and a whole plane read tile by tile equals HDF5's own read.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import h5py
import netCDF4
import numpy as np
import pytest

from granulemap.recipes import ghrsst
from granulemap.recipes.sst_box_mean import box_mean_sst
from granulemap.recipes.sst_global_mean import global_mean_sst

from sst_reference import assert_the_ocean_reference, ocean_mean_reference

N_LAT, N_LON = 45, 70
LAYOUTS = {
    # name: (analysed_sst chunks, mask chunks); None = contiguous
    "same chunks, cut at the edges": ((1, 10, 16), (1, 10, 16)),
    "mask chunked otherwise": ((1, 10, 16), (1, 7, 25)),
    "contiguous": (None, None),
    "one chunk each": ((1, N_LAT, N_LON), (1, N_LAT, N_LON)),
}


def write_granule(path: Path, sst_chunks: tuple | None, mask_chunks: tuple | None, *, unwritten: bool = False) -> Path:
    """A GDS 2.0-like L4 granule of N_LAT × N_LON cells with land, ice, fill cells and a range of temperatures;
    with ``unwritten`` a block of analysed_sst is never written (chunks left out of the file: read as fill)."""
    rng = np.random.default_rng(7)
    lat = np.linspace(-88.0, 88.0, N_LAT)
    celsius = 28.0 * np.cos(np.deg2rad(lat))[:, None] - 1.5 + rng.normal(0, 0.5, (N_LAT, N_LON))
    raw = np.round((celsius + 273.15 - 298.15) / 0.001).astype("i2")
    raw[rng.random((N_LAT, N_LON)) < 0.05] = -32768  # fill
    mask = np.ones((N_LAT, N_LON), "i1")  # water
    mask[:, 30:38] = 2  # land
    mask[:4] = 9  # water with sea ice
    mask[20:23, 5:9] = 4  # lake
    with netCDF4.Dataset(path, "w") as ds:
        for name, size in (("time", 1), ("lat", N_LAT), ("lon", N_LON)):
            ds.createDimension(name, size)
        t = ds.createVariable("time", "i4", ("time",))
        t.units = "seconds since 1981-01-01 00:00:00 UTC"
        t[:] = [int((dt.datetime(2020, 1, 1, 9) - dt.datetime(1981, 1, 1)).total_seconds())]
        ds.createVariable("lat", "f4", ("lat",))[:] = lat
        ds.createVariable("lon", "f4", ("lon",))[:] = np.linspace(-179.0, 179.0, N_LON)

        def variable(name: str, dtype: str, chunks: tuple | None, fill: int) -> netCDF4.Variable:
            kwargs = {"zlib": True, "shuffle": True, "chunksizes": chunks} if chunks else {"contiguous": True}
            v = ds.createVariable(name, dtype, ("time", "lat", "lon"), fill_value=fill, **kwargs)
            v.set_auto_maskandscale(False)
            return v

        sst = variable("analysed_sst", "i2", sst_chunks, -32768)
        sst.units, sst.scale_factor, sst.add_offset = "kelvin", 0.001, 298.15
        if unwritten:  # rows 20.. of columns 0-31 never written: whole chunks of 10 × 16 left out
            sst[0, :20] = raw[:20]
            sst[0, 20:, 32:] = raw[20:, 32:]
        else:
            sst[0] = raw
        m = variable("mask", "i1", mask_chunks, -128)
        m.flag_masks = np.array([1, 2, 4, 8, 16], dtype="i1")
        m.flag_meanings = "water land optional_lake_surface sea_ice optional_river_surface"
        m[0] = mask
    return path


@pytest.mark.parametrize("tile_cells", [1, 200, 1 << 20])  # a tile per chunk (or per row); a few chunks; all
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_the_tiled_statistics_are_those_of_the_whole_field(tmp_path: Path, monkeypatch, layout: str,
                                                           tile_cells: int) -> None:
    monkeypatch.setattr(ghrsst, "TILE_CELLS", tile_cells)
    path = write_granule(tmp_path / "20200101090000-TILES-L4.nc", *LAYOUTS[layout])
    assert_the_ocean_reference(global_mean_sst(path.name, method="ocean", path=str(path)), path)
    with h5py.File(path) as f:  # and the planes, read tile by tile, are HDF5's own
        for var in ("analysed_sst", "mask"):
            assert np.array_equal(ghrsst.read_plane(f[var]), f[var][0])


def test_chunks_never_written_read_as_fill_across_tiles(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ghrsst, "TILE_CELLS", 1)
    path = write_granule(tmp_path / "20200101090000-HOLES-L4.nc", (1, 10, 16), (1, 7, 25), unwritten=True)
    with h5py.File(path) as f:  # the premise: some chunks are not in the file
        ds = f["analysed_sst"]
        assert ds.id.get_num_chunks() < -(-N_LAT // 10) * -(-N_LON // 16)
        assert np.array_equal(ghrsst.read_plane(ds), ds[0])
    got = global_mean_sst(path.name, method="ocean", path=str(path))
    assert got["n_valid"] == ocean_mean_reference(path)["n_valid"]


def test_the_tiles_cover_the_plane_once_in_whole_chunks(tmp_path: Path, monkeypatch) -> None:
    path = write_granule(tmp_path / "20200101090000-COVER-L4.nc", (1, 10, 16), (1, 7, 25))
    for cells in (1, 200, 700, 1 << 20):
        monkeypatch.setattr(ghrsst, "TILE_CELLS", cells)
        seen, tiles = np.zeros((N_LAT, N_LON), int), 0
        with ghrsst.GranuleReader(path.name, path=str(path), with_mask=True) as reader:
            for tile in reader.tiles():
                tiles += 1
                seen[tile.rows, tile.cols] += 1
                assert tile.rows.start % 10 == 0 and tile.cols.start % 16 == 0  # whole chunks of analysed_sst
                assert tile.raw.shape == tile.valid.shape == tile.mask.shape == seen[tile.rows, tile.cols].shape
                assert tile.raw.size >= min(cells, 10 * 16) or tile.rows.stop == N_LAT or tile.cols.stop == N_LON
        assert (seen == 1).all(), cells
        # as few tiles as make that many cells, in whole chunks of 10 × 16 (5 × 5 of them): one chunk each; two
        # chunks across (3 tiles a row); the whole width (5 chunks) one row of chunks deep; the whole plane
        assert tiles == {1: 5 * 5, 200: 5 * 3, 700: 5, 1 << 20: 1}[cells], cells


def test_a_box_reads_only_the_rows_of_tiles_it_needs_and_agrees_with_the_whole_field(tmp_path: Path,
                                                                                       monkeypatch) -> None:
    monkeypatch.setattr(ghrsst, "TILE_CELLS", 1)
    path = write_granule(tmp_path / "20200101090000-BOX-L4.nc", (1, 10, 16), (1, 10, 16))
    read: list[slice] = []
    block = ghrsst._PlaneReader.block

    def recording(self, rows: slice, cols: slice) -> np.ndarray:
        if self.ds.name == "/analysed_sst":
            read.append(rows)
        return block(self, rows, cols)

    monkeypatch.setattr(ghrsst._PlaneReader, "block", recording)
    box = (-100.0, -10.0, 60.0, 10.0)  # rows within ±10°: in one or two rows of chunks
    got = box_mean_sst(path.name, box, path=str(path))
    lat = np.linspace(-88.0, 88.0, N_LAT)
    in_rows = np.flatnonzero((lat >= -10) & (lat <= 10))
    assert {(r.start, r.stop) for r in read} == {(top, min(top + 10, N_LAT))
                                                 for top in sorted({i // 10 * 10 for i in in_rows})}
    # independently: the cells of the box, whole-field numpy on netCDF4's unpacked, masked values
    with netCDF4.Dataset(path) as ds:
        sst_c = ds["analysed_sst"][0].astype(np.float64) - 273.15
        mask = np.ma.filled(ds["mask"][0], 0).astype(int)
        lon = ds["lon"][:].astype(np.float64)
    inside = ((lat >= -10) & (lat <= 10))[:, None] & ((lon >= -100) & (lon <= 60))[None, :]
    use = inside & (mask == 1) & ~np.ma.getmaskarray(sst_c)
    weights = np.broadcast_to(np.cos(np.deg2rad(lat))[:, None], use.shape)
    assert got["n_valid"] == int(use.sum())
    assert got["mean_sst_c"] == pytest.approx(float(np.average(sst_c.data[use], weights=weights[use])), abs=1e-6)


def test_a_whole_granule_for_a_recipe_of_your_own_is_the_tiles_put_together(tmp_path: Path, monkeypatch) -> None:
    """read_granule (README's tutorial) gives the whole plane: the same as HDF5's, its validity as netCDF4's mask."""
    monkeypatch.setattr(ghrsst, "TILE_CELLS", 1)
    path = write_granule(tmp_path / "20200101090000-WHOLE-L4.nc", (1, 10, 16), (1, 7, 25))
    g = ghrsst.read_granule(path.name, path=str(path), with_mask=True)
    with h5py.File(path) as f:
        assert np.array_equal(g.sst.raw, f["analysed_sst"][0]) and np.array_equal(g.mask, f["mask"][0])
    with netCDF4.Dataset(path) as ds:
        assert np.array_equal(g.sst.valid, ~np.ma.getmaskarray(ds["analysed_sst"][0]))
    assert (g.sst.scale, g.sst.offset, g.sst.to_celsius) == (0.001, 298.15, -273.15)
