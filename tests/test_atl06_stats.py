"""Per-cell statistics: hand-checked numbers, and agreement with numpy's own per-cell reductions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from granulemap.recipes.atl06.stats import STATISTICS, cell_statistics


def test_one_cell_by_hand() -> None:
    # heights 10, 12, 14, 20 m with sigmas 1, 1, 2, 2 m, given out of order and mixed with another cell
    cells = np.array([5, 9, 5, 5, 5])
    h = np.array([14.0, -5.5, 10.0, 20.0, 12.0])
    sigma = np.array([2.0, 0.5, 1.0, 2.0, 1.0])
    stats = cell_statistics(cells, h, sigma)
    assert stats.cells.tolist() == [5, 9]
    got = {name: values[0] for name, values in stats.values.items()}
    assert got["count"] == 4
    assert (got["h_min"], got["h_max"]) == (10.0, 20.0)
    # weights 1, 1, 1/4, 1/4: (10 + 12 + 14/4 + 20/4) / 2.5 = 30.5 / 2.5
    assert got["h_mean"] == pytest.approx(12.2, rel=1e-15)
    assert got["h_sigma"] == pytest.approx(1 / math.sqrt(2.5), rel=1e-15)
    # mean 14, deviations -4 -2 0 6: (16 + 4 + 0 + 36) / 4
    assert got["h_variance"] == pytest.approx(14.0, rel=1e-15)
    # sorted 10 12 14 20, positions q*(n-1) = 0.75, 1.5, 2.25
    assert got["h_q25"] == pytest.approx(11.5, rel=1e-15)
    assert got["h_q50"] == pytest.approx(13.0, rel=1e-15)
    assert got["h_q75"] == pytest.approx(15.5, rel=1e-15)
    single = {name: values[1] for name, values in stats.values.items()}
    assert single["count"] == 1 and single["h_variance"] == 0.0 and single["h_sigma"] == 0.5
    assert single["h_min"] == single["h_max"] == single["h_mean"] == single["h_q25"] == single["h_q75"] == -5.5


def test_statistics_equal_numpy_reductions_cell_by_cell() -> None:
    rng = np.random.default_rng(42)
    cells = rng.integers(1_000, 1_400, size=20_000)
    h = rng.normal(1500.0, 30.0, size=cells.size).astype(np.float32).astype(np.float64)
    sigma = rng.uniform(0.02, 2.0, size=cells.size)
    stats = cell_statistics(cells, h, sigma)
    assert stats.cells.tolist() == sorted(set(cells.tolist()))
    for i, cell in enumerate(stats.cells):
        here = cells == cell
        x, s = h[here], sigma[here]
        expected = {
            "count": x.size, "h_min": x.min(), "h_max": x.max(), "h_mean": np.average(x, weights=1 / s**2),
            "h_sigma": 1 / np.sqrt(np.sum(1 / s**2)), "h_variance": np.var(x),
            "h_q25": np.quantile(x, 0.25), "h_q50": np.quantile(x, 0.5), "h_q75": np.quantile(x, 0.75),
        }
        assert set(expected) == set(STATISTICS)
        for name, value in expected.items():
            assert stats.values[name][i] == pytest.approx(value, rel=1e-12), (cell, name)


def test_no_segments_give_no_cells() -> None:
    stats = cell_statistics(np.empty(0, np.int64), np.empty(0), np.empty(0))
    assert stats.size == 0 and all(v.size == 0 for v in stats.values.values())


def test_misaligned_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="equal in length"):
        cell_statistics(np.array([1, 2]), np.array([1.0]), np.array([1.0]))
