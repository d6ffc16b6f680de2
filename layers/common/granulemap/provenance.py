"""A provenance record per run: what was computed, from which granules, with which software, when."""

from __future__ import annotations

import datetime as dt
import platform
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, entry_points, version
from typing import Any

import granulemap

SOFTWARE = ("numpy", "h5py", "deflate", "h5coro", "mortie", "zarr", "s3fs", "earthaccess", "aws-lambda-powertools")
"""What the built-in recipes read, compute and write with (GHRSST: h5py, whose wheel holds its HDF5, and libdeflate;
ATL06: h5coro, mortie, zarr on s3fs), and the catalog's search (earthaccess). netCDF4, xarray and xdggs are not in the
Lambda layer: they are the tests' and the reader's tools, not the computation's."""


def software_versions(recipe: str | None = None) -> dict[str, str]:
    """Versions of granulemap, Python, the libraries of ``SOFTWARE`` and of the package that provides ``recipe``
    through an entry point (a user's recipe package: its version tells its results apart)."""
    from granulemap.recipes import ENTRY_POINT_GROUP

    versions = {"granulemap": granulemap.__version__, "python": platform.python_version()}
    for name in SOFTWARE:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=recipe or ""):
        if ep.dist is not None:
            versions.setdefault(ep.dist.name, ep.dist.version)
    return versions


def provenance_record(run: Any, items: list[Any], counts: Any, granules: Any = None,
                      failures: Sequence[Any] = ()) -> dict[str, Any]:
    """Recipe, parameters, software versions, input granules (and those that failed) with their revisions
    (``Granule.revision``) and time of one run."""
    return {
        "run_id": run.run_id,
        "recipe": run.recipe,
        "params": run.params,
        "config_id": run.config_id,
        "collection": run.collection,
        "bbox": list(run.bbox) if run.bbox else None,
        "start": run.start.isoformat() if run.start else None,
        "end": run.end.isoformat() if run.end else None,
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "software": software_versions(run.recipe),
        "items": counts.model_dump(),
        **({"granules": granules.model_dump()} if granules is not None else {}),
        "failed": [{"item": f.item, "granule": f.granule, "error": f.error} for f in failures],
        "input_granules": sorted({g.url for item in items for g in item.granules}),
        # Which copy of each granule was read: NASA reprocesses granules, some under the same name.
        "granule_revisions": dict(sorted({g.url: g.revision for item in items for g in item.granules
                                          if g.revision}.items())),
    }
