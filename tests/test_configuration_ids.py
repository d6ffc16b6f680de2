"""Configuration ids name the folders of every deployed stack's series (results/<recipe>/<id>/, outputs/<recipe>/<id>/):
a monthly run finds the months before it there. They are a contract with the data already in users' buckets, so the
built-in recipes' ids are pinned here as literals. A change that moves them (a new parameter with a default, a
renamed one, another hash) would start every series anew in an empty folder without a word: if this test fails, keep
the old ids (leave a new parameter out of the hash while it has its default) or tell users how to move their data."""

from __future__ import annotations

import re

import pytest

from granulemap.models import ExecutionInput
from granulemap.recipes import get_recipe

PINNED = {  # (recipe, params) -> the id deployed stacks hold their series under (granulemap 0.x, 2026)
    ("sst-global-mean", ()): "ocean-0ce2392566",
    ("sst-global-mean", (("method", "podaac-tutorial"),)): "podaac-tutorial-09bbe335e6",
    ("sst-box-mean", ()): "box-170_-5_-120_5-58b98e2d66",
    ("atl06-cell-stats", ()): "p6-c12-d597eec96f",
}


@pytest.mark.parametrize("recipe_name, params", list(PINNED))
def test_the_built_in_configuration_ids_do_not_move(recipe_name: str, params: tuple) -> None:
    recipe = get_recipe(recipe_name)
    assert recipe.config_id(recipe.parse_params(dict(params))) == PINNED[recipe_name, params]


@pytest.mark.parametrize("method", ["ocean", "podaac-tutorial"])
def test_an_sst_configuration_id_is_its_method_and_the_hash_of_its_parameters(method: str) -> None:
    """The rule the pinned ids follow, computed here from the parameters (sst-global-mean's one: the method): the
    first ten hex digits of the SHA-256 of the JSON of {"params": ...} with sorted keys, after a readable slug."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps({"params": {"method": method}}, sort_keys=True).encode()).hexdigest()[:10]
    params = () if method == "ocean" else (("method", method),)
    recipe = get_recipe("sst-global-mean")
    assert recipe.config_id(recipe.parse_params(dict(params))) == PINNED["sst-global-mean", params] == f"{method}-{digest}"


@pytest.mark.parametrize(("recipe_name", "slug", "params"), [
    ("sst-box-mean", "box-170_-5_-120_5", {"box": [-170.0, -5.0, -120.0, 5.0]}),  # Niño 3.4, the default box
    ("atl06-cell-stats", "p6-c12", {"child_order": 12, "parent_order": 6}),
])
def test_the_other_pinned_ids_follow_the_same_rule(recipe_name: str, slug: str, params: dict) -> None:
    """The pinned ids of sst-box-mean and atl06-cell-stats, derived here: slug, then the first ten hex digits of the
    SHA-256 of {"params": <the default parameters>} as sorted-key JSON."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps({"params": params}, sort_keys=True).encode()).hexdigest()[:10]
    assert PINNED[recipe_name, ()] == f"{slug}-{digest}"


@pytest.mark.parametrize("recipe_name, explicit", [
    ("sst-global-mean", {"method": "ocean"}),
    ("sst-box-mean", {"box": [-170, -5, -120, 5]}),
    ("atl06-cell-stats", {"child_order": 12, "parent_order": 6}),
])
def test_a_default_given_explicitly_or_in_another_order_is_the_same_configuration(recipe_name: str,
                                                                                 explicit: dict) -> None:
    """The schedule's input has no params; a person's run may spell the defaults out: one series, not two."""
    recipe = get_recipe(recipe_name)
    execution = ExecutionInput.model_validate({"recipe": recipe_name, "start": "2019-01-01", "end": "2019-01-31",
                                               "params": explicit})
    assert recipe.config_id(recipe.parse_params(explicit), execution) == PINNED[recipe_name, ()]


@pytest.mark.parametrize("recipe_name", ["sst-global-mean", "sst-box-mean", "atl06-cell-stats"])
def test_another_collection_is_another_configuration_and_the_default_one_named_is_the_same(recipe_name: str) -> None:
    """Rows of MUR at 0.01° and of MUR25 in one series would be two products, a day twice (rows are keyed by granule
    name): a collection that is not the recipe's default makes a configuration of its own. Naming the default
    collection, as the schedule's input may, keeps the pinned id."""
    recipe = get_recipe(recipe_name)
    params = recipe.parse_params({})
    month = {"recipe": recipe_name, "start": "2019-01-01", "end": "2019-01-31"}
    named_default = ExecutionInput.model_validate({**month, "collection": recipe.collection})
    assert recipe.collection is not None
    assert recipe.config_id(params, named_default) == PINNED[recipe_name, ()]
    other = ExecutionInput.model_validate({**month, "collection": "MUR-JPL-L4-GLOB-v4.1"})
    third = ExecutionInput.model_validate({**month, "collection": "ATL06-ANOTHER"})
    ids = {recipe.config_id(params, other), recipe.config_id(params, third)}
    assert PINNED[recipe_name, ()] not in ids and len(ids) == 2
    assert all(i.startswith(PINNED[recipe_name, ()].rsplit("-", 1)[0] + "-") for i in ids)  # the readable slug stays


@pytest.mark.parametrize("label", ["../../x", "a/b", ".hidden", "", "x" * 65, "sp ace"])
def test_a_slug_that_would_leave_the_recipes_folders_is_refused(label: str) -> None:
    """A user's recipe whose slug() is a parameter: label=../../x wrote results and products at the bucket's root
    (and a/b nested keys that the run's listing of done results never finds: recomputed every run)."""
    from pydantic import BaseModel

    from granulemap.errors import InvalidInput
    from granulemap.recipes.base import Recipe

    class LabelParams(BaseModel):
        label: str

    class Labelled(Recipe):
        name = "labelled"
        description = "a recipe named by a parameter"
        Params = LabelParams

        def slug(self, params):  # type: ignore[no-untyped-def]
            return params.label

        def process(self, item, params, access, run):  # type: ignore[no-untyped-def]
            return {}

        def combine(self, results, run, params, bucket):  # type: ignore[no-untyped-def]
            return []

    with pytest.raises(InvalidInput, match=re.escape(f"recipe labelled: slug() gave {label!r}, which names S3 keys")):
        Labelled().config_id(LabelParams(label=label))
    assert Labelled().config_id(LabelParams(label="v1.2_b-3")).startswith("v1.2_b-3-")
    # and with the input's other checks, before anything runs (granulemap run and start call it first)
    from granulemap import catalog
    from granulemap.settings import Settings

    doc = {"recipe": "labelled", "start": "2019-01-01", "end": "2019-01-31", "collection": "C",
           "params": {"label": label}}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(catalog, "get_recipe", lambda name: Labelled())
        with pytest.raises(InvalidInput, match=re.escape(f"slug() gave {label!r}")):
            catalog.validate_input(doc, Settings(bucket="bkt"))
        catalog.validate_input({**doc, "params": {"label": "fine"}}, Settings(bucket="bkt"))
