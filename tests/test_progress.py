"""Progress display of local runs: the line's arithmetic, and plain lines when the output is not a terminal."""

from __future__ import annotations

import io

from granulemap.local.run import _Progress, progress_line


def test_progress_line_counts_rate_and_eta() -> None:
    line = progress_line({"total": 40, "succeeded": 8, "skipped": 1, "failed": 1}, elapsed=5.0, width=20)
    # 10 of 40 done in 5 s: 2 items/s, 30 left → 15 s; a quarter of the 20-character bar filled.
    assert line == "[#####...............] 10/40 items (8 ok, 1 skipped, 1 failed) 2.0 items/s, ETA 15 s"
    assert progress_line({"total": None, "succeeded": 0, "skipped": 0, "failed": 0}, 3.0).startswith("cataloguing")
    # 33 of 36 found done before the Map (a year run again): the rate is of the items run, 1 in 10 s, 2 left → 20 s
    again = progress_line({"total": 36, "succeeded": 1, "skipped": 33, "found_done": 33, "failed": 0}, 10.0, width=36)
    assert again == f"[{'#' * 34}..] 34/36 items (1 ok, 33 skipped, 0 failed) 0.1 items/s, ETA 20 s"
    # every item found done (the same range again): no "0.0 items/s", and none before the first item ends
    every = progress_line({"total": 36, "succeeded": 0, "skipped": 36, "found_done": 36, "failed": 0}, 2.0, width=36)
    assert every == f"[{'#' * 36}] 36/36 items (0 ok, 36 skipped, 0 failed)"
    assert progress_line({"total": 4, "succeeded": 0, "skipped": 0, "failed": 0}, 2.0, width=4) == (
        "[....] 0/4 items (0 ok, 0 skipped, 0 failed)")


class _FakeEngine:
    def __init__(self) -> None:
        self.counts = {"total": 4, "succeeded": 0, "skipped": 0, "failed": 0}

    def item_counts(self) -> dict:
        return dict(self.counts)


def test_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    engine = _FakeEngine()
    show = _Progress(engine, enabled=True, stream=stream, every=0.0)  # type: ignore[arg-type]
    show()
    engine.counts["succeeded"] = 4
    show(final=True)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in stream.getvalue()
    assert lines[0].startswith("[....") and " 0/4 items" in lines[0]
    assert lines[1].startswith("[####") and " 4/4 items (4 ok" in lines[1]


def test_a_run_that_ended_in_its_catalog_ends_without_a_cataloguing_line() -> None:
    """BuildCatalog failed (a month missing days, say): the last progress line said "cataloguing... 0 s" under the
    failure, as if it were still at it."""
    stream = io.StringIO()
    engine = _FakeEngine()
    engine.counts["total"] = None
    show = _Progress(engine, enabled=True, stream=stream, every=0.0)  # type: ignore[arg-type]
    show()
    assert stream.getvalue().startswith("cataloguing... ")
    show(final=True)
    assert stream.getvalue().count("\n") == 1  # the live line only


def test_on_a_terminal_the_cataloguing_line_is_cleared_when_the_run_ends_in_its_catalog() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    engine = _FakeEngine()
    engine.counts["total"] = None
    show = _Progress(engine, enabled=True, stream=stream, every=0.0)  # type: ignore[arg-type]
    show.every = 0.0  # a terminal's redraws are 0.2 s apart
    show()
    show(final=True)
    assert stream.getvalue().startswith("\rcataloguing... ") and stream.getvalue().endswith("\r" + " " * 100 + "\r")
