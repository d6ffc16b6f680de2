"""Tests for mutations of the user-facing and local-run code that the suite let through (a hand mutation audit of
executions.py, catalog.py's plan_run and refusal, cloud.py, cli.py, local/run.py, local/engine.py, provenance.py,
plotting.py, recipes/base.py's config_id and errors.py): each test fails on the mutant it is named for and passes on
the code as written; the expected values are worked out here, not by the code under test."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from granulemap import cloud
from granulemap.catalog import plan_run, refuse_a_second_run_of_the_period
from granulemap.cli import main
from granulemap.errors import RunInProgress, TransientError, readable_cause, where_failed
from granulemap.executions import OtherRun, running_before
from granulemap.settings import Settings

import test_cloud_cli
from conftest import install_recipe_package
from test_cloud_cli import REGION, STACK, start, wait

aws, stack = test_cloud_cli.aws, test_cloud_cli.stack  # the fixtures of test_cloud_cli's stand-in stack

SETTINGS = Settings(bucket="bucket")
SM = "arn:aws:states:us-west-2:123456789012:stateMachine:stack-pipeline"
MARCH = {"recipe": "atl06-cell-stats", "start": "2019-03-01", "end": "2019-03-31"}
STARTED = dt.datetime(2019, 4, 1, 6, tzinfo=dt.UTC)


def _arn(name: str) -> str:
    return f"arn:aws:states:us-west-2:123456789012:execution:stack-pipeline:{name}"


class _Listing:
    """A Step Functions client whose ListExecutions gives ``listed`` (arn → start) and whose DescribeExecution
    answers ``status`` for each."""

    def __init__(self, listed: dict[str, dt.datetime], status: str = "RUNNING"):
        self.listed, self.status = listed, status

    def get_paginator(self, name: str) -> Any:
        return self

    def paginate(self, **_: Any) -> list[dict]:
        return [{"executions": [{"executionArn": a, "startDate": s} for a, s in self.listed.items()]}]

    def describe_execution(self, executionArn: str) -> dict:  # noqa: N803
        return {"executionArn": executionArn, "name": executionArn.rsplit(":", 1)[1],
                "startDate": self.listed[executionArn], "status": self.status, "input": json.dumps(MARCH)}


# ---- executions.running_before --------------------------------------------------------------------------------
def test_an_execution_that_ended_between_the_listing_and_its_description_is_not_a_run_before_this_one() -> None:
    """Mutant: DescribeExecution's status not looked at. A run that ended meanwhile refused the next one (the
    schedule's month, say, which nobody starts again)."""
    earlier = _arn("ended-since")
    ended = _Listing({earlier: STARTED - dt.timedelta(minutes=5)}, status="SUCCEEDED")
    assert running_before(SM, _arn("own"), STARTED, client=ended) == []
    still = _Listing({earlier: STARTED - dt.timedelta(minutes=5)})
    assert [r.arn for r in running_before(SM, _arn("own"), STARTED, client=still)] == [earlier]


def test_of_runs_started_at_the_same_instant_only_those_before_this_one_by_arn_count() -> None:
    """Mutant: ``>`` for ``>=`` in the (start, ARN) order. Two runs started in the same instant each counted the
    other as earlier: both were refused, and the period not run at all."""
    own, before, after = _arn("b-own"), _arn("a-before"), _arn("c-after")
    listing = _Listing({before: STARTED, own: STARTED, after: STARTED})
    assert [r.arn for r in running_before(SM, own, STARTED, client=listing)] == [before]
    # and from the other run's side: it sees none before it, so one of the two goes on
    assert running_before(SM, before, STARTED, client=listing) == []


def test_a_network_failure_while_listing_is_a_transient_error() -> None:
    """Mutant: a network error raised as it is. BuildCatalog's TransientError is retried by the state machine; any
    other error fails the run."""

    class Unreachable:
        def get_paginator(self, name: str) -> Any:
            raise EndpointConnectionError(endpoint_url="https://states.us-west-2.amazonaws.com")

    with pytest.raises(TransientError, match="did not answer"):
        running_before(SM, _arn("own"), None, client=Unreachable())


# ---- catalog.plan_run and refuse_a_second_run_of_the_period --------------------------------------------------
def _expected_id(slug: str, identity: dict) -> str:
    """A configuration id as the README's contract has it: the slug, then 10 hex digits of the SHA-256 of the
    identity's JSON with sorted keys."""
    return f"{slug}-{hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]}"


def test_the_run_s_configuration_id_counts_its_collection_and_its_bbox() -> None:
    """Mutant: plan_run's config_id without the execution input. A run of another collection (MUR at 0.01°) wrote its
    rows into the default collection's series, an ATL06 run over a box into the global store."""
    sst = {"recipe": "sst-global-mean", "start": "2019-01-01", "end": "2019-01-31"}
    assert plan_run(sst, SETTINGS).config_id == "ocean-0ce2392566"  # pinned in test_configuration_ids
    other = plan_run({**sst, "collection": "MUR-JPL-L4-GLOB-v4.1"}, SETTINGS)
    assert other.config_id == _expected_id("ocean", {"params": {"method": "ocean"},
                                                     "collection": "MUR-JPL-L4-GLOB-v4.1"})
    box = [-60.0, -80.0, -30.0, -60.0]
    atl06 = plan_run({**MARCH, "bbox": box}, SETTINGS)
    assert atl06.config_id == _expected_id("p6-c12", {"params": {"parent_order": 6, "child_order": 12},
                                                      "bbox": box})
    # the box as given, not its numbers in another order: another box (valid too) is another configuration
    turned = plan_run({**MARCH, "bbox": [-80.0, -60.0, -60.0, -30.0]}, SETTINGS)
    assert turned.config_id not in (atl06.config_id, "p6-c12-d597eec96f")
    # and a run of the same month over another collection does not refuse this one
    refuse_a_second_run_of_the_period(plan_run(sst, SETTINGS), [
        OtherRun(arn=_arn("mur"), name="mur", started=STARTED, input={**sst, "collection": "MUR-JPL-L4-GLOB-v4.1"})],
        SETTINGS)


def test_a_run_that_ends_on_the_same_day_but_starts_on_another_is_another_period() -> None:
    """Mutant: the start left out of the comparison."""
    plan = plan_run(MARCH, SETTINGS, STARTED)
    refuse_a_second_run_of_the_period(plan, [
        OtherRun(arn=_arn("later-start"), name="later-start", started=STARTED, input={**MARCH, "start": "2019-03-02"})],
        SETTINGS)
    with pytest.raises(RunInProgress):
        refuse_a_second_run_of_the_period(plan, [OtherRun(arn=_arn("same"), name="same", started=STARTED,
                                                          input=MARCH)], SETTINGS)


PLAIN_RECIPES = '''
from granulemap.recipes.base import Recipe


class Plain(Recipe):
    name = "plain-one"
    description = "No parameters"

    def process(self, item, params, access, run):
        return {}

    def combine(self, results, run, params, bucket):
        return []


class Other(Plain):
    name = "plain-two"


one, two = Plain(), Other()
'''


@pytest.fixture
def plain_recipes(tmp_path: Path, monkeypatch):
    yield from install_recipe_package(tmp_path / "site", monkeypatch, "plain_recipes", PLAIN_RECIPES,
                                      {"plain-one": "plain_recipes:one", "plain-two": "plain_recipes:two"})


def test_two_recipes_of_one_configuration_id_are_not_one_run(plain_recipes, tmp_path: Path) -> None:
    """Mutant: the recipe's name left out of the comparison. Two recipes without parameters have the same
    configuration id ("default-..."): the run of one refused the other's, though they write different products."""
    one = {"recipe": "plain-one", "start": "2019-03-01", "end": "2019-03-31", "source": str(tmp_path)}
    two = {**one, "recipe": "plain-two"}
    assert plan_run(one, SETTINGS).config_id == plan_run(two, SETTINGS).config_id  # the premise
    refuse_a_second_run_of_the_period(plan_run(two, SETTINGS), [
        OtherRun(arn=_arn("one"), name="one", started=STARTED, input=one)], SETTINGS)


# ---- cloud: start, status, results ----------------------------------------------------------------------------
def test_start_goes_on_without_the_right_to_list_executions_and_stops_on_other_refusals(stack, monkeypatch) -> None:
    """Mutant: start_run's AccessDeniedException not caught. A role allowed to start runs but not to list them could
    not start any (BuildCatalog checks the period all the same)."""
    import granulemap.executions

    def refused(code: str):
        def listing(*_a: Any, **_k: Any) -> list:
            raise ClientError({"Error": {"Code": code, "Message": "no"}}, "ListExecutions")
        return listing

    doc = {"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-31"}
    sfn = boto3.client("stepfunctions", region_name=REGION)
    monkeypatch.setattr(granulemap.executions, "running_before", refused("AccessDeniedException"))
    arn = cloud.start_run(cloud.describe_stack(STACK), doc)
    assert [e["executionArn"] for e in sfn.list_executions(stateMachineArn=stack["state_machine"])["executions"]] == [
        arn]
    monkeypatch.setattr(granulemap.executions, "running_before", refused("ValidationException"))
    with pytest.raises(ClientError, match="ValidationException"):
        cloud.start_run(cloud.describe_stack(STACK), {**doc, "end": "2018-12-30"})
    assert len(sfn.list_executions(stateMachineArn=stack["state_machine"])["executions"]) == 1


def test_status_and_results_of_an_aborted_run_exit_1_and_say_why(stack, capsys, monkeypatch) -> None:
    """Mutants: status exits 1 only for FAILED (an ABORTED or TIMED_OUT run exited 0, "done"); results without a
    summary give the error and cause only for FAILED."""
    arn = start(capsys, "--start", "2018-12-01", "--end", "2018-12-31", "--collection", "SLOW")
    sfn = boto3.client("stepfunctions", region_name=REGION)
    deadline = time.monotonic() + 20
    # moto stops an execution only once its program runs
    while cloud._current_state(cloud._newest_events(sfn, arn)) != "Slow":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    sfn.stop_execution(executionArn=arn, error="Stopped", cause="stopped by the operator")
    assert wait(arn)["status"] == "ABORTED"
    client = cloud._client

    def with_stop_reason(service: str, region: str | None = None) -> Any:
        """moto forgets the error and cause a stop gave; DescribeExecution in AWS returns them."""
        made = client(service, region)
        if service == "stepfunctions":
            describe = made.describe_execution
            made.describe_execution = lambda **kw: {**describe(**kw), "error": "Stopped",
                                                    "cause": "stopped by the operator"}
        return made

    # a stop that gave no reason (moto's, or `aws stepfunctions stop-execution` without --error/--cause): no "(: None)"
    assert main(["results", arn, "--stack", STACK]) == 1
    assert "the run is ABORTED. It ended before Aggregate wrote it, or Aggregate's was deleted since" in (
        capsys.readouterr().err)
    monkeypatch.setattr(cloud, "_client", with_stop_reason)
    assert main(["status", arn]) == 1
    assert "status: ABORTED" in capsys.readouterr().out.splitlines()
    assert main(["results", arn, "--stack", STACK]) == 1
    assert "the run is ABORTED (Stopped: stopped by the operator)" in capsys.readouterr().err


def test_status_counts_aborted_and_timed_out_items_and_shows_them_as_failed_in_the_progress_line(
        monkeypatch, capsys) -> None:
    """Mutants: the "(N aborted, N timed out)" part dropped; the progress line's failed count without them; a run
    that TIMED_OUT not a failed one (exit 0)."""
    counts = {"succeeded": 5, "failed": 1, "running": 0, "pending": 0, "aborted": 2, "timedOut": 1, "total": 9,
              "elapsed_seconds": 3.0}
    monkeypatch.setattr(cloud, "run_status", lambda arn: cloud.RunStatus(
        execution_arn=arn, status="TIMED_OUT", current_state="ProcessItems", items=counts, error="States.Timeout",
        cause="the execution ran longer than its TimeoutSeconds"))
    assert main(["status", _arn("x")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert "items: 5 succeeded, 1 failed, 0 running, 0 pending of 9 (2 aborted, 1 timed out)" in lines
    (progress,) = [line for line in lines if line.startswith("[")]
    assert " 9/9 items (5 ok, 0 skipped, 4 failed) " in progress  # 1 failed + 2 aborted + 1 timed out


def test_status_counts_the_latest_map_run() -> None:
    """Mutant: the earliest Map Run's counts (a redriven run has several)."""

    class TwoMapRuns:
        def list_map_runs(self, executionArn: str) -> dict:  # noqa: N803
            return {"mapRuns": [{"mapRunArn": "redriven", "startDate": STARTED + dt.timedelta(hours=1)},
                                {"mapRunArn": "first", "startDate": STARTED}]}

        def describe_map_run(self, mapRunArn: str) -> dict:  # noqa: N803
            done = {"first": 2, "redriven": 7}[mapRunArn]
            return {"itemCounts": {"succeeded": done, "total": 9}}

    assert cloud._item_counts(TwoMapRuns(), _arn("x"))["succeeded"] == 7


def test_status_names_the_month_the_schedule_resolved_when_the_run_started_not_now() -> None:
    """Mutant: "previous-month" resolved against the time status is run (the month before this one)."""
    desc = {"input": json.dumps({"recipe": "sst-global-mean", "period": "previous-month"}), "startDate": STARTED}
    assert cloud._what_it_runs(desc) == "sst-global-mean, 2019-03-01..2019-03-31"


def _printed(summary: dict, **kwargs: Any) -> list[str]:
    import io

    out = io.StringIO()
    cloud.print_summary(summary, file=out, **kwargs)
    return out.getvalue().splitlines()


def test_the_summary_of_a_run_that_found_nothing_says_why_though_it_succeeded() -> None:
    """Mutant: the message printed only for a run that did not succeed. `granulemap run` over a folder without the
    dates' granules printed "0 computed ... of 0" and not what the folder holds."""
    why = "no granules matched the recipe, dates and source: nothing to do: /data holds 2 files: none dated ..."
    lines = _printed({"status": "SUCCEEDED", "items": {"total": 0, "succeeded": 0, "failed": 0, "skipped": 0},
                      "granules": None, "message": why, "outputs": []})
    assert why in lines
    done = _printed({"status": "SUCCEEDED", "items": {"total": 2, "succeeded": 2, "failed": 0, "skipped": 0},
                     "granules": None, "message": "items: 2 computed, 0 skipped (already done), 0 failed",
                     "outputs": []})
    assert sum("computed" in line for line in done) == 1  # a run that did something: its counts once


def test_twenty_failures_are_all_shown_without_a_line_of_none_more() -> None:
    """Mutant: ``>=`` for ``>``: "and 0 more failed" under exactly 20."""
    failures = [{"item": f"g{k}", "error": "GranuleUnreadable", "cause": "truncated"} for k in range(20)]
    lines = _printed({"status": "FAILED", "items": {"total": 20, "succeeded": 0, "failed": 20, "skipped": 0},
                      "failures": failures, "outputs": []})
    assert len([line for line in lines if line.startswith("  failed ")]) == 20
    assert not [line for line in lines if "more failed" in line]
    lines = _printed({"status": "FAILED", "items": {"total": 21, "succeeded": 0, "failed": 21, "skipped": 0},
                      "failures": failures + [{"item": "g20", "error": "E", "cause": "c"}], "outputs": []})
    assert "  and 1 more failed: summary.json lists them all" in lines


def test_the_items_line_under_granule_counts_gives_each_count_of_its_own() -> None:
    """Mutant: the items' skipped count printed as their failed count (the existing test's counts were 0 and 0)."""
    lines = _printed({"status": "FAILED", "items": {"total": 9, "succeeded": 4, "failed": 3, "skipped": 2},
                      "granules": {"total": 90, "succeeded": 60, "failed": 10, "skipped": 20}, "outputs": []})
    assert lines[:2] == ["FAILED: granules: 60 computed, 20 skipped (already done), 10 failed of 90",
                         "  items (Processor calls): 4 computed, 2 skipped, 3 failed of 9"]


# ---- cli: --method of run and start ---------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["run", "start"])
def test_method_of_run_and_start_is_the_recipe_s_method_and_may_not_disagree_with_param(command: str,
                                                                                        capsys) -> None:
    """Mutants: --method left out of the execution input (a run with --method podaac-tutorial computed the ocean
    mean, the README's own example); --method and --param method that disagree taken without a word."""
    from granulemap.cli import build_parser, execution_input

    base = [command, "--recipe", "sst-global-mean", "--period", "2018-12"] + (
        ["--source", ".", "--out", "out"] if command == "run" else ["--stack", "s"])
    args = build_parser().parse_args([*base, "--method", "podaac-tutorial"])
    assert execution_input(args)["params"] == {"method": "podaac-tutorial"}
    same = build_parser().parse_args([*base, "--method", "ocean", "--param", "method=ocean"])
    assert execution_input(same)["params"] == {"method": "ocean"}
    assert main([*base, "--method", "podaac-tutorial", "--param", "method=ocean"]) == 2
    assert '--method podaac-tutorial and --param method="ocean" disagree: give one' in capsys.readouterr().err


# ---- errors ---------------------------------------------------------------------------------------------------
def test_a_cause_s_error_type_leads_only_when_it_is_not_the_execution_s_error_and_odd_causes_stay_as_they_are() -> None:
    """Mutants: the type prefixed even when it is the execution's error ("GranuleUnreadable: GranuleUnreadable: ...");
    a cause that is JSON but not an object (a Fail state's Cause of "42", "null") crashed status and results."""
    payload = json.dumps({"errorType": "GranuleUnreadable", "errorMessage": "truncated"})
    assert readable_cause(payload, "GranuleUnreadable") == "truncated"
    assert readable_cause(payload, "CatalogFailed") == "GranuleUnreadable: truncated"
    assert readable_cause(payload) == "truncated"
    for odd in ("42", "null", '["a"]', '"text"'):
        assert readable_cause(odd, "CatalogFailed") == odd


def test_where_failed_takes_only_the_recipe_s_own_folder_not_one_whose_name_starts_alike() -> None:
    """Mutant: a frame in /site/odd_helpers/ taken as in the recipe package /site/odd (a prefix of its path)."""
    frames = [("/site/odd/recipe.py", 10, "process"), ("/site/odd_helpers/util.py", 20, "helper")]
    assert where_failed(frames, "/site/odd") == "odd/recipe.py:10 in process"


# ---- provenance -----------------------------------------------------------------------------------------------
def test_the_provenance_record_keeps_every_failure_count_and_the_run_s_identity() -> None:
    """Mutants: the failures cut to the first, the granule counts, the item counts or the configuration id dropped,
    the end date written as the start."""
    from granulemap.models import Failure, Granule, Item, ItemCounts, RunContext
    from granulemap.provenance import provenance_record

    run = RunContext(run_id="r1", recipe="sst-global-mean", params={"method": "ocean"}, config_id="ocean-0ce2392566",
                     start=dt.date(2018, 12, 1), end=dt.date(2018, 12, 31))
    items = [Item(id="a", granules=[Granule(url="s3://b/2.nc"), Granule(url="s3://b/1.nc")]),
             Item(id="b", granules=[Granule(url="s3://b/3.nc")])]
    failures = [Failure(item="a", granule="s3://b/2.nc", error="GranuleUnreadable", cause="x"),
                Failure(item="b", error="VariableMissing", cause="y")]
    record = provenance_record(run, items, ItemCounts(total=2, succeeded=0, failed=2, skipped=0),
                               ItemCounts(total=3, succeeded=1, failed=2, skipped=0), failures)
    assert (record["run_id"], record["recipe"], record["params"], record["config_id"]) == (
        "r1", "sst-global-mean", {"method": "ocean"}, "ocean-0ce2392566")
    assert (record["start"], record["end"]) == ("2018-12-01", "2018-12-31")
    assert record["items"] == {"total": 2, "succeeded": 0, "failed": 2, "skipped": 0}
    assert record["granules"] == {"total": 3, "succeeded": 1, "failed": 2, "skipped": 0}
    assert record["failed"] == [{"item": "a", "granule": "s3://b/2.nc", "error": "GranuleUnreadable"},
                                {"item": "b", "granule": None, "error": "VariableMissing"}]
    assert record["input_granules"] == ["s3://b/1.nc", "s3://b/2.nc", "s3://b/3.nc"]


# ---- plotting -------------------------------------------------------------------------------------------------
def test_plot_of_a_store_whose_periods_were_not_added_in_order_draws_the_latest_and_the_latest_starting(
        tmp_path: Path, capsys) -> None:
    """Mutants: the last time step taken for the latest period (a back-filled month lands at the end of the store);
    the first of the periods that contain --time taken, not the latest starting."""
    import numpy as np
    import xarray as xr

    cells = (np.int64(1234) << 12) + np.arange(2)
    # in the order runs added them: April, then March back-filled, then a run of Mar 15..Apr 14
    bounds = [("2019-04-01", "2019-05-01"), ("2019-03-01", "2019-04-01"), ("2019-03-15", "2019-04-15")]
    ds = xr.Dataset(
        {"h_mean": (("time", "cells"), np.array([[4.0, 4.0], [3.0, 3.0], [315.0, 315.0]]), {"units": "m"}),
         "time_bounds": (("time", "nv"), np.array(bounds, "datetime64[ns]"))},
        coords={"time": ("time", np.array([b[0] for b in bounds], "datetime64[ns]"), {"bounds": "time_bounds"}),
                "cell_ids": ("cells", cells, {"grid_name": "healpix", "level": 12, "indexing_scheme": "nested",
                                              "ellipsoid": "WGS84"})},
    )
    store = tmp_path / "cells.zarr"
    ds.to_zarr(store, zarr_format=3, consolidated=False)
    assert main(["plot", str(store)]) == 0
    assert main(["plot", str(store), "--time", "2019-03-20"]) == 0  # in March and in Mar 15..Apr 14
    assert capsys.readouterr().out.split() == [str(tmp_path / "cells-h_mean-20190401-20190430.png"),
                                               str(tmp_path / "cells-h_mean-20190315-20190414.png")]


# ---- the local engine: a worker process that dies ------------------------------------------------------------
DYING_RECIPE = '''
"""dying_recipes.py: the day of the month of each granule; the worker process dies the first time it meets the 2nd."""

import os
from pathlib import Path

from granulemap import layout
from granulemap.recipes.base import Recipe
from granulemap.recipes.ghrsst import time_from_name
from granulemap.recipes.timeseries import write_time_series

MARKS = Path(os.environ["DYING_RECIPE_MARKS"])


class DiesOnce(Recipe):
    name = "sst-dies-once"
    description = "Day of the month of each GHRSST granule; its worker dies at the first 2nd of the month"
    collection = "MUR25-JPL-L4-GLOB-v04.2"
    file_pattern = "*.nc"
    per_granule = True

    def granule_time(self, name):
        return time_from_name(name)

    def process(self, item, params, access, run):
        (granule,) = item.granules
        name = granule.url.rsplit("/", 1)[-1]
        day = time_from_name(name).day
        attempts = MARKS / f"day-{day}"
        with open(attempts, "a") as f:
            f.write("attempt\\n")
        if day == 2 and attempts.read_text().count("attempt") == 1:
            os._exit(1)  # as a segfault in a native library, or the kernel's OOM killer, would end it
        return {"time": time_from_name(name).strftime("%Y-%m-%dT%H:%M:%SZ"), "granule": name, "day": day}

    def combine(self, results, run, params, bucket):
        csv_key = layout.output_key(self.name, run.config_id, "day.csv")
        png_key = layout.output_key(self.name, run.config_id, "day.png")
        write_time_series(bucket, csv_key, png_key, ("time", "granule", "day"), results, "day", title="Day",
                          ylabel="day of the month")
        return [csv_key, png_key]


recipe = DiesOnce()
'''


@pytest.fixture
def dying_recipe(tmp_path: Path, monkeypatch):
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv("DYING_RECIPE_MARKS", str(marks))
    for _ in install_recipe_package(tmp_path / "site", monkeypatch, "dying_recipes", DYING_RECIPE,
                                    {"sst-dies-once": "dying_recipes:recipe"}):
        yield marks


@pytest.mark.slow
def test_a_worker_process_that_dies_is_a_lambda_service_error_retried_on_a_new_worker(
        dying_recipe: Path, synthetic_month: list[Path], tmp_path: Path, capsys) -> None:
    """Mutants: the engine's answer for a dead worker not an error (its payload taken as the item's result), of a
    type the state machine does not retry, or the broken pool not replaced (every later invocation failed). In AWS a
    Lambda whose process dies is retried as Lambda.ServiceException: locally the same."""
    out = tmp_path / "out"
    code = main(["run", "--recipe", "sst-dies-once", "--start", "2018-12-01", "--end", "2018-12-03", "--source",
                 str(synthetic_month[0].parent), "--out", str(out), "--quiet", "--workers", "1", "--group", "granule"])
    assert code == 0, capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "SUCCEEDED"
    assert summary["granules"] == {"total": 3, "succeeded": 3, "failed": 0, "skipped": 0}
    with open(out / "day.csv") as f:
        assert [int(row["day"]) for row in csv.DictReader(f)] == [1, 2, 3]
    assert (dying_recipe / "day-2").read_text().count("attempt") == 2  # died once, then done on a new worker
    calls = [json.loads(line) for line in (out / "logs" / "invocations.jsonl").read_text().splitlines()]
    died = [c for c in calls if c["function"] == "ProcessorFunction" and c["errored"]]
    # the 2nd's item, and any other the dead process's pool held then: each an error the state machine retries
    assert died and {c.get("errorType") for c in died} == {"Lambda.ServiceException"}
    assert any("20181202" in c["item"] for c in died)  # one granule an item


# ---- local/run.py: products of another configuration ----------------------------------------------------------
@pytest.mark.slow
def test_another_atl06_configuration_in_the_same_out_removes_the_earlier_period_maps(tmp_path: Path,
                                                                                      capsys) -> None:
    """Mutant: the configuration of a run's products taken as its recipe alone. An ATL06 run of other cell orders into
    the same --out left the earlier configuration's period map beside a store that does not hold its values; a
    period map of the same configuration stays."""
    import xarray as xr

    from conftest import DATA

    granules = DATA / "atl06"
    out = tmp_path / "out"

    def run(*options: str) -> None:
        assert main(["run", "--recipe", "atl06-cell-stats", "--source", str(granules), "--out", str(out), "--quiet",
                     *options]) == 0, capsys.readouterr()

    day, two_days = "atl06-cell-stats-h_mean-20181013-20181013.png", "atl06-cell-stats-h_mean-20181013-20181014.png"
    run("--start", "2018-10-13", "--end", "2018-10-13")
    assert (out / day).is_file()
    run("--start", "2018-10-13", "--end", "2018-10-14", "--child-order", "11")
    assert (out / two_days).is_file() and not (out / day).exists()
    run("--start", "2018-10-13", "--end", "2018-10-13", "--child-order", "11")
    assert (out / day).is_file() and (out / two_days).is_file()  # the same configuration's other period stays
    assert xr.open_zarr(out / "atl06-cell-stats.zarr")["cell_ids"].attrs["level"] == 11  # the second one's store
