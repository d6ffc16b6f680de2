"""``granulemap estimate``: the expected AWS cost of a run (filled in by the performance work)."""

from __future__ import annotations

import argparse


def add_estimate_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``granulemap estimate`` on the ``granulemap`` parser."""
