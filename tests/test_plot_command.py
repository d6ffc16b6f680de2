"""``granulemap plot`` of a run's CSV time series: it redraws what the run drew (same title and y label, which the run's
picture records) and draws another column beside the product's picture, never over it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from granulemap.cli import main
from granulemap.recipes import timeseries

import test_tutorial
from conftest import ROOT

installed_tutorial = test_tutorial.installed_tutorial  # the fixture that installs the README's recipe

GHRSST = ROOT / "tests" / "data" / "ghrsst"
HEADER = "time,granule,mean_sst_c,n_valid,min_sst_c,max_sst_c\n"
ROWS = "2018-12-01T09:00:00Z,a.nc,19.3,10,1,2\n2018-12-02T09:00:00Z,b.nc,19.4,12,1,2\n"


@pytest.fixture
def drawn(monkeypatch) -> list[tuple[str, str, str]]:
    """(column, title, ylabel) of every time series drawn from here on (still drawn, by the real function)."""
    calls: list[tuple[str, str, str]] = []
    real = timeseries.plot_time_series

    def spy(rows, value_column, title, ylabel):  # type: ignore[no-untyped-def]
        calls.append((value_column, title, ylabel))
        return real(rows, value_column, title, ylabel)

    monkeypatch.setattr(timeseries, "plot_time_series", spy)
    return calls


def _plot(capsys, *args: str) -> Path:
    assert main(["plot", *args]) == 0, capsys.readouterr().err
    return Path(capsys.readouterr().out.strip())


def _run(capsys, out: Path, *args: str) -> None:
    code = main(["run", "--start", "2018-12-01", "--end", "2018-12-31", "--source", str(GHRSST),
                 "--out", str(out), "--quiet", *args])
    assert code == 0, capsys.readouterr()
    capsys.readouterr()


def _redraws_what_the_run_drew(capsys, drawn, out: Path, csv_name: str, other_column: str | None) -> None:
    """The run's picture, kept aside, equals byte for byte the redraw of its CSV (its title and y label included);
    another column's picture is written beside it, titled with the run's title and its own label, and leaves the
    product's picture alone."""
    csv, product = out / csv_name, out / csv_name.replace(".csv", ".png")
    by_run = product.read_bytes()
    assert _plot(capsys, str(csv), "--out", str(out / "redraw.png")).read_bytes() == by_run
    assert _plot(capsys, str(csv)) == product and product.read_bytes() == by_run
    if other_column is None:
        return
    png = _plot(capsys, str(csv), "--column", other_column)
    assert png == out / f"{csv.stem}-{other_column}.png" and png.read_bytes().startswith(b"\x89PNG")
    assert product.read_bytes() == by_run
    (column, title, _), (other, other_title, other_label) = drawn[0], drawn[-1]
    assert (other, other_title) == (other_column, f"{title}: {other_label}") and other_label != drawn[0][2]
    assert column != other_column


def test_another_column_is_drawn_beside_the_products_picture(tmp_path: Path, capsys) -> None:
    csv = tmp_path / "global_mean_sst.csv"
    csv.write_text(HEADER + ROWS)
    product = tmp_path / "global_mean_sst.png"
    product.write_bytes(b"the run's picture")
    png = _plot(capsys, str(csv), "--column", "n_valid")
    assert png == tmp_path / "global_mean_sst-n_valid.png" and png.read_bytes().startswith(b"\x89PNG")
    assert product.read_bytes() == b"the run's picture"
    assert _plot(capsys, str(csv), "--column", "mean_sst_c") == product  # the product's own column: its own name
    assert _plot(capsys, str(csv), "--column", "n_valid", "--out", str(tmp_path / "n.png")) == tmp_path / "n.png"


def test_a_csv_without_its_runs_picture_is_titled_after_its_file(tmp_path: Path, capsys, drawn) -> None:
    csv = tmp_path / "global_mean_sst.csv"
    csv.write_text(HEADER + ROWS)
    _plot(capsys, str(csv))
    assert drawn == [("mean_sst_c", "global mean sst", "mean SST (°C)")]


@pytest.mark.parametrize("picture", [b"not a picture", "a PNG without granulemap's text chunks"])
def test_a_picture_that_cannot_tell_falls_back_to_the_file_name(tmp_path: Path, capsys, drawn, picture) -> None:
    csv = tmp_path / "global_mean_sst.csv"
    csv.write_text(HEADER + ROWS)
    if isinstance(picture, str):
        import matplotlib.pyplot as plt

        fig = plt.figure()
        fig.savefig(tmp_path / "global_mean_sst.png", format="png", metadata={"Title": picture})
        plt.close(fig)
    else:
        (tmp_path / "global_mean_sst.png").write_bytes(picture)
    _plot(capsys, str(csv))
    assert drawn == [("mean_sst_c", "global mean sst", "mean SST (°C)")]


@pytest.mark.slow
def test_redraw_of_a_global_mean_run_is_the_runs_picture(tmp_path: Path, capsys, drawn) -> None:
    out = tmp_path / "sst-podaac"
    _run(capsys, out, "--recipe", "sst-global-mean", "--method", "podaac-tutorial")
    _redraws_what_the_run_drew(capsys, drawn, out, "global_mean_sst.csv", "n_valid")


@pytest.mark.slow
def test_redraw_of_a_box_mean_run_is_the_runs_picture(tmp_path: Path, capsys, drawn) -> None:
    out = tmp_path / "box"
    _run(capsys, out, "--recipe", "sst-box-mean", "--param", "box=[-170,-5,-120,5]")
    _redraws_what_the_run_drew(capsys, drawn, out, "box_mean_sst.csv", "n_valid")


@pytest.mark.slow
def test_redraw_of_a_results_download_moved_elsewhere_is_the_runs_picture(tmp_path: Path, capsys, drawn) -> None:
    """The CSV and its picture, copied elsewhere together (the run's summary.json left behind)."""
    _run(capsys, tmp_path / "box", "--recipe", "sst-box-mean", "--param", "box=[170,-10,-170,10]")
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("box_mean_sst.csv", "box_mean_sst.png"):
        shutil.copy(tmp_path / "box" / name, moved / name)
    _redraws_what_the_run_drew(capsys, drawn, moved, "box_mean_sst.csv", None)


@pytest.mark.slow
@pytest.mark.usefixtures("installed_tutorial")
def test_redraw_of_the_tutorial_recipes_run_is_the_runs_picture(tmp_path: Path, capsys, drawn) -> None:
    out = tmp_path / "warm"
    _run(capsys, out, "--recipe", "sst-warm-fraction", "--param", "threshold_c=25")
    _redraws_what_the_run_drew(capsys, drawn, out, "warm_fraction.csv", None)
    assert {column for column, _, _ in drawn} == {"warm_fraction"}


_KEEPS_THE_CALLERS_MATPLOTLIB = r"""
import io, json, sys
import numpy as np
import matplotlib
matplotlib.use("pdf")  # a caller's own backend (a notebook's inline one, say)
import matplotlib.pyplot as plt
from PIL import Image
from granulemap.recipes.atl06.plot import plot_cells
from granulemap.recipes.timeseries import csv_to_rows, plot_time_series

mine = plt.figure()
series = plot_time_series(csv_to_rows(sys.argv[1].encode()), "mean_sst_c", "a title", "mean SST (°C)")
cells = plot_cells(np.array([4 * 4**6 * 12 + 5]), 6, np.array([1.5]), title="one cell", label="h_mean (m)")
print(json.dumps({"backend": matplotlib.get_backend(), "figures": plt.get_fignums(), "mine": mine.number,
                  "sizes": [Image.open(io.BytesIO(png)).size for png in (series, cells)]}))
"""


def test_drawing_a_picture_leaves_the_callers_matplotlib_as_it_was() -> None:
    """The pictures are drawn on figures of their own: a notebook that calls them keeps its backend and its figures
    (switching to Agg, as a plotting library may not, would stop its own plots from showing)."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _KEEPS_THE_CALLERS_MATPLOTLIB, HEADER + ROWS], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    seen = json.loads(out)
    assert seen["backend"] == "pdf"
    assert seen["figures"] == [seen["mine"]]  # nothing left open in pyplot's list, and the caller's figure kept
    width, height = seen["sizes"][0]
    assert 700 < width <= 900 and 300 < height <= 400  # 9 x 4 inches at 100 dpi, trimmed to what was drawn
    assert all(w > 200 and h > 200 for w, h in seen["sizes"])


def test_a_column_of_words_is_refused_naming_the_columns_that_are_numbers(tmp_path: Path, capsys) -> None:
    series = tmp_path / "daily.csv"
    series.write_text("time,granule,mean,computed_at\n2023-01-01T00:00:00Z,day-20230101,1.5,2023-02-01T00:00:00Z\n")
    assert main(["plot", str(series), "--column", "granule"]) == 2
    err = capsys.readouterr().err
    assert "column 'granule' is not numbers (it holds 'day-20230101'); columns that are: mean" in err
    assert not series.with_name("daily_granule.png").exists() and "Traceback" not in err


def test_out_may_be_a_folder_or_a_png_in_a_folder_not_yet_made(tmp_path: Path, capsys) -> None:
    """`--out figures` put the picture's bytes at a folder's name (IsADirectoryError), and `--out new/x.png` failed
    for the missing folder (FileNotFoundError): tracebacks for what a user means plainly."""
    csv = tmp_path / "run" / "global_mean_sst.csv"
    csv.parent.mkdir()
    csv.write_text(HEADER + ROWS)
    figures = tmp_path / "figures"
    figures.mkdir()
    assert _plot(capsys, str(csv), "--out", str(figures)) == figures / "global_mean_sst.png"
    other = _plot(capsys, str(csv), "--column", "n_valid", "--out", str(figures))
    assert other == figures / "global_mean_sst-n_valid.png"
    deep = tmp_path / "new folder" / "deeper" / "sst.png"
    assert _plot(capsys, str(csv), "--out", str(deep)) == deep
    new = tmp_path / "new figures"  # `--out "new figures/"`: a folder not made yet (a name without a suffix)
    assert _plot(capsys, str(csv), "--out", f"{new}/") == new / "global_mean_sst.png"
    for png in (figures / "global_mean_sst.png", figures / "global_mean_sst-n_valid.png", deep,
                new / "global_mean_sst.png"):
        assert png.read_bytes().startswith(b"\x89PNG"), png
    assert not (csv.parent / "global_mean_sst.png").exists()  # nothing drawn beside the CSV


@pytest.mark.parametrize("text, says", [
    ("time,granule,mean_sst_c\n", "has no rows: nothing to draw"),
    ("day,granule,mean_sst_c\n2018-12-01,a.nc,19.3\n", "has no column 'time' (columns: day, granule, mean_sst_c)"),
    (HEADER + ROWS + "notatime,c.nc,19.5,11,1,2\n", "line 4: time 'notatime' is not an ISO 8601 time"),
])
def test_a_csv_that_is_no_time_series_is_refused_in_one_line(tmp_path: Path, capsys, text, says) -> None:
    """A CSV without rows drew an empty chart (exit 0); one without a time column, or with a time that is not one,
    ended in a traceback (KeyError, ValueError)."""
    csv = tmp_path / "series.csv"
    csv.write_text(text)
    assert main(["plot", str(csv)]) == 2
    err = capsys.readouterr().err
    assert says in err and str(csv) in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series.csv"]  # nothing written


def test_a_csv_saved_by_a_spreadsheet_with_a_byte_order_mark_is_drawn(tmp_path: Path, capsys) -> None:
    csv = tmp_path / "series.csv"
    csv.write_bytes(b"\xef\xbb\xbf" + (HEADER + ROWS).encode())
    assert _plot(capsys, str(csv)).read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("make, says", [
    (lambda p: p.mkdir(), "cannot be read: Is a directory"),
    (lambda p: p.write_bytes(b"time,granule,v\n2018-12-01T09:00:00Z,caf\xe9.nc,1\n"), "is not UTF-8 text"),
])
def test_a_csv_that_cannot_be_read_as_text_is_refused_in_one_line(tmp_path: Path, capsys, make, says) -> None:
    csv = tmp_path / "series.csv"
    make(csv)
    assert main(["plot", str(csv)]) == 2
    err = capsys.readouterr().err
    assert f"{csv} {says}" in err and "Traceback" not in err


def test_a_folder_named_zarr_that_is_no_store_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    store = tmp_path / "cells.zarr"
    store.mkdir()
    assert main(["plot", str(store)]) == 2
    err = capsys.readouterr().err
    assert f"{store} is not a Zarr store xarray can open" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.zarr"]


def test_a_recipe_s_own_zarr_store_without_healpix_cells_is_named_as_such(tmp_path: Path, capsys) -> None:
    """A user recipe's store (weeks × boxes, say): plot said it had "no variable 'h_mean' per cell; variables: " with
    nothing listed."""
    import numpy as np
    import xarray as xr

    store = tmp_path / "weekly.zarr"
    xr.Dataset({"warm_fraction": (("week",), np.array([0.1, 0.2]))}).to_zarr(store, zarr_format=3, consolidated=False)
    assert main(["plot", str(store), "--column", "warm_fraction"]) == 2
    err = capsys.readouterr().err
    assert f"{store} is not a store of HEALPix cells" in err and "(variables: warm_fraction)" in err
    assert "Traceback" not in err and sorted(p.name for p in tmp_path.iterdir()) == ["weekly.zarr"]


def test_a_picture_that_cannot_be_written_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    """Where the picture cannot go (a read-only place; here /proc, where not even root makes a file)."""
    csv = tmp_path / "global_mean_sst.csv"
    csv.write_text(HEADER + ROWS)
    assert main(["plot", str(csv), "--out", "/proc/granulemap-test.png"]) == 2
    err = capsys.readouterr().err
    assert "cannot write the picture /proc/granulemap-test.png: " in err and "(give another --out)" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("args, says", [
    (["--out", "x.jpg"], "the picture is a PNG; give a file name ending .png, or a folder"),
    (["--time", "2018-12-01"], "--time picks a period of a Zarr store"),
])
def test_an_out_that_is_no_png_and_a_time_for_a_csv_are_refused(tmp_path: Path, capsys, args, says) -> None:
    csv = tmp_path / "global_mean_sst.csv"
    csv.write_text(HEADER + ROWS)
    args = [str(tmp_path / a) if a == "x.jpg" else a for a in args]
    assert main(["plot", str(csv), *args]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["global_mean_sst.csv"]  # nothing written


def test_a_store_with_a_chunk_cut_short_is_refused_naming_the_variable_and_period(tmp_path: Path, capsys) -> None:
    """A chunk that does not decode (a copy cut short) ended `granulemap plot` in zarr's codec traceback."""
    import datetime as dt

    import numpy as np
    from zarr.storage import LocalStore

    from granulemap.recipes.atl06.stats import cell_statistics
    from granulemap.recipes.atl06.store import grow, write_parent

    path, parent, children = tmp_path / "cells.zarr", 44325, 4 ** (12 - 6)
    store = LocalStore(str(path))
    march = (dt.date(2019, 3, 1), dt.date(2019, 3, 31))
    made = grow(store, 6, 12, [parent], march)
    first = parent * children
    write_parent(store, made.store_id, parent, march,
                 cell_statistics(np.array([first, first + 1]), np.array([1.0, 2.0]), np.array([1.0, 1.0])))
    assert main(["plot", str(path), "--out", str(tmp_path / "whole.png")]) == 0  # drawn while whole
    chunk = path / "h_mean" / "c" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:len(chunk.read_bytes()) // 2])
    capsys.readouterr()
    assert main(["plot", str(path), "--out", str(tmp_path / "damaged.png")]) == 2
    err = capsys.readouterr().err
    assert f"{path} is damaged: its h_mean, 2019-03-01..2019-03-31 cannot be read" in err and "Traceback" not in err
    assert not (tmp_path / "damaged.png").exists()
