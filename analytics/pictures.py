"""The map of France by department and the time-series chart, as PNG or SVG, with no data from outside.

Department shapes are derived from the commune centroids shipped with the project (La Poste base): each
cell of a fine lon/lat grid takes the department of the nearest commune within a few kilometres (a
discrete Voronoi diagram grown from the communes), then each department's cells are traced into vector
outlines. Coasts and borders come out a few kilometres generous, which a map coloured by department does
not mind; overseas departments are drawn as insets at their own scale.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Literal

import numpy as np

from analytics.tables import CoverageArea, SearchActivity, snapshot_instant
from core.geo import PARIS, gazetteer

Format = Literal["png", "svg"]
DPI = 100
NO_DATA = "#d9d9d9"
MIN_SIDE, MAX_SIDE = 200, 4000


@dataclass(frozen=True)
class Frame:
    """A map frame: the extent it shows, its grid cell, and how far from a commune land reaches."""

    name: str
    lon: tuple[float, float]
    lat: tuple[float, float]
    cells: int  # along the longer side
    reach_km: float


METRO = Frame("France métropolitaine", (-5.3, 9.7), (41.2, 51.2), 560, 10.0)
OVERSEAS = {
    "971": Frame("Guadeloupe", (-61.85, -61.0), (15.82, 16.52), 140, 9.0),
    "972": Frame("Martinique", (-61.25, -60.8), (14.38, 14.9), 120, 7.0),
    "973": Frame("Guyane", (-54.6, -51.6), (2.1, 5.8), 140, 70.0),
    "974": Frame("La Réunion", (55.2, 55.85), (-21.4, -20.85), 120, 10.0),
    "976": Frame("Mayotte", (44.98, 45.32), (-13.02, -12.63), 120, 5.0),
}


@dataclass(frozen=True)
class Raster:
    grid: np.ndarray  # department index per cell, -1 for sea / nowhere
    codes: tuple[str, ...]
    lons: np.ndarray
    lats: np.ndarray


def _shift(grid: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.full_like(grid, -1)
    ny, nx = grid.shape
    out[max(dy, 0) : ny + min(dy, 0), max(dx, 0) : nx + min(dx, 0)] = grid[
        max(-dy, 0) : ny + min(-dy, 0), max(-dx, 0) : nx + min(-dx, 0)
    ]
    return out


@cache
def raster(frame: Frame) -> Raster:
    """Department of every grid cell of a frame (computed once per process)."""
    lon0, lon1 = frame.lon
    lat0, lat1 = frame.lat
    aspect = math.cos(math.radians((lat0 + lat1) / 2))
    width_km, height_km = (lon1 - lon0) * 111.32 * aspect, (lat1 - lat0) * 110.57
    cell_km = max(width_km, height_km) / frame.cells
    nx, ny = max(2, round(width_km / cell_km)), max(2, round(height_km / cell_km))
    communes = [
        c
        for c in gazetteer().communes.values()
        if lon0 <= c.lon < lon1 and lat0 <= c.lat < lat1 and (c.department.startswith("97") == (frame is not METRO))
    ]
    codes = tuple(sorted({c.department for c in communes}))
    index = {code: i for i, code in enumerate(codes)}
    grid = np.full((ny, nx), -1, dtype=np.int16)
    xs = np.array([(c.lon - lon0) / (lon1 - lon0) * nx for c in communes], dtype=int).clip(0, nx - 1)
    ys = np.array([(c.lat - lat0) / (lat1 - lat0) * ny for c in communes], dtype=int).clip(0, ny - 1)
    grid[ys, xs] = [index[c.department] for c in communes]
    straight = [(1, 0), (-1, 0), (0, 1), (0, -1)]
    diagonal = [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    # Alternating 4- and 8-neighbour growth approximates circles (an octagon) around each commune.
    for step in range(max(1, round(frame.reach_km / cell_km))):
        empty = grid < 0
        if not empty.any():
            break
        grown = grid.copy()
        for dy, dx in straight + (diagonal if step % 2 else []):
            shifted = _shift(grid, dy, dx)
            take = empty & (grown < 0) & (shifted >= 0)
            grown[take] = shifted[take]
        grid = grown
    lons = lon0 + (np.arange(nx) + 0.5) * (lon1 - lon0) / nx
    lats = lat0 + (np.arange(ny) + 0.5) * (lat1 - lat0) / ny
    return Raster(grid, codes, lons, lats)


def _figure(width: int, height: int):  # -> matplotlib Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    for side in (width, height):
        if not MIN_SIDE <= side <= MAX_SIDE:
            raise ValueError(f"width and height must be between {MIN_SIDE} and {MAX_SIDE} pixels")
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, fmt: Format) -> bytes:
    buffer = io.BytesIO()
    # No creation date in the file: the same data give the same picture.
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    fig.savefig(buffer, format=fmt, dpi=DPI, metadata=metadata)
    return buffer.getvalue()


def _draw(ax, frame: Frame, colours: dict[str, str]) -> None:
    r = raster(frame)
    for k, code in enumerate(r.codes):
        mask = r.grid == k
        rows, cols = np.nonzero(mask)
        if rows.size == 0:
            continue
        y0, y1 = max(rows.min() - 1, 0), min(rows.max() + 2, mask.shape[0])
        x0, x1 = max(cols.min() - 1, 0), min(cols.max() + 2, mask.shape[1])
        sub = mask[y0:y1, x0:x1].astype(float)
        lons, lats = r.lons[x0:x1], r.lats[y0:y1]
        ax.contourf(lons, lats, sub, levels=[0.5, 1.5], colors=[colours.get(code, NO_DATA)])
        ax.contour(lons, lats, sub, levels=[0.5], colors="white", linewidths=0.4)
    ax.set_xlim(*frame.lon)
    ax.set_ylim(*frame.lat)
    ax.set_aspect(1 / math.cos(math.radians(sum(frame.lat) / 2)))
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def render_map(
    rows: list[CoverageArea],
    fmt: Format = "png",
    width: int = 1000,
    height: int = 1000,
    title: str = "Créneaux libres à 48 h pour 10 000 habitants",
) -> bytes:
    """France by department, coloured by `slots_per_10k` of department rows (grey: no figure)."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    values = {r.code: r.slots_per_10k for r in rows if r.level == "department" and r.slots_per_10k is not None}
    top = max(values.values(), default=0.0)
    norm = Normalize(vmin=0.0, vmax=top if top > 0 else 1.0)
    cmap = colormaps["YlGnBu"]
    colours = {code: cmap(norm(v)) for code, v in values.items()}
    fig = _figure(width, height)
    ax = fig.add_axes((0.02, 0.1, 0.8, 0.8))
    _draw(ax, METRO, colours)
    when = {r.snapshot for r in rows}
    subtitle = ""
    if when:
        subtitle = (
            snapshot_instant(max(when)).astimezone(PARIS).strftime("instantané du %d/%m/%Y à %H:%M (heure de Paris)")
        )
    fig.suptitle(title, fontsize=max(9, width // 70))
    fig.text(0.5, 0.92, subtitle, ha="center", fontsize=max(7, width // 110), color="#555555")
    for i, frame in enumerate(OVERSEAS.values()):
        inset = fig.add_axes((0.02 + i * 0.16, 0.01, 0.14, 0.1))
        _draw(inset, frame, colours)
        inset.set_title(frame.name, fontsize=max(6, width // 140))
    bar = fig.add_axes((0.86, 0.2, 0.025, 0.6))
    colourbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=bar)
    colourbar.set_label("créneaux / 10 000 hab.", fontsize=max(7, width // 110))
    fig.text(
        0.86,
        0.14,
        "gris : pas de chiffre",
        fontsize=max(6, width // 140),
        color="#555555",
        bbox={"facecolor": NO_DATA, "edgecolor": "none"},
    )
    return _save(fig, fmt)


def render_chart(
    points: list[CoverageArea],
    activity: list[SearchActivity],
    fmt: Format = "png",
    width: int = 1200,
    height: int = 500,
    span: tuple[datetime, datetime] | None = None,
) -> bytes:
    """National free slots over time (line), searches and under-served searches per hour (bars), over `span`."""
    import matplotlib.dates as mdates

    fig = _figure(width, height)
    ax = fig.add_axes((0.08, 0.15, 0.84, 0.72))
    series = sorted((snapshot_instant(p.snapshot), p.slots) for p in points if p.level == "national")
    horizon = points[0].horizon_h if points else 48
    if series:
        ax.plot([t for t, _ in series], [v for _, v in series], color="#1f77b4", marker="o", markersize=5)
    ax.set_ylabel(f"créneaux libres à {horizon} h", color="#1f77b4")
    ax.set_ylim(bottom=0)
    bars = ax.twinx()
    if activity:
        hours = [a.hour_start for a in activity]
        bars.bar(hours, [a.searches for a in activity], width=1 / 24, align="edge", color="#bbbbbb", label="recherches")
        bars.bar(
            hours,
            [a.under_served for a in activity],
            width=1 / 24,
            align="edge",
            color="#d62728",
            label="sous-desservies",
        )
        bars.legend(loc="upper right", fontsize=8)
    bars.set_ylabel("recherches / heure (rouge : sous-desservies)", color="#d62728")
    ax.set_zorder(bars.get_zorder() + 1)  # the line over the bars
    ax.patch.set_visible(False)
    if span is not None:
        ax.set_xlim(span[0], span[1])
    bars.set_ylim(bottom=0)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%d/%m %Hh"))
    if not series and not activity:
        ax.text(0.5, 0.5, "Aucune donnée sur la période", transform=ax.transAxes, ha="center", va="center")
        ax.set_xticks([])
    fig.suptitle("Créneaux libres et recherches sous-desservies", fontsize=max(9, width // 80))
    return _save(fig, fmt)
