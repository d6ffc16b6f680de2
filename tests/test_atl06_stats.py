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


def test_ordering_is_the_permutation_lexsort_gives() -> None:
    """cell_statistics orders by cell, then height, then position, as ``np.lexsort((h, cells))`` does, whichever way
    it sorts: ties, -0.0 and 0.0, infinities, tiny numbers, float32 or float64 heights, NaN, cells far apart."""
    from granulemap.recipes.atl06.stats import _by_cell_then_height, _height_key

    rng = np.random.default_rng(3)
    specials = np.array([0.0, -0.0, 1.5, -1.5, np.inf, -np.inf, 3.4e38, -3.4e38, 1e-45, -1e-45, 123.25], np.float32)
    for trial in range(60):
        n = int(rng.integers(1, 3000))
        span = int(rng.choice([1, 3, 4096, 65536, 2**40]))
        cells = rng.integers(0, span, n) + 7 * 4**12
        h32 = np.where(rng.random(n) < 0.3, rng.choice(specials, n),
                       rng.normal(0, 1000, n).astype(np.float32)).astype(np.float32)
        with_nan = h32.copy()
        with_nan[0] = np.nan
        not_float32 = h32.astype(np.float64) + rng.normal(0, 1e-3, n)
        for h in (h32, h32.astype(np.float64), with_nan, not_float32):
            np.testing.assert_array_equal(_by_cell_then_height(cells, h), np.lexsort((h, cells)), err_msg=str(trial))
        assert _height_key(h32) is not None and _height_key(h32.astype(np.float64)) is not None
        assert _height_key(with_nan) is None and _height_key(not_float32) is None


def test_float32_heights_give_the_statistics_of_the_same_heights_in_float64() -> None:
    rng = np.random.default_rng(8)
    cells = rng.integers(5_000, 5_300, size=50_000)
    h = rng.normal(800.0, 40.0, size=cells.size).astype(np.float32)
    h[::7] = np.round(h[::7])  # ties
    sigma = rng.uniform(0.02, 2.0, size=cells.size).astype(np.float32)
    a = cell_statistics(cells, h, sigma)
    b = cell_statistics(cells, h.astype(np.float64), sigma.astype(np.float64))
    np.testing.assert_array_equal(a.cells, b.cells)
    for name in STATISTICS:
        assert a.values[name].dtype == b.values[name].dtype, name
        assert a.values[name].tobytes() == b.values[name].tobytes(), name
