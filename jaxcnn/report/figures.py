"""Figures as PNG data URIs: matplotlib `Figure()`s (no pyplot state) saved to memory.

Signed quantities (deltas, gradients, kernels, differences) use one diverging scale centred on 0,
DIVERGING, red positive and blue negative, with its colour bar; activations a sequential one. Each
function returns a data URI; `page.figure(uri, caption)` puts it on a page with its caption.
"""
from __future__ import annotations

import base64
import io

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DIVERGING = "RdBu_r"          # colour-blind safe, centred on 0: red positive, blue negative
SEQUENTIAL = "viridis"        # activations
POSITIVE, NEGATIVE = "#b2182b", "#2166ac"      # the ends of RdBu_r, for bars of signed values


def png_uri(fig: Figure, dpi: int = 80) -> str:
    """A matplotlib Figure as a PNG data URI."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def symmetric_limit(arrays) -> float:
    """max |x| over `arrays`, the half-width of a diverging scale centred on 0 (1 when all are 0)."""
    m = max((float(np.max(np.abs(a))) for a in arrays if np.size(a)), default=0.0)
    return m or 1.0


def mosaic(maps, cols: int, gap: int = 1) -> np.ndarray:
    """Equal-sized 2-D maps tiled row by row into one array, NaN (drawn white) between and around them."""
    h, w = maps[0].shape
    rows = -(-len(maps) // cols)
    out = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap), np.nan)
    for n, m in enumerate(maps):
        r, c = divmod(n, cols)
        out[gap + r * (h + gap): gap + r * (h + gap) + h, gap + c * (w + gap): gap + c * (w + gap) + w] = m
    return out


def maps_png(maps, titles=(), cmap: str = DIVERGING, diverging: bool = True, cols: int = 12,
             limit: float | None = None) -> str:
    """Equal-sized maps as one mosaic (one imshow: fast) on one shared colour scale with its colour bar.
    Diverging: ±`limit` (default max |x| of the maps), centred on 0. `titles` label the tiles (left to
    right, top to bottom) when there are few enough to read. Several figures share a scale when they are
    given the same `limit`."""
    maps = [np.atleast_2d(np.asarray(m, np.float64)) for m in maps]
    if diverging:
        lim = limit or symmetric_limit(maps)
        vmin, vmax = -lim, lim
    else:
        vmin, vmax = min(float(m.min()) for m in maps), max(float(m.max()) for m in maps)
        vmax = vmax if vmax > vmin else vmin + 1
    cols = min(cols, len(maps))
    tiled = mosaic(maps, cols)
    h, w = maps[0].shape
    scale = min(0.09, 11.0 / tiled.shape[1], 6.0 / tiled.shape[0]) if max(h, w) > 1 else 0.05
    fig = Figure(figsize=(max(tiled.shape[1] * scale, 1.2) + 1.0, max(tiled.shape[0] * scale, 0.5) + 0.35))
    ax = fig.subplots()
    ax.axis("off")
    colours = matplotlib.colormaps[cmap].with_extremes(bad="white")
    image = ax.imshow(tiled, cmap=colours, vmin=vmin, vmax=vmax, interpolation="nearest", aspect="equal")
    if len(maps) <= 24 and min(h, w) >= 4:
        for n, title in enumerate(titles):
            r, c = divmod(n, cols)
            ax.text(1 + c * (w + 1), r * (h + 1) + 0.5, title, fontsize=6, va="bottom", ha="left")
    fig.colorbar(image, ax=ax, shrink=0.9, pad=0.02, fraction=0.04).ax.tick_params(labelsize=6)
    return png_uri(fig)


def bars_png(values, names, true: int | None, predicted: int | None, title: str, signed: bool = False) -> str:
    """A bar per class; the true class outlined in black, the predicted one hatched orange. `signed`: bars
    coloured as the diverging maps are, positive red and negative blue."""
    values = np.ravel(values)
    fig = Figure(figsize=(5.2, 2.2))
    ax = fig.subplots()
    colors = [POSITIVE if v < 0 else NEGATIVE for v in values] if signed else ["#4d4d4d"] * len(values)
    bars = ax.bar(np.arange(len(values)), values, color=colors)
    for c, bar in enumerate(bars):
        if c == true:
            bar.set_edgecolor("black"), bar.set_linewidth(2)
        if c == predicted:
            bar.set_hatch("//"), bar.set_facecolor("#e08214")
    ax.set_xticks(np.arange(len(values)), [str(n) for n in names], rotation=45, ha="right", fontsize=7)
    ax.axhline(0, color="0.5", lw=0.6)
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=7)
    return png_uri(fig)


def line_png(series: dict, xlabel: str, ylabel: str, title: str, logy: bool = False, marks=None) -> str:
    """Lines {name: (x, y)}; `marks`: x positions of faint vertical lines (epoch boundaries)."""
    fig = Figure(figsize=(6, 2.6))
    ax = fig.subplots()
    for name, (x, y) in series.items():
        ax.plot(x, y, lw=1.2, marker="o" if len(x) < 30 else None, ms=3, label=name)
    for m in marks or ():
        ax.axvline(m, color="0.85", lw=0.8, zorder=0)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logy:
        ax.set_yscale("log")
    if len(series) > 1:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    if xlabel == "epoch":                          # whole epochs only, also for a one-epoch run
        epochs = sorted({int(e) for x, _ in series.values() for e in x})
        ax.set_xticks(epochs) if len(epochs) <= 12 else ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    return png_uri(fig)


def confusion_png(confusion, names) -> str:
    """The confusion matrix as a heat map with each cell's count written in it (rows: true class)."""
    n = len(names)
    fig = Figure(figsize=(0.45 * n + 2, 0.42 * n + 1.2))
    ax = fig.subplots()
    image = ax.imshow(confusion, cmap="Blues")
    top = confusion.max() or 1
    for (i, j), v in np.ndenumerate(confusion):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=6.5, color="white" if v > top / 2 else "black")
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true")
    fig.colorbar(image, ax=ax, shrink=0.8).ax.tick_params(labelsize=6)
    return png_uri(fig)


def image_png(image) -> str:
    """A test image as a small grey (1 channel), RGB (3) or first-channel picture."""
    fig = Figure(figsize=(0.9, 0.9))
    ax = fig.subplots()
    ax.axis("off")
    ax.imshow(display_image(image), cmap="gray_r", interpolation="nearest")
    return png_uri(fig, dpi=60)


def display_image(image):
    image = np.asarray(image)
    return image if image.ndim == 2 else image if image.shape[-1] == 3 else image[..., 0]
