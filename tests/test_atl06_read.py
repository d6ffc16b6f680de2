"""Reading ATL06 with h5coro: same bytes as h5coro's own reader, filters, named errors; cell ids on WGS84."""

# ruff: noqa: F811  (test parameters take the names of the fixtures imported from the support module)

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import pytest
from h5coro import filedriver, h5coro

from granulemap.errors import GranuleUnreadable, VariableMissing
from granulemap.recipes.atl06.cells import cell_ids, children, parents_of
from granulemap.recipes.atl06.granule import Atl06Granule, segments_in_parent

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
    granule_one,
    moto_s3,
    neighbours,
    synthetic_dir,
    wgs84_cells,
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
