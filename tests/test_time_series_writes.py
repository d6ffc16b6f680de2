"""The cumulative CSV of a configuration when two runs merge into it at the same moment (two months started at once):
each read it, and the later write dropped the earlier one's new rows. It is now written only if it is still the
version read (an S3 conditional write), else read and merged again."""

from __future__ import annotations

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
    monkeypatch.setattr(timeseries.time, "sleep", lambda _: None)
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
