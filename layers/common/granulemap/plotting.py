"""``granulemap plot RESULT``: redraw the picture of a CSV time series or a Zarr cell store."""

from __future__ import annotations

from pathlib import Path

from granulemap.errors import InvalidInput

_CSV_UNITS = {"mean_sst_c": "mean SST (°C)", "min_sst_c": "min SST (°C)", "max_sst_c": "max SST (°C)",
              "n_valid": "cells used"}


def plot_result(result: Path, column: str | None = None, out: Path | None = None) -> Path:
    """Write a PNG for ``result`` (default: next to it, same name with .png) and return its path."""
    if not result.exists():
        raise InvalidInput(f"{result} does not exist")
    if result.suffix == ".csv":
        from granulemap.recipes.timeseries import csv_to_rows, plot_time_series

        rows = csv_to_rows(result.read_bytes())
        column = column or "mean_sst_c"
        if rows and column not in rows[0]:
            raise InvalidInput(f"{result} has no column {column!r}; columns: {', '.join(rows[0])}")
        png = plot_time_series(rows, column, title=result.stem.replace("_", " "),
                               ylabel=_CSV_UNITS.get(column, column))
    elif result.suffix == ".zarr" or (result / "zarr.json").exists():
        import numpy as np
        import xarray as xr

        from granulemap.recipes.atl06.plot import plot_cells

        column = column or "h_mean"
        ds = xr.open_zarr(result)
        if column not in ds:
            raise InvalidInput(f"{result} has no variable {column!r}; variables: {', '.join(ds.data_vars)}")
        values = ds[column].values
        keep = np.isfinite(values)
        units = ds[column].attrs.get("units", "")
        png = plot_cells(ds["cell_ids"].values[keep], int(ds["cell_ids"].attrs["level"]), values[keep],
                         title=f"{column} per HEALPix cell (level {ds['cell_ids'].attrs['level']})",
                         label=f"{column} ({units})" if units else column)
    else:
        raise InvalidInput(f"{result}: expected a .csv time series or a .zarr store")
    target = out or result.with_suffix(".png")
    target.write_bytes(png)
    return target
