"""What a newcomer types, and what they are told: the README's commands as written, dates, --param JSON, an --out that
cannot be a folder, a local run's ARN given to the cloud commands, products of an earlier configuration in --out, and
results that hold no value."""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
import shutil
from pathlib import Path

import netCDF4
import numpy as np
import pytest

from granulemap.cli import build_parser, main
from granulemap.errors import InvalidInput
from granulemap.models import ExecutionInput, parse_model

from conftest import ROOT


def _readme_commands() -> list[list[str]]:
    """Every `granulemap` command in the README's shell blocks, continuation lines joined, comments dropped."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if re.match(r"(\.venv/bin/)?granulemap ", line) and "…" not in line and "<" not in line:
                commands.append(shlex.split(line)[1:])
    return commands


def test_every_granulemap_command_in_the_readme_parses_as_written() -> None:
    """Optional flags were shown in brackets inside the commands ("--out out/sst [--max-concurrency 8]"): pasted,
    the command failed ("unrecognized arguments")."""
    commands = _readme_commands()
    assert len(commands) >= 6 and {c[0] for c in commands} >= {"run", "process", "recipes", "plot", "estimate"}
    parser = build_parser()
    for words in commands:
        try:
            args, unknown = parser.parse_known_args(words)
        except SystemExit:
            pytest.fail(f"README command does not parse: granulemap {' '.join(words)}")
        assert unknown == [], (words, unknown)


@pytest.mark.parametrize("written", ["20181201", "2018-12-1", "12/01/2018", "1543622400", 1543622400,
                                     "2018-12-01 00:00:00"])
def test_a_date_not_written_yyyy_mm_dd_is_refused_naming_the_format(written) -> None:
    """Pydantic alone took 20181201 (the dates in GHRSST file names) and 1543622400 for seconds since 1970, refused
    2018-12-1 with "input is too short", and said nothing of the format."""
    with pytest.raises(InvalidInput, match=r"field 'start': .* is not a date written YYYY-MM-DD \(such as "):
        parse_model(ExecutionInput, {"recipe": "sst-global-mean", "start": written, "end": "2018-12-31"}, "input")


def test_an_impossible_date_is_named_with_the_reason() -> None:
    with pytest.raises(InvalidInput, match="field 'end': '2018-02-30' is not a date: day is out of range for month"):
        parse_model(ExecutionInput, {"recipe": "sst-global-mean", "start": "2018-02-01", "end": "2018-02-30"}, "input")


@pytest.mark.parametrize(("given", "field"), [({"start": "9999-12-20", "end": "9999-12-31"}, "start"),
                                              ({"start": "2019-01-01", "end": "9999-12-31"}, "end"),
                                              ({"start": "0001-01-01", "end": "2019-01-01"}, "start"),
                                              ({"period": "9999-12"}, "period"), ({"period": "0001-01"}, "period")])
def test_a_date_at_the_ends_of_the_calendar_is_refused_naming_the_field(given: dict, field: str) -> None:
    """9999-12-31 passed, then the CMR search (a day wider on each side) failed with a bare OverflowError."""
    with pytest.raises(InvalidInput, match=rf"field '{field}': .* is not between 1800-01-01 and 2199-12-31: is its "
                                           r"year mistyped\?"):
        parse_model(ExecutionInput, {"recipe": "sst-global-mean", **given}, "input")
    dates = {"start": "1800-01-01", "end": "2199-12-31"}  # the ends themselves are dates
    assert parse_model(ExecutionInput, {"recipe": "sst-global-mean", **dates}, "input").end == dt.date(2199, 12, 31)


@pytest.mark.parametrize(("field", "given", "said"), [("max_concurrency", True, "a valid integer"),
                                                      ("max_concurrency", "8", "a valid integer"),
                                                      ("tolerated_failure_percentage", True, "a valid number"),
                                                      ("recompute", "no", "a valid boolean"),
                                                      ("recompute", 1, "a valid boolean")])
def test_a_boolean_for_a_number_or_a_word_for_a_boolean_is_refused(field: str, given: object, said: str) -> None:
    """Pydantic's lax mode took true for a concurrency of 1 (and 1 %), and "no" or 1 for recompute."""
    dates = {"recipe": "sst-global-mean", "start": "2019-01-01", "end": "2019-01-31"}
    with pytest.raises(InvalidInput, match=f"field '{field}': Input should be {said}"):
        parse_model(ExecutionInput, {**dates, field: given}, "input")
    taken = parse_model(ExecutionInput, {**dates, "max_concurrency": 8, "tolerated_failure_percentage": 5,
                                         "recompute": True}, "input")  # JSON's numbers and booleans
    assert (taken.max_concurrency, taken.tolerated_failure_percentage, taken.recompute) == (8, 5.0, True)


@pytest.mark.parametrize(("period", "first", "last"), [("2024-02", "2024-02-01", "2024-02-29"),
                                                       ("2023-02", "2023-02-01", "2023-02-28"),
                                                       ("2019-12", "2019-12-01", "2019-12-31")])
def test_a_month_named_as_the_period_is_its_first_to_last_day(period: str, first: str, last: str) -> None:
    """An operator redoing a scheduled month names it, so that the month's completeness is checked again (the same
    dates as start/end take what is there)."""
    run = parse_model(ExecutionInput, {"recipe": "sst-global-mean", "period": period}, "input")
    assert [d.isoformat() for d in run.date_range()] == [first, last]
    assert (run.resolved().start.isoformat(), run.resolved().end.isoformat(), run.resolved().period) == (first, last,
                                                                                                       None)


@pytest.mark.parametrize(("now", "month"), [
    (dt.datetime(2024, 6, 1, 3, 0, tzinfo=dt.timezone(dt.timedelta(hours=9))), "2024-04"),  # 2024-05-31T18:00Z
    (dt.datetime(2024, 5, 31, 20, 0, tzinfo=dt.timezone(dt.timedelta(hours=-7))), "2024-05"),  # 2024-06-01T03:00Z
    (dt.datetime(2024, 6, 1, 0, 0), "2024-05"),  # naive: UTC
    (dt.datetime(2024, 1, 15, 0, 0, tzinfo=dt.UTC), "2023-12"),
])
def test_the_previous_month_is_the_one_before_the_utc_month_of_the_moment(now: dt.datetime, month: str) -> None:
    """BuildCatalog is given the execution's start (in UTC); granulemap status the one boto3 gives, in the machine's
    time zone: both must name the month before the UTC month of that moment."""
    first, last = parse_model(ExecutionInput, {"recipe": "sst-global-mean", "period": "previous-month"},
                              "input").date_range(now)
    assert (first.strftime("%Y-%m"), last.strftime("%Y-%m"), first.day) == (month, month, 1)
    assert (last + dt.timedelta(days=1)).day == 1


@pytest.mark.parametrize("period", ["2024-13", "2024-2", "24-02", "May 2024", "2024-05-01", "last-month", ""])
def test_a_period_that_is_not_a_month_is_refused_naming_the_forms(period: str) -> None:
    with pytest.raises(InvalidInput, match=r"field 'period': .* is not a month: give \"previous-month\" or one as "
                                           r"YYYY-MM"):
        parse_model(ExecutionInput, {"recipe": "sst-global-mean", "period": period}, "input")


def test_a_named_month_that_has_not_ended_is_refused_before_any_work() -> None:
    """Checked whole, a month still going (or to come) would be refused as missing days, or, for atl06-cell-stats,
    stored as a whole month's time step from part of it."""
    from granulemap.catalog import validate_input
    from granulemap.settings import Settings

    settings = Settings(bucket="a-bucket")
    now = dt.datetime(2024, 5, 31, 23, 0, tzinfo=dt.UTC)
    for month in ("2024-05", "2024-06", "2199-12"):
        with pytest.raises(InvalidInput, match=f"field 'period': {month} has not ended \\(today is 2024-05-31, UTC\\)"):
            validate_input({"recipe": "sst-global-mean", "period": month}, settings, now)
    validate_input({"recipe": "sst-global-mean", "period": "2024-04"}, settings, now)  # ended
    validate_input({"recipe": "sst-global-mean", "period": "2024-05"}, settings, now + dt.timedelta(hours=1))
    validate_input({"recipe": "sst-global-mean", "start": "2024-05-01", "end": "2024-05-31"}, settings, now)


def test_the_commands_take_a_month_as_period_instead_of_start_and_end(capsys, tmp_path: Path) -> None:
    from granulemap.cli import execution_input

    args = build_parser().parse_args(["start", "--stack", "granulemap", "--recipe", "sst-global-mean",
                                     "--period", "2024-05"])
    assert execution_input(args) == {"recipe": "sst-global-mean", "period": "2024-05"}
    out = tmp_path / "out"
    for words, told in ((["--period", "2024-05", "--start", "2024-05-01"], "give either period or start/end"),
                        ([], "start is required"), (["--period", "2024-5"], "'2024-5' is not a month")):
        assert main(["run", "--recipe", "sst-global-mean", *words, "--source", str(tmp_path), "--out", str(out)]) == 2
        assert told in capsys.readouterr().err
    assert not out.exists()  # nothing started


def test_the_run_command_refuses_a_number_for_a_date_before_starting(capsys, tmp_path: Path) -> None:
    assert main(["run", "--recipe", "sst-global-mean", "--start", "20181201", "--end", "2018-12-31",
                 "--source", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "YYYY-MM-DD" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing started


def test_a_param_meant_as_json_that_does_not_parse_says_so(capsys) -> None:
    """--param 'box=[-170,-5,-120' was taken as the text "[-170,-5,-120" and refused as "not a valid tuple"."""
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--recipe", "sst-box-mean", "--start", "2018-12-01", "--end", "2018-12-31", "--source", ".",
              "--out", "out", "--param", "box=[-170,-5,-120"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--param box: '[-170,-5,-120' is not valid JSON" in err and "box=[-170,-5,-120,5]" in err


def test_a_box_of_three_numbers_is_told_it_needs_four(capsys, tmp_path: Path) -> None:
    assert main(["run", "--recipe", "sst-box-mean", "--start", "2018-12-01", "--end", "2018-12-31",
                 "--source", str(tmp_path), "--out", str(tmp_path / "out"), "--param", "box=[-170,-5,-120]"]) == 2
    assert "four numbers [west, south, east, north] in degrees, got 3" in capsys.readouterr().err
    # written as on a plotting command line: not JSON, so text; told how to write it
    assert main(["run", "--recipe", "sst-box-mean", "--start", "2018-12-01", "--end", "2018-12-31",
                 "--source", str(tmp_path), "--out", str(tmp_path / "out"), "--param", "box=-170,-5,-120,5"]) == 2
    assert ("four numbers [west, south, east, north] in degrees, as a list, got the text '-170,-5,-120,5' (on the "
            "command line: --param 'box=[-170,-5,-120,5]')") in capsys.readouterr().err


def test_an_out_that_cannot_be_a_folder_is_bad_input_in_one_line(capsys, tmp_path: Path, mur25: Path) -> None:
    """A file where the folder should be gave a NotADirectoryError traceback and exit 1."""
    taken = tmp_path / "a-file"
    taken.write_text("")
    assert main(["run", "--recipe", "sst-global-mean", "--start", "2018-12-31", "--end", "2018-12-31",
                 "--source", str(mur25.parent), "--out", str(taken), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == f"granulemap: cannot make the folder {taken} for the run's products: Not a directory\n"


def test_an_out_whose_folder_cannot_be_written_in_is_bad_input_in_one_line(capsys, tmp_path: Path,
                                                                           mur25: Path) -> None:
    """An existing folder the run cannot write its lock in (read-only, say; here its lock's name is taken by a
    folder, which root cannot write over either) gave an OSError traceback and exit 1."""
    out = tmp_path / "out"
    (out / ".granulemap-lock").mkdir(parents=True)
    assert main(["run", "--recipe", "sst-global-mean", "--start", "2018-12-31", "--end", "2018-12-31",
                 "--source", str(mur25.parent), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == (f"granulemap: cannot write in the folder {out} for the run's products: Is a directory (give "
                   "another folder)\n")
    assert sorted(p.name for p in out.iterdir()) == [".granulemap-lock", "logs"]  # nothing else written


@pytest.mark.parametrize("option, says", [
    ("--out", "--out is empty: give a folder for the run's products (made if missing)"),
    ("--source", "--source is empty: give a folder of granules (or an s3:// prefix)"),
])
def test_an_empty_out_or_source_is_refused_before_anything_is_written(capsys, tmp_path: Path, mur25: Path,
                                                                      monkeypatch, option: str, says: str) -> None:
    """An unset shell variable (--out "$OUT"): --out "" wrote state/, logs/ and the products into the current folder,
    and --source "" started the engine before BuildCatalog refused it."""
    monkeypatch.chdir(tmp_path)
    given = {"--source": str(mur25.parent), "--out": str(tmp_path / "out"), option: ""}
    assert main(["run", "--recipe", "sst-global-mean", "--start", "2018-12-31", "--end", "2018-12-31",
                 "--source", given["--source"], "--out", given["--out"], "--quiet"]) == 2
    assert capsys.readouterr().err == f"granulemap: {says}\n"
    assert list(tmp_path.iterdir()) == []


def test_an_out_that_is_the_source_folder_is_refused(capsys, tmp_path: Path, mur25: Path) -> None:
    source = tmp_path / "granules"
    source.mkdir()
    (source / mur25.name).symlink_to(mur25)
    assert main(["run", "--recipe", "sst-global-mean", "--start", "2018-12-31", "--end", "2018-12-31",
                 "--source", str(source), "--out", f"{source}/", "--quiet"]) == 2
    assert capsys.readouterr().err == (
        f"granulemap: {source} is the run's source folder: its products and logs would go among the granules; give "
        "the run (--out, or the Workspace) another folder\n")
    assert [p.name for p in source.iterdir()] == [mur25.name]
    # a file:// source is that folder too (it was resolved as a relative path named "file:")
    args = build_parser().parse_args(["run", "--recipe", "sst-global-mean", "--start", "2018-12-31", "--end",
                                      "2018-12-31", "--source", f"file://{source}", "--out", "x"])
    from granulemap.cli import execution_input

    assert execution_input(args)["source"] == str(source)


def test_a_workspace_run_into_its_source_folder_is_refused_before_anything_is_written(tmp_path: Path,
                                                                                        mur25: Path) -> None:
    from granulemap.local.run import Workspace

    source = tmp_path / "granules"
    source.mkdir()
    (source / mur25.name).symlink_to(mur25)
    doc = {"recipe": "sst-global-mean", "start": "2018-12-31", "end": "2018-12-31", "source": f"file://{source}/"}
    with Workspace(tmp_path / "ws") as ws:
        with pytest.raises(InvalidInput, match=f"{source} is the run's source folder"):
            ws.run(doc, out=source)
    assert [p.name for p in source.iterdir()] == [mur25.name]


@pytest.mark.slow
def test_a_workspace_run_into_another_runs_folder_is_refused_before_anything_is_written(tmp_path: Path,
                                                                                       mur25: Path) -> None:
    """README's CLI example wrote out/sst-2019 (its state/ with it), and its Workspace example then ran with
    out="out/sst-2019": the Workspace's series (from its own state) replaced that folder's CSV, whose rows were left
    only in the folder's state/, without a word."""
    from granulemap.local.run import Workspace

    source = tmp_path / "granules"
    source.mkdir()
    (source / mur25.name).symlink_to(mur25)
    doc = {"recipe": "sst-global-mean", "start": "2018-12-31", "end": "2018-12-31", "source": str(source)}
    cli_out = tmp_path / "sst-2018"
    with Workspace(cli_out) as ws:  # what `granulemap run --out sst-2018` does
        assert ws.run(doc, out=cli_out)["status"] == "SUCCEEDED"
    before = {p.relative_to(cli_out): p.read_bytes() for p in cli_out.rglob("*") if p.is_file()}
    assert Path("global_mean_sst.csv") in before
    with Workspace(tmp_path / "ws") as ws:
        with pytest.raises(InvalidInput, match=f"{cli_out} is the folder of another local run or Workspace"):
            ws.run(doc, out=cli_out)
        assert ws.run(doc, out=tmp_path / "ws" / "sst-2018")["status"] == "SUCCEEDED"  # a folder of its own: run
    assert {p.relative_to(cli_out): p.read_bytes() for p in cli_out.rglob("*") if p.is_file()} == before


def test_the_cloud_commands_tell_a_local_run_from_a_deployed_one(capsys, tmp_path: Path) -> None:
    """A local summary's execution ARN given to status/results asked for AWS credentials; its --out folder was
    "not an ARN"."""
    from granulemap.local.engine import ACCOUNT, LOCAL_STACK_NAME, REGION

    arn = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{LOCAL_STACK_NAME}-pipeline:local-20261130T072221-69c627"
    for command in (["status", arn], ["results", arn, "--out", str(tmp_path / "r")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "an execution of granulemap run, on this machine" in err and "--out folder" in err
    assert main(["results", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "is a folder: a local run's products" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def _run(out: Path, source: Path, *extra: str) -> dict:
    code = main(["run", "--start", "2018-12-31", "--end", "2018-12-31", "--source", str(source), "--out", str(out),
                 "--quiet", *extra])
    summary = json.loads((out / "summary.json").read_text())
    assert (code == 0) == (summary["status"] == "SUCCEEDED")
    return summary


@pytest.mark.slow
def test_another_configuration_in_the_same_out_replaces_the_earlier_products(tmp_path: Path, mur25: Path) -> None:
    """README: "another configuration's products replace them in --out". Products of other names stayed beside a
    summary.json and provenance.json that described the later run. A failed run removes nothing, and the removal
    still happens at the next run that succeeds; a run of the same configuration that finds nothing to do keeps the
    series; what local runs did not write, or did but something wrote since (a file of the user's, what granulemap
    results downloaded), stays."""
    source = tmp_path / "granules"
    source.mkdir()
    shutil.copy(mur25, source / mur25.name)
    out = tmp_path / "out"
    first = _run(out, source, "--recipe", "sst-global-mean")
    assert (out / "global_mean_sst.csv").is_file() and (out / "global_mean_sst.png").is_file()
    (out / "my-notes.txt").write_text("mine")  # not a product: never touched
    (out / "box_mean_sst-from-aws.csv").write_text("downloaded")
    nothing = main(["run", "--recipe", "sst-global-mean", "--start", "2018-11-01", "--end", "2018-11-30",
                    "--source", str(source), "--out", str(out), "--quiet"])
    same = json.loads((out / "summary.json").read_text())
    assert nothing == 0 and same["items"]["total"] == 0 and not any("replaced those of" in n for n in same["notes"])
    assert (out / "global_mean_sst.csv").is_file() and (out / "global_mean_sst.png").is_file()  # same configuration

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / mur25.name.replace("090000", "120000")).write_bytes(b"not a granule")  # not done before
    failed = _run(out, broken, "--recipe", "sst-box-mean", "--tolerated-failure-percentage", "0")
    assert failed["status"] == "FAILED"
    assert (out / "global_mean_sst.csv").is_file() and (out / "global_mean_sst.png").is_file()
    # ... and says that they lie beside its summary.json without being its own
    (left,) = [n for n in failed["notes"] if "not of this run" in n]
    assert re.fullmatch(rf"global_mean_sst.csv, global_mean_sst.png in {re.escape(str(out))}: products of "
                        r"sst-global-mean/[\w.-]+, not of this run \(sst-box-mean/[\w.-]+\), which failed \(.*\)",
                        left), left

    (out / "global_mean_sst.png").write_bytes(b"what granulemap results downloaded over it")  # not the run's now
    second = _run(out, source, "--recipe", "sst-box-mean")
    assert second["status"] == "SUCCEEDED"
    assert not (out / "global_mean_sst.csv").exists()
    assert (out / "global_mean_sst.png").read_bytes() == b"what granulemap results downloaded over it"
    assert (out / "box_mean_sst.csv").is_file() and (out / "box_mean_sst.png").is_file()
    assert (out / "my-notes.txt").read_text() == "mine" and (out / "box_mean_sst-from-aws.csv").is_file()
    assert set(first["outputs"]) - set(second["outputs"]) == {str(out / "global_mean_sst.csv"),
                                                              str(out / "global_mean_sst.png")}
    # said: kept, as changed since (the note that the products were replaced is not the whole story), once
    (kept,) = [n for n in second["notes"] if "changed since" in n]
    assert re.fullmatch(rf"global_mean_sst.png in {re.escape(str(out))}: products of sst-global-mean/[\w.-]+, kept "
                        r"because they changed since that run wrote them \(.*\); no run removes them now: .*", kept)
    third = _run(out, source, "--recipe", "sst-box-mean", "--param", "box=[-10,-5,10,5]")  # the same names
    assert third["status"] == "SUCCEEDED" and (out / "box_mean_sst.csv").is_file()
    assert not any("changed since" in n for n in third["notes"] + first["notes"] + failed.get("notes", []))
    # said, each time, with where the replaced products still are; not when the configuration is the same
    assert not any("replaced those of" in n for n in first["notes"] + failed.get("notes", []))
    # A run that fails after writing its products (a granule failed, none tolerated) writes over them too: said,
    # and nothing else removed.
    from granulemap.synthetic import make_synthetic_series

    make_synthetic_series(mur25, broken, dt.date(2018, 12, 30), 1)  # a good granule beside the broken one
    code = main(["run", "--start", "2018-12-30", "--end", "2018-12-31", "--source", str(broken), "--out", str(out),
                 "--quiet", "--recipe", "sst-box-mean", "--param", "box=[-20,-5,0,5]",
                 "--tolerated-failure-percentage", "0"])
    fourth = json.loads((out / "summary.json").read_text())
    assert code == 1 and fourth["granules"]["succeeded"] == 1 and fourth["granules"]["failed"] == 1
    assert fourth["status"] == "FAILED" and (out / "box_mean_sst.csv").is_file()
    assert (out / "my-notes.txt").is_file() and (out / "global_mean_sst.png").is_file()
    for summary, before, now in ((second, "sst-global-mean", "sst-box-mean"), (third, "sst-box-mean", "sst-box-mean"),
                                 (fourth, "sst-box-mean", "sst-box-mean")):
        (note,) = [n for n in summary["notes"] if "replaced those of" in n]
        said = re.fullmatch(rf"this run's products \(({now}/[\w.-]+)\) replaced those of ({before}/[\w.-]+) in "
                            rf"{re.escape(str(out))}; theirs are still in (\S+)", note)
        assert said and said[1] != said[2], note
        assert Path(said[3]) == out / "state" / "outputs" / said[2] and any(Path(said[3]).iterdir())


@pytest.mark.slow
def test_a_run_of_another_configuration_that_writes_no_products_still_replaces_the_earlier_ones(
        tmp_path: Path, mur25: Path) -> None:
    """A run that succeeded without products (its folder had no granule of its dates) left the earlier run's CSV and
    picture beside a summary.json and provenance.json of its own, unsaid: the configuration was known only from
    the products' names."""
    source, empty, out = tmp_path / "granules", tmp_path / "empty", tmp_path / "out"
    source.mkdir()
    empty.mkdir()
    shutil.copy(mur25, source / mur25.name)
    assert _run(out, source, "--recipe", "sst-global-mean")["status"] == "SUCCEEDED"
    assert (out / "global_mean_sst.csv").is_file()
    # refused by BuildCatalog (a month without its days' granules): no products, nothing removed, and said
    assert main(["run", "--recipe", "sst-box-mean", "--period", "2018-11", "--source", str(source), "--out", str(out),
                 "--quiet"]) == 1
    refused = json.loads((out / "summary.json").read_text())
    assert refused["status"] == "FAILED" and (out / "global_mean_sst.csv").is_file()
    (left,) = [n for n in refused["notes"] if "not of this run" in n]
    assert left.startswith(f"global_mean_sst.csv, global_mean_sst.png in {out}: products of sst-global-mean/"), left
    nothing = _run(out, empty, "--recipe", "sst-box-mean")
    assert nothing["status"] == "SUCCEEDED" and nothing["items"]["total"] == 0
    assert not (out / "global_mean_sst.csv").exists() and not (out / "global_mean_sst.png").exists()
    (note,) = [n for n in nothing["notes"] if "were removed" in n]
    assert re.fullmatch(r"this run \(sst-box-mean/[\w.-]+\) wrote no products, and those of sst-global-mean/[\w.-]+ "
                        rf"were removed from {re.escape(str(out))}; theirs are still in \S+", note), note


def test_a_midnight_datetime_in_a_workspace_input_is_its_day() -> None:
    """Workspace.run takes dates as their text; a pandas Timestamp or datetime of a day became "2019-03-01
    00:00:00", which start and end refuse."""
    import datetime as dt

    from granulemap.local.run import _as_text

    assert _as_text(dt.datetime(2019, 3, 1)) == "2019-03-01"
    assert _as_text(dt.datetime(2019, 3, 1, tzinfo=dt.UTC)) == "2019-03-01"
    assert _as_text(dt.datetime(2019, 3, 1, 12)) == "2019-03-01 12:00:00"  # a time of day: refused, as it says
    assert _as_text(dt.date(2019, 3, 1)) == "2019-03-01"


def test_numpy_numbers_in_a_workspace_input_are_numbers() -> None:
    """A concurrency or tolerance computed with numpy became the text "8", which the input's strict fields refuse."""
    import json

    import numpy as np

    from granulemap.local.run import _as_text

    raw = {"recipe": "sst-global-mean", "start": "2019-01-01", "end": "2019-01-31", "max_concurrency": np.int64(8),
           "tolerated_failure_percentage": np.float32(2.5), "recompute": np.bool_(True)}
    taken = parse_model(ExecutionInput, json.loads(json.dumps(raw, default=_as_text)), "input")
    assert (taken.max_concurrency, taken.tolerated_failure_percentage, taken.recompute) == (8, 2.5, True)


def test_a_box_without_open_water_is_noted_in_the_summary(tmp_path: Path, mur25: Path, capsys) -> None:
    """A box on land succeeded with empty rows and a blank picture dated 1970, and nothing said why."""
    box = [10.0, 20.0, 11.0, 21.0]  # the Sahara
    with netCDF4.Dataset(mur25) as ds:  # the premise, read independently: no open-water cell in the box
        lat, lon = ds["lat"][:], ds["lon"][:]
        rows = np.flatnonzero((lat >= box[1]) & (lat <= box[3]))
        cols = np.flatnonzero((lon >= box[0]) & (lon <= box[2]))
        mask = np.asarray(ds["mask"][0, rows.min():rows.max() + 1, cols.min():cols.max() + 1])
    assert rows.size and cols.size and not (mask & 1).any()  # GHRSST L4 mask bit 1: open water
    source = tmp_path / "granules"
    source.mkdir()
    shutil.copy(mur25, source / mur25.name)
    summary = _run(tmp_path / "out", source, "--recipe", "sst-box-mean", "--param", f"box={json.dumps(box)}")
    assert summary["status"] == "SUCCEEDED"
    (note,) = summary["notes"]
    assert note.startswith("1 of 1 granules had no cell of open water in the box [10, 20, 11, 21]")
    assert mur25.name in note and note in summary["message"]
    assert f"note: {note}" in capsys.readouterr().out
    water = _run(tmp_path / "water", source, "--recipe", "sst-box-mean", "--param", "box=[-170,-5,-120,5]")
    assert water["notes"] == []


def test_days_of_the_range_without_a_granule_are_noted_in_the_summary(tmp_path: Path, mur25: Path, capsys) -> None:
    """A folder lacking days, given as --start/--end (which accept a gap; a --period refuses it), gave a series with
    holes, SUCCEEDED, and no word of the days left out."""
    source = tmp_path / "granules"
    source.mkdir()
    shutil.copy(mur25, source / mur25.name)  # 2018-12-31 only
    code = main(["run", "--start", "2018-12-28", "--end", "2018-12-31", "--source", str(source), "--out",
                 str(tmp_path / "out"), "--quiet", "--recipe", "sst-global-mean"])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert code == 0 and summary["status"] == "SUCCEEDED" and summary["granules"]["succeeded"] == 1
    have = {dt.datetime.strptime(p.name[:8], "%Y%m%d").date() for p in source.iterdir()}
    days = [dt.date(2018, 12, 28) + dt.timedelta(days=n) for n in range(4)]
    missing = [str(d) for d in days if d not in have]
    assert missing == ["2018-12-28", "2018-12-29", "2018-12-30"]
    (note,) = summary["notes"]
    assert note == (f"{len(missing)} of the {len(days)} days of 2018-12-28..2018-12-31 have no granule (none was found "
                    f"when the run started), so this run added no row for them: {', '.join(missing)}")
    assert note in summary["message"] and f"note: {note}" in capsys.readouterr().out
    # every day there: no note (the 31 December run of the other tests)
    assert _run(tmp_path / "whole", source, "--recipe", "sst-global-mean")["notes"] == []


def test_days_without_a_granule_are_not_guessed_from_granules_without_a_time() -> None:
    """A recipe's own items may hold granules without a time: every day would have been "missing"."""
    from granulemap.aggregation import _days_without_a_granule
    from granulemap.models import Granule, Item

    dated = Granule(url="20181231090000-x.nc", time=dt.datetime(2018, 12, 31, 9, tzinfo=dt.UTC))
    two_days = dt.date(2018, 12, 30), dt.date(2018, 12, 31)
    (note,) = _days_without_a_granule([Item(id="i", granules=[dated])], *two_days)
    assert note.startswith("1 of the 2 days of 2018-12-30..2018-12-31 have no granule") and note.endswith(
        ": 2018-12-30")
    assert _days_without_a_granule([Item(id="i", granules=[dated, Granule(url="undated.nc")])], *two_days) == []
    assert _days_without_a_granule([], *two_days) == []  # nothing found: the message's own subject


def test_a_time_series_without_values_says_so_on_its_picture(monkeypatch) -> None:
    import datetime as dt

    import matplotlib.dates
    import matplotlib.figure

    from granulemap.recipes.timeseries import plot_time_series

    seen = {}
    save = matplotlib.figure.Figure.savefig

    def record(fig, *args, **kwargs):
        ax = fig.axes[0]
        seen.update(texts=[t.get_text() for t in ax.texts], xlim=ax.get_xlim())
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    rows = [{"time": f"2018-12-{d:02d}T09:00:00Z", "granule": f"g{d}", "mean_sst_c": ""} for d in (1, 2)]
    assert plot_time_series(rows, "mean_sst_c", "t", "mean SST (°C)").startswith(b"\x89PNG")
    assert seen["texts"] == ["no mean_sst_c in any of the 2 rows"]
    first, last = (matplotlib.dates.num2date(x).date() for x in seen["xlim"])
    assert first <= dt.date(2018, 12, 1) and dt.date(2018, 12, 2) <= last and first.year == 2018


@pytest.mark.parametrize("workers", ["0", "-1", "two"])
def test_workers_must_be_one_or_more(capsys, workers: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--recipe", "sst-global-mean", "--start", "2018-12-01", "--end", "2018-12-31", "--source", ".",
              "--out", "out", "--workers", workers])
    assert exit_.value.code == 2
    assert f"argument --workers: {workers!r}: a number of worker processes, 1 or more" in capsys.readouterr().err


def test_status_and_results_say_what_arn_they_take(capsys) -> None:
    for command in ("status", "results"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "EXECUTION_ARN  the run's execution ARN, as granulemap start printed it" in capsys.readouterr().out


def test_a_folder_with_two_granules_of_one_day_is_refused_naming_them(tmp_path: Path, synthetic_month) -> None:
    """MUR25 and MUR at 0.01° (or two versions) in one folder: both are *.nc granules of the day, and their rows,
    keyed by granule name, would alternate in one time series. Refused before anything is written; one granule a day
    goes on."""
    from granulemap.catalog import build_catalog
    from granulemap.settings import Settings
    from granulemap.storage import Bucket

    folder = tmp_path / "granules"
    folder.mkdir()
    for path in synthetic_month:
        shutil.copy(path, folder / path.name)
    first = synthetic_month[0].name  # 20181201...-MUR25-...nc
    other_product = first.replace("MUR25", "MUR")
    assert other_product != first and other_product[:8] == "20181201"
    shutil.copy(synthetic_month[0], folder / other_product)
    doc = {"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-03", "source": str(folder)}
    with pytest.raises(InvalidInput) as refused:
        build_catalog(doc, "two-products", Settings(bucket="no-such-bucket"), Bucket("no-such-bucket"))
    message = str(refused.value)
    assert message.startswith("field 'source': 1 day(s) have several granules")
    assert "2018-12-01" in message and first in message and other_product in message
    # the same folder from the 2nd on: one granule a day
    import boto3
    from moto import mock_aws

    with mock_aws():
        boto3.client("s3", region_name="us-west-2").create_bucket(
            Bucket="bucket", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        bucket = Bucket("bucket", boto3.client("s3", region_name="us-west-2"))
        out = build_catalog({**doc, "start": "2018-12-02"}, "one-product", Settings(bucket="bucket"), bucket)
        (item,) = bucket.get_json(out.catalog.key)  # one dekad
    assert sorted(g["url"].rsplit("/", 1)[-1] for g in item["granules"]) == sorted(p.name for p in synthetic_month[1:])


def test_the_schedule_s_input_is_refused_for_a_recipe_whose_granules_come_out_weeks_later() -> None:
    """ATL06 is published weeks to months after its data are taken: the schedule's "previous-month" on the 5th found
    part of the month, and the month stayed so (the schedule does not run a month again). Refused, saying how to run
    it; a month given as its period, once ended, goes on; the SST recipes' schedule too."""
    from granulemap.catalog import validate_input
    from granulemap.settings import Settings

    settings, now = Settings(bucket="bucket"), dt.datetime(2019, 4, 5, 6, tzinfo=dt.UTC)
    with pytest.raises(InvalidInput) as refused:
        validate_input({"recipe": "atl06-cell-stats", "period": "previous-month"}, settings, now)
    assert str(refused.value).startswith("field 'period': recipe atl06-cell-stats's granules are published weeks to "
                                         "months after their data are taken")
    assert "--period YYYY-MM" in str(refused.value)
    execution, _ = validate_input({"recipe": "atl06-cell-stats", "period": "2019-03"}, settings, now)
    assert execution.date_range(now) == (dt.date(2019, 3, 1), dt.date(2019, 3, 31))
    execution, _ = validate_input({"recipe": "sst-global-mean", "period": "previous-month"}, settings, now)
    assert execution.date_range(now) == (dt.date(2019, 3, 1), dt.date(2019, 3, 31))


def test_a_damaged_result_is_named_once_as_the_file_kept_here(capsys, tmp_path: Path, mur25: Path) -> None:
    """A result file under OUT/state edited by hand: the run names it once, as that file (the failure line named it
    as s3://granulemap-local/..., which a local user cannot open, and the verdict named it again)."""
    out = tmp_path / "out"
    command = ["run", "--recipe", "sst-global-mean", "--start", "2018-12-31", "--end", "2018-12-31",
               "--source", str(mur25.parent), "--out", str(out), "--quiet"]
    assert main(command) == 0
    capsys.readouterr()
    (result,) = (out / "state" / "results").rglob("*.json")
    result.write_text('{"oops": 1}')
    assert main(command) == 1
    printed = capsys.readouterr().out
    assert printed.count(str(result)) == 1 and "s3://" not in printed
    (line,) = [line for line in printed.splitlines() if str(result) in line]
    assert line.startswith("  failed ") and f"ResultDamaged: its stored result {result} is not a result record" in line


@pytest.mark.parametrize("value, says", [("NaN", "params.threshold_c is nan"), ("Infinity", "params.threshold_c is inf"),
                                         ("[1, -Infinity]", "params.threshold_c[1] is -inf")])
def test_a_param_that_is_no_json_number_is_refused_before_starting(capsys, tmp_path: Path, value: str,
                                                                  says: str) -> None:
    """--param threshold_c=nan passed (Python's JSON reads NaN), and the state machine's JSON carried it as null: the
    run failed in Aggregate with 0 of 0 items and no failure listed."""
    assert main(["run", "--recipe", "sst-global-mean", "--start", "2018-12-31", "--end", "2018-12-31", "--source",
                 str(tmp_path), "--out", str(tmp_path / "out"), "--param", f"threshold_c={value}", "--quiet"]) == 2
    assert capsys.readouterr().err == (f"granulemap: invalid execution input: field 'params': {says}, which JSON "
                                       "cannot carry: give a number\n")
    assert not (tmp_path / "out").exists()
