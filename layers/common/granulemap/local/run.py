"""``granulemap run``: one local execution of the state machine, its products copied to the output folder."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from granulemap import layout
from granulemap.errors import InvalidInput, readable_cause
from granulemap.local.engine import LocalEngine, execution_name
from granulemap.local.mirror import StateNotKept
from granulemap.storage import split_s3_url


def progress_line(counts: dict[str, Any], elapsed: float, width: int = 30) -> str:
    """``[#####.....] 12/31 items (10 ok, 1 skipped, 1 failed) 3.2 items/s, ETA 6 s`` (no bar when the total is
    unknown). ``found_done``: of the skipped, those BuildCatalog found done, which the Map does not run: left out of
    the rate and the ETA."""
    total = counts.get("total")
    done = counts["succeeded"] + counts["skipped"] + counts["failed"]
    ran = done - counts.get("found_done", 0)
    rate = ran / elapsed if elapsed > 0 else 0.0
    detail = (f"({counts['succeeded']} ok, {counts['skipped']} skipped, {counts['failed']} failed)"
              + (f" {rate:.1f} items/s" if ran else ""))  # none yet, or every item found done: no rate to give
    if not total:
        return f"cataloguing... {elapsed:.0f} s" if total is None else "no items"
    filled = int(width * done / total)
    eta = f", ETA {(total - done) / rate:.0f} s" if rate > 0 and done < total else ""
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} items {detail}{eta}"


TERMINAL_LINE = 100
"""Characters of the live progress line on a terminal: each redraw covers the last one whole."""


class _Progress:
    """Live progress: a redrawn bar on a terminal, plain lines every ``every`` seconds otherwise."""

    def __init__(self, engine: LocalEngine, enabled: bool, stream: Any = None, every: float = 10.0):
        self.engine, self.enabled = engine, enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = 0.2 if self.tty else every
        self.started = time.monotonic()
        self.last = self.started

    def __call__(self, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < self.every):
            return
        self.last = now
        counts = self.engine.item_counts()
        if final and counts.get("total") is None:  # the run ended in its catalog: not "cataloguing..." to the last
            if self.tty:  # the live line cleared, for what follows to start a line of its own
                self.stream.write("\r" + "".ljust(TERMINAL_LINE) + "\r")
                self.stream.flush()
            return
        line = progress_line(counts, now - self.started)
        if self.tty:
            self.stream.write("\r" + line.ljust(TERMINAL_LINE) + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


class _FolderLock:
    """What holds a folder's lock: its .granulemap-lock file, and the folder itself (``_lock_folder``)."""

    def __init__(self, handle: Any, folder_fd: int | None):
        self._handle, self._folder_fd = handle, folder_fd

    def close(self) -> None:
        if self._folder_fd is not None:
            os.close(self._folder_fd)
            self._folder_fd = None
        self._handle.close()


def _lock_folder(folder: Path) -> _FolderLock:
    """An exclusive lock on FOLDER for as long as the returned lock is open: two local runs sharing one emulated
    bucket (FOLDER/state), or writing their products into one folder, would overwrite each other's. Held on the file
    .granulemap-lock and on the folder itself: the file stays after a run, and one deleted as a stale lock while a
    run held it let a second run in (their CSVs, merged from one state, lost rows)."""
    try:
        handle = open(folder / ".granulemap-lock", "a+")  # noqa: SIM115 - held open for the workspace's life
    except OSError as exc:  # a read-only folder, one not ours
        raise InvalidInput(f"cannot write in the folder {folder} for the run's products: {exc.strerror or exc} "
                           "(give another folder)") from None
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        return _FolderLock(handle, None)
    folder_fd: int | None = None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            folder_fd = os.open(folder, os.O_RDONLY)
        except OSError:  # a folder this system cannot open for reading: its file's lock alone
            folder_fd = None
        if folder_fd is not None:
            try:
                fcntl.flock(folder_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise
            except OSError:  # a file system without locks on folders: its file's lock alone
                os.close(folder_fd)
                folder_fd = None
    except BlockingIOError:
        if folder_fd is not None:
            os.close(folder_fd)
        handle.close()
        raise InvalidInput(f"{folder} is in use by another granulemap run or Workspace (in this process or "
                           "another): wait for it to end, or use another folder") from None
    return _FolderLock(handle, folder_fd)


def _write_whole(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed over it: a run killed as it wrote leaves the old
    file or the new, never half of one (a cut logs/products.json stopped later runs from removing products)."""
    part = path.with_name(f".{path.name}.part")
    part.write_text(text)
    os.replace(part, path)


def _name_local_files(summary: dict[str, Any], bucket_url: str, state_dir: str) -> None:
    """The summary's message, failures' causes and notes with the emulated bucket's objects named as the files that
    keep them (OUT/state/...): a local user cannot open an s3:// address of the local bucket."""
    if isinstance(summary.get("message"), str):
        summary["message"] = summary["message"].replace(bucket_url, state_dir)
    for failure in summary.get("failures") or []:
        if isinstance(failure, dict) and isinstance(failure.get("cause"), str):
            failure["cause"] = failure["cause"].replace(bucket_url, state_dir)
    if isinstance(summary.get("notes"), list):
        summary["notes"] = [n.replace(bucket_url, state_dir) if isinstance(n, str) else n for n in summary["notes"]]


def _refuse_the_source_folder(source: object, folders: list[Path]) -> None:
    """A run's folder (its ``out``, the Workspace's) that is its source folder: its products, state and logs would go
    among the granules. Refused before anything is written."""
    from granulemap.models import local_path_of

    directory = local_path_of(source) if isinstance(source, str) and source.strip() else None
    if directory is None:
        return
    where = Path(directory).resolve()
    for folder in folders:
        if folder.resolve() == where:
            raise InvalidInput(f"{folder} is the run's source folder: its products and logs would go among the "
                               "granules; give the run (--out, or the Workspace) another folder")


def _refuse_another_workspaces_folder(out: Path, folder: Path) -> None:
    """An ``out`` that is the folder of another local run or Workspace (it has a ``state/``, that one's emulated
    bucket): its products are made from its own state, and this workspace's, made from FOLDER/state, would replace
    them (a `granulemap run --out X`'s series, then a Workspace's run with out=X: X's CSV lost X's own rows, though
    X/state kept them, and X's next run put them back). Refused before anything is written."""
    if out.resolve() != folder.resolve() and (out / "state").is_dir():
        raise InvalidInput(f"{out} is the folder of another local run or Workspace (its state/ holds that one's "
                           f"results, its products are made from them): this Workspace's ({folder}) would replace "
                           "them; give this run an out folder of its own, or run it with --out/Workspace on that "
                           "folder")


def _make_folder(logs: Path) -> None:
    """OUT/logs, and OUT: a path that cannot be a folder there is bad input (a file of that name, no permission),
    named, not a traceback."""
    try:
        logs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"cannot make the folder {logs.parent} for the run's products: {exc.strerror or exc}"
                           ) from None


def _as_text(value: Any) -> Any:
    """A value of the execution input that JSON has no type for: a numpy number or boolean (``np.int64(8)``) as
    Python's; a datetime at midnight (a pandas Timestamp of a day, say) as its date, which is what start and end
    take; anything else as its text."""
    import datetime as dt

    if isinstance(value, dt.datetime) and value.time() == dt.time(0) and value.utcoffset() in (None, dt.timedelta(0)):
        return value.date().isoformat()
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    return str(value)


class Workspace:
    """Local runs that share one started engine: for a notebook or a script that runs several date ranges or recipes.

    ``with Workspace(folder) as ws: ws.run({...})`` starts the engine once (about a second: moto, the workers'
    imports) instead of once per run. The emulated bucket lives under FOLDER/state, so results found done are reused
    across runs and across workspaces on the same folder (one at a time: a second one open on the folder, in any
    process, is refused), the handlers' output goes to FOLDER/logs/functions.log, and each run's products,
    summary.json, Lambda invocations and execution history go to its own ``out`` folder (default:
    FOLDER/runs/<execution name>). While it is open, this process's environment holds the local endpoint, the
    engine's AWS keys and template.yaml's GLIBC_TUNABLES (for the worker processes it starts), and this process's
    boto3 and botocore sessions answer requests to the local endpoint in-process; all is put back when it closes.
    """

    def __init__(self, folder: str | Path, workers: int | None = None, extra_env: dict[str, str] | None = None):
        self.folder = Path(folder).resolve()
        self.engine = LocalEngine(workers=workers, log_path=self.folder / "logs" / "functions.log",
                                  extra_env=extra_env, state_dir=self.folder / "state")
        self._lock: Any = None
        self._opened = self._closed = False
        self._finish_on_interrupt = True  # an interrupted run waits for its items still running (run_locally: no)

    def __enter__(self) -> Workspace:
        if self._opened:
            raise RuntimeError("a Workspace opens once (its engine has stopped): make a new Workspace on the folder")
        self._opened = True
        _make_folder(self.folder / "logs")
        self._lock = _lock_folder(self.folder)
        try:
            self.engine.__enter__()
        except BaseException:
            self._lock.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed = True
        try:
            self.engine.__exit__(*exc)
        finally:
            self._lock.close()

    def run(self, execution_input: dict[str, Any], out: str | Path | None = None, progress: bool = False,
            timeout: float | None = None) -> dict[str, Any]:
        """Run one execution; write OUT/summary.json (outputs as local paths) and return it. A run that outlasts
        ``timeout`` seconds is stopped, and TimeoutError raised. Dates and paths in the input are taken as their text
        (``datetime.date(2019, 3, 1)``, ``Path(...)``); an input the pipeline refuses comes back as a FAILED summary."""
        if not self._opened or self._closed:
            raise RuntimeError("the Workspace's engine is " + ("stopped: make a new Workspace on the folder" if
                               self._closed else "not started: use it as `with Workspace(folder) as ws:` (or call "
                               "ws.__enter__() first, and ws.__exit__(None, None, None) when done)"))
        if not isinstance(execution_input, dict):
            raise TypeError(f"the execution input is a dict (as start-execution's JSON document), not "
                            f"{type(execution_input).__name__}")
        execution_input = json.loads(json.dumps(execution_input, default=_as_text))
        name = execution_name()
        out = (Path(out) if out is not None else self.folder / "runs" / name).resolve()
        _refuse_the_source_folder(execution_input.get("source"), [out, self.folder])
        _refuse_another_workspaces_folder(out, self.folder)
        _make_folder(out / "logs")
        # OUT is this run's while it runs: a `granulemap run --out` there meanwhile wrote products that this run's
        # then replaced (the Workspace's own folder is locked while it is open).
        out_lock = _lock_folder(out) if out != self.folder else None
        try:
            return self._run(execution_input, out, name, progress, timeout)
        finally:
            if out_lock is not None:
                out_lock.close()

    def _run(self, execution_input: dict[str, Any], out: Path, name: str, progress: bool, timeout: float | None,
             ) -> dict[str, Any]:
        engine = self.engine
        source = execution_input.get("source")
        elsewhere = (isinstance(source, str) and source.startswith("s3://")
                     and split_s3_url(source)[0] != engine.bucket)
        if not source or elsewhere:
            # In AWS no source means a NASA CMR search; here BuildCatalog would try CMR (offline: retried for 45
            # minutes as an outage) and the granules it found are read in AWS's us-west-2 only. Another bucket than
            # the emulated one: BuildCatalog's message is for a stack (copy them into its bucket).
            given = f"{source} is in S3, which a local run does not read: " if elsewhere else ""
            summary = _failed_summary(name, execution_input, (
                f"InvalidInput: field 'source': {given}a local run reads the granules in a folder of this machine "
                f"(or an s3:// prefix of its own emulated bucket, s3://{engine.bucket}/: the files under "
                f"{engine.state_dir or 'its state folder'}/): give the folder (download the granules, with "
                "earthaccess or aws s3 sync); reading S3 or searching NASA CMR takes a deployed stack "
                "(granulemap start)"))
            summary["outputs"] = [str(out / "summary.json")]
            _write_whole(out / "summary.json", json.dumps(summary, indent=2))
            return summary
        _, memory_records = engine.over_memory()
        arn = engine.start(execution_input, name)
        run_id = arn.rsplit(":", 1)[-1]
        show = _Progress(engine, progress)
        try:
            desc = engine.wait(arn, on_poll=show, timeout=timeout)
        except (TimeoutError, StateNotKept) as exc:
            error, cause = ((type(exc).__name__, str(exc)) if isinstance(exc, StateNotKept) else
                            ("TimedOut", f"the local run took more than {timeout} s"))
            with contextlib.suppress(Exception):  # one that ended meanwhile: why it cannot go on is what to tell
                engine.client("stepfunctions").stop_execution(executionArn=arn, error=error, cause=cause)
            # Its invocations still running finish first: a next run's would race them (two BuildCatalogs of
            # atl06-cell-stats creating one store).
            engine.wait_idle()
            raise
        except KeyboardInterrupt:
            # Stopped, not left running: a notebook's interrupt left the execution going, and the same input again
            # was refused as RunInProgress, with advice for AWS. Its items still running finish first (as after a
            # timeout; a second interrupt leaves at once), except for granulemap run (run_locally), whose engine and
            # workers stop as the command ends, at once.
            try:
                engine.client("stepfunctions").stop_execution(
                    executionArn=arn, error="Interrupted", cause="interrupted (KeyboardInterrupt): run it again")
            except Exception:  # noqa: BLE001 - the interrupt is what the caller is told of
                pass
            if self._finish_on_interrupt:
                engine.wait_idle()
            raise
        finally:
            if out / "logs" != self.folder / "logs":  # the engine's own record is the workspace's, of every run
                with contextlib.suppress(OSError):  # a full disk: the error that stopped the run is what to tell
                    with open(out / "logs" / "invocations.jsonl", "w") as f:
                        f.writelines(json.dumps(record) + "\n" for record in list(engine.invocations))
        show(final=True)
        history = engine.history(arn)
        (out / "logs" / "execution-history.json").write_text(json.dumps(history, default=str, indent=1))
        s3 = engine.client("s3")
        try:
            body = s3.get_object(Bucket=engine.bucket, Key=layout.summary_key(run_id))["Body"].read()
            summary = json.loads(body)
        except s3.exceptions.NoSuchKey:  # the run stopped before Aggregate: its message is set below
            summary = _failed_summary(run_id, execution_input, "")
        local_outputs: list[str] = []
        configuration = next((key[len(layout.OUTPUTS_PREFIX):].split("/")[1] for key in summary.get("outputs", [])
                              if key.startswith(layout.OUTPUTS_PREFIX) and key.count("/") >= 3), None)
        for key in summary.get("outputs", []):
            if key == layout.summary_key(run_id):
                continue
            name = "provenance.json" if "/provenance/" in key else None
            local_outputs += [str(p) for p in engine.download(key, out, name)]
        summary["status"] = "SUCCEEDED" if desc["status"] == "SUCCEEDED" else "FAILED"
        if desc["status"] != "SUCCEEDED":
            summary["message"] = (f"{desc.get('error', desc['status'])}: "
                                  f"{readable_cause(desc.get('cause', ''), desc.get('error', desc['status']))}")
        summary["execution"] = {"arn": arn, "status": desc["status"]}
        if engine.state_dir is not None:  # the objects the summary names, as the files kept here
            _name_local_files(summary, f"s3://{engine.bucket}/", f"{engine.state_dir}/")
        summary["outputs"] = local_outputs + [str(out / "summary.json")]
        mine = (f"{summary.get('recipe')}/{configuration}" if configuration is not None
                else _configuration_of(execution_input))  # a run that wrote no products: from its input
        if mine is not None:
            succeeded = desc["status"] == "SUCCEEDED"
            replaced, left, changed = _replace_other_configurations_products(out, mine, local_outputs,
                                                                             remove=succeeded)
            notes = []
            if replaced:  # said, not only done: the CSV of the same name now holds other numbers
                kept = [str(path) for other in replaced if engine.state_dir is not None
                        and (path := engine.state_dir / layout.OUTPUTS_PREFIX / other).is_dir()]
                done = (f"this run's products ({mine}) replaced those of {', '.join(replaced)} in {out}"
                        if any(Path(p).name not in _NEVER_PRODUCTS for p in local_outputs) else
                        f"this run ({mine}) wrote no products, and those of {', '.join(replaced)} were removed from "
                        f"{out}")
                notes.append(done + (f"; theirs are still in {', '.join(kept)}" if kept else ""))
            for other, names in left.items():  # a failed run removes nothing: what lies beside its summary is not its
                notes.append(f"{', '.join(sorted(names))} in {out}: products of {other}, not of this run ({mine}), "
                             "which failed (another run's products are removed only by a run that succeeds)")
            for other, names in changed.items():
                notes.append(f"{', '.join(sorted(names))} in {out}: products of {other}, kept because they changed "
                             "since that run wrote them (a redraw, an edit); no run removes them now: remove them if "
                             "they are not yours")
            if notes:
                summary["notes"] = [*summary.get("notes", []), *notes]
        over, _ = engine.over_memory(memory_records)
        if over:
            summary["notes"] = [*summary.get("notes", []), *_over_memory_notes(over)]
        _write_whole(out / "summary.json", json.dumps(summary, indent=2))
        return summary


def _over_memory_notes(records: list[dict[str, Any]]) -> list[str]:
    """A note per function whose invocations went over its MemorySize in this run (worker._MemoryWatch): Lambda
    would have ended them as Runtime.OutOfMemory, which a local run does not."""
    notes = []
    for function in sorted({str(r.get("function")) for r in records}):
        mine = [r for r in records if str(r.get("function")) == function]
        items = sorted({str(r["item"]) for r in mine if r.get("item")})
        named = f" (items {', '.join(items[:3])}{', …' if len(items) > 3 else ''})" if items else ""
        parameter = function.removesuffix("Function") + "MemorySize"
        notes.append(
            f"{function}: {len(mine)} invocation(s){named} peaked at up to {max(r['peak_mb'] for r in mine)} MB, over "
            f"its MemorySize of {mine[0]['memory_mb']} MB: in AWS, Lambda would end them (Runtime.OutOfMemory). "
            f"Deploy it with more ({parameter}: sam deploy --parameter-overrides {parameter}=...) or make the items "
            f"smaller. Measured in a worker of this machine that held {min(r['before_mb'] for r in mine)} MB before "
            "the call (the libraries it preloads for every recipe, which a function may not import): it errs high")
    return notes


def _configuration_of(execution_input: dict[str, Any]) -> str | None:
    """``recipe/configuration id`` of a run of ``execution_input``, as BuildCatalog names it (its products' S3 keys);
    None for an input that names no recipe or parameters it takes."""
    from granulemap.errors import GranulemapError
    from granulemap.models import ExecutionInput
    from granulemap.recipes import get_recipe

    try:
        execution = ExecutionInput.model_validate(execution_input)
        recipe = get_recipe(execution.recipe)
        return f"{recipe.name}/{recipe.config_id(recipe.parse_params(execution.params), execution)}"
    except (ValueError, GranulemapError):  # pydantic's ValidationError too: the run's summary says what is wrong
        return None


def _failed_summary(run_id: str, execution_input: dict[str, Any], message: str) -> dict[str, Any]:
    """The summary of a run that never reached Aggregate (refused, or stopped on the way): nothing counted; its dates
    when the input names them (a month as a period, too)."""
    from granulemap.models import ExecutionInput

    summary = {"status": "FAILED", "run_id": run_id, "recipe": execution_input.get("recipe"),
               "params": execution_input.get("params", {}), "start": None, "end": None,
               "items": {"total": 0, "succeeded": 0, "failed": 0, "skipped": 0}, "granules": None,
               "failures": [], "outputs": [], "message": message, "notes": []}  # Summary's keys, as Aggregate's
    try:
        start, end = ExecutionInput.model_validate(execution_input).date_range()
    except ValueError:  # pydantic's ValidationError too: the message says what is wrong with the input
        return summary
    return {**summary, "start": start.isoformat(), "end": end.isoformat()}


PRODUCTS_RECORD = "products.json"
"""OUT/logs/products.json: which products in OUT local runs wrote, per configuration, as they left them."""

_NEVER_PRODUCTS = {"state", "logs", "summary.json", "provenance.json"}


def _as_left(path: Path) -> list[int]:
    """What a product looked like when a run left it (size and modification time), to tell whether anything has
    written it since."""
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _replace_other_configurations_products(
        out: Path, configuration: str, written: list[str], remove: bool = True,
) -> tuple[list[str], dict[str, list[str]], dict[str, list[str]]]:
    """Remove from OUT the products that local runs of other configurations (``recipe/configuration id``) wrote
    there and this run did not write again (left, they lay beside a summary.json and provenance.json that describe
    this run), then record this run's.

    Only what OUT/logs/products.json says a local run wrote, by name directly in OUT and unchanged since (its size
    and modification time), is removed: never a file of the user's, nor one ``granulemap results`` downloaded over
    it; the same configuration's earlier products (an ATL06 period's map; the CSV, when a run found nothing to do)
    stay. After a run that failed (``remove`` False; its products were written all the same) nothing is removed:
    what it wrote over is recorded as its own. Returns the other configurations whose products in OUT this run wrote
    over or removed, the names of those it left there (a failed run's), and the names of those it kept because they
    changed since (a redrawn picture: no longer recorded), per configuration."""
    import shutil

    record_path = out / "logs" / PRODUCTS_RECORD
    try:
        record = json.loads(record_path.read_text())
        entries = [e for e in record if isinstance(e, dict) and isinstance(e.get("products"), dict)]
    except (OSError, ValueError, TypeError, AttributeError):
        entries = []
    mine = {Path(p).name for p in written if Path(p).parent == out and Path(p).name not in _NEVER_PRODUCTS}
    root = out.resolve()
    products: dict[str, list[int]] = {}
    others: list[str] = []
    kept: list[dict[str, Any]] = []  # other configurations' products a failed run left in place
    changed: dict[str, list[str]] = {}  # other configurations' products kept: changed since
    for entry in entries:
        if entry.get("configuration") == configuration:
            products.update({str(n): left for n, left in entry["products"].items() if (out / str(n)).exists()})
            continue
        touched = [str(name) for name in entry["products"] if str(name) in mine]  # written over by this run
        left_here: dict[str, Any] = {}
        for name, left in entry["products"].items():
            path = out / str(name)
            if (str(name) in mine or str(name) in _NEVER_PRODUCTS or path.is_symlink() or not path.exists()
                    or path.resolve().parent != root):
                continue
            if _as_left(path) != left:  # no longer the run's: kept, and no longer recorded (said)
                changed.setdefault(str(entry.get("configuration")), []).append(str(name))
                continue
            if not remove:
                left_here[str(name)] = left
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink()
            touched.append(str(name))
        if touched:
            others.append(str(entry.get("configuration")))
        if left_here:
            kept.append({"configuration": entry.get("configuration"), "products": left_here})
    products.update({name: _as_left(out / name) for name in mine if (out / name).exists()})
    _write_whole(record_path, json.dumps([*kept, {"configuration": configuration, "products": products}], indent=1))
    return others, {str(entry["configuration"]): list(entry["products"]) for entry in kept}, changed


def run_locally(
    execution_input: dict[str, Any], out: Path, workers: int | None = None, progress: bool = True,
    extra_env: dict[str, str] | None = None, timeout: float | None = None,
) -> dict[str, Any]:
    """``granulemap run``: one execution in a workspace of its own, OUT (OUT/state: a re-run after a crash resumes
    where it stopped); write OUT/summary.json (outputs as local paths) and return it."""
    _refuse_the_source_folder(execution_input.get("source"), [Path(out)])  # before the Workspace writes in OUT
    with Workspace(out, workers=workers, extra_env=extra_env) as workspace:
        workspace._finish_on_interrupt = False  # the command ends at once; its engine stops its workers
        return workspace.run(execution_input, out, progress=progress, timeout=timeout)
