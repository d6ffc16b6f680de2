"""Memoization of pure functions that moto 5.2.5 recomputes on every request or state, in the engine process.

Each patch replaces a module attribute with a cached version of the same function (same arguments, same result),
and ``install`` returns what restores the originals. Measured costs are per call, on these machines:

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
- Every error response (an S3 ``NoSuchKey``: the Processor's look-up of an existing result, once per item) builds a
  botocore ``Session`` to map moto's package name to the service name (0.7 ms), and a fresh
  ``ErrorLookupFactory`` whose per-service cache therefore never hits (0.3 ms).
"""

from __future__ import annotations

import copy
import functools
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


_FAST_COPY = types.SimpleNamespace(**{**{k: v for k, v in vars(copy).items() if not k.startswith("__")},
                                      "deepcopy": json_deepcopy})

_DEEPCOPY_MODULES = (
    "moto.stepfunctions.parser.asl.eval.states",
    "moto.stepfunctions.parser.asl.eval.environment",
    "moto.stepfunctions.parser.asl.component.state.exec.execute_state",
    "moto.stepfunctions.parser.asl.component.common.string.string_expression",
    "moto.stepfunctions.parser.asl.component.common.path.result_path",
)


def install() -> Callable[[], None]:
    from moto import backends
    from moto.core import errors, utils
    from moto.stepfunctions.parser.asl.component.common.path import result_path
    from moto.stepfunctions.parser.asl.utils import json_path

    originals: list[tuple[Any, str, Any]] = []

    def replace(module: Any, name: str, value: Any) -> None:
        originals.append((module, name, getattr(module, name)))
        setattr(module, name, value)

    modules = tuple(backends.list_of_moto_modules())
    replace(backends, "list_of_moto_modules", lambda: modules)
    replace(json_path, "parse", functools.lru_cache(maxsize=4096)(json_path.parse))
    replace(result_path, "parse", functools.lru_cache(maxsize=4096)(result_path.parse))
    replace(utils, "service_name_from_moto_package_name",
            functools.lru_cache(maxsize=None)(utils.service_name_from_moto_package_name))
    import importlib

    for name in _DEEPCOPY_MODULES:
        module = importlib.import_module(name)
        if getattr(module, "copy", None) is copy:
            replace(module, "copy", _FAST_COPY)
    factory = errors.ErrorLookupFactory()
    replace(errors, "ErrorLookupFactory", lambda: factory)

    def restore() -> None:
        for module, name, value in reversed(originals):
            setattr(module, name, value)

    return restore
