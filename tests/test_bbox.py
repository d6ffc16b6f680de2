"""A bbox narrows only the NASA CMR search: BuildCatalog refuses one that could change nothing, so that no one takes
a global mean for the box's (found by a newcomer review: ``--bbox`` with sst-global-mean returned the global value)."""

from __future__ import annotations

import pytest

from granulemap.catalog import validate_input
from granulemap.errors import InvalidInput
from granulemap.settings import Settings

SETTINGS = Settings(bucket="granulemap-test")
BOX = [-170.0, -5.0, -120.0, 5.0]


def _input(**change: object) -> dict:
    return {"recipe": "sst-global-mean", "start": "2018-12-01", "end": "2018-12-31", **change}


@pytest.mark.parametrize("recipe", ["sst-global-mean", "sst-box-mean"])
def test_a_bbox_is_refused_where_it_would_change_nothing(tmp_path, recipe) -> None:
    with pytest.raises(InvalidInput, match="field 'bbox': it narrows a NASA CMR search, not a 'source' folder"):
        validate_input(_input(recipe=recipe, bbox=BOX, source=str(tmp_path)), SETTINGS)
    with pytest.raises(InvalidInput, match="every granule of MUR25-JPL-L4-GLOB-v04.2 covers the same area") as err:
        validate_input(_input(recipe=recipe, bbox=BOX), SETTINGS)
    assert 'sst-box-mean with params {"box": [W, S, E, N]}' in str(err.value)
    # another L4 product, global (OSTIA) or regional: still one grid a day, all or none of its granules found
    with pytest.raises(InvalidInput, match="every granule of OSTIA-UKMO-L4-GLOB-REP-v2.0 covers the same area"):
        validate_input(_input(recipe=recipe, bbox=BOX, collection="OSTIA-UKMO-L4-GLOB-REP-v2.0"), SETTINGS)


def test_a_bbox_is_taken_where_it_narrows_the_search(tmp_path) -> None:
    # ATL06 from CMR: the bbox decides which granules, and so which parent cells
    atl06 = {"recipe": "atl06-cell-stats", "start": "2018-10-13", "end": "2018-10-13", "bbox": [-50, 60, -40, 70]}
    validate_input(atl06, SETTINGS)
    # from a folder nothing is searched: no recipe clips to the box (the local run kept all 81 segments of the sample,
    # a South Pacific pass, with a box over Greenland)
    with pytest.raises(InvalidInput, match="not a 'source' folder, and recipe atl06-cell-stats") as err:
        validate_input({**atl06, "source": str(tmp_path)}, SETTINGS)
    assert "sst-box-mean" not in str(err.value)  # the SST suggestion is for the SST recipes
    validate_input(_input(), SETTINGS)  # no bbox: nothing to refuse
