"""Reading ATL06 with h5coro: same bytes as h5coro's own reader, filters, named errors; cell ids on WGS84."""

# ruff: noqa: F811  (test parameters take the names of the fixtures imported from the support module)

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import pytest
from h5coro import filedriver, h5coro

from granulemap.errors import GranuleUnreadable, VariableMissing
from granulemap.recipes.atl06.cells import cell_box, cell_ids, children, parents_of
from granulemap.recipes.atl06.granule import Atl06Granule, beam_positions, segments_in_parent

from test_atl06_synthetic_granule import (  # noqa: F401  (fixtures are imported by name, for pytest)
    ATL06_FILL,
    BEAMS,
    CHILD_ORDER,
    N_CHILDREN,
    PARENT_ORDER,
    REAL_GRANULE,
    SITE,
    SYNTHETIC_ONE,
    MotoS3,
    Segment,
    cells_touching,
    corners,
    granule_one,
    moto_s3,
    neighbours,
    synthetic_dir,
    wgs84_cells,
    write_granule,
)

NAMES = ("latitude", "longitude", "h_li", "h_li_sigma", "atl06_quality_summary")


def _open(path: Path) -> Atl06Granule:
    return Atl06Granule(str(path), local_path=str(path), credentials=None)


def test_vectorised_fill_reads_the_same_bytes_as_h5coro_on_the_real_granule() -> None:
    reference = h5coro.H5Coro(str(REAL_GRANULE), filedriver.FileDriver)
    with _open(REAL_GRANULE) as granule:
        for beam in BEAMS:
            ours = granule.read(beam, NAMES)
            theirs = reference.readDatasets([f"/{beam}/land_ice_segments/{n}" for n in NAMES], block=True)
            for name in NAMES:
                expected = theirs[f"/{beam}/land_ice_segments/{name}"]
                assert ours[name].values.dtype == expected.dtype
                assert ours[name].values.tobytes() == expected.tobytes(), (beam, name)


def test_unwritten_chunks_read_as_the_fill_value(tmp_path: Path) -> None:
    path = tmp_path / "partly_written_SYNTHETIC.h5"
    with netCDF4.Dataset(path, "w") as ds:
        group = ds.createGroup("gt1l").createGroup("land_ice_segments")
        group.createDimension("delta_time", 12)
        h = group.createVariable("h_li", "f4", ("delta_time",), zlib=True, chunksizes=(4,), fill_value=ATL06_FILL)
        h[4:8] = np.array([1.0, 2.0, 3.0, 4.0], np.float32)  # chunks 0 and 2 are never written
    reference = h5coro.H5Coro(str(path), filedriver.FileDriver).readDatasets(["/gt1l/land_ice_segments/h_li"])
    expected = np.full(12, ATL06_FILL, np.float32)
    expected[4:8] = [1.0, 2.0, 3.0, 4.0]
    with _open(path) as granule:
        ours = granule.read("gt1l", ["h_li"])["h_li"]
        window = granule.read("gt1l", ["h_li"], (2, 6))["h_li"]
    assert ours.values.tobytes() == reference["/gt1l/land_ice_segments/h_li"].tobytes() == expected.tobytes()
    np.testing.assert_array_equal(window.values, expected[2:6])
    assert ours.fill_value == float(ATL06_FILL)


@pytest.mark.parametrize(("dtype", "fill"), [("f8", -9999.0), ("i1", -5), ("i2", None), ("u2", 65535), ("f4", 0.0)])
def test_unwritten_chunks_read_as_the_fill_value_of_any_type(tmp_path: Path, dtype: str, fill: float | None) -> None:
    path = tmp_path / f"partly_written_{dtype}_SYNTHETIC.h5"
    with netCDF4.Dataset(path, "w") as ds:
        group = ds.createGroup("gt1l").createGroup("land_ice_segments")
        group.createDimension("delta_time", 10)
        v = group.createVariable("x", dtype, ("delta_time",), zlib=True, chunksizes=(3,), fill_value=fill)
        v.set_auto_maskandscale(False)
        v[3:6] = np.array([1, 2, 3], dtype=dtype)  # chunks 0, 2 and the last, partial one are never written
    reference = h5coro.H5Coro(str(path), filedriver.FileDriver).readDatasets(["/gt1l/land_ice_segments/x"])
    expected = reference["/gt1l/land_ice_segments/x"]
    assert expected[3:6].tolist() == [1, 2, 3]
    with _open(path) as granule:
        ours = granule.read("gt1l", ["x"])["x"]
        window = granule.read("gt1l", ["x"], (5, 10))["x"]
    assert ours.values.dtype == expected.dtype and ours.values.tobytes() == expected.tobytes()
    assert window.values.tobytes() == expected[5:10].tobytes()
    if fill is not None:
        assert ours.fill_value == fill and (expected[:3] == np.asarray(fill, dtype)).all()


@pytest.mark.parametrize("layout", ["contiguous", "chunked", "netcdf"])
def test_a_beam_of_zero_segments_reads_as_empty_and_the_others_are_kept(synthetic_dir: Path, tmp_path: Path,
                                                                        layout: str) -> None:
    """A beam whose datasets hold no segment has no storage in the file (HDF5's undefined address): h5coro raised
    "invalid data address", and the whole granule failed as unreadable, its other beams' segments lost."""
    import shutil

    import h5py

    path = tmp_path / SYNTHETIC_ONE
    shutil.copyfile(synthetic_dir / SYNTHETIC_ONE, path)
    names = ("delta_time", *NAMES)
    if layout == "netcdf":
        with netCDF4.Dataset(path, "a") as ds:
            group = ds.createGroup("gt3r").createGroup("land_ice_segments")
            group.createDimension("delta_time", 0)
            for name in names:
                group.createVariable(name, "f8", ("delta_time",), zlib=True)
    else:
        with h5py.File(path, "a") as f:
            group = f.require_group("gt3r/land_ice_segments")
            for name in names:
                chunked = {"chunks": (4,), "maxshape": (None,), "compression": "gzip"} if layout == "chunked" else {}
                group.create_dataset(name, shape=(0,), dtype="f8", **chunked)
    with _open(synthetic_dir / SYNTHETIC_ONE) as granule:
        without = segments_in_parent(granule, SITE.parent, PARENT_ORDER, CHILD_ORDER)
    with _open(path) as granule:
        assert "gt3r" in granule.beams()
        assert granule.read("gt3r", ["h_li"])["h_li"].values.shape == (0,)
        with_empty = segments_in_parent(granule, SITE.parent, PARENT_ORDER, CHILD_ORDER)
    assert without.cells.size > 0
    np.testing.assert_array_equal(with_empty.cells, without.cells)
    np.testing.assert_array_equal(with_empty.h_li, without.h_li)


@pytest.mark.parametrize("fill", [ATL06_FILL, None])
def test_a_dataset_of_segments_never_written_stays_unreadable(tmp_path: Path, fill: float | None) -> None:
    """Unlike an empty beam, a dataset of several segments with no storage is not read as fill values (or, with no
    fill value declared, zeros: heights of 0 m, positions on the equator): HDF5 might have read it from an external
    file, which h5coro does not read. The granule fails as unreadable, naming the dataset."""
    import h5py

    path = tmp_path / "never_written_SYNTHETIC.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("gt1l/land_ice_segments/h_li", shape=(6,), dtype="f4", fillvalue=fill)
    with _open(path) as granule, pytest.raises(GranuleUnreadable, match="gt1l/land_ice_segments/h_li"):
        granule.read("gt1l", ["h_li"])


def test_fill_value_is_the_files_own_fill_value_attribute() -> None:
    with netCDF4.Dataset(REAL_GRANULE) as ds, _open(REAL_GRANULE) as granule:
        for beam in BEAMS:
            attribute = ds[f"{beam}/land_ice_segments"]["h_li"].getncattr("_FillValue")
            assert granule.read(beam, ["h_li"])["h_li"].fill_value == float(attribute)


def test_only_good_usable_segments_of_the_parent_cell_are_kept(synthetic_dir: Path) -> None:
    every = [s for segments in granule_one().values() for s in segments]
    inside = [s for s in every if s.usable and not s.border
              and int(wgs84_cells(s.lat, s.lon, CHILD_ORDER)[0]) // N_CHILDREN == SITE.parent]
    with _open(synthetic_dir / SYNTHETIC_ONE) as granule:
        segments = segments_in_parent(granule, SITE.parent, PARENT_ORDER, CHILD_ORDER)
    got = {float(h): int(c) for h, c in zip(segments.h_li, segments.cells, strict=True)}
    assert len(got) == segments.h_li.size  # the synthetic heights are distinct
    for s in inside:
        assert got.pop(s.h) == int(wgs84_cells(s.lat, s.lon, CHILD_ORDER)[0]), s
    # what is left can only be border points; never a fill, a bad flag, a NaN or a sigma fill
    assert set(got) <= {s.h for s in every if s.border}
    assert not np.isin(segments.h_li, [1000.0, 50.0, float(ATL06_FILL)]).any() and np.isfinite(segments.h_li).all()


def test_a_point_on_a_cell_border_is_counted_once_in_a_cell_that_touches_it(synthetic_dir: Path) -> None:
    border = [s for segments in granule_one().values() for s in segments if s.border]
    parents = {SITE.parent, *neighbours(SITE.parent, PARENT_ORDER)}
    placed: dict[float, list[int]] = {s.h: [] for s in border}
    with _open(synthetic_dir / SYNTHETIC_ONE) as granule:
        for parent in parents:
            segments = segments_in_parent(granule, parent, PARENT_ORDER, CHILD_ORDER)
            for h, cell in zip(segments.h_li, segments.cells, strict=True):
                if float(h) in placed:
                    placed[float(h)].append(int(cell))
    for s in border:
        assert len(placed[s.h]) == 1, (s, placed[s.h])
        assert placed[s.h][0] in cells_touching(s.lat, s.lon, CHILD_ORDER), s


def test_cell_ids_are_wgs84_authalic_healpix_as_healpix_geo_computes_them() -> None:
    rng = np.random.default_rng(7)
    lat = np.concatenate([rng.uniform(-89.9, 89.9, 5000), [-72.5, 0.0, 45.0, 89.99]])
    lon = np.concatenate([rng.uniform(-180, 180, 5000), [31.0, 0.0, -120.0, 10.0]])
    for order in (0, 6, 12, 20):
        np.testing.assert_array_equal(cell_ids(lat, lon, order), wgs84_cells(lat, lon, order))
    twelve = cell_ids(lat, lon, 12)
    np.testing.assert_array_equal(parents_of(twelve, 12, 6), wgs84_cells(lat, lon, 6))
    assert children(SITE.parent, 6, 12)[[0, -1]].tolist() == [SITE.parent << 12, ((SITE.parent + 1) << 12) - 1]


def test_the_180th_meridian_has_one_cell_whichever_sign_its_longitude_is_written_with() -> None:
    """In the polar caps (|latitude| > 41.8°) mortie put a point at -180° in another cell than the same point at
    180°, and than healpix_geo puts both: segments written at -180° fell outside the cell xdggs finds for them."""
    lat = np.array([-89.5, -71.5, -60.0, -45.0, 0.0, 30.0, 60.0, 80.0, 89.5])
    for order in (6, 12, 18):
        west = cell_ids(lat, np.full(lat.size, -180.0), order)
        np.testing.assert_array_equal(west, cell_ids(lat, np.full(lat.size, 180.0), order))
        np.testing.assert_array_equal(west, wgs84_cells(lat, np.full(lat.size, -180.0), order))
    mixed = np.array([-180.0, 10.0, 180.0, -180.0])
    np.testing.assert_array_equal(cell_ids(np.full(4, -71.5), mixed, 12), wgs84_cells(np.full(4, -71.5), mixed, 12))


def test_points_on_the_base_cells_meridians_get_the_cells_healpix_geo_gives_them() -> None:
    """mortie put points at exactly -90° in another cell than healpix_geo (xdggs' library) in the polar caps. (At fine
    orders the two libraries' arithmetic may still part on a point that lies on a cell's edge: at order 18, one of
    these 4,000 on ±180°, by one cell, whichever sign its longitude has.)"""
    rng = np.random.default_rng(11)
    lat = rng.uniform(-89.9, 89.9, 4000)
    for meridian in (-180.0, -135.0, -90.0, -45.0, 0.0, 45.0, 90.0, 135.0, 180.0):
        lon = np.full(lat.size, meridian)
        for order in (6, 12):
            np.testing.assert_array_equal(cell_ids(lat, lon, order), wgs84_cells(lat, lon, order), err_msg=meridian)


def test_a_file_that_is_not_hdf5_is_unreadable_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "ATL06_20190101000000_00000101_006_01_SYNTHETIC.h5"
    path.write_bytes(b"this is not an HDF5 file" * 100)
    with pytest.raises(GranuleUnreadable, match=path.name):
        _open(path)


def test_a_truncated_granule_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "ATL06_20181013235645_02340114_209_01_TRUNCATED.h5"
    path.write_bytes(REAL_GRANULE.read_bytes()[:200_000])
    with pytest.raises(GranuleUnreadable, match="TRUNCATED"):
        with _open(path) as granule:
            for beam in granule.beams():
                granule.read(beam, NAMES)


def test_a_file_without_beams_is_not_atl06(tmp_path: Path) -> None:
    path = tmp_path / "not_atl06_SYNTHETIC.h5"
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("x", 3)
        ds.createVariable("v", "f4", ("x",))[:] = [1, 2, 3]
    with pytest.raises(VariableMissing, match="ATL06"), _open(path) as granule:
        granule.beams()


def test_a_beam_without_h_li_is_a_missing_variable(tmp_path: Path) -> None:
    path = tmp_path / "no_h_li_SYNTHETIC.h5"
    with netCDF4.Dataset(path, "w") as ds:
        group = ds.createGroup("gt1l").createGroup("land_ice_segments")
        group.createDimension("delta_time", 2)
        group.createVariable("latitude", "f8", ("delta_time",))[:] = [-70.0, -70.1]
    with pytest.raises(VariableMissing, match="h_li"), _open(path) as granule:
        granule.read("gt1l", ["latitude", "h_li"])


def test_s3_granule_reads_like_the_local_file(moto_s3: MotoS3, synthetic_dir: Path) -> None:
    key = f"granules/{SYNTHETIC_ONE}"
    moto_s3.client.upload_file(str(synthetic_dir / SYNTHETIC_ONE), moto_s3.bucket, key)  # type: ignore[attr-defined]
    url = f"s3://{moto_s3.bucket}/{key}"
    with Atl06Granule(url, local_path=None, credentials=None) as remote, _open(synthetic_dir / SYNTHETIC_ONE) as local:
        a = segments_in_parent(remote, SITE.parent, PARENT_ORDER, CHILD_ORDER)
        b = segments_in_parent(local, SITE.parent, PARENT_ORDER, CHILD_ORDER)
    assert a.cells.size > 0
    np.testing.assert_array_equal(a.cells, b.cells)
    np.testing.assert_array_equal(a.h_li, b.h_li)


def test_missing_s3_granule_is_unreadable_with_s3s_reason(moto_s3: MotoS3) -> None:
    url = f"s3://{moto_s3.bucket}/granules/ATL06_20190101000000_00000101_006_01_MISSING.h5"
    with pytest.raises(GranuleUnreadable, match="404|NoSuchKey|NotFound"):
        with Atl06Granule(url, local_path=None, credentials=None) as granule:
            granule.beams()


def test_an_empty_s3_granule_is_unreadable_not_a_throttle(moto_s3: MotoS3) -> None:
    """The diagnosis asks S3 for the object's first byte, which an empty object has not (InvalidRange): that is a
    granule that cannot be read, not a transient error to retry."""
    key = "granules/ATL06_20190101000000_00000101_006_01.h5"
    moto_s3.client.put_object(Bucket=moto_s3.bucket, Key=key, Body=b"")  # type: ignore[attr-defined]
    with pytest.raises(GranuleUnreadable, match="empty"):
        with Atl06Granule(f"s3://{moto_s3.bucket}/{key}", local_path=None, credentials=None) as granule:
            granule.beams()


def test_segment_is_usable_only_when_everything_is_valid() -> None:
    assert Segment(0, 0, h=1.0, sigma=1.0).usable
    assert not Segment(0, 0, h=float(ATL06_FILL), sigma=1.0).usable
    assert not Segment(0, 0, h=1.0, sigma=1.0, quality=1).usable


def test_granules_in_s3_are_read_over_https_unless_an_endpoint_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    from granulemap.recipes.atl06.granule import _TlsS3Driver

    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    driver = _TlsS3Driver("nsidc-cumulus-prod-protected/ATLAS/ATL06/006/x.h5", {})
    assert driver.client.meta.endpoint_url.startswith("https://")
    assert driver.copy().client.meta.endpoint_url.startswith("https://")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    assert _TlsS3Driver("bucket/key.h5", {}).client.meta.endpoint_url == "http://127.0.0.1:9"


# --- reading only what the parent cell needs: the box, the windows, the shared readers --------------------------
def test_cell_box_holds_every_point_mortie_puts_in_the_cell() -> None:
    """The box is a pre-test that may only skip points outside the cell: over the globe, near the poles and across
    the antimeridian, at coarse and fine orders, every point whose cell (mortie) is the cell lies in its box."""
    rng = np.random.default_rng(11)
    n = 250_000
    lat = np.concatenate([np.degrees(np.arcsin(rng.uniform(-1, 1, n))), rng.uniform(84, 90, n // 4),
                          rng.uniform(-90, -84, n // 4), rng.uniform(-70, 70, n // 4), [90.0, -90.0, 0.0, 0.0]])
    lon = np.concatenate([rng.uniform(-180, 180, n), rng.uniform(-180, 180, n // 2),
                          rng.choice([-1.0, 1.0], n // 4) * rng.uniform(178, 180, n // 4), [0.0, 0.0, 180.0, -180.0]])
    for order in (0, 1, 2, 3, 6, 9):
        ids = cell_ids(lat, lon, order)
        by_cell = np.argsort(ids, kind="stable")
        ordered = ids[by_cell]
        found = np.unique(ids)
        for cell in found if found.size <= 400 else rng.choice(found, 400, replace=False):
            a, b = np.searchsorted(ordered, [cell, cell + 1])
            members = by_cell[a:b]
            box = cell_box(int(cell), order)
            assert box.contains(lat[members], lon[members]).all(), (order, int(cell), box)
            # the same points with longitudes written another way (0..360, or shifted by a turn)
            assert box.contains(lat[members], lon[members] + 360.0).all(), (order, int(cell), box)
            # and the cell's own corners and edge middles, from healpix_geo (independent of mortie)
            edge = np.array(corners(int(cell), order, step=2))
            assert box.contains(edge[:, 0], edge[:, 1]).all(), (order, int(cell), box)


def test_cell_box_treats_minus_180_and_180_as_one_meridian() -> None:
    lat, lon = -40.0, 180.0
    cell = int(cell_ids(np.array([lat]), np.array([lon]), PARENT_ORDER)[0])
    box = cell_box(cell, PARENT_ORDER)
    assert box.width < 360.0  # a real longitude test
    on = box.contains(np.array([lat, lat, lat]), np.array([180.0, -180.0, 0.0]))
    assert on.tolist() == [True, True, False]


def _dense_granule(path: Path, rng: np.random.Generator) -> Path:
    """A SYNTHETIC granule of long tracks crossing the site's parent cell and its neighbours, the antimeridian and
    the north pole, with bad flags, fill values, NaN and negative sigma here and there."""
    tracks = {
        "gt1l": ((-74.0, 29.0), (-71.0, 33.5)),  # across the site's parent cell (-72.5, 31) and beyond
        "gt1r": ((-71.2, 28.5), (-73.8, 33.0)),
        "gt2l": ((-40.5, 178.5), (-39.5, 181.5)),  # across the antimeridian, longitudes written up to 181.5
        "gt2r": ((87.5, 10.0), (87.5, 190.0)),  # across the north pole
        "gt3l": ((-75.0, 31.0), (-70.0, 31.05)),
    }
    beams: dict[str, list[Segment]] = {}
    for beam, ((lat0, lon0), (lat1, lon1)) in tracks.items():
        t = np.linspace(0.0, 1.0, 3000)
        if beam == "gt2r":  # a great circle over the pole: up meridian lon0, down meridian lon0 + 180
            lat = np.where(t < 0.5, lat0 + (90 - lat0) * 2 * t, 90 - (90 - lat0) * (2 * t - 1))
            lon = np.where(t < 0.5, lon0, lon0 + 180.0)
        else:
            lat, lon = lat0 + (lat1 - lat0) * t, lon0 + (lon1 - lon0) * t
        lat = lat + rng.normal(0, 1e-4, t.size)
        lon = lon + rng.normal(0, 1e-4, t.size)
        if beam != "gt2l":
            lon = (lon + 180.0) % 360.0 - 180.0
        h = rng.normal(1500, 50, t.size)
        sigma = rng.uniform(0.01, 1.0, t.size)
        quality = (rng.random(t.size) < 0.1).astype(int)
        odd = rng.random(t.size)
        h[odd < 0.01] = float(ATL06_FILL)
        sigma[(odd > 0.01) & (odd < 0.02)] = float(ATL06_FILL)
        h[(odd > 0.02) & (odd < 0.025)] = np.nan
        sigma[(odd > 0.025) & (odd < 0.03)] = -1.0
        lat[(odd > 0.03) & (odd < 0.032)] = np.nan
        beams[beam] = [Segment(float(a), float(o), h=float(x), sigma=float(s), quality=int(q))
                       for a, o, x, s, q in zip(lat, lon, h, sigma, quality, strict=True)]
    return write_granule(path, beams, chunk=250)


def _reference_segments(granule: Atl06Granule, parent: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The straightforward way: every dataset read whole, the cell of every usable position, then the filters."""
    from granulemap.recipes.atl06.granule import ATL06_FILL_VALUE, usable

    cells, heights, sigmas = [], [], []
    for beam in granule.beams():
        d = granule.read(beam, NAMES)
        lat, lon = d["latitude"].values.astype(np.float64), d["longitude"].values.astype(np.float64)
        with np.errstate(invalid="ignore"):
            valid = usable(d["latitude"]) & usable(d["longitude"]) & (np.abs(lat) <= 90.0)
            ids = np.full(lat.shape, -1, np.int64)
            ids[valid] = cell_ids(lat[valid], lon[valid], CHILD_ORDER)
            keep = (valid & (parents_of(ids, CHILD_ORDER, PARENT_ORDER) == parent)
                    & (d["atl06_quality_summary"].values == 0) & usable(d["h_li"], ATL06_FILL_VALUE)
                    & usable(d["h_li_sigma"], ATL06_FILL_VALUE) & (d["h_li_sigma"].values > 0))
        cells.append(ids[keep])
        heights.append(d["h_li"].values[keep])
        sigmas.append(d["h_li_sigma"].values[keep])
    return np.concatenate(cells), np.concatenate(heights), np.concatenate(sigmas)


def test_reading_only_near_the_parent_gives_what_reading_everything_gives(tmp_path: Path,
                                                                          synthetic_dir: Path) -> None:
    """segments_in_parent (box, windows, cell ids of good segments only) returns the same segments, cells and
    values in the same order as reading every segment and computing every cell, for every parent cell touched."""
    dense = _dense_granule(tmp_path / "ATL06_20190101000000_00000101_006_01_DENSE_SYNTHETIC.h5",
                           np.random.default_rng(5))
    compared = 0
    for path in (dense, REAL_GRANULE, synthetic_dir / SYNTHETIC_ONE):
        with _open(path) as granule:
            parents: set[int] = set()
            for beam in granule.beams():
                lat, lon = beam_positions(granule, beam)
                parents |= set(cell_ids(lat, lon, PARENT_ORDER).tolist())
            for parent in sorted(parents):
                got = segments_in_parent(granule, parent, PARENT_ORDER, CHILD_ORDER)
                cells, h, sigma = _reference_segments(granule, parent)
                np.testing.assert_array_equal(got.cells, cells)
                assert got.h_li.dtype == h.dtype and got.h_li.tobytes() == h.tobytes()
                assert got.h_li_sigma.dtype == sigma.dtype and got.h_li_sigma.tobytes() == sigma.tobytes()
                compared += cells.size
    assert compared > 10_000


def test_a_chunk_that_does_not_inflate_to_one_chunk_is_refused() -> None:
    import zlib

    import deflate

    from granulemap.recipes.atl06.granule import _inflate

    data = np.arange(100, dtype=np.float32).tobytes()
    assert bytes(_inflate(zlib.compress(data), len(data))) == data
    with pytest.raises(ValueError, match="inflated to 400 bytes instead of 800"):
        _inflate(zlib.compress(data), 2 * len(data))
    with pytest.raises(deflate.DeflateError):  # more bytes than one chunk
        _inflate(zlib.compress(data), len(data) // 2)
