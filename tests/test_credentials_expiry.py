"""Temporary DAAC credentials that expire part way through a run are refreshed, and no item is lost.

The items read their granules from the DAAC's bucket with the credentials FetchCredentials stored (by reference, as
the Processors do). S3 is moto's; in front of it, for the DAAC's bucket only, stands the check the real S3 makes:
a read signed with temporary credentials past their expiry is refused with ExpiredToken (``DaacS3``, a botocore
before-send hook on boto3's default session, which every client the code makes inherits). Time is the test's
``Clock``: it replaces ``credentials.utc_now``, and the DAAC's S3 judges expiry by it too. Earthdata Login and
PO.DAAC's s3credentials answer through `responses` (test_credentials' helpers), each s3credentials answer a new set.

1. process_item, item after item, as the clock moves past the refresh margin: the credentials are refreshed (once),
   stored for the other Processors, and every item succeeds at its first attempt. (Here the refresh runs in this
   process: these settings name no FetchCredentials function to invoke; the local execution of 3 invokes it.)
2. A read refused as expired (CredentialsExpired) makes the retry re-read the parameter, for both ways of reading
   (GranuleAccess.read_bytes, and the ATL06 recipe's own reader), taking what another Processor stored or, when the
   parameter still holds the refused credentials, asking Earthdata Login for new ones.
3. A full local execution of the state machine (handlers in this process, LocalEngine(in_process=True)) whose
   credentials expire while its items are processed.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import responses
from botocore.awsrequest import AWSResponse
from moto import mock_aws
from moto.core.botocore_stubber import MockRawResponse

from granulemap import credentials, layout
from granulemap.errors import CredentialsExpired, SourceUnavailable, TransientError
from granulemap.models import CredentialsRef, Granule, Item, ProcessorEvent, ProcessorResult, RunContext
from granulemap.processing import process_item
from granulemap.recipes import get_recipe
from granulemap.grouping import item_id_for
from granulemap.settings import Settings
from granulemap.storage import Bucket
from granulemap.synthetic import make_synthetic_series

from conftest import MUR25
from test_cmr import edited_granule, replay_cmr
from test_credentials import (
    PASSWORD_PARAMETER,
    PODAAC_S3CREDENTIALS,
    USERNAME_PARAMETER,
    daac_credentials,
    password_settings,
    put_secure,
    replay_edl,
    reset_caches,
)

REGION = "us-west-2"
BUCKET = "granulemap-expiry-test"
DAAC_BUCKET = "podaac-ops-cumulus-protected"
DAAC_PREFIX = "MUR25-JPL-L4-GLOB-v04.2/"
T0 = dt.datetime(2030, 1, 1, 0, 0, tzinfo=dt.UTC)
EDL_USER, EDL_PASSWORD, EDL_TOKEN = "edl-user-expiry", "edl-password-expiry", "edl-bearer-expiry"
MINUTES_PER_ITEM = 4
FIRST_LIFETIME = dt.timedelta(minutes=20)
"""Longer than the refresh margin (so the first items use them), shorter than the run (so they expire during it)."""
recipe = get_recipe("sst-global-mean")


# ---- the test's clock and the DAAC's S3 ------------------------------------------------------------------------
class Clock:
    """Now, as the test says: ``credentials.utc_now`` and the DAAC's S3 both read it."""

    def __init__(self, now: dt.datetime):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += dt.timedelta(minutes=minutes)


_CREDENTIAL = re.compile(r"Credential=([^/]+)/")
_EXPIRED_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ExpiredToken</Code>'
                 b"<Message>The provided token has expired.</Message></Error>")
_DENIED_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
                b"<Message>Access Denied</Message></Error>")


@dataclass
class DaacS3:
    """The DAAC bucket's own check before moto serves a GetObject: signed with temporary credentials it issued, not
    expired by ``clock``. Records every read as (object name, access key id, served?); with ``minutes_per_read``
    each read moves the clock, as if reading and reducing a granule took that long."""

    clock: Clock
    minutes_per_read: float = 0.0
    expiry: dict[str, dt.datetime] = field(default_factory=dict)
    reads: list[tuple[str, str, bool]] = field(default_factory=list)

    def issue(self, creds: dict[str, str], really_expires: dt.datetime | None = None) -> None:
        """S3 accepts these credentials until ``really_expires`` (default: their stated expiration)."""
        self.expiry[creds["accessKeyId"]] = really_expires or credentials.parse_expiration(creds["expiration"])

    def keys_used(self) -> list[str]:
        return [key for _, key, _ in self.reads]

    def refused(self) -> list[tuple[str, str]]:
        return [(name, key) for name, key, served in self.reads if not served]

    def __call__(self, request: Any, **_: Any) -> AWSResponse | None:
        if f"/{DAAC_BUCKET}/" not in request.url and f"//{DAAC_BUCKET}." not in request.url:
            return None  # another bucket: moto answers
        authorization = request.headers.get("Authorization", b"")
        match = _CREDENTIAL.search(authorization.decode() if isinstance(authorization, bytes) else authorization)
        key = match.group(1) if match else ""
        name = request.url.split("?")[0].rsplit("/", 1)[-1]
        expires = self.expiry.get(key)
        served = expires is not None and self.clock() < expires
        self.reads.append((name, key, served))
        self.clock.advance(self.minutes_per_read)
        if served:
            return None
        status, body = (400, _EXPIRED_BODY) if expires is not None else (403, _DENIED_BODY)
        return AWSResponse(request.url, status, {"Content-Type": "application/xml"}, MockRawResponse(body))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The test's time; and the least refresh margin for this process (each process draws its own above it:
    tests/test_credentials.py), so that when the credentials are refreshed follows from the clock alone."""
    now = Clock(T0)
    monkeypatch.setattr(credentials, "utc_now", now)
    monkeypatch.setattr(credentials, "refresh_margin", credentials.REFRESH_MARGIN)
    return now


def install_daac_s3(monkeypatch: pytest.MonkeyPatch, daac: DaacS3) -> None:
    """Put ``daac`` in front of every S3 client made from now on (boto3's default session, fresh for the test)."""
    session = boto3.Session(region_name=REGION)
    session.events.register_first("before-send.s3.GetObject", daac)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", session)


@pytest.fixture
def fresh_process() -> Iterator[None]:
    """No cached AWS clients, Powertools parameters or credentials from another test."""
    from granulemap.storage import s3_client

    s3_client.cache_clear()
    reset_caches()
    yield
    s3_client.cache_clear()
    reset_caches()


@pytest.fixture(scope="module")
def granules(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Eight synthetic MUR25-format granules, 2018-12-01..08 (made from the real one)."""
    return make_synthetic_series(MUR25, tmp_path_factory.mktemp("expiry"), dt.date(2018, 12, 1), 8)


def credentials_at(tag: str, expires: dt.datetime) -> dict[str, str]:
    return daac_credentials(tag, expires.isoformat(sep=" ", timespec="seconds"))


def ended_early(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, str], dict[str, str], DaacS3]:
    """Two sets of credentials, said to last one and two hours, and the DAAC's S3 in front of moto, refusing the
    first after 5 minutes already (clocks disagree, or the DAAC ended them early)."""
    first = credentials_at("first", T0 + dt.timedelta(hours=1))
    second = credentials_at("second", T0 + dt.timedelta(hours=2))
    daac = DaacS3(clock)
    daac.issue(first, really_expires=T0 + dt.timedelta(minutes=5))
    daac.issue(second)
    install_daac_s3(monkeypatch, daac)
    return first, second, daac


def s3credentials_calls(rs: responses.RequestsMock) -> int:
    return sum(1 for c in rs.calls if c.request.url == PODAAC_S3CREDENTIALS)


# ---- 1 and 2: process_item against moto (mock_aws) ------------------------------------------------------------
@dataclass
class Account:
    """One test's AWS account: the run's bucket, the DAAC's bucket holding ``granules``, the EDL secrets in SSM."""

    bucket: Bucket
    ssm: Any
    settings: Settings
    items: list[Item]

    def run_context(self, ref: CredentialsRef) -> RunContext:
        params = recipe.parse_params({})
        return RunContext(run_id="expiry-run", recipe=recipe.name, params=params.model_dump(mode="json"),
                          config_id=recipe.config_id(params), daac="POCLOUD", credentials=ref)

    def stored(self, ref: CredentialsRef) -> dict[str, str]:
        return json.loads(self.ssm.get_parameter(Name=ref.parameter, WithDecryption=True)["Parameter"]["Value"])


@pytest.fixture
def account(fresh_process, granules: list[Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[Account]:
    monkeypatch.setenv("AWS_REGION", REGION)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        items = []
        for name in (BUCKET, DAAC_BUCKET):
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
        for path in granules:
            s3.put_object(Bucket=DAAC_BUCKET, Key=DAAC_PREFIX + path.name, Body=path.read_bytes())
            url = f"s3://{DAAC_BUCKET}/{DAAC_PREFIX}{path.name}"
            items.append(Item(id=item_id_for(url), granules=[Granule(url=url, time=recipe.granule_time(path.name))]))
        ssm = boto3.client("ssm", region_name=REGION)
        put_secure(ssm, USERNAME_PARAMETER, EDL_USER)
        put_secure(ssm, PASSWORD_PARAMETER, EDL_PASSWORD)
        yield Account(bucket=Bucket(BUCKET, s3), ssm=ssm, settings=password_settings(bucket=BUCKET), items=items)


def with_retries(attempt: Callable[[], ProcessorResult], errors: list[str], max_attempts: int = 4) -> ProcessorResult:
    """What the Map's Retry does: try again on a transient error (the ASL retries CredentialsExpired), up to
    ``max_attempts``; each error's name is appended to ``errors``."""
    for number in range(1, max_attempts + 1):
        try:
            return attempt()
        except TransientError as exc:
            errors.append(type(exc).__name__)
            if number == max_attempts:
                raise
    raise AssertionError("unreachable")


def processor_loader(settings: Settings) -> Callable[[CredentialsRef], dict[str, str]]:
    """The Processor handler's loader (functions/processor/app.py): no ``now``, so credentials.utc_now decides."""
    return lambda ref: credentials.load_credentials(ref, settings)


def test_credentials_expiring_during_the_run_are_refreshed_and_every_item_succeeds(
        account: Account, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = credentials_at("first", T0 + FIRST_LIFETIME), credentials_at("second", T0 + dt.timedelta(hours=1))
    daac = DaacS3(clock)
    daac.issue(first)
    daac.issue(second)
    install_daac_s3(monkeypatch, daac)
    errors: list[str] = []
    with responses.RequestsMock() as rs:  # both answers must be asked for: FetchCredentials, then one refresh
        for creds in (first, second):
            replay_edl(rs, username=EDL_USER, password=EDL_PASSWORD, edl_token=EDL_TOKEN, creds=creds)
        ref = credentials.fetch_credentials("POCLOUD", account.settings)  # FetchCredentials, at T0
        run = account.run_context(ref)
        results = []
        for item in account.items:  # one Processor after another, each MINUTES_PER_ITEM long
            attempt = functools.partial(process_item, ProcessorEvent(item=item, run=run), account.bucket,
                                        processor_loader(account.settings))
            results.append(with_retries(attempt, errors))
            clock.advance(MINUTES_PER_ITEM)
        fetched = s3credentials_calls(rs)

    # When each item starts, and which credentials it must use: the first set while it has more than the refresh
    # margin left, the refreshed set afterwards (the first would be refused from T0 + 20 min on).
    starts = [T0 + dt.timedelta(minutes=MINUTES_PER_ITEM * n) for n in range(len(account.items))]
    expected_keys = [first["accessKeyId"] if T0 + FIRST_LIFETIME - start > credentials.REFRESH_MARGIN
                     else second["accessKeyId"] for start in starts]
    assert expected_keys.count(first["accessKeyId"]) == 2 and starts[-1] >= T0 + FIRST_LIFETIME  # part way

    assert [r.status for r in results] == ["succeeded"] * len(account.items)
    assert errors == []  # no item needed a retry
    assert daac.keys_used() == expected_keys and daac.refused() == []
    assert fetched == 2  # FetchCredentials, then one refresh for all the later items
    assert account.stored(ref) == second  # stored for the other Processors
    for item, result in zip(account.items, results, strict=True):  # no item lost: each result is in S3
        assert account.bucket.get_json(result.result_key)["run_id"] == run.run_id
        assert result.result_key == layout.result_key(recipe.name, run.config_id, item.id)


@pytest.mark.parametrize("outage", [503, 429])
def test_an_outage_of_the_credentials_service_keeps_credentials_that_still_last_and_fails_none_of_the_items(
        account: Account, clock: Clock, monkeypatch: pytest.MonkeyPatch, outage: int) -> None:
    """A Processor reaching its refresh margin while the s3credentials endpoint is down (or throttling) used to fail its
    item (SourceUnavailable, retried for seconds only). It keeps the stored credentials while they last beyond the
    least margin, asks again a minute later, and raises only once they are within it."""
    first = credentials_at("first", T0 + dt.timedelta(minutes=30))
    second = credentials_at("second", T0 + dt.timedelta(hours=1, minutes=30))
    daac = DaacS3(clock)
    daac.issue(first)
    daac.issue(second)
    install_daac_s3(monkeypatch, daac)
    monkeypatch.setattr(credentials, "refresh_margin", dt.timedelta(minutes=25))  # this Processor's own margin
    loader = processor_loader(account.settings)
    with responses.RequestsMock() as rs:
        replay_edl(rs, username=EDL_USER, password=EDL_PASSWORD, edl_token=EDL_TOKEN, creds=first)
        ref = credentials.fetch_credentials("POCLOUD", account.settings)
        run = account.run_context(ref)
        assert loader(ref) == first  # 30 minutes left: beyond this Processor's margin
    clock.advance(10)  # 20 minutes left: within its margin, beyond the least one
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rs:
        replay_edl(rs, username=EDL_USER, password=EDL_PASSWORD, edl_token=EDL_TOKEN, creds=second,
                   s3credentials_status=outage)
        result = process_item(ProcessorEvent(item=account.items[0], run=run), account.bucket, loader)
        asked = s3credentials_calls(rs)
        assert loader(ref) == first and s3credentials_calls(rs) == asked  # kept: not asked again within the minute
        clock.advance(credentials.REFRESH_RETRY.total_seconds() / 60 + 0.5)
        assert loader(ref) == first and s3credentials_calls(rs) == asked + 1  # asked again a minute later
        clock.advance(4)  # 15 minutes left, or less: never used
        with pytest.raises(SourceUnavailable, match=f"answered {outage}"):
            loader(ref)
    assert result.status == "succeeded" and asked == 1
    assert daac.keys_used() == [first["accessKeyId"]] and daac.refused() == []
    assert account.stored(ref) == first
    with responses.RequestsMock() as rs:  # the service is back
        replay_edl(rs, username=EDL_USER, password=EDL_PASSWORD, edl_token=EDL_TOKEN, creds=second)
        assert loader(ref) == second
    assert account.stored(ref) == second


def test_during_an_outage_credentials_are_never_used_within_the_least_margin_nor_once_s3_refused_them(
        account: Account, clock: Clock, log_capture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other side of keeping credentials through an outage: kept with 15.5 minutes left, they are not handed out
    once 15 or fewer are left (the next load re-reads them and, the service still down, raises); credentials S3 has
    refused are never kept, however long they say they last; an answer that is no credentials at all (an HTML page)
    is an outage like another. No secret reaches the log."""
    first = credentials_at("first", T0 + dt.timedelta(minutes=40))
    loader = processor_loader(account.settings)
    monkeypatch.setattr(credentials, "refresh_margin", dt.timedelta(minutes=25))  # this Processor's own margin
    with responses.RequestsMock() as rs:
        replay_edl(rs, username=EDL_USER, password=EDL_PASSWORD, edl_token=EDL_TOKEN, creds=first)
        ref = credentials.fetch_credentials("POCLOUD", account.settings)
        assert loader(ref) == first

    def down(rs: responses.RequestsMock) -> None:
        replay_edl(rs, username=EDL_USER, password=EDL_PASSWORD, edl_token=EDL_TOKEN, creds=first,
                   s3credentials_status=503)

    clock.advance(24.5)  # 15.5 minutes left: within this Processor's margin, beyond the least one
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rs:
        down(rs)
        assert loader(ref) == first
        assert s3credentials_calls(rs) == 1  # it asked, and kept them
        clock.advance(0.7)  # 14.8 minutes left: within the least margin
        with pytest.raises(SourceUnavailable):
            loader(ref)

    credentials.clear_caches()
    clock.now = T0  # 40 minutes left, but S3 refused them
    credentials.forget_cached(ref, rejected=first)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rs:
        down(rs)
        with pytest.raises(SourceUnavailable):
            loader(ref)

    credentials.clear_caches()
    clock.now = T0 + dt.timedelta(minutes=10)  # 30 minutes left: taken and cached
    assert loader(ref) == first
    clock.advance(10)  # 20 minutes left: within this Processor's margin, beyond the least one
    with responses.RequestsMock() as rs:
        replay_edl(rs, username=EDL_USER, password=EDL_PASSWORD, edl_token=EDL_TOKEN, creds=first)
        rs.replace(responses.GET, PODAAC_S3CREDENTIALS, body="<html>Earthdata Login</html>", status=200,
                   content_type="text/html")
        assert loader(ref) == first
        assert s3credentials_calls(rs) == 1  # it did ask, and got a page instead of credentials
    logged = log_capture.text()
    assert "could not refresh temporary S3 credentials" in logged
    for secret in (EDL_PASSWORD, EDL_TOKEN, first["secretAccessKey"], first["sessionToken"]):
        assert secret not in logged


def test_a_read_refused_as_expired_makes_the_retry_take_what_another_processor_stored(
        account: Account, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    # S3 refuses the first credentials early; meanwhile another Processor stored fresh ones.
    first, second, daac = ended_early(clock, monkeypatch)
    with responses.RequestsMock() as rs:
        replay_edl(rs, username=EDL_USER, password=EDL_PASSWORD, edl_token=EDL_TOKEN, creds=first)
        ref = credentials.fetch_credentials("POCLOUD", account.settings)
    run = account.run_context(ref)
    loader = processor_loader(account.settings)
    before, after = account.items[:2]

    with responses.RequestsMock():  # no Earthdata Login traffic: the retry takes the stored credentials
        assert process_item(ProcessorEvent(item=before, run=run), account.bucket, loader).status == "succeeded"
        clock.advance(10)
        put_secure(account.ssm, ref.parameter, json.dumps(second))  # another Processor's refresh
        with pytest.raises(CredentialsExpired):
            process_item(ProcessorEvent(item=after, run=run), account.bucket, loader)
        retried = process_item(ProcessorEvent(item=after, run=run), account.bucket, loader)

    assert retried.status == "succeeded"
    assert daac.keys_used() == [first["accessKeyId"], first["accessKeyId"], second["accessKeyId"]]
    assert daac.refused() == [(after.granules[0].url.rsplit("/", 1)[-1], first["accessKeyId"])]


def test_a_read_refused_as_expired_gets_new_credentials_when_none_were_stored_since(
        account: Account, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second, daac = ended_early(clock, monkeypatch)
    item = account.items[0]
    with responses.RequestsMock() as rs:
        for creds in (first, second):
            replay_edl(rs, username=EDL_USER, password=EDL_PASSWORD, edl_token=EDL_TOKEN, creds=creds)
        ref = credentials.fetch_credentials("POCLOUD", account.settings)
        run, loader = account.run_context(ref), processor_loader(account.settings)
        assert loader(ref) == first  # cached by this Processor
        clock.advance(10)
        errors: list[str] = []
        result = with_retries(functools.partial(process_item, ProcessorEvent(item=item, run=run), account.bucket,
                                                loader), errors)
        fetched = s3credentials_calls(rs)

    assert result.status == "succeeded" and errors == ["CredentialsExpired"]
    assert fetched == 2  # the parameter still held the refused credentials: Earthdata Login gave new ones
    assert account.stored(ref) == second
    assert daac.keys_used() == [first["accessKeyId"], second["accessKeyId"]]


def test_the_atl06_reader_also_drops_credentials_s3_refused(account: Account, clock: Clock,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from granulemap.recipes import atl06_cell_stats
    from granulemap.recipes.atl06_cell_stats import CellItem

    class ExpiredOnOpen:
        """Atl06Granule as it behaves when S3 refuses the credentials as expired (see granule._diagnose_s3)."""

        def __init__(self, url: str, *, local_path: str | None, credentials: dict[str, str] | None):
            self.url, self.credentials = url, credentials

        def __enter__(self) -> Any:
            opened.append(self.credentials)
            raise CredentialsExpired(f"S3 credentials expired while reading {self.url}")

        def __exit__(self, *exc: object) -> None:
            return None

    opened: list[dict[str, str] | None] = []
    monkeypatch.setattr(atl06_cell_stats, "Atl06Granule", ExpiredOnOpen)
    first, second, _ = ended_early(clock, monkeypatch)  # the stand-in above refuses them instead of S3
    atl06 = get_recipe("atl06-cell-stats")
    params = atl06.parse_params({})
    url = "s3://nsidc-cumulus-prod-protected/ATLAS/ATL06/006/2019/02/21/ATL06_20190221121851_08410203_006_01.h5"
    item = Item(id="p6-1-atl06", granules=[Granule(url=url)],
                extra=CellItem(parent_cell=1, store_id="any").model_dump())
    with responses.RequestsMock() as rs:
        for creds in (first, second):
            replay_edl(rs, username=EDL_USER, password=EDL_PASSWORD, edl_token=EDL_TOKEN, creds=creds)
        ref = credentials.fetch_credentials("POCLOUD", account.settings)
        run = RunContext(run_id="atl06-expiry", recipe=atl06.name, params=params.model_dump(mode="json"),
                         config_id="atl06-expiry", start=dt.date(2019, 2, 1), end=dt.date(2019, 2, 28),
                         daac="POCLOUD", credentials=ref)
        loader = processor_loader(account.settings)
        with pytest.raises(CredentialsExpired):
            process_item(ProcessorEvent(item=item, run=run), account.bucket, loader)
        assert loader(ref) == second  # the next attempt's credentials: not the refused ones
        assert s3credentials_calls(rs) == 2
    assert opened == [first]


# ---- 3. a full local execution ---------------------------------------------------------------------------------
def cmr_page_of(paths: list[Path]) -> dict[str, Any]:
    """One CMR granules.umm_json page listing ``paths``: test_secrets' edited copy of the real page (renamed to the
    MUR25 sample), copied once per granule, renamed and given that day's 21:00-to-21:00 GHRSST time range."""
    from test_secrets import mur25_page

    base, items = mur25_page(), []
    for path in paths:
        day = recipe.granule_time(path.name).date()
        begin = dt.datetime.combine(day - dt.timedelta(days=1), dt.time(21), tzinfo=dt.UTC)
        one = edited_granule(base, MUR25.stem, path.stem, f"{begin:%Y-%m-%dT%H:%M:%S.000Z}",
                             f"{begin + dt.timedelta(days=1):%Y-%m-%dT%H:%M:%S.000Z}")
        items += one["items"]
    return {**base, "hits": len(items), "items": items}


@pytest.mark.slow
def test_a_local_run_whose_credentials_expire_part_way_refreshes_them_and_loses_no_item(
        fresh_process, granules: list[Path], clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    from granulemap.local.engine import LocalEngine

    from test_cmr import direct_links

    first, second = credentials_at("first", T0 + FIRST_LIFETIME), credentials_at("second", T0 + dt.timedelta(hours=1))
    daac = DaacS3(clock, minutes_per_read=MINUTES_PER_ITEM)  # each item's read takes MINUTES_PER_ITEM
    daac.issue(first)
    daac.issue(second)
    install_daac_s3(monkeypatch, daac)
    page = cmr_page_of(granules)
    links = direct_links(page)
    with responses.RequestsMock() as rs:
        rs.add_passthru(re.compile(r"http://(127\.0\.0\.1|localhost):\d+"))  # the moto server
        replay_cmr(rs, [page])
        for creds in (first, second):
            replay_edl(rs, username=EDL_USER, password=EDL_PASSWORD, edl_token=EDL_TOKEN, creds=creds)
        with LocalEngine(in_process=True) as engine:
            s3, ssm = engine.client("s3"), engine.client("ssm")
            s3.create_bucket(Bucket=DAAC_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
            for path, link in zip(granules, links, strict=True):
                s3.put_object(Bucket=DAAC_BUCKET, Key=link.removeprefix(f"s3://{DAAC_BUCKET}/"),
                              Body=path.read_bytes())
            put_secure(ssm, USERNAME_PARAMETER, EDL_USER)
            put_secure(ssm, PASSWORD_PARAMETER, EDL_PASSWORD)
            # One granule per item: the credentials expire between the items' starts (MINUTES_PER_ITEM apart).
            desc = engine.run({"recipe": recipe.name, "start": "2018-12-01", "end": "2018-12-08", "group": "granule"},
                              name="expiry-run", timeout=300)
            summary = json.loads(s3.get_object(Bucket=engine.bucket, Key=layout.summary_key("expiry-run"))["Body"]
                                 .read())
            (parameter,) = [p["Name"] for p in ssm.describe_parameters()["Parameters"]
                            if p["Name"].endswith("/daac-credentials/POCLOUD")]
            stored = json.loads(ssm.get_parameter(Name=parameter, WithDecryption=True)["Parameter"]["Value"])
        fetched = s3credentials_calls(rs)

    starts = [T0 + dt.timedelta(minutes=MINUTES_PER_ITEM * n) for n in range(len(granules))]
    expected_keys = [first["accessKeyId"] if T0 + FIRST_LIFETIME - start > credentials.REFRESH_MARGIN
                     else second["accessKeyId"] for start in starts]
    assert expected_keys.count(first["accessKeyId"]) == 2 and starts[-1] >= T0 + FIRST_LIFETIME  # part way
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    assert summary["items"] == {"total": len(granules), "succeeded": len(granules), "failed": 0, "skipped": 0}
    processors = [i for i in engine.invocations if i["function"] == "ProcessorFunction"]
    assert len(processors) == len(granules) and not any(i["errored"] for i in processors)  # no retry needed
    # The refresh was FetchCredentials' (invoked by a Processor, which holds no Earthdata Login secret): its second call.
    assert [i["function"] for i in engine.invocations].count("CredentialFetcherFunction") == 2
    assert daac.keys_used() == expected_keys and daac.refused() == []
    assert sorted(name for name, _, _ in daac.reads) == sorted(p.name for p in granules)  # each read once
    assert fetched == 2 and stored == second


def test_an_atl06_read_refused_for_expired_credentials_is_diagnosed_as_expired_not_as_a_throttle(monkeypatch) -> None:
    """h5coro hides S3's error, so the recipe asks S3 itself. S3 answers a request with an expired session token
    400 ExpiredToken, but a HEAD's answer has no body, and botocore then names the error by its status alone ("400"):
    a HEAD made an expiry look like a throttle, retried with the same credentials. A server answering as S3 does."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from granulemap.recipes.atl06.granule import _diagnose_s3

    body = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ExpiredToken</Code>'
            b"<Message>The provided token has expired.</Message></Error>")
    asked: list[str] = []

    class ExpiredS3(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802
            asked.append("HEAD")
            self.send_response(400)
            self.send_header("Content-Type", "application/xml")
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802
            asked.append(f"GET {self.headers.get('Range')}")
            self.send_response(400)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), ExpiredS3)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
        error = _diagnose_s3("s3://nsidc-cumulus-prod-protected/ATLAS/ATL06/006/ATL06_x.h5",
                             {"accessKeyId": "ASIAEXAMPLE", "secretAccessKey": "s", "sessionToken": "t"},
                             "ATL06_x.h5", "TypeError: 'NoneType' object is not subscriptable")
    finally:
        server.shutdown()
    assert isinstance(error, CredentialsExpired), error
    assert asked == ["GET bytes=0-0"]
