"""A PNG map of one statistic of the store: cells with data drawn on a longitude/latitude raster."""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from granulemap.recipes.atl06.cells import cell_centres

MAX_PIXELS = 400
"""Longest side of the raster: finer cells over a larger area are averaged into pixels. It stays below the map's size
in the PNG (its longer side is 520 pixels: MAP_INCHES at 100 dpi): drawn with nearest interpolation, a raster finer
than the screen loses whole rows and columns, and with them the cells of a lone track."""

MAP_INCHES = 5.2
"""The longer side of the map itself; the figure is sized around it to the map's shape, so that the colour bar is as
tall as the map and a wide map is not a strip in a square figure."""


class _Centres:
    """The centres and values of the cells to draw, kept a batch at a time in 12 bytes a cell: float32 offsets from
    the first cell's centre (float32 degrees near ±180° are 1.5e-5° apart, a good part of a pixel at fine orders; an
    offset within the map is precise to a small part of one) and float32 values, with a histogram of the latitudes
    (0.001° bins) for their median."""

    MEDIAN_BINS = 180_000

    def __init__(self) -> None:
        self.lat: list[np.ndarray] = []
        self.lon: list[np.ndarray] = []
        self.values: list[np.ndarray] = []
        self.origin = (0.0, 0.0)
        self.latitudes = np.zeros(self.MEDIAN_BINS, dtype=np.int64)
        self.size = 0
        self.offsets = (math.inf, -math.inf, math.inf, -math.inf)
        """The least and greatest latitude and longitude offsets, as batches are added."""

    def add(self, lat: np.ndarray, lon: np.ndarray, values: np.ndarray) -> None:
        if not self.size:
            self.origin = (float(lat[0]), float(lon[0]))
        self.lat.append((lat - self.origin[0]).astype(np.float32))
        # east or west of the first cell, whichever is nearer: a track across the antimeridian stays one piece
        self.lon.append(((lon - self.origin[1] + 180.0) % 360.0 - 180.0).astype(np.float32))
        self.values.append(values.astype(np.float32))
        south, north, west, east = self.offsets
        self.offsets = (min(south, float(self.lat[-1].min())), max(north, float(self.lat[-1].max())),
                        min(west, float(self.lon[-1].min())), max(east, float(self.lon[-1].max())))
        bins = np.clip(((lat + 90.0) / 180.0 * self.MEDIAN_BINS).astype(np.int64), 0, self.MEDIAN_BINS - 1)
        self.latitudes += np.bincount(bins, minlength=self.MEDIAN_BINS)
        self.size += lat.size

    def median_lat(self) -> float:
        """The median latitude, to the histogram's bin (the centre of the bin that holds the middle cell)."""
        middle = int(np.searchsorted(np.cumsum(self.latitudes), (self.size + 1) / 2))
        return -90.0 + (middle + 0.5) * 180.0 / self.MEDIAN_BINS

    def _wide(self) -> bool:
        """The cells span more than half the globe's longitudes: the map is drawn from -180° to 180°. Otherwise its
        longitudes are the first cell's and the others' offsets from it, which go beyond ±180° for cells across the
        antimeridian (``lon_label`` labels them)."""
        return self.offsets[3] - self.offsets[2] > 180.0

    def bounds(self) -> tuple[float, float, float, float]:
        """South, north, west, east of the centres."""
        lat0, lon0 = self.origin
        south, north, west, east = self.offsets
        if self._wide():  # a batch at a time: all of them at once in float64 would cost 8 bytes a cell more
            west, east = math.inf, -math.inf
            for _, lon, _ in self.parts():
                west, east = min(west, float(lon.min())), max(east, float(lon.max()))
            return lat0 + south, lat0 + north, west, east
        return lat0 + south, lat0 + north, lon0 + west, lon0 + east

    def parts(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(latitude, longitude, value) of each batch, in float64."""
        lat0, lon0 = self.origin
        wide = self._wide()
        for lat, lon, values in zip(self.lat, self.lon, self.values, strict=True):
            east = lon0 + lon.astype(np.float64)
            yield lat0 + lat.astype(np.float64), (east + 180.0) % 360.0 - 180.0 if wide else east, values.astype(
                np.float64)


def lon_label(x: float, decimals: int) -> str:
    """A map longitude as a label in -180..180 (a map across the antimeridian goes beyond ±180°)."""
    wrapped = (x + 180.0) % 360.0 - 180.0
    return f"{180.0 if wrapped == -180.0 and x > 0 else wrapped:.{decimals}f}"


def label_decimals(ticks: np.ndarray) -> int:
    """The fewest decimals that write every tick exactly (to 1e-9°), at most 9: ticks 0.0008° apart need 4."""
    for decimals in range(10):
        scaled = np.asarray(ticks, dtype=np.float64) * 10.0**decimals
        if np.allclose(scaled, np.round(scaled), rtol=0.0, atol=1e-9 * 10.0**decimals):
            return decimals
    return 9


def _raster(centres: _Centres, cell_deg: float, shrink: float) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Mean of the cells' values per pixel of a lon/lat grid (NaN where no cell), and its extent [W, E, S, N] in
    degrees; binned a batch at a time.

    Pixels are about 1.4 cells wide (longitude steps widened by 1/cos(latitude)), coarser when the area is large.
    HEALPix cells' centres do not follow a longitude/latitude grid: pixels one cell wide caught no centre in many
    places, and a block of cells with data showed as a checkerboard of false gaps.
    """
    low_lat, high_lat, low_lon, high_lon = centres.bounds()
    south, north = low_lat - cell_deg, high_lat + cell_deg
    west, east = low_lon - cell_deg / shrink, high_lon + cell_deg / shrink
    step = max(math.sqrt(2) * cell_deg, (north - south) / MAX_PIXELS, (east - west) * shrink / MAX_PIXELS)
    ny, nx = max(1, math.ceil((north - south) / step)), max(1, math.ceil((east - west) * shrink / step))
    total = np.zeros(nx * ny)
    count = np.zeros(nx * ny, dtype=np.int64)
    for lat, lon, values in centres.parts():
        row = np.clip(((lat - south) / (north - south) * ny).astype(int), 0, ny - 1)
        col = np.clip(((lon - west) / (east - west) * nx).astype(int), 0, nx - 1)
        pixel = row * nx + col
        total += np.bincount(pixel, weights=values, minlength=nx * ny)
        count += np.bincount(pixel, minlength=nx * ny)
    with np.errstate(invalid="ignore", divide="ignore"):
        grid = np.where(count > 0, total / count, np.nan).reshape(ny, nx)
    return grid, (west, east, south, north)


def plot_cells(cells: np.ndarray, order: int, values: np.ndarray, *, title: str, label: str) -> bytes:
    """PNG bytes: ``values`` of HEALPix nested ``cells`` at ``order`` on a WGS84 longitude/latitude map, with a
    labelled colour bar. Cells whose value is not finite are left out."""
    return plot_cell_batches([(cells, values)], order, title=lambda _: title, label=label)


def plot_cell_batches(batches: Iterable[tuple[np.ndarray, np.ndarray]], order: int, *, title: Callable[[int], str],
                      label: str) -> bytes:
    """``plot_cells`` of (cells, values) that come a batch at a time (``store.read_period_batches``): only each cell's
    centre and value are kept, in 12 bytes (``_Centres``), so that a global month's tens of millions of cells fit the
    Aggregator. ``title`` is given the number of cells drawn. Drawn on a Figure of its own, not through pyplot (see
    ``timeseries.plot_time_series``)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    centres = _Centres()
    for cells, values in batches:
        values = np.asarray(values, dtype=np.float64)
        keep = np.isfinite(values)
        if keep.any():
            lat, lon = cell_centres(np.asarray(cells)[keep], order)
            centres.add(lat, lon, values[keep])
    drawn = centres.size
    fig = Figure(dpi=100)
    ax = fig.subplots()
    if drawn:
        cell_deg = math.degrees(math.sqrt(4 * math.pi / (12 * 4**order)))  # side of an equal-area cell
        shrink = max(math.cos(math.radians(centres.median_lat())), 0.05)
        grid, extent = _raster(centres, cell_deg, shrink)
        image = ax.imshow(grid, origin="lower", extent=extent, aspect=1.0 / shrink, cmap="viridis",
                          interpolation="nearest")
        west, east, south, north = extent
        narrowest = 0.5 * (north - south) / shrink  # a track's cells: a map at least half as wide as it is tall
        if east - west < narrowest:
            pad = (narrowest - (east - west)) / 2
            west, east = west - pad, east + pad
            ax.set_xlim(west, east)
        tall = (north - south) / ((east - west) * shrink)  # the map's height over its width, on the page
        width, height = (MAP_INCHES, MAP_INCHES * tall) if tall < 1 else (MAP_INCHES / tall, MAP_INCHES)
        # Room for the axis labels, the colour bar and the title (bbox_inches="tight" trims what is left over).
        fig.set_size_inches(max(width, 2.0) + 2.4, max(height, 1.5) + 1.6)
        fig.subplots_adjust(left=1.1 / fig.get_figwidth(), right=1 - 1.3 / fig.get_figwidth(),
                            bottom=0.9 / fig.get_figheight(), top=1 - 0.7 / fig.get_figheight())
        # In the map's own coordinates: as tall as the map, whatever its shape.
        fig.colorbar(image, cax=ax.inset_axes([1.03, 0.0, 0.15 / max(width, 2.0), 1.0]), label=label)
    else:
        fig.set_size_inches(8, 6)
        ax.text(0.5, 0.5, "no cells with data", ha="center", va="center", transform=ax.transAxes)
    ax.xaxis.set_major_locator(MaxNLocator(4))
    west, east = ax.get_xlim()
    if west < -180.0 or east > 180.0:  # across the antimeridian: labels within ±180°, as precise as the ticks
        decimals = label_decimals(ax.xaxis.get_major_locator().tick_values(west, east))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: lon_label(x, decimals)))
    ax.tick_params(axis="x", labelrotation=30)
    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    ax.set_title(title(drawn), wrap=True)
    ax.grid(True, alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()
