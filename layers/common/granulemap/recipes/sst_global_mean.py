"""Recipe ``sst-global-mean``: the global mean sea surface temperature of each GHRSST L4 granule.

Methods (``params.method``):
- ``ocean`` (default): cos(latitude)-weighted mean of analysed_sst in °C over open water, i.e. cells whose GDS 2.0
  ``mask`` has the water bit set and the land, lake, sea-ice and river bits clear (in MUR v4.1's older form, whose
  ``flag_meanings`` list whole values, "1=open-sea, 2=land, 5=open-lake, ...": the value 1, the same cells).
- ``podaac-tutorial``: the method of PO.DAAC's "global mean SST with AWS Lambda" tutorial: cos(latitude) weights set
  to zero poleward of 60°, every valid analysed_sst cell, no mask. Its number to within 3e-5 °C on MUR25, not to the
  last digit: xarray's weighted mean, which the tutorial uses, adds its float32 weights up in float32 (an error that
  grows with the number of cells); this module sums in float64.
Both report the number of cells used and their min/max in °C.
"""

from __future__ import annotations

import functools
from typing import Any, BinaryIO, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from granulemap import layout
from granulemap.errors import first_of
from granulemap.granule_access import GranuleAccess
from granulemap.models import Item, RunContext
from granulemap.recipes.base import Recipe
from granulemap.recipes.ghrsst import (
    COLLECTION_PRODUCTS,
    GhrsstGranule,
    GranuleReader,
    WeightedStats,
    cos_lat_weighted_stats,
    open_water,
    product_from_name,
    time_from_name,
)
from granulemap.recipes.timeseries import (
    Refusal,
    read_series,
    refuse_to_drop_columns,
    refuse_two_products,
    write_time_series,
)
from granulemap.storage import Bucket

CSV_COLUMNS = ("time", "granule", "mean_sst_c", "n_valid", "min_sst_c", "max_sst_c")
TUTORIAL_MAX_ABS_LAT = 60.0

Method = Literal["ocean", "podaac-tutorial"]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: Method = "ocean"


def _round(value: float | None) -> float | None:
    """°C to 1e-6: far below any GHRSST product's packing precision (MUR: 0.001 K), and readable in the CSV."""
    return None if value is None else round(value, 6)


def global_mean_sst(name: str, *, method: Method, path: str | None = None, data: bytes | None = None,
                    file: BinaryIO | None = None) -> dict[str, Any]:
    """The global mean SST of one granule (a local path, its bytes or a binary file) as a CSV row."""
    with GranuleReader(name, path=path, data=data, file=file, with_mask=method == "ocean") as reader:
        granule = reader.granule
        weights = np.cos(np.deg2rad(granule.lat))
        if method == "ocean":
            stats = cos_lat_weighted_stats(
                reader, weights, lambda tile: open_water(tile.mask, granule.mask_flags, name))  # type: ignore[arg-type]
        else:  # no mask; the rows poleward of 60° weigh nothing, and are not read
            weights = np.where(np.abs(granule.lat) <= TUTORIAL_MAX_ABS_LAT, weights, 0.0)
            stats = cos_lat_weighted_stats(reader, weights, lambda tile: None)
    return rounded_row(granule, stats, method)


def rounded_row(granule: GhrsstGranule, stats: WeightedStats, method: str) -> dict[str, Any]:
    """One CSV row (plus the method) for a granule's statistics."""
    return {
        "time": granule.time.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "granule": granule.name,
        "mean_sst_c": _round(stats.mean_c),
        "n_valid": stats.n_valid,
        "min_sst_c": _round(stats.min_c),
        "max_sst_c": _round(stats.max_c),
        "method": method,
    }


class SstGlobalMean(Recipe):
    name = "sst-global-mean"
    description = "Global mean SST (°C, cos-latitude weighted, open water) per GHRSST L4 granule → CSV time series"
    collection = "MUR25-JPL-L4-GLOB-v04.2"
    file_pattern = "*.nc"
    per_granule = True
    same_area_every_granule = True  # GHRSST L4: one grid per day (MUR25: global, 0.25°)
    one_granule_a_day = True
    Params = Params
    series_name: ClassVar[str] = "global_mean_sst"
    """The products' file name: ``<series_name>.csv`` and ``.png``."""

    def slug(self, params: BaseModel) -> str:
        return str(params.method)  # type: ignore[attr-defined]

    def granule_time(self, name: str):  # type: ignore[no-untyped-def]
        return time_from_name(name)

    def process(self, item: Item, params: BaseModel, access: GranuleAccess, run: RunContext) -> dict[str, Any]:
        (granule,) = item.granules
        name = granule.url.rsplit("/", 1)[-1]
        with access.open(granule.url) as f:  # from S3 by ranges: a MUR 0.01° granule is 400 MB
            return global_mean_sst(name, method=params.method, file=f)  # type: ignore[attr-defined]

    def series_keys(self, run: RunContext) -> tuple[str, str]:
        """The S3 keys of the configuration's CSV time series and its plot."""
        return (layout.output_key(self.name, run.config_id, f"{self.series_name}.csv"),
                layout.output_key(self.name, run.config_id, f"{self.series_name}.png"))

    def refusal(self, run: RunContext, bucket: Bucket) -> Refusal:
        """What refuses rows that must not join the configuration's series: granules of two products, of another
        product than the run's collection's (when known: ``COLLECTION_PRODUCTS``) or than the series'."""
        csv_key, _ = self.series_keys(run)
        known = COLLECTION_PRODUCTS.get(run.collection or "")
        return functools.partial(
            refuse_two_products, product_of=product_from_name, series=f"s3://{bucket.name}/{csv_key}",
            field="source" if run.daac is None else "collection",  # a source's granules, or a CMR search's
            expected=(run.collection, known) if run.collection and known else None)

    def prepare(self, items: list[Item], run: RunContext, params: BaseModel, bucket: Bucket) -> None:
        """Refuses granules that must not join the series (``refusal``), and a series with columns this recipe does not
        write (``refuse_to_drop_columns``), before anything is computed (Aggregate checks again where it writes the
        series); returns nothing: the items stay as they are."""
        csv_key = self.series_keys(run)[0]
        existing, _ = read_series(bucket, csv_key)
        refuse_to_drop_columns(existing, CSV_COLUMNS, f"s3://{bucket.name}/{csv_key}")
        new = [{"granule": g.url.rsplit("/", 1)[-1], "time": g.time.isoformat() if g.time else ""}
               for item in items for g in item.granules]
        self.refusal(run, bucket)(existing, new)

    def combine(self, results: list[dict[str, Any]], run: RunContext, params: BaseModel, bucket: Bucket) -> list[str]:
        csv_key, png_key = self.series_keys(run)
        write_time_series(bucket, csv_key, png_key, CSV_COLUMNS, results, "mean_sst_c", title=self.title(params),
                          ylabel="mean SST (°C)", refuse=self.refusal(run, bucket),
                          one_a_day=self.one_granule_a_day)
        return [csv_key, png_key]

    def title(self, params: BaseModel) -> str:
        """The plot's title."""
        if _tutorial(params):
            return (f"Mean SST within {TUTORIAL_MAX_ABS_LAT:g}° of the equator, every valid cell, sea ice included "
                    "(podaac-tutorial: cos-latitude weighted)")
        return "Global mean SST of open water, sea ice left out (ocean: cos-latitude weighted)"

    def notes(self, results: list[dict[str, Any]], params: BaseModel) -> list[str]:
        empty = sorted(str(r.get("granule")) for r in results if not r.get("n_valid"))
        if not empty:
            return []
        return [f"{len(empty)} of {len(results)} granules had no {self.cells(params)}{self.where(params)}, so their "
                f"rows have no mean ({first_of(empty, 3)}){self.why_empty(params)}"]

    def cells(self, params: BaseModel) -> str:
        """Which cells the recipe averages, for the notes (after "had no")."""
        return "valid cell" if _tutorial(params) else "cell of open water"

    def where(self, params: BaseModel) -> str:
        """Where the recipe averages, for the notes (after the cells)."""
        return f" within {TUTORIAL_MAX_ABS_LAT:g}° of the equator" if _tutorial(params) else ""

    def why_empty(self, params: BaseModel) -> str:
        return ": is the granule damaged?"


def _tutorial(params: BaseModel) -> bool:
    """Whether ``params`` ask for PO.DAAC's tutorial's method (every valid cell within 60°), not the ocean one."""
    return params.method == "podaac-tutorial"  # type: ignore[attr-defined]


recipe = SstGlobalMean()
