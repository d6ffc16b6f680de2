"""Granules NASA replaces: under the same name (reprocessed in place), or under another name for the same day.

Either way a later run over those dates must give the new granule's value, once for the day: an item's result was
found by an id made of file names alone and reused for ever, and the time series, keyed by granule name, kept the
old granule's row beside the new one's. Whole local executions of the state machine, on folders of MUR25 granules
(the real one, and copies of it with analysed_sst shifted, made as the synthetic granules are); every value is
checked against tests/sst_reference.py's netCDF4 + numpy mean of the file the run was given.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from granulemap import layout
from granulemap.local.engine import LocalEngine
from granulemap.synthetic import make_synthetic_granule

from sst_reference import ocean_mean_reference

pytestmark = pytest.mark.slow

DAY = {"recipe": "sst-global-mean", "start": "2018-12-31", "end": "2018-12-31"}


@pytest.fixture
def engine():
    """An engine, and its bucket, of each test's own."""
    with LocalEngine(workers=1) as eng:
        yield eng


def _run(engine: LocalEngine, source: Path, **extra: object) -> tuple[dict, list[dict[str, str]], dict]:
    """(summary, the series' rows, provenance) of a run over 2018-12-31 on ``source``."""
    desc = engine.run({**DAY, "source": str(source), **extra}, timeout=300)
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    output = json.loads(desc["output"])
    run_id, config = desc["executionArn"].rsplit(":", 1)[-1], output["run"]["config_id"]
    s3 = engine.client("s3")

    def get(key: str) -> bytes:
        return s3.get_object(Bucket=engine.bucket, Key=key)["Body"].read()

    rows = list(csv.DictReader(io.StringIO(get(layout.output_key("sst-global-mean", config,
                                                                 "global_mean_sst.csv")).decode())))
    provenance = json.loads(get(layout.provenance_key("sst-global-mean", config, run_id)))
    return json.loads(get(layout.summary_key(run_id))), rows, provenance


def _shifted(real: Path, folder: Path, when: dt.datetime, kelvin: float, name: str) -> Path:
    """A copy of ``real`` with analysed_sst shifted by ``kelvin``, dated ``when``, as ``folder/name``."""
    made = make_synthetic_granule(real, folder / "made", when, kelvin)
    return Path(shutil.move(made, folder / name))


def test_a_granule_reprocessed_under_its_name_is_computed_again_and_its_row_replaced(engine, tmp_path: Path,
                                                                                     mur25: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    granule = Path(shutil.copy(mur25, source / mur25.name))
    summary, rows, provenance = _run(engine, source)
    want = ocean_mean_reference(granule)["mean_sst_c"]
    assert [(r["granule"], pytest.approx(float(r["mean_sst_c"]), abs=1e-6)) for r in rows] == [(mur25.name, want)]
    first_revision = provenance["granule_revisions"][str(granule)]

    # The same file again: its result is reused.
    summary, _, _ = _run(engine, source)
    assert summary["granules"] == {"total": 1, "succeeded": 0, "failed": 0, "skipped": 1}

    # NASA reprocesses it in place: same name, new values (+0.5 K on every valid cell), a new file.
    when = dt.datetime(2018, 12, 31, 9, tzinfo=dt.UTC)
    os.replace(_shifted(mur25, tmp_path, when, 0.5, mur25.name), granule)
    summary, rows, provenance = _run(engine, source)
    assert summary["granules"] == {"total": 1, "succeeded": 1, "failed": 0, "skipped": 0}
    new = ocean_mean_reference(granule)["mean_sst_c"]
    assert new == pytest.approx(want + 0.5, abs=2e-3)  # the test's own file is what it says it is
    assert [(r["granule"], pytest.approx(float(r["mean_sst_c"]), abs=1e-6)) for r in rows] == [(mur25.name, new)]
    assert provenance["granule_revisions"][str(granule)] != first_revision


def test_a_granule_replaced_under_another_name_replaces_its_days_row(engine, tmp_path: Path, mur25: Path) -> None:
    """The folder first holds the real granule of 2018-12-31 (09:00); then, as when a near-real-time granule is
    replaced by the final one, another granule of that day under another name: the series has one row for the
    day, the new granule's."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    shutil.copy(mur25, first / mur25.name)
    _, rows, _ = _run(engine, first)
    assert [r["granule"] for r in rows] == [mur25.name]

    replacement = _shifted(mur25, second, dt.datetime(2018, 12, 31, 12, tzinfo=dt.UTC), -0.25,
                           mur25.name.replace("20181231090000", "20181231120000"))
    summary, rows, _ = _run(engine, second)
    assert summary["granules"]["succeeded"] == 1
    assert [r["granule"] for r in rows] == [replacement.name]  # one row for the day: the old one's is gone
    want = ocean_mean_reference(replacement)["mean_sst_c"]
    assert float(rows[0]["mean_sst_c"]) == pytest.approx(want, abs=1e-6)
