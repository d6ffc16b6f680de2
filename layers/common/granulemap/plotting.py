"""``granulemap plot RESULT``: redraw the picture of a CSV time series or a Zarr cell store."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from granulemap.errors import InvalidInput

if TYPE_CHECKING:
    import xarray as xr

_CSV_UNITS = {"mean_sst_c": "mean SST (°C)", "min_sst_c": "min SST (°C)", "max_sst_c": "max SST (°C)",
              "n_valid": "cells used"}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def plot_result(result: Path, column: str | None = None, out: Path | None = None,
                when: dt.date | None = None) -> Path:
    """Write a PNG for ``result`` and return its path (default: next to it, named as a run names its picture: the
    CSV's name with .png, or for a column other than the one its run draws, ``column_png_name``; a Zarr store's name
    with the variable and period).

    A CSV beside its run's picture is drawn with the title and y label that run drew it with (``drawn_by_run``), its
    column by default (another column: the run's title followed by that column's label); else with a title from the
    file name.

    For a Zarr store with a time dimension, ``when`` picks the period that contains that day (default: the latest).
    ``out``: a .png file (its folder made if missing), or a folder to write the picture into under its default name.
    """
    if not result.exists():
        raise InvalidInput(f"{result} does not exist")
    # A folder: one that exists, or a name without a suffix (made): the picture goes in it, named as by default.
    folder = out if out is not None and (out.is_dir() or not out.suffix) else None
    if folder is not None:
        out = None
    elif out is not None and out.suffix.lower() != ".png":
        raise InvalidInput(f"--out {out}: the picture is a PNG; give a file name ending .png, or a folder")
    if result.suffix == ".csv":
        if when is not None:
            raise InvalidInput(f"--time picks a period of a Zarr store; {result} is a time series (every time is "
                               "drawn)")
        from granulemap.recipes.timeseries import csv_to_rows, plot_time_series

        try:
            rows = csv_to_rows(result.read_bytes(), str(result))
        except OSError as exc:  # a folder named *.csv, no permission
            raise InvalidInput(f"{result} cannot be read: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{result} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        _refuse_rows_without_times(result, rows)
        drawn = drawn_by_run(result.with_suffix(".png"))
        default = drawn.column if drawn is not None else _value_column(rows)
        column = column or default
        if rows and column not in rows[0]:
            raise InvalidInput(f"{result} has no column {column!r}; columns: {', '.join(rows[0])}")
        words = [row[column] for row in rows if row.get(column) and not _is_number(row[column])]
        if words:
            numeric = [c for c in rows[0] if all(not row.get(c) or _is_number(row[c]) for row in rows)]
            raise InvalidInput(f"{result}: column {column!r} is not numbers (it holds {words[0]!r}); columns that are: "
                               f"{', '.join(numeric) or 'none'}")
        ylabel = drawn.ylabel if drawn is not None and column == default else _CSV_UNITS.get(column, column)
        title = drawn.title if drawn is not None else result.stem.replace("_", " ")
        if drawn is not None and column != default:  # the run's subject, and which of its columns this is
            title = f"{title}: {ylabel}"
        png = plot_time_series(rows, column, title=title, ylabel=ylabel)
        if out is None and column != default:  # another column's picture beside the product's, not over it
            out = result.with_name(column_png_name(result.stem, column))
    elif result.suffix == ".zarr" or (result / "zarr.json").exists():
        import numpy as np
        import xarray as xr

        from granulemap.recipes.atl06.plot import plot_cells

        column = column or "h_mean"
        try:
            ds = xr.open_zarr(result)
        except Exception as exc:  # noqa: BLE001 - zarr and xarray raise many kinds for a folder that is no store
            raise InvalidInput(f"{result} is not a Zarr store xarray can open ({type(exc).__name__}: {exc}): give "
                               "the .zarr folder a run wrote") from None
        per_cell = [name for name in ds.data_vars if "cells" in ds[name].dims]  # not time_bounds
        if "cell_ids" not in ds.coords or not per_cell:  # a recipe's own store: plot draws HEALPix cell stores only
            raise InvalidInput(f"{result} is not a store of HEALPix cells (a 'cells' dimension with 'cell_ids', as "
                               "atl06-cell-stats writes): granulemap plot draws those and CSV time series only; draw "
                               f"this one with xarray (variables: {', '.join(map(str, ds.data_vars)) or 'none'})")
        if column not in per_cell:
            raise InvalidInput(f"{result} has no variable {column!r} per cell; variables: {', '.join(per_cell)}")
        ds, period = _one_period(ds, when)
        if out is None and period is not None:  # one picture per variable and period, named as the run's own
            out = result.with_name(period_png_name(result.stem, column, *period))
        values = _read(result, ds, column, period)
        keep = np.isfinite(values)
        if "count" in per_cell:  # a cell no segment fell in has count 0 (its fill), not a value to draw
            keep &= _read(result, ds, "count", period) > 0
        units = ds[column].attrs.get("units", "")
        png = plot_cells(_read(result, ds, "cell_ids", period)[keep], int(ds["cell_ids"].attrs["level"]), values[keep],
                         title=f"{column} per HEALPix cell (level {ds['cell_ids'].attrs['level']})"
                               f"{_period_title(period)}",
                         label=f"{column} ({units})" if units else column)
    else:
        raise InvalidInput(f"{result}: expected a .csv time series or a .zarr store")
    target = out or result.with_suffix(".png")
    if folder is not None:
        target = folder / target.name
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(png)
    except OSError as exc:
        raise InvalidInput(f"cannot write the picture {target}: {exc.strerror or exc} (give another --out)") from None
    return target


def _refuse_rows_without_times(result: Path, rows: list[dict[str, str]]) -> None:
    """A CSV that is no time series: without rows, without a time column, or with a time that is not ISO 8601."""
    from granulemap.models import iso_time

    if not rows:
        raise InvalidInput(f"{result} has no rows: nothing to draw")
    if "time" not in rows[0]:
        raise InvalidInput(f"{result} has no column 'time' (columns: {', '.join(map(str, rows[0]))}): expected a time "
                           "series a run wrote")
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            iso_time(str(row["time"]))
        except ValueError:
            raise InvalidInput(f"{result}, line {number}: time {row['time']!r} is not an ISO 8601 time "
                               "(YYYY-MM-DDTHH:MM:SSZ)") from None


def column_png_name(series: str, column: str) -> str:
    """The picture of a CSV time series' column other than the one its run draws (that one keeps the run's name)."""
    return f"{series}-{column}.png"


@dataclass(frozen=True)
class DrawnSeries:
    """What a run drew of a CSV time series: the column and the title and y label it drew it with."""

    column: str
    title: str
    ylabel: str


def drawn_by_run(picture: Path) -> DrawnSeries | None:
    """What the run's picture of a CSV says it drew (``timeseries.plot_time_series`` records it in the PNG's text
    chunks); None without that picture, or for one drawn without them (before granulemap recorded them)."""
    from PIL import Image, UnidentifiedImageError

    from granulemap.recipes.timeseries import PNG_COLUMN_KEY, PNG_YLABEL_KEY

    try:
        with Image.open(picture) as image:
            text = dict(getattr(image, "text", {}))
    except (OSError, UnidentifiedImageError):
        return None
    if not all(key in text for key in ("Title", PNG_COLUMN_KEY, PNG_YLABEL_KEY)):
        return None
    return DrawnSeries(text[PNG_COLUMN_KEY], text["Title"], text[PNG_YLABEL_KEY])


def _value_column(rows: list[dict[str, str]]) -> str:
    """A CSV's value column when no run tells it: the SST recipes' mean_sst_c, else the first after time and
    granule."""
    values = [c for c in rows[0] if c not in ("time", "granule")] if rows else []
    return "mean_sst_c" if not values or "mean_sst_c" in values else values[0]


def period_png_name(store: str, variable: str, first: dt.date, last: dt.date) -> str:
    """The picture of one variable of a store over one period (a run draws it; ``granulemap plot`` redraws it)."""
    return f"{store}-{variable}-{first:%Y%m%d}-{last:%Y%m%d}.png"


def select_period(ds: xr.Dataset, when: dt.date | None) -> tuple[xr.Dataset, str]:
    """The one period of a store with a ``time`` dimension (and its title suffix): the one whose time bounds
    [first day, day after the last day) contain ``when`` (of overlapping ones, the one that starts last), or the latest
    (of the periods that end last, the longest). A store without ``time`` is returned as is.
    """
    ds, period = _one_period(ds, when)
    return ds, _period_title(period)


def _read(result: Path, ds: xr.Dataset, name: str, period: tuple[dt.date, dt.date] | None) -> Any:
    """The values of ``ds[name]``; InvalidInput naming the store, the variable and the period when a chunk of them
    does not decode (cut short, edited: zarr's codec error, a traceback before)."""
    try:
        return ds[name].values
    except (ValueError, RuntimeError) as exc:
        raise InvalidInput(f"{result} is damaged: its {name}{_period_title(period)} cannot be read "
                           f"({type(exc).__name__}: {exc}), a chunk cut short or edited. A run of that period with "
                           "recompute (--recompute) writes its chunks anew") from None


def _period_title(period: tuple[dt.date, dt.date] | None) -> str:
    return f", {period[0]}..{period[1]}" if period is not None else ""


def _one_period(ds: xr.Dataset, when: dt.date | None) -> tuple[xr.Dataset, tuple[dt.date, dt.date] | None]:
    """``select_period``'s period, as (first day, last day); None for a store without ``time``."""
    import numpy as np

    if "time" not in ds.dims:
        return ds, None
    starts = ds["time"].values.astype("datetime64[D]")
    bounds = ds["time_bounds"].values.astype("datetime64[D]") if "time_bounds" in ds else np.c_[starts, starts + 1]
    if when is None:  # the latest: of the periods that end last, the longest (a month, not its last day run before it)
        t = int(np.lexsort((-starts.astype(np.int64), bounds[:, 1]))[-1])
    else:
        day = np.datetime64(when, "D")
        inside = np.flatnonzero((bounds[:, 0] <= day) & (day < bounds[:, 1]))
        if inside.size == 0:
            one_day = np.timedelta64(1, "D")
            held = ", ".join(f"{a}..{b - one_day}" for a, b in bounds[np.argsort(bounds[:, 0])])
            raise InvalidInput(f"--time {when}: no period of the store contains that day; it holds {held}")
        t = int(inside[np.argmax(starts[inside])])  # the latest starting of any overlapping periods
    first, after = bounds[t]
    return ds.isel(time=t), (first.astype(dt.date), (after - np.timedelta64(1, "D")).astype(dt.date))
