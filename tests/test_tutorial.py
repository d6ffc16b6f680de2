"""The README's recipe tutorial, run as written: the recipe file from the README, registered through a real
``granulemap.recipes`` entry point (an installed distribution's metadata on sys.path), used by `process` and `run`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import netCDF4
import numpy as np
import pytest

from granulemap.cli import main

from conftest import ROOT, install_recipe_package
from sst_reference import LAKE, LAND, RIVER, SEA_ICE, WATER


def _tutorial_code() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- tutorial: my_recipes.py -->\s*```python\n(.*?)```", readme, re.S)
    assert match, "README.md lost its tutorial code block"
    return match.group(1)


@pytest.fixture
def installed_tutorial(tmp_path: Path, monkeypatch):
    yield from install_recipe_package(tmp_path / "site", monkeypatch, "my_recipes", _tutorial_code(),
                                      {"sst-warm-fraction": "my_recipes:recipe"})


def _independent_warm_fraction(path: Path, threshold_c: float) -> float:
    with netCDF4.Dataset(path) as ds:
        sst_c = ds["analysed_sst"][0].astype(float) - 273.15
        mask = np.ma.filled(ds["mask"][0], 0).astype(int)
        lat = ds["lat"][:].astype(float)
    water = ((mask & WATER) != 0) & ((mask & (LAND | LAKE | SEA_ICE | RIVER)) == 0) & ~np.ma.getmaskarray(sst_c)
    area = np.broadcast_to(np.cos(np.radians(lat))[:, None], sst_c.shape)
    return float(area[water & (sst_c.filled(-99) > threshold_c)].sum() / area[water].sum())


def test_tutorial_recipe_is_found_and_processes_a_granule(installed_tutorial, capsys, mur25: Path) -> None:
    assert main(["recipes"]) == 0
    assert "sst-warm-fraction" in capsys.readouterr().out
    assert main(["process", "--recipe", "sst-warm-fraction", "--param", "threshold_c=25", str(mur25)]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["warm_fraction"] == pytest.approx(_independent_warm_fraction(mur25, 25.0), abs=1e-12)
    assert 0.1 < row["warm_fraction"] < 0.6


@pytest.mark.slow
def test_tutorial_recipe_runs_through_the_state_machine(installed_tutorial, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["run", "--recipe", "sst-warm-fraction", "--start", "2018-12-01", "--end", "2018-12-31",
                 "--source", str(ROOT / "tests" / "data" / "ghrsst"), "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr()
    lines = (out / "warm_fraction.csv").read_text().splitlines()
    assert lines[0] == "time,granule,warm_fraction" and len(lines) == 2
    assert (out / "warm_fraction.png").read_bytes().startswith(b"\x89PNG")
