"""`granulemap estimate`: the arithmetic against a hand computation, on a cost model written by the test."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pytest

from granulemap import estimate as est
from granulemap.cli import main

MEMORY = {"CatalogBuilderFunction": 512, "CredentialFetcherFunction": 256, "ProcessorFunction": 1024,
          "AggregatorFunction": 1024}


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
    result = est.estimate("sst-global-mean", dt.date(2022, 1, 1), dt.date(2022, 12, 31), MEMORY, model,
                          max_concurrency=40)
    # By hand. Processor: 0.02 s × 1769/1024 (CPU share below one vCPU) = 0.0345508 s of compute, + 2 MB / 80 MB/s
    # = 0.025 s, + 2 × 0.02 s = 0.04 s (granule's first byte, result PUT) → 0.0995508 s, billed 0.100 s;
    # × 1 GB × 365 items = 36.5 GB-s.
    processor_gbs = 365 * 0.100 * 1.0
    init_gbs = 40 * 0.8 * 1.0  # 40 cold starts × 0.8 s × 1 GB
    single_gbs = (1.0 + 1.0) * 0.5 + (0.5 + 0.5) * 0.25 + (2.0 + 365 * 0.005 + 1.2) * 1.0  # 2.0+1.825 → 3.825 billed
    lambda_usd = (processor_gbs + init_gbs + single_gbs) * 0.0000166667
    requests_usd = (365 + 3) * 0.20 / 1e6
    transitions_usd = (5 + 365) * 0.025 / 1000
    # GET: each result by Aggregate, + ItemReader's and Aggregate's manifest; PUT: results + 5; 1 LIST (≤ 1,000 keys)
    s3_usd = (365 * 1 + 2) * 0.0004 / 1000 + (365 * 1 + 5 + 1) * 0.005 / 1000
    expected = lambda_usd + requests_usd + transitions_usd + s3_usd
    assert result.items == 365
    assert result.total_usd == pytest.approx(expected, rel=1e-9)
    by_name = {what: usd for what, usd, _ in result.lines}
    assert by_name["Lambda compute, Processor"] == pytest.approx(36.5 * 0.0000166667, rel=1e-9)
    assert by_name["Step Functions state transitions"] == pytest.approx(0.00925, rel=1e-9)
    assert any("us-west-2" in a for a in result.assumptions)


def test_grouped_granules_make_one_item_per_dekad_of_the_range(tmp_path: Path) -> None:
    model = _model(tmp_path)
    grouped = est.CostModel.load(tmp_path / "cost_model.json")
    grouped.recipes["sst-global-mean"] = est.RecipeCost(compute_s=0.02, input_mb=2.0, items_per_day=1,
                                                         grouping="dekad")
    result = est.estimate("sst-global-mean", dt.date(2022, 1, 1), dt.date(2022, 12, 31), MEMORY, grouped,
                          max_concurrency=40)
    # By hand: 12 months × 3 dekads = 36 items of 365 granules. One item: 365/36 granules × (0.0345508 s compute +
    # 0.025 s read + 0.02 s first byte) + 0.02 s result PUT.
    granules = 365 / 36
    per_item = granules * (0.02 * 1769 / 1024 + 2 / 80 + 0.02) + 0.02
    billed = -(-round(per_item * 1000, 6) // 1) / 1000  # rounded up to the millisecond
    by_name = {what: usd for what, usd, _ in result.lines}
    assert result.items == 36
    assert by_name["Lambda compute, Processor"] == pytest.approx(36 * billed * 1.0 * 0.0000166667, rel=1e-9)
    assert by_name["Step Functions state transitions"] == pytest.approx((5 + 36) * 0.025 / 1000, rel=1e-9)
    assert by_name["Lambda requests"] == pytest.approx((36 + 3) * 0.20 / 1e6, rel=1e-9)
    ungrouped = est.estimate("sst-global-mean", dt.date(2022, 1, 1), dt.date(2022, 12, 31), MEMORY, model)
    assert result.total_usd < ungrouped.total_usd
    # a range inside one dekad is one item; two days across a dekad's end are two
    assert est.estimate("sst-global-mean", dt.date(2022, 3, 2), dt.date(2022, 3, 9), MEMORY, grouped).items == 1
    assert est.estimate("sst-global-mean", dt.date(2022, 3, 10), dt.date(2022, 3, 11), MEMORY, grouped).items == 2
    # several granules a day: a dekad holds at most 16 per item. 4 a day over March 2022: 40, 40 and 44 granules in
    # its dekads → 3 + 3 + 3 items
    march = est.estimate("sst-global-mean", dt.date(2022, 3, 1), dt.date(2022, 3, 31), MEMORY, grouped, items=124)
    assert march.items == 9


def test_memory_above_one_vcpu_does_not_speed_up_compute_and_items_override_the_date_range(tmp_path: Path) -> None:
    model = _model(tmp_path)
    big = dict(MEMORY, ProcessorFunction=3538)  # two vCPUs' worth: a single-threaded item is not faster
    result = est.estimate("sst-global-mean", dt.date(2022, 1, 1), dt.date(2022, 1, 1), big, model, items=10,
                          max_concurrency=4)
    per_item = 0.02 + 0.025 + 0.04  # 0.085 s, no CPU scaling at ≥ 1,769 MB
    by_name = {what: usd for what, usd, _ in result.lines}
    assert result.items == 10
    assert by_name["Lambda compute, Processor"] == pytest.approx(10 * per_item * 3538 / 1024 * 0.0000166667, rel=1e-9)
    assert by_name["Lambda init (cold starts), Processor"] == pytest.approx(4 * 0.8 * 3538 / 1024 * 0.0000166667,
                                                                            rel=1e-9)


def test_unknown_recipe_is_named(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="no cost model for recipe 'nope'"):
        est.estimate("nope", dt.date(2022, 1, 1), dt.date(2022, 1, 2), MEMORY, _model(tmp_path))


def test_estimate_command_prints_the_total_and_its_assumptions(tmp_path: Path, monkeypatch, capsys) -> None:
    model_path = tmp_path / "cost_model.json"
    _model(tmp_path)  # writes model_path
    monkeypatch.setattr(est, "COST_MODEL", model_path)
    assert main(["estimate", "--recipe", "sst-global-mean", "--start", "2022-01-01", "--end", "2022-12-31",
                 "--memory-mb", "512"]) == 0
    out = capsys.readouterr().out
    assert "365 items" in out and "total" in out and "assumptions:" in out and "Processor 512" in out
    assert main(["estimate", "--recipe", "sst-global-mean", "--start", "2022-02-01", "--end", "2022-01-01"]) == 2


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
    result = est.estimate("cells", dt.date(2019, 1, 1), dt.date(2019, 1, 31), MEMORY, model)
    assert result.items == 49152  # 2,500 × 31 = 77,500 > 49,152
    assert ("items: 49152 (2500 per day over 31 days would be 77500, more than the recipe's 49152 possible items: "
            "at most that)") in result.assumptions
