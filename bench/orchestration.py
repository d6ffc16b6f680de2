"""The local engine: overhead per item (no-op recipe), a 2,000-item load run, and 365 daily granules on 1 and 2 workers.

Every run is one ``granulemap run``-equivalent execution (``run_locally``) in a fresh process (bench/local_run_probe.py),
so that each starts from an empty emulated account and its memory is its own.

- Overhead per item: the no-op recipe (bench/noop_recipe.py, installed through a real entry point in a temporary
  site folder on sys.path and PYTHONPATH) with ``small`` and ``large`` items at max concurrency 8, interleaved;
  per item = (t_large - t_small) / (large - small): engine start-up and Aggregate's fixed part cancel out. The
  engine dispatches the state machine's Lambda tasks straight to its worker pool (granulemap/local/engine.py).
- Load: 2,000 no-op items at max concurrency 50: every item accounted for (succeeded + failed + skipped = total,
  from summary.json), its time, and the peak RSS of the engine process and of the workers.
- Series: 365 daily SYNTHETIC MUR25-format granules (granulemap.synthetic.make_synthetic_series), sst-global-mean,
  with ``workers`` 1 and 2, interleaved, in the default items (one per dekad: granulemap.grouping) and with one item
  per granule (``group``); speed-up end to end and of the items phase alone (first Processor call to
  the end of the last, from the run's invocation log: the part more workers can shorten), each run's phases, and
  granules/s against 2 x the best time of one granule alone (ours-ocean in the SST section): what two cores could do
  if the engine cost nothing. The same series again as the second run of a started ``Workspace``
  (``started_workspace``): a run without a process start in it.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import BENCH, PYTHON, ROOT, Timing, ratio, run_json  # noqa: E402

NOOP = "bench-noop"
MUR25 = ROOT / "tests" / "data" / "ghrsst" / "20181231090000-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2.nc"


def install_noop_recipe(site: Path) -> dict[str, str]:
    """The no-op recipe as an installed distribution in ``site``; returns the environment that makes it visible."""
    site.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(BENCH / "noop_recipe.py", site / "granulemap_bench_noop.py")
    dist = site / "granulemap_bench_noop-0.1.0.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: granulemap-bench-noop\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text(f"[granulemap.recipes]\n{NOOP} = granulemap_bench_noop:recipe\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def local_run(tmp: Path, tag: str, recipe: str, source: Path, start: str, end: str, env: dict[str, str],
              params: dict[str, Any] | None = None, max_concurrency: int | None = None,
              workers: int | None = None, group: str | None = None,
              warm_up_params: dict[str, str] | None = None) -> dict[str, Any]:
    out = tmp / tag
    shutil.rmtree(out, ignore_errors=True)
    args = ["bench/local_run_probe.py", str(out), recipe, start, end, str(source)]
    args += [f"--param={k}={v}" for k, v in (params or {}).items()]
    args += [f"--warm-up-param={k}={v}" for k, v in (warm_up_params or {}).items()]
    if max_concurrency:
        args.append(f"--max-concurrency={max_concurrency}")
    if workers:
        args.append(f"--workers={workers}")
    if group:
        args.append(f"--group={group}")
    result = run_json(args, env=env, timeout=3600)
    shutil.rmtree(out, ignore_errors=True)
    items = result["items"]
    if result["status"] != "SUCCEEDED" or items["succeeded"] + items["failed"] + items["skipped"] != items["total"]:
        raise AssertionError(f"{tag}: not every item accounted for: {result}")
    return result


def overhead(tmp: Path, env: dict[str, str], small: int, large: int, repeats: int) -> dict[str, Any]:
    empty = tmp / "no-granules"
    empty.mkdir(exist_ok=True)
    times = {n: Timing(f"{n} items") for n in (small, large)}
    cpu: dict[int, list[tuple[float, float]]] = {n: [] for n in times}
    for r in range(repeats):
        for n in ((small, large) if r % 2 == 0 else (large, small)):
            res = local_run(tmp, f"noop-{n}", NOOP, empty, "2020-01-01", "2020-01-01", env,
                            params={"items": n}, max_concurrency=8)
            if res["items"]["succeeded"] != n:
                raise AssertionError(f"no-op run of {n}: {res['items']}")
            times[n].seconds.append(res["seconds"])
            cpu[n].append((res["engine_cpu_s"], res["workers_cpu_s"]))
    span = large - small
    per_item = [(y - x) / span for x, y in zip(times[small].seconds, times[large].seconds, strict=True)]
    engine_cpu = [(y[0] - x[0]) / span for x, y in zip(cpu[small], cpu[large], strict=True)]
    worker_cpu = [(y[1] - x[1]) / span for x, y in zip(cpu[small], cpu[large], strict=True)]
    return {
        "small": small, "large": large, "max_concurrency": 8, "repeats": repeats,
        "seconds_small": times[small].seconds, "seconds_large": times[large].seconds,
        "ms_per_item": {"min": 1e3 * min(per_item), "median": 1e3 * statistics.median(per_item)},
        "engine_cpu_ms_per_item": {"min": 1e3 * min(engine_cpu), "median": 1e3 * statistics.median(engine_cpu)},
        "workers_cpu_ms_per_item": {"min": 1e3 * min(worker_cpu), "median": 1e3 * statistics.median(worker_cpu)},
    }


def load(tmp: Path, env: dict[str, str], items: int, concurrency: int) -> dict[str, Any]:
    empty = tmp / "no-granules"
    empty.mkdir(exist_ok=True)
    res = local_run(tmp, "load", NOOP, empty, "2020-01-01", "2020-01-01", env, params={"items": items},
                    max_concurrency=concurrency)
    return {"items_requested": items, "max_concurrency": concurrency, **res}


def series(tmp: Path, days: int, repeats: int, one_granule_seconds: float | None) -> dict[str, Any]:
    from granulemap.synthetic import make_synthetic_series

    source = tmp / "series"
    start = dt.date(2019, 1, 1)
    make_synthetic_series(MUR25, source, start, days)
    end = start + dt.timedelta(days=days - 1)
    # The default (one item per dekad: granulemap.grouping) on 1 and 2 workers, and one item per granule, to show
    # what grouping changes. Keys: (workers, group).
    configs = [(1, "dekad"), (2, "dekad"), (1, "granule"), (2, "granule")]
    timings = {c: Timing(f"{c[0]} workers, {c[1]}") for c in configs}
    items_phase = {c: Timing(f"{c[0]} workers, {c[1]}, items phase") for c in configs}
    phases: dict[tuple[int, str], list[dict[str, float]]] = {c: [] for c in configs}
    memory: dict[int, dict[str, float]] = {}
    cpu: dict[tuple[int, str], list[tuple[float, float]]] = {c: [] for c in configs}
    items: dict[tuple[int, str], int] = {}
    for r in range(repeats):
        for config in (configs if r % 2 == 0 else configs[::-1]):
            workers, group = config
            res = local_run(tmp, f"series-{workers}-{group}", "sst-global-mean", source, str(start), str(end), {},
                            workers=workers, group=group)
            if res["granules"]["succeeded"] != days:
                raise AssertionError(f"series on {workers} workers, {group}: {res['granules']}")
            items[config] = res["items"]["total"]
            timings[config].seconds.append(res["seconds"])
            cpu[config].append((res["engine_cpu_s"], res["workers_cpu_s"]))
            if res.get("phases") is None:
                raise AssertionError(f"series on {workers} workers: no phases (a function was never called): {res}")
            phases[config].append(res["phases"])
            items_phase[config].seconds.append(res["phases"]["items"])
            if group == "dekad":
                memory[workers] = {k: res[k] for k in ("engine_peak_mb", "workers_peak_mb", "workers_total_peak_mb")}
    out: dict[str, Any] = {"days": days, "repeats": repeats, "memory": memory, "by_group": {}}
    for c, t in timings.items():
        w, group = c
        entry = {
            "items": items[c],
            "seconds": t.seconds, "granules_per_s": {"max": days / t.min, "median": days / t.median},
            "engine_cpu_ms_per_granule": statistics.median(1e3 * e / days for e, _ in cpu[c]),
            "workers_cpu_ms_per_granule": statistics.median(1e3 * k / days for _, k in cpu[c]),
            "phases": phases[c],
            "phases_median": {k: statistics.median(p[k] for p in phases[c]) for k in phases[c][0]},
        }
        out["by_group"][f"{w}_workers_{group}"] = entry
        if group == "dekad":
            out[f"{w}_workers"] = entry
    out["grouping_speedup"] = {f"{w}_workers": ratio(timings[(w, "granule")], timings[(w, "dekad")]) for w in (1, 2)}
    out["started_workspace"] = started_workspace(source, start, end, days, repeats)
    out["command_exit"] = command_exit(source, start, 30, max(3, repeats))
    one, two = (1, "dekad"), (2, "dekad")  # the default items: what the speed-up target is judged on
    out["speedup"] = ratio(timings[one], timings[two])
    out["items_phase_speedup"] = ratio(items_phase[one], items_phase[two])
    shutil.rmtree(source, ignore_errors=True)
    if one_granule_seconds:
        ideal = 2 / one_granule_seconds
        out["one_granule_ms"] = 1e3 * one_granule_seconds
        out["ideal_granules_per_s"] = ideal
        out["fraction_of_ideal"] = days / timings[two].min / ideal
    return out


def command_exit(source: Path, start: dt.date, days: int, repeats: int) -> dict[str, Any]:
    """The ``granulemap run`` command as a whole, a process's start to its end (``days`` granules, 2 workers): the
    console script, which leaves by ``os._exit`` once ``main`` has returned (granulemap.cli.console), against the same
    ``main`` ended by a normal interpreter exit, interleaved."""
    end = start + dt.timedelta(days=days - 1)
    run = ["run", "--recipe", "sst-global-mean", "--start", str(start), "--end", str(end), "--source", str(source),
           "--workers", "2", "--quiet"]
    contenders = {"console": [PYTHON, "-m", "granulemap.cli"],
                  "normal exit": [PYTHON, "-c", "import sys; from granulemap.cli import main; sys.exit(main())"]}
    timings = {name: Timing(name) for name in contenders}
    with tempfile.TemporaryDirectory() as name:
        for r in range(repeats):
            for contender in (list(contenders) if r % 2 == 0 else list(contenders)[::-1]):
                out = Path(name) / f"{contender}-{r}"
                started = time.perf_counter()
                proc = subprocess.run([*contenders[contender], *run, "--out", str(out)], capture_output=True,
                                      text=True, timeout=600, cwd=ROOT)
                timings[contender].seconds.append(time.perf_counter() - started)
                if proc.returncode != 0 or f"0 failed of {days}" not in proc.stdout:
                    raise AssertionError(f"granulemap run ({contender}) failed: {proc.stdout[-500:]} {proc.stderr[-1500:]}")
    return {"days": days, "repeats": repeats, "seconds": {k: t.seconds for k, t in timings.items()},
            "normal_minus_console": {"min": timings["normal exit"].min - timings["console"].min,
                                     "median": timings["normal exit"].median - timings["console"].median}}


def started_workspace(source: Path, start: dt.date, end: dt.date, days: int, repeats: int) -> dict[str, Any]:
    """The same series as the second run of a started ``Workspace`` (the engine started once, as a notebook keeps
    it), on 1 and 2 workers, interleaved: what the workers do for a run when no process start is in it."""
    timings = {w: Timing(f"{w} workers, started workspace") for w in (1, 2)}
    phases: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as name:
        for r in range(repeats):
            for w in ((1, 2) if r % 2 == 0 else (2, 1)):
                res = local_run(Path(name), f"warm-{w}", "sst-global-mean", source, str(start), str(end), {},
                                workers=w, warm_up_params={"method": '"podaac-tutorial"'})
                if res["granules"]["succeeded"] != days:
                    raise AssertionError(f"started workspace on {w} workers: {res['granules']}")
                timings[w].seconds.append(res["seconds"])
                phases[w].append(res["phases"])
    return {"seconds": {str(w): t.seconds for w, t in timings.items()},
            "phases_median": {str(w): {k: statistics.median(p[k] for p in ph) for k in ph[0]}
                              for w, ph in phases.items()},
            "speedup": ratio(timings[1], timings[2])}


def run(repeats: int, small: int = 200, large: int = 1000, load_items: int = 2000, days: int = 365,
        one_granule_seconds: float | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        env = install_noop_recipe(tmp / "site")
        return {
            "overhead": overhead(tmp, env, small, large, repeats),
            "load": load(tmp, env, load_items, 50),
            "series": series(tmp, days, repeats, one_granule_seconds),
        }
