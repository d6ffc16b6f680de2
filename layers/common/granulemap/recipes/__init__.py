"""The recipe registry: the built-in recipes plus any registered under the ``granulemap.recipes`` entry points."""

from __future__ import annotations

import functools
import importlib
from importlib.metadata import entry_points

from granulemap.errors import InvalidInput
from granulemap.recipes.base import Recipe

ENTRY_POINT_GROUP = "granulemap.recipes"

# Built-ins are listed here as well as in pyproject.toml: the Lambda layer holds the package's code without its
# installed metadata, so entry points of the package itself cannot be relied on there.
_BUILT_IN = {
    "sst-global-mean": "granulemap.recipes.sst_global_mean:recipe",
    "sst-box-mean": "granulemap.recipes.sst_box_mean:recipe",
    "atl06-cell-stats": "granulemap.recipes.atl06_cell_stats:recipe",
}


def _load(spec: str) -> Recipe:
    module_name, _, attr = spec.partition(":")
    obj = getattr(importlib.import_module(module_name), attr)
    recipe = obj() if isinstance(obj, type) else obj
    if not isinstance(recipe, Recipe):
        raise TypeError(f"{spec} is not a granulemap Recipe")
    return recipe


@functools.cache
def available() -> dict[str, str]:
    """Recipe name → 'module:attribute' for every installed recipe."""
    specs = dict(_BUILT_IN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        specs.setdefault(ep.name, ep.value)
    return specs


@functools.cache
def get_recipe(name: str) -> Recipe:
    specs = available()
    if name not in specs:
        raise InvalidInput(f"field 'recipe': unknown recipe {name!r}; installed: {', '.join(sorted(specs))}")
    recipe = _load(specs[name])
    if recipe.name != name:
        raise TypeError(f"recipe registered as {name!r} calls itself {recipe.name!r}")
    return recipe


__all__ = ["ENTRY_POINT_GROUP", "Recipe", "available", "get_recipe"]
