"""Per-item work in this fresh process, as its malloc is configured: one JSON line.

``malloc_probe.py sst DIR N [--client-first | --client-after | --mallopt]``: reduce the first N granules of DIR
(sst-global-mean, method ocean, one after the other as the Processor reduces a dekad item); ``--client-first`` makes
an S3 client before importing the recipe, ``--client-after`` after (the Processor's order depends on its handler's
imports: either can happen); ``--mallopt`` sets the Processor's malloc settings after the import, as ``granulemap
process`` does (granulemap/heap.py). ``ms`` is per granule, all N, the first included (a Lambda item starts cold too).

``malloc_probe.py atl06 PARENT FILE...``: the ATL06 Processor's work on one parent cell (bench/atl06.py ``ours``,
written to an in-memory store), once untimed, then ``ms`` is the median of three.

Also printed: ``minor_faults`` per granule or per run (pages the kernel had to map in: what glibc's malloc settings
change) and ``peak_mb`` (VmHWM).
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import vm_hwm_mb  # noqa: E402


def _s3_client() -> None:
    import boto3

    boto3.client("s3", region_name="us-west-2", endpoint_url="http://127.0.0.1:9", aws_access_key_id="probe",
                 aws_secret_access_key="probe")


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def sst(directory: str, count: str, *flags: str) -> dict[str, float]:
    if "--client-first" in flags:
        _s3_client()
    from granulemap.recipes.sst_global_mean import global_mean_sst

    if "--client-after" in flags:
        _s3_client()
    if "--mallopt" in flags:
        from granulemap.cli import processor_malloc_settings

        processor_malloc_settings()
    paths = sorted(Path(directory).glob("*.nc"))[: int(count)]
    faults, started = _faults(), time.perf_counter()
    for path in paths:
        global_mean_sst(path.name, method="ocean", path=str(path))
    seconds = time.perf_counter() - started
    return {"ms": 1e3 * seconds / len(paths), "minor_faults": (_faults() - faults) / len(paths)}


def atl06(parent: str, *files: str) -> dict[str, float]:
    import atl06 as suite

    paths = [Path(f) for f in files]
    suite.ours(int(parent), paths, write=True)
    faults, times = _faults(), []
    for _ in range(3):
        started = time.perf_counter()
        suite.ours(int(parent), paths, write=True)
        times.append(time.perf_counter() - started)
    return {"ms": 1e3 * statistics.median(times), "minor_faults": (_faults() - faults) / 3}


def main(argv: list[str]) -> int:
    kind, *args = argv
    result = {"sst": sst, "atl06": atl06}[kind](*args)
    print(json.dumps({**result, "peak_mb": round(vm_hwm_mb(), 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
