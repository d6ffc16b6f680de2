"""The ``granulemap`` command: run the pipeline locally (run, process), start and follow runs of a deployed stack
(start, status, results), estimate a run's AWS cost (estimate), list recipes and redraw pictures (recipes, plot)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from granulemap.errors import GranulemapError, InvalidInput, disk_advice


def _date(text: str) -> dt.date:
    from granulemap.models import written_date

    try:
        return written_date(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of worker processes, 1 or more")
    return value


def parse_param(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--param takes KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError as exc:
        if value.lstrip()[:1] in ("[", "{", '"'):  # meant as JSON: taken as text, it would be refused for its type
            raise argparse.ArgumentTypeError(f"--param {key}: {value!r} is not valid JSON ({exc.msg} at character "
                                             f"{exc.pos + 1}); e.g. --param 'box=[-170,-5,-120,5]'") from None
        return key, value


METHOD_HELP = "recipe method (sst-global-mean: ocean or podaac-tutorial)"
PARAM_HELP = "recipe parameter; VALUE is read as JSON (--param 'box=[-170,-5,-120,5]'), else as text"
RECIPE_HELP = ("the recipe: granulemap recipes lists those installed (built in: sst-global-mean, sst-box-mean, "
               "atl06-cell-stats; yours, once its package is installed)")
BBOX_HELP = ("narrows which granules the NASA CMR search finds, in degrees (west > east crosses the antimeridian); "
             "no recipe clips to it. Refused where it changes nothing (a source folder; the SST recipes' gridded "
             "granules)")
CONCURRENCY_HELP = ("items the state machine runs at once (default: the DefaultMaxConcurrency parameter: the deployed "
                    "stack's, or template.yaml's for a local run)")
TOLERANCE_HELP = ("percentage of granules (of items, for recipes without granule results) that may fail without "
                  "failing the run (default: the ToleratedFailurePercentage parameter, 5 in template.yaml: the "
                  "deployed stack's, or template.yaml's for a local run; 0: a run whose every granule must count)")
RECOMPUTE_HELP = ("compute every item again, even those whose result is stored (after an update of granulemap or of "
                  "your recipe that changes results): the products take the new values")
PERIOD_HELP = ("instead of --start and --end: a whole month, YYYY-MM (or previous-month, as the schedule runs), "
               "refused when it has no granules or, for the SST recipes, lacks a day's; --start/--end with the same "
               "dates take what there is")
COLLECTION_HELP = ("CMR short name (default: the recipe's collection, MUR25-JPL-L4-GLOB-v04.2 for the SST recipes); "
                   "with --source, the product of its granules: another product's runs get a time series of their own")
GROUP_HELP = ("per-granule recipes (the SST ones, and yours with per_granule = True): granules per Processor call, "
              "those of a dekad (default) or one each; same results")


def execution_input(args: argparse.Namespace) -> dict[str, Any]:
    """The execution input a CLI invocation stands for (the same document start-execution takes)."""
    params = dict(args.param or [])
    for name in ("method", "parent_order", "child_order"):
        value = getattr(args, name, None)
        if value is None:
            continue
        if name in params and not _same_param(args.recipe, name, params[name], value):
            raise InvalidInput(f"--{name.replace('_', '-')} {value} and --param {name}={json.dumps(params[name])} "
                               "disagree: give one")
        params[name] = value
    doc: dict[str, Any] = {"recipe": args.recipe}
    for key in ("start", "end", "period"):  # the input's model says what is missing or too much
        if getattr(args, key, None) is not None:
            doc[key] = getattr(args, key)
    source = getattr(args, "source", None)
    if source is not None:
        if not source.strip():  # an unset shell variable, say: not the current folder
            raise InvalidInput("--source is empty: give a folder of granules (or an s3:// prefix)")
        from granulemap.models import local_path_of

        directory = local_path_of(source)
        doc["source"] = str(Path(directory).resolve()) if directory is not None else source
    for key in ("collection", "max_concurrency", "tolerated_failure_percentage", "group"):
        if getattr(args, key, None) is not None:
            doc[key] = getattr(args, key)
    if getattr(args, "recompute", False):
        doc["recompute"] = True
    if getattr(args, "bbox", None):
        doc["bbox"] = args.bbox
    if params:
        doc["params"] = params
    return doc


def _same_param(recipe_name: str, name: str, a: Any, b: Any) -> bool:
    """Whether two values of a recipe parameter mean the same (``"7"`` and ``7`` for an integer), read as its Params
    model types the field (alone: whether the value suits the other parameters is the input's check); values of
    another type are the same only if equal."""
    if a == b:
        return True
    from pydantic import TypeAdapter, ValidationError

    from granulemap.recipes import get_recipe

    try:
        field = get_recipe(recipe_name).Params.model_fields[name]
        typed = TypeAdapter(field.annotation)
        return typed.validate_python(a) == typed.validate_python(b)
    except (InvalidInput, ValidationError, KeyError):
        return False


def local_template() -> Any:
    """template.yaml as the local engine reads it (raises FileNotFoundError outside a granulemap checkout)."""
    from granulemap.local.engine import ACCOUNT, LOCAL_BUCKET, LOCAL_STACK_NAME, REGION, project_root
    from granulemap.local.template import read_local_template

    return read_local_template(project_root(), LOCAL_BUCKET, REGION, ACCOUNT, LOCAL_STACK_NAME)


def local_settings(template: Any = None) -> Any:
    """The settings BuildCatalog would get from template.yaml (``template``: as ``local_template`` read it, if it has
    been), to validate before starting anything."""
    from granulemap.settings import load_settings

    return load_settings((template or local_template()).functions["CatalogBuilderFunction"].environment)


def processor_malloc_settings() -> None:
    """``process`` does the Processor's work, so it takes the Processor's malloc settings (granulemap/heap.py):
    without them a granule can take much longer (BENCHMARKS.md's malloc section says how much). Nothing changes
    outside a checkout (no template.yaml) or where mallopt does not exist."""
    from granulemap.heap import VARIABLE, set_at_runtime

    try:
        tunables = local_template().functions["ProcessorFunction"].environment.get(VARIABLE)
    except FileNotFoundError:
        return
    if tunables:
        set_at_runtime(tunables)


def cmd_run(args: argparse.Namespace) -> int:
    from granulemap.catalog import validate_input
    from granulemap.local.run import run_locally

    doc = execution_input(args)
    validate_input(doc, local_settings())
    if not args.out.strip():  # an unset shell variable, say: the current folder would get state/, logs/, products
        raise InvalidInput("--out is empty: give a folder for the run's products (made if missing)")
    summary = run_locally(doc, Path(args.out), workers=args.workers, progress=not args.quiet)
    from granulemap.cloud import print_summary

    print_summary(summary)  # a run that found no granules in a folder: its message says what the folder holds
    if summary["status"] == "SUCCEEDED" and summary.get("failures"):  # within the tolerance: easy to miss in a script
        print("these failed within the tolerated percentage, so the run succeeded: once the cause is mended, the "
              "same command again computes only what failed")
    return 0 if summary["status"] == "SUCCEEDED" else 1


def cmd_process(args: argparse.Namespace) -> int:
    import traceback

    from granulemap.granule_access import GranuleAccess
    from granulemap.grouping import item_id_for
    from granulemap.models import Failure, Granule, Item, RunContext
    from granulemap.processing import reduce_granule, stored_value
    from granulemap.recipes import failed_at, get_recipe
    from granulemap.recipes.base import Recipe

    recipe = get_recipe(args.recipe)
    if not recipe.per_granule and type(recipe).make_items is not Recipe.make_items:
        raise InvalidInput(f"recipe {recipe.name} makes its own items from its catalog (not one per file): "
                           "granulemap process reduces single granules; run it with granulemap run --source FOLDER")
    processor_malloc_settings()
    raw = dict(args.param or [])
    if args.method is not None:
        raw["method"] = args.method
    params = recipe.parse_params(raw)
    run = RunContext(run_id="process", recipe=recipe.name, params=params.model_dump(mode="json"),
                     config_id=recipe.config_id(params))
    access = GranuleAccess(run)
    status = 0
    for path in args.files:
        url = str(Path(path).resolve())
        item = Item(id=item_id_for(url), granules=[Granule(url=url, time=recipe.granule_time(Path(path).name))])
        try:
            if recipe.per_granule:
                result = reduce_granule(recipe, item, params, access, run, path)
            else:  # one item per file, its result any JSON value
                result = stored_value(recipe.process(item, params, access, run), f"recipe {recipe.name}: {path}")
            print(json.dumps(result), flush=True)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - one file's error: said, and the next file is reduced
            if not isinstance(exc, GranulemapError):  # the recipe's own code: its author needs the whole trace
                traceback.print_exception(exc, file=sys.stderr)
            failure = Failure(item=path, error=type(exc).__name__, cause=str(exc), where=failed_at(exc, recipe.name))
            print(f"granulemap: {failure.described()}", file=sys.stderr, flush=True)
            status = 1
    return status


def cmd_recipes(args: argparse.Namespace) -> int:
    from granulemap.recipes import available, get_recipe

    status = 0
    for name in sorted(available()):
        try:
            recipe = get_recipe(name)
            print(f"{name:20s} {recipe.description or '(no description)'}")
            params = [_param_and_default(key, field) for key, field in recipe.Params.model_fields.items()]
            if params:  # as --param KEY=VALUE takes them
                print(f"{'':20s} params: {', '.join(params)}")
        except Exception as exc:  # noqa: BLE001 - one package's broken recipe: said, and the others still listed
            print(f"{name:20s} (cannot be used: {exc})")
            status = 1
    return status


def _param_and_default(key: str, field: Any) -> str:
    """``key=default`` (the default as JSON) of a recipe's parameter, or ``key (required)``; a parameter of a few
    values (a ``Literal``) names them: ``method="ocean" (ocean | podaac-tutorial)``."""
    from typing import Literal, get_args, get_origin

    choices = (f" ({' | '.join(str(choice) for choice in get_args(field.annotation))})"
               if get_origin(field.annotation) is Literal else "")
    if field.is_required():
        return f"{key} (required){choices}"
    from pydantic_core import to_jsonable_python

    default = json.dumps(to_jsonable_python(field.get_default(call_default_factory=True)), default=str)
    return f"{key}={default}{choices}"


def cmd_plot(args: argparse.Namespace) -> int:
    from granulemap.plotting import plot_result

    print(plot_result(Path(args.result), args.column, Path(args.out) if args.out else None, args.time))
    return 0


def _from_aws(exc: Exception) -> bool:
    """An error of boto3 or botocore: AWS refused, or could not be reached (only the cloud commands talk to AWS; a
    local run's own clients talk to its moto server, whose errors are the engine's)."""
    import boto3.exceptions
    import botocore.exceptions

    return isinstance(exc, (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError,
                            boto3.exceptions.Boto3Error))


_AWS_HINTS = {
    "NoCredentialsError": " (set up AWS credentials: aws configure, aws sso login, or AWS_PROFILE)",
    "NoRegionError": " (give --region, or set one: aws configure)",
    "EndpointConnectionError": " (no network, or the wrong region: start's --region, the ARN's for status and "
                               "results?)",
    "ExecutionDoesNotExist": " (check the ARN, and that your AWS credentials are of its account: Step Functions "
                             "keeps an execution 90 days after it ended)",
}


def add_execution_options(parser: argparse.ArgumentParser, bbox: bool = True) -> None:
    """The options of an execution input (``execution_input``) that ``run`` and ``start`` share; ``bbox`` only where
    a run may search NASA CMR (``start``: a bbox narrows only that search, and ``run`` always has a source)."""
    parser.add_argument("--recipe", required=True, help=RECIPE_HELP)
    parser.add_argument("--start", help="first date, inclusive (YYYY-MM-DD)")
    parser.add_argument("--end", help="last date, inclusive (YYYY-MM-DD)")
    parser.add_argument("--period", help=PERIOD_HELP)
    parser.add_argument("--method", help=METHOD_HELP)
    parser.add_argument("--parent-order", type=int, dest="parent_order", help="atl06-cell-stats: item cell order (6)")
    parser.add_argument("--child-order", type=int, dest="child_order", help="atl06-cell-stats: statistics order (12)")
    parser.add_argument("--param", action="append", type=parse_param, metavar="KEY=VALUE", help=PARAM_HELP)
    parser.add_argument("--collection", help=COLLECTION_HELP)
    if bbox:
        parser.add_argument("--bbox", type=float, nargs=4, metavar=("WEST", "SOUTH", "EAST", "NORTH"), help=BBOX_HELP)
    parser.add_argument("--max-concurrency", type=int, dest="max_concurrency", help=CONCURRENCY_HELP)
    parser.add_argument("--tolerated-failure-percentage", type=float, dest="tolerated_failure_percentage",
                        help=TOLERANCE_HELP)
    parser.add_argument("--group", choices=("dekad", "granule"), help=GROUP_HELP)
    parser.add_argument("--recompute", action="store_true", help=RECOMPUTE_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="granulemap", description=__doc__.replace("``", ""), formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit status: 0 done (the run succeeded), 1 the run failed, 2 bad input (nothing started), "
               "3 AWS refused or could not be reached, 130 interrupted (Ctrl-C), 143 ended (SIGTERM), "
               "129 its terminal closed (SIGHUP)")
    from granulemap import __version__

    parser.add_argument("--version", action="version", version=f"granulemap {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the state machine locally (moto's Step Functions engine, offline)")
    add_execution_options(run, bbox=False)
    run.add_argument("--source", required=True, help="directory of granules on this machine")
    run.add_argument("--out", required=True,
                     help="directory for the products, summary.json and logs; a run of another recipe or parameters "
                          "there replaces the products (kept in its state/): a folder per experiment")
    run.add_argument("--workers", type=_at_least_one, default=None,
                     help="worker processes on this machine (default: one per core); --max-concurrency is how many "
                          "items the state machine runs at once, which these processes share")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    run.set_defaults(func=cmd_run)

    proc = sub.add_parser("process", help="run only the per-granule reduction on local files, one JSON line each "
                                          "(recipes that do not make their own items: the SST ones, and yours unless "
                                          "they split granules differently); exit 1 if a file could not be reduced")
    proc.add_argument("--recipe", required=True, help=RECIPE_HELP)
    proc.add_argument("--method", help=METHOD_HELP)
    proc.add_argument("--param", action="append", type=parse_param, metavar="KEY=VALUE", help=PARAM_HELP)
    proc.add_argument("files", nargs="+", metavar="FILE", help="granule files, reduced one after the other")
    proc.set_defaults(func=cmd_process)

    recipes = sub.add_parser("recipes", help="list the installed recipes")
    recipes.set_defaults(func=cmd_recipes)

    plot = sub.add_parser("plot", help="redraw the PNG of a result (CSV time series or Zarr store)")
    plot.add_argument("result", metavar="RESULT", help="a run's CSV time series or Zarr store")
    plot.add_argument("--column", help="CSV column or Zarr variable (default: the one the run drew, or h_mean); "
                                       "another CSV column is drawn to NAME-COLUMN.png beside the run's picture")
    plot.add_argument("--out", help="PNG file (its folder made if missing), or a folder for it: one that exists, or a "
                                     "name without a suffix, made (default: next to the result)")
    plot.add_argument("--time", type=_date, help="for a Zarr store: the period containing this day, YYYY-MM-DD "
                                                 "(default: the latest, the period that ends last)")
    plot.set_defaults(func=cmd_plot)

    from granulemap.cloud import add_cloud_commands
    from granulemap.estimate import add_estimate_command

    add_cloud_commands(sub)
    add_estimate_command(sub)
    for choice in sub._choices_actions:  # `granulemap run --help` says what run does, as `granulemap --help` does
        command = sub.choices[choice.dest]
        if command.description is None:
            command.description = choice.help[:1].upper() + choice.help[1:] + "."
    return parser


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The arguments; an unknown option is reported by its command's parser (its usage, not the top level's), with
    the nearest option it knows."""
    import difflib

    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        command = sub.choices[args.command]
        known = [o for a in command._actions for o in a.option_strings]
        hints = [f"{u} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(u.split("=")[0], known, n=1))
                 else u for u in unknown]
        command.error(f"unrecognized arguments: {' '.join(hints)}")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parse(argv)  # imports boto3 and the like: most of a second in which Ctrl-C gave a traceback
    except KeyboardInterrupt as exc:
        return _interrupted(exc, "")
    try:
        return args.func(args)
    except InvalidInput as exc:
        print(f"granulemap: {exc}", file=sys.stderr)
        return 2
    except GranulemapError as exc:
        print(f"granulemap: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        advice = disk_advice(exc)
        if advice is not None:  # a traceback said less
            assert isinstance(exc, OSError)
            where = (f" {exc.filename}" if exc.filename else
                     f" in --out {args.out} (or in the temporary folder, {tempfile.gettempdir()})"
                     if getattr(args, "out", None) else "")
            print(f"granulemap: cannot write{where}: {exc.strerror}. {advice.capitalize()}, then run the same command "
                  "again", file=sys.stderr)
            return 1
        if getattr(args, "talks_to_aws", False) and _from_aws(exc):  # not a failed run: AWS said no, or was not reached
            print(f"granulemap: AWS: {type(exc).__name__}: {exc}{_AWS_HINTS.get(type(exc).__name__, '')}",
                  file=sys.stderr)
            return 3
        raise
    except KeyboardInterrupt as exc:
        return _interrupted(exc, "" if args.command != "run" else
                            " (what was done is kept; the same command again computes everything again, as "
                            "--recompute does: without --recompute it resumes)" if getattr(args, "recompute", False)
                            else " (the same command again resumes: what was done is kept)")


def _interrupted(exc: KeyboardInterrupt, again: str) -> int:
    """One line for Ctrl-C or a stop signal, and the exit status a shell gives a command the signal ended."""
    if isinstance(exc, Stopped):
        print(f"granulemap: stopped by {signal.Signals(exc.signum).name}{again}", file=sys.stderr)
        return 128 + exc.signum
    print(f"granulemap: interrupted{again}", file=sys.stderr)
    return 130


class Stopped(KeyboardInterrupt):
    """A signal that asks the command to end (SIGTERM: ``kill``, a batch scheduler, an editor's stop button; SIGHUP:
    its terminal closed), handled as Ctrl-C is: a local run stops its engine, its workers and their fork server
    (left running, about 300 MB, when the signal ended only the command's own process), and can be resumed."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


STOP_SIGNALS = ("SIGTERM", "SIGHUP")


def stop_on_signals() -> None:
    """Raise ``Stopped`` in the main thread at the first of ``STOP_SIGNALS`` (a second ends the process as the signal
    would); a signal ignored when the command started (``nohup``: SIGHUP) stays ignored. A process forked from this
    one ends at these signals as any process does (a terminate() sends SIGTERM)."""
    signums = [getattr(signal, name) for name in STOP_SIGNALS if hasattr(signal, name)]
    taken = [signum for signum in signums if signal.getsignal(signum) is signal.SIG_DFL]
    command = os.getpid()

    def stop(signum: int, frame: object) -> None:
        for each in taken:  # a second signal ends the process
            signal.signal(each, signal.SIG_DFL)
        if os.getpid() != command:  # a forked process, which has this handler too: ended by the signal after all
            os.kill(os.getpid(), signum)
            return
        raise Stopped(signum)

    for signum in taken:
        signal.signal(signum, stop)


def console() -> None:
    """The ``granulemap`` command (and ``python -m granulemap.cli``): ``main``, then leave at once with its status.

    Everything ``main`` opens is closed by the time it returns (a local run's engine has stopped moto, its workers and
    its fork server). What is left is the interpreter's own teardown, which, with moto, numpy, h5py and matplotlib
    loaded, is a noticeable part of a short run (BENCHMARKS.md, the local engine's section). multiprocessing's exit
    work is done (its temporary folder removed), logging shut down and output flushed first; other exit handlers that
    libraries registered do not run."""
    import logging
    import multiprocessing
    import os

    from multiprocessing import util

    stop_on_signals()
    try:
        code = main()
    except BrokenPipeError:  # the reader left (granulemap recipes | head -1): end as a command killed by SIGPIPE
        code = 128 + 13
    # A worker still alive here was left by a shut-down that an interrupt cut short: multiprocessing's exit work
    # would wait for it forever (a worker waits for work until told to stop). One forked a moment before may lose
    # the SIGTERM (Python drops a signal that comes before the child is set up after the fork): then SIGKILL.
    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    for child in children:
        child.join(timeout=2.0)
        if child.is_alive():
            child.kill()
            child.join()
    util._exit_function()  # what multiprocessing does at exit: its temporary folder (the fork server's socket) goes
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # the same closed pipe: nothing more to say
            pass
    os._exit(code)


if __name__ == "__main__":
    console()
