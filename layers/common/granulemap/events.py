"""Models of the payloads the state machine hands each function (see statemachine/pipeline.asl.json)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, RootModel

from granulemap.models import FailureEvent, ProcessorEvent, RunContext


class CatalogEvent(BaseModel):
    """BuildCatalog gets the raw execution input (validated by the logic, so errors name the field), its name and
    its start time (``period: "previous-month"`` is the month before it, as ``granulemap status`` says), and its ARN
    and its state machine's, to look for an earlier execution still running the same period (executions.py)."""

    model_config = ConfigDict(extra="forbid")
    input: Any
    execution: str
    started: dt.datetime | None = None
    execution_arn: str | None = None
    state_machine: str | None = None


class CredentialsEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")
    run: RunContext


class ProcessorInvocation(RootModel[FailureEvent | ProcessorEvent]):
    """Either one item to process, or (from the Map's Catch) one item's final failure to record."""
