"""glibc's malloc settings: per-item time and memory with its defaults and with template.yaml's GLIBC_TUNABLES.

Every figure is from a fresh process (bench/malloc_probe.py), the contenders interleaved:
- SST, a dekad item (10 SYNTHETIC MUR25 granules): glibc's defaults with an S3 client made before the recipe is
  imported, and after it (a Processor makes one either way, depending on its handler's imports), and in a process
  that makes none; template.yaml's GLIBC_TUNABLES with no client; and glibc's defaults with the same settings made
  by mallopt after the recipe's import, as ``granulemap process`` does (granulemap/heap.py);
- ATL06, the busiest parent cell of four SYNTHETIC granules (bench/atl06.py): glibc's defaults and the tunables.
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import ROOT, Timing, ratio, run_json, timing_row  # noqa: E402

MUR25 = ROOT / "tests" / "data" / "ghrsst" / "20181231090000-JPL-L4_GHRSST-SSTfnd-MUR25-GLOB-v02.0-fv04.2.nc"
DEFAULTS, TUNED = "glibc defaults", "template.yaml's GLIBC_TUNABLES"
SST_CONTENDERS = {
    f"{DEFAULTS}, S3 client made before the recipe's import": (["--client-first"], False),
    f"{DEFAULTS}, S3 client made after the recipe's import": (["--client-after"], False),
    f"{DEFAULTS}, no S3 client": ([], False),
    f"{TUNED}, no S3 client": ([], True),
    f"{DEFAULTS}, the same settings by mallopt once running (`granulemap process`)": (["--mallopt"], False),
}
ATL06_CONTENDERS = {DEFAULTS: False, TUNED: True}


def template_tunables() -> str:
    from granulemap.local.template import load_template

    return load_template(ROOT / "template.yaml")["Globals"]["Function"]["Environment"]["Variables"]["GLIBC_TUNABLES"]


def _interleaved(contenders: dict[str, tuple[list[str], bool]], repeats: int, tunables: str) -> dict[str, list[dict]]:
    base = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    names = list(contenders)
    samples: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            args, tuned = contenders[name]
            env = {**base, "GLIBC_TUNABLES": tunables} if tuned else base
            samples[name].append(run_json(["bench/malloc_probe.py", *args], env=env, replace_env=True))
    return samples


def _table(samples: dict[str, list[dict]]) -> dict[str, Any]:
    timings = {name: Timing(name, [x["ms"] / 1e3 for x in xs]) for name, xs in samples.items()}
    return {"timings": {name: timing_row(t) for name, t in timings.items()},
            "faults": {name: statistics.median(x["minor_faults"] for x in xs) for name, xs in samples.items()},
            "peak_mb": {name: max(x["peak_mb"] for x in xs) for name, xs in samples.items()}, "_t": timings}


def run(repeats: int, granules: int = 10, segments_per_beam: int = 100_000) -> dict[str, Any]:
    import atl06
    from granulemap.synthetic import make_synthetic_series

    tunables = template_tunables()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        make_synthetic_series(MUR25, tmp / "sst", dt.date(2019, 1, 1), granules)
        files = [atl06.write_synthetic(tmp / f"ATL06_2019031{k}101010_1234010{k}_006_01_SYNTHETIC.h5",
                                       segments_per_beam, seed=k) for k in range(4)]
        parents = atl06.parents_of(files)
        busiest = max(parents, key=lambda p: int(atl06.ours(p, files).values["count"].sum()))
        sst = _table(_interleaved({k: (["sst", str(tmp / "sst"), str(granules), *a], t)
                                   for k, (a, t) in SST_CONTENDERS.items()}, repeats, tunables))
        atl = _table(_interleaved({k: (["atl06", str(busiest), *map(str, files)], t)
                                   for k, t in ATL06_CONTENDERS.items()}, repeats, tunables))
    st, at = sst.pop("_t"), atl.pop("_t")
    names = list(SST_CONTENDERS)
    sst["ratios"] = {f"{n} / {names[3]}": ratio(st[n], st[names[3]]) for n in names[:3] + names[4:]}
    atl["ratios"] = {f"{DEFAULTS} / {TUNED}": ratio(at[DEFAULTS], at[TUNED])}
    return {"tunables": tunables, "granules": granules, "repeats": repeats, "sst": sst, "atl06": atl,
            "atl06_parent": busiest}
