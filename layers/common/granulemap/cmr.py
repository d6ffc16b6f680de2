"""Granule search in NASA CMR through earthaccess: direct s3:// links, nominal times and the cloud provider.

earthaccess asks CMR's ``collections.umm_json`` for the collection's cloud provider, then pages through
``granules.umm_json`` with the ``CMR-Search-After`` header. Failures become named errors: CMR being down, slow or
throttling is ``SourceUnavailable`` (the state machine retries it), a search CMR refuses is ``CatalogError``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import requests

from granulemap.errors import CatalogError, InvalidInput, SourceUnavailable
from granulemap.models import Granule
from granulemap.observability import logger

CMR_TIMEOUT_SECONDS = 30.0
"""Longest wait for any one CMR answer; after it the search fails with SourceUnavailable (and is retried)."""

_TRANSIENT_STATUS = {429, 500, 502, 503, 504}
_timeout_lock = threading.Lock()


@contextlib.contextmanager
def _default_request_timeout(seconds: float) -> Iterator[None]:
    """Give every ``requests`` call in this block a timeout unless it sets its own.

    earthaccess sets none on its CMR requests, so a CMR that accepts the connection and never answers would hold
    BuildCatalog until Lambda kills it (an error the state machine does not retry). Searches are serialised by a lock
    because the default is set on the class.
    """
    with _timeout_lock:
        original = requests.Session.request

        def request(self: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = seconds
            return original(self, method, url, **kwargs)

        requests.Session.request = request  # type: ignore[method-assign]
        try:
            yield
        finally:
            requests.Session.request = original  # type: ignore[method-assign]


def _cmr_errors(response: requests.Response | None) -> str:
    """CMR's own explanation from an error answer ({"errors": [...]}), else the start of the body."""
    if response is None:
        return ""
    try:
        errors = response.json().get("errors")
    except (ValueError, AttributeError):
        errors = None
    if isinstance(errors, list) and errors:
        return "; ".join(str(e) for e in errors)
    return response.text[:200].strip()


def _search_failure(exc: Exception, collection: str) -> Exception:
    """The named error for a failed search."""
    if isinstance(exc, requests.Timeout):
        return SourceUnavailable(
            f"CMR did not answer within {CMR_TIMEOUT_SECONDS:g} s while searching {collection}"
        )
    if isinstance(exc, requests.ConnectionError):
        return SourceUnavailable(f"cannot reach CMR while searching {collection}: {type(exc).__name__}")
    if isinstance(exc, (KeyError, requests.JSONDecodeError)):
        # earthaccess reads some answers (its collection lookup, the CMR-Hits header) without checking their
        # status, so an error page surfaces as a missing key or as JSON that does not parse.
        return SourceUnavailable(f"CMR gave an unreadable answer while searching {collection} ({type(exc).__name__})")
    # earthaccess raises RuntimeError(CMR's answer) from the HTTPError of a failed granule search.
    cause = exc.__cause__
    if isinstance(cause, requests.HTTPError) and cause.response is not None:
        status = cause.response.status_code
        detail = _cmr_errors(cause.response)
        if status in _TRANSIENT_STATUS:
            return SourceUnavailable(f"CMR answered {status} while searching {collection}: {detail}")
        return CatalogError(f"CMR refused the search for {collection} ({status}): {detail}")
    return CatalogError(f"the CMR search for {collection} failed: {exc}")


def _time_range(umm: dict[str, Any]) -> tuple[dt.datetime, dt.datetime] | None:
    temporal = umm.get("TemporalExtent", {})
    rng = temporal.get("RangeDateTime", {})
    begin = rng.get("BeginningDateTime") or temporal.get("SingleDateTime")
    if not begin:
        return None
    end = rng.get("EndingDateTime") or begin
    return _parse_time(begin), _parse_time(end)


def _parse_time(text: str) -> dt.datetime:
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def nominal_time(umm: dict[str, Any]) -> dt.datetime | None:
    """The middle of a granule's time range (UTC): the day a granule belongs to.

    CMR matches every granule that overlaps the searched range, so a daily GHRSST L4 analysis (valid 21:00 the day
    before to 21:00, nominal 09:00) of the day after the range would otherwise be included; its middle is the
    09:00 analysis time in its file name.
    """
    span = _time_range(umm)
    if span is None:
        return None
    begin, end = span
    return begin + (end - begin) / 2


def search_granules(
    collection: str, start: dt.date, end: dt.date, bbox: tuple[float, float, float, float] | None
) -> tuple[list[Granule], str | None, list[dict[str, Any]]]:
    """Cloud-hosted granules of ``collection`` whose nominal time is within the inclusive dates.

    Returns (granules with their direct s3:// link and nominal time, sorted by time; the cloud provider, e.g.
    POCLOUD, or None when nothing matched; the UMM records of those granules).
    """
    import earthaccess

    # Order matters: earthaccess resolves cloud_hosted against short_name, so short_name comes first.
    kwargs: dict[str, Any] = {
        "short_name": collection,
        "cloud_hosted": True,
        "temporal": (f"{start.isoformat()}T00:00:00Z", f"{end.isoformat()}T23:59:59Z"),
    }
    if bbox is not None:
        kwargs["bounding_box"] = bbox
    try:
        with _default_request_timeout(CMR_TIMEOUT_SECONDS):
            results = earthaccess.search_data(**kwargs)
    except (requests.RequestException, RuntimeError, KeyError) as exc:
        raise _search_failure(exc, collection) from None

    found: list[tuple[Granule, dict[str, Any]]] = []
    providers: set[str] = set()
    without_links = outside = 0
    for result in results:
        umm = result["umm"]
        links = [link for link in result.data_links(access="direct") if link.startswith("s3://")]
        if not links:
            without_links += 1
            continue
        when = nominal_time(umm)
        if when is None or not start <= when.date() <= end:
            outside += 1
            continue
        found.append((Granule(url=links[0], time=when), umm))
        provider = result.get("meta", {}).get("provider-id")
        if provider:
            providers.add(provider)
    found.sort(key=lambda pair: (pair[0].time, pair[0].url))

    search = {"collection": collection, "start": start.isoformat(), "end": end.isoformat(),
              "bbox": list(bbox) if bbox else None}
    if without_links and not found:
        raise InvalidInput(
            f"field 'collection': CMR lists {without_links} granules of {collection} in the range but none has a "
            "direct s3:// link: the collection is not in NASA Earthdata Cloud; choose its cloud-hosted version"
        )
    if without_links:
        logger.warning("granules without a direct s3:// link left out", extra={**search, "count": without_links})
    if len(providers) > 1:
        raise InvalidInput(f"field 'collection': {collection} spans several providers: {sorted(providers)}")
    logger.info("CMR search done", extra={**search, "granules": len(found), "outside_range": outside,
                                          "provider": next(iter(providers), None)})
    if not found:
        logger.info("CMR found no granules: the run will have no items", extra=search)
    return [g for g, _ in found], (providers.pop() if providers else None), [umm for _, umm in found]

