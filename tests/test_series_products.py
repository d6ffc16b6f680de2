"""One time series holds one GHRSST product: MUR25 and MUR at 0.01° (or two versions of one) differ by product, not by
day, and their rows (keyed by granule name) would alternate in one CSV. A run's granules of another product than its
collection's (when known), than each other or than the series' are refused in BuildCatalog before anything is
computed, and again in Aggregate, the series (CSV and plot) left as it was; a collection named in the input gives
another product a series of its own."""

from __future__ import annotations

import csv
import functools
import shutil
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from granulemap.errors import InvalidInput
from granulemap.recipes import get_recipe, timeseries
from granulemap.recipes.ghrsst import product_from_name
from granulemap.recipes.timeseries import csv_to_rows, refuse_two_products, write_time_series
from granulemap.storage import Bucket

MUR25 = "JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2"
MUR = "JPL-L4_GHRSST-SSTfnd-MUR-GLOB-v02.0-fv04.1"
OSTIA = "UKMO-L4_GHRSST-SSTfnd-OSTIA-GLOB-v02.0-fv02.0"
MUR25_COLLECTION, MUR_COLLECTION = "MUR25-JPL-L4-GLOB-v04.2", "MUR-JPL-L4-GLOB-v4.1"


@pytest.mark.parametrize(("name", "product"), [
    (f"20190101090000-{MUR25}.nc", MUR25),
    (f"s3://podaac-ops-cumulus-protected/MUR-JPL-L4-GLOB-v4.1/20220315090000-{MUR}.nc", MUR),
    (f"20200101120000-{OSTIA}.nc", OSTIA),
    ("20200101120000-CMC-L4_GHRSST-SSTfnd-CMC0.1deg-GLOB-v02.0-fv03.0.nc",  # a dot and an underscore in its fields
     "CMC-L4_GHRSST-SSTfnd-CMC0.1deg-GLOB-v02.0-fv03.0"),
    (f"20181201090000-SYNTHETIC-{MUR25}.nc", MUR25),  # a synthetic copy is of its real granule's product
    # names that do not follow GDS 2.0 do not say their product (a renamed copy is not another product)
    (f"20190101090000-{MUR25} (1).nc", None),
    (f"20190101090000-{MUR25}_subsetted.nc", None),
    (f"/data/20181201090000-{MUR25}", None),
    ("20190101090000-anything.nc", None),
    ("20190101090000-.nc", None),
    ("my_sst_2019-01-01.nc", None),
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


def _granules(path: Path) -> list[str]:
    with open(path) as f:
        return [row["granule"] for row in csv.DictReader(f)]


def _row(day: int, product: str, value: float = 20.0) -> dict[str, Any]:
    return {"time": f"2019-01-{day:02d}T09:00:00Z", "granule": f"201901{day:02d}090000-{product}.nc", "mean_sst_c": value}


@pytest.fixture
def s3_bucket(monkeypatch):
    monkeypatch.setattr(timeseries, "_pause_before_retry", lambda _: None)
    with mock_aws():
        client = boto3.client("s3", region_name="us-west-2")
        client.create_bucket(Bucket="bucket", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        yield Bucket("bucket", client)


def _build(doc: dict[str, Any], run_id: str, bucket: Bucket):
    from granulemap.catalog import build_catalog
    from granulemap.settings import Settings

    return build_catalog(doc, run_id, Settings(bucket=bucket.name), bucket)


def test_a_folder_of_two_products_on_different_days_is_refused_before_anything_is_written(
        tmp_path: Path, synthetic_month, s3_bucket: Bucket) -> None:
    folder = tmp_path / "granules"
    first, second, third = synthetic_month
    for path in (first, second):
        _copy_as(path, folder, MUR25)
    _copy_as(third, folder, MUR)
    doc = {"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-03", "source": str(folder),
           "collection": "SOME-OTHER-COLLECTION"}  # no product known for it: the folder's own two are refused
    with pytest.raises(InvalidInput) as refused:
        _build(doc, "two-products", s3_bucket)
    message = str(refused.value)
    assert message.startswith("field 'source': its granules are of 2 products")
    assert f"{MUR25} (2 granules, 2018-12-01 to 2018-12-02)" in message
    assert f"{MUR} (1 granule, 2018-12-03)" in message
    assert "\"collection\"" in message and "--collection" in message
    assert list(s3_bucket.keys("")) == []  # no manifest, no result: nothing was written
    # without the other product's day, the folder is one product
    out = _build({**doc, "end": "2018-12-02"}, "one-product", s3_bucket)
    manifest = s3_bucket.get_json(out.catalog.key)
    assert sorted(g["url"].rsplit("/", 1)[-1] for item in manifest for g in item["granules"]) == [
        first.name, second.name]
    assert out.run.collection == "SOME-OTHER-COLLECTION"


@pytest.mark.parametrize("recipe", ["sst-global-mean", "sst-box-mean"])
def test_granules_of_another_product_than_the_run_s_collection_are_refused(
        tmp_path: Path, synthetic_month, s3_bucket: Bucket, recipe: str) -> None:
    """Without a collection a source's granules are the recipe's (MUR25): a folder of MUR would otherwise own the
    default configuration's series, and MUR25 could never join it again. Named, MUR is accepted (its own series)."""
    folder = tmp_path / "mur"
    for path in synthetic_month:
        _copy_as(path, folder, MUR)
    doc = {"recipe": recipe, "start": "2018-12-01", "end": "2018-12-03", "source": str(folder)}
    with pytest.raises(InvalidInput) as refused:
        _build(doc, "mur-as-mur25", s3_bucket)
    assert str(refused.value).startswith(
        f"field 'source': its granules are {MUR} (3 granules, 2018-12-01 to 2018-12-03), but the run's collection "
        f"{MUR25_COLLECTION} (the recipe's own when the input names none) is {MUR25}.")
    assert list(s3_bucket.keys("")) == []
    with pytest.raises(InvalidInput, match=f"but the run's collection {MUR_COLLECTION} .* is {MUR}"):
        _build({**doc, "source": str(synthetic_month[0].parent), "collection": MUR_COLLECTION}, "mur25-as-mur",
               s3_bucket)
    named = _build({**doc, "collection": MUR_COLLECTION}, "mur", s3_bucket)
    assert named.run.collection == MUR_COLLECTION and named.catalog.count == 1  # one dekad
    unnamed = _build({**doc, "source": str(synthetic_month[0].parent)}, "mur25", s3_bucket)
    assert unnamed.run.collection == MUR25_COLLECTION and unnamed.run.config_id != named.run.config_id


@pytest.mark.slow
def test_a_run_of_another_product_into_a_series_is_refused_and_a_collection_gives_it_its_own(
        tmp_path: Path, synthetic_month) -> None:
    """A collection no product is known for (OSTIA here) builds a series of the first product run into it: a run of
    another product into that series is refused in BuildCatalog, the series unchanged, and the message names it as
    the file kept here; the other product's own collection gives it a series of its own."""
    from granulemap.local.run import Workspace

    ostia_folder, mur_folder = tmp_path / "ostia", tmp_path / "mur"
    for path in synthetic_month[:2]:
        _copy_as(path, ostia_folder, OSTIA)
    other = _copy_as(synthetic_month[2], mur_folder, MUR)
    december = {"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-03",
                "collection": "OSTIA-UKMO-L4-GLOB-v2.0"}
    workspace_folder = tmp_path / "workspace"
    with Workspace(workspace_folder, workers=1) as workspace:
        first = workspace.run({**december, "source": str(ostia_folder)}, out=tmp_path / "first")
        (series,) = (workspace_folder / "state").glob("outputs/sst-global-mean/*/global_mean_sst.csv")
        written = series.read_bytes(), series.with_suffix(".png").read_bytes()
        refused = workspace.run({**december, "source": str(mur_folder)}, out=tmp_path / "refused")
        after_refusal = series.read_bytes(), series.with_suffix(".png").read_bytes()
        own = workspace.run({**december, "source": str(mur_folder), "collection": MUR_COLLECTION},
                            out=tmp_path / "own")
    assert first["status"] == "SUCCEEDED"
    assert _granules(series) == [p.name.replace(MUR25, OSTIA) for p in synthetic_month[:2]]
    assert refused["status"] == "FAILED"
    assert refused["message"].endswith(
        f"field 'source': its granules are {MUR} (1 granule, 2018-12-03), but the time series {series} holds {OSTIA} "
        "(2 granules, 2018-12-01 to 2018-12-02): one series of two products would change with the product, not the "
        "ocean. The series was not changed: name their collection (\"collection\": its CMR short name; "
        "--collection), which gives them a time series of their own")
    invoked = (tmp_path / "refused" / "logs" / "invocations.jsonl").read_text()
    assert "CatalogBuilderFunction" in invoked and "ProcessorFunction" not in invoked  # refused before the Map
    assert after_refusal == written
    assert own["status"] == "SUCCEEDED"
    (own_csv,) = [p for p in own["outputs"] if p.endswith(".csv")]
    assert _granules(Path(own_csv)) == [other.name]
    assert _granules(series) == [p.name.replace(MUR25, OSTIA) for p in synthetic_month[:2]]


def test_combine_refuses_rows_of_another_product_and_the_run_fails_with_its_results_stored(
        tmp_path: Path, synthetic_month, s3_bucket: Bucket) -> None:
    """Aggregate makes BuildCatalog's check again where it writes the series: here another product's rows reached the
    series after this run's catalog was made (a run of an unknown collection's MUR granules). The run fails with the
    input's error, its results and summary written, the series' CSV and plot as the other run left them."""
    from granulemap.aggregation import aggregate
    from granulemap.errors import RecipeFailed
    from granulemap.models import AggregatorEvent, Item, ProcessorEvent
    from granulemap.processing import process_item

    collection = "SOME-COLLECTION"
    doc = {"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-03",
           "source": str(synthetic_month[0].parent), "collection": collection}
    catalog = _build(doc, "mur25-run", s3_bucket)
    for item in s3_bucket.get_json(catalog.catalog.key):
        process_item(ProcessorEvent(item=Item.model_validate(item), run=catalog.run), s3_bucket)
    recipe = get_recipe("sst-global-mean")
    csv_key, png_key = recipe.series_keys(catalog.run)
    other = [_row(day, MUR) for day in (4, 5)]
    write_time_series(s3_bucket, csv_key, png_key, ("time", "granule", "mean_sst_c"), other, "mean_sst_c", "t", "y")
    before = s3_bucket.get_bytes(csv_key), s3_bucket.get_bytes(png_key)
    with pytest.raises(RecipeFailed) as failed:
        aggregate(AggregatorEvent(**catalog.model_dump()), s3_bucket)
    assert str(failed.value).startswith("recipe sst-global-mean refused to combine the results into its products: "
                                        f"field 'source': its granules are {MUR25} (3 granules, 2018-12-01 to "
                                        f"2018-12-03), but the time series s3://bucket/{csv_key} holds {MUR} "
                                        "(2 granules, 2019-01-04 to 2019-01-05)")
    assert "mend the recipe" not in str(failed.value)
    assert (s3_bucket.get_bytes(csv_key), s3_bucket.get_bytes(png_key)) == before
    summary = s3_bucket.get_json(f"runs/{catalog.run.run_id}/summary.json")
    assert summary["status"] == "FAILED" and summary["granules"]["succeeded"] == 3
    stored = [s3_bucket.get_json_or_none(f"results/sst-global-mean/{catalog.run.config_id}/{item['id']}.json")
              for item in s3_bucket.get_json(catalog.catalog.key)]
    assert all(record is not None for record in stored)


def test_an_earlier_attempt_s_plot_of_the_refused_rows_is_drawn_again_from_the_series(
        s3_bucket: Bucket, monkeypatch) -> None:
    """This run (MUR25, of a collection no product is known for) reads an empty series and draws its plot; before it
    writes the CSV another run writes MUR rows. The second attempt refuses: the plot is the series' again."""
    csv_key, png_key, columns = "s/series.csv", "s/series.png", ("time", "granule", "mean_sst_c")
    refuse = functools.partial(refuse_two_products, product_of=product_from_name, series=csv_key)  # README's form
    drawn: list[list[str]] = []
    draw = timeseries.plot_time_series
    monkeypatch.setattr(timeseries, "plot_time_series",
                        lambda rows, *a: drawn.append([r["granule"] for r in rows]) or draw(rows, *a))
    other_run = Bucket("bucket", boto3.client("s3", region_name="us-west-2"))
    mine = boto3.client("s3", region_name="us-west-2")
    interleaved: list[bool] = []

    def the_other_run_writes_first(**kwargs: Any) -> None:
        if kwargs["params"]["Key"] == csv_key and not interleaved:
            interleaved.append(True)
            write_time_series(other_run, csv_key, png_key, columns, [_row(4, MUR)], "mean_sst_c", "t", "y",
                              refuse=refuse)

    mine.meta.events.register("provide-client-params.s3.PutObject", the_other_run_writes_first)
    with pytest.raises(InvalidInput, match=f"holds {MUR}"):
        write_time_series(Bucket("bucket", mine), csv_key, png_key, columns, [_row(1, MUR25)], "mean_sst_c", "t", "y",
                          refuse=refuse)
    assert interleaved
    mur_row, mur25_row = _row(4, MUR)["granule"], _row(1, MUR25)["granule"]
    assert drawn == [[mur25_row], [mur_row], [mur_row]]  # mine, the other run's, the series' again
    assert [r["granule"] for r in csv_to_rows(s3_bucket.get_bytes(csv_key))] == [mur_row]
    assert s3_bucket.get_bytes(png_key) == draw([_row(4, MUR)], "mean_sst_c", "t", "y")


@pytest.mark.parametrize(("existing", "new", "refused"), [
    ([_row(1, MUR25)], [_row(2, MUR25)], None),
    ([_row(1, MUR25)], [{**_row(2, MUR25), "granule": "my_sst_2019-01-02.nc"}], None),  # an undated name: not judged
    ([{**_row(1, MUR25), "granule": "my_sst_2019-01-01.nc"}], [_row(2, MUR)], None),
    ([], [_row(2, MUR), _row(3, MUR)], None),
    ([_row(1, MUR25)], [_row(2, MUR)], f"holds {MUR25} (1 granule, 2019-01-01): one series of two products"),
    ([_row(1, MUR25), _row(2, MUR)], [_row(3, MUR25)], f"holds 2 products ({MUR} (1 granule, 2019-01-02); {MUR25} "
                                                        "(1 granule, 2019-01-01)), mixed before granulemap refused"),
    ([], [_row(1, MUR25), _row(2, OSTIA)], "its granules are of 2 products"),
])
def test_which_rows_may_join_a_series(existing: list, new: list, refused: str | None) -> None:
    def check() -> None:
        refuse_two_products(existing, new, product_from_name, "the series")

    if refused is None:
        check()
    else:
        with pytest.raises(InvalidInput) as raised:
            check()
        assert refused in str(raised.value)


def test_granulemap_run_takes_the_collection_of_its_source(tmp_path: Path) -> None:
    from granulemap.cli import build_parser, execution_input

    args = build_parser().parse_args(["run", "--recipe", "sst-global-mean", "--start", "2018-12-03", "--end",
                                      "2018-12-03", "--source", str(tmp_path), "--out", str(tmp_path / "out"),
                                      "--collection", MUR_COLLECTION])
    assert execution_input(args) == {"recipe": "sst-global-mean", "start": "2018-12-03", "end": "2018-12-03",
                                     "source": str(tmp_path.resolve()), "collection": MUR_COLLECTION}


def test_a_cmr_run_s_refusal_names_its_collection_not_a_source(s3_bucket: Bucket) -> None:
    """A CMR search's granules are the collection's: if their names say another product (the collection renamed its
    files), the field to look at is the collection."""
    from granulemap.models import RunContext

    recipe = get_recipe("sst-global-mean")
    run = RunContext(run_id="r", recipe=recipe.name, params={"method": "ocean"}, config_id="ocean-x", daac="POCLOUD",
                     collection=MUR25_COLLECTION)
    with pytest.raises(InvalidInput) as refused:
        recipe.refusal(run, s3_bucket)([], [_row(1, MUR)])
    assert str(refused.value).startswith(f"field 'collection': its granules are {MUR} (1 granule, 2019-01-01), but the "
                                         f"run's collection {MUR25_COLLECTION}")
    recipe.refusal(run, s3_bucket)([], [_row(1, MUR25)])  # its own product: accepted


def test_a_series_damaged_after_the_catalog_fails_aggregate_naming_it_not_the_recipe(
        synthetic_month, s3_bucket: Bucket) -> None:
    """The series cut short between BuildCatalog (which reads it) and Aggregate: the run fails saying what is damaged
    and how to write it anew, not that the recipe needs mending; the series is left as it is, the results stored."""
    from granulemap.aggregation import aggregate
    from granulemap.errors import RecipeFailed
    from granulemap.models import AggregatorEvent, Item, ProcessorEvent
    from granulemap.processing import process_item

    doc = {"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-02",
           "source": str(synthetic_month[0].parent)}
    catalog = _build(doc, "damaged-series-run", s3_bucket)
    for item in s3_bucket.get_json(catalog.catalog.key):
        process_item(ProcessorEvent(item=Item.model_validate(item), run=catalog.run), s3_bucket)
    csv_key, _ = get_recipe("sst-global-mean").series_keys(catalog.run)
    s3_bucket.put_bytes(csv_key, b"time,granule,mean_sst_c,computed_at\n2018-11-30T09:00:00Z,x,20.1", "text/csv")
    with pytest.raises(RecipeFailed) as failed:
        aggregate(AggregatorEvent(**catalog.model_dump()), s3_bucket)
    message = str(failed.value)
    assert message.startswith("recipe sst-global-mean could not combine the results into its products: "
                              f"s3://bucket/{csv_key} is damaged: line 2 has 3 fields, and its header 4")
    assert "delete the damaged line, or the whole file" in message and "mend the recipe" not in message
    assert s3_bucket.get_bytes(csv_key).endswith(b",x,20.1")
    assert all(s3_bucket.get_json_or_none(f"results/sst-global-mean/{catalog.run.config_id}/{item['id']}.json")
               for item in s3_bucket.get_json(catalog.catalog.key))


def test_a_series_with_a_column_the_recipe_no_longer_writes_is_refused_before_anything_is_computed(
        tmp_path: Path, synthetic_month, s3_bucket: Bucket) -> None:
    """A series written by a recipe that had another column (renamed since): merging into it would drop that
    column's values from every row. BuildCatalog (prepare) refuses before any item runs, naming the column."""
    from granulemap import layout
    from granulemap.errors import ProductMismatch

    folder = tmp_path / "granules"
    _copy_as(synthetic_month[0], folder, MUR25)
    doc = {"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-01", "source": str(folder)}
    out = _build(doc, "first", s3_bucket)
    csv_key = layout.output_key("sst-global-mean", out.run.config_id, "global_mean_sst.csv")
    s3_bucket.put_bytes(csv_key, b"time,granule,mean_sst,computed_at\n"
                                 b"2018-11-30T09:00:00Z,g.nc,20.1,2026-01-01T00:00:00Z\n", "text/csv")
    with pytest.raises(ProductMismatch, match=f"s3://bucket/{csv_key} has the column mean_sst, which this run's "
                                              "columns .* do not"):
        _build(doc, "second", s3_bucket)
    assert s3_bucket.get_json_or_none(layout.manifest_key("second")) is None  # refused before the manifest
