"""`granulemap estimate`: the arithmetic against a hand computation, on a cost model written by the test."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
import shlex
from pathlib import Path

import pytest
import yaml

from granulemap import estimate as est
from granulemap.cli import main

from conftest import ROOT

MEMORY = {"CatalogBuilderFunction": 512, "CredentialFetcherFunction": 256, "ProcessorFunction": 1024,
          "AggregatorFunction": 1024}


def _estimate(*args, **kwargs) -> est.Estimate:  # type: ignore[no-untyped-def]
    """est.estimate with 40 parallel Processor calls unless told (the CLI gives template.yaml's DefaultMaxConcurrency:
    test_the_command_prices_the_template_s_concurrency)."""
    return est.estimate(*args, **{"max_concurrency": 40, **kwargs})


def _model(tmp_path: Path) -> est.CostModel:
    raw = {
        "recipes": {"sst-global-mean": {"compute_s": 0.02, "input_mb": 2.0, "items_per_day": 1}},
        "cold_import_s": {"CatalogBuilderFunction": 1.0, "CredentialFetcherFunction": 0.5,
                          "ProcessorFunction": 0.8, "AggregatorFunction": 1.2},
        "s3_mb_per_s": 80.0, "s3_request_latency_s": 0.02,
        "fixed_function_s": {"CatalogBuilderFunction": 1.0, "CredentialFetcherFunction": 0.5, "AggregatorFunction": 2.0},
        "aggregate_s_per_item": 0.005,
    }
    path = tmp_path / "cost_model.json"
    path.write_text(json.dumps(raw))
    return est.CostModel.load(path)


def test_a_year_of_daily_granules_costs_what_a_hand_computation_says(tmp_path: Path) -> None:
    model = _model(tmp_path)
    result = _estimate("sst-global-mean", dt.date(2022, 1, 1), dt.date(2022, 12, 31), MEMORY, model,
                          max_concurrency=40)
    # By hand. Processor: 0.02 s × 1769/1024 (CPU share below one vCPU) = 0.0345508 s of compute, + 2 MB / 80 MB/s
    # = 0.025 s, + 2 × 0.02 s = 0.04 s (granule's first byte, result PUT) → 0.0995508 s, billed 0.100 s;
    # × 1 GB × 365 items = 36.5 GB-s.
    processor_gbs = 365 * 0.100 * 1.0
    init_gbs = 40 * 0.8 * 1.0  # 40 cold starts × 0.8 s × 1 GB
    single_gbs = (1.0 + 1.0) * 0.5 + (0.5 + 0.5) * 0.25 + (2.0 + 365 * 0.005 + 1.2) * 1.0  # 2.0+1.825 → 3.825 billed
    lambda_usd = (processor_gbs + init_gbs + single_gbs) * 0.0000166667
    requests_usd = (365 + 3) * 0.20 / 1e6
    transitions_usd = (7 + 365) * 0.025 / 1000  # parent: 7 states entered (no failures), child: 1 each
    # GET: each result by Aggregate + 6 (test_the_estimates_s3_requests_are_a_real_runs); PUT: results + 8; 1 LIST
    s3_usd = (365 * 1 + 6) * 0.0004 / 1000 + (365 * 1 + 8 + 1) * 0.005 / 1000
    expected = lambda_usd + requests_usd + transitions_usd + s3_usd
    assert result.items == 365
    assert result.total_usd == pytest.approx(expected, rel=1e-9)
    by_name = {what: usd for what, usd, _ in result.lines}
    assert by_name["Lambda compute, Processor"] == pytest.approx(36.5 * 0.0000166667, rel=1e-9)
    assert by_name["Step Functions state transitions"] == pytest.approx((7 + 365) * 0.025 / 1000, rel=1e-9)
    assert any("us-west-2" in a for a in result.assumptions)


def test_grouped_granules_make_one_item_per_dekad_of_the_range(tmp_path: Path) -> None:
    model = _model(tmp_path)
    grouped = est.CostModel.load(tmp_path / "cost_model.json")
    grouped.recipes["sst-global-mean"] = est.RecipeCost(compute_s=0.02, input_mb=2.0, items_per_day=1,
                                                         grouping="dekad")
    result = _estimate("sst-global-mean", dt.date(2022, 1, 1), dt.date(2022, 12, 31), MEMORY, grouped,
                          max_concurrency=40)
    # By hand: 12 months × 3 dekads = 36 items of 365 granules. One item: 365/36 granules × (0.0345508 s compute +
    # 0.025 s read + 0.02 s first byte) + 0.02 s result PUT.
    granules = 365 / 36
    per_item = granules * (0.02 * 1769 / 1024 + 2 / 80 + 0.02) + 0.02
    billed = -(-round(per_item * 1000, 6) // 1) / 1000  # rounded up to the millisecond
    by_name = {what: usd for what, usd, _ in result.lines}
    assert result.items == 36
    assert by_name["Lambda compute, Processor"] == pytest.approx(36 * billed * 1.0 * 0.0000166667, rel=1e-9)
    assert by_name["Step Functions state transitions"] == pytest.approx((7 + 36) * 0.025 / 1000, rel=1e-9)
    assert by_name["Lambda requests"] == pytest.approx((36 + 3) * 0.20 / 1e6, rel=1e-9)
    assert ("items: 36, one per dekad (the 1st-10th, 11th-20th and 21st-last day of a month) of 365 granules (1 per "
            "day over 365 days)") in result.assumptions  # granules a day: not "items"
    ungrouped = _estimate("sst-global-mean", dt.date(2022, 1, 1), dt.date(2022, 12, 31), MEMORY, model)
    assert result.total_usd < ungrouped.total_usd
    # a range inside one dekad is one item; two days across a dekad's end are two
    assert _estimate("sst-global-mean", dt.date(2022, 3, 2), dt.date(2022, 3, 9), MEMORY, grouped).items == 1
    assert _estimate("sst-global-mean", dt.date(2022, 3, 10), dt.date(2022, 3, 11), MEMORY, grouped).items == 2
    # several granules a day: a dekad holds at most 16 per item. 4 a day over March 2022: 40, 40 and 44 granules in
    # its dekads → 3 + 3 + 3 items
    march = _estimate("sst-global-mean", dt.date(2022, 3, 1), dt.date(2022, 3, 31), MEMORY, grouped, items=124)
    assert march.items == 9


def test_memory_above_one_vcpu_does_not_speed_up_compute_and_items_override_the_date_range(tmp_path: Path) -> None:
    model = _model(tmp_path)
    big = dict(MEMORY, ProcessorFunction=3538)  # two vCPUs' worth: a single-threaded item is not faster
    result = _estimate("sst-global-mean", dt.date(2022, 1, 1), dt.date(2022, 1, 1), big, model, items=10,
                          max_concurrency=4)
    per_item = 0.02 + 0.025 + 0.04  # 0.085 s, no CPU scaling at ≥ 1,769 MB
    by_name = {what: usd for what, usd, _ in result.lines}
    assert result.items == 10
    assert by_name["Lambda compute, Processor"] == pytest.approx(10 * per_item * 3538 / 1024 * 0.0000166667, rel=1e-9)
    assert by_name["Lambda init (cold starts), Processor"] == pytest.approx(4 * 0.8 * 3538 / 1024 * 0.0000166667,
                                                                            rel=1e-9)


def test_unknown_recipe_is_named(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="no cost model for recipe 'nope'") as raised:
        _estimate("nope", dt.date(2022, 1, 1), dt.date(2022, 1, 2), MEMORY, _model(tmp_path))
    # the command that prices a similar built-in recipe, as written, for the same dates
    (command,) = re.findall(r"granulemap (estimate .*?) for a per-granule", str(raised.value))
    from granulemap.cli import build_parser

    args = build_parser().parse_args(shlex.split(command))
    assert (args.recipe, str(args.start), str(args.end)) == ("sst-box-mean", "2022-01-01", "2022-01-02")
    assert "sst-box-mean" in est.CostModel.load().recipes  # make bench prices it


def test_another_collection_is_priced_with_what_make_bench_measured_on_its_granules(tmp_path: Path, monkeypatch,
                                                                                  capsys) -> None:
    """A run of MUR 0.01° granules (400 MB, seconds each) is priced with their cost, not MUR25's (2 MB, 10 ms): the
    model names it ``<recipe>@<collection>``; the recipe's own collection named is its default; another is refused,
    naming those measured."""
    model_path = tmp_path / "cost_model.json"
    _model(tmp_path)  # writes model_path
    raw = json.loads(model_path.read_text())
    raw["recipes"]["sst-global-mean@BIG-COLLECTION"] = {"compute_s": 2.0, "input_mb": 400.0, "items_per_day": 1,
                                                        "measured_on": "a big granule"}
    model_path.write_text(json.dumps(raw))
    model = est.CostModel.load(model_path)
    big = _estimate("sst-global-mean", dt.date(2022, 1, 1), dt.date(2022, 1, 10), MEMORY, model,
                       collection="BIG-COLLECTION")
    # By hand: 10 items of one granule: 2.0 s × 1769/1024 + 400 MB / 80 MB/s + 2 × 0.02 s = 8.495117... s, billed
    # 8.496 s; × 1 GB × 10.
    by_name = {what: usd for what, usd, _ in big.lines}
    assert by_name["Lambda compute, Processor"] == pytest.approx(10 * 8.496 * 0.0000166667, rel=1e-9)
    assert any("per item (a big granule): 2000.0 ms" in a for a in big.assumptions)
    default = _estimate("sst-global-mean", dt.date(2022, 1, 1), dt.date(2022, 1, 10), MEMORY, model)
    assert default.total_usd < big.total_usd
    with pytest.raises(KeyError, match="on collection OTHER: make bench measures it on its default collection and "
                                       "on BIG-COLLECTION"):
        _estimate("sst-global-mean", dt.date(2022, 1, 1), dt.date(2022, 1, 10), MEMORY, model, collection="OTHER")

    monkeypatch.setattr(est, "COST_MODEL", model_path)
    days = ["--start", "2022-01-01", "--end", "2022-01-10"]
    assert main(["estimate", "--recipe", "sst-global-mean", *days]) == 0
    plain = capsys.readouterr().out
    assert main(["estimate", "--recipe", "sst-global-mean", *days, "--collection", "MUR25-JPL-L4-GLOB-v04.2"]) == 0
    assert capsys.readouterr().out == plain  # the recipe's default collection, named
    assert main(["estimate", "--recipe", "sst-global-mean", *days, "--collection", "BIG-COLLECTION"]) == 0
    assert "(a big granule)" in capsys.readouterr().out
    assert main(["estimate", "--recipe", "sst-global-mean", *days, "--collection", "OTHER"]) == 2
    assert "no cost model for recipe sst-global-mean on collection OTHER" in capsys.readouterr().err


def test_a_granule_read_by_ranges_pays_each_get_s_first_byte(tmp_path: Path) -> None:
    """A large granule is read by ranges (granulemap.granule_access): each of its GETs' first bytes is a latency,
    priced one after another; the assumptions say how many."""
    model = _model(tmp_path)
    one_get = est.RecipeCost(compute_s=2.0, input_mb=400.0, items_per_day=1, measured_on="a big granule")
    model.recipes["sst-global-mean@BIG"] = dataclasses.replace(one_get, granule_gets=57)
    model.recipes["sst-global-mean@ONE-GET"] = one_get
    days = (dt.date(2022, 1, 1), dt.date(2022, 1, 10))
    ranged = _estimate("sst-global-mean", *days, MEMORY, model, collection="BIG")
    whole = _estimate("sst-global-mean", *days, MEMORY, model, collection="ONE-GET")
    # By hand, per item: 2.0 s × 1769/1024 + 400 MB / 80 MB/s + 57 × 0.02 s (GETs) + 0.02 s (result PUT)
    # = 9.61507... s, billed 9.616 s; one GET: 8.49507... s, billed 8.496 s; × 1 GB × 10 items.
    assert {w: usd for w, usd, _ in ranged.lines}["Lambda compute, Processor"] == pytest.approx(
        10 * 9.616 * 0.0000166667, rel=1e-9)
    assert {w: usd for w, usd, _ in whole.lines}["Lambda compute, Processor"] == pytest.approx(
        10 * 8.496 * 0.0000166667, rel=1e-9)
    assert any("400 MB read at 80 MB/s + the first byte of each of its 57 GETs (by ranges), one after another (20 ms"
               in a for a in ranged.assumptions)
    assert any("400 MB read at 80 MB/s + its first byte (20 ms" in a for a in whole.assumptions)


def test_the_shipped_model_prices_a_year_of_mur_0_01_degree_above_mur25() -> None:
    model = est.CostModel.load()
    year = (dt.date(2022, 1, 1), dt.date(2022, 12, 31))
    fine = model.recipes[est.cost_key("sst-global-mean", "MUR-JPL-L4-GLOB-v4.1")]
    coarse = model.recipes["sst-global-mean"]
    assert fine.input_mb > 100 * coarse.input_mb and fine.compute_s > 100 * coarse.compute_s  # 625 × the cells
    costs = [_estimate("sst-global-mean", *year, MEMORY, model, collection=c).total_usd
             for c in (None, "MUR-JPL-L4-GLOB-v4.1")]
    assert costs[0] < costs[1]


def test_estimate_command_prints_the_total_and_its_assumptions(tmp_path: Path, monkeypatch, capsys) -> None:
    model_path = tmp_path / "cost_model.json"
    _model(tmp_path)  # writes model_path
    monkeypatch.setattr(est, "COST_MODEL", model_path)
    assert main(["estimate", "--recipe", "sst-global-mean", "--start", "2022-01-01", "--end", "2022-12-31",
                 "--memory-mb", "512"]) == 0
    out = capsys.readouterr().out
    assert "365 items" in out and "total" in out and "assumptions:" in out and "Processor 512" in out
    assert main(["estimate", "--recipe", "sst-global-mean", "--start", "2022-02-01", "--end", "2022-01-01"]) == 2


def test_a_month_is_priced_as_its_first_to_last_day(tmp_path: Path, monkeypatch, capsys) -> None:
    model_path = tmp_path / "cost_model.json"
    _model(tmp_path)
    monkeypatch.setattr(est, "COST_MODEL", model_path)
    assert main(["estimate", "--recipe", "sst-global-mean", "--period", "2024-02"]) == 0
    by_month = capsys.readouterr().out
    assert main(["estimate", "--recipe", "sst-global-mean", "--start", "2024-02-01", "--end", "2024-02-29"]) == 0
    assert by_month == capsys.readouterr().out and "over 29 days" in by_month  # February of a leap year
    for flags, says in [(["--period", "2024-13"], "--period 2024-13: a month, YYYY-MM, or previous-month"),
                        (["--period", "2024-02", "--start", "2024-02-01"], "give --period or --start and --end"),
                        (["--start", "2024-02-01"], "give --start and --end (YYYY-MM-DD), or --period YYYY-MM")]:
        assert main(["estimate", "--recipe", "sst-global-mean", *flags]) == 2
        assert says in capsys.readouterr().err


@pytest.mark.parametrize("flags, says", [
    (["--recipe", "sst-global-meen"], "unknown recipe 'sst-global-meen'"),
    (["--recipe", "sst-global-mean", "--memory-mb", "64"], "128 to 10240 MB"),
    (["--recipe", "sst-global-mean", "--max-concurrency", "0"], "--max-concurrency 0"),
    (["--recipe", "sst-global-mean", "--max-concurrency", "50000"], "--max-concurrency 50000: 1 to 10000"),
    (["--recipe", "sst-global-mean", "--items", "-3"], "--items -3"),
])
def test_estimate_refuses_what_no_run_could_be(tmp_path: Path, monkeypatch, capsys, flags, says) -> None:
    model_path = tmp_path / "cost_model.json"
    _model(tmp_path)
    monkeypatch.setattr(est, "COST_MODEL", model_path)
    assert main(["estimate", *flags, "--start", "2022-01-01", "--end", "2022-12-31"]) == 2
    assert says in capsys.readouterr().err


def test_a_capped_item_count_says_so(tmp_path: Path) -> None:
    model = _model(tmp_path)
    model.recipes["cells"] = dataclasses.replace(model.recipes["sst-global-mean"], items_per_day=2500,
                                                 max_items=49152)
    result = _estimate("cells", dt.date(2019, 1, 1), dt.date(2019, 1, 31), MEMORY, model)
    assert result.items == 49152  # 2,500 × 31 = 77,500 > 49,152
    assert ("items: 49152 (2500 granule × parent-cell pairs (a rough count) a day over 31 days would be 77500, more "
            "than the recipe's 49152 possible items: at most that, each of 77500/49152 = 1.58 granules)"
            ) in result.assumptions


# An ATL06-like recipe: an item is a parent cell with the granules that touch it; items_per_day counts granule ×
# parent-cell pairs, which are items until the 12 × 4**6 = 49,152 order-6 parent cells: beyond, more granules per item.
ATL06 = {"compute_s": 0.1, "input_mb": 10.5, "items_per_day": 2500, "max_items": 12 * 4**6, "s3_gets_per_item": 1,
         "s3_puts_per_item": 10}


def _atl06_model(tmp_path: Path) -> est.CostModel:
    model = _model(tmp_path)
    model.recipes["atl06-cell-stats"] = est.RecipeCost(**ATL06)
    return model


def _billed(seconds: float) -> float:
    return math.ceil(round(seconds * 1000, 6)) / 1000  # Lambda: rounded up to the millisecond


def _atl06_by_hand(items: int, granules_per_item: float) -> tuple[float, float]:
    """(Processor compute USD, total USD) at MEMORY, 40 cold starts at most, from the documented assumptions."""
    # one granule's share of a parent cell: 0.1 s × 1769/1024 (CPU share), 10.5 MB at 80 MB/s, 0.02 s first byte
    per_granule = 0.1 * 1769 / 1024 + 10.5 / 80 + 0.02
    per_item = _billed(granules_per_item * per_granule + 0.02)  # + the result's PUT
    processor_gbs = items * per_item * 1.0  # Processor 1024 MB
    init_gbs = min(items, 40) * 0.8 * 1.0
    single_gbs = (1.0 + 1.0) * 0.5 + (0.5 + 0.5) * 0.25 + (_billed(2.0 + items * 0.005) + 1.2) * 1.0
    requests_usd = (items + 3) * 0.20 / 1e6
    transitions_usd = (7 + items) * 0.025 / 1000
    s3_usd = (items * 1 + 6) * 0.0004 / 1000 + (items * 10 + 8 + math.ceil(items / 1000)) * 0.005 / 1000
    total = (processor_gbs + init_gbs + single_gbs) * 0.0000166667 + requests_usd + transitions_usd + s3_usd
    return processor_gbs * 0.0000166667, total


def test_a_hundred_atl06_items_cost_what_a_hand_computation_says(tmp_path: Path) -> None:
    """Written out, not through _atl06_by_hand (which follows the estimator's steps)."""
    result = _estimate("atl06-cell-stats", dt.date(2022, 1, 1), dt.date(2022, 1, 31), MEMORY, _atl06_model(tmp_path),
                          items=100)
    # One item, one granule: 0.1 s × 1769/1024 = 0.172754 s + 10.5 MB / 80 MB/s = 0.13125 s + 0.02 s first byte +
    # 0.02 s result PUT = 0.344004 s, billed 0.345 s; × 100 items × 1 GB = 34.5 GB-s.
    # Cold starts: 40 × 0.8 s × 1 GB = 32 GB-s. BuildCatalog (1.0 + 1.0 s) × 0.5 GB = 1.0, FetchCredentials
    # (0.5 + 0.5 s) × 0.25 GB = 0.25, Aggregate (2.0 + 100 × 0.005 + 1.2 s) × 1 GB = 3.7: 4.95 GB-s.
    # 71.45 GB-s × $0.0000166667 = $0.001190835715; 103 requests × $0.20/1M = $0.0000206; (7 + 100) transitions ×
    # $0.025/1000 = $0.002675; 106 GET × $0.0004/1000 = $0.0000424; (1000 PUT + 8 + 1 LIST) × $0.005/1000 = $0.005045.
    by_name = {what: usd for what, usd, _ in result.lines}
    assert result.items == 100
    assert by_name["Lambda compute, Processor"] == pytest.approx(0.00057500115, rel=1e-9)  # 34.5 GB-s
    assert result.total_usd == pytest.approx(0.008973835715, rel=1e-9)


@pytest.mark.parametrize("end, days", [(dt.date(2022, 1, 31), 31), (dt.date(2022, 12, 31), 365),
                                       (dt.date(2031, 12, 31), 3652)])
def test_capped_atl06_items_hold_more_granules_as_the_range_grows(tmp_path: Path, end: dt.date, days: int) -> None:
    model = _atl06_model(tmp_path)
    result = _estimate("atl06-cell-stats", dt.date(2022, 1, 1), end, MEMORY, model)
    pairs = 2500 * days  # 77,500, 912,500 and 9,130,000 granule × parent-cell pairs: all over the 49,152 cells
    processor_usd, total = _atl06_by_hand(49152, pairs / 49152)
    by_name = {what: usd for what, usd, _ in result.lines}
    assert result.items == 49152
    assert by_name["Lambda compute, Processor"] == pytest.approx(processor_usd, rel=1e-9)
    assert result.total_usd == pytest.approx(total, rel=1e-9)
    assert (f"items: 49152 (2500 granule × parent-cell pairs (a rough count) a day over {days} days would be "
            f"{pairs}, more than the recipe's 49152 possible items: at most that, each of {pairs}/49152 = "
            f"{pairs / 49152:.2f} granules)") in result.assumptions
    assert any(a.startswith(f"per granule ({pairs / 49152:.2f} per item): ") for a in result.assumptions)


def test_a_month_a_year_and_ten_years_of_atl06_cost_more_in_proportion_to_the_granules(tmp_path: Path) -> None:
    model = _atl06_model(tmp_path)
    start = dt.date(2022, 1, 1)
    runs = [_estimate("atl06-cell-stats", start, end, MEMORY, model)
            for end in (dt.date(2022, 1, 31), dt.date(2022, 12, 31), dt.date(2031, 12, 31))]
    processor = [{what: usd for what, usd, _ in r.lines}["Lambda compute, Processor"] for r in runs]
    assert [r.items for r in runs] == [49152] * 3
    assert runs[0].total_usd < runs[1].total_usd < runs[2].total_usd
    # Processor compute is granules × (per-granule seconds) + one PUT per item: the per-granule part scales with the
    # days (31 : 365 : 3652), to the millisecond each item's duration is billed at
    per_granule_usd = 49152 * (0.1 * 1769 / 1024 + 10.5 / 80 + 0.02) * 0.0000166667 / 49152 * 2500
    put_usd = 49152 * 0.02 * 0.0000166667
    for usd, days in zip(processor, (31, 365, 3652), strict=True):
        assert usd - put_usd == pytest.approx(days * per_granule_usd, abs=49152 * 0.001 * 0.0000166667)
    # what does not depend on the granules (requests, transitions, S3 on the stack's bucket) stays the same
    for what in ("Lambda requests", "Step Functions state transitions", "S3 requests",
                 "Lambda init (cold starts), Processor"):
        assert len({round({w: u for w, u, _ in r.lines}[what], 12) for r in runs}) == 1


def test_below_the_cap_an_atl06_item_is_one_granule_as_before(tmp_path: Path) -> None:
    model = _atl06_model(tmp_path)
    result = _estimate("atl06-cell-stats", dt.date(2022, 1, 1), dt.date(2022, 1, 10), MEMORY, model)
    processor_usd, total = _atl06_by_hand(25000, 1.0)  # 2,500 × 10 days = 25,000 parent cells < 49,152
    assert result.items == 25000
    assert {w: u for w, u, _ in result.lines}["Lambda compute, Processor"] == pytest.approx(processor_usd, rel=1e-9)
    assert result.total_usd == pytest.approx(total, rel=1e-9)
    assert "items: 25000 (2500 granule × parent-cell pairs (a rough count) a day over 10 days)" in result.assumptions
    assert any(a.startswith("per item: 100.0 ms of compute") for a in result.assumptions)
    # --items below the cap: that many one-granule items (bench's 1,000 parent cells)
    given = _estimate("atl06-cell-stats", dt.date(2022, 1, 1), dt.date(2022, 1, 1), MEMORY, model, items=1000)
    assert given.items == 1000 and given.total_usd == pytest.approx(_atl06_by_hand(1000, 1.0)[1], rel=1e-9)
    assert "items: 1000" in given.assumptions


def test_atl06_cost_never_falls_as_the_range_grows_across_the_cap(tmp_path: Path) -> None:
    model = _atl06_model(tmp_path)
    # 19 days: 47,500 one-granule items; 20 days: 50,000 pairs in 49,152 items; cost keeps growing through the cap
    totals = [_estimate("atl06-cell-stats", dt.date(2022, 1, 1), dt.date(2022, 1, d), MEMORY, model).total_usd
              for d in range(15, 26)]
    assert totals == sorted(totals) and len(set(totals)) == len(totals)


def test_items_beyond_the_cap_are_more_granules_per_item(tmp_path: Path) -> None:
    model = _atl06_model(tmp_path)
    result = _estimate("atl06-cell-stats", dt.date(2022, 1, 1), dt.date(2022, 1, 1), MEMORY, model,
                          items=100000)
    assert result.items == 49152
    assert result.total_usd == pytest.approx(_atl06_by_hand(49152, 100000 / 49152)[1], rel=1e-9)
    assert ("items: 49152 (--items would be 100000, more than the recipe's 49152 possible items: at most that, "
            "each of 100000/49152 = 2.03 granules)") in result.assumptions


def test_shipped_cost_model_prices_longer_atl06_ranges_higher() -> None:
    """With the shipped model a month of ATL06 already reaches the parent cells' count (items_per_day × 31 days >
    max_items): a longer range is as many items, each holding more granules, so it costs more per item and as many
    Lambda requests and child executions."""
    model = est.CostModel.load()
    recipe = model.recipes["atl06-cell-stats"]
    start, ends = dt.date(2022, 1, 1), (dt.date(2022, 1, 31), dt.date(2022, 12, 31), dt.date(2027, 12, 31))
    assert recipe.max_items and recipe.items_per_day * 31 > recipe.max_items  # the premise, from the shipped model
    runs = [_estimate("atl06-cell-stats", start, end, MEMORY, model) for end in ends]
    assert [r.items for r in runs] == [recipe.max_items] * 3
    line = lambda run, what: next(usd for name, usd, _ in run.lines if name == what)  # noqa: E731
    processor = [line(r, "Lambda compute, Processor") for r in runs]
    assert processor[0] < processor[1] < processor[2]
    assert len({line(r, "Lambda requests") for r in runs}) == 1
    assert len({line(r, "Step Functions state transitions") for r in runs}) == 1
    assert runs[0].total_usd < runs[1].total_usd < runs[2].total_usd


def test_items_option_says_what_it_counts(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["estimate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "granules for the SST recipes" in help_text and "365 daily granules are 36 items" in help_text
    assert "parent cells of one granule each for atl06-cell-stats" in help_text


def test_estimate_notes_a_range_longer_than_one_run_and_atl06_months_in_one_period(tmp_path: Path, monkeypatch,
                                                                                    capsys) -> None:
    """Backfills: 2002-2024 of SST is refused by MaxRangeDays as one run, and six years of atl06-cell-stats in one run
    is one time step of its store; the estimate priced both silently."""
    model_path = tmp_path / "cost_model.json"
    _model(tmp_path)
    monkeypatch.setattr(est, "COST_MODEL", model_path)
    class Loader(yaml.SafeLoader):  # CloudFormation's tags (!Ref, !Sub...) read as nothing: only a default is read
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    limit = int(yaml.load((ROOT / "template.yaml").read_text(), Loader)["Parameters"]["MaxRangeDays"]["Default"])
    first, days = dt.date(2002, 6, 1), limit + 1
    last = first + dt.timedelta(days=days - 1)
    assert main(["estimate", "--recipe", "sst-global-mean", "--start", str(first), "--end", str(last)]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: ")]
    assert notes == [f"note: one run takes at most {limit} days (template.yaml's MaxRangeDays; your stack's may "
                     f"differ): start these {days} days as 2 runs (this prices them as one)"]
    assert main(["estimate", "--recipe", "sst-global-mean", "--start", str(first),
                 "--end", str(last - dt.timedelta(days=1))]) == 0
    assert "note: " not in capsys.readouterr().out

    monkeypatch.undo()  # the shipped cost model, which prices atl06-cell-stats
    assert main(["estimate", "--recipe", "atl06-cell-stats", "--start", "2019-01-01", "--end", "2019-02-01"]) == 0
    (note,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: ")]
    assert note.startswith("note: atl06-cell-stats makes one entry of its product per run") and "--period" in note
    # and what it costs as it is advised to be run: the two months' estimates, each asked for on its own
    totals = []
    for first, last in (("2019-01-01", "2019-01-31"), ("2019-02-01", "2019-02-01")):
        assert main(["estimate", "--recipe", "atl06-cell-stats", "--start", first, "--end", last]) == 0
        (total,) = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("total ")]
        totals.append(float(total.split("$")[1]))
    assert f"; as 2 runs, one a month, it costs ${sum(totals):.2f} in all" in note
    assert main(["estimate", "--recipe", "atl06-cell-stats", "--start", "2019-01-01", "--end", "2019-01-31"]) == 0
    assert "note: " not in capsys.readouterr().out


# --- E4/E6: estimate below the concurrency, and fewer granules than dekads ------------------------------------------
def _estimate_model(tmp_path: Path, grouping: str = "granule"):
    model = _model(tmp_path)
    model.recipes["sst-global-mean"] = est.RecipeCost(compute_s=0.02, input_mb=2.0, items_per_day=1,
                                                      grouping=grouping)
    return model


def test_fewer_items_than_the_concurrency_have_one_cold_start_each(tmp_path: Path) -> None:
    result = _estimate("sst-global-mean", dt.date(2022, 1, 1), dt.date(2022, 1, 3), MEMORY,
                          _estimate_model(tmp_path), max_concurrency=40)
    by_name = {what: usd for what, usd, _ in result.lines}
    assert result.items == 3
    assert by_name["Lambda init (cold starts), Processor"] == pytest.approx(3 * 0.8 * 1.0 * 0.0000166667, rel=1e-9)


def test_two_granules_over_a_year_are_at_most_two_items(tmp_path: Path) -> None:
    result = _estimate("sst-global-mean", dt.date(2022, 1, 1), dt.date(2022, 12, 31), MEMORY,
                          _estimate_model(tmp_path, "dekad"), items=2)
    assert result.items == 2
    by_name = {what: usd for what, usd, _ in result.lines}
    assert by_name["Step Functions state transitions"] == pytest.approx((7 + 2) * 0.025 / 1000, rel=1e-9)


def test_the_estimates_s3_requests_are_a_real_runs(tmp_path, monkeypatch) -> None:
    """Every S3 request of an SST run of two items on moto, counted by botocore's events (BuildCatalog, the Map's
    ItemReader, the Processors, Aggregate), and the two objects the Map's ResultWriter writes in AWS (its manifest and
    SUCCEEDED_0.json: moto's engine writes none): as many GETs, PUTs and LISTs as the estimate prices."""
    import collections

    import boto3
    from moto import mock_aws

    from granulemap import storage
    from granulemap.aggregation import aggregate
    from granulemap.catalog import build_catalog
    from granulemap.estimate import CostModel, s3_requests
    from granulemap.models import AggregatorEvent, Item, ProcessorEvent
    from granulemap.processing import process_item
    from granulemap.settings import Settings
    from granulemap.storage import Bucket
    from granulemap.synthetic import make_synthetic_series

    from conftest import MUR25

    make_synthetic_series(MUR25, tmp_path, dt.date(2018, 12, 1), 12)  # two dekads: two items
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    with mock_aws():
        storage.s3_client.cache_clear()
        client = storage.s3_client()
        client.create_bucket(Bucket="estimate-bkt", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        calls: collections.Counter[str] = collections.Counter()
        client.meta.events.register("before-call.s3.*", lambda model, **_: calls.update([model.name]))
        bucket = Bucket("estimate-bkt")
        raw = {"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-12", "source": str(tmp_path)}
        out = build_catalog(raw, "r1", Settings(bucket="estimate-bkt"), bucket)
        for item in bucket.get_json(out.catalog.map_key):  # the Map's ItemReader
            process_item(ProcessorEvent(item=Item.model_validate(item), run=out.run), bucket)
        aggregate(AggregatorEvent(**out.model_dump()), bucket)
        assert boto3.client("s3").list_objects_v2(Bucket="estimate-bkt")["KeyCount"] > 0
    storage.s3_client.cache_clear()
    assert out.catalog.count == 2
    asl = json.loads((ROOT / "statemachine" / "pipeline.asl.json").read_text())
    writer = 2 if "ResultWriter" in asl["States"]["ProcessItems"] else 0
    gets, puts, lists = s3_requests(CostModel.load().recipes["sst-global-mean"], 2)
    reads = calls.pop("GetObject") + calls.pop("HeadObject")  # a HEAD is priced as a GET
    assert {**calls, "GetObject": reads, "PutObject": calls["PutObject"] + writer} == {
        "GetObject": gets, "PutObject": puts, "ListObjectsV2": lists}


def test_the_command_prices_the_template_s_concurrency(tmp_path: Path, monkeypatch, capsys) -> None:
    """Without --max-concurrency, the cold starts are those of the stack's DefaultMaxConcurrency (the estimate said
    40 whatever template.yaml said)."""
    from granulemap import cli

    real = cli.local_settings

    def settings(template=None):  # type: ignore[no-untyped-def]
        return real(template).model_copy(update={"default_max_concurrency": 7})

    monkeypatch.setattr(cli, "local_settings", settings)
    days = ["--start", "2022-01-01", "--end", "2022-12-31"]
    assert main(["estimate", "--recipe", "sst-global-mean", *days]) == 0
    assert "36 items" in (out := capsys.readouterr().out) and "  7 cold starts × " in out
    assert main(["estimate", "--recipe", "sst-global-mean", *days, "--max-concurrency", "9"]) == 0
    assert "  9 cold starts × " in capsys.readouterr().out
