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
    "h_sigma": "formal uncertainty of h_mean, 1/sqrt(sum(1/h_li_sigma**2)), assuming independent segment errors: "
               "an underestimate (ATL06 segments overlap by half, and h_li_sigma leaves out the geolocation error)",
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
    permutation comes faster from stable sorts of 16-bit keys, which numpy sorts with a radix sort (bench/atl06.py
    measures it against lexsort): when every height is a float32 number (ATL06 stores h_li as float32), by the low
    then the high half of an unsigned integer that orders as the height does (``_height_key``), else by the height
    itself; then by the cell's offset from the smallest id as uint16. A stable sort keeps the previous order among
    equal keys, so ties fall exactly as lexsort leaves them and every statistic is bit-identical.
    """
    lowest = cells.min()
    if cells.max() - lowest >= 2**16:
        return np.lexsort((h, cells))
    key = _height_key(h)
    if key is None:
        order = np.argsort(h, kind="stable")
    else:
        order = np.argsort((key & 0xFFFF).astype(np.uint16), kind="stable")
        order = order[np.argsort((key >> 16).astype(np.uint16)[order], kind="stable")]
    offset = (cells - lowest).astype(np.uint16)
    return order[np.argsort(offset[order], kind="stable")]


def _height_key(h: np.ndarray) -> np.ndarray | None:
    """uint32 keys in the order of the heights, equal where the heights are equal (-0.0 and 0.0 too), when every
    height is a float32 number and none is NaN; else None."""
    if h.dtype == np.float32:
        h32 = h
        if np.isnan(h32).any():
            return None
    else:
        h32 = h.astype(np.float32)
        if not np.array_equal(h32, h):  # not all float32 numbers (NaN too: NaN != NaN)
            return None
    bits = (h32 + np.float32(0.0)).view(np.uint32)  # -0.0 + 0.0 is 0.0
    # IEEE 754 order as unsigned integers: flip every bit of negatives, only the sign bit of the others
    return np.where(bits >= 0x80000000, ~bits, bits | 0x80000000)


def cell_statistics(cells: np.ndarray, h_li: np.ndarray, h_li_sigma: np.ndarray) -> CellStatistics:
    """count, h_min, h_max, h_mean, h_sigma, h_variance, h_q25, h_q50, h_q75 of every cell in ``cells``.

    ``cells``: cell id of each segment; ``h_li``/``h_li_sigma``: its height and uncertainty (metres, finite,
    sigma > 0: the caller filters). The weighted mean uses weights 1/sigma²; quantiles interpolate linearly between
    order statistics, as ``np.quantile(..., method="linear")``.
    """
    cells = np.asarray(cells, dtype=np.int64)
    h_given, sigma_given = np.asarray(h_li), np.asarray(h_li_sigma)
    if not (cells.shape == h_given.shape == sigma_given.shape and cells.ndim == 1):
        raise ValueError(f"cells, h_li and h_li_sigma must be 1-D and equal in length: {cells.shape}, "
                         f"{h_given.shape}, {sigma_given.shape}")
    if cells.size == 0:
        nothing = {name: np.empty(0, dtype=np.int64 if name == "count" else np.float64) for name in STATISTICS}
        return CellStatistics(cells=np.empty(0, dtype=np.int64), values=nothing)

    # Order statistics are then slices of one array. The heights order the same in their own precision as in
    # float64 (the conversion is exact), so float32 heights are ordered as given and converted once ordered.
    if h_given.dtype != np.float32:
        h_given = np.asarray(h_given, dtype=np.float64)
    order = _by_cell_then_height(cells, h_given)
    cells = cells[order]
    h = np.asarray(h_given[order], dtype=np.float64)
    sigma = np.asarray(sigma_given[order], dtype=np.float64)
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
