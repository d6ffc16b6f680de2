"""``make bench``: every benchmark of granulemap, side by side, written to BENCHMARKS.md and the cost model.

    .venv/bin/python bench/run.py --write BENCHMARKS.md [--repeats 15] [--orchestration-repeats 2] [--only sst,atl06]

Sections: sst (bench/sst.py), atl06 (bench/atl06.py), orchestration (bench/orchestration.py), package
(bench/package.py), cost (granulemap estimate on the measured cost model). With --write, the measured facts the
cost estimate needs are also written to layers/common/granulemap/cost_model.json (one place for each fact).
Timings are ratios between contenders run interleaved in the same run; absolute times depend on the machine's load.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import ROOT, machine  # noqa: E402

COST_MODEL = ROOT / "layers" / "common" / "granulemap" / "cost_model.json"
SECTIONS = ("sst", "atl06", "orchestration", "package", "cost")
PODAAC_PUBLISHED_USD = 0.72
"""PO.DAAC's tutorial: one year of daily MUR25 global means with AWS Lambda (their published figure)."""
ZAGG_PUBLISHED_USD = 0.006
"""zagg: one order-6 cell of ATL06 (its published figure, about)."""


def fmt(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}"


def ratio_cell(r: dict[str, float]) -> str:
    return f"{r['min']:.2f} / {r['median']:.2f}"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


# ---- cost model ------------------------------------------------------------------------------------------------
def cost_model(results: dict[str, Any]) -> dict[str, Any]:
    """The measured facts estimate.py needs, plus the assumptions it cannot measure here (named as such)."""
    previous = json.loads(COST_MODEL.read_text()) if COST_MODEL.exists() else {}
    model: dict[str, Any] = {
        "_comment": "Written by `make bench` (bench/run.py); read by granulemap/estimate.py. compute_s: seconds of "
                    "one item's work at one vCPU measured on the benchmark machine (median); the s3_* and "
                    "fixed_function_s values are assumptions, not measurements.",
        "measured": {"date": dt.date.today().isoformat(), "machine": results["machine"]},
        "recipes": previous.get("recipes", {}),
        "cold_import_s": previous.get("cold_import_s") or {fn: 1.0 for fn in (  # assumed until measured
            "CatalogBuilderFunction", "CredentialFetcherFunction", "ProcessorFunction", "AggregatorFunction")},
        "s3_mb_per_s": 80.0, "s3_request_latency_s": 0.02,
        "fixed_function_s": {"CatalogBuilderFunction": 1.0, "CredentialFetcherFunction": 0.5, "AggregatorFunction": 2.0},
        "aggregate_s_per_item": 0.005,
    }
    if "sst" in results:
        sst_s = results["sst"]["timings"]["ours-ocean"]["median"] / 1e3
        mb = (ROOT / "tests/data/ghrsst/20181231090000-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2.nc").stat().st_size / 1e6
        for name in ("sst-global-mean", "sst-box-mean"):  # sst-box-mean reads the same fields: same cost assumed
            model["recipes"][name] = {"compute_s": round(sst_s, 5), "input_mb": round(mb, 2), "items_per_day": 1}
    if "atl06" in results:
        one = next(v for k, v in results["atl06"]["datasets"].items() if k.startswith("synthetic 1 granule"))
        model["recipes"]["atl06-cell-stats"] = {
            "compute_s": round(one["timings"]["ours+write"]["median"] / 1e3, 4),
            "input_mb": round(results["atl06"]["synthetic_mb"], 1),
            "items_per_day": 2500, "max_items": 12 * 4**6,
            "s3_gets_per_item": 2, "s3_puts_per_item": 10,
        }
    if "package" in results:
        model["cold_import_s"] = {fn: round(v["median"], 3) for fn, v in results["package"]["cold_import_s"].items()}
    return model


def cost(model: dict[str, Any]) -> dict[str, Any]:
    from granulemap.estimate import CostModel, estimate, template_memory

    COST_MODEL_TMP = ROOT / "bench" / ".cost_model.tmp.json"
    COST_MODEL_TMP.write_text(json.dumps(model))
    try:
        cm = CostModel.load(COST_MODEL_TMP)
    finally:
        COST_MODEL_TMP.unlink()
    memory = template_memory()
    out: dict[str, Any] = {"template_memory": memory, "cases": {}}
    cases = [("sst-global-mean", dt.date(2022, 1, 1), dt.date(2022, 12, 31), None, None, PODAAC_PUBLISHED_USD),
             ("sst-global-mean", dt.date(2022, 1, 1), dt.date(2022, 12, 31), None, 512, PODAAC_PUBLISHED_USD),
             ("atl06-cell-stats", dt.date(2022, 1, 1), dt.date(2022, 1, 1), 1, None, ZAGG_PUBLISHED_USD)]
    for recipe, start, end, items, mem, published in cases:
        if recipe not in cm.recipes:
            continue
        m = dict(memory)
        if mem:
            m["ProcessorFunction"] = mem
        e = estimate(recipe, start, end, m, cm, items=items)
        key = f"{recipe} {start}..{end}" + (f", {items} item" if items else "") + f", Processor {m['ProcessorFunction']} MB"
        out["cases"][key] = {"usd": e.total_usd, "published_usd": published, "items": e.items,
                             "lines": [(w, u, h) for w, u, h in e.lines], "assumptions": e.assumptions}
    return out


# ---- the report ------------------------------------------------------------------------------------------------
def report(results: dict[str, Any], command: str, seconds: float) -> str:
    m = results["machine"]
    out = [
        "# granulemap benchmarks",
        "",
        f"Written by `make bench` ({command}) on {results['date']}, in {seconds / 60:.1f} min.",
        f"Machine: {m['nproc']} cores ({m['cpu']}), {m['memory']}, {m['os']}, Python {m['python']}; load average at "
        f"start {m['load_at_start']} (other engineers' test runs share these cores: absolute times are noisy, so every "
        "claim below is a ratio between contenders run interleaved in the same repeats, given as min / median).",
        "",
    ]
    if "sst" in results:
        s = results["sst"]
        r = s["ratios"]
        out += ["## SST per granule (real MUR25 granule, 720 × 1440)", "",
                "| contender | min ms | median ms | peak RSS MB (imports → after one granule) | work MB |",
                "|---|---:|---:|---:|---:|"]
        for name, t in s["timings"].items():
            rss = s["rss"].get(name, {})
            out.append(f"| {name} | {fmt(t['min'])} | {fmt(t['median'])} | {rss.get('imports_mb', '–')} → "
                       f"{rss.get('peak_mb', '–')} | {rss.get('work_mb', '–')} |")
        out += ["", f"{s['timings']['ours-ocean']['repeats']} interleaved repeats. Ratios (min / median; > 1 means "
                "the first is slower):", "", "| ratio | min / median | target |", "|---|---:|---|"]
        targets = {"podaac-as-written / ours-tutorial": ("≥ 4", lambda x: x["median"] >= 4),
                   "ours-ocean / floor-ocean": ("≤ 1.25", lambda x: x["median"] <= 1.25),
                   "ours-tutorial / floor-tutorial": ("≤ 1.25", lambda x: x["median"] <= 1.25),
                   "proposed-ocean / floor-ocean": ("< 1 (below the floor)", lambda x: x["median"] < 1),
                   "proposed-tutorial / floor-tutorial": ("< 1 (below the floor)", lambda x: x["median"] < 1)}
        for name, value in r.items():
            target, ok = targets.get(name, ("", None))
            out.append(f"| {name} | {ratio_cell(value)} | {target} {verdict(ok(value)) if ok else ''} |")
        peak = max(v["peak_mb"] for k, v in s["rss"].items() if k.startswith("ours"))
        out += ["", f"Peak RSS of our per-item work: {peak} MB in a fresh process (target ≤ 256 MB: "
                f"{verdict(peak <= 256)}); measured as VmHWM (see bench/rss_probe.py for why not ru_maxrss).", ""]
        inf = s["inflate"]
        out += [f"Inflating analysed_sst's one zlib+shuffle chunk ({inf['compressed_bytes']:,} → {inf['bytes']:,} "
                "bytes), side by side:", "", "| how | min ms | median ms | vs zlib (min / median) |", "|---|---:|---:|---:|"]
        for name, row in inf["rows"].items():
            out.append(f"| {name} | {fmt(row['min'])} | {fmt(row['median'])} | {ratio_cell(row['vs_zlib'])} |")
        out += ["", "Checks made before timing:", *[f"- {c}" for c in s["checks"]], *[f"- skipped: {x}" for x in s["skipped"]], ""]
    if "atl06" in results:
        a = results["atl06"]
        out += ["## ATL06 per parent cell (ours vs zagg 0.61 `process_shard`, same cells and files)", "",
                "| input | parents | segments in timed parent | ours ms | ours+write ms | zagg ms | zagg / ours | "
                "zagg / ours+write | target ≥ 2 |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for name, d in a["datasets"].items():
            t = d["timings"]
            out.append(f"| {name} | {d['parents']} | {d['segments_in_timed_parent']:,} | "
                       f"{fmt(t['ours']['min'], 0)} / {fmt(t['ours']['median'], 0)} | "
                       f"{fmt(t['ours+write']['min'], 0)} / {fmt(t['ours+write']['median'], 0)} | "
                       f"{fmt(t['zagg']['min'], 0)} / {fmt(t['zagg']['median'], 0)} | {ratio_cell(d['zagg / ours'])} | "
                       f"{ratio_cell(d['zagg / ours+write'])} | {verdict(d['zagg / ours']['median'] >= 2)} |")
        out += ["", "Times are min / median ms. Every parent cell of every input was checked before timing: counts, "
                "h_min and h_max identical, the other statistics within 1e-6 relative (cells with data per parent: "
                + "; ".join(f"{k}: {v['cells_with_data']}" for k, v in a["datasets"].items()) + ").",
                f"Peak RSS on {a['rss_input']} (busiest parent cell, fresh process): "
                + ", ".join(f"{k} {v['imports_mb']} → {v['peak_mb']} MB (work {v['work_mb']} MB)" for k, v in a["rss"].items()),
                ""]
    if "orchestration" in results:
        o = results["orchestration"]
        ov = o["overhead"]
        out += ["## Local engine", "",
                f"Overhead per item (no-op recipe, max concurrency {ov['max_concurrency']}): slope between runs of "
                f"{ov['small']} and {ov['large']} items, {ov['repeats']} interleaved repeats.", "",
                "| engine | ms per item (min / median) | engine CPU ms/item | workers CPU ms/item | target ≤ 10 ms |",
                "|---|---:|---:|---:|---|"]
        for name, v in ov["variants"].items():
            out.append(f"| {name} | {fmt(v['ms_per_item']['min'], 1)} / {fmt(v['ms_per_item']['median'], 1)} | "
                       f"{fmt(v['engine_cpu_ms_per_item'], 1)} | {fmt(v['workers_cpu_ms_per_item'], 1)} | "
                       f"{verdict(v['ms_per_item']['median'] <= 10)} |")
        out += ["", f"Proposed / as is: {ratio_cell(ov['proposed / as is'])}.", ""]
        ld = o["load"]
        it = ld["items"]
        out += [f"Load: {ld['items_requested']:,} no-op items, max concurrency {ld['max_concurrency']}: {ld['status']} in "
                f"{fmt(ld['seconds'], 0)} s; summary.json: {it['succeeded']} succeeded + {it['failed']} failed + "
                f"{it['skipped']} skipped = {it['succeeded'] + it['failed'] + it['skipped']} of {it['total']} "
                f"(every item accounted for); peak RSS: engine process {ld['engine_peak_mb']} MB, one worker "
                f"{ld['workers_peak_mb']} MB, all workers {ld['workers_total_peak_mb']} MB.", ""]
        se = o["series"]
        out += [f"Series: {se['days']} daily synthetic MUR25 granules, sst-global-mean, end to end "
                f"({se['repeats']} interleaved repeats):", "",
                "| workers | seconds | granules/s (best / median) |", "|---:|---|---:|"]
        for w in (1, 2):
            v = se[f"{w}_workers"]
            out.append(f"| {w} | {', '.join(fmt(x, 1) for x in v['seconds'])} | "
                       f"{fmt(v['granules_per_s']['max'], 1)} / {fmt(v['granules_per_s']['median'], 1)} |")
        out += ["", f"Speed-up 2 vs 1 workers: {ratio_cell(se['speedup'])} (target ≥ 1.7: "
                f"{verdict(se['speedup']['median'] >= 1.7)})."]
        if "ideal_granules_per_s" in se:
            out.append(f"2 × the single-granule floor would be {fmt(se['ideal_granules_per_s'], 0)} granules/s; the "
                       f"best 2-worker run reached {fmt(100 * se['fraction_of_ideal'], 1)} % of that.")
        out.append("")
    if "package" in results:
        p = results["package"]
        out += ["## Lambda package (`sam build`)", "",
                f"Layer unzipped: {fmt(p['layer_mb'], 1)} MB; largest function folder {fmt(p['largest_function_mb'], 3)} MB; "
                f"function + layer {fmt(p['function_plus_layer_mb'], 1)} MB (AWS limit 250 MB: "
                f"{verdict(p['function_plus_layer_mb'] <= 250)}; target ≤ 150 MB: {verdict(p['function_plus_layer_mb'] <= 150)}).",
                "", "Biggest packages in the layer (MB, with their .libs/.dist-info):", "",
                "| package | MB |", "|---|---:|", *[f"| {n} | {fmt(mb, 1)} |" for n, mb in p["biggest"]], "",
                "Cold `import app` in a fresh `python3.12 -S` with only the built layer and the function's folder on "
                "sys.path (target ≤ 1.5 s):", "", "| function | min s | median s | modules loaded | target |",
                "|---|---:|---:|---:|---|"]
        for fn, v in p["cold_import_s"].items():
            out.append(f"| {fn} | {fmt(v['min'])} | {fmt(v['median'])} | {v['modules']} | {verdict(v['median'] <= 1.5)} |")
        out.append("")
    if "cost" in results:
        c = results["cost"]
        out += ["## Cost (`granulemap estimate`, us-west-2)", "",
                f"Template memory (MB): {c['template_memory']}.", "", "| case | ours | published |", "|---|---:|---:|"]
        for case, v in c["cases"].items():
            out.append(f"| {case} | ${v['usd']:.4f} | ${v['published_usd']:.3f} |")
        first = next(iter(c["cases"].values()), None)
        if first:
            out += ["", "Assumptions (first case):", *[f"- {a}" for a in first["assumptions"]]]
        out.append("")
    out += NOTES
    return "\n".join(out) + "\n"


NOTES = [
    "## How to read this, and what is proposed",
    "",
    "- Contenders are defined in bench/sst.py, bench/atl06.py, bench/orchestration.py and bench/package.py (their "
    "docstrings say exactly what each one does); the cost arithmetic is granulemap/estimate.py, fed by "
    "granulemap/cost_model.json, which this run wrote.",
    "- `proposed-*` (SST) is bench/fast_ghrsst.py: the reader and reduction proposed for granulemap/recipes/ghrsst.py "
    "(h5py opens the file; a (shuffle+)deflate chunk is read raw and inflated with libdeflate, falling back to ISA-L "
    "or zlib; the mask test runs on int8). It is checked bit-identical to ours (arrays and unrounded statistics) on "
    "the real and on synthetic granules before it is timed. Adopting it needs `h5py` and `deflate` in "
    "layers/common/requirements.txt (and lets netCDF4 + cftime leave the layer).",
    "- `proposed: cached SFN boto3 client` (local engine) is a patch proposed for granulemap/local/engine.py: moto's "
    "Step Functions engine creates a new boto3 Lambda client for every Lambda task; reusing one cuts the engine "
    "process's CPU per item (bench/local_run_probe.py `--cache-sfn-clients`).",
    "- The PO.DAAC tutorial contender needs h5py (xarray's h5netcdf engine); it is skipped, and said so above, when "
    "h5py is not installed. libdeflate, ISA-L and zlib-ng rows appear when `deflate`, `isal`, `zlib-ng` are installed.",
    "",
]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", type=Path, help="write the report here (and the cost model)")
    parser.add_argument("--repeats", type=int, default=15, help="repeats of the per-item benchmarks (default 15)")
    parser.add_argument("--orchestration-repeats", type=int, default=2, help="repeats of the local runs (default 2)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    parser.add_argument("--json", type=Path, help="also dump the raw results here")
    parser.add_argument("--render", type=Path, help="only re-render --write from raw results saved with --json")
    args = parser.parse_args(argv)
    if args.render:
        saved = json.loads(args.render.read_text())
        text = report(saved, saved.get("command", "?"), saved.get("seconds", float("nan")))
        (args.write or Path("/dev/stdout")).write_text(text)
        return 0
    sections = [s for s in args.only.split(",") if s]
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": machine(), "date": dt.date.today().isoformat()}

    def step(name: str, fn: Any) -> None:
        if name in sections:
            t = time.perf_counter()
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            results[name] = fn()
            print(f"[bench] {name} done in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)

    import atl06
    import orchestration
    import package
    import sst

    step("sst", lambda: sst.run(args.repeats))
    step("atl06", lambda: atl06.run(max(3, args.repeats // 3)))
    floor = results["sst"]["timings"]["floor-ocean"]["min"] / 1e3 if "sst" in results else None
    step("orchestration", lambda: orchestration.run(args.orchestration_repeats, floor_seconds=floor))
    step("package", lambda: package.run(max(3, args.repeats // 5)))
    model = cost_model(results)
    step("cost", lambda: cost(model))
    seconds = time.perf_counter() - started
    command = ".venv/bin/python bench/run.py " + " ".join(argv)
    text = report(results, command, seconds)
    results["command"], results["seconds"] = command, seconds
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    if args.write:
        args.write.write_text(text)
        if all(s in sections for s in ("sst", "atl06", "package")):
            COST_MODEL.write_text(json.dumps(model, indent=1) + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
