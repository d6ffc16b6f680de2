"""The bucket layout: the one place that says where each object of a run lives.

``runs/``    per-run, intermediate: manifest, failure records, summary (expired by a lifecycle rule in AWS).
``results/`` per-item results, kept across runs so that a re-run or the monthly run skips finished items.
``outputs/`` the products (CSV, Zarr, PNG), cumulative per recipe configuration.
"""

from __future__ import annotations

RUNS_PREFIX = "runs/"
RESULTS_PREFIX = "results/"
OUTPUTS_PREFIX = "outputs/"


def manifest_key(run_id: str) -> str:
    return f"{RUNS_PREFIX}{run_id}/manifest.json"


def map_items_key(run_id: str) -> str:
    """The Distributed Map's list: the manifest's items not yet done."""
    return f"{RUNS_PREFIX}{run_id}/map-items.json"


def failure_prefix(run_id: str) -> str:
    return f"{RUNS_PREFIX}{run_id}/failures/"


def failure_key(run_id: str, item_id: str) -> str:
    return f"{failure_prefix(run_id)}{item_id}.json"


def summary_key(run_id: str) -> str:
    return f"{RUNS_PREFIX}{run_id}/summary.json"


MAP_RESULTS_PREFIX = f"{RUNS_PREFIX}map-results"
"""Where the Distributed Map's ResultWriter writes in AWS (a literal in the ASL file; nothing reads it back)."""


def result_prefix(recipe: str, config_id: str) -> str:
    return f"{RESULTS_PREFIX}{recipe}/{config_id}/"


def result_key(recipe: str, config_id: str, item_id: str) -> str:
    return f"{result_prefix(recipe, config_id)}{item_id}.json"


def partial_result_key(recipe: str, config_id: str, item_id: str) -> str:
    """A per-granule recipe's item some of whose granules failed: kept apart from ``result_key`` so the next
    catalog does not count the item done and the failed granules are tried again (``@`` is never in an item id)."""
    return f"{result_prefix(recipe, config_id)}{item_id}@partial.json"


def output_prefix(recipe: str, config_id: str) -> str:
    return f"{OUTPUTS_PREFIX}{recipe}/{config_id}/"


def output_key(recipe: str, config_id: str, name: str) -> str:
    return f"{output_prefix(recipe, config_id)}{name}"


def provenance_key(recipe: str, config_id: str, run_id: str) -> str:
    """One provenance record per run, kept with the products it describes."""
    return output_key(recipe, config_id, f"provenance/{run_id}.json")
