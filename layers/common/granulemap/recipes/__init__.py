"""The recipe registry: the built-in recipes plus any registered under the ``granulemap.recipes`` entry points."""

from __future__ import annotations

import functools
import importlib
import sys
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
        raise InvalidInput(f"field 'recipe': unknown recipe {name!r}; installed: {', '.join(sorted(specs))} (a recipe "
                           f"of your own: pip install its package, and again after adding or renaming its entry "
                           f"point in the package's pyproject.toml)")
    try:
        recipe = _load(specs[name])
    except Exception as exc:  # noqa: BLE001 - a user's package: whatever its import raises, say which recipe
        raise InvalidInput(f"field 'recipe': recipe {name!r} cannot be loaded from its entry point {specs[name]}: "
                           f"{type(exc).__name__}: {exc}") from exc
    if recipe.name != name:
        raise InvalidInput(f"field 'recipe': the recipe registered as {name!r} ({specs[name]}) calls itself "
                           f"{recipe.name!r}: make its entry point's name and its Recipe.name the same")
    return recipe


def home_of(recipe: Recipe) -> str | None:
    """Where the code that defines ``recipe`` lives: its top-level package's folder, or its module's file (what
    errors.where_failed looks for in a traceback: the code the recipe's author can mend)."""
    top = sys.modules.get(type(recipe).__module__.split(".")[0])
    folders = list(getattr(top, "__path__", None) or [])
    return folders[0] if folders else getattr(top, "__file__", None)


__all__ = ["ENTRY_POINT_GROUP", "Recipe", "available", "get_recipe", "home_of"]
