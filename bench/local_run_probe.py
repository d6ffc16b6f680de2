"""One local execution of the state machine in this fresh process, measured; prints one JSON line.

``local_run_probe.py OUT RECIPE START END SOURCE [--param K=V]... [--max-concurrency N] [--workers N]``

Reported: ``seconds`` (wall clock of ``run_locally``: engine start, the execution, products copied out), the
summary's item counts and status, ``engine_peak_mb`` (this process's VmHWM: the moto server, its Step Functions
engine and the dispatch threads live here) and ``workers_peak_mb`` / ``workers_total_peak_mb`` (the largest RSS of
one worker process, and of all of them together, sampled every 0.1 s with psutil), and the CPU seconds of the
engine process and of its (reaped) worker processes.

``--cache-sfn-clients`` applies the change proposed for ``granulemap/local/engine.py`` (see BENCHMARKS.md): moto's
Step Functions engine builds a new boto3 Lambda client for every Lambda task (``boto_client_for`` in
``lambda_eval_utils``), which is most of its CPU per item; the patch hands it one cached client per
(region, service) instead. ``boto_client_for`` ignores its credentials argument, so the calls made are the same.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import psutil


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class ChildSampler(threading.Thread):
    """Samples the RSS of this process's children until stopped."""

    def __init__(self, every: float = 0.1):
        super().__init__(daemon=True)
        self.every = every
        self.stop_event = threading.Event()
        self.peak_one = 0.0
        self.peak_total = 0.0
        self.max_children = 0

    def run(self) -> None:
        me = psutil.Process()
        while not self.stop_event.is_set():
            total = 0.0
            children = me.children(recursive=True)
            self.max_children = max(self.max_children, len(children))
            for child in children:
                try:
                    rss = child.memory_info().rss / 1024**2
                except psutil.Error:
                    continue
                total += rss
                self.peak_one = max(self.peak_one, rss)
            self.peak_total = max(self.peak_total, total)
            self.stop_event.wait(self.every)


def cache_sfn_clients() -> None:
    """Make moto's Step Functions engine reuse one boto3 client per (region, service) for its Lambda tasks."""
    import functools

    import boto3
    from botocore.config import Config
    from moto.settings import moto_server_port
    from moto.stepfunctions.parser.asl.component.common.timeouts.timeout import TimeoutSeconds
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

    @functools.cache
    def client(region: str, service: str, port: int) -> object:
        return boto3.client(
            service_name=service, region_name=region, endpoint_url=f"http://localhost:{port}",
            aws_access_key_id="ak", aws_secret_access_key="sk",
            config=Config(parameter_validation=False, retries={"max_attempts": 0, "total_max_attempts": 1},
                          connect_timeout=TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS,
                          read_timeout=TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS, max_pool_connections=128),
        )

    def boto_client_for(region: str, service: str, state_credentials: object = None) -> object:
        return client(region, service, moto_server_port())

    lambda_eval_utils.boto_client_for = boto_client_for  # type: ignore[attr-defined]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("recipe")
    parser.add_argument("start")
    parser.add_argument("end")
    parser.add_argument("source")
    parser.add_argument("--param", action="append", default=[])
    parser.add_argument("--max-concurrency", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--cache-sfn-clients", action="store_true")
    args = parser.parse_args(argv)
    if args.cache_sfn_clients:
        cache_sfn_clients()

    from granulemap.local.run import run_locally

    doc: dict = {"recipe": args.recipe, "start": args.start, "end": args.end, "source": args.source}
    if args.param:
        doc["params"] = {k: json.loads(v) for k, v in (p.split("=", 1) for p in args.param)}
    if args.max_concurrency:
        doc["max_concurrency"] = args.max_concurrency
    sampler = ChildSampler()
    sampler.start()
    started = time.perf_counter()
    summary = run_locally(doc, Path(args.out), workers=args.workers, progress=False, timeout=3600)
    seconds = time.perf_counter() - started
    sampler.stop_event.set()
    sampler.join()
    cpu = os.times()
    print(json.dumps({
        "seconds": seconds, "status": summary["status"], "items": summary["items"],
        "engine_peak_mb": round(vm_hwm_mb(), 1), "workers_peak_mb": round(sampler.peak_one, 1),
        "workers_total_peak_mb": round(sampler.peak_total, 1), "children_seen": sampler.max_children,
        "engine_cpu_s": round(cpu.user + cpu.system, 2), "workers_cpu_s": round(cpu.children_user + cpu.children_system, 2),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
