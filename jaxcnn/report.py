"""`jaxcnn report RUN_DIR`: one self-contained HTML page that follows one test image through a trained net.

The page's maps, deltas and gradients come from the lecture's own delta rule
(`jaxcnn.verification.backprop.cnnff`/`cnnbp` on `toolbox.to_toolbox(net, with_options=True)`), so it
shows `a`, `d`, `dk`, `od`, `fvd` exactly as `cnnbp.m` computes them. The toolbox keeps every map
transposed; maps are transposed back for display, while the arithmetic tables (section 4) stay in the
toolbox's layout, the one `convn` works on. Figures are matplotlib `Figure()`s inlined as PNG data
URIs; a Content-Security-Policy meta tag forbids every outside load; there is no JavaScript.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import io
import platform
import sys
import time
from pathlib import Path
from string import Template

import jax
import jaxlib
import numpy as np
import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from . import config as config_mod, data as data_mod, fileio, netfile, records, toolbox
from .layers import Conv, Input, Pool, describe, layer_shapes
from .model import loss_and_grad
from .net import count_params
from .numerics import use_dtype
from .train import evaluate, predict

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
DIVERGING = "RdBu_r"          # colour-blind safe, centred on 0 (deltas, gradients, kernels)
SEQUENTIAL = "viridis"        # activations
N_SAMPLED = 3                 # weights per parameter group checked by central differences
GALLERY = 24                  # misclassified images shown


class ReportError(ValueError):
    """The run folder cannot be reported on (missing files, image index out of range)."""


# ---- figures ---------------------------------------------------------------------------------------

def png_uri(fig: Figure, dpi: int = 80) -> str:
    """A matplotlib Figure as a PNG data URI (no files, no pyplot state)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def img(uri: str, alt: str, cls: str = "") -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}"{f" class={cls!r}" if cls else ""}>'


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


def maps_figure(maps, titles, cmap, diverging: bool, label: str, cols: int = 12, limit=None) -> str:
    """The maps of one layer as one mosaic (one imshow: fast) on one shared colour scale with its colour bar;
    `titles` label the tiles (left to right, top to bottom) when there are few enough to read."""
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
    return img(png_uri(fig), label)


def bars_figure(values, names, true: int | None, predicted: int | None, title: str, diverging=False) -> str:
    """A bar per class; the true class outlined in black, the predicted one hatched."""
    values = np.ravel(values)
    fig = Figure(figsize=(5.2, 2.2))
    ax = fig.subplots()
    colors = ["#b2182b" if v < 0 else "#2166ac" for v in values] if diverging else ["#4d4d4d"] * len(values)
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
    return img(png_uri(fig), title)


def line_figure(series: dict, xlabel: str, ylabel: str, title: str, logy: bool = False, marks=None) -> str:
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
    return img(png_uri(fig), title)


def confusion_figure(confusion, names) -> str:
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
    return img(png_uri(fig), "confusion matrix")


def small_image(image) -> str:
    """A test image as a small grey (1 channel), RGB (3) or first-channel picture."""
    fig = Figure(figsize=(0.9, 0.9))
    ax = fig.subplots()
    ax.axis("off")
    ax.imshow(display_image(image), cmap="gray_r", interpolation="nearest")
    return png_uri(fig, dpi=60)


def display_image(image):
    image = np.asarray(image)
    return image if image.ndim == 2 else image if image.shape[-1] == 3 else image[..., 0]


# ---- tables ----------------------------------------------------------------------------------------

def table(array, table_id: str, caption: str, highlight=None) -> str:
    """A 2-D array as an HTML table; each cell shows 4 significant digits and carries the exact value in
    `data-v` (what the tests compare). `highlight`: a boolean mask of cells to mark."""
    array = np.atleast_2d(np.asarray(array, np.float64))
    rows = []
    for i, row in enumerate(array):
        cells = "".join(f'<td data-v="{v!r}"{" class=hl" if highlight is not None and highlight[i, j] else ""}>'
                        f"{v:.4g}</td>" for j, v in enumerate(row.tolist()))
        rows.append(f"<tr>{cells}</tr>")
    return (f'<table class="num" id="{table_id}"><caption>{caption}</caption>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def rows_table(header, rows, table_id: str, caption: str = "") -> str:
    """A plain table of strings (already escaped where needed)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    cap = f"<caption>{caption}</caption>" if caption else ""
    return f'<table class="rows" id="{table_id}">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# ---- the analysis of one image -----------------------------------------------------------------------

def natural(m):
    """A toolbox map H×W×1 (transposed image, one sample) -> the natural H×W picture."""
    return np.asarray(m)[:, :, 0].T


@dataclasses.dataclass
class Analysis:
    """cnnff + cnnbp of one image and its label, in the toolbox's layout (float64)."""
    net: object          # the jaxcnn Net, float64
    tb: dict             # toolbox dict with options
    result: dict         # cnnbp(cnnff(tb, x), y)
    image: np.ndarray    # natural (H, W, C) floats in [0, 1]
    label: int


def analyse(net, image, label: int) -> Analysis:
    """The delta rule on one image (natural (H, W[, C]) floats) and its one-hot label."""
    from .verification import backprop as bp
    from .verification.checks import toolbox_input

    tb = toolbox.to_toolbox(net, with_options=True)
    y = np.eye(net.n_classes)[[label]].T
    result = bp.cnnbp(bp.cnnff(tb, toolbox_input(np.asarray(image)[None])), y)
    return Analysis(net, tb, result, np.asarray(image), int(label))


def as_float64(net):
    """The same net in float64 (the delta rule and the proof table are float64)."""
    use_dtype("float64")
    return dataclasses.replace(net, params=jax.tree.map(lambda a: np.asarray(a, np.float64), net.params))


# ---- section 1: architecture ---------------------------------------------------------------------------

def architecture_rows(net) -> list[list[str]]:
    """Per layer: number, type, maps@size, parameters; then the output layer and the total."""
    shapes = layer_shapes(net.layers, net.input_shape)
    rows, c_in = [], net.input_shape[2]
    for l, (layer, (h, w, c)) in enumerate(zip(net.layers, shapes), start=1):
        if isinstance(layer, Input):
            kind, params = "input", 0
        elif isinstance(layer, Conv):
            kind = f"c: {layer.outputmaps} maps, {layer.kernelsize}×{layer.kernelsize} kernels, {layer.activation}"
            params = layer.kernelsize ** 2 * c_in * layer.outputmaps + layer.outputmaps
        else:
            kind, params = f"s: scale {layer.scale}, {layer.pool} pooling", 0
        rows.append([str(l), kind, f"{c}@{h}×{w}", f"{params:,}"])
        c_in = c
    h, w, c = shapes[-1]
    fv = h * w * c
    rows.append(["fv", "feature vector (each map's column-major flattening, concatenated)", str(fv), "0"])
    rows.append(["o", f"output: {net.output}", str(net.n_classes), f"{fv * net.n_classes + net.n_classes:,}"])
    rows.append(["", "<b>total</b>", "", f"<b>{count_params(net):,}</b>"])
    return rows


def size_chain(net) -> str:
    """'28×28 → 6@24×24 → …' for the page's first line."""
    shapes = layer_shapes(net.layers, net.input_shape)
    parts = [f"{c}@{h}×{w}" if c > 1 or i else f"{h}×{w}" for i, (h, w, c) in enumerate(shapes)]
    h, w, c = shapes[-1]
    return " → ".join(parts + [str(h * w * c), str(net.n_classes)])


# ---- sections 2 and 3: forward and backward maps ----------------------------------------------------------

def forward_section(an: Analysis, names) -> str:
    r, parts = an.result, []
    image = an.image
    for c in range(image.shape[-1]):
        parts.append(f"<h3>input channel {c + 1}</h3>" + maps_figure([image[..., c]], [f"x{c + 1}"], "gray_r",
                                                                      False, f"input channel {c + 1}"))
    for l in range(1, len(r["a"])):
        layer = an.tb["layers"][l]
        maps = [natural(m) for m in r["a"][l]]
        kind = "conv" if layer["type"] == "c" else "pool"
        lo, hi = min(float(m.min()) for m in maps), max(float(m.max()) for m in maps)
        parts.append(f"<h3>layer {l + 1} ({kind}): a{{j}}, {len(maps)} maps {maps[0].shape[0]}×{maps[0].shape[1]}, "
                     f"min {lo:.3g}, max {hi:.3g}</h3>"
                     + maps_figure(maps, [f"a{{{j + 1}}}" for j in range(len(maps))], SEQUENTIAL, False,
                                   f"layer {l + 1} maps"))
    fv = np.ravel(r["fv"])
    parts.append(f"<h3>feature vector fv ({fv.size} values)</h3>"
                 + maps_figure([np.repeat(fv[None, :], max(1, fv.size // 40), axis=0)], ["fv"], SEQUENTIAL, False,
                                 "feature vector", cols=1))
    o = np.ravel(r["o"])
    predicted = int(np.argmax(o))
    parts.append(f"<h3>outputs o: true class <b>{html.escape(names[an.label])}</b> (outlined), predicted "
                 f"<b>{html.escape(names[predicted])}</b> (hatched)</h3>"
                 + bars_figure(o, names, an.label, predicted, "outputs o"))
    return "\n".join(parts)


def backward_section(an: Analysis, names) -> str:
    r, parts = an.result, []
    predicted = int(np.argmax(r["o"]))
    loss = float(r["L"])
    od_rule = "od = e (softmax with cross-entropy)" if an.net.output == "softmax" else "od = e .* o(1 − o)"
    parts.append(f"<p>L = {loss:.6g}; e = o − y; output delta {od_rule}. Colour maps: {DIVERGING}, one scale per layer, centred on 0 (red positive, "
                 f"blue negative).</p>")
    parts.append('<div class="row">' + bars_figure(r["e"], names, an.label, predicted, "e = o − y", True)
                 + bars_figure(r["od"], names, an.label, predicted, od_rule, True) + "</div>")
    n = len(an.tb["layers"])
    for l in range(n - 1, 0, -1):
        layer = r["layers"][l]
        ds = [natural(d) for d in layer["d"]]
        parts.append(f"<h3>layer {l + 1} ({'conv' if layer['type'] == 'c' else 'pool'}): δ{{j}} — {_delta_rule(an, l)}"
                     f"</h3>" + maps_figure(ds, [f"d{{{j + 1}}}" for j in range(len(ds))], DIVERGING, True,
                                            f"layer {l + 1} deltas"))
        if layer["type"] == "c":
            dk = [natural(k[:, :, None]) for row in layer["dk"] for k in row]
            titles = [f"dk{{{i + 1}}}{{{j + 1}}}" for i in range(len(layer["dk"])) for j in range(len(layer["dk"][0]))]
            parts.append(f"<h4>layer {l + 1}: dk{{i}}{{j}} = convn(flipall(a{{i}}), d{{j}}, 'valid') / N "
                         f"(toolbox kernels' gradients, transposed for display; row i = input map)</h4>"
                         + maps_figure(dk, titles, DIVERGING, True, f"layer {l + 1} kernel gradients",
                                       cols=len(layer["dk"][0])))
    return "\n".join(parts)


def _delta_rule(an: Analysis, l: int) -> str:
    """In words, the line of cnnbp.m that made layer l's δ."""
    layers, n = an.tb["layers"], len(an.tb["layers"])
    act = layers[l].get("activation", "sigmoid")
    factor = {"sigmoid": "a(1 − a)", "tanh": "(1 − a²)", "relu": "[a > 0]"}[act]
    if l == n - 1:
        rule = "fvd = ffWᵀ·od reshaped to the last maps"
        return rule + (f", times {factor}" if layers[l]["type"] == "c" else "")
    nxt = layers[l + 1]
    if nxt["type"] == "c":
        rule = "Σ_j convn(d_next{j}, rot180(k{i}{j}), 'full')"
    elif nxt.get("pool", "mean") == "max":
        rule = f"expand(d_next, [{nxt['scale']} {nxt['scale']} 1]) .* mask"
    else:
        rule = f"expand(d_next, [{nxt['scale']} {nxt['scale']} 1]) / {nxt['scale']}²"
    return f"{factor} .* {rule}" if layers[l]["type"] == "c" else rule


# ---- section 4: the lecture's operations on this net's numbers --------------------------------------------

def conv_layers(tb) -> list[int]:
    return [l for l, layer in enumerate(tb["layers"]) if layer["type"] == "c"]


def kernel_tables(an: Analysis) -> tuple[str, dict]:
    """Toolbox kernel k{1}{1} of the last 'c' layer, its rot180, and jaxcnn's stored kernel rot180(k)ᵀ."""
    from .verification import backprop as bp

    l = conv_layers(an.tb)[-1]
    k = np.asarray(an.tb["layers"][l]["k"][0][0])
    jk = np.asarray(an.net.params["conv"][len(conv_layers(an.tb)) - 1]["k"])[:, :, 0, 0]
    values = {"kernel": k, "rot180": bp.rot180(k), "jaxcnn": jk}
    body = ('<div class="row">' + table(k, "t-kernel", f"layer {l + 1}: toolbox k{{1}}{{1}}")
            + table(bp.rot180(k), "t-rot180", "rot180(k{1}{1}) = flipdim(flipdim(k, 1), 2)")
            + table(jk, "t-jaxcnn-kernel", "jaxcnn k[:, :, 0, 0] = rot180(k{1}{1})ᵀ") + "</div>")
    return body, values


def full_window(an: Analysis) -> tuple[str, dict]:
    """One value of convn(d_next{1}, rot180(k{1}{1}), 'full') written out as the products of one window.

    full convolution with rot180(k) is a cross-correlation with k of δ zero-padded by K − 1 on every side:
    convn(d, rot180(k), 'full')(p, q) = Σ_{m,n} dpad(p + m, q + n)·k(m, n)."""
    from .verification import backprop as bp

    l = conv_layers(an.tb)[-1]                  # the 'c' layer whose δ goes back through its kernels
    k = np.asarray(an.tb["layers"][l]["k"][0][0])
    d = np.asarray(an.result["layers"][l]["d"][0])[:, :, 0]
    K = k.shape[0]
    full = bp.convn_full(d[:, :, None], bp.rot180(k))[:, :, 0]
    p, q = full.shape[0] // 2, full.shape[1] // 2
    window = np.pad(d, K - 1)[p:p + K, q:q + K]
    products = window * k
    values = {"window": window, "products": products, "sum": float(products.sum()), "full": float(full[p, q]),
              "layer": l, "p": p, "q": q}
    body = (f"<p>Layer {l}'s δ gets, from map j = 1 of layer {l + 1}, convn(d{{1}}, rot180(k{{1}}{{1}}), 'full'). "
            f"Its entry ({p + 1}, {q + 1}) (toolbox layout, 1-based) is the window of d{{1}} zero-padded by K − 1 = "
            f"{K - 1} that starts there, times k{{1}}{{1}} element by element (the full convolution flips "
            f"rot180(k) back to k), summed:</p>"
            '<div class="row">' + table(window, "t-window", f"window of zero-padded d{{1}} of layer {l + 1}")
            + table(k, "t-window-k", "k{1}{1}") + table(products, "t-products", "products window .* k") + "</div>"
            f'<p class="eq">Σ products = <span id="v-window-sum" data-v="{values["sum"]!r}">{values["sum"]:.6g}'
            f'</span>; convn(d{{1}}, rot180(k{{1}}{{1}}), \'full\')({p + 1}, {q + 1}) = '
            f'<span id="v-window-full" data-v="{values["full"]!r}">{values["full"]:.6g}</span>. '
            f"Summed over every j (and times the activation's derivative where layer {l} is a 'c' layer) this "
            f"is δ{{1}}({p + 1}, {q + 1}) of layer {l}.</p>")
    return body, values


def dk_entry(an: Analysis) -> tuple[str, dict]:
    """dk{1}{1}(u, v) of the last 'c' layer as convn(flipall(a{1}), d{1}, 'valid'), one entry written out.

    convn flips its second argument too, so entry (u, v) pairs a{1}(K − 1 − u + m, K − 1 − v + n) with d{1}(m, n):
    dk(u, v) = Σ_{m,n} a(K−1−u+m, K−1−v+n)·d(m, n) / N."""
    from .verification import backprop as bp

    l = conv_layers(an.tb)[-1]
    a = np.asarray(an.result["a"][l - 1][0])
    d = np.asarray(an.result["layers"][l]["d"][0])
    K = an.tb["layers"][l]["kernelsize"]
    h, w = d.shape[:2]
    u, v = 0, 0
    window = a[K - 1 - u:K - 1 - u + h, K - 1 - v:K - 1 - v + w, 0]
    products = window * d[:, :, 0]
    dk = float(an.result["layers"][l]["dk"][0][0][u, v])
    values = {"flipall": bp.flipall(a)[:, :, 0], "d": d[:, :, 0], "products": products,
              "sum": float(products.sum()), "dk": dk}
    body = (f"<p>Layer {l + 1}: dk{{1}}{{1}} = convn(flipall(a{{1}}), d{{1}}, 'valid') / N with a{{1}} the "
            f"{a.shape[0]}×{a.shape[1]} map of layer {l} and N = 1 image. Because convn flips d{{1}} as well, entry "
            f"(u, v) = (1, 1) pairs a{{1}}(K − u + m, K − v + n) with d{{1}}(m, n), 1-based: the flips cancel and it is "
            f"the window of a{{1}} at offset K − 1 = {K - 1} times d{{1}}.</p>"
            '<div class="row">' + table(values["flipall"], "t-flipall", f"flipall(a{{1}}) of layer {l}")
            + table(values["d"], "t-dk-d", f"d{{1}} of layer {l + 1}")
            + table(products, "t-dk-products", "a{1} window .* d{1}") + "</div>"
            f'<p class="eq">Σ products / N = <span id="v-dk-sum" data-v="{values["sum"]!r}">{values["sum"]:.6g}</span>; '
            f'dk{{1}}{{1}}(1, 1) from cnnbp = <span id="v-dk" data-v="{dk!r}">{dk:.6g}</span>.</p>')
    return body, values


def pool_block(an: Analysis) -> tuple[str, dict] | None:
    """A pooled δ block (≤ 3×3) of the last 's' layer that follows a 'c' layer, and what it becomes
    going back: expand(d, [s s 1]) / s² (mean) or expand(d, [s s 1]) .* mask (max)."""
    from .verification import backprop as bp

    layers = an.tb["layers"]
    found = [l for l in range(2, len(layers)) if layers[l]["type"] == "s" and layers[l - 1]["type"] == "c"]
    if not found:
        return None
    l = found[-1]
    s, is_max = layers[l]["scale"], layers[l].get("pool", "mean") == "max"
    d = np.asarray(an.result["layers"][l]["d"][0])
    b = min(3, d.shape[0]), min(3, d.shape[1])
    block = d[:b[0], :b[1], :]
    expanded = bp.expand(block, [s, s, 1])
    back = expanded * an.result["mask"][l][0][:b[0] * s, :b[1] * s] if is_max else expanded / s ** 2
    values = {"block": block[:, :, 0], "back": back[:, :, 0], "s": s, "max": is_max}
    rule = "expand(d, [s s 1]) .* mask" if is_max else f"expand(d, [s s 1]) / s² (s = {s})"
    body = (f"<p>Layer {l + 1} ({'max' if is_max else 'mean'} pooling, scale {s}): the top-left "
            f"{b[0]}×{b[1]} block of d{{1}} (toolbox layout) goes back to layer {l} as {rule}, before layer {l}'s "
            f"activation derivative multiplies it.</p>"
            '<div class="row">' + table(block[:, :, 0], "t-pool-d", f"d{{1}} of layer {l + 1}, block")
            + table(back[:, :, 0], "t-pool-back", rule) + "</div>")
    return body, values


CONVENTIONS = """<p><b>convn versus lax.conv.</b> MATLAB's <code>convn(a, k, 'valid')</code> is a true
convolution: it slides the kernel <em>flipped</em> (rot180) over <code>a</code>. <code>jax.lax.conv_general_dilated</code>,
like every deep-learning conv, is a cross-correlation: it slides the kernel as stored. The toolbox also keeps
every image transposed (<code>reshape(train_x', 28, 28, N)</code>). A true convolution of transposed maps with
<code>k</code> is a cross-correlation of the natural maps with <code>rot180(k)ᵀ</code>, so jaxcnn stores
<b>k[:, :, i, j] = rot180(k{i}{j})ᵀ</b> (<code>toolbox.kernel_to_toolbox</code> / <code>kernel_from_toolbox</code>)
and both compute the same numbers; the tables above show the toolbox kernel, its rot180 and jaxcnn's stored kernel.
The tables are in the toolbox's layout (transposed maps), the one <code>convn</code> works on.</p>"""


def arithmetic_section(an: Analysis) -> tuple[str, dict]:
    """Section 4's body and the values its tables show (for the tests)."""
    parts, values = [], {}
    for name, fn, title in (("kernel", kernel_tables, "A kernel and its rot180"),
                            ("window", full_window, "One 'full' convolution window: one delta value"),
                            ("dk", dk_entry, "flipall and one entry of dk"),
                            ("pool", pool_block, "Through pooling: a pooled δ block and its expansion")):
        out = fn(an)
        if out is None:
            continue
        body, values[name] = out
        parts.append(f"<h3>{title}</h3>{body}")
    parts.append(CONVENTIONS)
    return "\n".join(parts), values


# ---- section 5: the proof table ---------------------------------------------------------------------------

def proof_rows(net, image, label: int, n_sampled: int = N_SAMPLED, seed: int = 0):
    """Delta rule vs jax.grad (every weight) and central differences vs the delta rule (n_sampled weights per
    group, ε = NUMGRAD_EPS) for this net on this image: `checks.Row`s."""
    from .verification import backprop as bp
    from .verification import checks

    net = as_float64(net)
    images, targets = np.asarray(image, np.float64)[None], np.eye(net.n_classes)[[label]]
    _, auto = loss_and_grad(net, images, targets)
    manual, _ = checks.manual_grads(net, images, targets)
    tb = toolbox.to_toolbox(net, with_options=True)
    groups = [(f"layer {l + 1} {name}", lambda g, i=i, name=name: g.params["conv"][i][name])
              for i, l in enumerate(conv_layers(tb)) for name in ("k", "b")]
    groups += [("ffW", lambda g: g.params["ffW"]), ("ffb", lambda g: g.params["ffb"])]
    rows = [checks.compare(f"{name}: delta rule vs jax.grad", get(manual), get(auto), checks.GRAD_RTOL)
            for name, get in groups]
    x, y = checks.toolbox_input(images), targets.T
    analytic = bp.cnnbp(bp.cnnff(tb, x), y)
    rng = np.random.default_rng(seed)
    for name, weights in _weight_groups(analytic):
        chosen = rng.choice(len(weights), size=min(n_sampled, len(weights)), replace=False)
        numeric, want = [], []
        for c in sorted(chosen):
            where, grad = weights[c]
            numeric.append(_central_difference(tb, x, y, where))
            want.append(grad)
        rows.append(checks.compare(f"{name}: central differences vs delta rule ({len(chosen)} sampled)",
                                   np.array(numeric), np.array(want), checks.NUMGRAD_ATOL, "abs"))
    return rows


def _weight_groups(analytic):
    """`checks._weights` grouped by parameter (ffb, ffW, then each 'c' layer's b and k), in order."""
    from .verification import checks

    groups: dict[str, list] = {}
    for where, grad in checks._weights(analytic):
        probe = where(_Probe())[0]
        groups.setdefault(probe, []).append((where, grad))
    return list(groups.items())


class _Probe(dict):
    """Stands in for a toolbox dict so that a `checks._weights` locator names the array it reaches."""

    def __getitem__(self, key):
        if key in ("ffW", "ffb"):
            return _Named(key)
        return _Layers()


class _Layers:
    def __getitem__(self, l):
        return _Layer(l)


class _Layer:
    def __init__(self, l):
        self.l = l

    def __getitem__(self, key):
        return _Named(f"layer {self.l + 1} {'k' if key == 'k' else 'b'}")


class _Named(str):
    def __getitem__(self, index):
        return self


def _central_difference(tb, x, y, where) -> float:
    """(L(w + ε) − L(w − ε)) / 2ε for the weight `where` locates, with cnnff/cnnbp (`cnnnumgradcheck.m`)."""
    from .verification import backprop as bp
    from .verification import checks

    losses = []
    for delta in (checks.NUMGRAD_EPS, -checks.NUMGRAD_EPS):
        net = checks._deep_copy(tb)
        array, index = where(net)
        array[index] += delta
        losses.append(bp.cnnbp(bp.cnnff(net, x), y)["L"])
    return (losses[0] - losses[1]) / (2 * checks.NUMGRAD_EPS)


def proof_section(rows) -> str:
    body = [[html.escape(r.check), f'<span data-v="{r.max_abs!r}">{r.max_abs:.3e}</span>',
             f'<span data-v="{r.max_rel!r}">{r.max_rel:.3e}</span>', f"{r.tol:g} ({r.kind})",
             '<span class="pass">pass</span>' if r.passed else '<span class="fail">FAIL</span>'] for r in rows]
    return ("<p>Gradients of L for this image and its label, float64. jax.grad differentiates jaxcnn's "
            "lax.conv model; the delta rule is cnnbp in numpy on the toolbox layout; central differences perturb one "
            "weight by ±1e-4 (cnnnumgradcheck.m) and run cnnff twice.</p>"
            + rows_table(["check", "max abs error", "max rel error", "tolerance", "result"], body, "t-proof"))


# ---- section 6: training ----------------------------------------------------------------------------------

def training_section(run_dir: Path, metrics: list, steps: int | None) -> str:
    parts = []
    rl = read_rl(run_dir)
    if rl is not None and rl.size:
        marks = range(steps, len(rl), steps) if steps else ()
        parts.append(line_figure({"rL": (np.arange(len(rl)), rl)}, "SGD step", "rL", "smoothed loss rL per step",
                                 marks=marks))
    else:
        parts.append('<p class="missing">This run has no checkpoint holding rL per step.</p>')
    if metrics:
        epochs = [m["epoch"] for m in metrics]
        parts.append(line_figure({"test error": (epochs, [m["test_error"] for m in metrics])}, "epoch", "test error",
                                 "test error per epoch"))
    parts.append(kernels_part(run_dir))
    rms = [m.get("delta_rms") for m in metrics]
    if metrics and all(rms):
        series = {name: ([m["epoch"] for m in metrics], [r[name] for r in rms]) for name in rms[0]}
        parts.append(line_figure(series, "epoch", "RMS of δ", "RMS of each layer's δ on a fixed batch of training "
                                 "images, per epoch", logy=True))
    else:
        parts.append('<p class="missing">This run was written before jaxcnn recorded the RMS of δ per layer per '
                     'epoch (metrics.jsonl has no delta_rms): retrain to see it.</p>')
    return "\n".join(parts)


def read_rl(run_dir: Path):
    """rL per step, from the newest checkpoint (the run keeps its whole rL history there)."""
    from . import checkpoint

    for path in reversed(checkpoint.list_checkpoints(run_dir)):
        try:
            arrays, _ = checkpoint.read(path)
            return np.asarray(arrays["rl"])
        except checkpoint.CheckpointError:
            continue
    return None


def kernels_part(run_dir: Path, most: int = 8) -> str:
    """The first two 'c' layers' kernels at each epoch's end (at most `most` epochs, evenly spread) as small
    multiples, on one diverging scale per layer; or a note when the run did not record them."""
    path = run_dir / "kernels.npz"
    if not path.exists():
        return ('<p class="missing">This run was written before jaxcnn recorded its kernels at each epoch\'s end '
                '(no kernels.npz): retrain to see them.</p>')
    arrays, epochs = records.read_kernels(path)
    shown = sorted(set(np.linspace(0, len(epochs) - 1, min(most, len(epochs))).round().astype(int).tolist()))
    parts = []
    for name in sorted(arrays):
        k = arrays[name]                                       # (epochs, kh, kw, C_in, C_out), jaxcnn layout
        lim = symmetric_limit([k[shown]])
        figures = [f"<figure>{_kernel_grid(k[e], lim, f'{name} after epoch {epochs[e]}')}"
                   f"<figcaption>after epoch {epochs[e]}</figcaption></figure>" for e in shown]
        parts.append(f"<h4>{name}: every kernel k[:, :, i, j] (jaxcnn layout, natural orientation), row i = input map, "
                     f"column j = output map, at each epoch's end; one scale (±{lim:.3g}) for all epochs</h4>"
                     f'<div class="row">{"".join(figures)}</div>')
    return "\n".join(parts)


def _kernel_grid(k, lim: float, label: str) -> str:
    """One epoch's kernels (kh, kw, C_in, C_out) as a C_in × C_out mosaic on the scale ±lim."""
    kernels = [k[:, :, i, j] for i in range(k.shape[2]) for j in range(k.shape[3])]
    return maps_figure(kernels, [""] * len(kernels),
                       DIVERGING, True, label, cols=k.shape[3], limit=lim)


# ---- section 7: results -------------------------------------------------------------------------------------

def results_section(net, dataset, names) -> str:
    x = data_mod.to_float(_with_channels(dataset.test_images), np.dtype(net.dtype))
    result = evaluate(net, x, dataset.test_labels)
    counts = result.confusion.sum(axis=1)
    per_class = [[html.escape(names[c]), str(int(counts[c])), str(int(counts[c] - result.confusion[c, c])),
                  f"{(counts[c] - result.confusion[c, c]) / counts[c]:.3f}" if counts[c] else "–"]
                 for c in range(len(names))]
    parts = [f"<p>Test error {result.error_rate:.4f} ({result.n_misclassified} of {len(dataset.test_labels)}).</p>",
             '<div class="row">' + confusion_figure(result.confusion, names)
             + rows_table(["class", "test images", "misclassified", "error"], per_class, "t-per-class") + "</div>"]
    bad = result.bad[:GALLERY]
    if bad.size:
        outputs = np.asarray(predict(net, x[bad]))
        cells = []
        for i, o in zip(bad, outputs):
            top = np.argsort(-o)[:3]
            lines = "<br>".join(f"{html.escape(names[c])} {o[c]:.2f}" for c in top)
            cells.append(f'<figure>{img(small_image(dataset.test_images[i]), f"test image {i}")}<figcaption>#{i} '
                         f"true <b>{html.escape(names[dataset.test_labels[i]])}</b><br>{lines}</figcaption></figure>")
        parts.append(f"<h3>The first {bad.size} misclassified test images, with their top-3 outputs</h3>"
                     f'<div class="gallery">{"".join(cells)}</div>')
    return "\n".join(parts)


def _with_channels(images):
    return images if images.ndim == 4 else images[..., None]


# ---- section 8: footer ---------------------------------------------------------------------------------------

def data_files(cfg, dataset) -> list[Path]:
    """The files the run's data came from: the four IDX files of its folder, or its .mat file."""
    source = Path(dataset.source)
    if source.is_file():
        return [source]
    if source.is_dir():
        return [data_mod._find_idx(source, stem) for stem in data_mod.IDX_FILES]
    return []


def footer(run_dir: Path, cfg, dataset, config_text: str) -> str:
    hashes = "".join(f"<li><code>{html.escape(str(p))}</code>: <code>{data_mod.sha256_of(p)}</code></li>"
                     for p in data_files(cfg, dataset))
    command = f"jaxcnn train {run_dir / 'config.toml'} --out {run_dir} --overwrite"
    return (f"<p>seed {cfg.train.seed}; dataset {html.escape(dataset.name)} from "
            f"<code>{html.escape(dataset.source)}</code>; jax {jax.__version__}, jaxlib {jaxlib.__version__}, "
            f"Python {platform.python_version()}.</p><p>SHA-256 of the data files:</p><ul>{hashes}</ul>"
            f"<p>Reproduce the run: <code id=\"command\">{html.escape(command)}</code></p>"
            f"<details><summary>resolved config (config.toml)</summary><pre>{html.escape(config_text)}</pre></details>")


# ---- the page -------------------------------------------------------------------------------------------------

PAGE = Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="$csp">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>jaxcnn report: $title</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 1em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #bbb; margin-top: 1.6em; } h3 { font-size: 1em; margin: 1em 0 .3em; }
h4 { font-size: .9em; font-weight: normal; margin: .6em 0 .2em; }
img { max-width: 100%; height: auto; }
.row { display: flex; flex-wrap: wrap; gap: 1.2em; align-items: flex-start; }
table { border-collapse: collapse; margin: .4em 0; font-size: 12px; }
caption { font-size: 12px; text-align: left; padding-bottom: .2em; }
table.num td { border: 1px solid #ddd; padding: 1px 4px; text-align: right; font-variant-numeric: tabular-nums; }
table.num td.hl { background: #fee08b; }
table.rows th, table.rows td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; }
.pass { color: #1a7f37; font-weight: bold; } .fail { color: #b2182b; font-weight: bold; }
.missing { background: #fff4e5; border-left: 4px solid #e08214; padding: .4em .8em; }
.eq { font-family: ui-monospace, monospace; }
.gallery { display: flex; flex-wrap: wrap; gap: .6em; }
.gallery figure { margin: 0; width: 110px; font-size: 11px; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; }
details { margin: .4em 0; } summary { cursor: pointer; font-weight: bold; }
@media print { body { max-width: none; } details { display: block; } h2 { break-after: avoid; } img { break-inside: avoid; } }
</style></head>
<body>
<h1>jaxcnn report: $title</h1>
<p>$chain. Test image #$index (true class <b>$true</b>, predicted <b>$predicted</b>) followed through the trained net
with the lecture's delta rule (cnnff/cnnbp in numpy, float64). Written $when.</p>
<section id="architecture"><h2>1. Architecture</h2>$architecture</section>
<section id="forward"><h2>2. Forward pass</h2><details open><summary>every map of every layer</summary>$forward</details></section>
<section id="backward"><h2>3. Backward pass</h2><details open><summary>e, od, every δ and dk</summary>$backward</details></section>
<section id="arithmetic"><h2>4. The lecture's operations on this net's numbers</h2>$arithmetic</section>
<section id="proof"><h2>5. Proof: delta rule vs jax.grad vs central differences</h2>$proof</section>
<section id="training"><h2>6. Training</h2>$training</section>
<section id="results"><h2>7. Results</h2>$results</section>
<footer id="footer"><h2>8. Reproduce</h2>$footer</footer>
</body></html>
""")


@dataclasses.dataclass
class Report:
    html: str
    analysis: Analysis
    arithmetic: dict
    proof: list


def load_run(run_dir: Path):
    """(cfg, config text, net, metrics, summary) of a finished run folder."""
    for name in ("config.toml", "net.npz"):
        if not (run_dir / name).exists():
            raise ReportError(f"{run_dir} is not a finished run: no {name}")
    cfg = config_mod.load(run_dir / "config.toml")
    config_text = (run_dir / "config.toml").read_text(encoding="utf-8")
    metrics_path = run_dir / "metrics.jsonl"
    metrics = records.read_metrics(metrics_path) if metrics_path.exists() else []
    summary_path = run_dir / "summary.json"
    summary = records.read_summary(summary_path) if summary_path.exists() else {}
    if (run_dir / "kernels.npz").exists():              # read now too: a damaged record stops the page before any work
        records.read_kernels(run_dir / "kernels.npz")
    return cfg, config_text, netfile.load(run_dir / "net.npz"), metrics, summary


def build(run_dir, image_index: int = 0) -> Report:
    """The report of the run in `run_dir` on test image `image_index`, as a page and the values it shows."""
    from .run import load_data

    run_dir = Path(run_dir)
    cfg, config_text, net, metrics, summary = load_run(run_dir)
    dataset = load_data(cfg)
    n_test = len(dataset.test_labels)
    if not 0 <= image_index < n_test:
        raise ReportError(f"--image {image_index}: the run's test set has images 0..{n_test - 1}")
    names = data_mod.CLASS_NAMES.get(dataset.name, [str(c) for c in range(dataset.n_classes)])
    image = data_mod.to_float(_with_channels(dataset.test_images[image_index:image_index + 1]), np.float64)[0]
    label = int(dataset.test_labels[image_index])
    an = analyse(as_float64(net), image, label)
    arithmetic, values = arithmetic_section(an)
    proof = proof_rows(net, image, label)
    predicted = int(np.argmax(an.result["o"]))
    page = PAGE.substitute(
        csp=CSP, title=html.escape(f"{describe(net.layers)} on {dataset.name} ({run_dir.name})"),
        chain=size_chain(net), index=image_index, true=html.escape(names[label]),
        predicted=html.escape(names[predicted]), when=time.strftime("%Y-%m-%d %H:%M"),
        architecture=rows_table(["layer", "type", "maps@size", "parameters"], architecture_rows(net), "t-architecture"),
        forward=forward_section(an, names), backward=backward_section(an, names), arithmetic=arithmetic,
        proof=proof_section(proof), training=training_section(run_dir, metrics, summary.get("steps_per_epoch")),
        results=results_section(net, dataset, names), footer=footer(run_dir, cfg, dataset, config_text))
    return Report(page, an, values, proof)


def write(run_dir, image_index: int = 0, out=None) -> tuple[Path, Report]:
    """Build the report and write it (default RUN_DIR/report.html) atomically."""
    out = Path(out) if out else Path(run_dir) / "report.html"
    report = build(run_dir, image_index)
    fileio.atomic_write_text(out, report.html)
    return out, report
