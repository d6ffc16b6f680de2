"""Memory per Lambda function: the peak of each one in a local execution, and the MemorySize it should get.

Two executions, each invocation in a fresh process (bench/function_memory_probe.py), so that a peak is one cold
invocation's imports plus its work, as Lambda's "Max Memory Used" is:
- ``sst``: sst-global-mean over 8 daily SYNTHETIC MUR25 granules (granulemap.synthetic.make_synthetic_series);
- ``atl06``: atl06-cell-stats over the four SYNTHETIC ATL06 granules of bench/atl06.py (three parent cells, the
  busiest with about 1.7 million good segments).

Recommendation per function: 1.5 × the largest peak measured, rounded up to a multiple of 64 MB, at least 128 MB,
and at least the size at which its cold start takes COLD_START_S (2 s). Why no more: below 1,769 MB Lambda's CPU
share is proportional to memory, so CPU-bound work costs the same GB-s at any size while the time spent waiting on S3
costs less at a smaller one (granulemap/estimate.py); the margin of 1.5 is for items larger than these and for
Lambda's own runtime. The Processor's ATL06 memory grows with the segments in an item: the MB per million segments
comes from the ATL06 section's fresh-process probe.

At scale (``catalog_at_scale``): BuildCatalog in AWS holds the whole NASA CMR answer for the run's range
(earthaccess returns every record at once) and the manifest it writes, so its peak grows with the granules a range
has, which the small local runs above do not show; Aggregate reads that manifest whole. bench/catalog_memory_probe.py
runs the real ``build_catalog`` of atl06-cell-stats over CMR answers made of the recorded ATL06 record (a global
month has about 6,400 granules: 14 per orbit, 1,387 orbits in a 91-day cycle), at half and at a whole month, and
then reads the month's manifest as Aggregate does; each in a fresh process, S3 a moto server in another one. Both
functions' recommendations include them: BuildCatalog's the month's peak, Aggregate's the month's manifest read
plus the rest of its ATL06 run's work (its peak in the ``atl06`` run above its handler's imports).

Why the cold-start floor: a function's CPU share is its memory / 1,769 MB of one vCPU. Whether that share also runs
its cold start, the handler module's imports (bench/package.py measures them, in CPU seconds at one core: wall time of
a lone single-threaded import), depends on how Lambda starts it: AWS's serverless guides say an on-demand function's
init phase (limited to 10 s) runs on a full vCPU and a provisioned-concurrency one's at its share
(serverlessland.com, "Effectively running Java on Serverless: utilize the initialization phase"; the Lambda developer
guide does not say). The floor is sized for the slower case, and it speeds up in every case what a handler does at
its share after the imports on a cold start (FetchCredentials: earthaccess's Earthdata Login, an SSM client, TLS
set-up). At the share, a function that needs little memory would start for tens of seconds: FetchCredentials peaks
at ~80 MB, and at 128 MB (0.07 vCPU) its 0.35 s of imports take ~5 s with the layer's bytecode, ~12 s without. The
floor costs a fraction of a cent where it lifts a function that runs once a run; a deployed stack's REPORT log lines
(Init Duration) say how long its cold starts take.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import ROOT, run_json  # noqa: E402

from granulemap.estimate import FULL_VCPU_MB  # noqa: E402

MUR25 = ROOT / "tests" / "data" / "ghrsst" / "20181231090000-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2.nc"
COST_MODEL = ROOT / "layers" / "common" / "granulemap" / "cost_model.json"
MARGIN = 1.5
STEP_MB = 64
LAMBDA_MIN_MB = 128
MB_PER_VCPU = FULL_VCPU_MB
"""Lambda: "At 1,769 MB, a function has the equivalent of one vCPU"; below that the share is proportional."""
COLD_START_S = 2.0
"""The longest a function's cold imports may take at the CPU share of its recommended size."""
LAMBDA_INIT_LIMIT_S = 10.0
"""Lambda's init phase (a function's cold imports) is limited to 10 s (then Lambda tries it again within the first
invocation, under the function's timeout)."""


def cold_start_floor(cold_start_s: float) -> int:
    """The smallest size (a multiple of STEP_MB) at which imports of ``cold_start_s`` CPU seconds take COLD_START_S."""
    return STEP_MB * math.ceil(cold_start_s / COLD_START_S * MB_PER_VCPU / STEP_MB)


def recommend(peak_mb: float, cold_start_s: float = 0.0) -> int:
    """MemorySize for a function whose largest measured peak is ``peak_mb`` and whose cold imports take
    ``cold_start_s`` CPU seconds: MARGIN × peak rounded up to STEP_MB, no less than its ``cold_start_floor``."""
    return max(LAMBDA_MIN_MB, STEP_MB * math.ceil(MARGIN * peak_mb / STEP_MB), cold_start_floor(cold_start_s))


def stored_cold_start_s() -> dict[str, float]:
    """Each function's cold import seconds as the last `make bench` measured them (its package section, written to
    granulemap/cost_model.json), for a memory section run without the package section."""
    return json.loads(COST_MODEL.read_text())["cold_import_s"]


def probe(tmp: Path, tag: str, recipe: str, source: Path, start: str, end: str,
          malloc_defaults: bool = False) -> dict[str, Any]:
    out = tmp / "runs" / tag  # not tmp / tag: the ATL06 source folder is tmp / "atl06"
    flags = ["--malloc-defaults"] if malloc_defaults else []
    result = run_json(["bench/function_memory_probe.py", str(out), recipe, start, end, str(source), *flags],
                      timeout=3600)
    shutil.rmtree(out, ignore_errors=True)
    items = result["items"]
    if result["status"] != "SUCCEEDED" or items["succeeded"] != items["total"]:
        raise AssertionError(f"{tag}: the execution did not succeed on every item: {result}")
    return result


ATL06_MONTH_GRANULES = 6400
"""ATL06 granules in a month: 14 per orbit (its regions), 1,387 orbits in a 91-day repeat cycle: 6,400 in 30 days."""


def catalog_at_scale(sizes: tuple[int, ...] = (ATL06_MONTH_GRANULES // 2, ATL06_MONTH_GRANULES)) -> dict[str, Any]:
    """bench/catalog_memory_probe.py's peaks: BuildCatalog over CMR answers of each of ``sizes`` ATL06 granules,
    and Aggregate reading the manifest of the largest."""
    import os
    import socket
    import subprocess
    import time

    import boto3

    from catalog_memory_probe import BUCKET

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-west-2",
           "AWS_REGION": "us-west-2", "BUCKET_NAME": BUCKET, "POWERTOOLS_METRICS_DISABLED": "true",
           "POWERTOOLS_TRACE_DISABLED": "true",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "common"), os.environ.get("PYTHONPATH", "")])}
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-west-2", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
        catalogs = []
        for n in sizes:  # a bucket of its own each: the store prepare grows starts empty
            s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
            catalogs.append(run_json(["bench/catalog_memory_probe.py", "catalog", str(n)], env=env, timeout=3600))
            if n != sizes[-1]:
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
                    for obj in page.get("Contents", []):
                        s3.delete_object(Bucket=BUCKET, Key=obj["Key"])
                s3.delete_bucket(Bucket=BUCKET)
        reading = run_json(["bench/catalog_memory_probe.py", "aggregate", "probe-run"], env=env, timeout=3600)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"catalog": catalogs, "aggregate_manifest": reading}


def run(segments_per_beam: int = 100_000, cold_start_s: dict[str, float] | None = None) -> dict[str, Any]:
    """``cold_start_s``: each function's cold import seconds (bench/package.py's medians); the stored ones when
    not given."""
    import atl06
    from granulemap.synthetic import make_synthetic_series

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        sst_source, atl06_source = tmp / "ghrsst", tmp / "atl06"
        start = dt.date(2019, 1, 1)
        make_synthetic_series(MUR25, sst_source, start, 8)
        atl06_source.mkdir()
        for k in range(4):
            atl06.write_synthetic(atl06_source / f"ATL06_2019031{k}101010_1234010{k}_006_01_SYNTHETIC.h5",
                                  segments_per_beam, seed=k)
        sst_end = str(start + dt.timedelta(days=7))
        runs = {
            "sst": probe(tmp, "sst", "sst-global-mean", sst_source, str(start), sst_end),
            "atl06": probe(tmp, "atl06", "atl06-cell-stats", atl06_source, "2019-03-10", "2019-03-13"),
        }
        # The same with glibc's default malloc settings, for comparison (not for the recommendation: the template
        # starts every function with its GLIBC_TUNABLES).
        defaults = {
            "sst": probe(tmp, "sst-defaults", "sst-global-mean", sst_source, str(start), sst_end, True),
            "atl06": probe(tmp, "atl06-defaults", "atl06-cell-stats", atl06_source, "2019-03-10", "2019-03-13", True),
        }
    functions: dict[str, Any] = {}
    for tag, result in runs.items():
        for fn, v in result["functions"].items():
            row = functions.setdefault(fn, {"template_mb": v["memory_size"], "peak_mb": {}, "defaults_peak_mb": {}})
            row["peak_mb"][tag] = v["peak_mb"]
    for tag, result in defaults.items():
        for fn, v in result["functions"].items():
            functions[fn]["defaults_peak_mb"][tag] = v["peak_mb"]
    scale = catalog_at_scale()
    month, reading = scale["catalog"][-1], scale["aggregate_manifest"]
    functions["CatalogBuilderFunction"]["peak_mb"]["atl06_month_cmr"] = month["peak_mb"]
    aggregate = functions["AggregatorFunction"]
    aggregate["peak_mb"]["atl06_month_estimate"] = round(
        reading["peak_mb"] + aggregate["peak_mb"]["atl06"] - reading["imports_mb"], 1)
    measured_here = cold_start_s is not None
    cold_start_s = cold_start_s if measured_here else stored_cold_start_s()
    for fn, row in functions.items():
        row["cold_start_s"] = cold_start_s[fn]
        row["cold_start_floor_mb"] = cold_start_floor(cold_start_s[fn])
        row["recommended_mb"] = recommend(max(row["peak_mb"].values()), cold_start_s[fn])
    processor = functions["ProcessorFunction"]
    processor["recommended_sst_only_mb"] = recommend(processor["peak_mb"]["sst"], cold_start_s["ProcessorFunction"])
    return {"runs": runs, "functions": functions, "scale": scale, "margin": MARGIN, "step_mb": STEP_MB,
            "segments_per_beam": segments_per_beam, "cold_start_limit_s": COLD_START_S, "mb_per_vcpu": MB_PER_VCPU,
            "cold_start_from": "this run's package section" if measured_here else "granulemap/cost_model.json"}
