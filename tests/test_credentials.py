"""FetchCredentials and the Processors' credential cache: Earthdata Login and the DAAC's s3credentials endpoint
answered with `responses`, SSM by moto.

The answers have the shapes the real services give (EDL's find_or_create_token: access_token, token_type,
expiration_date; s3credentials: accessKeyId, secretAccessKey, sessionToken, expiration), with values made up here.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import re
from typing import Any
from unittest import mock

import boto3
import pytest
import responses
from moto import mock_aws

from granulemap import credentials
from granulemap.errors import CredentialsUnavailable, SourceUnavailable
from granulemap.local import worker
from granulemap.models import CredentialsRef
from granulemap.settings import Settings

from conftest import ROOT, LogCapture

REGION = "us-west-2"
EDL_TOKEN_URL = "https://urs.earthdata.nasa.gov/api/users/find_or_create_token"
PODAAC_S3CREDENTIALS = "https://archive.podaac.earthdata.nasa.gov/s3credentials"
USERNAME_PARAMETER = "/granulemap/edl/username"
PASSWORD_PARAMETER = "/granulemap/edl/password"
TOKEN_PARAMETER = "/granulemap/edl/token"
PREFIX = "/granulemap/test-stack/daac-credentials"


def daac_credentials(tag: str, expiration: str) -> dict[str, str]:
    """An s3credentials answer whose three secret values contain ``tag``."""
    return {"accessKeyId": f"ASIA{tag.upper()}KEY", "secretAccessKey": f"{tag}-secret-access-key",
            "sessionToken": f"{tag}-session-token", "expiration": expiration}


EDL_REFUSAL = {"error": "invalid_credentials", "error_description": "Invalid user credentials"}
"""Earthdata Login's answer (401) to a token request without valid credentials."""


def _without_authorization(request: Any) -> tuple[bool, str]:
    present = "Authorization" in request.headers
    return (not present, "request carries Authorization" if present else "")


def replay_edl(rs: responses.RequestsMock, *, username: str | None, password: str | None, edl_token: str,
               creds: dict[str, str], s3credentials_status: int = 200) -> None:
    """Earthdata Login (only for username/password) and PO.DAAC's s3credentials, which wants the bearer token.

    earthaccess first asks EDL for a token without credentials and sends them (HTTP basic) only in answer to EDL.
    """
    if username is not None:
        basic = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        rs.post(EDL_TOKEN_URL, status=401, json=EDL_REFUSAL, match=[_without_authorization])
        rs.post(EDL_TOKEN_URL, json={"access_token": edl_token, "token_type": "Bearer",
                                     "expiration_date": "11/19/2030"},
                match=[responses.matchers.header_matcher({"Authorization": basic})])
    rs.get(PODAAC_S3CREDENTIALS, status=s3credentials_status,
           json=creds if s3credentials_status == 200 else {"error": "unauthorized"},
           match=[responses.matchers.header_matcher({"Authorization": f"Bearer {edl_token}"})])


def put_secure(ssm: Any, name: str, value: str) -> None:
    ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)


def reset_caches() -> None:
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()
    parameters.base.DEFAULT_PROVIDERS.clear()  # its SSM client may belong to another test's mock
    credentials.clear_caches()


@pytest.fixture
def ssm(monkeypatch: pytest.MonkeyPatch):
    # The least refresh margin, unless a test sets its own (each process draws one above it: tested below).
    monkeypatch.setattr(credentials, "refresh_margin", credentials.REFRESH_MARGIN)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    reset_caches()
    with mock_aws():
        yield boto3.client("ssm", region_name=REGION)
    reset_caches()


def password_settings(**overrides: Any) -> Settings:
    values = {"bucket": "granulemap-test", "edl_username_parameter": USERNAME_PARAMETER,
              "edl_password_parameter": PASSWORD_PARAMETER, "credentials_parameter_prefix": PREFIX,
              "aws_region": REGION, **overrides}
    return Settings.model_validate(values)


# ---- fetch ----------------------------------------------------------------------------------------------------
def test_fetch_logs_in_stores_the_credentials_encrypted_and_returns_only_a_reference(ssm) -> None:
    put_secure(ssm, USERNAME_PARAMETER, "edl-user-7f3a")
    put_secure(ssm, PASSWORD_PARAMETER, "edl-password-7f3a")
    creds = daac_credentials("first", "2030-01-01 01:00:00+00:00")
    with responses.RequestsMock() as rs:  # every registered answer must be asked for: login, then s3credentials
        replay_edl(rs, username="edl-user-7f3a", password="edl-password-7f3a", edl_token="edl-bearer-7f3a",
                   creds=creds)
        ref = credentials.fetch_credentials("POCLOUD", password_settings())

    assert ref == CredentialsRef(parameter=f"{PREFIX}/POCLOUD", daac="POCLOUD",
                                 expires=dt.datetime(2030, 1, 1, 1, tzinfo=dt.UTC))
    (stored,) = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [ref.parameter]}])["Parameters"]
    assert stored["Type"] == "SecureString"
    value = ssm.get_parameter(Name=ref.parameter, WithDecryption=True)["Parameter"]["Value"]
    assert json.loads(value) == creds
    returned = ref.model_dump_json()
    for secret in (*creds.values(), "edl-user-7f3a", "edl-password-7f3a", "edl-bearer-7f3a"):
        if secret != creds["expiration"]:
            assert secret not in returned


@pytest.mark.parametrize("stored", ["edl-token-91c2", "edl-token-91c2\n", " edl-token-91c2\r\n"])
def test_fetch_with_an_edl_token_needs_no_login_request(ssm, stored: str) -> None:
    """A newline stored after the token (typed, ended with Enter) is not part of it: requests refused the header."""
    put_secure(ssm, TOKEN_PARAMETER, stored)
    creds = daac_credentials("tok", "2030-01-01 01:00:00+00:00")
    with responses.RequestsMock() as rs:
        replay_edl(rs, username=None, password=None, edl_token="edl-token-91c2", creds=creds)
        ref = credentials.fetch_credentials("POCLOUD", password_settings(edl_token_parameter=TOKEN_PARAMETER))
        assert [c.request.url for c in rs.calls] == [PODAAC_S3CREDENTIALS]
    assert json.loads(ssm.get_parameter(Name=ref.parameter, WithDecryption=True)["Parameter"]["Value"]) == creds


def edl_jwt(expires: dt.datetime, uid: str = "someone") -> str:
    """A token shaped as Earthdata Login's: a JWT (base64url header.payload.signature, no padding) whose payload's
    ``exp`` is ``expires``."""
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    claims = {"type": "User", "uid": uid, "exp": int(expires.timestamp()),
              "iat": int((expires - dt.timedelta(days=60)).timestamp()), "iss": "https://urs.earthdata.nasa.gov"}
    return ".".join([part({"typ": "JWT", "origin": "Earthdata Login", "alg": "RS256"}), part(claims), "c2lnbmF0dXJl"])


@pytest.mark.parametrize("uid", ["a", "ab", "abc", "abcd"])  # payloads of every length modulo 4: all paddings
def test_a_token_s_expiry_is_the_exp_claim_of_its_jwt_payload(uid: str) -> None:
    expires = dt.datetime(2031, 2, 3, 4, 5, 6, tzinfo=dt.UTC)
    assert credentials.token_expiry(edl_jwt(expires, uid)) == expires


@pytest.mark.parametrize("token", [
    "edl-token-91c2",  # no JWT
    "a.%%%.c",  # not base64
    "a." + base64.urlsafe_b64encode(b"[1, 2]").decode() + ".c",  # a payload that is no object
    "a." + base64.urlsafe_b64encode(b'{"uid": "x"}').decode() + ".c",  # no exp
    "a." + base64.urlsafe_b64encode(b'{"exp": "soon"}').decode() + ".c",
    "a." + base64.urlsafe_b64encode(b"\xff\xfe").decode() + ".c",  # not UTF-8
    "a." + base64.urlsafe_b64encode(b"[" * 100_000 + b"]" * 100_000).decode() + ".c",  # too deep for json
])
def test_a_token_that_names_no_expiry_has_none(token: str) -> None:
    assert credentials.token_expiry(token) is None


def test_an_expired_token_is_refused_before_asking_earthdata_login_naming_its_parameter_and_date(ssm) -> None:
    expired = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=2)
    token = edl_jwt(expired)
    put_secure(ssm, TOKEN_PARAMETER, token)
    with responses.RequestsMock(), pytest.raises(CredentialsUnavailable) as raised:  # no HTTP at all
        credentials.fetch_credentials("POCLOUD", password_settings(edl_token_parameter=TOKEN_PARAMETER))
    message = str(raised.value)
    assert TOKEN_PARAMETER in message and f"expired on {expired:%Y-%m-%d %H:%M} UTC" in message
    assert token not in message and "put-parameter --overwrite" in message


def _fetch_through_the_handler(ssm, capsys, logs: LogCapture,
                               token: str) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    """FetchCredentials' handler with metrics on: (its output, the EMF metric records it printed, its log lines and
    all it printed)."""
    put_secure(ssm, TOKEN_PARAMETER, token)
    with contextlib.suppress(ssm.exceptions.ParameterNotFound):  # an earlier call's, not a minute old: it would be
        ssm.delete_parameter(Name=f"{PREFIX}/POCLOUD")  # this run's too, without the login this one replays
    reset_caches()  # a warm function reads a replaced parameter once Powertools' 5-minute cache has expired
    spec = {"function_name": "credential_fetcher", "code_dir": str(ROOT / "functions" / "credential_fetcher"),
            "handler": "app.handler", "memory_size": 512,
            "arn": f"arn:aws:lambda:{REGION}:123456789012:function:credential_fetcher",
            "environment": {"BUCKET_NAME": "granulemap-test", "EDL_TOKEN_PARAMETER": TOKEN_PARAMETER,
                            "CREDENTIALS_PARAMETER_PREFIX": PREFIX, "AWS_REGION": REGION,
                            "POWERTOOLS_METRICS_DISABLED": "false"}}
    event = {"run": {"run_id": "r1", "recipe": "sst-global-mean", "params": {}, "config_id": "c", "daac": "POCLOUD"}}
    capsys.readouterr()
    logs.records.clear()
    logs.printed.seek(0)
    logs.printed.truncate()
    with responses.RequestsMock() as rs:
        replay_edl(rs, username=None, password=None, edl_token=token,
                   creds=daac_credentials("tok", "2030-01-01 01:00:00+00:00"))
        payload, errored, _ = worker.invoke(spec, event)
    assert not errored, payload
    printed = capsys.readouterr()
    lines = [json.loads(line) for line in printed.out.splitlines() if line.startswith("{")]
    return json.loads(payload), [line for line in lines if "_aws" in line], logs.text() + printed.out + printed.err


def test_the_fetcher_warns_and_sets_off_the_alarm_when_the_token_will_not_last_until_the_next_monthly_run(
        ssm, capsys, log_capture: LogCapture) -> None:
    expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=20)
    token = edl_jwt(expires)
    out, emitted, printed = _fetch_through_the_handler(ssm, capsys, log_capture, token)
    assert out["parameter"] == f"{PREFIX}/POCLOUD"
    (record,) = emitted
    from granulemap.observability import SERVICE  # the stack's name in AWS: the alarm's dimension

    assert record["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "granulemap"
    assert record["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]] and record["service"] == SERVICE
    assert record["EarthdataTokenDaysLeft"] == [pytest.approx(20, abs=0.01)]  # 20 days less the test's own seconds
    warnings = [json.loads(line) for line in printed.splitlines()
                if line.startswith("{") and '"WARNING"' in line and "Earthdata Login token" in line]
    (warning,) = warnings
    assert TOKEN_PARAMETER in warning["message"] and f"expires on {expires:%Y-%m-%d %H:%M} UTC" in warning["message"]
    assert token not in printed

    # a token made today (Earthdata Login's last 60 days): the metric, no warning
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=60)
    _, emitted, printed = _fetch_through_the_handler(ssm, capsys, log_capture, edl_jwt(later))
    assert emitted[0]["EarthdataTokenDaysLeft"] == [pytest.approx(60, abs=0.01)]
    assert "expires on" not in printed


def test_a_password_replaced_in_ssm_is_used_at_the_next_login_of_a_warm_function(ssm) -> None:
    """README's fix for a refused password: replace it in SSM, then start the failed month again. A warm
    FetchCredentials read its secrets through Powertools' 5-minute cache, and the run started at once logged in with
    the old password, refused again."""
    put_secure(ssm, USERNAME_PARAMETER, "edl-user")
    put_secure(ssm, PASSWORD_PARAMETER, "old-password")
    creds = daac_credentials("k", "2030-01-01 01:00:00+00:00")
    with responses.RequestsMock() as rs:
        replay_edl(rs, username="edl-user", password="old-password", edl_token="t-old", creds=creds)
        credentials.fetch_credentials("POCLOUD", password_settings())
    put_secure(ssm, PASSWORD_PARAMETER, "new-password")  # no cache cleared: the same (warm) process
    with responses.RequestsMock() as rs:  # every request must be made: the new password's basic auth among them
        replay_edl(rs, username="edl-user", password="new-password", edl_token="t-new", creds=creds)
        credentials.fetch_credentials("POCLOUD", password_settings())


def test_a_run_without_daac_data_needs_no_credentials_anywhere(ssm) -> None:
    with responses.RequestsMock():  # no HTTP at all
        assert credentials.fetch_credentials(None, password_settings(aws_region="eu-west-1")) is None
    assert ssm.describe_parameters()["Parameters"] == []


def test_missing_edl_parameters_are_credentials_unavailable_naming_the_parameter(ssm) -> None:
    put_secure(ssm, USERNAME_PARAMETER, "edl-user")  # the password was never stored
    with responses.RequestsMock(), pytest.raises(CredentialsUnavailable) as exc:
        credentials.fetch_credentials("POCLOUD", password_settings())
    message = str(exc.value)
    assert f"SSM parameter {PASSWORD_PARAMETER} does not exist" in message
    assert f"aws ssm put-parameter --type SecureString --name {PASSWORD_PARAMETER} --value file:///dev/stdin" in message
    assert "Store your Earthdata Login credentials in SSM" in (ROOT / "README.md").read_text()  # the section named


def test_no_edl_parameters_configured_is_credentials_unavailable_naming_the_template_parameters(ssm) -> None:
    settings = password_settings(edl_username_parameter=None, edl_password_parameter=None)
    with pytest.raises(CredentialsUnavailable, match="EdlTokenParameter or the EdlUsernameParameter"):
        credentials.fetch_credentials("POCLOUD", settings)


def test_daac_data_outside_us_west_2_fails_before_reading_any_secret(ssm) -> None:
    with responses.RequestsMock(), pytest.raises(CredentialsUnavailable) as exc:
        credentials.fetch_credentials("POCLOUD", password_settings(aws_region="eu-central-1"))
    assert "DAAC direct S3 access works only in us-west-2" in str(exc.value)
    assert "eu-central-1" in str(exc.value)


def test_the_fetcher_handler_fails_early_outside_us_west_2(ssm, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = {
        "function_name": "CredentialFetcherFunction",
        "code_dir": str(ROOT / "functions" / "credential_fetcher"),
        "handler": "app.handler",
        "environment": {"BUCKET_NAME": "granulemap-test", "AWS_REGION": "eu-west-1",
                        "EDL_USERNAME_PARAMETER": USERNAME_PARAMETER, "EDL_PASSWORD_PARAMETER": PASSWORD_PARAMETER,
                        "CREDENTIALS_PARAMETER_PREFIX": PREFIX},
        "memory_size": 256,
        "arn": "arn:aws:lambda:eu-west-1:123456789012:function:CredentialFetcherFunction",
    }
    event = {"run": {"run_id": "r", "recipe": "sst-global-mean", "params": {}, "config_id": "c", "daac": "POCLOUD"}}
    with responses.RequestsMock():
        payload, errored, _ = worker.invoke(spec, event)
    error = json.loads(payload)
    assert errored and error["errorType"] == "CredentialsUnavailable"
    assert "works only in us-west-2" in error["errorMessage"]


@pytest.mark.parametrize("status, error, message", [
    (401, CredentialsUnavailable, "accept the DAAC's EULA"),
    (403, CredentialsUnavailable, "refused the Earthdata Login credentials"),
    (503, SourceUnavailable, "answered 503"),
])
def test_s3credentials_refusals_and_outages_are_named(ssm, status: int, error: type, message: str) -> None:
    put_secure(ssm, TOKEN_PARAMETER, "edl-token")
    with responses.RequestsMock() as rs:
        replay_edl(rs, username=None, password=None, edl_token="edl-token", creds={}, s3credentials_status=status)
        with pytest.raises(error, match=message):
            credentials.fetch_credentials("POCLOUD", password_settings(edl_token_parameter=TOKEN_PARAMETER))


def test_a_refused_edl_password_is_credentials_unavailable(ssm) -> None:
    put_secure(ssm, USERNAME_PARAMETER, "edl-user")
    put_secure(ssm, PASSWORD_PARAMETER, "wrong-password")
    with responses.RequestsMock() as rs:
        rs.post(EDL_TOKEN_URL, status=401, json=EDL_REFUSAL)
        with pytest.raises(CredentialsUnavailable, match=f"refused the username and password.*{PASSWORD_PARAMETER}"):
            credentials.fetch_credentials("POCLOUD", password_settings())


@pytest.mark.parametrize("secret", ["password", "token"])
def test_a_secret_with_a_character_http_cannot_carry_is_refused_without_quoting_it(ssm, secret: str) -> None:
    """requests sends HTTP basic authentication (and http.client every header) in Latin-1: a password or token with
    a character outside it raised UnicodeEncodeError, whose message (the Lambda error, the CredentialsFailed cause,
    a Processor's failure record) quoted the character and its place in the secret."""
    import http.server
    import threading

    stored = "Tr0ub4dor&3\u20acxyz"
    if secret == "password":
        put_secure(ssm, USERNAME_PARAMETER, "edl-user")
        put_secure(ssm, PASSWORD_PARAMETER, stored)
        settings, names = password_settings(), f"username and password stored in SSM parameters {USERNAME_PARAMETER}"
    else:
        put_secure(ssm, TOKEN_PARAMETER, stored)
        settings, names = password_settings(edl_token_parameter=TOKEN_PARAMETER), TOKEN_PARAMETER
    # A real HTTP server for s3credentials: the token goes into a header only when http.client sends the request
    # (`responses` answers before that).
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}/s3credentials"
    try:
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rs, \
                mock.patch.object(credentials, "s3credentials_endpoint", return_value=endpoint):
            rs.add_passthru(endpoint)
            rs.post(EDL_TOKEN_URL, status=401, json=EDL_REFUSAL)
            with pytest.raises(CredentialsUnavailable) as raised:
                credentials.fetch_credentials("POCLOUD", settings)
    finally:
        server.shutdown()
        server.server_close()
    said = str(raised.value)
    assert names in said and "is outside Latin-1" in said, said
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    for part in ("\u20ac", "position", "Tr0ub", "xyz", "latin-1' codec"):
        assert part not in said


def test_an_empty_stored_token_is_refused_naming_its_parameter(ssm) -> None:
    put_secure(ssm, TOKEN_PARAMETER, " \n")
    with pytest.raises(CredentialsUnavailable, match=f"token in SSM parameter {TOKEN_PARAMETER} is empty"):
        credentials.fetch_credentials("POCLOUD", password_settings(edl_token_parameter=TOKEN_PARAMETER))


def test_a_refused_token_is_named_as_a_token(ssm, monkeypatch) -> None:
    """The refusal named the username and password parameters, None and None, for a stack that stores a token."""
    import earthaccess
    from earthaccess.exceptions import LoginAttemptFailure

    put_secure(ssm, TOKEN_PARAMETER, "edl-token")

    def refused(self, strategy: str = "", persist: bool = False) -> None:
        raise LoginAttemptFailure("refused")

    monkeypatch.setattr(earthaccess.Auth, "login", refused)
    settings = password_settings(edl_token_parameter=TOKEN_PARAMETER, edl_username_parameter=None,
                                 edl_password_parameter=None)
    with pytest.raises(CredentialsUnavailable) as raised:
        credentials.fetch_credentials("POCLOUD", settings)
    assert str(raised.value) == f"Earthdata Login refused the token stored in SSM parameter {TOKEN_PARAMETER}: check it"


@pytest.mark.parametrize("stored", ["eyJhbGciOi\nJSUzI1NiJ9.e30.sig", "eyJ hbGci.e30.sig", "eyJ\x00x.e30.sig"])
def test_a_token_with_a_line_break_or_space_inside_is_refused_not_retried_as_an_outage(ssm, stored: str) -> None:
    """requests refused such a header (InvalidHeader, a RequestException): reported as Earthdata Login not
    answering, SourceUnavailable, and retried for 45 minutes for a stored value that never works."""
    put_secure(ssm, TOKEN_PARAMETER, stored)
    with pytest.raises(CredentialsUnavailable, match=f"token in SSM parameter {TOKEN_PARAMETER} has a line break"):
        credentials.fetch_credentials("POCLOUD", password_settings(edl_token_parameter=TOKEN_PARAMETER))


def test_an_unforeseen_error_of_the_login_is_named_without_its_message(ssm, monkeypatch) -> None:
    """Any other error of earthaccess's login may quote the secrets it was given: only its type is passed on."""
    import earthaccess

    put_secure(ssm, USERNAME_PARAMETER, "edl-user")
    put_secure(ssm, PASSWORD_PARAMETER, "hunter2-secret")

    def login(self, strategy: str = "", persist: bool = False) -> None:
        raise ValueError("bad password 'hunter2-secret'")

    monkeypatch.setattr(earthaccess.Auth, "login", login)
    with pytest.raises(CredentialsUnavailable, match="failed: ValueError \\(its message is not shown") as raised:
        credentials.fetch_credentials("POCLOUD", password_settings())
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_an_edl_outage_is_retried_not_reported_as_a_wrong_password(ssm, status: int) -> None:
    """earthaccess raises one LoginAttemptFailure for any answer but 2xx: a 503 at 06:00 on the 1st failed the
    monthly run as CredentialsUnavailable (not retried), and the alert sent the operator to check a good password."""
    put_secure(ssm, USERNAME_PARAMETER, "edl-user")
    put_secure(ssm, PASSWORD_PARAMETER, "right-password")
    with responses.RequestsMock() as rs:
        rs.post(EDL_TOKEN_URL, status=status, body="Service Unavailable")
        with pytest.raises(SourceUnavailable, match=f"Earthdata Login answered {status}"):
            credentials.fetch_credentials("POCLOUD", password_settings())


def test_the_state_machine_retries_outages_but_not_missing_credentials() -> None:
    fetch = json.loads((ROOT / "statemachine" / "pipeline.asl.json").read_text())["States"]["FetchCredentials"]
    retried = {name for rule in fetch["Retry"] for name in rule["ErrorEquals"]}
    assert SourceUnavailable.__name__ in retried
    assert CredentialsUnavailable.__name__ not in retried and "States.ALL" not in retried
    assert fetch["ResultPath"] == "$.run.credentials"  # the reference, never the secret, joins the state


# ---- load: cache and refresh ----------------------------------------------------------------------------------
class CountingSsm:
    """The test's SSM client, counting GetParameter calls of the credentials module."""

    def __init__(self, client: Any):
        self.client = client
        self.get_calls = 0
        client.meta.events.register("before-call.ssm.GetParameter", self._count)

    def _count(self, **_: Any) -> None:
        self.get_calls += 1


def stored_ref(ssm: Any, creds: dict[str, str]) -> CredentialsRef:
    put_secure(ssm, f"{PREFIX}/POCLOUD", json.dumps(creds))
    return CredentialsRef(parameter=f"{PREFIX}/POCLOUD", daac="POCLOUD",
                          expires=credentials.parse_expiration(creds["expiration"]))


@pytest.fixture
def counting(ssm, monkeypatch: pytest.MonkeyPatch) -> CountingSsm:
    counter = CountingSsm(ssm)
    monkeypatch.setattr(credentials, "_ssm", lambda: counter.client)
    return counter


def test_load_reads_the_parameter_once_and_then_uses_the_cache(ssm, counting: CountingSsm) -> None:
    creds = daac_credentials("cached", "2030-01-01 01:00:00+00:00")
    ref = stored_ref(ssm, creds)
    now = dt.datetime(2030, 1, 1, 0, 0, tzinfo=dt.UTC)  # an hour of validity left
    with responses.RequestsMock():  # no Earthdata Login traffic
        first = credentials.load_credentials(ref, password_settings(), now=now)
        second = credentials.load_credentials(ref, password_settings(), now=now + dt.timedelta(minutes=30))
    assert first == second == creds
    assert counting.get_calls == 1


def test_credentials_near_expiry_are_refreshed_and_stored_for_the_other_processors(ssm, counting) -> None:
    put_secure(ssm, USERNAME_PARAMETER, "edl-user")
    put_secure(ssm, PASSWORD_PARAMETER, "edl-password")
    old = daac_credentials("old", "2030-01-01 01:00:00+00:00")
    new = daac_credentials("new", "2030-01-01 02:00:00+00:00")
    ref = stored_ref(ssm, old)
    nearly_expired = dt.datetime(2030, 1, 1, 0, 50, tzinfo=dt.UTC)  # 10 minutes left: less than a Lambda may run
    assert dt.timedelta(minutes=10) < credentials.REFRESH_MARGIN
    with responses.RequestsMock() as rs:
        replay_edl(rs, username="edl-user", password="edl-password", edl_token="edl-bearer", creds=new)
        assert credentials.load_credentials(ref, password_settings(), now=nearly_expired) == new
        assert credentials.load_credentials(ref, password_settings(), now=nearly_expired) == new  # cached now
        assert [c.request.url for c in rs.calls] == [EDL_TOKEN_URL, EDL_TOKEN_URL, PODAAC_S3CREDENTIALS]
    assert json.loads(ssm.get_parameter(Name=ref.parameter, WithDecryption=True)["Parameter"]["Value"]) == new


def test_a_processor_whose_cache_is_stale_takes_credentials_another_one_refreshed(ssm, counting) -> None:
    old = daac_credentials("old", "2030-01-01 01:00:00+00:00")
    ref = stored_ref(ssm, old)
    with responses.RequestsMock():
        credentials.load_credentials(ref, password_settings(), now=dt.datetime(2030, 1, 1, 0, 0, tzinfo=dt.UTC))
    refreshed = daac_credentials("refreshed", "2030-01-01 02:00:00+00:00")
    put_secure(ssm, ref.parameter, json.dumps(refreshed))  # what another Processor's refresh stored
    with responses.RequestsMock():  # so no Earthdata Login traffic here
        got = credentials.load_credentials(ref, password_settings(), now=dt.datetime(2030, 1, 1, 0, 50, tzinfo=dt.UTC))
    assert got == refreshed
    assert counting.get_calls == 2


# ---- many Processors, one expiry ---------------------------------------------------------------------------------
def _margin_of_this_worker(_: int) -> tuple[int, bool, float]:
    import os
    import sys
    import time

    inherited = "granulemap.credentials" in sys.modules  # imported by the fork server, before this fork
    from granulemap import credentials as in_worker

    time.sleep(0.05)  # so that the pool's workers all take a task
    return os.getpid(), inherited, in_worker.refresh_margin.total_seconds()


def test_each_process_draws_its_own_refresh_margin_within_the_spread() -> None:
    """Every Processor of a run holds credentials with one expiry: with one margin for all, every warm one asked
    Earthdata Login at the same moment. The local engine's workers are forks of a server that imported this module
    (granulemap.local.preload): each draws its own margin all the same."""
    from concurrent.futures import ProcessPoolExecutor

    from granulemap.local.warmfork import WarmForkServer, available

    low, high = credentials.REFRESH_MARGIN, credentials.REFRESH_MARGIN + credentials.REFRESH_SPREAD
    assert credentials.REFRESH_SPREAD >= dt.timedelta(minutes=10) and high <= dt.timedelta(minutes=40)  # of an hour
    assert low <= credentials.refresh_margin <= high
    if not available():
        pytest.skip("no fork server on this platform")
    server = WarmForkServer(["granulemap.local.preload"])
    server.start()
    try:
        with ProcessPoolExecutor(4, mp_context=server.context()) as pool:
            answers = list(pool.map(_margin_of_this_worker, range(16)))
    finally:
        server.stop()
    margins = {pid: margin for pid, _, margin in answers}
    assert all(inherited for _, inherited, _ in answers)
    assert all(low.total_seconds() <= m <= high.total_seconds() for m in margins.values())
    assert len(margins) >= 2 and len(set(margins.values())) == len(margins)  # one margin per worker, all different


def test_a_processor_with_a_narrower_margin_takes_what_a_wider_one_refreshed(ssm, counting, monkeypatch) -> None:
    """Two warm Processors holding the same credentials (expiring at 01:00), margins 30 and 20 minutes: the first
    refreshes at 00:31 and stores; the second, at 00:41, re-reads the parameter and takes those, with no login."""
    put_secure(ssm, USERNAME_PARAMETER, "edl-user")
    put_secure(ssm, PASSWORD_PARAMETER, "edl-password")
    old = daac_credentials("old", "2030-01-01 01:00:00+00:00")
    new = daac_credentials("new", "2030-01-01 01:31:00+00:00")
    ref = stored_ref(ssm, old)
    at = lambda minute: dt.datetime(2030, 1, 1, 0, minute, tzinfo=dt.UTC)  # noqa: E731
    first, second = {}, {}  # each process's own cache

    def as_process(cache: dict, margin: int, minute: int) -> dict[str, str]:
        monkeypatch.setattr(credentials, "_cache", cache)
        monkeypatch.setattr(credentials, "refresh_margin", dt.timedelta(minutes=margin))
        return credentials.load_credentials(ref, password_settings(), now=at(minute))

    with responses.RequestsMock() as rs:
        replay_edl(rs, username="edl-user", password="edl-password", edl_token="edl-bearer", creds=new)
        assert as_process(first, 30, 0) == as_process(second, 20, 0) == old
        assert as_process(first, 30, 29) == as_process(second, 20, 29) == old  # 31 minutes left: cached
        assert len(rs.calls) == 0
        assert as_process(first, 30, 31) == new  # 29 minutes left: the first one refreshes
        assert [c.request.url for c in rs.calls] == [EDL_TOKEN_URL, EDL_TOKEN_URL, PODAAC_S3CREDENTIALS]
        assert as_process(second, 20, 35) == old  # 25 left: still above its margin
        assert as_process(second, 20, 41) == new  # 19 left: it re-reads, and finds the first one's
        assert len(rs.calls) == 3  # no second login
    # Each process read the parameter twice, once at first and once at its margin; the refresh read it twice more:
    # FetchCredentials, to see whether another request had refreshed it already, and the first process, what it stored.
    assert counting.get_calls == 4 + 2


def test_credentials_taken_within_the_margin_are_kept_not_refreshed_at_every_read(ssm, counting, monkeypatch) -> None:
    """A Processor started late in the credentials' life (20 minutes left, its margin 30) takes them, and keeps them
    until REFRESH_MARGIN: taking them as near expiry would refresh them again at every read, and the refreshed ones
    too if the DAAC's credentials last less than the margin."""
    monkeypatch.setattr(credentials, "refresh_margin", dt.timedelta(minutes=30))
    stored = daac_credentials("stored", "2030-01-01 01:00:00+00:00")
    ref = stored_ref(ssm, stored)
    with responses.RequestsMock():  # no Earthdata Login traffic
        for minute in (40, 41, 44):
            got = credentials.load_credentials(ref, password_settings(),
                                               now=dt.datetime(2030, 1, 1, 0, minute, tzinfo=dt.UTC))
            assert got == stored
    assert counting.get_calls == 1
    short = daac_credentials("short", "2030-01-01 01:11:00+00:00")  # 25 minutes left when got: below this margin
    put_secure(ssm, USERNAME_PARAMETER, "edl-user")
    put_secure(ssm, PASSWORD_PARAMETER, "edl-password")
    with responses.RequestsMock() as rs:
        replay_edl(rs, username="edl-user", password="edl-password", edl_token="edl-bearer", creds=short)
        at_refresh = dt.datetime(2030, 1, 1, 0, 46, tzinfo=dt.UTC)  # 14 minutes left: refreshed
        assert credentials.load_credentials(ref, password_settings(), now=at_refresh) == short
        assert credentials.load_credentials(ref, password_settings(), now=at_refresh + dt.timedelta(minutes=5)) == short
        assert len(rs.calls) == 3  # one login; the new ones (20 minutes left) are used, not refreshed again
    assert counting.get_calls == 2 + 2  # the refresh's own two reads (FetchCredentials' check; the new ones)


# ---- a Processor's refresh, by FetchCredentials -----------------------------------------------------------------
@pytest.mark.parametrize("case", ["refreshed since", "still the stale ones", "refreshed but expiring", "none stored"])
def test_a_refresh_logs_in_only_when_no_other_request_has_refreshed_the_stored_credentials(ssm, case: str) -> None:
    """Refreshes asked for together (Processors reaching their margins within a second or two) log in once: the
    second finds the parameter no longer holds the credentials it was asked to replace, and answers with those."""
    put_secure(ssm, USERNAME_PARAMETER, "edl-user")
    put_secure(ssm, PASSWORD_PARAMETER, "edl-password")
    now = dt.datetime(2030, 1, 1, 0, 50, tzinfo=dt.UTC)
    stale = daac_credentials("stale", "2030-01-01 01:00:00+00:00")  # 10 minutes left
    lasting = daac_credentials("lasting", "2030-01-01 01:40:00+00:00")  # 50 minutes left
    expiring = daac_credentials("expiring", "2030-01-01 00:55:00+00:00")  # not stale, but 5 minutes left
    new = daac_credentials("new", "2030-01-01 02:00:00+00:00")
    stored = {"refreshed since": lasting, "still the stale ones": stale, "refreshed but expiring": expiring,
              "none stored": None}[case]
    if stored is not None:
        put_secure(ssm, f"{PREFIX}/POCLOUD", json.dumps(stored))
    logs_in = case != "refreshed since"
    with responses.RequestsMock(assert_all_requests_are_fired=logs_in) as rs:
        replay_edl(rs, username="edl-user", password="edl-password", edl_token="edl-bearer", creds=new)
        ref = credentials.refresh_stored_credentials("POCLOUD", credentials.key_digest(stale), password_settings(),
                                                     now=now)
        calls = len(rs.calls)
    answer = new if logs_in else lasting
    assert calls == (3 if logs_in else 0)
    assert ref == CredentialsRef(parameter=f"{PREFIX}/POCLOUD", daac="POCLOUD",
                                 expires=credentials.parse_expiration(answer["expiration"]))
    assert json.loads(ssm.get_parameter(Name=ref.parameter, WithDecryption=True)["Parameter"]["Value"]) == answer


def test_a_key_digest_names_credentials_by_their_access_key_and_gives_nothing_of_them() -> None:
    import hashlib

    creds = daac_credentials("digest", "2030-01-01 01:00:00+00:00")
    digest = credentials.key_digest(creds)
    assert digest == hashlib.sha256(b"ASIADIGESTKEY").hexdigest()[:16]
    assert digest == credentials.key_digest({**creds, "sessionToken": "another"})  # the key alone names them
    assert digest != credentials.key_digest(daac_credentials("other", creds["expiration"]))
    assert not any(value in digest or digest in value for value in creds.values())


def _lambda_answering(monkeypatch: pytest.MonkeyPatch, *answers: dict[str, Any] | Exception) -> list[dict]:
    """boto3's Lambda client for credentials.invoke_refresh, stubbed: each invoke gets the next answer (a payload
    with its FunctionError, or a service error code); returns the requests it got."""
    import io

    from botocore.response import StreamingBody
    from botocore.stub import Stubber

    client = boto3.client("lambda", region_name=REGION, aws_access_key_id="k", aws_secret_access_key="s")
    stubber = Stubber(client)
    requests: list[dict] = []
    client.meta.events.register("before-parameter-build.lambda.Invoke",
                                lambda params, **_: requests.append(json.loads(params["Payload"])))
    for answer in answers:
        if isinstance(answer, Exception):
            stubber.add_client_error("invoke", service_error_code=str(answer), http_status_code=429)
            continue
        body = json.dumps(answer["payload"]).encode()
        response = {"StatusCode": 200, "Payload": StreamingBody(io.BytesIO(body), len(body))}
        if answer.get("error"):
            response["FunctionError"] = "Unhandled"
        stubber.add_response("invoke", response)
    stubber.activate()
    monkeypatch.setattr(credentials.boto3, "client", lambda service, **_: client if service == "lambda" else None)
    return requests


FETCHER = "arn:aws:lambda:us-west-2:123456789012:function:granulemap-CredentialFetcherFunction-x:7"


def test_invoke_refresh_asks_the_named_function_with_the_provider_and_digest_and_returns_its_reference(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ref = CredentialsRef(parameter=f"{PREFIX}/POCLOUD", daac="POCLOUD", expires=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    requests = _lambda_answering(monkeypatch, {"payload": ref.model_dump(mode="json")},
                                 {"payload": ref.model_dump(mode="json")})
    assert credentials.invoke_refresh(FETCHER, "POCLOUD", "0123456789abcdef") == ref
    assert credentials.invoke_refresh(FETCHER, "POCLOUD", "0123456789abcdef", run="sst-global-mean-2018-x") == ref
    assert requests == [{"refresh": {"daac": "POCLOUD", "stale": "0123456789abcdef"}},
                        {"refresh": {"daac": "POCLOUD", "stale": "0123456789abcdef", "run": "sst-global-mean-2018-x"}}]
    from granulemap.events import CredentialsInvocation, RefreshEvent

    assert isinstance(CredentialsInvocation.model_validate(requests[0]).root, RefreshEvent)  # what the handler takes


@pytest.mark.parametrize(("answer", "error", "says"), [
    ({"payload": {"errorType": "CredentialsUnavailable", "errorMessage": "Earthdata Login refused the username"},
      "error": True}, CredentialsUnavailable, "FetchCredentials: Earthdata Login refused the username"),
    ({"payload": {"errorType": "SourceUnavailable", "errorMessage": "Earthdata Login answered 503"}, "error": True},
     SourceUnavailable, "FetchCredentials: Earthdata Login answered 503"),
    ({"payload": {"errorType": "TransientError", "errorMessage": "SSM throttled storing /p"}, "error": True},
     credentials.TransientError, "FetchCredentials: SSM throttled storing /p"),
    ({"payload": {"errorType": "Sandbox.Timedout", "errorMessage": "Task timed out after 120.00 seconds"},
      "error": True}, SourceUnavailable, "Sandbox.Timedout: Task timed out after 120.00 seconds"),
    ({"payload": {"errorType": "Lambda.ServiceException", "errorMessage": "the local worker process died"},
      "error": True}, SourceUnavailable, "Lambda.ServiceException: the local worker process died"),
    ({"payload": {"errorType": "ValidationError", "errorMessage": "1 validation error for CredentialsInvocation"},
      "error": True}, CredentialsUnavailable, "ValidationError: 1 validation error"),  # a bug: not waited out
    (RuntimeError("TooManyRequestsException"), credentials.TransientError, "TooManyRequestsException"),
    (RuntimeError("AccessDeniedException"), CredentialsUnavailable, "cannot invoke FetchCredentials"),
])
def test_fetch_credentials_failures_reach_the_processor_as_errors_it_keeps_or_retries_by(
        monkeypatch: pytest.MonkeyPatch, answer: Any, error: type, says: str) -> None:
    """FetchCredentials' own errors come back as themselves; the function's failure to run (a timeout) as an outage,
    Lambda's throttling as transient, anything else as not to be waited out: load_credentials keeps credentials that
    still last whatever the error, and the state machine retries the transient ones."""
    _lambda_answering(monkeypatch, answer)
    with pytest.raises(error, match=re.escape(says)):
        credentials.invoke_refresh(FETCHER, "POCLOUD", "0123456789abcdef")


@pytest.mark.parametrize("refresh", [{"daac": "POCLOUD", "stale": "0123456789ABCDEF"},
                                     {"daac": "../x", "stale": "0123456789abcdef"},
                                     {"daac": "POCLOUD", "stale": "0123456789abcdef", "parameter": "/other"}])
def test_fetch_credentials_refuses_a_refresh_request_of_another_form(refresh: dict[str, str]) -> None:
    """The provider names the stored parameter: only a CMR provider id, a digest, and nothing else."""
    from pydantic import ValidationError

    from granulemap.events import CredentialsInvocation

    with pytest.raises(ValidationError):
        CredentialsInvocation.model_validate({"refresh": refresh})


def test_the_refresh_is_asked_once_an_invocation_is_not_tried_again_by_the_sdk(monkeypatch) -> None:
    """A retried invocation (after a read timeout, say) would log in again: the SDK makes one attempt."""
    seen: dict[str, Any] = {}

    def client(service: str, config: Any = None, **_: Any) -> Any:
        seen.update(service=service, attempts=config.retries["max_attempts"], timeout=config.read_timeout)
        raise RuntimeError("no client needed")

    monkeypatch.setattr(credentials.boto3, "client", client)
    with pytest.raises(RuntimeError, match="no client needed"):
        credentials.invoke_refresh(FETCHER, "POCLOUD", "0123456789abcdef")
    assert seen == {"service": "lambda", "attempts": 1, "timeout": credentials.REFRESH_INVOKE_TIMEOUT_SECONDS}


@pytest.mark.parametrize("minutes_left", [20, 10])
def test_a_refresh_that_left_the_old_credentials_stored_is_a_failed_refresh(ssm, monkeypatch, minutes_left) -> None:
    """FetchCredentials answered, but the parameter still holds the credentials it was asked to replace: they are
    not taken as refreshed (S3 may have refused them); kept while they last beyond REFRESH_MARGIN, else an error."""
    monkeypatch.setattr(credentials, "refresh_margin", dt.timedelta(minutes=30))
    old = daac_credentials("old", "2030-01-01 01:00:00+00:00")
    ref = stored_ref(ssm, old)
    asked: list[tuple[str, str]] = []

    def refresh(provider: str, stale: str) -> CredentialsRef:
        asked.append((provider, stale))
        return ref  # and nothing stored

    now = dt.datetime(2030, 1, 1, 1, 0, tzinfo=dt.UTC) - dt.timedelta(minutes=minutes_left)
    hour_before = dt.datetime(2030, 1, 1, 0, 0, tzinfo=dt.UTC)
    assert credentials.load_credentials(ref, password_settings(), now=hour_before, refresh=refresh) == old  # held
    if minutes_left * 60 > credentials.REFRESH_MARGIN.total_seconds():
        assert credentials.load_credentials(ref, password_settings(), now=now, refresh=refresh) == old
    else:
        with pytest.raises(credentials.TransientError, match="still holds the credentials FetchCredentials replaced"):
            credentials.load_credentials(ref, password_settings(), now=now, refresh=refresh)
    assert asked == [("POCLOUD", credentials.key_digest(old))]


def test_a_processor_in_aws_without_its_fetch_credentials_function_says_so(monkeypatch) -> None:
    """Without CREDENTIALS_FUNCTION a Processor in AWS would try to log in itself, and fail for want of secrets it
    may not read, saying none are configured: it names the missing variable instead."""
    monkeypatch.setenv("AWS_EXECUTION_ENV", "AWS_Lambda_python3.12")  # as Lambda's runtime sets it
    with pytest.raises(CredentialsUnavailable, match="CREDENTIALS_FUNCTION is not set"):
        credentials.refresher(password_settings())
    monkeypatch.delenv("AWS_EXECUTION_ENV")  # a script, a test: the refresh runs here, with the settings' secrets
    assert callable(credentials.refresher(password_settings()))
    assert callable(credentials.refresher(password_settings(credentials_function=FETCHER)))


@pytest.mark.parametrize("asked_by", ["refresh", "run"])
def test_credentials_stored_within_the_minute_are_not_replaced_however_often_asked(ssm, asked_by: str) -> None:
    """Recipe code in a Processor may invoke FetchCredentials itself, naming the stored credentials as stale (a
    refresh) or with a run's event, and a backfill starts its runs together (a run's own FetchCredentials logged in
    whatever was stored): within RECENT_WRITE of their write, while they last beyond REFRESH_MARGIN, it answers with
    them and logs in at most once a minute; after it, or with credentials near their end, it logs in."""
    put_secure(ssm, USERNAME_PARAMETER, "edl-user")
    put_secure(ssm, PASSWORD_PARAMETER, "edl-password")
    now = dt.datetime.now(dt.UTC)
    current = daac_credentials("current", (now + dt.timedelta(minutes=50)).isoformat(sep=" ", timespec="seconds"))
    ref = stored_ref(ssm, current)  # written now, by moto's clock
    new = daac_credentials("new", (now + dt.timedelta(hours=1)).isoformat(sep=" ", timespec="seconds"))

    def ask(when: dt.datetime) -> Any:
        if asked_by == "refresh":
            return credentials.refresh_stored_credentials("POCLOUD", credentials.key_digest(current),
                                                          password_settings(), now=when)
        return credentials.credentials_for_run("POCLOUD", password_settings(), now=when)

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rs:
        replay_edl(rs, username="edl-user", password="edl-password", edl_token="edl-bearer", creds=new)
        for _ in range(3):
            assert ask(now) == ref
        assert len(rs.calls) == 0
        later = now + credentials.RECENT_WRITE + dt.timedelta(seconds=5)
        assert ask(later).expires == credentials.parse_expiration(new["expiration"]) and len(rs.calls) == 3
        # written just now, but ending within REFRESH_MARGIN: a run may last hours, a refresh is asked to replace them
        soon = (now + credentials.REFRESH_MARGIN / 2).isoformat(sep=" ", timespec="seconds")
        stored_ref(ssm, daac_credentials("ending", soon))
        ask(now)
        assert len(rs.calls) == 6
    assert credentials.credentials_for_run(None, password_settings()) is None  # a run that reads no DAAC data


@pytest.mark.parametrize("damaged", ["not json", '{"accessKeyId": "k"}', '["k"]',
                                     '{"accessKeyId": "k", "secretAccessKey": "s", "sessionToken": "t", '
                                     '"expiration": "soon"}'])
def test_a_damaged_credentials_parameter_is_written_anew_by_the_next_run(ssm, damaged: str) -> None:
    """A stored-credentials parameter that holds no credentials (edited by hand, say): a run's FetchCredentials,
    which now reads it first, failed on it (JSONDecodeError, KeyError), and so did every later run; it logs in and
    writes it anew, as it did before. A Processor reading it is told what it is, naming the parameter, not its value."""
    put_secure(ssm, USERNAME_PARAMETER, "edl-user")
    put_secure(ssm, PASSWORD_PARAMETER, "edl-password")
    name = f"{PREFIX}/POCLOUD"
    put_secure(ssm, name, damaged)
    with pytest.raises(CredentialsUnavailable, match=f"parameter {name} does not hold DAAC credentials") as told:
        credentials._read_stored(name)
    assert damaged not in str(told.value)
    new = daac_credentials("new", "2030-01-01 01:00:00+00:00")
    with responses.RequestsMock() as rs:  # every request made: the login, and s3credentials
        replay_edl(rs, username="edl-user", password="edl-password", edl_token="edl-bearer", creds=new)
        ref = credentials.credentials_for_run("POCLOUD", password_settings())
    assert ref.parameter == name and credentials._read_stored(name) == new


def test_without_the_stack_s_parameter_path_no_other_is_guessed() -> None:
    """The credentials' SSM path comes from template.yaml (per stack, the only one IAM grants); a Settings without it
    used a path of its own, which no stack's policy allows."""
    from granulemap.credentials import parameter_name
    from granulemap.errors import CredentialsUnavailable
    from granulemap.settings import Settings

    with pytest.raises(CredentialsUnavailable, match="CREDENTIALS_PARAMETER_PREFIX is not set"):
        parameter_name("PODAAC", Settings(bucket="bkt"))
    assert parameter_name("PODAAC", Settings(bucket="bkt", credentials_parameter_prefix="/granulemap/s/creds/")) == (
        "/granulemap/s/creds/PODAAC")
