"""The recipe registry: the built-in recipes plus any registered under the ``granulemap.recipes`` entry points."""

from __future__ import annotations

import functools
import importlib
import importlib.util
from importlib.metadata import entry_points

from granulemap.errors import InvalidInput, frames_of, where_failed
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
    own = getattr(recipe, "name", None)
    if own is None:
        raise InvalidInput(f"field 'recipe': the recipe registered as {name!r} ({specs[name]}) has no name: set "
                           f"name = {name!r} in its class (the entry point's name)")
    if own != name:
        raise InvalidInput(f"field 'recipe': the recipe registered as {name!r} ({specs[name]}) calls itself "
                           f"{own!r}: make its entry point's name and its Recipe.name the same")
    return recipe


def home_of(name: str) -> str | None:
    """Where the code of the recipe registered as ``name`` lives: its top-level package's folder, or its module's
    file (what errors.where_failed looks for in a traceback: the code the recipe's author can mend). Found without
    importing it (a failure's record must not depend on the recipe loading); None if it cannot be found."""
    top = available().get(name, "").partition(":")[0].split(".")[0]
    try:
        spec = importlib.util.find_spec(top) if top else None
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    return list(spec.submodule_search_locations)[0] if spec.submodule_search_locations else spec.origin


def defined_at(function: object, name: str) -> str | None:
    """``where_failed``'s words for where ``function`` (a method of the recipe registered as ``name``) begins."""
    code = getattr(function, "__code__", None)
    return where_failed([(code.co_filename, code.co_firstlineno, code.co_name)], home_of(name)) if code else None


def failed_at(exc: BaseException, name: str) -> str | None:
    """Where ``exc``, raised while running the recipe registered as ``name``, happened: the ``where`` it was given
    (a result that cannot be stored: the recipe's ``process``), else its innermost frame in the recipe's own code."""
    return getattr(exc, "where", None) or where_failed(frames_of(exc), home_of(name))


__all__ = ["ENTRY_POINT_GROUP", "Recipe", "available", "defined_at", "failed_at", "get_recipe", "home_of"]
