"""The run page's sections, rendered from a loaded `Run` and what `analysis` computed: architecture, forward
and backward maps, the lecture's operations, the proof table, training, results and how to reproduce."""
from __future__ import annotations

import platform
import time

import jax
import jaxlib
import numpy as np

from .. import data as data_mod
from ..layers import Conv, Input, describe, layer_shapes
from ..net import count_params
from . import figures
from .analysis import Analysis, TestResults, natural
from .page import Html, collapsible, document, escape, figure, join, note, row, section
from .run_folder import Run, data_files, read_kernels, read_rl
from .tables import rows_table

GALLERY = 24                  # misclassified images shown


# ---- section 1: architecture ---------------------------------------------------------------------------

def architecture_rows(net) -> list[list]:
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
    rows.append(["", Html("<b>total</b>"), "", Html(f"<b>{count_params(net):,}</b>")])
    return rows


def size_chain(net) -> str:
    """'28×28 → 6@24×24 → …' for the page's first line."""
    shapes = layer_shapes(net.layers, net.input_shape)
    parts = [f"{c}@{h}×{w}" if c > 1 or i else f"{h}×{w}" for i, (h, w, c) in enumerate(shapes)]
    h, w, c = shapes[-1]
    return " → ".join(parts + [str(h * w * c), str(net.n_classes)])


# ---- sections 2 and 3: forward and backward maps ----------------------------------------------------------

def forward_section(an: Analysis, names) -> Html:
    r, parts = an.result, []
    for c in range(an.image.shape[-1]):
        parts.append(figure(figures.maps_png([an.image[..., c]], [f"x{c + 1}"], "gray_r", False),
                            f"input channel {c + 1}"))
    for l in range(1, len(r["a"])):
        layer = an.tb["layers"][l]
        maps = [natural(m) for m in r["a"][l]]
        kind = "conv" if layer["type"] == "c" else "pool"
        lo, hi = min(float(m.min()) for m in maps), max(float(m.max()) for m in maps)
        parts.append(Html(f"<h3>layer {l + 1} ({kind}): a{{j}}, {len(maps)} maps {maps[0].shape[0]}×{maps[0].shape[1]}, "
                          f"min {lo:.3g}, max {hi:.3g}</h3>")
                     + figure(figures.maps_png(maps, [f"a{{{j + 1}}}" for j in range(len(maps))], figures.SEQUENTIAL,
                                               False), f"layer {l + 1} maps"))
    fv = np.ravel(r["fv"])
    parts.append(Html(f"<h3>feature vector fv ({fv.size} values)</h3>")
                 + figure(figures.maps_png([np.repeat(fv[None, :], max(1, fv.size // 40), axis=0)], ["fv"],
                                           figures.SEQUENTIAL, False, cols=1), "feature vector"))
    parts.append(Html(f"<h3>outputs o: true class <b>{escape(names[an.label])}</b> (outlined), predicted "
                      f"<b>{escape(names[an.predicted])}</b> (hatched)</h3>")
                 + figure(figures.bars_png(r["o"], names, an.label, an.predicted, "outputs o"), "outputs o"))
    return join(parts)


def od_rule(output: str) -> str:
    return "od = e (softmax with cross-entropy)" if output == "softmax" else "od = e .* o(1 − o)"


def backward_section(an: Analysis, names) -> Html:
    r, parts = an.result, []
    rule = od_rule(an.net.output)
    parts.append(Html(f"<p>L = {float(r['L']):.6g}; e = o − y; output delta {rule}. Colour maps: {figures.DIVERGING}, "
                      f"one scale per layer, centred on 0 (red positive, blue negative).</p>"))
    parts.append(row([figure(figures.bars_png(r["e"], names, an.label, an.predicted, "e = o − y", True), "e = o − y"),
                      figure(figures.bars_png(r["od"], names, an.label, an.predicted, rule, True), rule)]))
    for l in range(len(an.tb["layers"]) - 1, 0, -1):
        layer = r["layers"][l]
        ds = [natural(d) for d in layer["d"]]
        parts.append(Html(f"<h3>layer {l + 1} ({'conv' if layer['type'] == 'c' else 'pool'}): δ{{j}} — "
                          f"{escape(delta_rule(an, l))}</h3>")
                     + figure(figures.maps_png(ds, [f"d{{{j + 1}}}" for j in range(len(ds))]), f"layer {l + 1} deltas"))
        if layer["type"] == "c":
            dk = [natural(k[:, :, None]) for k_row in layer["dk"] for k in k_row]
            titles = [f"dk{{{i + 1}}}{{{j + 1}}}" for i in range(len(layer["dk"])) for j in range(len(layer["dk"][0]))]
            parts.append(Html(f"<h4>layer {l + 1}: dk{{i}}{{j}} = convn(flipall(a{{i}}), d{{j}}, 'valid') / N "
                              f"(toolbox kernels' gradients, transposed for display; row i = input map)</h4>")
                         + figure(figures.maps_png(dk, titles, cols=len(layer["dk"][0])),
                                  f"layer {l + 1} kernel gradients"))
    return join(parts)


def delta_rule(an: Analysis, l: int) -> str:
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


# ---- section 5: the proof table ---------------------------------------------------------------------------

def proof_section(rows) -> Html:
    body = [[r.check, Html(f'<span data-v="{r.max_abs!r}">{r.max_abs:.3e}</span>'),
             Html(f'<span data-v="{r.max_rel!r}">{r.max_rel:.3e}</span>'), f"{r.tol:g} ({r.kind})",
             Html('<span class="pass">pass</span>' if r.passed else '<span class="fail">FAIL</span>')] for r in rows]
    return Html("<p>Gradients of L for this image and its label, float64. jax.grad differentiates jaxcnn's "
                "lax.conv model; the delta rule is cnnbp in numpy on the toolbox layout; central differences perturb one "
                "weight by ±1e-4 (cnnnumgradcheck.m) and run cnnff twice.</p>"
                + rows_table(["check", "max abs error", "max rel error", "tolerance", "result"], body, "t-proof"))


# ---- section 6: training ----------------------------------------------------------------------------------

def training_section(run: Run) -> Html:
    parts = []
    rl, steps = read_rl(run.path), run.summary.get("steps_per_epoch")
    if rl is not None and rl.size:
        marks = range(steps, len(rl), steps) if steps else ()
        parts.append(figure(figures.line_png({"rL": (np.arange(len(rl)), rl)}, "SGD step", "rL",
                                             "smoothed loss rL per step", marks=marks), "smoothed loss rL per step"))
    else:
        parts.append(note("This run has no checkpoint holding rL per step."))
    metrics = run.metrics
    if metrics:
        epochs = [m["epoch"] for m in metrics]
        parts.append(figure(figures.line_png({"test error": (epochs, [m["test_error"] for m in metrics])}, "epoch",
                                             "test error", "test error per epoch"), "test error per epoch"))
    parts.append(kernels_part(run))
    rms = [m.get("delta_rms") for m in metrics]
    if metrics and all(rms):
        series = {name: ([m["epoch"] for m in metrics], [r[name] for r in rms]) for name in rms[0]}
        title = "RMS of each layer's δ on a fixed batch of training images, per epoch"
        parts.append(figure(figures.line_png(series, "epoch", "RMS of δ", title, logy=True), title))
    else:
        parts.append(note("This run was written before jaxcnn recorded the RMS of δ per layer per epoch "
                          "(metrics.jsonl has no delta_rms): retrain to see it."))
    return join(parts)


def kernels_part(run: Run, most: int = 8) -> Html:
    """The first two 'c' layers' kernels at each epoch's end (at most `most` epochs, evenly spread) as small
    multiples, on one diverging scale per layer; or a note when the run did not record them."""
    recorded = read_kernels(run.path)
    if recorded is None:
        return note("This run was written before jaxcnn recorded its kernels at each epoch's end "
                    "(no kernels.npz): retrain to see them.")
    arrays, epochs = recorded
    shown = sorted(set(np.linspace(0, len(epochs) - 1, min(most, len(epochs))).round().astype(int).tolist()))
    parts = []
    for name in sorted(arrays):
        k = arrays[name]                                       # (epochs, kh, kw, C_in, C_out), jaxcnn layout
        lim = figures.symmetric_limit([k[shown]])
        grids = [figure(kernel_grid_png(k[e], lim), f"after epoch {epochs[e]}") for e in shown]
        parts.append(Html(f"<h4>{escape(name)}: every kernel k[:, :, i, j] (jaxcnn layout, natural orientation), "
                          f"row i = input map, column j = output map, at each epoch's end; one scale (±{lim:.3g}) "
                          f"for all epochs</h4>") + row(grids))
    return join(parts)


def kernel_grid_png(k, lim: float) -> str:
    """One epoch's kernels (kh, kw, C_in, C_out) as a C_in × C_out mosaic on the scale ±lim."""
    kernels = [k[:, :, i, j] for i in range(k.shape[2]) for j in range(k.shape[3])]
    return figures.maps_png(kernels, [""] * len(kernels), cols=k.shape[3], limit=lim)


# ---- section 7: results -------------------------------------------------------------------------------------

def results_section(run: Run, results: TestResults) -> Html:
    names, dataset, result = run.names, run.dataset, results.result
    counts = result.confusion.sum(axis=1)
    per_class = [[names[c], str(int(counts[c])), str(int(counts[c] - result.confusion[c, c])),
                  f"{(counts[c] - result.confusion[c, c]) / counts[c]:.3f}" if counts[c] else "–"]
                 for c in range(len(names))]
    parts = [Html(f"<p>Test error {result.error_rate:.4f} ({result.n_misclassified} of "
                  f"{len(dataset.test_labels)}).</p>"),
             row([figure(figures.confusion_png(result.confusion, names), "confusion matrix"),
                  rows_table(["class", "test images", "misclassified", "error"], per_class, "t-per-class")])]
    bad = result.bad[:len(results.bad_outputs)]
    if bad.size:
        cells = []
        for i, o in zip(bad, results.bad_outputs):
            top = np.argsort(-o)[:3]
            lines = "<br>".join(f"{escape(names[c])} {o[c]:.2f}" for c in top)
            caption = Html(f"#{i} true <b>{escape(names[dataset.test_labels[i]])}</b><br>{lines}")
            cells.append(figure(figures.image_png(dataset.test_images[i]), caption))
        parts.append(Html(f"<h3>The first {bad.size} misclassified test images, with their top-3 outputs</h3>"
                          f'<div class="gallery">{join(cells, "")}</div>'))
    return join(parts)


# ---- section 8: reproduce ---------------------------------------------------------------------------------------

def footer(run: Run) -> Html:
    cfg, dataset = run.cfg, run.dataset
    hashes = "".join(f"<li><code>{escape(p)}</code>: <code>{data_mod.sha256_of(p)}</code></li>"
                     for p in data_files(run.dataset))
    command = f"jaxcnn train {run.path / 'config.toml'} --out {run.path} --overwrite"
    return Html(f"<p>seed {escape(cfg.train.seed)}; dataset {escape(dataset.name)} from "
                f"<code>{escape(dataset.source)}</code>; jax {jax.__version__}, jaxlib {jaxlib.__version__}, "
                f"Python {platform.python_version()}.</p><p>SHA-256 of the data files:</p><ul>{hashes}</ul>"
                f"<p>Reproduce the run: <code id=\"command\">{escape(command)}</code></p>"
                + collapsible("resolved config (config.toml)", Html(f"<pre>{escape(run.config_text)}</pre>"), False))


# ---- the page -------------------------------------------------------------------------------------------------

def render(run: Run, image_index: int, an: Analysis, arithmetic: Html, proof, results: TestResults) -> str:
    """The whole run page for test image `image_index`, from what was computed once."""
    names, net = run.names, run.net
    intro = Html(f"<p>{escape(size_chain(net))}. Test image #{image_index} (true class <b>{escape(names[an.label])}</b>, "
                 f"predicted <b>{escape(names[an.predicted])}</b>) followed through the trained net with the lecture's "
                 f"delta rule (cnnff/cnnbp in numpy, float64). Written {time.strftime('%Y-%m-%d %H:%M')}.</p>")
    body = [intro,
            section("architecture", "1. Architecture",
                    rows_table(["layer", "type", "maps@size", "parameters"], architecture_rows(net), "t-architecture")),
            section("forward", "2. Forward pass", collapsible("every map of every layer", forward_section(an, names))),
            section("backward", "3. Backward pass", collapsible("e, od, every δ and dk", backward_section(an, names))),
            section("arithmetic", "4. The lecture's operations on this net's numbers", arithmetic),
            section("proof", "5. Proof: delta rule vs jax.grad vs central differences", proof_section(proof)),
            section("training", "6. Training", training_section(run)),
            section("results", "7. Results", results_section(run, results)),
            section("footer", "8. Reproduce", footer(run), tag="footer")]
    return document(f"jaxcnn report: {describe(net.layers)} on {run.dataset.name} ({run.path.name})", join(body))
