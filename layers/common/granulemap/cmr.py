"""Granule search in NASA CMR through earthaccess: direct s3:// links, times and the cloud provider."""

from __future__ import annotations

import datetime as dt
from typing import Any

from granulemap.errors import CatalogError, InvalidInput, SourceUnavailable
from granulemap.models import Granule


def _begin_time(umm: dict[str, Any]) -> dt.datetime | None:
    temporal = umm.get("TemporalExtent", {})
    begin = temporal.get("RangeDateTime", {}).get("BeginningDateTime") or temporal.get("SingleDateTime")
    if not begin:
        return None
    when = dt.datetime.fromisoformat(begin.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def search_granules(
    collection: str, start: dt.date, end: dt.date, bbox: tuple[float, float, float, float] | None
) -> tuple[list[Granule], str | None, list[dict[str, Any]]]:
    """Granules of ``collection`` between the inclusive dates, as (granules, cloud provider, UMM records)."""
    import earthaccess
    import requests

    kwargs: dict[str, Any] = {
        "short_name": collection,
        "temporal": (f"{start.isoformat()}T00:00:00Z", f"{end.isoformat()}T23:59:59Z"),
        "cloud_hosted": True,
    }
    if bbox is not None:
        kwargs["bounding_box"] = bbox
    try:
        results = earthaccess.search_data(**kwargs)
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status is not None and (status >= 500 or status == 429):
            raise SourceUnavailable(f"CMR answered {status} while searching {collection}") from None
        raise CatalogError(f"CMR refused the search for {collection}: {status} {exc}") from None
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise SourceUnavailable(f"CMR did not answer while searching {collection}: {type(exc).__name__}") from None
    except RuntimeError as exc:  # earthaccess wraps CMR errors (e.g. unknown parameters) in RuntimeError
        raise CatalogError(f"CMR search for {collection} failed: {exc}") from None
    granules: list[Granule] = []
    providers: set[str] = set()
    records = []
    for result in results:
        links = [link for link in result.data_links(access="direct") if link.startswith("s3://")]
        if not links:
            continue
        umm = result["umm"]
        granules.append(Granule(url=links[0], time=_begin_time(umm)))
        provider = result.get("meta", {}).get("provider-id")
        if provider:
            providers.add(provider)
        records.append(umm)
    if len(providers) > 1:
        raise InvalidInput(f"field 'collection': {collection} spans several providers: {sorted(providers)}")
    return granules, (providers.pop() if providers else None), records
