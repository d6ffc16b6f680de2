"""Recipe ``sst-box-mean``: mean SST over a lat/lon box, per GHRSST L4 granule.

The mean is cos(latitude)-weighted (each cell weighs as its area on a sphere) over open-water cells (as
``sst-global-mean``'s ocean method) whose centres lie in the box. The box runs east from ``west`` to ``east``:
``west > east`` means it crosses the antimeridian (e.g. west 170, east -170), and 360° or more (west -180, east 180; or
0 and 360) takes every longitude, a latitude band. Default: Niño 3.4 (5°S–5°N, 170°W–120°W).

Edges: the box is closed on all four edges. A cell is in when its centre's latitude is in [south, north] and its
longitude, going east from ``west``, is in [west, east]: a cell centred exactly on an edge counts, so two boxes that
share an edge both count the cells centred on it (as ``xarray``'s ``sel(lat=slice(south, north))`` does). A centre
less than 1 % of the grid spacing (``EDGE_TOLERANCE``) outside an edge counts as on it: coordinates are stored in
float32, so on the MUR 0.01° grid the centre 5.00 may be kept as 5.0000005 or 4.9999995, -170.00 as -170.00002, and
such a cell is in whichever way its coordinate was rounded.
"""

from __future__ import annotations

from typing import Any, BinaryIO

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from granulemap.granule_access import GranuleAccess
from granulemap.models import Item, RunContext
from granulemap.recipes.ghrsst import GranuleReader, Tile, cos_lat_weighted_stats, open_water
from granulemap.recipes.sst_global_mean import SstGlobalMean, rounded_row


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    box: tuple[float, float, float, float] = Field(
        default=(-170.0, -5.0, -120.0, 5.0),
        description="west, south, east, north in degrees (Niño 3.4 by default); edges included: a cell whose centre "
                    "lies on an edge is in",
    )

    @field_validator("box", mode="before")
    @classmethod
    def _four_numbers(cls, box: Any) -> Any:
        if isinstance(box, str):  # --param box=-170,-5,-120,5: not JSON, so taken as text
            raise ValueError(f"four numbers [west, south, east, north] in degrees, as a list, got the text {box!r} "
                             f"(on the command line: --param 'box=[{box.strip('[]()')}]')")
        if isinstance(box, (list, tuple)) and len(box) != 4:
            raise ValueError(f"four numbers [west, south, east, north] in degrees, got {len(box)}: {list(box)}")
        return box

    @model_validator(mode="after")
    def _check_box(self) -> Params:
        west, south, east, north = self.box
        for name, lon in (("west", west), ("east", east)):
            if not -180 <= lon <= 360:
                raise ValueError(f"box: {name} {lon:g} is not a longitude in degrees from -180 to 360")
        for name, lat in (("south", south), ("north", north)):
            if not -90 <= lat <= 90:
                raise ValueError(f"box: {name} {lat:g} is not a latitude in degrees from -90 to 90")
        if not south < north:
            raise ValueError(f"box: south ({south:g}) must be less than north ({north:g})")
        if lon_span(west, east) == 0:
            raise ValueError(f"box: west and east are the same longitude ({west:g}, {east:g}): a box of no width "
                             "(for every longitude, give west -180 and east 180)")
        return self


def lon_span(west: float, east: float) -> float:
    """Degrees of longitude from ``west`` eastward to ``east`` (both in -180..360): 360 or more is every longitude."""
    return east - west if east >= west else (east - west) % 360.0


EDGE_TOLERANCE = 0.01
"""A cell centre within this fraction of the grid spacing of a box edge is on the edge (and so in the box)."""


def edge_tolerance(centres: np.ndarray) -> float:
    """Degrees within which a centre counts as on an edge: ``EDGE_TOLERANCE`` of the smallest spacing of ``centres``
    (0 for a single centre)."""
    steps = np.abs(np.diff(np.asarray(centres, dtype=np.float64)))
    steps = steps[steps > 0]
    return EDGE_TOLERANCE * float(steps.min()) if steps.size else 0.0


def in_lat_range(lat: np.ndarray, south: float, north: float, tol: float = 0.0) -> np.ndarray:
    """True for latitudes in [south, north], edges included (within ``tol`` degrees)."""
    lat = np.asarray(lat, dtype=np.float64)
    return (lat >= south - tol) & (lat <= north + tol)


def in_lon_range(lon: np.ndarray, west: float, east: float, tol: float = 0.0) -> np.ndarray:
    """True for longitudes in [west, east] going east from west, edges included (within ``tol`` degrees): west > east
    crosses the antimeridian, and a span of 360° or more takes them all."""
    span = lon_span(west, east)
    if span >= 360.0:
        return np.ones(np.shape(lon), dtype=bool)
    past_west = (np.asarray(lon, dtype=np.float64) - west) % 360.0  # degrees east of the west edge, in [0, 360)
    return (past_west <= span + tol) | (past_west >= 360.0 - tol)


def box_mean_sst(name: str, box: tuple[float, float, float, float], *, path: str | None = None,
                 data: bytes | None = None, file: BinaryIO | None = None) -> dict[str, Any]:
    west, south, east, north = box
    with GranuleReader(name, path=path, data=data, file=file, with_mask=True) as reader:
        granule = reader.granule
        rows = in_lat_range(granule.lat, south, north, edge_tolerance(granule.lat))
        cols = in_lon_range(granule.lon, west, east, edge_tolerance(granule.lon))

        def use(tile: Tile) -> np.ndarray:
            assert tile.mask is not None
            return open_water(tile.mask, granule.mask_flags, name) & cols[tile.cols][None, :]

        # the box's rows alone: rows of tiles without one are not read
        stats = cos_lat_weighted_stats(reader, np.cos(np.deg2rad(granule.lat)), use, rows=rows)
    return rounded_row(granule, stats, method="box")


class SstBoxMean(SstGlobalMean):
    name = "sst-box-mean"
    description = ("cos(latitude)-weighted mean SST (°C, open water) over a lat/lon box, edges included, per GHRSST L4 "
                   "granule → CSV time series")
    Params = Params
    series_name = "box_mean_sst"

    def slug(self, params: BaseModel) -> str:
        return "box" + "_".join(f"{v:g}" for v in params.box)  # type: ignore[attr-defined]

    def process(self, item: Item, params: BaseModel, access: GranuleAccess, run: RunContext) -> dict[str, Any]:
        (granule,) = item.granules
        name = granule.url.rsplit("/", 1)[-1]
        with access.open(granule.url) as f:  # from S3 by ranges: a MUR 0.01° granule is 400 MB
            return box_mean_sst(name, params.box, file=f)  # type: ignore[attr-defined]

    def title(self, params: BaseModel) -> str:
        west, south, east, north = params.box  # type: ignore[attr-defined]
        return f"Mean SST over {south:g}..{north:g}°N, {west:g}..{east:g}°E (open water)"

    def cells(self, params: BaseModel) -> str:
        return "cell of open water"

    def where(self, params: BaseModel) -> str:
        west, south, east, north = params.box  # type: ignore[attr-defined]
        return f" in the box [{west:g}, {south:g}, {east:g}, {north:g}]"

    def why_empty(self, params: BaseModel) -> str:
        return ": is the box on land, or under sea ice then?"


recipe = SstBoxMean()
