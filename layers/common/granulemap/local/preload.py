"""What the engine's fork server does once for every worker it forks (granulemap/local/warmfork.py): import the
libraries the handlers import, and load botocore's S3 model into the default session.

Nothing here may depend on a function's environment, which ``worker.invoke`` sets per invocation: the libraries read
none of what it sets when imported, and the client made here is given its region, its endpoint and dummy keys, and
thrown away. (matplotlib reads MPLCONFIGDIR when imported, once per process. template.yaml sets it for the Aggregator,
to a folder in /tmp, because Lambda's HOME is not writable; the local engine leaves it out of the functions'
environments (LAMBDA_ONLY_VARIABLES in granulemap/local/template.py), so matplotlib uses the user's own config folder,
their MPLCONFIGDIR or ~/.config/matplotlib, whether this preload or a worker imports it.)

What the preload leaves is the default boto3 session's loaded S3 service model and endpoint rules (about 0.1 s per
process), which a handler's first client, made from that session, reuses: it still resolves its own region, endpoint
and credentials from the function's environment (and the worker hooks that session to the local channel:
granulemap/local/channel.py).

Aggregate draws with matplotlib, which it would otherwise import (0.4 s) on the run's critical path, after the last
item. granulemap's own modules are imported too; a recipe's module is imported by its first invocation (only the
small SST ones are here: atl06-cell-stats brings zarr and s3fs, 0.3 s, which every other run would pay at start).

The preload runs alongside the engine's own start-up (importing and starting moto) and takes about as long, so a
step more here can delay a run's first invocation: only what the handlers import belongs here (tests/test_warmfork.py
checks that the handlers of an SST run, in a spawned worker, import every module listed).

Each step may fail on its own (a library missing, a bad MPLBACKEND or AWS_PROFILE in the user's environment): it is
then skipped, and the workers do it on first use, as a Lambda would. multiprocessing's fork server would survive an
ImportError of this module but die of any other error, and every worker with it.
"""

from __future__ import annotations

import gc
import importlib
import os

from granulemap.local.warmfork import LOG_ENV

MODULES = ("boto3", "botocore.session", "numpy", "h5py", "pydantic", "aws_xray_sdk.core", "aws_lambda_powertools",
           "aws_lambda_powertools.utilities.parser", "matplotlib.figure",
           "matplotlib.backends.backend_agg",
           "granulemap.local.worker", "granulemap.local.channel", "granulemap.catalog", "granulemap.processing",
           "granulemap.aggregation", "granulemap.recipes.sst_global_mean", "granulemap.recipes.sst_box_mean")
skipped: dict[str, str] = {}
"""What could not be done, and why (for tests and for a look from a debugger)."""


def _load_s3_model() -> None:
    import boto3

    boto3.client("s3", region_name="us-west-2", endpoint_url="http://127.0.0.1:9", aws_access_key_id="preload",
                 aws_secret_access_key="preload")


def _installed_recipes() -> None:
    from granulemap.recipes import available

    available()  # the installed recipes' entry points, read once


def _output_to_the_run_log() -> None:
    """What the server and the libraries print goes where the workers' output goes, not to the user's terminal."""
    path = os.environ.get(LOG_ENV)
    if path:
        from granulemap.local.worker import send_output_to

        send_output_to(path)


def preload() -> None:
    """Every step, with the cyclic garbage collector off: importing allocates hundreds of thousands of objects that
    live as long as the process, and the collections they trigger would traverse them again and again (a sixth of
    the preload's time). They are then frozen (``gc.freeze``, as the gc module's documentation advises before fork
    without exec): the workers' own collections skip them, and do not write to their pages, which stay shared with
    this process instead of being copied into every worker."""
    _output_to_the_run_log()
    steps = [(name, lambda name=name: importlib.import_module(name)) for name in MODULES]
    steps += [("installed recipes", _installed_recipes), ("botocore's S3 model", _load_s3_model)]
    gc.disable()
    try:
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - a head start only; see the module's docstring
                skipped[what] = f"{type(exc).__name__}: {exc}"
    finally:
        gc.freeze()
        gc.enable()


preload()
