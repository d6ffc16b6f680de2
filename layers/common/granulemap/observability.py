"""Powertools Logger, Tracer and Metrics: created once, shared by the handlers and the logic."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "granulemap"
"""The stack's name in AWS (template.yaml): the metrics' ``service`` dimension and every log line's ``service`` tell
two stacks of one account apart; "granulemap" elsewhere."""

logger = Logger(service=SERVICE)
metrics = Metrics(namespace="granulemap", service=SERVICE)
tracer: Tracer


def __getattr__(name: str) -> Any:
    """``tracer`` is made when first asked for (the handlers import it). Making it imports the X-Ray SDK, 0.14 s,
    which code that only logs does not need: the granulemap command imports a recipe to check a run's input before
    its local engine starts, and everything that does delays the run."""
    if name == "tracer":
        from aws_lambda_powertools import Tracer

        global tracer
        tracer = Tracer(service=SERVICE)
        return tracer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
