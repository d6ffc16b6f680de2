"""Peak memory of each Lambda function, one invocation per fresh process, in a real local execution.

``function_memory_probe.py OUT RECIPE START END SOURCE [--param K=V]...`` prints one JSON line: per function
(template name), its invocations, each one's ``peak_mb`` (``peaks``, with the item for the Processor) and the
largest, and ``start_mb`` (the worker process before the invocation: Python, multiprocessing,
granulemap.local.worker).

Lambda reports a function's "Max Memory Used" per invocation; the nearest local figure is the high-water mark
(VmHWM) of a process that serves exactly one invocation from a cold start: the handler's imports plus its work. So
the execution runs on the local engine as ``granulemap run`` does, except that its worker pool gives every
invocation a new process (``max_tasks_per_child=1``: the engine module's ``ProcessPoolExecutor`` is replaced by
``OneInvocationPerProcess`` for this process only, and its processes are spawned, not forked from the engine's
warm fork server), and each worker writes its VmHWM after the handler returns.
The handlers run in the dev venv, not in Lambda's runtime (which adds its own bootstrap, a few MB).
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import execution_input, execution_parser, vm_hwm_mb  # noqa: E402


def measured_invoke(log: str, invoke: Any, spec: dict[str, Any], event: Any) -> Any:
    """Run one invocation (``granulemap.local.worker.invoke``) and append this process's VmHWM to ``log``."""
    start = vm_hwm_mb()
    result = invoke(spec, event)
    item = event.get("item") if isinstance(event, dict) else None
    record = {"function": spec["function_name"], "start_mb": round(start, 1), "peak_mb": round(vm_hwm_mb(), 1),
              "item": item.get("id") if isinstance(item, dict) else None, "errored": result[1]}
    with open(log, "a") as f:
        f.write(json.dumps(record) + "\n")
    return result


class OneInvocationPerProcess(ProcessPoolExecutor):
    """The engine's worker pool, but every task in a new process, measured by ``measured_invoke``."""

    log = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "max_tasks_per_child": 1})

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future:  # type: ignore[override]
        return super().submit(measured_invoke, self.log, fn, *args, **kwargs)


def main(argv: list[str]) -> int:
    parser = execution_parser()
    parser.add_argument("--malloc-defaults", action="store_true",
                        help="start the workers without template.yaml's GLIBC_TUNABLES (glibc's defaults)")
    args = parser.parse_args(argv)

    import function_memory_probe as me  # by module name, so that the spawned workers can unpickle measured_invoke
    from granulemap.local import engine
    from granulemap.local.run import run_locally

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "memory.jsonl"
    log.unlink(missing_ok=True)
    me.OneInvocationPerProcess.log = str(log)
    engine.ProcessPoolExecutor = me.OneInvocationPerProcess  # type: ignore[misc]
    engine.LocalEngine.worker_start = "spawn"  # cold processes: the fork server's would hold its preload
    if args.malloc_defaults:
        from granulemap.local import worker

        worker.PROCESS_START_VARIABLES = ()  # type: ignore[misc]
        os.environ.pop("GLIBC_TUNABLES", None)

    doc = execution_input(args)
    started = time.perf_counter()
    summary = run_locally(doc, out / "run", progress=False, timeout=3600)
    seconds = time.perf_counter() - started

    from granulemap.local.template import read_local_template

    template = read_local_template(engine.project_root(), engine.LOCAL_BUCKET, engine.REGION, engine.ACCOUNT,
                                   engine.LOCAL_STACK_NAME)
    logical = {spec.function_name: name for name, spec in template.functions.items()}
    functions: dict[str, Any] = {}
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        name = logical.get(rec["function"], rec["function"])
        f = functions.setdefault(name, {"invocations": 0, "peak_mb": 0.0, "start_mb": rec["start_mb"], "peaks": [],
                                        "memory_size": template.functions[name].memory_size
                                        if name in template.functions else None})
        f["invocations"] += 1
        f["peaks"].append({"peak_mb": rec["peak_mb"], "item": rec["item"]})
        f["peak_mb"] = max(f["peak_mb"], rec["peak_mb"])
        f["start_mb"] = min(f["start_mb"], rec["start_mb"])
    print(json.dumps({"seconds": seconds, "status": summary["status"], "items": summary["items"],
                      "granules": summary.get("granules"), "functions": functions}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
