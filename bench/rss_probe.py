"""Peak RSS of one contender's per-item work, in this fresh process: ``rss_probe.py {sst|atl06} NAME ARG...``.

Prints one JSON line: ``imports_mb`` (peak RSS after importing what the contender needs: the baseline),
``peak_mb`` (peak RSS after processing one item) and ``work_mb`` = peak - baseline.

Peak RSS is the kernel's high-water mark of this process's memory (``VmHWM`` in /proc/self/status). The brief
named ``getrusage(RUSAGE_SELF).ru_maxrss``; on Linux that value survives exec (it is the larger of this program's
peak and the peak of the process it was forked from), so a probe started by a 170 MB benchmark runner reported
170 MB whatever it did. VmHWM belongs to the new program only; ``ru_maxrss_mb`` is still printed for reference.
"""

from __future__ import annotations

import importlib
import json
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import vm_hwm_mb  # noqa: E402


def main(argv: list[str]) -> int:
    kind, name, *args = argv
    if kind == "sst":
        import sst as suite

        modules = suite.IMPORTS[name]
    elif kind == "atl06":
        import atl06 as suite  # type: ignore[no-redef]

        modules = suite.IMPORTS[name]
    else:
        raise SystemExit(f"unknown kind {kind}")
    for module in modules:
        importlib.import_module(module)
    baseline = vm_hwm_mb()
    suite.process_one(name, *[Path(a) if Path(a).exists() else a for a in args])
    peak = vm_hwm_mb()
    print(json.dumps({"imports_mb": round(baseline, 1), "peak_mb": round(peak, 1),
                      "work_mb": round(peak - baseline, 1),
                      "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
