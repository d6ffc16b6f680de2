"""Named errors. Their class names are the Lambda ``errorType`` that the state machine's Retry/Catch match.

Transient errors are retried by statemachine/pipeline.asl.json (exponential backoff, full jitter);
permanent errors are not. ``TRANSIENT_ERROR_NAMES`` is the one list of what is retried, and a test
checks that the ASL file retries exactly these (plus the Lambda service's own transient errors).
"""

from __future__ import annotations

import errno
import json
import os
import re
import traceback
from collections.abc import Iterable, Sequence


class GranulemapError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidInput(GranulemapError):
    """The execution input (or a CLI argument) is wrong; the message names the field. Nothing was written, unless
    Aggregate raised it (granules that cannot join the products, e.g. of another product than a time series': the
    results, provenance and summary are written, the products are not changed)."""


class TransientError(GranulemapError):
    """Worth retrying: throttling, a timeout, a credential that just expired."""


class StorageThrottled(TransientError):
    """S3 said SlowDown/503 or timed out."""


class LockHeld(TransientError):
    """Another execution holds the lock of what this one must change (``storage.lease_lock``): retried later."""


class CredentialsExpired(TransientError):
    """The temporary DAAC credentials expired while in use; a retry reads fresh ones."""


class SourceUnavailable(TransientError):
    """The catalog service (CMR) or the data source did not answer in time."""


class PermanentItemError(GranulemapError):
    """This item cannot be processed however often it is retried."""


class GranuleUnreadable(PermanentItemError):
    """The granule is corrupt, truncated or not a file this recipe can open."""


class VariableMissing(PermanentItemError):
    """The granule lacks a variable (or attribute) the recipe needs: probably the wrong product."""


class RecipeResultInvalid(PermanentItemError):
    """A recipe's result cannot be used: its ``process`` returned what cannot be stored (not a dict, for a
    per-granule recipe; a value JSON cannot hold, such as an array or a date), or rows its products cannot be made
    of (a time-series row without ``time`` or ``granule``: found by Aggregate)."""


class ProductDamaged(GranulemapError):
    """A product that runs merge into (a time series, an output store) cannot be read: a copy or a write cut short,
    a file edited by hand. The message names what is damaged and how to write it anew."""


class ProductMismatch(GranulemapError):
    """A product that runs merge into holds what this run's results would lose: a time series with a column its
    recipe no longer writes (renamed, or dropped). The message names it and what to do."""


class RecipeFailed(GranulemapError):
    """A recipe's ``combine`` failed in Aggregate: the run's counts and summary are written, the products are not (a
    failing ``notes`` only becomes a note)."""


class TooManyFailures(GranulemapError):
    """More items failed than the run's tolerated failure percentage allows."""


class CatalogError(GranulemapError):
    """The catalog could not be built (e.g. CMR answered with an error after retries)."""


class NoGranulesFound(GranulemapError):
    """A scheduled run (``period``) found no granules for its period: something to hear about, not a success."""


class RunInProgress(GranulemapError):
    """An earlier execution is still running the same period of the same recipe and configuration: two at once would
    each rewrite the period's results (``catalog.refuse_a_second_run_of_the_period``)."""


class CredentialsUnavailable(GranulemapError):
    """Earthdata Login credentials are missing or were refused."""


TRANSIENT_ERROR_NAMES: tuple[str, ...] = (
    TransientError.__name__,
    StorageThrottled.__name__,
    CredentialsExpired.__name__,
    SourceUnavailable.__name__,
    LockHeld.__name__,
)
"""Our own retryable error names, as the ASL Retry lists them."""

LAMBDA_SERVICE_TRANSIENT_ERRORS: tuple[str, ...] = (
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "Lambda.ClientExecutionTimeoutException",
)
"""Errors of the Lambda service itself that AWS recommends retrying ("Handle transient Lambda service exceptions",
Step Functions developer guide)."""


def readable_cause(cause: str | None, error: str | None = None) -> str | None:
    """A Step Functions cause as a person reads it: Lambda errors arrive as a JSON payload; return its errorMessage.
    Given the execution's ``error``, the Lambda error's own type leads when it says more (a run that failed as
    ``CatalogFailed`` because of ``NoGranulesFound``)."""
    if not cause:
        return cause
    try:
        payload = json.loads(cause)
    except ValueError:
        return cause
    if not isinstance(payload, dict):
        return cause
    message = str(payload.get("errorMessage", cause))
    kind = payload.get("errorType")
    return f"{kind}: {message}" if error is not None and kind and kind != error else message


Frame = tuple[str, int, str]
"""(file, line, function) of one frame of a traceback."""

_FRAME_LINE = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<name>\S+)')


def frames_of(exc: BaseException) -> list[Frame]:
    """The frames ``exc`` passed through, outermost first."""
    return [(f.filename, f.lineno or 0, f.name) for f in traceback.extract_tb(exc.__traceback__)]


def frames_in_cause(cause: str | None) -> list[Frame]:
    """The frames of a Lambda error payload's ``stackTrace`` (a Step Functions cause), outermost first; none if the
    cause is not such a payload."""
    try:
        payload = json.loads(cause or "")
    except ValueError:
        return []
    trace = payload.get("stackTrace") if isinstance(payload, dict) else None
    found = [_FRAME_LINE.search(str(line)) for line in trace or []]
    return [(m["file"], int(m["line"]), m["name"]) for m in found if m]


def where_failed(frames: Iterable[Frame], home: str | None) -> str | None:
    """Where an error happened, for a person: ``path:LINE in FUNCTION`` of the innermost frame in ``home`` (a
    recipe's module file or package folder: the code its author can mend), else of the innermost frame; the path is
    given from ``home``'s folder (``my_recipes.py``, ``granulemap/recipes/ghrsst.py``), else as the file's name."""
    frames = list(frames)
    if not frames:
        return None
    inside = [f for f in frames if home and (f[0] == home or f[0].startswith(home.rstrip(os.sep) + os.sep))]
    file, line, name = (inside or frames)[-1]
    shown = os.path.relpath(file, os.path.dirname(home.rstrip(os.sep))) if inside and home else os.path.basename(file)
    return f"{shown}:{line} in {name}"


CAUSE_LIMIT = 1000
"""Characters of an error's message kept in a failure record: a recipe's message may hold a whole array, and the
records travel in Step Functions' state (256 KiB) and fill summaries."""


def shortened(text: str, limit: int = CAUSE_LIMIT) -> str:
    """``text``, cut to ``limit`` characters with a note of how much was left out."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def first_of(values: Sequence[object], shown: int) -> str:
    """The first ``shown`` of ``values`` for a message, comma-separated, with how many more there are ("a, b and 3
    more"; a "..." there ran into the sentence's full stop)."""
    more = len(values) - shown
    return ", ".join(str(v) for v in values[:shown]) + (f" and {more} more" if more > 0 else "")


_DISK_ADVICE = {errno.ENOSPC: "free space on that disk", errno.EDQUOT: "free space within your quota on that disk",
                errno.EROFS: "make that disk writable"}


def disk_advice(exc: BaseException) -> str | None:
    """What to do about an OSError of a disk that refuses writes (full, over a quota, read-only), to start a sentence
    that goes on with when to run again; None for any other error."""
    return _DISK_ADVICE.get(exc.errno) if isinstance(exc, OSError) and exc.errno is not None else None
