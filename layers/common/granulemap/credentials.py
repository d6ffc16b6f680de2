"""Temporary DAAC S3 credentials: obtained with Earthdata Login, stored encrypted, passed on only by reference.

FetchCredentials reads the user's Earthdata Login secrets (username/password or token) from SSM SecureString
parameters, asks the DAAC's s3credentials endpoint (through earthaccess) for temporary S3 credentials, stores them
as an SSM SecureString and returns only the parameter's name and the expiry time. Processors read the parameter,
cache it, and refresh it (with the same code) shortly before it expires: DAAC credentials last about an hour.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import boto3

from granulemap.errors import CredentialsUnavailable, SourceUnavailable
from granulemap.models import CredentialsRef
from granulemap.observability import logger
from granulemap.settings import Settings

REFRESH_MARGIN = dt.timedelta(minutes=10)
"""Credentials that expire sooner than this are refreshed before use."""

_CREDENTIAL_KEYS = ("accessKeyId", "secretAccessKey", "sessionToken", "expiration")
_cache: dict[str, tuple[dict[str, str], dt.datetime]] = {}
_lock = threading.Lock()


def _ssm() -> Any:
    return boto3.client("ssm")


def _get_secure(name: str) -> str:
    from aws_lambda_powertools.utilities import parameters

    try:
        return parameters.get_parameter(name, decrypt=True, max_age=300)  # type: ignore[return-value]
    except parameters.exceptions.GetParameterError as exc:
        raise CredentialsUnavailable(f"cannot read SSM parameter {name}: {exc.__cause__ or exc}") from None


@contextlib.contextmanager
def _edl_environment(settings: Settings) -> Iterator[None]:
    """Earthdata Login secrets in earthaccess's environment variables for the duration of one login only."""
    values: dict[str, str] = {}
    if settings.edl_token_parameter:
        values["EARTHDATA_TOKEN"] = _get_secure(settings.edl_token_parameter)
    elif settings.edl_username_parameter and settings.edl_password_parameter:
        values["EARTHDATA_USERNAME"] = _get_secure(settings.edl_username_parameter)
        values["EARTHDATA_PASSWORD"] = _get_secure(settings.edl_password_parameter)
    else:
        raise CredentialsUnavailable(
            "no Earthdata Login credentials configured: set the EdlTokenParameter or the EdlUsernameParameter and "
            "EdlPasswordParameter template parameters to the names of SSM SecureString parameters"
        )
    saved = {k: os.environ.get(k) for k in ("EARTHDATA_TOKEN", "EARTHDATA_USERNAME", "EARTHDATA_PASSWORD")}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def request_daac_credentials(provider: str, settings: Settings) -> dict[str, str]:
    """New temporary S3 credentials for a DAAC's cloud provider (e.g. POCLOUD, NSIDC_CPRD) from its s3credentials."""
    import earthaccess
    import requests

    with _edl_environment(settings):
        auth = earthaccess.Auth()
        try:
            auth.login(strategy="environment")
            creds = auth.get_s3_credentials(provider=provider)
        except requests.RequestException as exc:
            raise SourceUnavailable(f"Earthdata Login or the {provider} s3credentials endpoint failed: "
                                    f"{type(exc).__name__}") from None
        except Exception as exc:  # earthaccess raises its own LoginAttemptFailure etc.
            raise CredentialsUnavailable(f"Earthdata Login refused the credentials: {type(exc).__name__}") from None
    if not creds or any(k not in creds for k in _CREDENTIAL_KEYS):
        raise CredentialsUnavailable(
            f"the {provider} s3credentials endpoint returned no credentials: accept the DAAC's EULA in Earthdata Login"
        )
    return {k: creds[k] for k in _CREDENTIAL_KEYS}


def parse_expiration(value: str) -> dt.datetime:
    """DAAC endpoints give e.g. '2022-01-01 01:00:00+00:00'."""
    when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def parameter_name(provider: str, settings: Settings) -> str:
    return f"{settings.credentials_parameter_prefix.rstrip('/')}/{provider}"


def store_credentials(provider: str, creds: dict[str, str], settings: Settings) -> CredentialsRef:
    name = parameter_name(provider, settings)
    _ssm().put_parameter(Name=name, Value=json.dumps(creds), Type="SecureString", Overwrite=True)
    return CredentialsRef(parameter=name, daac=provider, expires=parse_expiration(creds["expiration"]))


def fetch_credentials(provider: str | None, settings: Settings) -> CredentialsRef | None:
    """FetchCredentials: returns a reference to fresh stored credentials, or None when the run reads no DAAC data."""
    if provider is None:
        return None
    ref = store_credentials(provider, request_daac_credentials(provider, settings), settings)
    logger.info("stored temporary S3 credentials", extra={"parameter": ref.parameter, "expires": ref.expires.isoformat()})
    return ref


def load_credentials(ref: CredentialsRef, settings: Settings, now: dt.datetime | None = None) -> dict[str, str]:
    """The credentials behind ``ref``: cached in the process, re-read or refreshed when they near expiry."""
    now = now or dt.datetime.now(dt.UTC)
    with _lock:
        cached = _cache.get(ref.parameter)
        if cached and cached[1] - now > REFRESH_MARGIN:
            return cached[0]
        value = _ssm().get_parameter(Name=ref.parameter, WithDecryption=True)["Parameter"]["Value"]
        creds = json.loads(value)
        expires = parse_expiration(creds["expiration"])
        if expires - now <= REFRESH_MARGIN:
            logger.info("temporary S3 credentials near expiry: refreshing", extra={"parameter": ref.parameter})
            creds = request_daac_credentials(ref.daac, settings)
            store_credentials(ref.daac, creds, settings)
            expires = parse_expiration(creds["expiration"])
        _cache[ref.parameter] = (creds, expires)
        return creds


def forget_cached(ref: CredentialsRef) -> None:
    with _lock:
        _cache.pop(ref.parameter, None)
