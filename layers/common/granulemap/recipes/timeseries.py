"""Time-series products shared by the SST recipes: a cumulative CSV (one row per granule, sorted by time) and a PNG."""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import random
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from granulemap.errors import (
    InvalidInput,
    ProductDamaged,
    ProductMismatch,
    RecipeResultInvalid,
    TransientError,
    shortened,
)
from granulemap.models import iso_time
from granulemap.storage import Bucket


def rows_to_csv(columns: Sequence[str], rows: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return out.getvalue().encode()


def csv_to_rows(data: bytes, name: str = "the CSV") -> list[dict[str, str]]:
    """The rows of a CSV (UTF-8; a byte-order mark, as a spreadsheet saves one, is not part of the first column's
    name). InvalidInput, naming ``name`` and the line, for a row that is not whole (``_whole_rows``): read as it is,
    a cut row's value (28.1 of 28.1234) would pass for a number, and be kept."""
    text = data.decode("utf-8-sig")
    try:
        return _whole_rows(text, name)
    except csv.Error as exc:  # a quote never closed: the rest of the file in one field, over csv's limit
        raise InvalidInput(f"{name} is damaged: it cannot be read as CSV ({exc})") from None


def _whole_rows(text: str, name: str) -> list[dict[str, str]]:
    """The rows of ``text`` as csv.DictReader gives them (blank lines skipped), in one pass that refuses
    (InvalidInput) a row with more or fewer fields than the header (a line cut, or two run together), and a last line
    without its line end that may have been cut within its last field: ``rows_to_csv`` ends every line, and its last
    field, ``COMPUTED_AT``, ends with the time's offset (a line cut there, in a copy or a write cut short, is a junk
    row that no field count shows; cut just before it, the row is whole but for when it was computed, as a row of a
    CSV written before that column: kept)."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        return []
    rows: list[dict[str, str]] = []
    last: list[str] = []
    for fields in reader:
        if not fields:
            continue
        if len(fields) != len(header):
            raise InvalidInput(f"{name} is damaged: line {reader.line_num} has {len(fields)} field"
                               f"{'s' if len(fields) != 1 else ''}, and its header {len(header)} "
                               f"({shortened(','.join(fields), 120)})")
        rows.append(dict(zip(header, fields, strict=True)))
        last = fields
    cut = last and not text.endswith(("\n", "\r")) and header[-1] == COMPUTED_AT and last[-1]
    if cut and not _whole_time(last[-1]):
        raise InvalidInput(f"{name} is damaged: its last line (line {reader.line_num}) ends without a line end and "
                           f"with {COMPUTED_AT} {last[-1]!r}, not a whole time with its offset: cut short "
                           f"({shortened(','.join(last), 120)})")
    return rows


def _whole_time(text: str) -> bool:
    """Whether ``text`` is a time with its offset, as ``COMPUTED_AT`` is written (cut, ``2026-01-01T00:00`` is not)."""
    return re.search(r"(Z|[+-]\d\d:\d\d)$", text) is not None and _parses(text)


COMPUTED_AT = "computed_at"
"""The column of when a row's value was computed (ISO 8601, UTC: its item's ``computed_at``), which every time-series
CSV ends with: of two computations of one granule, the later one's row is kept."""


def _instant(value: Any) -> dt.datetime | None:
    """``computed_at`` as an aware datetime (one without an offset taken as UTC); None when it is not a time."""
    try:
        return iso_time(str(value)) if value else None
    except ValueError:
        return None


def _replaces(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """Whether the row ``new`` replaces ``old`` of the same granule: unless ``old`` was computed later. (A result
    found stored, of an item computed before a ``recompute`` of the granule in another item, is older than the row
    that recompute wrote.) A row that does not say when it was computed (a CSV of an earlier version) is replaced."""
    new_at, old_at = _instant(new.get(COMPUTED_AT)), _instant(old.get(COMPUTED_AT))
    return new_at is None or old_at is None or new_at >= old_at


def replaced_days(existing: Rows, new: Rows) -> list[dict[str, Any]]:
    """The ``existing`` rows of a series of one granule a day that ``new`` rows replace: those of another granule
    on a new row's UTC day (a granule NASA replaced under a new name, a near-real-time one by the final one). The
    run's catalog found the new row's granule for that day; kept, the old row would count the day twice. (A row
    without a time has no day: it is kept.)"""
    new_days = {str(row["time"])[:10]: str(row["granule"]) for row in new}
    return [row for row in existing if row.get("time")
            and new_days.get(str(row["time"])[:10], str(row.get("granule"))) != str(row.get("granule"))]


def merge_time_series(
    columns: Sequence[str], existing: list[dict[str, Any]], new: list[dict[str, Any]], key: str = "granule",
    one_a_day: bool = False,
) -> list[dict[str, Any]]:
    """Union of rows keyed by ``key`` (a new row wins unless the existing one was computed later: ``COMPUTED_AT``),
    sorted by time then key: no duplicates, no gaps. ``one_a_day``: a series of one granule a day, whose existing
    rows of another granule on a new row's day are left out (``replaced_days``)."""
    if one_a_day:
        replaced = {id(row) for row in replaced_days(existing, new)}
        existing = [row for row in existing if id(row) not in replaced]
    merged: dict[str, dict[str, Any]] = {row[key]: {c: row.get(c) for c in columns} for row in existing}
    for row in new:
        if row[key] not in merged or _replaces(row, merged[row[key]]):
            merged[row[key]] = {c: row.get(c) for c in columns}
    return sorted(merged.values(), key=lambda r: (str(r["time"]), str(r[key])))


ProductOf = Callable[[str], str | None]
"""The product (and version) of a granule by its name, None when the name does not say."""

Rows = Sequence[dict[str, Any]]
Refusal = Callable[[Rows, Rows], None]
"""``(existing, new)``: raises if the ``new`` rows must not join a series of the ``existing`` ones."""


def _products(rows: Rows, product_of: ProductOf) -> dict[str, list[dict[str, Any]]]:
    by_product: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        product = product_of(str(row["granule"]))
        if product is not None:
            by_product.setdefault(product, []).append(row)
    return by_product


def _described(product: str, rows: list[dict[str, Any]]) -> str:
    days = sorted(str(row["time"])[:10] for row in rows)
    span = days[0] if days[0] == days[-1] else f"{days[0]} to {days[-1]}"
    return f"{product} ({len(rows)} granule{'s' if len(rows) > 1 else ''}, {span})"


def _listed(by_product: dict[str, list[dict[str, Any]]]) -> str:
    return "; ".join(_described(product, rows) for product, rows in sorted(by_product.items()))


def refuse_two_products(existing: Rows, new: Rows, product_of: ProductOf, series: str, *, field: str = "source",
                        expected: tuple[str, str] | None = None) -> None:
    """Raise InvalidInput (naming ``field``) if the time series ``series`` (its ``existing`` rows) and the ``new`` rows
    (each with ``granule``, its name, and ``time``) would hold granules of two products: MUR25 and MUR at 0.01°, or
    two versions of one, whose values differ by product, not by day. ``expected`` is (collection, product) when the
    run's collection is known to be one product: granules of another are refused (else the first product to reach a
    configuration's series would own it). Granules whose names do not say their product are not judged."""
    theirs, ours = _products(existing, product_of), _products(new, product_of)
    own_series = ("name their collection (\"collection\": its CMR short name; --collection), which gives them a time "
                  "series of their own")
    if len(ours) > 1:
        raise InvalidInput(f"field '{field}': its granules are of {len(ours)} products, whose values would alternate in "
                           f"one time series ({series}): {_listed(ours)}. The series was not changed: keep one product "
                           f"in a folder (or s3:// prefix), and for another product's granules {own_series}")
    if expected is not None and ours and set(ours) != {expected[1]}:
        collection, product = expected
        raise InvalidInput(f"field '{field}': its granules are {_listed(ours)}, but the run's collection {collection} "
                           f"(the recipe's own when the input names none) is {product}. The series was not changed: "
                           f"{own_series}")
    if ours and len(theirs) > 1:
        raise InvalidInput(f"field '{field}': the time series {series} holds {len(theirs)} products ({_listed(theirs)}), "
                           "mixed before granulemap refused to mix them. The series was not changed: delete it, then "
                           "run the ranges it covers again with --recompute (\"recompute\": true), each product's "
                           "granules with their collection")
    if ours and theirs and set(theirs) != set(ours):
        raise InvalidInput(f"field '{field}': its granules are {_listed(ours)}, but the time series {series} holds "
                           f"{_listed(theirs)}: one series of two products would change with the product, not the "
                           f"ocean. The series was not changed: {own_series}")


def write_time_series(
    bucket: Bucket,
    csv_key: str,
    png_key: str,
    columns: Sequence[str],
    new_rows: list[dict[str, Any]],
    value_column: str,
    title: str,
    ylabel: str,
    refuse: Refusal | None = None,
    one_a_day: bool = False,
) -> list[dict[str, Any]]:
    """Merge ``new_rows`` into the cumulative CSV at ``csv_key``, write it and its plot; return all rows.
    ``one_a_day``: the series has one granule a day (``Recipe.one_granule_a_day``): a new row replaces the row of
    another granule on its day (``replaced_days``: logged), instead of joining it.

    Two runs of one configuration (two months started at once) may merge at the same moment: each read the CSV,
    and the second write dropped the first one's new rows. The CSV is written only if it is still the version read
    (``Bucket.put_bytes_if_unchanged``), else read and merged again. The plot is written just before: the run whose
    CSV is written last has drawn the plot last, from the same rows.

    Each row needs ``time`` (ISO 8601, UTC) and ``granule`` (its name: the key that keeps the CSV free of
    duplicates), and has ``computed_at`` from Aggregate (a result that is a dict: its item's), which the CSV keeps
    as its last column (``COMPUTED_AT``); RecipeResultInvalid names the first row without them or with another form
    of time, or the columns no row has (``_check_rows``). ``refuse(existing, new)`` may raise to refuse the
    new rows (granules of another product: ``refuse_two_products``): the CSV is left as it was, and so is the plot (an
    earlier attempt's, drawn before another run's CSV won, is drawn again from the CSV)."""
    _check_rows(columns, new_rows)
    columns = tuple(columns) if COMPUTED_AT in columns else (*columns, COMPUTED_AT)
    for attempt in range(CSV_WRITE_ATTEMPTS):
        existing, etag = read_series(bucket, csv_key)
        try:
            refuse_to_drop_columns(existing, columns, f"s3://{bucket.name}/{csv_key}")
            if refuse is not None:
                refuse(existing, new_rows)
        except Exception:
            if attempt:  # this run's rows are in the plot an earlier attempt drew: the CSV's go back in
                bucket.put_bytes(png_key, plot_time_series(existing, value_column, title, ylabel), "image/png")
            raise
        rows = merge_time_series(columns, existing, new_rows, one_a_day=one_a_day)
        bucket.put_bytes(png_key, plot_time_series(rows, value_column, title, ylabel), "image/png")
        if bucket.put_bytes_if_unchanged(csv_key, rows_to_csv(columns, rows), "text/csv", etag):
            replaced = replaced_days(existing, new_rows) if one_a_day else []
            if replaced:
                from granulemap.observability import logger

                logger.warning("rows of granules another granule of their day replaced",
                               extra={"series": f"s3://{bucket.name}/{csv_key}",
                                      "replaced": sorted(str(row["granule"]) for row in replaced)})
            return rows
        _pause_before_retry(attempt)
    raise TransientError(f"s3://{bucket.name}/{csv_key} changed {CSV_WRITE_ATTEMPTS} times while this run merged its "
                         "rows into it (other runs of the same configuration writing it): Aggregate is tried again")


def read_series(bucket: Bucket, csv_key: str) -> tuple[list[dict[str, str]], str | None]:
    """The rows of the time series at ``csv_key`` (none when there is none) and its ETag. ProductDamaged for one that
    is damaged (what ``csv_to_rows`` refuses, or bytes that are not UTF-8), saying how to write it anew: merged into,
    its junk rows would stay."""
    data, etag = bucket.get_bytes_and_etag(csv_key)
    name = f"s3://{bucket.name}/{csv_key}"
    try:
        return (csv_to_rows(data, name) if data else []), etag
    except UnicodeDecodeError as exc:
        why = f"{name} is damaged: it is not UTF-8 text ({exc.reason} at byte {exc.start})"
    except InvalidInput as exc:
        why = str(exc)
    raise ProductDamaged(f"{why}. The series was not changed: delete the damaged line, or the whole file, and run "
                         "again the dates it held (their results are stored: they are not computed again, and their "
                         "rows are written anew)")


def _pause_before_retry(attempt: int) -> None:
    """Another writer changed the CSV between this one's read and write: wait a random while, longer at each attempt,
    before merging again (tests replace this, not time.sleep, which every thread of the process shares)."""
    time.sleep(random.uniform(0.05, 0.5) * (attempt + 1))


def refuse_to_drop_columns(existing: Rows, columns: Sequence[str], series: str) -> None:
    """ProductMismatch when the series ``existing`` has columns that ``columns`` (``COMPUTED_AT`` aside) lacks (a
    recipe that renamed or dropped one): rewritten with ``columns`` alone, the series would lose those columns'
    values in every row."""
    dropped = [c for c in (existing[0] if existing else {}) if c not in columns and c != COMPUTED_AT]
    if dropped:
        raise ProductMismatch(
            f"the time series {series} has the column{'s' if len(dropped) > 1 else ''} {', '.join(dropped)}, which "
            f"this run's columns ({', '.join(columns)}) do not: rewritten, its {len(existing)} rows would lose "
            f"{'their' if len(dropped) > 1 else 'its'} values. The series was not changed: keep the old columns in "
            "the recipe's columns (and its results), or move the CSV away to start a new series")


def _check_rows(columns: Sequence[str], rows: list[dict[str, Any]]) -> None:
    """RecipeResultInvalid for rows the CSV would not hold as meant: without ``time`` or ``granule``, a ``time``
    that is not ISO 8601 in UTC (the rows are sorted by it as text), or columns that no row has (a key misspelled in
    ``process`` or in ``columns``: a blank column, and a run that seemed to succeed)."""
    for row in rows:
        lacking = [key for key in ("time", "granule") if row.get(key) is None]
        if lacking:
            raise RecipeResultInvalid(f"a time-series row needs 'time' and 'granule'; this one has no "
                                      f"{' and no '.join(map(repr, lacking))}: {row}")
        if not _ISO_UTC.fullmatch(str(row["time"])) or not _parses(str(row["time"])):
            raise RecipeResultInvalid(f"a time-series row's 'time' must be ISO 8601 in UTC, such as "
                                      f"2023-01-01T12:00:00Z (time.strftime('%Y-%m-%dT%H:%M:%SZ') of a UTC time); "
                                      f"this one has {row['time']!r}: {row}")
    absent = [c for c in columns if c != COMPUTED_AT and rows and all(c not in row for row in rows)]
    if absent:
        keys = sorted({key for row in rows for key in row} - {COMPUTED_AT})
        raise RecipeResultInvalid(f"the time series' column{'s' if len(absent) > 1 else ''} {', '.join(absent)} "
                                  f"{'are' if len(absent) > 1 else 'is'} in no row of the results, whose keys are "
                                  f"{', '.join(keys)}: a key misspelled in process() or in the columns given to "
                                  "write_time_series, or results stored before process() gave it")


_ISO_UTC = re.compile(r"\d{4}-\d\d-\d\d(T\d\d:\d\d(:\d\d(\.\d+)?)?(Z|\+00:00)?)?")
"""The forms of a row's time that sort as text in time order: YYYY-MM-DD, then THH:MM[:SS[.f]], then Z or +00:00 (or
no offset: UTC)."""


def _parses(text: str) -> bool:
    try:
        iso_time(text)
    except ValueError:
        return False
    return True


CSV_WRITE_ATTEMPTS = 8
"""Reads and merges of the CSV before Aggregate gives up on it (TransientError: the state machine retries it)."""


PNG_COLUMN_KEY = "granulemap column"
PNG_YLABEL_KEY = "granulemap ylabel"
"""Keys of the PNG text chunks in which ``plot_time_series`` records the column and y label it drew (and the
standard "Title", the title)."""


def plot_time_series(rows: list[dict[str, Any]], value_column: str, title: str, ylabel: str) -> bytes:
    """A PNG of one column against time, with labelled axes (synthetic granules drawn distinctly).

    Drawn on a ``matplotlib.figure.Figure`` of its own, never through pyplot: no global figure or backend is touched
    (a caller's notebook keeps its own backend and figures), and pyplot is not imported."""
    from matplotlib.figure import Figure

    def _value(row: dict[str, Any]) -> float:
        v = row.get(value_column)
        return float(v) if v not in (None, "") else math.nan

    times = [dt.datetime.fromisoformat(str(r["time"]).replace("Z", "+00:00")) for r in rows]
    values = [_value(r) for r in rows]
    synthetic = ["synthetic" in str(r.get("granule", "")).lower() for r in rows]
    fig = Figure(figsize=(9, 4), dpi=100)
    ax = fig.subplots()
    ax.plot(times, values, color="0.6", linewidth=1, zorder=1)
    real_t = [t for t, s in zip(times, synthetic, strict=True) if not s]
    real_v = [v for v, s in zip(values, synthetic, strict=True) if not s]
    syn_t = [t for t, s in zip(times, synthetic, strict=True) if s]
    syn_v = [v for v, s in zip(values, synthetic, strict=True) if s]
    if syn_t:
        ax.scatter(syn_t, syn_v, s=14, color="tab:orange", label="synthetic granules", zorder=2)
    if real_t:
        ax.scatter(real_t, real_v, s=22, color="tab:blue", label="real granules", zorder=3)
    if not any(math.isfinite(v) for v in values):  # an axis of 1970 and nothing on it said nothing
        where = "the one row" if len(rows) == 1 else f"any of the {len(rows)} rows"
        ax.text(0.5, 0.5, f"no {value_column} in {where}", ha="center", va="center", transform=ax.transAxes)
        if times:
            ax.set_xlim(min(times) - dt.timedelta(days=1), max(times) + dt.timedelta(days=1))
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if syn_t and real_t:
        ax.legend()
    fig.autofmt_xdate()
    buf = io.BytesIO()
    # What it draws, kept in the picture (PNG text chunks): `granulemap plot` redraws the CSV as its run drew it.
    fig.savefig(buf, format="png", bbox_inches="tight",
                metadata={"Title": title, PNG_COLUMN_KEY: value_column, PNG_YLABEL_KEY: ylabel})
    return buf.getvalue()
