"""Commands that drive a deployed stack: start, status, results (filled in by the cloud-path work)."""

from __future__ import annotations

import argparse


def add_cloud_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the cloud subcommands on the ``granulemap`` parser."""
