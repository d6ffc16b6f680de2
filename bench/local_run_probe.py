"""One local execution of the state machine in this fresh process, measured; prints one JSON line.

``local_run_probe.py OUT RECIPE START END SOURCE [--param K=V]... [--max-concurrency N] [--workers N]
[--warm-up-param K=V]...``

Reported: ``seconds`` (wall clock of ``run_locally``: engine start, the execution, products copied out), the
summary's item counts and status, ``engine_peak_mb`` (this process's VmHWM: the moto server, its Step Functions
engine and the dispatch threads live here) and ``workers_peak_mb`` / ``workers_total_peak_mb`` (the largest RSS of
one worker process, and of all of them together, sampled every 0.1 s with psutil), the CPU seconds of the
engine process and of its (reaped) worker processes, and ``phases``: the run's wall clock split at its Lambda
invocations (OUT/logs/invocations.jsonl): ``start`` (until BuildCatalog is called: engine start-up), ``catalog`` (until
the first Processor call: BuildCatalog, FetchCredentials), ``items`` (first Processor call to the end of the last: the
only part more workers can shorten), ``aggregate`` (the Aggregate call) and ``end`` (the rest: the step from the
Map to Aggregate, products copied out, shut-down).

With ``--warm-up-param``, the run is the second of a started ``Workspace`` (granulemap/local/run.py: the engine
started once, as a notebook keeps it): ``seconds``, ``phases`` and ``engine_cpu_s`` are that run's alone (its start is
start_execution), and the workers' CPU and memory are not reported (the workers outlive it).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import execution_input, execution_parser, vm_hwm_mb  # noqa: E402


class ChildSampler(threading.Thread):
    """Samples the RSS of this process's children until stopped: every ``every`` s, finding the children anew every
    ``rescan`` s (psutil finds them by reading every process of the machine: sampled every 0.1 s, that scan alone
    cost the engine process about a tenth of its CPU)."""

    def __init__(self, every: float = 0.1, rescan: float = 1.0):
        super().__init__(daemon=True)
        self.every = every
        self.rescan = rescan
        self.stop_event = threading.Event()
        self.peak_one = 0.0
        self.peak_total = 0.0
        self.max_children = 0

    def run(self) -> None:
        me = psutil.Process()
        children: list[psutil.Process] = []
        scanned = float("-inf")
        while not self.stop_event.is_set():
            if time.monotonic() - scanned >= self.rescan:
                children = me.children(recursive=True)
                scanned = time.monotonic()
                self.max_children = max(self.max_children, len(children))
            total = 0.0
            for child in children:
                try:
                    rss = child.memory_info().rss / 1024**2
                except psutil.Error:
                    continue
                total += rss
                self.peak_one = max(self.peak_one, rss)
            self.peak_total = max(self.peak_total, total)
            self.stop_event.wait(self.every)


def phases(invocations: Path, started: float, seconds: float) -> dict[str, float] | None:
    """Seconds of each phase of the run (see the module's docstring); None if a function was never called. Calls
    before ``started`` (a warm-up run's, with ``--warm-up-param``) are left out."""
    calls = [json.loads(line) for line in invocations.read_text().splitlines()] if invocations.exists() else []
    calls = [c for c in calls if c["start"] >= started]
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for c in calls:
        first[c["function"]] = min(first.get(c["function"], c["start"]), c["start"])
        last[c["function"]] = max(last.get(c["function"], 0.0), c["start"] + c["seconds"])
    needed = ("CatalogBuilderFunction", "ProcessorFunction", "AggregatorFunction")
    if not all(f in first for f in needed):
        return None
    marks = [started, first["CatalogBuilderFunction"], first["ProcessorFunction"], last["ProcessorFunction"],
             first["AggregatorFunction"], last["AggregatorFunction"], started + seconds]
    catalog, items, aggregate = marks[2] - marks[1], marks[3] - marks[2], marks[5] - marks[4]
    return {"start": round(marks[1] - marks[0], 3), "catalog": round(catalog, 3), "items": round(items, 3),
            "aggregate": round(aggregate, 3),
            "end": round(seconds - (marks[1] - marks[0]) - catalog - items - aggregate, 3)}


def main(argv: list[str]) -> int:
    parser = execution_parser()
    parser.add_argument("--max-concurrency", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--warm-up-param", action="append", default=[],
                        help="K=JSON: first run ten days per worker with these parameters (a configuration of its "
                             "own, so the measured run reuses none of its results) on the same started workspace, "
                             "and measure only the run after it")
    args = parser.parse_args(argv)

    from granulemap.local.run import Workspace, run_locally

    doc = execution_input(args)
    if args.max_concurrency:
        doc["max_concurrency"] = args.max_concurrency
    out = Path(args.out)
    if args.warm_up_param:
        # A dekad per worker, so that every worker has been forked before the measured run (a process pool forks
        # one only when none is idle).
        days = 10 * (args.workers or os.cpu_count() or 1)
        warm_up = {**doc, "end": str(dt.date.fromisoformat(args.start) + dt.timedelta(days=days - 1)),
                   "params": {**doc.get("params", {}),
                              **{k: json.loads(v) for k, v in (p.split("=", 1) for p in args.warm_up_param)}}}
        with Workspace(out, workers=args.workers) as workspace:
            workspace.run(warm_up, out / "warm-up", timeout=3600)
            before = os.times()
            started, wall_started = time.perf_counter(), time.time()
            summary = workspace.run(doc, out, timeout=3600)
            seconds = time.perf_counter() - started
            cpu = os.times()
        print(json.dumps({
            "seconds": seconds, "status": summary["status"], "items": summary["items"],
            "granules": summary.get("granules"), "warm": True,
            "engine_cpu_s": round(cpu.user + cpu.system - before.user - before.system, 2),
            "phases": phases(out / "logs" / "invocations.jsonl", wall_started, seconds),
        }))
        return 0
    sampler = ChildSampler()
    sampler.start()
    started, wall_started = time.perf_counter(), time.time()
    summary = run_locally(doc, out, workers=args.workers, progress=False, timeout=3600)
    seconds = time.perf_counter() - started
    sampler.stop_event.set()
    sampler.join()
    cpu = os.times()
    print(json.dumps({
        "seconds": seconds, "status": summary["status"], "items": summary["items"],
        "granules": summary.get("granules"),
        "engine_peak_mb": round(vm_hwm_mb(), 1), "workers_peak_mb": round(sampler.peak_one, 1),
        "workers_total_peak_mb": round(sampler.peak_total, 1), "children_seen": sampler.max_children,
        "engine_cpu_s": round(cpu.user + cpu.system, 2), "workers_cpu_s": round(cpu.children_user + cpu.children_system, 2),
        "phases": phases(out / "logs" / "invocations.jsonl", wall_started, seconds),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
