"""Granule search in NASA CMR through earthaccess: direct s3:// links, nominal times, the cloud provider and, for
recipes that need them, the granules' footprints.

earthaccess asks CMR's ``collections.umm_json`` for the collection's cloud provider, then pages through
``granules.umm_json`` with the ``CMR-Search-After`` header. Footprints come from the UMM-G record's ``GPolygons``;
records that describe their extent otherwise (NSIDC's ATL06 records have only orbit parameters) get the polygons CMR
computes for them, which only CMR's legacy ``granules.json`` format carries: the same search is asked again in that
format and its polygons are joined by granule concept id. Failures become named errors: CMR being down, slow or
throttling is ``SourceUnavailable`` (the state machine retries it), a search CMR refuses is ``CatalogError``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import requests

from granulemap.errors import CatalogError, InvalidInput, SourceUnavailable
from granulemap.models import Granule, Ring, iso_time, may_hold_data_in, period_bounds
from granulemap.observability import logger

CMR_TIMEOUT_SECONDS = 30.0
"""Longest wait for any one CMR answer; after it the search fails with SourceUnavailable (and is retried)."""

CMR_LEGACY_GRANULES_URL = "https://cmr.earthdata.nasa.gov/search/granules.json"
"""CMR's legacy JSON granule search: the one format that carries the polygons CMR computes from orbit parameters."""

LEGACY_PAGE_SIZE = 2000
"""CMR's largest page."""

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


FOOTPRINT_SEARCH_KB_PER_GRANULE = 90
"""BuildCatalog's memory per granule of a search with footprints (atl06-cell-stats: the CMR records, their polygons,
the items and the manifest): BENCHMARKS.md's memory section, "At scale" (88 KB a granule on 2026-12-02)."""
FOOTPRINT_SEARCH_BASE_MB = 220
"""BuildCatalog's peak in that measurement less ``FOOTPRINT_SEARCH_KB_PER_GRANULE`` for each granule (about 213 MB):
the handler's imports, and what does not grow with the granules."""


def _refuse_more_than_memory_holds(hits: int, collection: str, start: dt.date, end: dt.date,
                                   bbox: tuple[float, float, float, float] | None) -> None:
    """InvalidInput when a search with footprints finds more granules (``hits``, CMR's count) than this function's
    memory (Lambda's AWS_LAMBDA_FUNCTION_MEMORY_SIZE; no check without it) holds: earthaccess returns every record
    at once, and a Lambda function out of memory is ended (Runtime.OutOfMemory) with no word of why."""
    memory_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE") or 0)
    needed_mb = FOOTPRINT_SEARCH_BASE_MB + hits * FOOTPRINT_SEARCH_KB_PER_GRANULE / 1024
    if memory_mb and needed_mb > memory_mb:
        where = f" in the bbox {list(bbox)}" if bbox else ""
        raise InvalidInput(
            f"field 'end': NASA CMR lists {hits:,} granules of {collection} from {start} to {end}{where}: BuildCatalog "
            f"would need about {needed_mb:,.0f} MB to hold them (about {FOOTPRINT_SEARCH_KB_PER_GRANULE} KB each), "
            f"more than its {memory_mb} MB (template.yaml's CatalogBuilderMemorySize). Run shorter ranges (a month "
            "at a time), give a bbox, or raise CatalogBuilderMemorySize")


def _produced(umm: dict[str, Any]) -> str | None:
    """When the granule's data were produced (UMM-G ``DataGranule.ProductionDateTime``), as CMR gives it: a granule
    reprocessed, under its name or not, has a new one. (CMR's ``revision-date`` changes with any edit of the record,
    the metadata's too: a data centre's edit of every record would make every granule look replaced.)"""
    granule = umm.get("DataGranule")
    produced = granule.get("ProductionDateTime") if isinstance(granule, dict) else None
    return produced if isinstance(produced, str) and produced else None


def _search_failure(exc: Exception, collection: str) -> Exception:
    """The named error for a failed search (earthaccess's errors, or those of our own requests)."""
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
    cause = exc if isinstance(exc, requests.HTTPError) else exc.__cause__
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
    return iso_time(begin), iso_time(end)



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


def _found(umm: dict[str, Any], when: dt.datetime | None, start: dt.date, end: dt.date,
           data_span: tuple[dt.timedelta, dt.timedelta] | None) -> bool:
    """Whether a granule belongs to the days ``start``..``end``: its time's UTC day is one of them, or with
    ``data_span`` its CMR time range overlaps them (a record without a range: its time and the span)."""
    covered = _time_range(umm) if data_span is not None else None
    if covered is not None:
        first, after = period_bounds(start, end)
        return covered[0] < after and covered[1] >= first
    return may_hold_data_in(when, start, end, data_span)


def footprint_from_umm(umm: dict[str, Any]) -> list[Ring]:
    """Outer rings of a UMM-G record's ``GPolygons`` (none when it describes its extent otherwise, e.g. by ``Orbit``
    parameters, as NSIDC's ECS ATL06 records do). Exclusion zones are ignored: covering a little more only adds
    cells that turn out empty."""
    geometry = umm.get("SpatialExtent", {}).get("HorizontalSpatialDomain", {}).get("Geometry", {})
    rings = []
    for polygon in geometry.get("GPolygons", []):
        points = polygon.get("Boundary", {}).get("Points", [])
        rings.append([(float(p["Longitude"]), float(p["Latitude"])) for p in points])
    return [r for r in rings if len(r) >= 3]


def footprint_from_legacy(entry: dict[str, Any]) -> list[Ring]:
    """Outer rings of a legacy-JSON granule entry's ``polygons`` ("lat lon lat lon ..." strings, the first of each
    polygon its outer ring, the others holes, which are ignored); CMR computes these even for records whose UMM-G has
    only orbit parameters."""
    rings = []
    for polygon in entry.get("polygons", []):
        numbers = [float(v) for v in polygon[0].split()]
        rings.append(list(zip(numbers[1::2], numbers[0::2], strict=True)))
    return [r for r in rings if len(r) >= 3]


def _readable_footprint(
    parse: Callable[[dict[str, Any]], list[Ring]], record: dict[str, Any], concept_id: str | None
) -> list[Ring]:
    """``parse(record)``, or no rings when the record's polygons are malformed (logged): the granule then has no
    footprint, which a recipe that needs one reports by name."""
    try:
        return parse(record)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        logger.warning("malformed polygon in a CMR record: left out",
                       extra={"concept_id": concept_id, "error": f"{type(exc).__name__}: {exc}"})
        return []


def _temporal(start: dt.date, end: dt.date) -> tuple[str, str]:
    """The searched time range: the whole of each inclusive date, UTC."""
    return f"{start.isoformat()}T00:00:00Z", f"{end.isoformat()}T23:59:59Z"


def _legacy_search_parameters(
    collection: str, start: dt.date, end: dt.date, bbox: tuple[float, float, float, float] | None, provider: str
) -> dict[str, str]:
    """The query earthaccess sent to ``granules.umm_json`` for the same search, spelled as CMR reads it."""
    params = {"short_name": collection, "provider": provider, "temporal[]": ",".join(_temporal(start, end))}
    if bbox is not None:
        params["bounding_box"] = ",".join(str(float(v)) for v in bbox)
    return params


def legacy_footprints(
    collection: str, start: dt.date, end: dt.date, bbox: tuple[float, float, float, float] | None, provider: str
) -> dict[str, list[Ring]]:
    """Footprints of every granule of the search, by granule concept id, from CMR's legacy ``granules.json``.

    Pages of ``LEGACY_PAGE_SIZE`` are followed with the ``CMR-Search-After`` header; only the polygons are kept from
    each page. Errors are those of the search itself (SourceUnavailable, CatalogError).
    """
    what = f"{collection} footprints (granules.json)"
    params = {**_legacy_search_parameters(collection, start, end, bbox, provider), "page_size": str(LEGACY_PAGE_SIZE)}
    headers: dict[str, str] = {}
    footprints: dict[str, list[Ring]] = {}
    pages = 0
    while True:
        try:
            response = requests.get(CMR_LEGACY_GRANULES_URL, params=params, headers=headers,
                                    timeout=CMR_TIMEOUT_SECONDS)
            response.raise_for_status()
            page = response.json()
        except requests.RequestException as exc:
            raise _search_failure(exc, what) from None
        feed = page.get("feed") if isinstance(page, dict) else None
        entries = feed.get("entry") if isinstance(feed, dict) else None
        if not isinstance(entries, list):
            raise SourceUnavailable(f"CMR gave an unreadable answer while searching {what} (no feed.entry list)")
        pages += 1
        for entry in entries:
            concept_id = entry.get("id") if isinstance(entry, dict) else None
            rings = _readable_footprint(footprint_from_legacy, entry, concept_id)
            if rings and concept_id:
                footprints[str(concept_id)] = rings
        search_after = response.headers.get("CMR-Search-After")
        if len(entries) < LEGACY_PAGE_SIZE or not search_after:
            break
        headers["CMR-Search-After"] = search_after
    logger.info("CMR legacy footprints read", extra={"collection": collection, "pages": pages,
                                                     "granules_with_polygons": len(footprints)})
    return footprints


def search_granules(
    collection: str,
    start: dt.date,
    end: dt.date,
    bbox: tuple[float, float, float, float] | None,
    *,
    footprints: bool = False,
    time_from_name: Callable[[str], dt.datetime | None] | None = None,
    data_span: tuple[dt.timedelta, dt.timedelta] | None = None,
) -> tuple[list[Granule], str | None, list[dict[str, Any]]]:
    """Cloud-hosted granules of ``collection`` whose nominal time is within the inclusive dates; with ``data_span``
    (``Recipe.data_span``: a recipe whose granules may hold data of two days, and which keeps only the data of its
    range), those whose CMR time range overlaps the days, a granule crossing midnight at the range's start or end
    included (a record without a time range: by its name's time and the span, as a folder's file).

    A granule's time is ``time_from_name`` of its file name when that gives one (the recipe's reading of its file
    names, which a run on a folder of the same files uses: both then put a granule in the same day and month),
    else the middle of its CMR time range (``nominal_time``). With ``time_from_name``, CMR is searched a day wider on
    each side: a name's time may lie outside the granule's CMR range (an ATL06 name gives 12:18:51 for a range from
    12:19:05), and a granule named for the range's last seconds but recorded from after it would be in no month.

    Returns (granules with their direct s3:// link and nominal time, sorted by time; the cloud provider, e.g.
    POCLOUD, or None when nothing matched; the UMM records of those granules). With ``footprints`` each granule also
    gets its polygons (``Granule.footprint``): from its UMM-G record, else from CMR's legacy JSON of the same search
    (asked only when some record has none); a granule CMR has no polygon for keeps ``footprint=None``.
    """
    import earthaccess

    # Order matters: earthaccess resolves cloud_hosted against short_name, so short_name comes first.
    margin = dt.timedelta(days=1 if time_from_name is not None else 0)
    searched = (start - margin, end + margin)
    kwargs: dict[str, Any] = {"short_name": collection, "cloud_hosted": True, "temporal": _temporal(*searched)}
    if bbox is not None:
        kwargs["bounding_box"] = bbox
    try:
        with _default_request_timeout(CMR_TIMEOUT_SECONDS):
            if footprints:
                _refuse_more_than_memory_holds(earthaccess.DataGranules().parameters(**kwargs).hits(), collection,
                                               start, end, bbox)
            results = earthaccess.search_data(**kwargs)
    except (requests.RequestException, RuntimeError, KeyError) as exc:
        raise _search_failure(exc, collection) from None

    found: list[tuple[Granule, dict[str, Any], str | None]] = []
    providers: set[str] = set()
    without_links = outside = 0
    for result in results:
        umm = result["umm"]
        links = [link for link in result.data_links(access="direct") if link.startswith("s3://")]
        if not links:
            without_links += 1
            continue
        named = time_from_name(links[0].rsplit("/", 1)[-1]) if time_from_name is not None else None
        when = named if named is not None else nominal_time(umm)
        if not _found(umm, when, start, end, data_span):
            outside += 1
            continue
        meta = result.get("meta", {})
        revision = _produced(umm) or meta.get("revision-date")
        found.append((Granule(url=links[0], time=when, revision=revision), umm, meta.get("concept-id")))
        if meta.get("provider-id"):
            providers.add(meta["provider-id"])
    found.sort(key=lambda entry: (entry[0].time, entry[0].url))

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
    provider = next(iter(providers), None)
    logger.info("CMR search done", extra={**search, "granules": len(found), "outside_range": outside,
                                          "provider": provider})
    if not found:
        logger.info("CMR found no granules: the run will have no items", extra=search)
    granules = [granule for granule, _, _ in found]
    if footprints and found:
        granules = _with_footprints(found, collection, *searched, bbox, provider)  # the same search, for polygons
    return granules, provider, [umm for _, umm, _ in found]


def _with_footprints(
    found: list[tuple[Granule, dict[str, Any], str | None]],
    collection: str,
    start: dt.date,
    end: dt.date,
    bbox: tuple[float, float, float, float] | None,
    provider: str | None,
) -> list[Granule]:
    """The granules with their footprints: UMM-G polygons first, CMR's legacy polygons for the records without."""
    from_umm = [_readable_footprint(footprint_from_umm, umm, concept_id) for _, umm, concept_id in found]
    legacy: dict[str, list[Ring]] = {}
    if not all(from_umm) and provider is not None:
        legacy = legacy_footprints(collection, start, end, bbox, provider)
    granules = []
    for (granule, _, concept_id), rings in zip(found, from_umm, strict=True):
        rings = rings or legacy.get(concept_id or "", [])
        granules.append(granule.model_copy(update={"footprint": rings or None}))
    missing = sum(1 for g in granules if g.footprint is None)
    if missing:
        logger.warning("granules without a polygon footprint in CMR", extra={"collection": collection,
                                                                             "count": missing})
    return granules
