"""A PNG map of one statistic of the store: each child cell with data drawn at its centre."""

from __future__ import annotations

import io

import numpy as np

from granulemap.recipes.atl06.cells import cell_centres


def plot_cells(cells: np.ndarray, order: int, values: np.ndarray, *, title: str, label: str) -> bytes:
    """PNG bytes: cell centres (WGS84 longitude/latitude) coloured by ``values``, with a labelled colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat, lon = cell_centres(cells, order)
    fig, ax = plt.subplots(figsize=(8, 6), dpi=100)
    if cells.size:
        points = ax.scatter(lon, lat, c=values, s=max(2.0, 4000.0 / np.sqrt(cells.size + 1)), marker="s",
                            cmap="viridis", linewidths=0)
        fig.colorbar(points, ax=ax, label=label)
        # degrees of longitude shrink with cos(latitude): keep the map's shape true at its middle latitude
        ax.set_aspect(1.0 / max(np.cos(np.deg2rad(float(np.median(lat)))), 0.05))
    else:
        ax.text(0.5, 0.5, "no cells with data", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
