"""The SST Processor's per-granule work in this fresh process, as its malloc is configured: one JSON line.

``malloc_probe.py DIR N [--client]``: reduce the first N granules of DIR (sst-global-mean, method ocean, one after the
other as the Processor reduces a dekad item), and print ``ms_per_granule`` (all N, the first included: a Lambda
item starts cold too), ``minor_faults_per_granule`` (pages the kernel had to map in: what glibc's malloc settings
change, see bench/sst.py's malloc_bench) and ``peak_mb`` (VmHWM). ``--client``: make an S3 client first, as the
Processor does before its first granule; loading botocore's S3 model frees large blocks, which moves glibc's dynamic
mmap threshold up by itself.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import vm_hwm_mb  # noqa: E402


def main(argv: list[str]) -> int:
    directory, count, *flags = argv
    from granulemap.recipes.sst_global_mean import global_mean_sst

    if "--client" in flags:
        import boto3

        boto3.client("s3", region_name="us-west-2", endpoint_url="http://127.0.0.1:9", aws_access_key_id="probe",
                     aws_secret_access_key="probe")
    paths = sorted(Path(directory).glob("*.nc"))[: int(count)]
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    started = time.perf_counter()
    for path in paths:
        global_mean_sst(path.name, method="ocean", path=str(path))
    seconds = time.perf_counter() - started
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(json.dumps({"granules": len(paths), "ms_per_granule": 1e3 * seconds / len(paths),
                      "minor_faults_per_granule": faults / len(paths), "peak_mb": round(vm_hwm_mb(), 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
