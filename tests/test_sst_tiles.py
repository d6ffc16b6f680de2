"""The SST recipes read a granule a tile at a time (granulemap/recipes/ghrsst.py: GranuleReader), never holding a
whole field: a MUR 0.01° field is 650 million cells. Whatever the layout — analysed_sst and mask chunked alike or
not, edge chunks cut by the grid, chunks never written, contiguous storage, many tiles or one — the statistics are
those of the whole field computed independently here (tests/sst_reference.py: netCDF4 unpacks and masks, numpy
reduces), and a whole plane read tile by tile equals HDF5's own read.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import h5py
import netCDF4
import numpy as np
import pytest

from granulemap.errors import GranuleUnreadable
from granulemap.recipes import ghrsst
from granulemap.recipes.sst_box_mean import box_mean_sst
from granulemap.recipes.sst_global_mean import global_mean_sst

from sst_reference import assert_the_ocean_reference

N_LAT, N_LON = 45, 70


@dataclass(frozen=True)
class Layout:
    sst_chunks: tuple | None  # None: contiguous
    mask_chunks: tuple | None
    times: int = 1
    two_d: bool = False  # (lat, lon) variables, without a time dimension
    shuffle: bool = True
    fletcher32: bool = False  # a filter the recipes do not inflate themselves: HDF5 reads those chunks
    dtype: str = "i2"  # "f4": a float field in °C with NaN cells
    scale: float = 0.001  # negative: min and max swap when unpacked


LAYOUTS = {
    "same chunks, cut at the edges": Layout((1, 10, 16), (1, 10, 16)),
    "mask chunked otherwise": Layout((1, 10, 16), (1, 7, 25)),
    "mask chunks taller and wider": Layout((1, 10, 16), (1, 23, 40)),
    "contiguous": Layout(None, None),
    "mask contiguous": Layout((1, 10, 16), None),
    "analysed_sst contiguous": Layout(None, (1, 10, 16)),
    "one chunk each": Layout((1, N_LAT, N_LON), (1, N_LAT, N_LON)),
    "three times, chunks of two": Layout((2, 10, 16), (2, 7, 25), times=3),
    "(lat, lon) variables": Layout((10, 16), (7, 25), two_d=True),
    "deflate without shuffle": Layout((1, 10, 16), (1, 7, 25), shuffle=False),
    "fletcher32 too": Layout((1, 10, 16), (1, 7, 25), fletcher32=True),
    "float with NaN": Layout((1, 10, 16), (1, 7, 25), dtype="f4"),
    "negative scale": Layout((1, 10, 16), (1, 7, 25), scale=-0.001),
}


def write_granule(path: Path, layout: Layout, *, unwritten: bool = False) -> Path:
    """A GDS 2.0-like L4 granule of N_LAT × N_LON cells with land, ice, fill cells and a range of temperatures;
    with ``unwritten`` a block of analysed_sst is never written (chunks left out of the file: read as fill)."""
    rng = np.random.default_rng(7)
    lat = np.linspace(-88.0, 88.0, N_LAT)
    celsius = 28.0 * np.cos(np.deg2rad(lat))[:, None] - 1.5 + rng.normal(0, 0.5, (N_LAT, N_LON))
    gone = rng.random((N_LAT, N_LON)) < 0.05  # fill (NaN in a float field)
    if layout.dtype == "f4":
        raw = np.where(gone, np.nan, celsius).astype("f4")
    else:
        raw = np.where(gone, -32768, np.round((celsius + 273.15 - 298.15) / layout.scale)).astype("i2")
    mask = np.ones((N_LAT, N_LON), "i1")  # water
    mask[:, 30:38] = 2  # land
    mask[:4] = 9  # water with sea ice
    mask[20:23, 5:9] = 4  # lake
    dims = ("lat", "lon") if layout.two_d else ("time", "lat", "lon")
    with netCDF4.Dataset(path, "w") as ds:
        for name, size in (("time", layout.times), ("lat", N_LAT), ("lon", N_LON)):
            ds.createDimension(name, size)
        t = ds.createVariable("time", "i4", ("time",))
        t.units = "seconds since 1981-01-01 00:00:00 UTC"
        first = int((dt.datetime(2020, 1, 1, 9) - dt.datetime(1981, 1, 1)).total_seconds())
        t[:] = [first + 86400 * n for n in range(layout.times)]
        ds.createVariable("lat", "f4", ("lat",))[:] = lat
        ds.createVariable("lon", "f4", ("lon",))[:] = np.linspace(-179.0, 179.0, N_LON)

        def variable(name: str, dtype: str, chunks: tuple | None, fill: float) -> netCDF4.Variable:
            kwargs = ({"zlib": True, "shuffle": layout.shuffle, "fletcher32": layout.fletcher32, "chunksizes": chunks}
                      if chunks else {"contiguous": True})
            v = ds.createVariable(name, dtype, dims, fill_value=fill, **kwargs)
            v.set_auto_maskandscale(False)
            return v

        def put(v: netCDF4.Variable, plane: np.ndarray, rows: slice = slice(None), cols: slice = slice(None)) -> None:
            for n in range(1 if layout.two_d else layout.times):  # later times: other values, never read
                at = (rows, cols) if layout.two_d else (n, rows, cols)
                v[at] = plane[rows, cols] if n == 0 else np.roll(plane, n, axis=1)[rows, cols]

        if layout.dtype == "f4":
            sst = variable("analysed_sst", "f4", layout.sst_chunks, np.float32(-999.0))
            sst.units = "celsius"
        else:
            sst = variable("analysed_sst", "i2", layout.sst_chunks, -32768)
            sst.units, sst.scale_factor, sst.add_offset = "kelvin", layout.scale, 298.15
        if unwritten:  # rows 20.. of columns 0-31 never written: whole chunks of 10 × 16 left out
            put(sst, raw, slice(0, 20))
            put(sst, raw, slice(20, None), slice(32, None))
        else:
            put(sst, raw)
        m = variable("mask", "i1", layout.mask_chunks, -128)
        m.flag_masks = np.array([1, 2, 4, 8, 16], dtype="i1")
        m.flag_meanings = "water land optional_lake_surface sea_ice optional_river_surface"
        put(m, mask)
    return path


def counting_inflates(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each inflate of a raw chunk, by its compressed size (the test's chunks differ in size: so do their payloads)."""
    inflates: list[int] = []
    inflate = ghrsst._inflate

    def counted(data: bytes, size: int) -> bytes:
        inflates.append(len(data))
        return inflate(data, size)

    monkeypatch.setattr(ghrsst, "_inflate", counted)
    return inflates


@pytest.mark.parametrize("tile_cells", [1, 200, 1 << 20])  # a tile per chunk (or per row); a few chunks; all
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_the_tiled_statistics_are_those_of_the_whole_field(tmp_path: Path, monkeypatch, layout: str,
                                                           tile_cells: int) -> None:
    monkeypatch.setattr(ghrsst, "TILE_CELLS", tile_cells)
    path = write_granule(tmp_path / "20200101090000-TILES-L4.nc", LAYOUTS[layout])
    got = global_mean_sst(path.name, method="ocean", path=str(path))
    assert_the_ocean_reference(got, path)
    if LAYOUTS[layout].scale < 0:  # the coldest raw value is the warmest cell: still min below max
        assert got["min_sst_c"] < got["max_sst_c"]
    with h5py.File(path) as f:  # and the planes, read tile by tile, are HDF5's own
        for var in ("analysed_sst", "mask"):
            first = f[var][()] if LAYOUTS[layout].two_d else f[var][0]
            assert np.array_equal(ghrsst.read_plane(f[var]), first, equal_nan=LAYOUTS[layout].dtype == "f4")


@pytest.mark.parametrize("layout", ["mask chunked otherwise", "mask chunks taller and wider",
                                    "three times, chunks of two", "(lat, lon) variables"])
def test_each_chunk_is_inflated_once_however_the_tiles_cut_it(tmp_path: Path, monkeypatch, layout: str) -> None:
    """A mask chunked otherwise than analysed_sst spans several tiles: kept until the tiles have passed it, not
    inflated again for each (nor for each row of tiles)."""
    monkeypatch.setattr(ghrsst, "TILE_CELLS", 1)
    path = write_granule(tmp_path / "20200101090000-ONCE-L4.nc", LAYOUTS[layout])
    with h5py.File(path) as f:
        stored = sum(sum(1 for _ in range(f[var].id.get_num_chunks())
                         if f[var].id.get_chunk_info(_).chunk_offset[:-2] in ((), (0,)))
                     for var in ("analysed_sst", "mask"))
    inflates = counting_inflates(monkeypatch)
    global_mean_sst(path.name, method="ocean", path=str(path))
    assert len(inflates) == stored


def test_chunks_never_written_read_as_fill_across_tiles(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ghrsst, "TILE_CELLS", 1)
    path = write_granule(tmp_path / "20200101090000-HOLES-L4.nc", LAYOUTS["mask chunked otherwise"], unwritten=True)
    with h5py.File(path) as f:  # the premise: some chunks are not in the file
        ds = f["analysed_sst"]
        assert ds.id.get_num_chunks() < -(-N_LAT // 10) * -(-N_LON // 16)
        assert np.array_equal(ghrsst.read_plane(ds), ds[0])
    assert_the_ocean_reference(global_mean_sst(path.name, method="ocean", path=str(path)), path)


def test_the_tiles_cover_the_plane_once_in_whole_chunks(tmp_path: Path, monkeypatch) -> None:
    path = write_granule(tmp_path / "20200101090000-COVER-L4.nc", LAYOUTS["mask chunked otherwise"])
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
    path = write_granule(tmp_path / "20200101090000-BOX-L4.nc", LAYOUTS["same chunks, cut at the edges"])
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
    path = write_granule(tmp_path / "20200101090000-WHOLE-L4.nc", LAYOUTS["mask chunked otherwise"])
    g = ghrsst.read_granule(path.name, path=str(path), with_mask=True)
    with h5py.File(path) as f:
        assert np.array_equal(g.sst.raw, f["analysed_sst"][0]) and np.array_equal(g.mask, f["mask"][0])
    with netCDF4.Dataset(path) as ds:
        assert np.array_equal(g.sst.valid, ~np.ma.getmaskarray(ds["analysed_sst"][0]))
    assert (g.sst.scale, g.sst.offset, g.sst.to_celsius) == (0.001, 298.15, -273.15)


def test_the_tutorial_method_reads_no_tile_poleward_of_60_degrees_and_weighs_the_rows_within(tmp_path: Path,
                                                                                          monkeypatch) -> None:
    """The tutorial's weights are 0 poleward of 60°: rows of tiles all beyond it are not read, and a row of tiles
    straddling ±60° counts only its rows within (against the tutorial's method computed here on netCDF4's values)."""
    monkeypatch.setattr(ghrsst, "TILE_CELLS", 1)
    path = write_granule(tmp_path / "20200101090000-POLES-L4.nc", LAYOUTS["same chunks, cut at the edges"])
    read: list[int] = []
    block = ghrsst._PlaneReader.block

    def recording(self, rows: slice, cols: slice) -> np.ndarray:
        read.append(rows.start)
        return block(self, rows, cols)

    monkeypatch.setattr(ghrsst._PlaneReader, "block", recording)
    got = global_mean_sst(path.name, method="podaac-tutorial", path=str(path))
    lat = np.linspace(-88.0, 88.0, N_LAT)
    within = np.abs(lat) <= 60
    assert sorted(set(read)) == sorted({i // 10 * 10 for i in np.flatnonzero(within)})
    # the premise: the last row of tiles (rows 40-44, 72-88°N) is all beyond 60°, the first straddles -60°
    assert not within[40:].any() and within[:10].any() and not within[:10].all()
    with netCDF4.Dataset(path) as ds:
        sst_c = ds["analysed_sst"][0].astype(np.float64) - 273.15
    use = within[:, None] & ~np.ma.getmaskarray(sst_c)
    weights = np.broadcast_to(np.cos(np.deg2rad(lat))[:, None], use.shape)
    assert got["n_valid"] == int(use.sum())
    assert got["mean_sst_c"] == pytest.approx(float(np.average(sst_c.data[use], weights=weights[use])), abs=1e-6)


def test_a_chunk_that_cannot_be_inflated_is_an_unreadable_granule_naming_the_variable(tmp_path: Path) -> None:
    path = write_granule(tmp_path / "20200101090000-BROKEN-L4.nc", LAYOUTS["same chunks, cut at the edges"])
    with h5py.File(path, "a") as f:  # one chunk's bytes replaced by bytes of its size that are no zlib stream
        ds = f["analysed_sst"]
        _, payload = ds.id.read_direct_chunk((0, 10, 16))
        ds.id.write_direct_chunk((0, 10, 16), bytes(len(payload)))
    with pytest.raises(GranuleUnreadable, match=r"cannot read /analysed_sst of 20200101090000-BROKEN-L4\.nc"):
        global_mean_sst(path.name, method="ocean", path=str(path))
