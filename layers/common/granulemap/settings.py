"""The environment variables template.yaml gives the functions, parsed once into a typed model."""

from __future__ import annotations

import os

from pydantic import BaseModel, Field

DAAC_REGION = "us-west-2"
"""The only region where NASA's DAAC buckets allow direct S3 reads: where samconfig.toml deploys the stack, where the
cloud commands look for it by default, and the region the local engine emulates."""


class Settings(BaseModel):
    bucket: str = Field(min_length=3)
    default_max_concurrency: int = Field(default=40, ge=1, le=10_000)
    default_tolerated_failure_percentage: float = Field(default=5.0, ge=0, le=100)
    max_range_days: int = Field(default=3660, ge=1)
    edl_username_parameter: str | None = None
    edl_password_parameter: str | None = None
    edl_token_parameter: str | None = None
    credentials_parameter_prefix: str | None = None
    """Where FetchCredentials stores the DAAC credentials (SSM): template.yaml sets it per stack, the only path its
    IAM policies grant (``credentials.parameter_name`` refuses to guess another)."""
    credentials_function: str | None = None
    """The Processor's: the FetchCredentials function it invokes to refresh the stored credentials."""
    aws_region: str | None = None


_ENV = {
    "bucket": "BUCKET_NAME",
    "default_max_concurrency": "DEFAULT_MAX_CONCURRENCY",
    "default_tolerated_failure_percentage": "DEFAULT_TOLERATED_FAILURE_PERCENTAGE",
    "max_range_days": "MAX_RANGE_DAYS",
    "edl_username_parameter": "EDL_USERNAME_PARAMETER",
    "edl_password_parameter": "EDL_PASSWORD_PARAMETER",
    "edl_token_parameter": "EDL_TOKEN_PARAMETER",
    "credentials_parameter_prefix": "CREDENTIALS_PARAMETER_PREFIX",
    "credentials_function": "CREDENTIALS_FUNCTION",
    "aws_region": "AWS_REGION",
}


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read the settings from the environment (empty values count as unset)."""
    env = os.environ if environ is None else environ
    values = {field: env[name] for field, name in _ENV.items() if env.get(name)}
    if "bucket" not in values:
        raise RuntimeError("BUCKET_NAME is not set: template.yaml gives it to every function")
    return Settings.model_validate(values)
