"""The granulemap command's local subcommands: process, recipes, plot."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest

from granulemap.cli import main

from conftest import ROOT, on_a_full_disk
from sst_reference import ocean_mean_reference, podaac_tutorial_reference


def test_process_prints_one_json_line_per_granule(capsys, mur25: Path, synthetic_month) -> None:
    assert main(["process", "--recipe", "sst-global-mean", str(mur25), str(synthetic_month[0])]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["granule"] for row in lines] == [mur25.name, synthetic_month[0].name]
    assert lines[0]["time"] == "2018-12-31T09:00:00Z"
    assert lines[1]["time"] == "2018-12-01T09:00:00Z"
    for row, path in zip(lines, [mur25, synthetic_month[0]], strict=True):
        assert row["mean_sst_c"] == pytest.approx(ocean_mean_reference(path)["mean_sst_c"], abs=1e-6)


def test_process_with_the_tutorial_method(capsys, mur25: Path) -> None:
    assert main(["process", "--recipe", "sst-global-mean", "--method", "podaac-tutorial", str(mur25)]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["mean_sst_c"] == pytest.approx(podaac_tutorial_reference(mur25), abs=1e-6)


def test_process_reports_unreadable_files_and_exits_non_zero(capsys, tmp_path: Path) -> None:
    bad = tmp_path / "20200101000000-broken.nc"
    bad.write_bytes(b"not netcdf")
    assert main(["process", "--recipe", "sst-global-mean", str(bad)]) == 1
    assert "GranuleUnreadable" in capsys.readouterr().err


def test_process_refuses_a_recipe_whose_items_are_not_single_granules(capsys) -> None:
    """atl06-cell-stats' items are parent cells from its catalog: process failed on every file (exit 1) instead of
    saying, once, that this recipe needs granulemap run (bad input: exit 2)."""
    atl06 = sorted((ROOT / "tests" / "data" / "atl06").glob("*.h5"))
    assert main(["process", "--recipe", "atl06-cell-stats", *map(str, atl06)]) == 2
    err = capsys.readouterr().err
    assert "granulemap run --source" in err and err.count("\n") == 1


def test_unknown_recipe_is_named(capsys, mur25: Path) -> None:
    assert main(["process", "--recipe", "sst-mean-typo", str(mur25)]) == 2
    err = capsys.readouterr().err
    assert "sst-mean-typo" in err and "sst-global-mean" in err


def test_recipes_lists_every_built_in_with_a_description(capsys) -> None:
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for name in ("sst-global-mean", "sst-box-mean", "atl06-cell-stats"):
        line = next(line for line in out.splitlines() if line.startswith(name))
        assert len(line.split(None, 1)[1]) > 20


def test_recipes_lists_each_recipe_s_parameters_with_their_defaults(capsys) -> None:
    """A newcomer learns here what --param takes: README's orders (6 and 12), the tutorial's box, the method."""
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()

    def params_of(name: str) -> str:
        return lines[lines.index(next(line for line in lines if line.startswith(name))) + 1].strip()

    assert params_of("atl06-cell-stats") == "params: parent_order=6, child_order=12"
    assert params_of("sst-box-mean") == "params: box=[-170.0, -5.0, -120.0, 5.0]"
    assert params_of("sst-global-mean") == 'params: method="ocean" (ocean | podaac-tutorial)'  # and the others


def test_a_required_parameter_is_listed_as_required() -> None:
    from typing import Literal

    from pydantic import BaseModel, Field

    from granulemap.cli import _param_and_default

    class Params(BaseModel):
        threshold_c: float
        depths: tuple[int, ...] = Field(default_factory=lambda: (5, 10))
        scheme: Literal["nested", "ring"]

    assert [_param_and_default(k, f) for k, f in Params.model_fields.items()] == [
        "threshold_c (required)", "depths=[5, 10]", "scheme (required) (nested | ring)"]


@pytest.mark.parametrize("command", ["run", "start"])
def test_cell_orders_are_options_of_run_and_start_and_may_not_disagree_with_param(command: str, capsys) -> None:
    """README shows --parent-order for run; start refused it. An option and a --param of one name silently took the
    option's value."""
    from granulemap.cli import build_parser, execution_input

    base = [command, "--recipe", "atl06-cell-stats", "--period", "2020-01"] + (
        ["--source", ".", "--out", "out"] if command == "run" else ["--stack", "s"])
    args = build_parser().parse_args([*base, "--parent-order", "7", "--child-order", "13"])
    assert execution_input(args)["params"] == {"parent_order": 7, "child_order": 13}
    for spelled in ("7", '"7"', "7.0"):  # what the recipe reads as 7 agrees
        same = build_parser().parse_args([*base, "--parent-order", "7", "--param", f"parent_order={spelled}"])
        assert execution_input(same)["params"] == {"parent_order": 7}
    assert main([*base, "--parent-order", "7", "--param", "parent_order=5"]) == 2
    assert "--parent-order 7 and --param parent_order=5 disagree: give one" in capsys.readouterr().err
    # the value read as its field types it, alone: 12 is a parent order only beside a child order above it
    fine = build_parser().parse_args([*base, "--parent-order", "12", "--child-order", "14", "--param",
                                      'parent_order="12"'])
    assert execution_input(fine)["params"] == {"parent_order": 12, "child_order": 14}
    assert main([*base, "--parent-order", "7", "--param", 'parent_order="five"']) == 2
    assert '--parent-order 7 and --param parent_order="five" disagree' in capsys.readouterr().err


def test_plot_redraws_a_csv(tmp_path: Path, capsys) -> None:
    csv = tmp_path / "series.csv"
    csv.write_text("time,granule,mean_sst_c,n_valid,min_sst_c,max_sst_c\n"
                   "2018-12-01T09:00:00Z,a.nc,19.3,10,1,2\n2018-12-02T09:00:00Z,b.nc,19.4,10,1,2\n")
    assert main(["plot", str(csv)]) == 0
    png = Path(capsys.readouterr().out.strip())
    assert png == tmp_path / "series.png" and png.read_bytes().startswith(b"\x89PNG")
    assert main(["plot", str(csv), "--column", "nope"]) == 2


def test_plot_redraws_a_zarr_cell_store(tmp_path: Path, capsys) -> None:
    import numpy as np
    import xarray as xr

    # Four order-12 children of one order-6 parent, two with data: a store shaped like atl06-cell-stats' output.
    cells = (np.int64(1234) << 12) + np.arange(4)
    ds = xr.Dataset(
        {"h_mean": ("cells", np.array([10.0, np.nan, 12.5, np.nan]), {"units": "m"})},
        coords={"cell_ids": ("cells", cells, {"grid_name": "healpix", "level": 12, "indexing_scheme": "nested",
                                              "ellipsoid": "WGS84"})},
    )
    store = tmp_path / "cells.zarr"
    ds.to_zarr(store, zarr_format=3, consolidated=False)
    assert main(["plot", str(store), "--out", str(tmp_path / "map.png")]) == 0
    assert (tmp_path / "map.png").read_bytes().startswith(b"\x89PNG")
    assert main(["plot", str(store), "--column", "h_nope"]) == 2
    assert "h_nope" in capsys.readouterr().err


def test_plot_of_a_store_leaves_out_the_cells_without_segments_whichever_variable(tmp_path: Path, capsys,
                                                                                   monkeypatch) -> None:
    """count's fill is 0, a finite number: drawn as it was, a map of counts painted every empty cell of each block."""
    import numpy as np
    import xarray as xr

    from granulemap.recipes.atl06 import plot

    drawn: list[tuple[list[int], list[float]]] = []
    monkeypatch.setattr(plot, "plot_cells", lambda cells, order, values, **kw: drawn.append(
        (cells.tolist(), values.tolist())) or b"\x89PNG")
    cells = (np.int64(1234) << 12) + np.arange(4)
    ds = xr.Dataset(
        {"h_mean": ("cells", np.array([10.0, np.nan, 12.5, np.nan]), {"units": "m"}),
         "count": ("cells", np.array([3, 0, 2, 0]), {"units": "1"})},
        coords={"cell_ids": ("cells", cells, {"grid_name": "healpix", "level": 12, "indexing_scheme": "nested",
                                              "ellipsoid": "WGS84"})},
    )
    store = tmp_path / "cells.zarr"
    ds.to_zarr(store, zarr_format=3, consolidated=False)
    for column in ("count", "h_mean"):
        assert main(["plot", str(store), "--column", column, "--out", str(tmp_path / f"{column}.png")]) == 0
    assert drawn == [([cells[0], cells[2]], [3, 2]), ([cells[0], cells[2]], [10.0, 12.5])]


def test_plot_of_a_store_with_periods_draws_the_one_asked_for(tmp_path: Path, capsys) -> None:
    import datetime as dt

    import numpy as np
    import xarray as xr

    from granulemap.plotting import select_period

    # Two monthly periods over two order-12 cells, CF time bounds (a data variable, the bounds of time), as
    # atl06-cell-stats' cumulative store has them.
    cells = (np.int64(1234) << 12) + np.arange(2)
    days = np.array(["2019-03-01", "2019-04-01"], "datetime64[ns]")
    ds = xr.Dataset(
        {"h_mean": (("time", "cells"), np.array([[1.0, 2.0], [3.0, np.nan]]), {"units": "m"}),
         "time_bounds": (("time", "nv"), np.array([["2019-03-01", "2019-04-01"], ["2019-04-01", "2019-05-01"]],
                                                  "datetime64[ns]"))},
        coords={"time": ("time", days, {"bounds": "time_bounds"}),
                "cell_ids": ("cells", cells, {"grid_name": "healpix", "level": 12, "indexing_scheme": "nested",
                                              "ellipsoid": "WGS84"})},
    )
    latest, title = select_period(ds, None)
    assert latest["h_mean"].values[0] == 3.0 and title == ", 2019-04-01..2019-04-30"
    march, title = select_period(ds, dt.date(2019, 3, 31))
    np.testing.assert_array_equal(march["h_mean"].values, [1.0, 2.0])
    assert title == ", 2019-03-01..2019-03-31"
    # A day of April run into the store before its month (stored in run order: March, the day, April): the latest
    # is the month, which ends last, not the day, which starts last; --time on that day picks the day.
    day = ds.isel(time=[0, 1, 1]).assign(h_mean=(("time", "cells"), np.array([[1.0, 2.0], [5.0, 6.0], [3.0, np.nan]])))
    day["time"] = ("time", np.array(["2019-03-01", "2019-04-13", "2019-04-01"], "datetime64[ns]"),
                   {"bounds": "time_bounds"})
    day["time_bounds"] = (("time", "nv"), np.array([["2019-03-01", "2019-04-01"], ["2019-04-13", "2019-04-14"],
                                                    ["2019-04-01", "2019-05-01"]], "datetime64[ns]"))
    assert select_period(day, None)[1] == ", 2019-04-01..2019-04-30"
    assert select_period(day, dt.date(2019, 4, 13))[1] == ", 2019-04-13..2019-04-13"
    assert select_period(day, dt.date(2019, 4, 12))[1] == ", 2019-04-01..2019-04-30"
    # the month's last day run before it: both end on its last day, and the latest is the longer, the month
    last = day.copy()
    last["time"] = ("time", np.array(["2019-03-01", "2019-04-30", "2019-04-01"], "datetime64[ns]"),
                    {"bounds": "time_bounds"})
    last["time_bounds"] = (("time", "nv"), np.array([["2019-03-01", "2019-04-01"], ["2019-04-30", "2019-05-01"],
                                                     ["2019-04-01", "2019-05-01"]], "datetime64[ns]"))
    assert select_period(last, None)[1] == ", 2019-04-01..2019-04-30"

    store = tmp_path / "periods.zarr"
    ds.to_zarr(store, zarr_format=3, consolidated=False)
    assert main(["plot", str(store), "--time", "2019-03-15", "--out", str(tmp_path / "march.png")]) == 0
    assert (tmp_path / "march.png").read_bytes().startswith(b"\x89PNG")
    assert main(["plot", str(store), "--time", "2019-05-01"]) == 2
    assert "2019-03-01..2019-03-31, 2019-04-01..2019-04-30" in capsys.readouterr().err
    assert main(["plot", str(store), "--column", "time_bounds"]) == 2  # not a variable per cell
    assert "has no variable 'time_bounds' per cell; variables: h_mean" in capsys.readouterr().err
    for when in ("2019-03-15", "2019-04-15"):  # without --out: one picture per period, named as a run names it
        assert main(["plot", str(store), "--time", when]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "periods-h_mean-20190301-20190331.png"),
                                               str(tmp_path / "periods-h_mean-20190401-20190430.png")]


def test_plot_of_a_csv_without_the_sst_column_draws_its_value_column(tmp_path: Path, capsys) -> None:
    csv = tmp_path / "warm.csv"  # the tutorial recipe's series (README): one value column of its own
    csv.write_text("time,granule,warm_fraction\n2018-12-01T09:00:00Z,a.nc,0.31\n2018-12-02T09:00:00Z,b.nc,0.32\n")
    assert main(["plot", str(csv)]) == 0
    assert Path(capsys.readouterr().out.strip()).read_bytes().startswith(b"\x89PNG")


def test_the_summary_leads_with_what_the_verdict_counts_and_says_each_count_once(capsys) -> None:
    from granulemap.cloud import print_summary

    print_summary({"status": "FAILED", "items": {"total": 1, "succeeded": 1, "failed": 0, "skipped": 0},
                   "granules": {"total": 10, "succeeded": 8, "failed": 2, "skipped": 0},
                   "message": "2 of 10 granules failed (20.0%), more than the tolerated 5%; first failures: ...",
                   "failures": [], "outputs": []})
    lines = capsys.readouterr().out.splitlines()
    # a dekad item computed, two of its granules failed: the run failed on granules, so granules come first
    assert lines[:3] == ["FAILED: granules: 8 computed, 0 skipped (already done), 2 failed of 10",
                         "  items (Processor calls): 1 computed, 0 skipped, 0 failed of 1",
                         "2 of 10 granules failed (20.0%), more than the tolerated 5%; first failures: ..."]


def test_a_failure_is_printed_once_not_in_the_verdict_and_again_below(capsys) -> None:
    from granulemap.aggregation import verdict
    from granulemap.cloud import print_summary
    from granulemap.models import Failure, ItemCounts

    failures = [Failure(item="20181221-20181231", granule=f"2018122{d}.nc", error="GranuleUnreadable",
                        cause=f"truncated {d}") for d in range(1, 5)]
    _, message = verdict(ItemCounts(total=10, succeeded=6, failed=4, skipped=0), "granules", 5.0, failures)
    summary = {"status": "FAILED", "items": {"total": 1, "succeeded": 1, "failed": 0, "skipped": 0},
               "granules": {"total": 10, "succeeded": 6, "failed": 4, "skipped": 0},
               "failures": [f.model_dump() for f in failures], "outputs": []}
    for wrapped, expected in [(message, "4 of 10 granules failed (40.0%), more than the tolerated 5%"),
                              (f"recipe x could not write its products: OSError: disk ({message})",
                               "recipe x could not write its products: OSError: disk (4 of 10 granules failed "
                               "(40.0%), more than the tolerated 5%)")]:
        print_summary({**summary, "message": wrapped})
        lines = capsys.readouterr().out.splitlines()
        assert lines[2] == expected
        for d in range(1, 5):  # each failure once, on its own line
            assert sum(f"2018122{d}.nc" in line for line in lines) == 1
            assert f"  failed 2018122{d}.nc: GranuleUnreadable: truncated {d}" in lines
    # and each note once, on its own line (Aggregate's message ends with them, ". Note: ..." each)
    notes = ["1 of the 10 days of 2018-12-21..2018-12-31 have no granule", "2 file(s) in /data give no date"]
    print_summary({**summary, "message": message + "".join(f". Note: {note}" for note in notes), "notes": notes})
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "4 of 10 granules failed (40.0%), more than the tolerated 5%"
    assert [line for line in lines if "day" in line or "no date" in line] == [f"note: {note}" for note in notes]


def test_each_command_s_help_says_what_it_does() -> None:
    """`granulemap run --help` began with its usage and options: what run does was only in `granulemap --help`."""
    import argparse

    from granulemap.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) >= {"run", "process", "recipes", "plot", "start", "status", "results", "estimate"}
    for name, command in sub.choices.items():
        said = next(choice.help for choice in sub._choices_actions if choice.dest == name)
        assert command.format_help().split("\n\n")[1].replace("\n", " ").startswith(said[:1].upper() + said[1:15]), name


def test_recompute_is_part_of_the_execution_input_only_when_asked() -> None:
    from granulemap.cli import build_parser, execution_input

    base = ["run", "--recipe", "sst-global-mean", "--start", "2018-12-01", "--end", "2018-12-31", "--source", ".",
            "--out", "out"]
    assert "recompute" not in execution_input(build_parser().parse_args(base))
    assert execution_input(build_parser().parse_args([*base, "--recompute"]))["recompute"] is True


def test_a_local_source_without_granules_in_range_is_explained(tmp_path) -> None:
    import datetime as dt

    from granulemap.catalog import why_no_granules
    from granulemap.recipes import get_recipe

    (tmp_path / "2018").mkdir()  # granules one level down are not found
    (tmp_path / "README.txt").write_text("not a granule")
    (tmp_path / "20181231090000-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2.nc").write_bytes(b"")
    why = why_no_granules(str(tmp_path), get_recipe("sst-global-mean"), dt.date(2017, 1, 1), dt.date(2017, 1, 31))
    assert why == (f"{tmp_path} holds 2 files: 1 match recipe sst-global-mean's file-name pattern '*.nc', dated "
                   "2018-12-31 to 2018-12-31 by their names, none from 2017-01-01 to 2017-01-31; subfolders are not "
                   "searched (1 here: 2018)")
    why = why_no_granules(str(tmp_path), get_recipe("sst-global-mean"), dt.date(2018, 12, 1), dt.date(2018, 12, 31))
    assert "1 match recipe sst-global-mean's file-name pattern '*.nc', 1 of them dated from 2018-12-01 to " \
           "2018-12-31, which gave the recipe no items" in why  # an ATL06 track with no usable segment, say
    # ATL06: a granule named 4 minutes before midnight may hold data of the next day, and is named for its own day
    atl06 = tmp_path / "atl06"
    atl06.mkdir()
    (atl06 / "ATL06_20181013235645_02340114_209_01.h5").write_bytes(b"")
    why = why_no_granules(str(atl06), get_recipe("atl06-cell-stats"), dt.date(2018, 10, 14), dt.date(2018, 10, 14))
    assert why == (f"{atl06} holds 1 file: 1 match recipe atl06-cell-stats's file-name pattern 'ATL06_*.h5', 1 of "
                   "them dated from 2018-10-14 to 2018-10-14 or close enough to hold data of those days (the recipe's "
                   "data_span: named for 2018-10-13), which gave the recipe no items")


def test_a_recipe_whose_granule_time_gives_nothing_is_named_with_what_to_define(tmp_path) -> None:
    """A user's recipe without granule_time: a run said only "their names give no date", though `granulemap process`
    on the same files worked."""
    import datetime as dt

    from granulemap.catalog import why_no_granules
    from granulemap.recipes import Recipe, get_recipe

    name = "20181231090000-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2.nc"
    (tmp_path / name).write_bytes(b"")
    sst = type(get_recipe("sst-global-mean"))
    undated = type("Undated", (sst,), {"name": "undated", "granule_time": lambda self, n: None})()
    forgot = type("Forgot", (sst,), {"name": "forgot", "granule_time": Recipe.granule_time})()  # the base's
    december = dt.date(2018, 12, 1), dt.date(2018, 12, 31)
    said = (f"{tmp_path} holds 1 file: 1 match recipe {{0}}'s file-name pattern '*.nc', but their names give no "
            f"date: recipe {{0}}'s granule_time() returned None for {name!r}")
    assert why_no_granules(str(tmp_path), undated, *december) == said.format("undated")
    assert why_no_granules(str(tmp_path), forgot, *december) == said.format("forgot") + (
        " (the base class's: define granule_time in the recipe; for GHRSST names, "
        "granulemap.recipes.ghrsst.time_from_name)")


def test_a_source_that_is_a_file_is_named_as_one(tmp_path) -> None:
    import pytest

    from granulemap.catalog import validate_input
    from granulemap.errors import InvalidInput
    from granulemap.settings import Settings

    granule = tmp_path / "g.nc"
    granule.write_bytes(b"")
    doc = {"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-31"}
    with pytest.raises(InvalidInput, match=r"g\.nc is a file, not a directory: give the folder that holds"):
        validate_input({**doc, "source": str(granule)}, Settings(bucket="b-test"))
    with pytest.raises(InvalidInput, match="nowhere does not exist here"):
        validate_input({**doc, "source": str(tmp_path / "nowhere")}, Settings(bucket="b-test"))


def test_version(capsys) -> None:
    import pytest

    import granulemap

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"granulemap {granulemap.__version__}"


def test_a_misspelled_option_is_reported_by_its_command_with_the_nearest_one(capsys) -> None:
    import pytest

    with pytest.raises(SystemExit) as done:
        main(["run", "--recipe", "sst-global-mean", "--start", "2018-12-01", "--end", "2018-12-31", "--source", ".",
              "--out", "out", "--max-concurency", "5"])
    err = capsys.readouterr().err
    assert done.value.code == 2
    assert err.startswith("usage: granulemap run ")
    assert "unrecognized arguments: --max-concurency (did you mean --max-concurrency?) 5" in err


def test_the_command_leaves_with_main_s_status_and_quietly_when_its_reader_goes(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "granulemap.cli", "recipes"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "sst-global-mean" in done.stdout  # flushed before the quick exit
    bad = subprocess.run([sys.executable, "-m", "granulemap.cli", "run", "--recipe", "nope", "--start", "2018-01-01",
                          "--end", "2018-01-02", "--source", str(tmp_path), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown recipe 'nope'" in bad.stderr
    # `granulemap recipes | head -1`: the reader closes the pipe after one line
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdout.reconfigure(line_buffering=False)\n"
                             "from granulemap import cli\ncli.main = lambda: [print('x' * 100) for _ in range(10**5)]"
                             " and 0\ncli.console()"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=120) == 141
    assert b"Traceback" not in proc.stderr.read()


def test_a_local_run_s_own_boto_error_is_not_reported_as_aws_refusing(tmp_path: Path, monkeypatch) -> None:
    """Exit 3 and the AWS hints are for the commands that talk to AWS; a local run's clients talk to its moto
    server, and an error there is the engine's, with its traceback."""
    import pytest
    from botocore.exceptions import EndpointConnectionError

    import granulemap.local.run

    def broken(*_a, **_k):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    monkeypatch.setattr(granulemap.local.run, "run_locally", broken)
    with pytest.raises(EndpointConnectionError):
        main(["run", "--recipe", "sst-global-mean", "--start", "2018-12-01", "--end", "2018-12-31", "--source",
              str(tmp_path), "--out", str(tmp_path / "out")])


def test_a_local_run_leaves_no_temporary_folder_behind(tmp_path: Path, mur25) -> None:
    """The command leaves by os._exit (console); multiprocessing's temporary folder, which holds the fork server's
    socket, must still go."""
    import os
    import shutil
    import subprocess
    import sys

    source, scratch = tmp_path / "granules", tmp_path / "tmp"
    source.mkdir()
    scratch.mkdir()
    shutil.copy(mur25, source / mur25.name)
    command = [sys.executable, "-m", "granulemap.cli", "run", "--recipe", "sst-global-mean", "--start", "2018-12-31",
               "--end", "2018-12-31", "--source", str(source), "--out", str(tmp_path / "out"), "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TMPDIR": str(scratch)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert list(scratch.iterdir()) == []


def test_the_command_ends_even_when_an_interrupted_shut_down_left_a_worker_waiting() -> None:
    """An interrupt during the engine's shut-down left a pool worker waiting for work, and multiprocessing's exit
    work then waited for it forever: console ends such leftovers."""
    import subprocess
    import sys

    script = ("import multiprocessing, time\n"
              "from granulemap import cli\n"
              "def main():\n"
              "    worker = multiprocessing.get_context('fork').Process(target=time.sleep, args=(3600,))\n"
              "    worker.start()\n"
              "    print(worker.pid, flush=True)\n"
              "    return 130\n"
              "cli.main = main\n"
              "if __name__ == '__main__':\n"
              "    cli.console()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr[-2000:]
    import os

    pid = int(done.stdout.split()[0])
    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive


def test_the_engine_s_workers_ignore_ctrl_c_and_leave_it_to_the_engine() -> None:
    """A terminal's Ctrl-C reaches every process of the command: each worker dying of its own KeyboardInterrupt
    printed a traceback and broke the pool under moto's threads; the interrupted engine stops them instead."""
    import signal

    from granulemap.local.engine import LocalEngine

    # As in a terminal: Python's own handler (a runner that started pytest in the background, with SIGINT ignored,
    # would leave it ignored here from the start).
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with LocalEngine(workers=1) as engine:
            handler = engine._pool.submit(signal.getsignal, signal.SIGINT).result(timeout=120)
        assert handler == signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the engine's own process: untouched
    finally:
        signal.signal(signal.SIGINT, before)


def test_run_has_no_bbox_option_start_has(capsys) -> None:
    """run always has a source folder, with which every bbox is refused (it narrows only a NASA CMR search): the
    option could only ever fail."""
    from granulemap.cli import build_parser

    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["run", "--recipe", "atl06-cell-stats", "--start", "2018-10-13", "--end",
                                   "2018-10-13", "--source", ".", "--out", "o", "--bbox", "1", "2", "3", "4"])
    assert stopped.value.code == 2 and "--bbox" in capsys.readouterr().err
    args = build_parser().parse_args(["start", "--stack", "s", "--recipe", "atl06-cell-stats", "--start",
                                      "2018-10-13", "--end", "2018-10-13", "--bbox", "1", "2", "3", "4"])
    assert args.bbox == [1.0, 2.0, 3.0, 4.0]


def test_ctrl_c_ends_a_local_run_at_once_without_a_traceback(tmp_path: Path, mur25) -> None:
    """A terminal's Ctrl-C reaches every process of the command. Workers ignore it; the interrupted engine stops them
    instead of waiting for the items they hold (an ATL06 item can take minutes), and no Docker error follows from
    moto's threads. Items here take a minute each (a sitecustomize slows the workers' invocations)."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import time\n"
        "from granulemap.local import worker\n"
        "_invoke = worker.invoke\n"
        "def invoke(spec, event, *args):\n"
        "    if isinstance(event, dict) and 'item' in event:\n"
        "        time.sleep(60)\n"
        "    return _invoke(spec, event, *args)\n"
        "worker.invoke = invoke\n")
    source = tmp_path / "granules"
    source.mkdir()
    shutil.copy(mur25, source / mur25.name)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "granulemap.cli", "run", "--recipe", "sst-global-mean", "--start", "2018-12-31",
               "--end", "2018-12-31", "--source", str(source), "--out", str(tmp_path / "out"), "--workers", "1",
               "--quiet"]
    proc = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    invocations = tmp_path / "out" / "logs" / "invocations.jsonl"
    deadline = time.monotonic() + 120
    while not (invocations.exists() and "CredentialFetcher" in invocations.read_text()):  # the item is next
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
        time.sleep(0.2)
    time.sleep(1)
    interrupted = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert time.monotonic() - interrupted < 20, "waited for the item"
    assert "Traceback" not in err and "docker" not in err.lower(), err[-2000:]
    assert "granulemap: interrupted (the same command again resumes" in err


def test_checking_a_run_s_input_does_not_import_the_x_ray_sdk() -> None:
    """granulemap run checks the input (importing the recipe) before its engine starts, so whatever that imports
    delays every run: Powertools' Tracer, made when observability was imported, imported the X-Ray SDK (0.14 s),
    which only the handlers use. It is made when the handlers ask for it."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "import granulemap.cli as cli\n"
        "from granulemap.catalog import validate_input\n"
        "validate_input({'recipe': 'sst-global-mean', 'start': '2018-12-01', 'end': '2018-12-31', 'source': '.'},"
        " cli.local_settings())\n"
        "assert 'aws_xray_sdk.core' not in sys.modules, 'imported'\n"
        "from aws_lambda_powertools import Tracer\n"
        "from granulemap.observability import tracer\n"
        "import granulemap.observability as observability\n"
        "assert isinstance(tracer, Tracer) and observability.tracer is tracer\n"
        "assert 'aws_xray_sdk.core' in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_command_takes_sigterm_and_sighup_but_leaves_a_signal_it_was_told_to_ignore() -> None:
    """nohup starts a command with SIGHUP ignored: it must go on ignoring it (tests/test_local_signals.py runs a
    command ended by these signals)."""
    import subprocess
    import sys

    script = ("import signal\n"
              "from granulemap import cli\n"
              "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
              "cli.stop_on_signals()\n"
              "print(signal.getsignal(signal.SIGHUP) is signal.SIG_IGN, callable(signal.getsignal(signal.SIGTERM)))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["True", "True"], done.stderr[-2000:]


def test_a_granule_failure_names_its_granule_once() -> None:
    """The readers' messages start with the file's name, which the failure line already leads with."""
    from granulemap.models import Failure

    failure = Failure(item="20181221-20181231", granule="a.nc", error="GranuleUnreadable", cause="a.nc: truncated")
    assert failure.described() == "a.nc: GranuleUnreadable: truncated"
    other = Failure(item="20181221-20181231", granule="a.nc", error="GranuleUnreadable", cause="b.nc: a.nc: x")
    assert other.described() == "a.nc: GranuleUnreadable: b.nc: a.nc: x"
    whole = Failure(item="i", error="NoResult", cause="i: gone")  # an item's failure: its cause as it is
    assert whole.described() == "i: NoResult: i: gone"


@pytest.mark.parametrize("recompute, says", [
    ([], "granulemap: interrupted (the same command again resumes: what was done is kept)\n"),
    (["--recompute"], "granulemap: interrupted (what was done is kept; the same command again computes everything "
                      "again, as --recompute does: without --recompute it resumes)\n"),
])
def test_an_interrupted_run_says_what_the_same_command_again_does(monkeypatch, capsys, recompute, says) -> None:
    """--recompute computes every item again, so the same command does not resume (it said it would)."""
    from granulemap import cli

    def interrupted(args):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_run", interrupted)
    assert cli.main(["run", "--recipe", "sst-global-mean", "--start", "2018-12-31", "--end", "2018-12-31",
                     "--source", ".", "--out", "x", *recompute]) == 130
    assert capsys.readouterr().err == says


@pytest.mark.parametrize("raised, status, says", [
    ("ctrl-c", 130, "granulemap: interrupted\n"),
    ("sigterm", 143, "granulemap: stopped by SIGTERM\n"),
])
def test_a_command_interrupted_while_it_reads_its_arguments_says_so_in_one_line(
        monkeypatch, capsys, raised, status, says) -> None:
    """The parser's making imports boto3 and the commands' modules (most of a second on a busy machine): Ctrl-C or
    a stop signal then gave a traceback through botocore's imports instead of the line it gives later."""
    import signal as signals

    from granulemap import cli

    def interrupted_import():  # type: ignore[no-untyped-def]
        raise cli.Stopped(signals.SIGTERM) if raised == "sigterm" else KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted_import)
    assert cli.main(["run", "--recipe", "sst-global-mean"]) == status
    assert capsys.readouterr().err == says


def test_a_series_cut_short_in_state_fails_the_next_run_at_once_and_its_advice_writes_it_anew(
        tmp_path: Path, capsys, mur25: Path) -> None:
    """The CSV in state/ (what later runs merge into) cut within its last value: the next run fails before computing
    anything, naming the file and the line, and leaves it and the products as they were; doing what it says (delete
    the file, run the dates again) writes the series anew from the stored result, with the value the granule has."""
    out = tmp_path / "out"
    run = ["run", "--recipe", "sst-global-mean", "--start", "2018-12-31", "--end", "2018-12-31", "--source",
           str(mur25.parent), "--out", str(out), "--quiet"]
    assert main(run) == 0
    (stored,) = (out / "state").rglob("global_mean_sst.csv")
    whole = stored.read_bytes()
    mean = ocean_mean_reference(mur25)["mean_sst_c"]
    value = f",{mean:.6f},".encode()
    assert value in whole
    damaged = whole[:whole.index(value) + 4]  # ",19.3" of ",19.330772,"
    stored.write_bytes(damaged)
    capsys.readouterr()

    assert main(run) == 1
    said = capsys.readouterr().out
    assert f"{stored} is damaged: line 2 has 3 fields, and its header 7" in said
    assert "items: 0 computed" in said  # refused before anything ran
    assert stored.read_bytes() == damaged and (out / "global_mean_sst.csv").read_bytes() == whole

    stored.unlink()
    assert main(run) == 0
    assert "0 computed, 1 skipped" in capsys.readouterr().out  # the stored result, not computed again
    (row,) = csv.DictReader(io.StringIO((out / "global_mean_sst.csv").read_text()))
    assert float(row["mean_sst_c"]) == pytest.approx(mean, abs=1e-6)


def test_a_run_whose_state_the_disk_refuses_stops_saying_so_and_the_same_command_resumes_it(
        tmp_path: Path, capsys, mur25: Path, monkeypatch) -> None:
    """A full disk under --out: the run is stopped as soon as a write of its state is refused, naming the file and
    why (a write the disk refused had changed the bucket in memory, and the run went on, with a traceback at its end);
    once there is space, the same command resumes it: its result was kept, the product is written."""
    out = tmp_path / "out"
    run = ["run", "--recipe", "sst-global-mean", "--start", "2018-12-31", "--end", "2018-12-31", "--source",
           str(mur25.parent), "--out", str(out), "--quiet"]
    with monkeypatch.context() as full:
        on_a_full_disk(full, lambda folder: f"{os.sep}outputs{os.sep}" in folder)
        assert main(run) == 1
    said = capsys.readouterr().err
    assert said.startswith(f"granulemap: StateNotKept: the run's state cannot be written to disk ({out / 'state'}")
    assert "No space left on device), so the run was stopped" in said and "then run it again: it resumes" in said
    (result,) = (out / "state" / "results").rglob("*.json")  # kept: computed before the disk filled
    assert not (out / "global_mean_sst.csv").exists()

    assert main(run) == 0  # space again
    assert "0 computed, 1 skipped" in capsys.readouterr().out
    (row,) = csv.DictReader(io.StringIO((out / "global_mean_sst.csv").read_text()))
    assert float(row["mean_sst_c"]) == pytest.approx(ocean_mean_reference(mur25)["mean_sst_c"], abs=1e-6)


def test_a_full_disk_elsewhere_in_a_run_is_one_line_naming_the_folder_not_a_traceback(monkeypatch, capsys) -> None:
    import errno
    import tempfile

    from granulemap import cli

    def fills_the_disk(args):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")  # as a write() raises it: no file name

    monkeypatch.setattr(cli, "cmd_run", fills_the_disk)
    assert cli.main(["run", "--recipe", "sst-global-mean", "--start", "2018-12-31", "--end", "2018-12-31",
                     "--source", ".", "--out", "the-out"]) == 1
    assert capsys.readouterr().err == (
        f"granulemap: cannot write in --out the-out (or in the temporary folder, {tempfile.gettempdir()}): No space "
        "left on device. Free space on that disk, then run the same command again\n")
