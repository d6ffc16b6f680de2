"""Measuring side by side: interleaved repeats, min/median, ratios, peak RSS in fresh processes, the machine.

The project's rule (other engineers run tests on the same 2-core machine, so absolute times are noisy): every
figure is a ratio between contenders timed in the same run on the same input, each repeat running every contender
once (in a rotating order), reported with the min and the median of the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = sys.executable


@dataclass
class Timing:
    """Wall-clock seconds of one contender, one value per repeat."""

    name: str
    seconds: list[float] = field(default_factory=list)

    @property
    def min(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def interleaved(contenders: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1,
                inner: int = 1) -> dict[str, Timing]:
    """Time each contender ``repeats`` times, interleaved: repeat r runs every contender once, starting at a
    different one each time (so a slow moment of the machine is shared out). ``inner`` calls per sample."""
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    timings = {name: Timing(name) for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            fn = contenders[name]
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            timings[name].seconds.append((time.perf_counter() - start) / inner)
    return timings


def ratio(numerator: Timing, denominator: Timing) -> dict[str, float]:
    """numerator/denominator of the mins and of the medians (> 1: the numerator is slower)."""
    return {"min": numerator.min / denominator.min, "median": numerator.median / denominator.median}


def timing_row(t: Timing, unit: float = 1e-3) -> dict[str, float]:
    return {"min": t.min / unit, "median": t.median / unit, "repeats": len(t.seconds)}


def vm_hwm_mb() -> float:
    """This program's peak RSS in MB: the kernel's high-water mark, VmHWM (bench/rss_probe.py says why not
    ru_maxrss); ru_maxrss only where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def execution_parser() -> argparse.ArgumentParser:
    """The arguments of the probes that run one local execution: OUT RECIPE START END SOURCE [--param K=V]..."""
    parser = argparse.ArgumentParser()
    for name in ("out", "recipe", "start", "end", "source"):
        parser.add_argument(name)
    parser.add_argument("--param", action="append", default=[], help="a recipe parameter, K=JSON value")
    parser.add_argument("--group", choices=("dekad", "granule"), help="the execution input's group")
    return parser


def execution_input(args: argparse.Namespace) -> dict[str, Any]:
    """The execution input that ``execution_parser``'s arguments describe."""
    doc: dict[str, Any] = {"recipe": args.recipe, "start": args.start, "end": args.end, "source": args.source}
    if args.param:
        doc["params"] = {k: json.loads(v) for k, v in (p.split("=", 1) for p in args.param)}
    if args.group:
        doc["group"] = args.group
    return doc


def run_json(args: list[str], env: dict[str, str] | None = None, timeout: float = 600,
             replace_env: bool = False) -> Any:
    """Run a Python script of bench/ in a fresh interpreter; its last stdout line is JSON. ``env`` is added to this
    process's environment, or is the whole of it with ``replace_env``."""
    proc = subprocess.run([PYTHON, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=dict(env or {}) if replace_env else {**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> dict[str, str]:
    """nproc, CPU model, memory, OS and Python of this machine."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "memory": mem, "os": platform.platform(),
            "python": platform.python_version(), "load_at_start": load}
