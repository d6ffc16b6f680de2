"""Temporary DAAC S3 credentials: obtained with Earthdata Login, stored encrypted, passed on only by reference.

FetchCredentials reads the user's Earthdata Login secrets (a token, or a username and password) from SSM
SecureString parameters named by template parameters, logs in with earthaccess, asks the DAAC's s3credentials
endpoint for temporary S3 credentials, stores them as an SSM SecureString and returns only the parameter's name,
the provider and the expiry time. Processors read the parameter and cache it; before it expires (DAAC credentials
last about an hour) a Processor asks FetchCredentials to refresh it (``refresh_stored_credentials``, invoked as a
Lambda function: ``invoke_refresh``). Processors run the recipes' code, users' own among them: in AWS they never hold
the Earthdata Login secrets, nor may they read them or write the stored credentials (template.yaml's ProcessorRole;
locally the functions run in the local engine's worker processes, on the user's own machine). No secret is ever
returned, logged or put in a message.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import random
import threading
from collections.abc import Callable, Iterator
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from granulemap.errors import CredentialsUnavailable, SourceUnavailable, TransientError, shortened
from granulemap.models import CredentialsRef, iso_time
from granulemap.observability import logger
from granulemap.settings import DAAC_REGION, Settings

REFRESH_MARGIN = dt.timedelta(minutes=15)
"""The least margin: credentials that expire sooner than this are never used (a Lambda may run 15 minutes)."""

REFRESH_SPREAD = dt.timedelta(minutes=20)
"""How far above REFRESH_MARGIN a process's own margin (``refresh_margin``) may lie.

Every Processor of a run holds credentials with one expiry (one FetchCredentials call). With one margin for all,
every warm Processor reached it at the same moment, found the stored credentials near expiry too (none had stored
new ones yet: a refresh takes a second or two) and asked for a refresh: as many FetchCredentials calls as Processors
at minute 45 of every run, each waiting for the others' (FetchCredentials logs in once for them all: see
``refresh_stored_credentials``), and as many Lambda concurrency slots taken. Margins spread over 20 minutes (DAAC
credentials last an hour) make the refreshes follow one another: the process with the widest margin has them
refreshed, and the others, reaching theirs later, re-read the parameter and take those credentials. With Processors
spread evenly over the 20 minutes, about one in 600 reaches its margin within the two seconds of another's refresh."""

REFRESH_RETRY = dt.timedelta(minutes=1)
"""When Earthdata Login or the s3credentials endpoint cannot refresh credentials that still last beyond
REFRESH_MARGIN, the Processor keeps them and asks again after this long (the items go on; an outage of the login
service fails no item until the credentials near their end)."""

S3CREDENTIALS_TIMEOUT_SECONDS = 15.0
"""Longest wait for the DAAC's s3credentials endpoint."""

RECENT_WRITE = dt.timedelta(seconds=60)
"""FetchCredentials does not log in again to replace credentials it stored this recently that still last beyond
REFRESH_MARGIN, whoever asks and how (a refresh, or a run's: a Processor runs recipe code, which may invoke it; a
backfill starts its runs together): at most one login a minute."""

REFRESH_INVOKE_TIMEOUT_SECONDS = 150.0
"""Longest wait for FetchCredentials to answer a Processor's refresh: its Timeout in template.yaml (120 s) and a cold
start's initialization."""

_CREDENTIAL_KEYS = ("accessKeyId", "secretAccessKey", "sessionToken", "expiration")
_EDL_ENV = ("EARTHDATA_TOKEN", "EARTHDATA_USERNAME", "EARTHDATA_PASSWORD")
_THROTTLED = {"ThrottlingException", "TooManyUpdates", "InternalServerError"}
_cache: dict[str, tuple[dict[str, str], dt.datetime, dt.timedelta]] = {}
"""Per parameter: the credentials this process uses, their expiry, and the margin before it at which it looks again."""
_rejected: dict[str, str] = {}
"""Per parameter, the access key id of credentials S3 refused as expired in this process: not to be used again."""
_lock = threading.Lock()


def _draw_refresh_margin() -> dt.timedelta:
    # From the OS's entropy: a forked worker shares its parent's `random` state until that is reseeded.
    return REFRESH_MARGIN + REFRESH_SPREAD * random.SystemRandom().random()


refresh_margin = _draw_refresh_margin()
"""This process's margin: its cached credentials are re-read, and the stored ones refreshed, when they expire sooner
than this. Drawn per process, between REFRESH_MARGIN and REFRESH_MARGIN + REFRESH_SPREAD (see there)."""


def _in_a_new_process() -> None:
    global refresh_margin
    refresh_margin = _draw_refresh_margin()


if hasattr(os, "register_at_fork"):  # a forked worker (the local engine's) draws its own
    os.register_at_fork(after_in_child=_in_a_new_process)


def utc_now() -> dt.datetime:
    """The clock by which credential expiry is judged (one function, so that a test can move time)."""
    return dt.datetime.now(dt.UTC)


def _ssm() -> Any:
    # Standard retry mode (up to 10 attempts, with backoff): many Processors starting at once read the parameter
    # together, and SSM's default throughput is 40 GetParameter calls a second per account and region.
    return boto3.client("ssm", config=Config(retries={"mode": "standard", "max_attempts": 10}))


def require_daac_region(provider: str | None, region: str | None) -> None:
    """Fail early (before any secret is read) when a run needs DAAC data but runs outside us-west-2."""
    if provider is None or region is None or region == DAAC_REGION:
        return
    raise CredentialsUnavailable(
        f"the run reads {provider} data from NASA's DAAC buckets, but DAAC direct S3 access works only in "
        f"{DAAC_REGION} and this stack runs in {region}: deploy the stack in {DAAC_REGION} "
        f"(samconfig.toml's default region)"
    )


def _read_secret(name: str, what: str) -> str:
    """One Earthdata Login secret from an SSM SecureString parameter; errors name the parameter, never the value."""
    from aws_lambda_powertools.utilities import parameters

    try:
        # Read anew each time (a login or two a run, at most one a minute): a warm FetchCredentials kept a replaced
        # password or token for Powertools' 5 minutes, and the run started again at once after it failed again.
        return parameters.get_parameter(name, decrypt=True, force_fetch=True)  # type: ignore[return-value]
    except parameters.exceptions.GetParameterError as exc:
        cause = exc.__context__  # Powertools wraps the ClientError without chaining it as the cause
        code = cause.response.get("Error", {}).get("Code", "") if isinstance(cause, ClientError) else ""
        if code in _THROTTLED:
            raise TransientError(f"SSM throttled reading the Earthdata Login {what} parameter {name}") from None
        if code == "ParameterNotFound":
            raise CredentialsUnavailable(
                f"the Earthdata Login {what} is not stored: SSM parameter {name} does not exist; create it as "
                f"README.md says (\"Store your Earthdata Login credentials in SSM\": aws ssm put-parameter --type "
                f"SecureString --name {name} --value file:///dev/stdin, the value on standard input, not on the "
                f"command line)"
            ) from None
        raise CredentialsUnavailable(
            f"cannot read the Earthdata Login {what} from SSM parameter {name}: {code or type(exc).__name__}"
        ) from None


def _edl_secrets(settings: Settings) -> dict[str, str]:
    """earthaccess's environment-strategy variables, read from the SSM parameters the settings name."""
    if settings.edl_token_parameter:
        # A token has no white space: a newline stored after it (a value typed and ended with Enter) made requests
        # refuse the Authorization header, reported as the endpoint not answering.
        token = _read_secret(settings.edl_token_parameter, "token").strip()
        if not token:
            raise CredentialsUnavailable(f"the Earthdata Login token in SSM parameter {settings.edl_token_parameter} "
                                         "is empty (white space only): store the token itself")
        if any(c.isspace() or not c.isprintable() for c in token):  # a pasted token wrapped over lines, say
            raise CredentialsUnavailable(f"the Earthdata Login token in SSM parameter {settings.edl_token_parameter} "
                                         "has a line break, a space or another character no token has: store it "
                                         "on one line, as Earthdata Login shows it")
        return {"EARTHDATA_TOKEN": token}
    if settings.edl_username_parameter and settings.edl_password_parameter:
        return {
            "EARTHDATA_USERNAME": _read_secret(settings.edl_username_parameter, "username"),
            "EARTHDATA_PASSWORD": _read_secret(settings.edl_password_parameter, "password"),
        }
    raise CredentialsUnavailable(
        "no Earthdata Login credentials configured: set the EdlTokenParameter or the EdlUsernameParameter and "
        "EdlPasswordParameter template parameters to the names of SSM SecureString parameters"
    )


TOKEN_WARNING = dt.timedelta(days=35)
"""A stored Earthdata Login token that expires sooner than this will not last until the next monthly run (the
schedule runs on the 5th: runs at most 31 days apart, plus a margin): FetchCredentials warns, and the metric it
emits (EarthdataTokenDaysLeft) sets off template.yaml's alarm."""


def token_expiry(token: str) -> dt.datetime | None:
    """When an Earthdata Login user token expires: the ``exp`` claim of its JWT payload, read, not verified (Earthdata
    Login verifies the token); None for a token that is no JWT or names no expiry."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        return dt.datetime.fromtimestamp(int(payload["exp"]), dt.UTC)
    except (ValueError, KeyError, TypeError, OverflowError, OSError, RecursionError):  # base64/JSON/UTF-8: ValueError
        return None


def _refuse_an_expired_token(secrets: dict[str, str], settings: Settings, now: dt.datetime) -> None:
    expires = token_expiry(secrets.get("EARTHDATA_TOKEN", ""))
    if expires is not None and expires <= now:
        raise CredentialsUnavailable(
            f"the Earthdata Login token in SSM parameter {settings.edl_token_parameter} expired on "
            f"{expires:%Y-%m-%d %H:%M} UTC: generate a new one at urs.earthdata.nasa.gov and store it (README, "
            "\"Store your Earthdata Login credentials in SSM\": aws ssm put-parameter --overwrite ...), then start the "
            "run again")


def edl_token_time_left(settings: Settings, now: dt.datetime | None = None) -> dt.timedelta | None:
    """How long the stored Earthdata Login token has left; None without a token, or for one that names no expiry.
    Logs a warning when that is less than TOKEN_WARNING (the token would not last until the next monthly run)."""
    if not settings.edl_token_parameter:
        return None
    expires = token_expiry(_edl_secrets(settings)["EARTHDATA_TOKEN"])  # the read is Powertools' cached one
    if expires is None:
        logger.info("the stored Earthdata Login token names no expiry (not a JWT): its lifetime is not watched",
                    extra={"parameter": settings.edl_token_parameter})
        return None
    left = expires - (now or utc_now())
    if left < TOKEN_WARNING:
        logger.warning(
            f"the Earthdata Login token in SSM parameter {settings.edl_token_parameter} expires on "
            f"{expires:%Y-%m-%d %H:%M} UTC, in {left / dt.timedelta(days=1):.1f} days: before the next monthly run. "
            "Generate a new one at urs.earthdata.nasa.gov and store it with aws ssm put-parameter --overwrite "
            "(README, \"Store your Earthdata Login credentials in SSM\")",
            extra={"parameter": settings.edl_token_parameter, "expires": expires.isoformat()})
    return left


@contextlib.contextmanager
def _edl_environment(secrets: dict[str, str]) -> Iterator[None]:
    """Earthdata Login secrets in earthaccess's environment variables for the duration of one login only."""
    saved = {k: os.environ.get(k) for k in _EDL_ENV}
    for k in _EDL_ENV:
        os.environ.pop(k, None)
    os.environ.update(secrets)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def s3credentials_endpoint(provider: str) -> str:
    """The s3credentials URL of the DAAC serving a cloud provider (e.g. POCLOUD), from earthaccess's DAAC table."""
    from earthaccess.daac import DAACS

    for daac in DAACS:
        if provider in daac["cloud-providers"] and daac.get("s3-credentials"):
            return str(daac["s3-credentials"])
    raise CredentialsUnavailable(f"no s3credentials endpoint is known for the cloud provider {provider}")


def _stored(settings: Settings) -> tuple[str, str]:
    """Which stored Earthdata Login secrets a login uses, named by their SSM parameters (``_edl_secrets``), and the
    pronoun for them."""
    if settings.edl_token_parameter:
        return f"token stored in SSM parameter {settings.edl_token_parameter}", "it"
    return (f"username and password stored in SSM parameters {settings.edl_username_parameter} and "
            f"{settings.edl_password_parameter}", "them")


def _unsendable(settings: Settings) -> str:
    stored, them = _stored(settings)
    return (f"the {stored} cannot be sent to Earthdata Login: a character in {them} is outside Latin-1 (ISO-8859-1), "
            "the only characters HTTP authentication carries")


def _login(settings: Settings) -> Any:
    """An earthaccess Auth logged in to Earthdata Login with the stored secrets."""
    import earthaccess
    import requests
    from earthaccess.exceptions import LoginAttemptFailure, LoginStrategyUnavailable

    auth = earthaccess.Auth()
    # earthaccess raises the same LoginAttemptFailure for any answer but 2xx from find_or_create_token: an outage
    # (5xx) or throttling (429) must be retried, not reported as a wrong password, so the answer's status is kept.
    statuses: list[int] = []
    find_or_create = getattr(auth, "_find_or_create_token", None)
    if find_or_create is not None:
        def recording() -> Any:
            response = find_or_create()
            statuses.append(response.status_code)
            return response

        auth._find_or_create_token = recording
    secrets = _edl_secrets(settings)
    _refuse_an_expired_token(secrets, settings, utc_now())
    stored, them = _stored(settings)
    with _edl_environment(secrets):
        try:
            auth.login(strategy="environment")
        except requests.RequestException as exc:
            raise SourceUnavailable(f"Earthdata Login did not answer: {type(exc).__name__}") from None
        except (LoginAttemptFailure, LoginStrategyUnavailable):
            if statuses and (statuses[-1] == 429 or statuses[-1] >= 500):
                raise SourceUnavailable(f"Earthdata Login answered {statuses[-1]} (an outage or throttling, not a "
                                        "refusal of the stored credentials)") from None
            raise CredentialsUnavailable(f"Earthdata Login refused the {stored}: check {them}") from None
        except UnicodeError:  # its message quotes the character and its place in the secret: not passed on
            raise CredentialsUnavailable(_unsendable(settings)) from None
        except Exception as exc:  # noqa: BLE001 - an error of earthaccess's: its message may quote the secrets
            raise CredentialsUnavailable(f"logging in to Earthdata Login with the {stored} failed: "
                                         f"{type(exc).__name__} (its message is not shown: it may quote the "
                                         "secrets)") from None
    if not auth.authenticated:
        raise CredentialsUnavailable("Earthdata Login did not authenticate with the stored credentials")
    return auth


def request_daac_credentials(provider: str, settings: Settings) -> dict[str, str]:
    """New temporary S3 credentials for a DAAC's cloud provider (e.g. POCLOUD, NSIDC_CPRD) from its s3credentials."""
    import requests

    endpoint = s3credentials_endpoint(provider)
    auth = _login(settings)
    try:
        with auth.get_session() as session:
            response = session.get(endpoint, timeout=S3CREDENTIALS_TIMEOUT_SECONDS)
    except requests.RequestException as exc:
        raise SourceUnavailable(f"the {provider} s3credentials endpoint did not answer: {type(exc).__name__}") from None
    except UnicodeError:  # a token's character in the Authorization header: its message quotes it
        raise CredentialsUnavailable(_unsendable(settings)) from None
    status = response.status_code
    if status == 429 or status >= 500:
        raise SourceUnavailable(f"the {provider} s3credentials endpoint {endpoint} answered {status}")
    if status in (401, 403):
        raise CredentialsUnavailable(
            f"the {provider} s3credentials endpoint refused the Earthdata Login credentials ({status}): check the "
            "stored token or password, and accept the DAAC's EULA and authorize its application in Earthdata Login"
        )
    try:
        creds = response.json() if status == 200 else None
    except ValueError:
        creds = None
    if not isinstance(creds, dict) or any(not creds.get(k) for k in _CREDENTIAL_KEYS):
        raise CredentialsUnavailable(
            f"the {provider} s3credentials endpoint {endpoint} answered {status} without temporary credentials"
        )
    return {k: str(creds[k]) for k in _CREDENTIAL_KEYS}


def parse_expiration(value: str) -> dt.datetime:
    """DAAC endpoints give e.g. '2022-01-01 01:00:00+00:00' (UTC)."""
    return iso_time(value)


def parameter_name(provider: str, settings: Settings) -> str:
    if not settings.credentials_parameter_prefix:
        raise CredentialsUnavailable("CREDENTIALS_PARAMETER_PREFIX is not set: template.yaml gives FetchCredentials "
                                     "and the Processor the stack's SSM path for the DAAC credentials")
    return f"{settings.credentials_parameter_prefix.rstrip('/')}/{provider}"


def store_credentials(provider: str, creds: dict[str, str], settings: Settings) -> CredentialsRef:
    """Write the credentials to their SecureString parameter; return the reference (never the values)."""
    name = parameter_name(provider, settings)
    try:
        _ssm().put_parameter(
            Name=name, Value=json.dumps(creds), Type="SecureString", Overwrite=True,
            Description=f"granulemap: temporary {provider} S3 credentials, refreshed before they expire",
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in _THROTTLED:
            raise TransientError(f"SSM throttled storing {name}") from None
        raise
    return CredentialsRef(parameter=name, daac=provider, expires=parse_expiration(creds["expiration"]))


def fetch_credentials(provider: str | None, settings: Settings) -> CredentialsRef | None:
    """FetchCredentials: a reference to fresh stored credentials, or None when the run reads no DAAC data."""
    require_daac_region(provider, settings.aws_region)
    if provider is None:
        return None
    ref = store_credentials(provider, request_daac_credentials(provider, settings), settings)
    logger.info("stored temporary S3 credentials",
                extra={"parameter": ref.parameter, "expires": ref.expires.isoformat()})
    return ref


def credentials_for_run(provider: str | None, settings: Settings, now: dt.datetime | None = None,
                        ) -> CredentialsRef | None:
    """FetchCredentials for a run: ``fetch_credentials``, unless the stored credentials were written less than
    RECENT_WRITE ago and last beyond REFRESH_MARGIN (runs started together, or a run event sent by recipe code):
    those are the answer, without a login."""
    if provider is not None:
        require_daac_region(provider, settings.aws_region)
        name = parameter_name(provider, settings)
        stored, written = _stored_if_any(name)
        if stored is not None and _written_lately(stored, written, now or utc_now()):
            expires = parse_expiration(stored["expiration"])
            logger.info("the credentials stored less than a minute ago are this run's too",
                        extra={"parameter": name, "expires": expires.isoformat()})
            return CredentialsRef(parameter=name, daac=provider, expires=expires)
    return fetch_credentials(provider, settings)


def _written_lately(stored: dict[str, str], written: dt.datetime | None, now: dt.datetime) -> bool:
    """Whether stored credentials were written less than RECENT_WRITE ago and last beyond REFRESH_MARGIN: no login
    replaces them."""
    return (written is not None and now - written < RECENT_WRITE
            and parse_expiration(stored["expiration"]) - now > REFRESH_MARGIN)


def _stored_if_any(parameter: str) -> tuple[dict[str, str] | None, dt.datetime | None]:
    """``_get_stored``, or (None, None) when the parameter holds no credentials (not stored yet, or any more, or
    damaged): a login writes them anew."""
    try:
        return _get_stored(parameter)
    except CredentialsUnavailable:
        return None, None


def _read_stored(parameter: str) -> dict[str, str]:
    return _get_stored(parameter)[0]


def _get_stored(parameter: str) -> tuple[dict[str, str], dt.datetime | None]:
    """The stored credentials and when they were written."""
    try:
        found = _ssm().get_parameter(Name=parameter, WithDecryption=True)["Parameter"]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code in _THROTTLED:
            raise TransientError(f"SSM throttled reading {parameter}") from None
        if code == "ParameterNotFound":
            raise CredentialsUnavailable(
                f"the temporary credentials parameter {parameter} does not exist: FetchCredentials stores it"
            ) from None
        raise
    try:  # what a person or a half-finished write may have left: not credentials
        stored = json.loads(found["Value"])
        if not isinstance(stored, dict) or not all(isinstance(stored.get(key), str) for key in _CREDENTIAL_KEYS):
            raise ValueError("not the credentials' fields")
        parse_expiration(stored["expiration"])
    except ValueError:
        raise CredentialsUnavailable(
            f"the temporary credentials parameter {parameter} does not hold DAAC credentials (JSON with "
            f"{', '.join(_CREDENTIAL_KEYS)}): FetchCredentials writes it anew at a run's start (start the run again)"
        ) from None
    return stored, found.get("LastModifiedDate")


def key_digest(creds: dict[str, str]) -> str:
    """Names a set of credentials without giving any part of them: the first 16 hex digits of the SHA-256 of the
    access key id. What a Processor tells FetchCredentials of the credentials it found stale."""
    return hashlib.sha256(creds.get("accessKeyId", "").encode()).hexdigest()[:16]


def refresh_stored_credentials(provider: str, stale: str, settings: Settings,
                               now: dt.datetime | None = None) -> CredentialsRef:
    """FetchCredentials asked by a Processor to refresh the stored credentials it found near expiry or refused by S3
    (``stale``: their ``key_digest``). It asks Earthdata Login only when the parameter still holds those, holds
    credentials expiring within REFRESH_MARGIN, or holds none: when another Processor's request has already replaced
    them, the stored ones are the answer (refreshes asked for together log in once, not once each). Credentials
    stored less than RECENT_WRITE ago that last beyond REFRESH_MARGIN are the answer too, stale or not."""
    name = parameter_name(provider, settings)
    now = now or utc_now()
    stored, written = _stored_if_any(name)
    if stored is not None:
        expires = parse_expiration(stored["expiration"])
        lasting = expires - now > REFRESH_MARGIN
        if lasting and key_digest(stored) != stale:
            logger.info("the stored credentials were refreshed since the Processor read them: kept",
                        extra={"parameter": name, "expires": expires.isoformat()})
            return CredentialsRef(parameter=name, daac=provider, expires=expires)
        if _written_lately(stored, written, now):
            logger.warning("refresh refused: the stored credentials were written less than a minute ago and last "
                           "until %s", expires.isoformat(), extra={"parameter": name})
            return CredentialsRef(parameter=name, daac=provider, expires=expires)
    ref = fetch_credentials(provider, settings)
    assert ref is not None  # a provider was given
    return ref


Refresh = Callable[[str, str], CredentialsRef]
"""How a Processor gets the stored credentials refreshed: (provider, stale key digest) → where they now are."""

_FETCHER_ERRORS: dict[str, type[Exception]] = {
    kind.__name__: kind for kind in (CredentialsUnavailable, SourceUnavailable, TransientError)}
"""FetchCredentials' errors a refresh passes on as themselves (an outage stays an outage, a refusal a refusal)."""


def invoke_refresh(function: str, provider: str, stale: str, run: str | None = None) -> CredentialsRef:
    """Ask the FetchCredentials function (its ARN, or name) to refresh the stored credentials of ``provider``
    (``refresh_stored_credentials``) and wait for its answer. Its errors come back as the same errors; the Lambda
    service's throttling as TransientError and its failure to run the function (a timeout, the runtime's own errors:
    ``Sandbox.*``, ``Runtime.*``, ``Lambda.*``) as SourceUnavailable, both retried; anything else (a request it
    refused, an error in its code) as CredentialsUnavailable, which is not."""
    # One attempt: an invocation is not idempotent (a retry after a read timeout would log in again), and what fails
    # is kept-or-retried by load_credentials and the state machine's Retry.
    client = boto3.client("lambda", config=Config(read_timeout=REFRESH_INVOKE_TIMEOUT_SECONDS,
                                                  retries={"mode": "standard", "max_attempts": 1}))
    request = {"refresh": {"daac": provider, "stale": stale, **({"run": run} if run else {})}}
    try:
        answer = client.invoke(FunctionName=function, Payload=json.dumps(request).encode())
        body = json.loads(answer["Payload"].read() or b"null")
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("TooManyRequestsException", "ServiceException") or code.endswith("LimitExceededException"):
            raise TransientError(f"Lambda could not run FetchCredentials ({function}) now: {code}") from None
        raise CredentialsUnavailable(f"cannot invoke FetchCredentials ({function}) to refresh the {provider} "
                                     f"credentials: {code or type(exc).__name__}") from None
    except BotoCoreError as exc:  # no answer from the Lambda service in time
        raise SourceUnavailable(f"FetchCredentials ({function}) did not answer: {type(exc).__name__}") from None
    if answer.get("FunctionError"):
        kind = body.get("errorType", "") if isinstance(body, dict) else ""
        message = shortened(str(body.get("errorMessage", "") if isinstance(body, dict) else body))
        error = _FETCHER_ERRORS.get(kind)
        if error is not None:
            raise error(f"FetchCredentials: {message}")
        failed = SourceUnavailable if kind.startswith(("Sandbox.", "Runtime.", "Lambda.")) else CredentialsUnavailable
        raise failed(f"FetchCredentials failed refreshing the {provider} credentials: {kind or 'error'}: {message}")
    return CredentialsRef.model_validate(body)


def refresher(settings: Settings, run: str | None = None, now: dt.datetime | None = None) -> Refresh:
    """A Processor's way to refresh: invoke the FetchCredentials function the settings name (CREDENTIALS_FUNCTION,
    as template.yaml gives it to the Processor), naming the ``run`` it works for; without one (a script, a test), in
    this process with the settings' own Earthdata Login parameters (at ``now``, if given: a test's time)."""
    function = settings.credentials_function
    if function:
        return lambda provider, stale: invoke_refresh(function, provider, stale, run)
    if os.environ.get("AWS_EXECUTION_ENV", "").startswith("AWS_Lambda_"):  # Lambda's runtime (not the local engine)
        raise CredentialsUnavailable("CREDENTIALS_FUNCTION is not set: template.yaml gives the Processor the "
                                     "FetchCredentials function that refreshes the credentials (deploy it again)")
    return lambda provider, stale: refresh_stored_credentials(provider, stale, settings, now=now)


def load_credentials(ref: CredentialsRef, settings: Settings, now: dt.datetime | None = None,
                     refresh: Refresh | None = None) -> dict[str, str]:
    """The credentials behind ``ref``: cached in the process; re-read, or refreshed, near expiry.

    A Processor whose cached credentials are near expiry (within its own ``refresh_margin``), or that has none cached
    (a new one, or after ``forget_cached``), first re-reads the parameter. It asks for a refresh (``refresh``, by
    default ``refresher(settings)``: FetchCredentials) only when the stored credentials are the very ones it holds (no
    other Processor has refreshed them yet), expire within REFRESH_MARGIN, or are the ones S3 refused as expired in
    this process; then it reads the parameter again. Credentials it takes or gets that already lie within its margin
    (a new Processor late in their life; a DAAC whose credentials last less than the margin) are kept until
    REFRESH_MARGIN instead: they would otherwise be refreshed again at every read. When the refresh fails (an outage
    of Earthdata Login or of the s3credentials endpoint, throttling, a refusal, an answer without credentials),
    credentials that still last beyond REFRESH_MARGIN are kept, and asked for again after REFRESH_RETRY.
    """
    given, now = now, now or utc_now()
    with _lock:
        cached = _cache.get(ref.parameter)
        if cached and cached[1] - now > cached[2]:
            return cached[0]
        creds = _read_stored(ref.parameter)
        expires = parse_expiration(creds["expiration"])
        refused = creds.get("accessKeyId") == _rejected.get(ref.parameter)
        held = cached is not None and creds.get("accessKeyId") == cached[0].get("accessKeyId")
        if refused or expires - now <= REFRESH_MARGIN or (held and expires - now <= refresh_margin):
            logger.info("temporary S3 credentials near expiry: refreshing",
                        extra={"parameter": ref.parameter, "refused_by_s3": refused})
            try:
                stale = key_digest(creds)
                fresh = (refresh or refresher(settings, now=given))(ref.daac, stale)
                creds = _read_stored(fresh.parameter)
                if key_digest(creds) == stale:  # the parameter answered with the old ones (a read racing the write?)
                    raise TransientError(f"{fresh.parameter} still holds the credentials FetchCredentials replaced")
            except Exception as exc:  # an outage, throttling, a refusal, an answer without credentials
                now = given or utc_now()  # the refresh may have taken a while: judge what is left now
                if refused or expires - now <= REFRESH_MARGIN:
                    raise
                logger.warning("could not refresh temporary S3 credentials: keeping the stored ones, which last until "
                               "%s", expires.isoformat(), extra={"parameter": ref.parameter, "error": type(exc).__name__,
                                                                  "cause": shortened(str(exc))})
                _cache[ref.parameter] = (creds, expires, max(REFRESH_MARGIN, expires - now - REFRESH_RETRY))
                return creds
            _rejected.pop(ref.parameter, None)
            expires = parse_expiration(creds["expiration"])
        _cache[ref.parameter] = (creds, expires, refresh_margin if expires - now > refresh_margin else REFRESH_MARGIN)
        return creds


def clear_caches() -> None:
    """Forget every cached and refused credential of this process (tests start each case from nothing)."""
    with _lock:
        _cache.clear()
        _rejected.clear()


def forget_cached(ref: CredentialsRef, rejected: dict[str, str] | None = None) -> None:
    """Drop this process's cached copy of the credentials behind ``ref``: the next ``load_credentials`` re-reads the
    parameter. ``rejected``: the credentials S3 refused as expired; if the parameter still holds those same ones,
    the next load has them refreshed whatever their stated expiration (clocks disagree, or the DAAC ended them
    early)."""
    with _lock:
        _cache.pop(ref.parameter, None)
        if rejected and rejected.get("accessKeyId"):
            _rejected[ref.parameter] = rejected["accessKeyId"]
