"""Models of the payloads the state machine hands each function (see statemachine/pipeline.asl.json)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, RootModel, Tag

from granulemap.models import RunContext


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
    """From the state machine: credentials for the run's DAAC."""

    model_config = ConfigDict(extra="ignore")
    run: RunContext


class CredentialsRefresh(BaseModel):
    """From a Processor (credentials.invoke_refresh): refresh the stored credentials of ``daac`` unless they are no
    longer the ones whose key digest is ``stale``."""

    model_config = ConfigDict(extra="forbid")
    daac: str = Field(pattern=r"^[A-Z][A-Z0-9_]{0,63}$")  # a CMR provider id: part of the stored parameter's name
    stale: str = Field(pattern=r"^[0-9a-f]{16}$")
    run: str | None = Field(default=None, max_length=80)
    """The run of the Processor that asks (an execution name): only to name it in the log lines."""


class RefreshEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refresh: CredentialsRefresh


def _credentials_caller(event: Any) -> str:
    return "refresh" if isinstance(event, dict) and "refresh" in event else "run"


class CredentialsInvocation(RootModel[Annotated[Annotated[RefreshEvent, Tag("refresh")] |
                                                Annotated[CredentialsEvent, Tag("run")],
                                                Discriminator(_credentials_caller)]]):
    """FetchCredentials' two callers: the state machine (a run's credentials) and a Processor (a refresh), told
    apart by the ``refresh`` key, so that a malformed event is told what is wrong with it as the one it is."""
