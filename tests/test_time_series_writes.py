"""The cumulative CSV of a configuration when two runs merge into it at the same moment (two months started at once):
each read it, and the later write dropped the earlier one's new rows. It is now written only if it is still the
version read (an S3 conditional write), else read and merged again."""

from __future__ import annotations

import re
from typing import Any

import boto3
import pytest
from moto import mock_aws

from granulemap.errors import TransientError
from granulemap.recipes import timeseries
from granulemap.recipes.timeseries import csv_to_rows, write_time_series
from granulemap.storage import Bucket

BUCKET, CSV, PNG = "granulemap-series-test", "outputs/r/c/series.csv", "outputs/r/c/series.png"
COLUMNS = ("time", "granule", "value")


def _rows(month: int) -> list[dict[str, Any]]:
    return [{"time": f"2019-{month:02d}-{day:02d}T09:00:00Z", "granule": f"g-{month}-{day}", "value": month + day / 100}
            for day in (1, 2, 3)]


def _write(bucket: Bucket, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return write_time_series(bucket, CSV, PNG, COLUMNS, rows, "value", title="t", ylabel="v")


@pytest.fixture
def s3(monkeypatch):
    monkeypatch.setattr(timeseries, "_pause_before_retry", lambda _: None)
    with mock_aws():
        client = boto3.client("s3", region_name="us-west-2")
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        yield client


def test_two_runs_merging_at_once_keep_both_runs_rows_and_the_last_picture_shows_them(s3, monkeypatch) -> None:
    _write(Bucket(BUCKET, s3), _rows(3))  # March, from an earlier run
    drawn: list[int] = []
    draw = timeseries.plot_time_series
    monkeypatch.setattr(timeseries, "plot_time_series", lambda rows, *a: drawn.append(len(rows)) or draw(rows, *a))

    # Run A (April) reads the CSV; before it writes, run B (May) reads, merges and writes it whole.
    april = boto3.client("s3", region_name="us-west-2")
    interleaved = []

    def may_runs_now(**kwargs: Any) -> None:
        if kwargs["params"]["Key"] == CSV and not interleaved:
            interleaved.append(True)
            _write(Bucket(BUCKET, s3), _rows(5))

    april.meta.events.register("provide-client-params.s3.PutObject", lambda **kw: may_runs_now(**kw))
    _write(Bucket(BUCKET, april), _rows(4))

    assert interleaved  # May did write between April's read and April's write
    stored = csv_to_rows(s3.get_object(Bucket=BUCKET, Key=CSV)["Body"].read())
    expected = sorted(r["time"] for month in (3, 4, 5) for r in _rows(month))
    assert [r["time"] for r in stored] == expected
    assert drawn[-1] == len(expected)  # the picture written last is of every row


def test_a_csv_that_keeps_changing_is_a_transient_error_for_the_state_machine_to_retry(s3, monkeypatch) -> None:
    bucket = Bucket(BUCKET, s3)
    _write(bucket, _rows(3))
    monkeypatch.setattr(Bucket, "put_bytes_if_unchanged", lambda self, *a, **k: False)
    with pytest.raises(TransientError, match=f"changed {timeseries.CSV_WRITE_ATTEMPTS} times"):
        _write(bucket, _rows(4))
    stored = csv_to_rows(s3.get_object(Bucket=BUCKET, Key=CSV)["Body"].read())
    assert [r["time"] for r in stored] == [r["time"] for r in _rows(3)]  # nothing lost, nothing half-written


def test_the_first_write_of_a_csv_does_not_replace_one_another_run_created_meanwhile(s3) -> None:
    """No CSV yet: the write is conditional on there still being none (If-None-Match)."""
    bucket = Bucket(BUCKET, s3)
    _, etag = bucket.get_bytes_and_etag(CSV)
    assert etag is None
    s3.put_object(Bucket=BUCKET, Key=CSV, Body=b"time,granule,value\n")  # another run, first
    assert bucket.put_bytes_if_unchanged(CSV, b"mine", "text/csv", etag) is False
    assert s3.get_object(Bucket=BUCKET, Key=CSV)["Body"].read() == b"time,granule,value\n"


# --- T2: the CSV is sorted by time, not by granule name -------------------------------------------------------------
def test_time_series_rows_are_sorted_by_time_whatever_their_names() -> None:
    from granulemap.recipes.timeseries import merge_time_series

    cols = ("time", "granule", "v")
    rows = merge_time_series(cols, [{"time": "2019-01-02T00:00:00Z", "granule": "a", "v": 1}],
                             [{"time": "2019-01-01T00:00:00Z", "granule": "b", "v": 2}])
    assert [r["granule"] for r in rows] == ["b", "a"]


def _at(rows: list[dict[str, Any]], when: str, value: float) -> list[dict[str, Any]]:
    return [{**row, "value": value, "computed_at": when} for row in rows]


def test_of_two_computations_of_a_granule_the_series_keeps_the_later_whichever_is_merged_last(s3) -> None:
    """A run merges the results it found stored (computed before) as well as those it computed: a result of an item
    computed before a recompute of its granules (in another item) is older than the row that recompute wrote."""
    bucket = Bucket(BUCKET)
    recomputed = _write(bucket, _at(_rows(1)[1:], "2026-11-30T12:00:00.5+00:00", 2.0))  # days 2-3 computed again
    assert [r["computed_at"] for r in recomputed] == ["2026-11-30T12:00:00.5+00:00"] * 2
    merged = _write(bucket, _at(_rows(1), "2026-11-30T12:00:00+00:00", 1.0))  # the earlier item's: days 1-3
    assert {r["granule"]: float(r["value"]) for r in merged} == {"g-1-1": 1.0, "g-1-2": 2.0, "g-1-3": 2.0}
    stored = csv_to_rows(s3.get_object(Bucket=BUCKET, Key=CSV)["Body"].read())
    assert list(stored[0]) == [*COLUMNS, "computed_at"]
    assert {r["granule"]: float(r["value"]) for r in stored} == {"g-1-1": 1.0, "g-1-2": 2.0, "g-1-3": 2.0}
    later = _write(bucket, _at(_rows(1)[:2], "2026-12-01T00:00:00Z", 3.0))  # computed later again: it wins
    assert {r["granule"]: float(r["value"]) for r in later} == {"g-1-1": 3.0, "g-1-2": 3.0, "g-1-3": 2.0}
    # the same instant (a row merged again as it was, or a clock's tie): the row being merged wins, as a rewrite
    same = _write(bucket, _at(_rows(1)[:1], "2026-12-01T00:00:00+00:00", 4.0))
    assert {r["granule"]: float(r["value"]) for r in same} == {"g-1-1": 4.0, "g-1-2": 3.0, "g-1-3": 2.0}


def test_a_computed_at_without_an_offset_is_utc(s3) -> None:
    """A recipe's own computed_at may be written without an offset: compared as UTC, not refused as naive."""
    bucket = Bucket(BUCKET)
    _write(bucket, _at(_rows(1)[:1], "2026-11-30T12:00:00+00:00", 1.0))
    kept = _write(bucket, _at(_rows(1)[:1], "2026-11-30T11:00:00", 2.0))  # an hour earlier, UTC
    assert float(kept[0]["value"]) == 1.0
    later = _write(bucket, _at(_rows(1)[:1], "2026-12-01", 3.0))
    assert float(later[0]["value"]) == 3.0


def test_rows_that_do_not_say_when_they_were_computed_are_replaced_by_new_ones(s3) -> None:
    """A CSV of an earlier version (no computed_at column), or rows of a recipe's own without one: new rows win."""
    bucket = Bucket(BUCKET)
    s3.put_object(Bucket=BUCKET, Key=CSV, Body=b"time,granule,value\n2019-01-01T09:00:00Z,g-1-1,7.0\n")
    merged = _write(bucket, _at(_rows(1)[:1], "2020-01-01T00:00:00+00:00", 1.0))
    assert [(r["granule"], float(r["value"])) for r in merged] == [("g-1-1", 1.0)]
    again = _write(bucket, [{**_rows(1)[0], "value": 5.0}])  # no computed_at: it replaces the row all the same
    assert [(r["granule"], float(r["value"])) for r in again] == [("g-1-1", 5.0)]


@pytest.mark.parametrize(("columns", "words"), [
    (("time", "granule", "valeu"), "column valeu is in no row of the results, whose keys are granule, time, value"),
    (("time", "granule", "value", "n", "m"), "columns n, m are in no row of the results"),
])
def test_a_column_no_row_has_is_refused_naming_the_keys_the_rows_have(s3, columns, words) -> None:
    """A key misspelled in process() or in the columns: the CSV would hold a blank column, the plot nothing, and the
    run seem to succeed."""
    from granulemap.errors import RecipeResultInvalid

    with pytest.raises(RecipeResultInvalid, match=words):
        write_time_series(Bucket(BUCKET, s3), CSV, PNG, columns, _rows(3), "value", title="t", ylabel="v")
    assert s3.list_objects_v2(Bucket=BUCKET)["KeyCount"] == 0  # nothing written
    rows = _rows(3)
    rows[1]["n"] = rows[1]["m"] = None  # a column some row has (None: no value) is a column
    written = write_time_series(Bucket(BUCKET, s3), CSV, PNG, columns[:2] + ("value", "n", "m"), rows, "value",
                                title="t", ylabel="v")
    assert [r["n"] for r in written] == [None, None, None]


@pytest.mark.parametrize("time", ["2019-03-01T11:00:00+02:00", "1 March 2019", "2019-03-01T25:00:00Z",
                                  "2019-03-01 12:00", "20190301T120000Z", "2019-W09-5"])
def test_a_row_time_that_is_not_iso_8601_utc_is_refused(s3, time: str) -> None:
    """The rows are sorted by their time as text: one in another form or zone would sort out of place."""
    from granulemap.errors import RecipeResultInvalid

    rows = _rows(3)
    rows[2]["time"] = time
    with pytest.raises(RecipeResultInvalid, match=f"'time' must be ISO 8601 in UTC, .*has {re.escape(repr(time))}"):
        _write(Bucket(BUCKET, s3), rows)
    rows[2]["time"] = "2019-03-03T09:00:00"  # no offset: UTC, as the module reads computed_at
    assert [r["time"] for r in _write(Bucket(BUCKET, s3), rows)][-1] == "2019-03-03T09:00:00"


def _stored(s3) -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=CSV)["Body"].read()


def _computed(month: int) -> list[dict[str, Any]]:
    """A month's rows as Aggregate gives them: each with when it was computed (``computed_at``, with its offset)."""
    return [{**row, "computed_at": "2026-12-01T10:11:12.131415+00:00"} for row in _rows(month)]


@pytest.mark.parametrize("left_off", ["within a value", "within the computed_at time"])
def test_a_series_whose_last_row_was_cut_short_is_refused_naming_the_line_and_left_as_it_was(s3, left_off) -> None:
    """A series cut within its last row (a copy or a write cut short, a disk that filled) was read as it was: the cut
    value (20.0 of 20.03) passed for a number and was kept, and the next rows were merged in after it."""
    bucket = Bucket(BUCKET, s3)
    _write(bucket, _computed(3))
    whole = _stored(s3)
    last = whole.rstrip(b"\n").rsplit(b"\n", 1)[1]
    assert last.count(b",") == len(COLUMNS)  # time, granule, value and computed_at
    cut = last.index(b"3.03") + 3 if left_off == "within a value" else len(last) - 3  # 3.0 of 3.03; ...+00
    damaged = whole[:len(whole) - len(last) - 1 + cut]
    s3.put_object(Bucket=BUCKET, Key=CSV, Body=damaged)

    with pytest.raises(timeseries.ProductDamaged) as refused:
        _write(bucket, _computed(4))
    message = str(refused.value)
    assert f"s3://{BUCKET}/{CSV} is damaged" in message
    assert f"line {len(_rows(3)) + 1}" in message  # the header is line 1
    assert "delete the damaged line" in message and "not computed again" in message
    assert _stored(s3) == damaged  # nothing merged into it, nothing lost


def test_a_row_with_more_fields_than_its_header_is_refused(s3) -> None:
    """Two lines run together (the end of one cut off) read as one row whose fields are not the header's."""
    bucket = Bucket(BUCKET, s3)
    _write(bucket, _computed(3))
    lines = _stored(s3).split(b"\n")
    joined = b"\n".join([*lines[:2], lines[2][:25] + lines[3], *lines[4:]])
    s3.put_object(Bucket=BUCKET, Key=CSV, Body=joined)
    with pytest.raises(timeseries.ProductDamaged, match=r"line 3 has 5 fields, and its header 4"):
        _write(bucket, _computed(4))
    assert _stored(s3) == joined


def test_a_whole_last_row_without_its_line_end_is_kept(s3) -> None:
    """An editor that saves without a final line end (the row is whole: its computed_at ends with its offset)."""
    bucket = Bucket(BUCKET, s3)
    _write(bucket, _computed(3))
    s3.put_object(Bucket=BUCKET, Key=CSV, Body=_stored(s3).rstrip(b"\n"))
    _write(bucket, _computed(4))
    stored = csv_to_rows(_stored(s3))
    assert [r["granule"] for r in stored] == [r["granule"] for month in (3, 4) for r in _rows(month)]
    assert [float(r["value"]) for r in stored] == [r["value"] for month in (3, 4) for r in _rows(month)]


def test_a_last_row_cut_just_before_its_computed_at_is_whole_and_kept(s3) -> None:
    """Without its line end and with an empty computed_at (cut just before it, or a row of a CSV written before that
    column, saved by an editor): every value is whole (the comma before it proves the last one whole)."""
    bucket = Bucket(BUCKET, s3)
    _write(bucket, _computed(3))
    whole = _stored(s3)
    s3.put_object(Bucket=BUCKET, Key=CSV, Body=whole[:whole.rstrip(b"\n").rindex(b",") + 1])
    _write(bucket, _computed(4))
    stored = csv_to_rows(_stored(s3))
    assert [float(r["value"]) for r in stored] == [r["value"] for month in (3, 4) for r in _rows(month)]
    assert [r["computed_at"] for r in stored[2:4]] == ["", "2026-12-01T10:11:12.131415+00:00"]  # kept as it was


@pytest.mark.parametrize("damaged, says", [
    # a quote never closed takes the rest of the file into one field, which csv refuses over its size limit
    (b"time,granule,value,computed_at\n2019-03-01T09:00:00Z,\"g-3-1" + b"x" * 200_000, "it cannot be read as CSV"),
    # saved in another encoding (Latin-1, by a spreadsheet): UnicodeDecodeError escaped as the recipe's error
    ("time,granule,value,computed_at\n2019-03-01T09:00:00Z,g-caf\u00e9,1.0,\n".encode("latin-1"),
     "it is not UTF-8 text .* at byte 57"),
], ids=["not CSV", "not UTF-8"])
def test_a_series_that_cannot_be_read_is_damaged_not_a_recipe_error(s3, damaged: bytes, says: str) -> None:
    bucket = Bucket(BUCKET, s3)
    s3.put_object(Bucket=BUCKET, Key=CSV, Body=damaged)
    with pytest.raises(timeseries.ProductDamaged, match=f"s3://{BUCKET}/{CSV} is damaged: {says}"):
        _write(bucket, _computed(4))
    assert _stored(s3) == damaged


def test_a_series_of_one_granule_a_day_keeps_one_row_a_day_the_granule_the_latest_run_read(s3) -> None:
    """NASA replaced a day's granule under a new name (a near-real-time granule by the final one): the series held
    the old one's row, and merging by name added the new one's beside it, so the day counted twice. In a series of
    one granule a day the new row replaces it, and rows of other days stay; a series of several granules a day
    keeps both."""
    bucket = Bucket(BUCKET)
    _write(bucket, _at(_rows(1), "2026-11-30T12:00:00Z", 1.0))  # g-1-1, g-1-2, g-1-3
    final = {"time": "2019-01-02T12:00:00Z", "granule": "g-1-2-final", "value": 7.5}
    rows = write_time_series(bucket, CSV, PNG, COLUMNS, _at([final], "2026-12-01T00:00:00Z", 7.5), "value",
                             title="t", ylabel="v", one_a_day=True)
    stored = csv_to_rows(s3.get_object(Bucket=BUCKET, Key=CSV)["Body"].read())
    for series in (rows, stored):
        assert [(r["time"][:10], r["granule"], float(r["value"])) for r in series] == [
            ("2019-01-01", "g-1-1", 1.0), ("2019-01-02", "g-1-2-final", 7.5), ("2019-01-03", "g-1-3", 1.0)]
    # the old granule computed again (a run over an old folder) is the day's granule again, whatever it was computed
    back = write_time_series(bucket, CSV, PNG, COLUMNS, _at(_rows(1)[1:2], "2026-11-01T00:00:00Z", 1.0), "value",
                             title="t", ylabel="v", one_a_day=True)
    assert [r["granule"] for r in back] == ["g-1-1", "g-1-2", "g-1-3"]
    both = _write(bucket, _at([final], "2026-12-02T00:00:00Z", 7.5))  # several a day: by name, both kept
    assert [r["granule"] for r in both] == ["g-1-1", "g-1-2", "g-1-2-final", "g-1-3"]


def test_a_recipe_that_renamed_a_column_is_refused_and_the_series_keeps_its_values(s3) -> None:
    """Rewritten with the new columns alone, every earlier row lost its value of the renamed one (blank), and the
    run succeeded: the loss was silent."""
    from granulemap.errors import ProductMismatch

    bucket = Bucket(BUCKET)
    _write(bucket, _rows(1))
    before = s3.get_object(Bucket=BUCKET, Key=CSV)["Body"].read()
    renamed = [{"time": "2019-01-04T09:00:00Z", "granule": "g-1-4", "mean": 1.04}]
    with pytest.raises(ProductMismatch, match=r"s3://granulemap-series-test/outputs/r/c/series\.csv has the "
                                                  r"column value, which this run's columns \(time, granule, mean, "
                                                  r"computed_at\) do not: rewritten, its 3 rows would lose its "
                                                  r"values"):
        write_time_series(bucket, CSV, PNG, ("time", "granule", "mean"), renamed, "mean", title="t", ylabel="v")
    assert s3.get_object(Bucket=BUCKET, Key=CSV)["Body"].read() == before
    # a column added (as computed_at once was) loses nothing: accepted
    added = [{"time": "2019-01-04T09:00:00Z", "granule": "g-1-4", "value": 1.04, "extra": 7}]
    rows = write_time_series(bucket, CSV, PNG, (*COLUMNS, "extra"), added, "value", title="t", ylabel="v")
    assert [r["value"] for r in rows[:3]] == [str(r["value"]) for r in _rows(1)]


def test_rows_of_a_series_without_times_are_kept_when_a_day_is_replaced() -> None:
    """A series edited by hand (a row without its time, or a CSV without the column): no day to replace, kept."""
    from granulemap.recipes.timeseries import merge_time_series

    existing = [{"granule": "g-old", "value": "1"}, {"time": "", "granule": "g-blank", "value": "2"},
                {"time": "2019-01-02T09:00:00Z", "granule": "g-2", "value": "3"}]
    new = [{"time": "2019-01-02T12:00:00Z", "granule": "g-2-final", "value": 4}]
    merged = merge_time_series(("time", "granule", "value"), existing, new, one_a_day=True)
    assert sorted(r["granule"] for r in merged) == ["g-2-final", "g-blank", "g-old"]  # g-2 replaced, not they
