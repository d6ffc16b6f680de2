"""`make demo`: run the local pipeline over the real MUR25 granule plus a synthetic December made from it."""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
from pathlib import Path

from granulemap.cloud import print_summary
from granulemap.local.run import run_locally
from granulemap.synthetic import make_synthetic_series

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "tests" / "data" / "ghrsst" / "20181231090000-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2.nc"
ATL06 = ROOT / "tests" / "data" / "atl06"


def _report(summary: dict) -> bool:
    print_summary(summary)  # the lines granulemap run prints
    return summary["status"] == "SUCCEEDED"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "demo")
    parser.add_argument("--data", type=Path, default=ROOT / "demo-data")
    args = parser.parse_args()

    source = args.data / "sst"
    if source.exists():
        shutil.rmtree(source)
    print(f"making 30 synthetic daily granules (2018-12-01..30) from {REAL.name} in {source}")
    make_synthetic_series(REAL, source, dt.date(2018, 12, 1), 30)
    shutil.copy(REAL, source / REAL.name)
    out = args.out / "sst-global-mean"
    if out.exists():
        shutil.rmtree(out)
    print("running the state machine locally (moto's Step Functions engine, handlers in worker processes)")
    summary = run_locally(
        {"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-31", "source": str(source)}, out
    )
    ok = _report(summary)

    out = args.out / "atl06-cell-stats"
    if out.exists():
        shutil.rmtree(out)
    print(f"running atl06-cell-stats (HEALPix order 6 items, order 12 statistics) over {ATL06}")
    summary = run_locally({"recipe": "atl06-cell-stats", "start": "2018-10-13", "end": "2018-10-13",
                           "source": str(ATL06), "params": {"parent_order": 6, "child_order": 12}}, out)
    ok = _report(summary) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
