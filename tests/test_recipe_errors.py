"""A recipe author's ordinary mistakes: what fails (a granule, an item, the products), what is kept, and whether the
messages say what went wrong and where, in the author's own file.

The recipe here (written to a temporary site folder and registered through a real entry point, as a user's package
is) returns the day of the month of each granule, and misbehaves on the 2nd day of the month as its ``mode`` says.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
from pathlib import Path

import numpy as np
import pytest

from granulemap import recipes
from granulemap.cli import main
from granulemap.errors import RecipeResultInvalid, StorageThrottled, TransientError, where_failed
from granulemap.models import Granule, Item, RunContext
from granulemap.processing import failure_record, reduce_granules, stored_value

from conftest import install_recipe_package

ODD_RECIPE = '''
"""odd_recipes.py: the day of the month of each granule, with a mistake on the 2nd day."""

import datetime as dt
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from granulemap import layout
from granulemap.errors import TransientError
from granulemap.recipes.base import Recipe
from granulemap.recipes.ghrsst import time_from_name
from granulemap.recipes.timeseries import write_time_series


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["fine", "raise", "numpy", "list", "array", "no-time", "transient", "always", "combine", "coded",
                  "network", "long", "notes", "combine-none", "combine-local"] = "fine"


class Coded(Exception):
    """An error class whose constructor takes its own arguments (as botocore's do)."""

    def __init__(self, *, code):
        super().__init__(f"code {code}")


def mistake(mode, day):
    if mode == "always" or mode == "raise" and day == 2:
        raise ValueError(f"odd day {day}")  # MISTAKE-LINE
    if mode == "transient" and day == 2:
        raise TransientError("the network blinked")
    if mode == "coded":
        raise Coded(code=day)
    if mode == "network" and day == 2:
        from botocore.exceptions import ReadTimeoutError
        raise ReadTimeoutError(endpoint_url="https://s3.us-west-2.amazonaws.com/x")
    if mode == "long" and day == 2:
        raise ValueError("bad values: " + "9" * 5000)
    return None


class Odd(Recipe):
    name = "sst-odd-day"
    description = "Day of the month of each GHRSST granule, with a mistake on the 2nd"
    collection = "MUR25-JPL-L4-GLOB-v04.2"
    file_pattern = "*.nc"
    per_granule = True
    Params = Params

    def granule_time(self, name):
        return time_from_name(name)

    def process(self, item, params, access, run):  # PROCESS-LINE
        (granule,) = item.granules
        name = granule.url.rsplit("/", 1)[-1]
        day = time_from_name(name).day
        mistake(params.mode, day)
        row = {"time": time_from_name(name).strftime("%Y-%m-%dT%H:%M:%SZ"), "granule": name, "day": day}
        if day == 2 and params.mode == "numpy":
            return {**row, "day": np.int64(day), "half": np.float32(day / 2)}
        if day == 2 and params.mode == "list":
            return [row]
        if day == 2 and params.mode == "array":
            return {**row, "day": np.array([day])}
        if day == 2 and params.mode == "no-time":
            return {"granule": name, "day": day}
        return row

    def notes(self, results, params):
        if params.mode == "notes":
            return [str(1 / 0)]
        return []

    def combine(self, results, run, params, bucket):
        if params.mode == "combine":
            return [][0]  # COMBINE-LINE
        if params.mode == "combine-none":
            return None  # forgot to return the keys
        if params.mode == "combine-local":
            return ["day.csv"]  # as if written with pandas' to_csv("day.csv"): a local file, not in the bucket
        csv_key = layout.output_key(self.name, run.config_id, "day.csv")
        png_key = layout.output_key(self.name, run.config_id, "day.png")
        write_time_series(bucket, csv_key, png_key, ("time", "granule", "day"), results, "day", title="Day",
                          ylabel="day of the month")
        return [csv_key, png_key]


recipe = Odd()


class DayList(Odd):
    """One item per file, its result a list: any JSON value will do for a recipe that is not per granule."""

    name = "sst-day-list"
    per_granule = False

    def process(self, item, params, access, run):
        return [time_from_name(item.granules[0].url.rsplit("/", 1)[-1]).day]


day_list = DayList()


class DayDict(DayList):
    """One item per file, its result a dict: not per granule, and still a row of a time series."""

    name = "sst-day-dict"

    def process(self, item, params, access, run):
        name = item.granules[0].url.rsplit("/", 1)[-1]
        return {"time": time_from_name(name).strftime("%Y-%m-%dT%H:%M:%SZ"), "granule": name,
                "day": time_from_name(name).day}


day_dict = DayDict()


class NoName(Recipe):
    """A recipe whose class forgot its name."""

    description = "no name"

    def process(self, item, params, access, run):
        return {}

    def combine(self, results, run, params, bucket):
        return []


noname = NoName()
'''


def _run(capsys, mode: str, synthetic_month: list[Path], out: Path, *options: str) -> tuple[int, str]:
    """``granulemap run`` of sst-odd-day in ``mode`` over the three synthetic days: (exit status, what it printed)."""
    code = main(["run", "--recipe", "sst-odd-day", "--param", f"mode={mode}", "--start", "2018-12-01", "--end",
                 "2018-12-03", "--source", str(synthetic_month[0].parent), "--out", str(out), "--quiet", *options])
    return code, capsys.readouterr().out


def _line_of(marker: str) -> int:
    """The line number of ``marker`` in ODD_RECIPE as written to a file (counted here, from the text itself)."""
    return next(n for n, line in enumerate(ODD_RECIPE.splitlines(), start=1) if marker in line)


@pytest.fixture
def odd_recipe(tmp_path: Path, monkeypatch):
    yield from install_recipe_package(tmp_path / "site", monkeypatch, "odd_recipes", ODD_RECIPE,
                                      {"sst-odd-day": "odd_recipes:recipe", "sst-typo": "odd_recipes:recipee",
                                       "sst-day-list": "odd_recipes:day_list", "sst-day-dict": "odd_recipes:day_dict",
                                       "sst-noname": "odd_recipes:noname"})


def _granule(day: int) -> Granule:
    name = f"201812{day:02d}090000-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2.nc"
    return Granule(url=f"/nowhere/{name}", time=dt.datetime(2018, 12, day, 9, tzinfo=dt.UTC))


def _reduce(mode: str, days: tuple[int, ...] = (1, 2, 3)):
    recipe = recipes.get_recipe("sst-odd-day")
    params = recipe.parse_params({"mode": mode})
    run = RunContext(run_id="r", recipe=recipe.name, params=params.model_dump(mode="json"),
                     config_id=recipe.config_id(params))
    item = Item(id="20181201-20181210", granules=[_granule(d) for d in days])
    return reduce_granules(recipe, item, params, access=None, run=run)  # the recipe reads nothing


def test_an_error_of_the_recipes_own_code_fails_its_granule_alone_and_says_where(odd_recipe) -> None:
    results, failures = _reduce("raise")
    assert [r["day"] for r in results] == [1, 3]
    (failure,) = failures
    assert failure.granule.startswith("20181202") and failure.error == "ValueError" and failure.cause == "odd day 2"
    assert failure.where == f"odd_recipes.py:{_line_of('MISTAKE-LINE')} in mistake"


def test_numpy_scalars_are_stored_as_python_numbers(odd_recipe) -> None:
    results, failures = _reduce("numpy")
    assert not failures
    assert type(results[1]["day"]) is int and results[1]["day"] == 2
    assert type(results[1]["half"]) is float and results[1]["half"] == 1.0
    json.dumps(results)  # storable as it is


@pytest.mark.parametrize(("mode", "words"), [
    ("list", "returned a list; a per-granule recipe returns one dict per granule"),
    ("array", "the result['day'] is a ndarray, which a result cannot hold"),
])
def test_a_result_that_cannot_be_stored_fails_its_granule_with_what_is_wrong(odd_recipe, mode, words) -> None:
    results, failures = _reduce(mode)
    assert [r["day"] for r in results] == [1, 3]
    (failure,) = failures
    assert failure.error == "RecipeResultInvalid" and words in failure.cause and "20181202" in failure.cause
    assert failure.where == f"odd_recipes.py:{_line_of('PROCESS-LINE')} in process"  # the recipe's, not granulemap's


def test_every_granule_failing_with_an_error_of_its_own_kind_fails_the_item_with_that_error(odd_recipe) -> None:
    with pytest.raises(Exception, match=r"^code 1$") as info:  # its class cannot be built from one message
        _reduce("coded")
    assert type(info.value).__name__ == "Coded"


def test_a_network_error_in_a_granule_fails_the_item_to_be_retried(odd_recipe) -> None:
    with pytest.raises(StorageThrottled, match="20181202.*the network failed: ReadTimeoutError"):
        _reduce("network")


def test_a_long_message_is_shortened_in_the_failure(odd_recipe) -> None:
    _, (failure,) = _reduce("long")
    assert failure.cause.startswith("bad values: 999") and failure.cause.endswith("(4012 more characters)")
    assert len(failure.cause) < 1100
    assert "Traceback" in failure.trace and "bad values" in failure.trace
    assert "trace" not in failure.model_dump()  # for the log line only: never stored nor returned


def test_stored_value_names_where_in_the_result_the_bad_value_is() -> None:
    with pytest.raises(RecipeResultInvalid, match=r"the result\['a'\]\[1\] is a date, .*isoformat"):
        stored_value({"a": [1, dt.date(2020, 1, 1)]}, "recipe x: process() for g.nc")
    with pytest.raises(RecipeResultInvalid, match="key 3 of the result is a int"):
        stored_value({3: 1}, "recipe x")
    assert stored_value({"n": [np.int32(3), (np.float64(0.5), None)]}, "x") == {"n": [3, [0.5, None]]}


def test_a_transient_error_still_fails_the_whole_item_for_the_state_machine_to_retry(odd_recipe) -> None:
    with pytest.raises(TransientError):
        _reduce("transient")


def test_an_item_whose_every_granule_failed_fails_with_the_recipes_frame_innermost(odd_recipe) -> None:
    with pytest.raises(ValueError) as info:
        _reduce("always")
    # the first granule's name, its error, then the others': the item's failure record says which granules failed
    first, second = (_granule(d).url.rsplit("/", 1)[-1] for d in (1, 2))
    assert str(info.value).startswith(f"{first}: odd day 1 (every other granule of the item failed too: {second} "
                                      "(ValueError), ")
    tb = info.value.__traceback__
    while tb.tb_next:
        tb = tb.tb_next
    assert (Path(tb.tb_frame.f_code.co_filename).name, tb.tb_lineno) == ("odd_recipes.py", _line_of("MISTAKE-LINE"))


def test_an_item_failing_with_a_result_that_cannot_be_stored_is_placed_at_the_recipes_process(odd_recipe) -> None:
    """Its traceback ends in granulemap's code (process() had returned): the run's failure record said
    "processing.py:175 in _stored", where `granulemap process` named the recipe's own file."""
    import traceback

    with pytest.raises(RecipeResultInvalid) as info:
        _reduce("list", days=(2,))  # the item's only granule returns a list
    frames = traceback.extract_tb(info.value.__traceback__)
    assert Path(frames[-1].filename).name == "processing.py"  # the premise: no frame of the recipe's
    # the Lambda Python runtime's error payload for it
    cause = json.dumps({"errorMessage": str(info.value), "errorType": "RecipeResultInvalid",
                        "stackTrace": traceback.format_list(frames)})
    recipe = recipes.get_recipe("sst-odd-day")
    run = RunContext(run_id="r", recipe=recipe.name, params={}, config_id="c")
    record = failure_record(Item(id="i", granules=[_granule(2)]), run, {"Error": "RecipeResultInvalid",
                                                                         "Cause": cause})
    assert record["where"] == f"odd_recipes.py:{_line_of('PROCESS-LINE')} in process"
    # one the recipe raised itself keeps its place
    home = str(odd_recipe / "odd_recipes.py")
    own = json.dumps({"errorMessage": "x", "errorType": "RecipeResultInvalid", "stackTrace": [
        *traceback.format_list(frames[:-1]), f'  File "{home}", line 21, in mistake\n    raise ...\n']})
    kept = failure_record(Item(id="i", granules=[_granule(2)]), run, {"Error": "RecipeResultInvalid", "Cause": own})
    assert kept["where"] == "odd_recipes.py:21 in mistake"


def test_an_item_failure_record_says_where_from_the_lambda_error_payload(odd_recipe, tmp_path: Path) -> None:
    recipe = recipes.get_recipe("sst-odd-day")
    home = str(odd_recipe / "odd_recipes.py")
    # The Lambda Python runtime's error payload: stackTrace entries as traceback.format_list writes them.
    cause = json.dumps({"errorMessage": "odd day 2", "errorType": "ValueError", "stackTrace": [
        '  File "/var/task/app.py", line 30, in handler\n    result = process_item(...)\n',
        f'  File "{home}", line 21, in mistake\n    raise ValueError(...)\n',
        '  File "/opt/python/numpy/_core/fromnumeric.py", line 57, in _wrapfunc\n    return bound(*args)\n',
    ]})

    run = RunContext(run_id="r", recipe=recipe.name, params={}, config_id="c")
    # what RecordFailure stores (the Map's caught error, as it is) made readable for the summary
    record = failure_record(Item(id="i", granules=[_granule(2)]), run, {"Error": "ValueError", "Cause": cause})
    # the item's only granule is what failed (a per-granule recipe's item of one granule: --group granule, a lone day)
    assert record == {"item": "i", "error": "ValueError", "cause": "odd day 2", "where": "odd_recipes.py:21 in mistake",
                      "granule": "20181202090000-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2.nc"}
    two = Item(id="20181201-20181210", granules=[_granule(1), _granule(2)])  # every granule failed: the item
    assert "granule" not in failure_record(two, run, {"Error": "ValueError", "Cause": "odd day 1"})
    cells = run.model_copy(update={"recipe": "atl06-cell-stats"})  # an item of one granule is a parent cell here
    assert "granule" not in failure_record(Item(id="p", granules=[_granule(2)]), cells,
                                           {"Error": "ValueError", "Cause": "x"})
    # A recipe that cannot be found (renamed by a deploy during the run): the failure is still described.
    gone = run.model_copy(update={"recipe": "sst-gone"})
    record = failure_record(Item(id="j", granules=[_granule(2)]), gone,
                            {"Error": "InvalidInput", "Cause": "unknown recipe"})
    assert record == {"item": "j", "error": "InvalidInput", "cause": "unknown recipe"}
    # A record stored in this form already (by a Processor of an earlier release) is taken as it is
    assert failure_record(Item(id="j", granules=[]), gone, {"error": "E", "cause": "c"}) == {
        "item": "j", "error": "E", "cause": "c"}
    # Nothing said: still a failure
    assert failure_record(Item(id="k", granules=[]), gone, {}) == {"item": "k", "error": "Unknown", "cause": ""}


def test_where_failed_falls_back_to_the_innermost_frame_outside_the_recipe() -> None:
    frames = [("/var/task/app.py", 3, "handler"), ("/opt/python/granulemap/processing.py", 9, "process_item")]
    assert where_failed(frames, "/home/me/my_recipes.py") == "processing.py:9 in process_item"
    assert where_failed(frames, "/opt/python/granulemap") == "granulemap/processing.py:9 in process_item"
    assert where_failed([], "/x") is None


def test_recipes_lists_the_others_when_one_entry_point_is_broken(odd_recipe, capsys) -> None:
    assert main(["recipes"]) == 1
    out = capsys.readouterr().out
    assert "sst-odd-day" in out and "sst-global-mean" in out and "atl06-cell-stats" in out
    (typo,) = [line for line in out.splitlines() if line.startswith("sst-typo")]
    assert "cannot be loaded from its entry point odd_recipes:recipee: AttributeError" in typo


def test_run_with_a_broken_entry_point_is_refused_in_one_line(odd_recipe, capsys, tmp_path: Path) -> None:
    code = main(["run", "--recipe", "sst-typo", "--start", "2018-12-01", "--end", "2018-12-03", "--source",
                 str(tmp_path), "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "recipe 'sst-typo' cannot be loaded from its entry point odd_recipes:recipee" in err
    assert "Traceback" not in err


def test_process_goes_on_after_a_granule_whose_recipe_code_failed(odd_recipe, synthetic_month, capsys) -> None:
    code = main(["process", "--recipe", "sst-odd-day", "--param", "mode=raise", *map(str, synthetic_month)])
    assert code == 1
    captured = capsys.readouterr()
    assert [json.loads(line)["day"] for line in captured.out.splitlines()] == [1, 3]
    assert "Traceback" in captured.err  # the author's code failed: the whole trace, to debug it
    assert f"ValueError: odd day 2 (at odd_recipes.py:{_line_of('MISTAKE-LINE')} in mistake)" in captured.err


@pytest.mark.slow
def test_a_run_keeps_the_other_granules_and_says_where_one_failed(odd_recipe, synthetic_month, tmp_path,
                                                                 capsys) -> None:
    out = tmp_path / "out"
    code, printed = _run(capsys, "raise", synthetic_month, out, "--tolerated-failure-percentage", "50")
    assert code == 0, printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["granules"] == {"total": 3, "succeeded": 2, "skipped": 0, "failed": 1}
    (failure,) = summary["failures"]
    assert failure["where"] == f"odd_recipes.py:{_line_of('MISTAKE-LINE')} in mistake"
    assert f"(at odd_recipes.py:{_line_of('MISTAKE-LINE')} in mistake)" in printed
    assert "the same command again computes only what failed" in printed  # exit 0: said, not only listed
    days = [line.split(",")[2] for line in (out / "day.csv").read_text().splitlines()[1:]]
    assert days == ["1", "3"]
    # The granule's traceback is in the Processor's "granule failed" log line (CloudWatch in AWS).
    (logged,) = [json.loads(line) for line in (out / "logs" / "functions.log").read_text().splitlines()
                 if '"granule failed"' in line]
    assert logged["granule"] == failure["granule"] and "ValueError: odd day 2" in logged["trace"]
    assert f'odd_recipes.py", line {_line_of("MISTAKE-LINE")}, in mistake' in logged["trace"]


@pytest.mark.slow
def test_a_failing_combine_still_writes_the_counts_and_says_what_to_do(odd_recipe, synthetic_month, tmp_path,
                                                                      capsys) -> None:
    out = tmp_path / "out"
    code, printed = _run(capsys, "combine", synthetic_month, out)
    assert code == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "FAILED"
    assert summary["granules"] == {"total": 3, "succeeded": 3, "skipped": 0, "failed": 0}
    assert f"IndexError: list index out of range (at odd_recipes.py:{_line_of('COMBINE-LINE')} in combine)" in printed
    assert "mend the recipe and run the same range again" in printed and (out / "provenance.json").exists()
    functions_log = (out / "logs" / "functions.log").read_text()
    assert "[ERROR] AggregatorFunction RecipeFailed" in functions_log and "Traceback" in functions_log


@pytest.mark.slow
def test_a_time_series_row_without_time_is_named(odd_recipe, synthetic_month, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code, printed = _run(capsys, "no-time", synthetic_month, out)
    assert code == 1
    assert "RecipeResultInvalid: a time-series row needs 'time' and 'granule'; this one has no 'time'" in printed
    assert "--recompute" in printed


def test_an_unknown_parameter_lists_the_known_ones(odd_recipe, capsys, tmp_path: Path) -> None:
    code = main(["process", "--recipe", "sst-odd-day", "--param", "mdoe=raise", str(tmp_path / "x.nc")])
    assert code == 2
    assert "field 'mdoe': Extra inputs are not permitted (known: mode)" in capsys.readouterr().err


def test_provenance_names_the_version_of_the_package_that_provides_the_recipe(odd_recipe) -> None:
    from granulemap.provenance import software_versions

    versions = software_versions("sst-odd-day")
    assert versions["odd-recipes"] == "0.1.0"  # the fixture's distribution (install_recipe_package)
    assert "odd-recipes" not in software_versions("sst-global-mean")


def test_process_prints_a_result_of_a_recipe_that_is_not_per_granule_as_it_is(odd_recipe, synthetic_month,
                                                                              capsys) -> None:
    assert main(["process", "--recipe", "sst-day-list", str(synthetic_month[1])]) == 0
    assert json.loads(capsys.readouterr().out) == [2]


def test_the_summary_lines_read_failures_of_a_newer_version(capsys) -> None:
    from granulemap.cloud import print_summary

    print_summary({"status": "FAILED", "items": {"total": 1, "succeeded": 0, "failed": 1, "skipped": 0},
                   "failures": [{"item": "i", "error": "E", "cause": "c", "where": "w.py:1 in f", "new_field": 1}]})
    assert "  failed i: E: c (at w.py:1 in f)" in capsys.readouterr().out


@pytest.mark.slow
def test_notes_that_fail_leave_the_products_and_say_so(odd_recipe, synthetic_month, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code, printed = _run(capsys, "notes", synthetic_month, out)
    assert code == 0, printed
    summary = json.loads((out / "summary.json").read_text())
    (note,) = summary["notes"]
    assert note.startswith("the recipe's notes could not be made: ZeroDivisionError: division by zero (at odd_recipes")
    assert len((out / "day.csv").read_text().splitlines()) == 4  # the header and three days
    # and its traceback is in the functions' log, as README says of a recipe's errors (it was nowhere)
    logged = [json.loads(line) for line in (out / "logs" / "functions.log").read_text().splitlines()
              if line.startswith("{") and "notes could not be made" in line]
    (line,) = logged
    assert line["recipe"] == "sst-odd-day" and "ZeroDivisionError" in line["exception"], line


@pytest.mark.parametrize("error", ["ReadTimeoutError", "ResponseStreamingError", "EndpointConnectionError"])
def test_a_granule_read_cut_short_by_the_network_is_storage_throttled(monkeypatch, error: str) -> None:
    """GranuleAccess.read_bytes: botocore's network errors (not ClientErrors) become StorageThrottled, which the state
    machine retries, as S3's own throttling does."""
    import botocore.exceptions

    from granulemap.granule_access import GranuleAccess

    kwargs = {"ReadTimeoutError": {"endpoint_url": "https://s3"}, "ResponseStreamingError": {"error": "cut"},
              "EndpointConnectionError": {"endpoint_url": "https://s3"}}[error]

    class Client:
        def get_object(self, **_):
            raise getattr(botocore.exceptions, error)(**kwargs)

    access = GranuleAccess(RunContext(run_id="r", recipe="sst-global-mean", params={}, config_id="c"))
    monkeypatch.setattr(access, "_s3_client", lambda creds: Client())
    with pytest.raises(StorageThrottled, match="s3://bucket/g.nc"):
        access.read_bytes("s3://bucket/g.nc")


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "words"), [
    ("combine-none", "recipe sst-odd-day's combine() returned None: it must return the list of the bucket keys it "
                     "wrote ([] if none)"),
    ("combine-local", "recipe sst-odd-day's combine() returned keys that are not in the bucket: day.csv. It must "
                      "write its products to the bucket it is given"),
])
def test_a_combine_that_does_not_return_the_keys_it_wrote_fails_the_run_saying_so(
        odd_recipe, synthetic_month, tmp_path, capsys, mode: str, words: str) -> None:
    """A combine that returned nothing, or wrote a local file and returned its name: the run used to succeed (then
    `granulemap run` crashed fetching a product that is not there, or Aggregate failed with an AttributeError)."""
    out = tmp_path / "out"
    code, printed = _run(capsys, mode, synthetic_month, out)
    assert code == 1, printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "FAILED" and words in summary["message"]
    assert summary["granules"] == {"total": 3, "succeeded": 3, "skipped": 0, "failed": 0}  # stored, used again
    assert "mend the recipe and run the same range again" in printed and (out / "provenance.json").exists()


def test_a_recipe_without_a_name_is_refused_naming_what_to_set(odd_recipe) -> None:
    from granulemap.errors import InvalidInput

    with pytest.raises(InvalidInput, match="the recipe registered as 'sst-noname' .* has no name: set "
                                           "name = 'sst-noname' in its class"):
        recipes.get_recipe("sst-noname")


@pytest.mark.slow
def test_a_recipe_not_per_granule_whose_results_are_rows_gets_computed_at(odd_recipe, synthetic_month, tmp_path,
                                                                         capsys) -> None:
    out = tmp_path / "out"
    code = main(["run", "--recipe", "sst-day-dict", "--start", "2018-12-01", "--end", "2018-12-03", "--source",
                 str(synthetic_month[0].parent), "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().out
    rows = list(csv.DictReader((out / "day.csv").open()))
    assert [r["day"] for r in rows] == ["1", "2", "3"]
    for row in rows:  # when its item was computed: during this run
        when = dt.datetime.fromisoformat(row["computed_at"].replace("Z", "+00:00"))
        assert abs((dt.datetime.now(dt.UTC) - when).total_seconds()) < 600


@pytest.mark.parametrize(("value", "hint"), [
    (np.ma.masked, "every value it was computed from was masked"),  # e.g. the mean of an all-fill granule
    (np.ma.array([1.0, 2.0], mask=[False, True]), "x.filled(np.nan).tolist() or x.compressed().tolist()"),
])
def test_a_masked_value_in_a_result_is_refused_with_what_to_give_instead(value, hint: str) -> None:
    with pytest.raises(RecipeResultInvalid, match=re.escape(hint)):
        stored_value({"mean": value}, "granule x.nc")
