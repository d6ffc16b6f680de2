"""``granulemap run``: one local execution of the state machine, its products copied to the output folder."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from granulemap import layout
from granulemap.local.engine import LocalEngine


class _Progress:
    """Periodic plain lines of how many items have a result or a failure record."""

    def __init__(self, engine: LocalEngine, enabled: bool, every: float = 5.0):
        self.engine, self.enabled, self.every = engine, enabled, every
        self.started = time.monotonic()
        self.last = self.started

    def __call__(self) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < self.every:
            return
        self.last = now
        print(f"... running for {now - self.started:.0f} s", file=sys.stderr, flush=True)


def run_locally(
    execution_input: dict[str, Any], out: Path, workers: int | None = None, progress: bool = True,
    extra_env: dict[str, str] | None = None, timeout: float | None = None,
) -> dict[str, Any]:
    """Run one execution; write OUT/summary.json (outputs as local paths) and return it."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    # The emulated bucket lives on disk under OUT/state: a re-run after a crash resumes where it stopped.
    with LocalEngine(workers=workers, log_path=out / "logs" / "functions.log", extra_env=extra_env,
                     state_dir=out / "state") as engine:
        arn = engine.start(execution_input)
        desc = engine.wait(arn, on_poll=_Progress(engine, progress), timeout=timeout)
        history = engine.history(arn)
        (out / "logs" / "execution-history.json").write_text(json.dumps(history, default=str, indent=1))
        run_id = arn.rsplit(":", 1)[-1]
        s3 = engine.client("s3")
        try:
            body = s3.get_object(Bucket=engine.bucket, Key=layout.summary_key(run_id))["Body"].read()
            summary = json.loads(body)
        except s3.exceptions.NoSuchKey:
            summary = {
                "status": "FAILED", "run_id": run_id, "recipe": execution_input.get("recipe"),
                "params": execution_input.get("params", {}),
                "items": {"total": 0, "succeeded": 0, "failed": 0, "skipped": 0},
                "failures": [], "outputs": [],
            }
        local_outputs: list[str] = []
        for key in summary.get("outputs", []):
            if key == layout.summary_key(run_id):
                continue
            local_outputs += [str(p) for p in engine.download(key, out)]
    summary["status"] = "SUCCEEDED" if desc["status"] == "SUCCEEDED" else "FAILED"
    if desc["status"] != "SUCCEEDED":
        error, cause = desc.get("error", desc["status"]), desc.get("cause", "")
        try:
            cause = json.loads(cause).get("errorMessage", cause)
        except (ValueError, AttributeError):
            pass
        summary["message"] = f"{error}: {cause}"
    summary["execution"] = {"arn": arn, "status": desc["status"]}
    summary["outputs"] = local_outputs + [str(out / "summary.json")]
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
