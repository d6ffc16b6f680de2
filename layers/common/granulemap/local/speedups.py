"""Memoization of pure functions that moto 5.2.5 recomputes on every request or state, in the engine process, and
faster equivalents of two per-request steps.

Each patch replaces a module attribute with a cached or faster version of the same function (same arguments, same
result, or for the request id a result of the same form), and ``install`` returns what restores the originals.
Measured costs are per call, on these machines:

- ``DomainDispatcherApplication.get_application`` lists moto's package folder (``backends.list_of_moto_modules``)
  on every HTTP request to route it; the list never changes while we run.
- The Step Functions engine parses every JSONPath each time it evaluates it (``jsonpath_ng`` builds a new PLY
  parser, tables included, per parse: 0.5-0.7 ms; per Map item: the ItemSelector's two paths and the task's
  ResultPath). A parsed ``JSONPath`` is an immutable tree: ``find`` and ``update_or_create`` only read it.
- The Step Functions engine deep-copies a state's data several times per state (``States.get_input``, ``reset``,
  frames, path results) with ``copy.deepcopy``, whose generic dispatch is slow on JSON-like data. Those modules get a
  ``deepcopy`` that copies ``dict``/``list`` itself, exactly as ``copy.deepcopy`` does (same memo, so shared and
  recursive references stay shared), returns ``str``/``int``/``float``/``bool``/``None``/``bytes`` as they are, and
  hands anything else to ``copy.deepcopy`` with the same memo.
- Every error response (an S3 ``NoSuchKey``, say) builds a botocore ``Session`` to map moto's package name to the
  service name (0.7 ms), and a fresh ``ErrorLookupFactory`` whose per-service cache therefore never hits (0.3 ms).
- Every response gets a request id of 52 random letters and digits, drawn one ``random.choice`` at a time (0.25 ms
  under a profiler, 6 % of an S3 request): ``request_id`` draws the same alphabet from one ``os.urandom`` call.
- Every new botocore ``Session`` loads botocore's JSON data files again (endpoints, partitions, service models: its
  loader's cache is per session), and moto makes a new ``Session`` for each service's backends while it is imported
  (``Session().get_available_regions``): about 0.7 s of each local run's start-up. ``JSONFileLoader.load_file`` is
  memoized by path for the engine's lifetime (the files do not change while it runs; botocore already hands the same
  loaded objects to every caller within a session, so nobody may change them). ``install`` therefore runs before
  moto is imported, and imports moto's server and Step Functions engine itself.
- moto's Step Functions engine imports its AWS Batch integration at start, for one enum of ``moto.batch.utils``; the
  package ``moto.batch`` imports its models, and they import all of moto's EC2 (0.26 s of each local run's
  start-up, on its critical path: availability zones and instance types read from JSON). ``moto.batch`` is
  registered as a lazy package instead: the same folder (its submodules import as before) and the same attributes,
  ``batch_backends`` included, loaded from ``moto.batch.models`` when first read. Nothing here calls Batch.
- S3 decides whether a request names its bucket in the host (``S3Response.subdomain_based_buckets``, five times per
  request, regular expressions on the host each time). Every request here is path-style to 127.0.0.1 or localhost,
  for which moto answers no: moto's own setting ``S3_IGNORE_SUBDOMAIN_BUCKETNAME`` gives that answer at once.
"""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.util
import os
import string
import sys
import types
from collections.abc import Callable
from typing import Any


_ATOMIC = frozenset({str, int, float, bool, type(None), bytes})


def _deepcopy_into(x: Any, memo: dict[int, Any]) -> Any:
    cls = type(x)
    if cls in _ATOMIC:
        return x
    y = memo.get(id(x))
    if y is not None:
        return y
    if cls is dict:
        y = {}
        memo[id(x)] = y
        for key, value in x.items():
            y[key if type(key) in _ATOMIC else _deepcopy_into(key, memo)] = _deepcopy_into(value, memo)
        return y
    if cls is list:
        y = []
        memo[id(x)] = y
        append = y.append
        for value in x:
            append(_deepcopy_into(value, memo))
        return y
    return copy.deepcopy(x, memo)


def json_deepcopy(x: Any, memo: dict[int, Any] | None = None) -> Any:
    """``copy.deepcopy``, faster on dicts, lists and scalars (see the module's docstring)."""
    if type(x) in _ATOMIC:
        return x
    return _deepcopy_into(x, {} if memo is None else memo)


_ID_ALPHABET = (string.ascii_letters + string.digits).encode()
_ID_TABLE = bytes(_ID_ALPHABET[b % len(_ID_ALPHABET)] for b in range(256))
"""Byte → letter or digit; bytes 248-255 are deleted first, so that each of the 62 symbols is equally likely
(248 = 4 × 62)."""
_ID_DROP = bytes(range(248, 256))


def request_id(headerdict: dict[str, Any] | None = None, length: int = 52) -> str:
    """moto's ``gen_amzn_requestid_long``: ``length`` random letters and digits, also set as x-amzn-requestid."""
    out = b""
    while len(out) < length:
        out += os.urandom(2 * length).translate(_ID_TABLE, _ID_DROP)
    req_id = out[:length].decode()
    if isinstance(headerdict, dict):
        headerdict.update({"x-amzn-requestid": req_id})
    return req_id


def _shared_load_file(load_file: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    """``JSONFileLoader.load_file`` (a loader has no state of its own) with one cache for every session."""
    loaded: dict[str, Any] = {}

    def shared(loader: Any, file_path: str) -> Any:
        if file_path not in loaded:
            loaded[file_path] = load_file(loader, file_path)
        return loaded[file_path]

    return shared


_FAST_COPY = types.SimpleNamespace(**{**{k: v for k, v in vars(copy).items() if not k.startswith("__")},
                                      "deepcopy": json_deepcopy})

_DEEPCOPY_MODULES = (
    "moto.stepfunctions.parser.asl.eval.states",
    "moto.stepfunctions.parser.asl.eval.environment",
    "moto.stepfunctions.parser.asl.component.state.exec.execute_state",
    "moto.stepfunctions.parser.asl.component.common.string.string_expression",
    "moto.stepfunctions.parser.asl.component.common.path.result_path",
)


def _lazy_package(name: str, attributes_from: str) -> None:
    """Register package ``name`` without running its ``__init__``: its submodules import from its folder as usual,
    and any other attribute is read from module ``attributes_from`` (what the ``__init__`` re-exports), imported
    then. Nothing happens if the package is imported already."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        return
    package = types.ModuleType(name)
    package.__spec__ = spec
    package.__path__ = list(spec.submodule_search_locations)
    package.__file__ = spec.origin
    package.__package__ = name

    def __getattr__(attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(importlib.import_module(attributes_from), attr)

    package.__getattr__ = __getattr__  # type: ignore[attr-defined]  (PEP 562)
    sys.modules[name] = package
    parent, _, child = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], child, package)


def install() -> Callable[[], None]:
    from botocore import loaders

    originals: list[tuple[Any, str, Any]] = []

    def replace(module: Any, name: str, value: Any) -> None:
        originals.append((module, name, getattr(module, name)))
        setattr(module, name, value)

    replace(loaders.JSONFileLoader, "load_file", _shared_load_file(loaders.JSONFileLoader.load_file))
    _lazy_package("moto.batch", "moto.batch.models")
    import moto.server  # noqa: F401  (imported under the cache above)
    import moto.stepfunctions.parser.models  # noqa: F401
    from moto import backends, settings
    from moto.core import errors, responses, utils
    from moto.stepfunctions.parser.asl.component.common.path import result_path
    from moto.stepfunctions.parser.asl.utils import json_path

    modules = tuple(backends.list_of_moto_modules())
    replace(backends, "list_of_moto_modules", lambda: modules)
    replace(json_path, "parse", functools.lru_cache(maxsize=4096)(json_path.parse))
    replace(result_path, "parse", functools.lru_cache(maxsize=4096)(result_path.parse))
    replace(utils, "service_name_from_moto_package_name",
            functools.lru_cache(maxsize=None)(utils.service_name_from_moto_package_name))

    for name in _DEEPCOPY_MODULES:
        module = importlib.import_module(name)
        if getattr(module, "copy", None) is copy:
            replace(module, "copy", _FAST_COPY)
    factory = errors.ErrorLookupFactory()
    replace(errors, "ErrorLookupFactory", lambda: factory)
    replace(responses, "gen_amzn_requestid_long", request_id)
    replace(settings, "S3_IGNORE_SUBDOMAIN_BUCKETNAME", True)

    def restore() -> None:
        for module, name, value in reversed(originals):
            setattr(module, name, value)

    return restore
