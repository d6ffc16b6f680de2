"""Peak memory of BuildCatalog over a NASA CMR search of many ATL06 granules, and of Aggregate reading its manifest.

``catalog_memory_probe.py catalog N`` prints one JSON line: this fresh process's high-water mark (VmHWM) after
importing BuildCatalog's handler module (``imports_mb``) and after ``granulemap.catalog.build_catalog`` (what the
handler calls) has run atl06-cell-stats over a month of ``N`` granules found through CMR (``peak_mb``), with the
manifest's size and item count. ``catalog_memory_probe.py aggregate RUN_ID`` reads that run's manifest as Aggregate
does (``granulemap.aggregation.aggregate``'s first step: every item as a model, held to the end), and again as
atl06-cell-stats' combine does while those are held (``_not_written``), after importing Aggregate's handler module,
and prints the same figures.

CMR is the real ATL06 record (tests/data/cmr/earthaccess_atl06_granule_umm_json.json, with the direct s3:// link of
its Earthdata Cloud copy, as tests/test_cmr_footprints.py edits it) and its real legacy-JSON polygon, copied ``N``
times: each copy renamed for its own time (spread over October 2019) and its polygon turned in longitude (by the
golden angle, one copy after another) and, every other copy, mirrored to the other hemisphere, so the tracks cross
the whole band of latitudes the real one does, all round the globe. The answers are made page by page as earthaccess
and granulemap ask for them (``responses`` callbacks, pages of 2,000 with CMR-Search-After), so no page is held
here before or after its request, as none is in Lambda. S3 is a moto server in another process
(``AWS_ENDPOINT_URL``): the objects written are not in this process, as they are not in the function's.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import ROOT, vm_hwm_mb  # noqa: E402

DATA = ROOT / "tests" / "data" / "cmr"
BUCKET = "granulemap-catalog-memory"
MONTH = ("2019-10-01", "2019-10-31")
PROVIDER = "NSIDC_CPRD"
PAGE = 2000
GOLDEN_ANGLE = 137.50776405003785


def _load(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


def _when(k: int, n: int) -> dt.datetime:
    start = dt.datetime.fromisoformat(MONTH[0]).replace(tzinfo=dt.UTC)
    return start + dt.timedelta(seconds=(31 * 86400 - 600) * k / n)


def _name(k: int, n: int) -> str:
    return f"ATL06_{_when(k, n):%Y%m%d%H%M%S}_{k % 1387:04d}05{k % 14 + 1:02d}_006_01.h5"


class Cmr:
    """CMR's answers for a search of ``n`` copies of the recorded granule: UMM-JSON pages, the hit count, and the
    legacy-JSON pages of the same search."""

    def __init__(self, n: int):
        self.n = n
        page = _load("earthaccess_atl06_granule_umm_json.json")
        self.umm = page["items"][0]
        self.legacy = _load("earthaccess_atl06_granule_legacy_json.json")["feed"]["entry"][0]
        self.collection = _load("cmr_collections_umm_json_MUR-JPL-L4-GLOB-v4.1.json")
        self.collection["items"][0]["meta"]["provider-id"] = PROVIDER

    def _umm(self, k: int) -> dict[str, Any]:
        item = copy.deepcopy(self.umm)
        name, when = _name(k, self.n), _when(k, self.n)
        item["meta"].update({"concept-id": f"G{k:010d}-{PROVIDER}", "provider-id": PROVIDER,
                             "revision-date": "2024-01-01T00:00:00.000Z"})
        umm = item["umm"]
        umm["GranuleUR"] = name.removesuffix(".h5")
        umm["TemporalExtent"]["RangeDateTime"] = {
            "BeginningDateTime": f"{when:%Y-%m-%dT%H:%M:%S}.000Z",
            "EndingDateTime": f"{when + dt.timedelta(minutes=5):%Y-%m-%dT%H:%M:%S}.000Z"}
        umm["RelatedUrls"].append({"URL": f"s3://nsidc-cumulus-prod-protected/ATLAS/ATL06/006/{when:%Y/%m/%d}/{name}",
                                   "Type": "GET DATA VIA DIRECT ACCESS"})
        return item

    def _legacy(self, k: int) -> dict[str, Any]:
        entry = copy.deepcopy(self.legacy)
        entry["id"] = f"G{k:010d}-{PROVIDER}"
        numbers = [float(v) for v in entry["polygons"][0][0].split()]
        turn, sign = (k * GOLDEN_ANGLE) % 360, -1 if k % 2 else 1
        lat = [sign * v for v in numbers[0::2]]
        lon = [(v + turn + 180) % 360 - 180 for v in numbers[1::2]]
        if sign < 0:  # mirrored: the ring's order reversed keeps it counter-clockwise
            lat, lon = lat[::-1], lon[::-1]
        entry["polygons"] = [[" ".join(f"{a:.6f} {b:.6f}" for a, b in zip(lat, lon, strict=True))]]
        return entry

    def _page(self, request: Any) -> int:
        after = request.headers.get("CMR-Search-After")
        return 0 if after is None else int(json.loads(after)[0])

    def _headers(self, number: int) -> dict[str, str]:
        headers = {"CMR-Hits": str(self.n), "Content-Type": "application/json"}
        if (number + 1) * PAGE < self.n:
            headers["CMR-Search-After"] = json.dumps([number + 1])
        return headers

    def umm_page(self, request: Any) -> tuple[int, dict[str, str], bytes]:
        size = int(parse_qs(urlparse(request.url).query).get("page_size", ["10"])[0])
        if size == 0:
            return 200, self._headers(0), json.dumps({"hits": self.n, "took": 5, "items": []}).encode()
        number = self._page(request)
        items = [self._umm(k) for k in range(number * PAGE, min(self.n, (number + 1) * PAGE))]
        return 200, self._headers(number), json.dumps({"hits": self.n, "took": 5, "items": items}).encode()

    def legacy_page(self, request: Any) -> tuple[int, dict[str, str], bytes]:
        number = self._page(request)
        entries = [self._legacy(k) for k in range(number * PAGE, min(self.n, (number + 1) * PAGE))]
        return 200, self._headers(number), json.dumps({"feed": {"entry": entries}}).encode()


def catalog(n: int) -> dict[str, Any]:
    import responses

    sys.path.insert(0, str(ROOT / "functions" / "catalog_builder"))
    import app  # noqa: F401  (BuildCatalog's handler module: its imports are the function's)

    imports_mb = vm_hwm_mb()
    from granulemap import layout
    from granulemap.catalog import build_catalog
    from granulemap.settings import Settings
    from granulemap.storage import Bucket

    cmr = Cmr(n)
    search = "https://cmr.earthdata.nasa.gov/search"
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rs:
        rs.get(f"{search}/collections.umm_json", json=cmr.collection)
        rs.add_callback("GET", f"{search}/granules.umm_json", callback=cmr.umm_page)
        rs.add_callback("GET", f"{search}/granules.json", callback=cmr.legacy_page)
        out = build_catalog({"recipe": "atl06-cell-stats", "start": MONTH[0], "end": MONTH[1]}, "probe-run",
                            Settings(bucket=BUCKET), Bucket(BUCKET))
    peak = vm_hwm_mb()
    manifest = Bucket(BUCKET).get_bytes(layout.manifest_key("probe-run"))
    references = sum(len(item["granules"]) for item in json.loads(manifest))
    return {"granules": n, "imports_mb": round(imports_mb, 1), "peak_mb": round(peak, 1), "items": out.catalog.count,
            "granule_references": references, "manifest_mb": round(len(manifest) / 2**20, 1)}


def aggregate(run_id: str) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "functions" / "aggregator"))
    import app  # noqa: F401  (Aggregate's handler module)

    imports_mb = vm_hwm_mb()
    from granulemap import layout
    from granulemap.models import Item
    from granulemap.storage import Bucket

    from granulemap.recipes.atl06_cell_stats import _not_written

    bucket = Bucket(BUCKET)
    items = [Item.model_validate(i) for i in bucket.get_json(layout.manifest_key(run_id))]
    # Its combine's second read of the manifest (the cells without a result), while the items are held.
    failed, _ = _not_written(bucket, SimpleNamespace(run_id=run_id), [])  # type: ignore[arg-type]
    assert len(failed) == len(items)
    return {"items": len(items), "imports_mb": round(imports_mb, 1), "peak_mb": round(vm_hwm_mb(), 1)}


if __name__ == "__main__":
    what, arg = sys.argv[1], sys.argv[2]
    print(json.dumps(catalog(int(arg)) if what == "catalog" else aggregate(arg)))
