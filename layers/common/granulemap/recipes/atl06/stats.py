"""Per-cell statistics of ATL06 land-ice heights, vectorised: sort by cell once, reduce each run of equal cells.

Heights are ``h_li`` in metres above the WGS84 ellipsoid; ``h_li_sigma`` is its 1-sigma uncertainty in metres.
All sums are done in float64 whatever the input precision (ATL06 stores float32).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

QUANTILES: dict[str, float] = {"h_q25": 0.25, "h_q50": 0.50, "h_q75": 0.75}

STATISTICS: dict[str, str] = {
    "count": "number of land-ice segments in the cell",
    "h_min": "minimum h_li",
    "h_max": "maximum h_li",
    "h_mean": "mean h_li weighted by 1/h_li_sigma**2",
    "h_sigma": "uncertainty of h_mean: 1/sqrt(sum(1/h_li_sigma**2))",
    "h_variance": "population variance of h_li (unweighted, ddof=0)",
    **{name: f"{q:g} quantile of h_li (linear interpolation, as numpy's default)" for name, q in QUANTILES.items()},
}
"""The statistics, in output order, with what each one is. All but ``count`` are in metres (variance: m²)."""


@dataclass(frozen=True)
class CellStatistics:
    """Statistics of the cells that hold at least one segment; ``cells`` ascending, arrays aligned with it."""

    cells: np.ndarray
    values: dict[str, np.ndarray]

    @property
    def size(self) -> int:
        return int(self.cells.size)


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy's own linear interpolation (``np.quantile``'s ``_lerp``): exact at both ends, monotonic."""
    diff = b - a
    return np.where(t >= 0.5, b - diff * (1.0 - t), a + diff * t)


def _by_cell_then_height(cells: np.ndarray, h: np.ndarray) -> np.ndarray:
    """The permutation that sorts by cell, then by height, then by position: ``np.lexsort((h, cells))``.

    When the cells span fewer than 2**16 ids (always within one parent cell up to 8 orders down), the same
    permutation comes faster from two stable sorts: by height, then by the cell's offset from the smallest id as
    uint16, which numpy sorts with a radix sort (bench/atl06.py measures both). A stable sort keeps the previous
    order among equal keys, so ties fall exactly as lexsort leaves them and every statistic is bit-identical.
    """
    lowest = cells.min()
    if cells.max() - lowest >= 2**16:
        return np.lexsort((h, cells))
    order = np.argsort(h, kind="stable")
    offset = (cells - lowest).astype(np.uint16)
    return order[np.argsort(offset[order], kind="stable")]


def cell_statistics(cells: np.ndarray, h_li: np.ndarray, h_li_sigma: np.ndarray) -> CellStatistics:
    """count, h_min, h_max, h_mean, h_sigma, h_variance, h_q25, h_q50, h_q75 of every cell in ``cells``.

    ``cells``: cell id of each segment; ``h_li``/``h_li_sigma``: its height and uncertainty (metres, finite,
    sigma > 0: the caller filters). The weighted mean uses weights 1/sigma²; quantiles interpolate linearly between
    order statistics, as ``np.quantile(..., method="linear")``.
    """
    cells = np.asarray(cells, dtype=np.int64)
    h = np.asarray(h_li, dtype=np.float64)
    sigma = np.asarray(h_li_sigma, dtype=np.float64)
    if not (cells.shape == h.shape == sigma.shape and cells.ndim == 1):
        raise ValueError(f"cells, h_li and h_li_sigma must be 1-D and equal in length: {cells.shape}, "
                         f"{h.shape}, {sigma.shape}")
    if cells.size == 0:
        nothing = {name: np.empty(0, dtype=np.int64 if name == "count" else np.float64) for name in STATISTICS}
        return CellStatistics(cells=np.empty(0, dtype=np.int64), values=nothing)

    order = _by_cell_then_height(cells, h)  # order statistics are then slices of one array
    cells, h, sigma = cells[order], h[order], sigma[order]
    starts = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]])
    counts = np.diff(np.r_[starts, cells.size])
    last = starts + counts - 1

    weights = 1.0 / sigma**2
    sum_w = np.add.reduceat(weights, starts)
    mean = np.add.reduceat(h, starts) / counts
    deviation = h - np.repeat(mean, counts)
    values: dict[str, np.ndarray] = {
        "count": counts.astype(np.int64),
        "h_min": h[starts],
        "h_max": h[last],
        "h_mean": np.add.reduceat(weights * h, starts) / sum_w,
        "h_sigma": 1.0 / np.sqrt(sum_w),
        "h_variance": np.add.reduceat(deviation**2, starts) / counts,
    }
    for name, q in QUANTILES.items():
        position = q * (counts - 1)
        below = np.floor(position).astype(np.int64)
        above = np.minimum(below + 1, counts - 1)
        values[name] = _lerp(h[starts + below], h[starts + above], position - below)
    return CellStatistics(cells=cells[starts], values={name: values[name] for name in STATISTICS})
