"""glibc's malloc settings (template.yaml's GLIBC_TUNABLES) for a process that is already running.

Lambda starts every function's process with template.yaml's GLIBC_TUNABLES, and the local engine starts its worker
processes with them (granulemap/local/worker.py): glibc reads the variable once, when a process starts. template.yaml's
comment says why they are set. A process that did not start with them, such as ``granulemap process`` reducing local
files one after the other, can still get the same settings from mallopt(3). A threshold set that way is fixed, as
the tunable fixes it: glibc stops adjusting it.
"""

from __future__ import annotations

import ctypes

VARIABLE = "GLIBC_TUNABLES"
_MALLOPT_PARAMETERS = {"glibc.malloc.trim_threshold": -1, "glibc.malloc.mmap_threshold": -3}
"""The tunables mallopt(3) also sets: M_TRIM_THRESHOLD and M_MMAP_THRESHOLD, from glibc's malloc.h."""


def parse_tunables(text: str) -> dict[str, str]:
    """GLIBC_TUNABLES' ``name=value:name=value`` as a dict, in order."""
    return dict(part.split("=", 1) for part in text.split(":") if "=" in part)


def set_at_runtime(tunables: str) -> dict[str, int]:
    """Give this process the settings of ``tunables`` (a GLIBC_TUNABLES value) that mallopt(3) can set. Returns the
    settings made: none where the C library has no mallopt (macOS, Windows)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return {}
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done: dict[str, int] = {}
    for name, value in parse_tunables(tunables).items():
        parameter = _MALLOPT_PARAMETERS.get(name)
        number = int(value, 0)  # glibc reads tunables as C integers: decimal, or 0x hexadecimal
        if parameter is not None and mallopt(parameter, number) == 1:  # mallopt returns 1 on success
            done[name] = number
    return done
