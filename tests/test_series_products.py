"""One time series holds one GHRSST product: MUR25 and MUR at 0.01° (or two versions of one) differ by product, not by
day, and their rows (keyed by granule name) would alternate in one CSV. Refused in BuildCatalog (the source's granules,
and the source's against the series so far) before anything is computed, and again in Aggregate, the series left as
it was; a collection named in the input gives another product a series of its own."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from granulemap.errors import InvalidInput
from granulemap.recipes.ghrsst import product_from_name
from granulemap.recipes.timeseries import write_time_series
from granulemap.storage import Bucket

MUR25 = "JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2"
MUR = "JPL-L4_GHRSST-SSTfnd-MUR-GLOB-v02.0-fv04.1"


@pytest.mark.parametrize(("name", "product"), [
    (f"20190101090000-{MUR25}.nc", MUR25),
    (f"s3://podaac-ops-cumulus-protected/MUR-JPL-L4-GLOB-v4.1/20220315090000-{MUR}.nc", MUR),
    ("20200101120000-UKMO-L4_GHRSST-SSTfnd-OSTIA-GLOB-v02.0-fv02.0.nc", "UKMO-L4_GHRSST-SSTfnd-OSTIA-GLOB-v02.0-fv02.0"),
    (f"20181201090000-SYNTHETIC-{MUR25}.nc", MUR25),  # a synthetic copy is of its real granule's product
    (f"/data/20181201090000-{MUR25}", MUR25),  # no extension
    ("my_sst_2019-01-01.nc", None),  # no GDS 2.0 date stamp: the name does not say
    (f"2019010109-{MUR25}.nc", None),  # a short stamp is no stamp
])
def test_the_product_of_a_gds2_name_is_what_follows_its_date_stamp(name: str, product: str | None) -> None:
    assert product_from_name(name) == product


def _copy_as(source: Path, folder: Path, product: str) -> Path:
    """``source`` (a synthetic MUR25 granule) copied into ``folder`` under the name of ``product``'s granule of its
    day: the file is the same, the name says another product."""
    folder.mkdir(exist_ok=True)
    target = folder / source.name.replace(MUR25, product)
    shutil.copy(source, target)
    return target


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture
def s3_bucket():
    with mock_aws():
        client = boto3.client("s3", region_name="us-west-2")
        client.create_bucket(Bucket="bucket", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        yield Bucket("bucket", client)


def test_a_folder_of_two_products_on_different_days_is_refused_before_anything_is_written(
        tmp_path: Path, synthetic_month, s3_bucket: Bucket) -> None:
    from granulemap.catalog import build_catalog
    from granulemap.settings import Settings

    folder = tmp_path / "granules"
    first, second, third = synthetic_month
    for path in (first, second):
        _copy_as(path, folder, MUR25)
    _copy_as(third, folder, MUR)
    doc = {"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-03", "source": str(folder)}
    with pytest.raises(InvalidInput) as refused:
        build_catalog(doc, "two-products", Settings(bucket="bucket"), s3_bucket)
    message = str(refused.value)
    assert message.startswith("field 'source': its granules are of 2 products")
    assert f"{MUR25} (2 granules, 2018-12-01 to 2018-12-02)" in message
    assert f"{MUR} (1 granule, 2018-12-03)" in message
    assert "\"collection\"" in message
    assert list(s3_bucket.keys("")) == []  # no manifest, no result: nothing was written
    # without the other product's day, the folder is one product
    out = build_catalog({**doc, "end": "2018-12-02"}, "one-product", Settings(bucket="bucket"), s3_bucket)
    manifest = s3_bucket.get_json(out.catalog.key)
    assert sorted(g["url"].rsplit("/", 1)[-1] for item in manifest for g in item["granules"]) == [
        first.name, second.name]


@pytest.mark.slow
def test_a_run_of_another_product_into_a_series_is_refused_and_a_collection_gives_it_its_own(
        tmp_path: Path, synthetic_month) -> None:
    """The series of the default configuration holds MUR25 (December 1-2); a folder of MUR for December 3 run into
    it is refused in BuildCatalog, the CSV unchanged; the same folder with its collection named is a series of its
    own."""
    from granulemap.local.run import Workspace

    mur25_folder, mur_folder = tmp_path / "mur25", tmp_path / "mur"
    for path in synthetic_month[:2]:
        _copy_as(path, mur25_folder, MUR25)
    other = _copy_as(synthetic_month[2], mur_folder, MUR)
    december = {"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-03"}
    with Workspace(tmp_path / "workspace", workers=1) as workspace:
        first = workspace.run({**december, "source": str(mur25_folder)}, out=tmp_path / "first")
        series = tmp_path / "first" / "global_mean_sst.csv"
        written = series.read_bytes()
        refused = workspace.run({**december, "source": str(mur_folder)}, out=tmp_path / "refused")
        own = workspace.run({**december, "source": str(mur_folder), "collection": "MUR-JPL-L4-GLOB-v4.1"},
                            out=tmp_path / "own")
        again = workspace.run({**december, "source": str(mur25_folder)}, out=tmp_path / "again")
    assert first["status"] == "SUCCEEDED" and [r["granule"] for r in _rows(series)] == [
        p.name for p in synthetic_month[:2]]
    assert refused["status"] == "FAILED"
    assert f"its granules are {MUR} (1 granule, 2018-12-03), but the time series" in refused["message"]
    assert f"holds {MUR25} (2 granules, 2018-12-01 to 2018-12-02)" in refused["message"]
    invoked = (tmp_path / "refused" / "logs" / "invocations.jsonl").read_text()
    assert "CatalogBuilderFunction" in invoked and "ProcessorFunction" not in invoked  # refused before the Map
    assert series.read_bytes() == written
    assert own["status"] == "SUCCEEDED"
    (own_csv,) = [p for p in own["outputs"] if p.endswith(".csv")]
    assert [r["granule"] for r in _rows(Path(own_csv))] == [other.name]
    # the default configuration's series is still MUR25's alone
    (again_csv,) = [p for p in again["outputs"] if p.endswith(".csv")]
    assert [r["granule"] for r in _rows(Path(again_csv))] == [p.name for p in synthetic_month[:2]]


def test_aggregate_refuses_rows_of_another_product_and_leaves_the_series_as_it_was(s3_bucket: Bucket) -> None:
    """The check BuildCatalog makes is made again where the series is written (a run of another product that started
    before this one's CSV existed)."""
    columns = ("time", "granule", "mean_sst_c")
    first = [{"time": "2019-01-01T09:00:00Z", "granule": f"20190101090000-{MUR25}.nc", "mean_sst_c": 20.1}]
    write_time_series(s3_bucket, "s/series.csv", "s/series.png", columns, first, "mean_sst_c", "t", "y",
                      product_of=product_from_name)
    before = s3_bucket.get_bytes("s/series.csv"), s3_bucket.get_bytes("s/series.png")
    other = [{"time": "2019-01-02T09:00:00Z", "granule": f"20190102090000-{MUR}.nc", "mean_sst_c": 20.3}]
    with pytest.raises(InvalidInput) as refused:
        write_time_series(s3_bucket, "s/series.csv", "s/series.png", columns, other, "mean_sst_c", "t", "y",
                          product_of=product_from_name)
    assert f"s3://bucket/s/series.csv holds {MUR25} (1 granule, 2019-01-01)" in str(refused.value)
    assert (s3_bucket.get_bytes("s/series.csv"), s3_bucket.get_bytes("s/series.png")) == before
    # a name that does not say its product is not judged; rows of the series' product join it
    more = [{"time": "2019-01-03T00:00:00Z", "granule": "my_sst_2019-01-03.nc", "mean_sst_c": 20.0},
            {"time": "2019-01-04T09:00:00Z", "granule": f"20190104090000-SYNTHETIC-{MUR25}.nc", "mean_sst_c": 20.2}]
    rows = write_time_series(s3_bucket, "s/series.csv", "s/series.png", columns, more, "mean_sst_c", "t", "y",
                             product_of=product_from_name)
    assert [r["granule"] for r in rows] == [first[0]["granule"], "my_sst_2019-01-03.nc", more[1]["granule"]]


def test_a_refusal_in_combine_reads_as_the_input_s_fault_not_the_recipe_s() -> None:
    from granulemap.aggregation import recipe_failure
    from granulemap.recipes import get_recipe

    recipe = get_recipe("sst-global-mean")
    said = recipe_failure(recipe, InvalidInput("field 'source': its granules are X, but the time series Y holds Z"))
    assert said == ("recipe sst-global-mean refused to combine the results into its products: field 'source': its "
                    "granules are X, but the time series Y holds Z")
    assert "mend the recipe" in recipe_failure(recipe, ValueError("a bug"))


def test_granulemap_run_takes_the_collection_of_its_source() -> None:
    from granulemap.cli import build_parser, execution_input

    args = build_parser().parse_args(["run", "--recipe", "sst-global-mean", "--start", "2018-12-03", "--end",
                                      "2018-12-03", "--source", "s3://b/mur", "--out", "out/mur",
                                      "--collection", "MUR-JPL-L4-GLOB-v4.1"])
    assert execution_input(args) == {"recipe": "sst-global-mean", "start": "2018-12-03", "end": "2018-12-03",
                                     "source": "s3://b/mur", "collection": "MUR-JPL-L4-GLOB-v4.1"}
