"""The README's recipe tutorial, run as written: the recipe file from the README, registered through a real
``granulemap.recipes`` entry point (an installed distribution's metadata on sys.path), used by `process` and `run`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
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
    assert lines[0] == "time,granule,warm_fraction,computed_at" and len(lines) == 2  # write_time_series adds the last
    assert (out / "warm_fraction.png").read_bytes().startswith(b"\x89PNG")
    # the tutorial's slug names the configuration's folder by its threshold (28, the default)
    summary = json.loads((out / "summary.json").read_text())
    configurations = {path.name for path in (out / "state" / "outputs" / "sst-warm-fraction").iterdir()}
    assert len(configurations) == 1 and configurations.pop().startswith("above28-"), summary


def _tutorial_pyproject() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- tutorial: pyproject.toml -->\s*```toml\n(.*?)```", readme, re.S)
    assert match, "README.md lost its tutorial pyproject.toml block"
    return match.group(1)


@pytest.mark.slow
def test_tutorial_package_builds_from_the_readme_pyproject(tmp_path: Path) -> None:
    """The README's pyproject.toml, with the README's recipe file beside it, built and installed by pip (setuptools,
    offline): the installed distribution carries the module and the entry point, and a fresh interpreter that has it
    on its path finds and loads the recipe by name, as `granulemap recipes` and the layer check do."""
    package = tmp_path / "my-recipes"
    package.mkdir()
    (package / "pyproject.toml").write_text(_tutorial_pyproject())
    (package / "my_recipes.py").write_text(_tutorial_code())
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                          "--no-build-isolation", "--disable-pip-version-check", "--target", str(site), str(package)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    assert (site / "my_recipes.py").read_text() == _tutorial_code()
    (dist,) = site.glob("my_recipes-0.1.0.dist-info")
    assert "sst-warm-fraction = my_recipes:recipe" in (dist / "entry_points.txt").read_text()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    check = subprocess.run(
        [sys.executable, "-c", "from granulemap.recipes import get_recipe; r = get_recipe('sst-warm-fraction'); "
         "print(type(r).__module__, r.per_granule, r.description)"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert check.returncode == 0, check.stderr
    module, per_granule, description = check.stdout.strip().split(" ", 2)
    assert (module, per_granule) == ("my_recipes", "True")
    assert description.startswith("Share of the open-water area warmer than threshold_c")
