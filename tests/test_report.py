"""`jaxcnn report`: the page's arithmetic against hand-computed truths, and the page as a reader sees it (Chromium
driven by Playwright, every outside request aborted) for the default Fashion-MNIST net and a non-square,
three-channel toy net with every layer option."""
import dataclasses
import functools
import json
import shutil
import time
from pathlib import Path

import jax
import matplotlib
import numpy as np
import pytest

from jaxcnn import config as config_mod, fileio, init_net, records, report, run
from jaxcnn.report import analysis, arithmetic, figures, run_page
from jaxcnn.cli import build_parser, main
from jaxcnn.model import loss_and_grad
from jaxcnn.layers import Conv, Input, Pool
from jaxcnn.verification import backprop as bp
from jaxcnn.verification import checks
from tests.test_data import write_idx

REPO = Path(__file__).resolve().parent.parent
SECTIONS = ("architecture", "forward", "backward", "arithmetic", "proof", "training", "results", "footer")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TOY_LAYERS = (Input(), Conv(3, 3, "relu"), Pool(2, "max"), Conv(4, 3, "tanh"), Pool(2))


# ---- quick: the arithmetic the page shows --------------------------------------------------------------

@functools.cache
def _net(layers):
    return init_net(jax.random.key(0), layers, (14, 10, 3), 10, output="softmax")


def _analyse(layers, kernel=None):
    """The delta rule on one 14×10×3 image with label 4 through a softmax net of `layers` (a few seconds each the
    first time: `init_net` compiles); `kernel`: what to put in the last 'c' layer's jaxcnn k[:, :, 0, 0]."""
    net = _net(layers)
    if kernel is not None:
        conv = [dict(p) for p in net.params["conv"]]
        conv[-1]["k"] = conv[-1]["k"].at[:, :, 0, 0].set(kernel)
        net = dataclasses.replace(net, params={**net.params, "conv": conv})
    return analysis.analyse(net, np.random.default_rng(0).random((14, 10, 3)), 4)


@pytest.fixture(scope="module")
def toy_analysis():
    """The delta rule on one 14×10×3 image through a net with ReLU, max pooling, tanh, mean pooling and softmax."""
    return _analyse(TOY_LAYERS)


@pytest.fixture(scope="module")
def toy_proof(toy_analysis):
    return analysis.proof_rows(toy_analysis)


def test_kernel_tables_by_hand():
    """jaxcnn's stored kernel 0..8 row by row is the toolbox kernel rot180(k)ᵀ, written out."""
    _, values = arithmetic.kernel_tables(_analyse(TOY_LAYERS, kernel=np.arange(9.0).reshape(3, 3)))
    np.testing.assert_array_equal(values["jaxcnn"], [[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    np.testing.assert_array_equal(values["kernel"], [[8, 5, 2], [7, 4, 1], [6, 3, 0]])
    np.testing.assert_array_equal(values["rot180"], [[0, 3, 6], [1, 4, 7], [2, 5, 8]])


def test_full_window_is_the_padded_delta_times_k_and_sums_to_cnnbps_delta(toy_analysis):
    an = toy_analysis
    _, v = arithmetic.full_window(an)
    l, p, q = v["layer"], v["p"], v["q"]
    d_next, k = an.result["layers"][l]["d"], an.tb["layers"][l]["k"]
    K = k[0][0].shape[0]

    def window_products(j):                  # dpad(p + m, q + n)·k{1}{j}(m, n), dpad = d{j} padded by K − 1
        d = d_next[j][:, :, 0]
        return np.array([[d[p + m - K + 1, q + n - K + 1] * k[0][j][m, n]
                          if 0 <= p + m - K + 1 < d.shape[0] and 0 <= q + n - K + 1 < d.shape[1] else 0.0
                          for n in range(K)] for m in range(K)])

    assert np.count_nonzero(v["window"]) >= 4 and np.count_nonzero(k[0][0]) == K * K        # a window worth checking
    np.testing.assert_allclose(v["products"], window_products(0), rtol=1e-15, atol=0)
    assert v["sum"] == pytest.approx(v["full"], rel=1e-12, abs=1e-15)
    # layer l − 1 is a pooling layer: its δ{1} is the sum of these windows over every j, with no derivative
    assert an.tb["layers"][l - 1]["type"] == "s"
    delta = an.result["layers"][l - 1]["d"][0][p, q, 0]
    assert sum(window_products(j).sum() for j in range(len(d_next))) == pytest.approx(delta, rel=1e-12)


def test_single_conv_net_gets_no_input_delta():
    an = _analyse(SINGLE_CONV)
    body, values = arithmetic.arithmetic_section(an)
    assert "window" not in values and "Layer 1's δ" not in body and "the input, which has no δ" in body
    assert set(values) == {"kernel", "dk", "pool"}


def test_dk_entry_is_the_window_sum(toy_analysis):
    _, v = arithmetic.dk_entry(toy_analysis)
    assert v["sum"] == pytest.approx(v["dk"], rel=1e-12)
    a = toy_analysis.result["a"][2][0][:, :, 0]
    np.testing.assert_array_equal(v["flipall"], a[::-1, ::-1])


SINGLE_CONV = (Input(), Conv(2, 3, "relu"), Pool(2, "max"))


@pytest.mark.parametrize("pool", ["mean", "max"])
def test_pool_block_goes_back_as_cnnbp_sends_it(pool):
    """The block's expansion, times the 'c' layer's derivative (tanh: 1 − a², ReLU: [a > 0]), is cnnbp's δ of
    that layer; max pooling sends each pooled value to exactly one element of its window, the one the mask marks."""
    an = _analyse(TOY_LAYERS if pool == "mean" else SINGLE_CONV)
    _, v = arithmetic.pool_block(an)
    l = v["layer"]
    assert (l, v["s"], v["max"]) == ((4, 2, False) if pool == "mean" else (2, 2, True))
    a = an.result["a"][l - 1][0][:, :, 0]
    block = an.result["layers"][l - 1]["d"][0][:v["back"].shape[0], :v["back"].shape[1], 0]
    a = a[:block.shape[0], :block.shape[1]]
    assert np.count_nonzero(block) >= 2
    np.testing.assert_allclose((1 - a ** 2 if pool == "mean" else a > 0) * v["back"], block, rtol=1e-15, atol=0)
    windows = v["back"].reshape(v["block"].shape[0], 2, v["block"].shape[1], 2).transpose(0, 2, 1, 3)
    if pool == "max":
        mask = an.result["mask"][l][0][:block.shape[0], :block.shape[1], 0]
        np.testing.assert_array_equal(v["back"] != 0, mask.astype(bool))
        np.testing.assert_array_equal(windows.sum(axis=(2, 3)), v["block"])
        assert (np.count_nonzero(windows, axis=(2, 3)) == 1).all()
    else:
        np.testing.assert_array_equal(windows, np.broadcast_to(v["block"][:, :, None, None] / 4, windows.shape))


def test_proof_rows_pass_and_cover_every_parameter(toy_proof):
    rows = toy_proof
    for group in ("layer 2 k", "layer 2 b", "layer 4 k", "layer 4 b", "ffW", "ffb"):
        assert [r.check for r in rows].count(f"{group}: delta rule vs jax.grad") == 1, group
        moved = [r for r in rows if r.weight.startswith(group.replace(" k", " k{").replace(" b", " b{"))
                 or (group.startswith("ff") and r.weight.startswith(group + "("))]
        assert len(moved) == analysis.N_SAMPLED, group
    assert [r.verdict for r in rows] == ["pass"] * len(rows), [r for r in rows if r.verdict != "pass"]


def _jaxcnn_index(weight: str, net):
    """A proof row's toolbox-layout weight name -> (params path, index) in jaxcnn's layout, by the bridge's rule
    k[:, :, i, j] = rot180(k{i}{j})ᵀ worked out by hand: toolbox (u, v) of a K×K kernel is jaxcnn (K−1−v, K−1−u)."""
    import re
    if m := re.fullmatch(r"ffW\((\d+), (\d+)\)", weight):
        return ("ffW",), (int(m[1]) - 1, int(m[2]) - 1)
    if m := re.fullmatch(r"ffb\((\d+)\)", weight):
        return ("ffb",), (int(m[1]) - 1,)
    conv_of = {l: n for n, l in enumerate(l for l, layer in enumerate(net.layers, 1) if isinstance(layer, Conv))}
    if m := re.fullmatch(r"layer (\d+) b\{(\d+)\}", weight):
        return ("conv", conv_of[int(m[1])], "b"), (int(m[2]) - 1,)
    m = re.fullmatch(r"layer (\d+) k\{(\d+)\}\{(\d+)\}\((\d+), (\d+)\)", weight)
    K = net.layers[int(m[1]) - 1].kernelsize
    return ("conv", conv_of[int(m[1])], "k"), (K - int(m[5]), K - int(m[4]), int(m[2]) - 1, int(m[3]) - 1)


def test_proof_rows_central_differences_are_of_the_weight_they_name(toy_analysis, toy_proof):
    """Each sampled row's slope and gradient, again by jaxcnn's lax.conv model (not cnnff/cnnbp): a central
    difference of `model.loss` and jax.grad, at the jaxcnn index the row's toolbox name maps to."""
    from jaxcnn.model import loss

    an = toy_analysis
    x, y = an.image[None], np.eye(10)[[4]]
    _, grads = loss_and_grad(an.net, x, y)
    rows = [r for r in toy_proof if r.weight]
    assert len(rows) == 6 * analysis.N_SAMPLED

    def at(tree, path):
        for key in path:
            tree = tree[key]
        return tree

    def moved(path, index, delta):
        params = jax.tree.map(np.array, an.net.params)                  # fresh numpy copies
        at(params, path[:-1])[path[-1]][index] += delta
        return float(loss(dataclasses.replace(an.net, params=params), x, y))

    eps = checks.NUMGRAD_EPS
    for r in rows:
        path, index = _jaxcnn_index(r.weight, an.net)
        assert r.want == pytest.approx(float(at(grads.params, path)[index]), rel=1e-10, abs=1e-15), r.weight
        slope = (moved(path, index, eps) - moved(path, index, -eps)) / (2 * eps)
        assert r.got == pytest.approx(slope, rel=1e-6, abs=1e-10), r.weight


def test_signed_bars_are_coloured_as_the_maps_red_positive():
    """Each bar's colour is one the diverging maps give to a value of the same sign (their scale runs −1..1)."""
    positive, negative = figures.bar_colours([0.5, -0.5])
    scale = matplotlib.colormaps[figures.DIVERGING](np.linspace(0, 1, 257))[:, :3]

    def value_on_the_maps(colour):
        return np.linspace(-1, 1, 257)[np.argmin(np.abs(scale - matplotlib.colors.to_rgb(colour)).sum(axis=1))]

    assert value_on_the_maps(positive) > 0.5 and value_on_the_maps(negative) < -0.5
    assert matplotlib.colors.to_rgb(positive)[0] > matplotlib.colors.to_rgb(positive)[2]      # and it is red


def test_kernel_gradients_are_drawn_as_jaxcnn_stores_kernels(toy_analysis):
    """Section 3's dk maps are jax.grad's dL/dk[:, :, i, j], the layout section 6 draws the kernels in."""
    an = toy_analysis
    _, grads = loss_and_grad(an.net, an.image[None], np.eye(10)[[4]])
    for n, l in enumerate(analysis.conv_layers(an.tb)):
        maps, titles = run_page.kernel_gradient_maps(an.result["layers"][l]["dk"])
        g = np.asarray(grads.params["conv"][n]["k"])
        want = [g[:, :, i, j] for i in range(g.shape[2]) for j in range(g.shape[3])]
        np.testing.assert_allclose(maps, want, rtol=1e-10, atol=1e-14)
        assert titles[1] == "dk{1}{2}"


def test_reproduce_command_is_quoted_and_never_overwrites_the_run(tmp_path):
    import shlex
    folder = tmp_path / "my run's $HOME; rm -rf ~"
    words = shlex.split(run_page.reproduce_command(folder))
    assert words == ["jaxcnn", "train", str(folder / "config.toml"), "--out", str(tmp_path / (folder.name + "-again"))]
    assert "--overwrite" not in words


def test_sections_hold_markup_not_escaped_markup(toy_analysis):
    names = [str(c) for c in range(10)]
    html = run_page.forward_section(toy_analysis, names) + run_page.backward_section(toy_analysis, names) \
        + arithmetic.arithmetic_section(toy_analysis)[0]
    assert html.count("<figure>") == html.count("<figcaption>") == html.count("<img ") > 10
    assert html.count("<table") == 11                     # 3 kernel, 3 window, 3 dk, 2 pool
    assert "&lt;" not in html and "&amp;" not in html


def test_page_escapes_text_and_forbids_forms_and_base():
    from jaxcnn.report import page
    html = page.document("<b>run</b>", page.join(["<a href=x>", page.Html("<i>ok</i>")]))
    assert "<a href" not in html and "&lt;a href=x&gt;" in html and "<i>ok</i>" in html and "<b>run" not in html
    assert page.Html("<p>") + "<a>" + page.Html("</p>") == "<p>&lt;a&gt;</p>"         # markup kept, text escaped
    assert "<a>" + page.Html("<p>") == "&lt;a&gt;<p>" and isinstance("x" + page.Html("<p>"), page.Html)
    assert "form-action 'none'" in page.CSP and "base-uri 'none'" in page.CSP and page.CSP in html


def test_architecture_rows_count_parameters_by_hand():
    net = init_net(jax.random.key(0), TOY_LAYERS, (14, 10, 3), 10)
    rows = run_page.architecture_rows(net)
    assert [r[2] for r in rows[:5]] == ["3@14×10", "3@12×8", "3@6×4", "4@4×2", "4@2×1"]
    assert [r[3] for r in rows] == ["0", "84", "0", "112", "0", "0", "90", "<b>286</b>"]  # noqa   # 9·3·3+3, 9·3·4+4, 8·10+10
    assert run_page.size_chain(net) == "3@14×10 → 3@12×8 → 3@6×4 → 4@4×2 → 4@2×1 → 8 → 10"


def test_record_kernels_appends_and_a_redone_epoch_replaces(tmp_path):
    net = init_net(jax.random.key(0), TOY_LAYERS, (14, 10, 3), 10)
    run.record_kernels(tmp_path, net, 1)
    run.record_kernels(tmp_path, net, 2)
    bumped = dataclasses.replace(net, params={**net.params, "conv": [dict(p, k=p["k"] + 1) for p in net.params["conv"]]})
    run.record_kernels(tmp_path, bumped, 2)                  # a resumed run redoing epoch 2
    arrays, meta = fileio.load_npz(tmp_path / "kernels.npz")
    assert meta["epochs"] == [1, 2]
    assert arrays["conv1"].shape == (2, 3, 3, 3, 3) and arrays["conv2"].shape == (2, 3, 3, 3, 4)
    np.testing.assert_allclose(arrays["conv1"][1], np.asarray(net.params["conv"][0]["k"]) + 1)


def test_report_of_a_folder_that_is_no_run_names_the_file(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no config.toml" in capsys.readouterr().err


def test_cli_parses_report_and_train_report():
    args = build_parser().parse_args(["report", "runs/x", "--image", "3", "--out", "p.html"])
    assert (args.run_dir, args.image, args.out) == ("runs/x", 3, "p.html")
    assert build_parser().parse_args(["train", "c.toml", "--report"]).report


# ---- slow: real runs, real pages, a real browser ----------------------------------------------------------

def toy_folder(folder: Path) -> Path:
    """A synthetic IDX folder of 14×10 three-channel images (4-D IDX arrays), 60 training and 20 test."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for stem, n in (("train", 60), ("t10k", 20)):
        write_idx(folder / f"{stem}-images-idx3-ubyte", rng.integers(0, 256, (n, 14, 10, 3), dtype=np.uint8))
        write_idx(folder / f"{stem}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8))
    return folder


def toy_config(data_dir: Path, numepochs: int = 2):
    layers = [{"type": "i"}, {"type": "c", "outputmaps": 3, "kernelsize": 3, "activation": "tanh"},
              {"type": "s", "scale": 2, "pool": "max"}, {"type": "c", "outputmaps": 4, "kernelsize": 3,
                                                          "activation": "relu"}, {"type": "s", "scale": 2}]
    return config_mod.from_dict({"train": {"alpha": 0.1, "batchsize": 10, "numepochs": numepochs, "seed": 0},
                                 "model": {"layers": layers, "output": "softmax"},
                                 "data": {"dataset": "mnist", "dir": str(data_dir)}})


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium under Playwright (its own browser download is not used)."""
    from playwright import sync_api
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is missing: apt-get install chromium (scripts/setup does this as root)")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_page(browser, path: Path, screenshot: Path | None = None) -> dict:
    """Open `path` with every request that is not file: or data: aborted; what a reader's browser saw."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    outside, errors = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    def route(r):
        if r.request.url.startswith(("file:", "data:")):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else outside.append(r.url))
    page.goto(path.as_uri())
    seen = page.evaluate("""() => ({
        images: [...document.images].map(i => [i.alt, i.complete, i.naturalWidth]),
        sections: [...document.querySelectorAll('section[id], footer[id]')].map(s => s.id),
        tables: Object.fromEntries([...document.querySelectorAll('table.num')].map(t =>
            [t.id, [...t.rows].map(r => [...r.cells].map(c => Number(c.dataset.v)))])),
        proof: [...document.querySelectorAll('#t-proof tbody tr')].map(r =>
            [r.cells[0].textContent, ...[...r.querySelectorAll('[data-v]')].map(s => Number(s.dataset.v)),
             r.cells[5].textContent, r.cells[4].textContent]),
        uncaptioned: [...document.images].filter(i => !i.closest('figure')?.querySelector('figcaption')?.textContent.trim())
            .map(i => i.alt),
        csp: document.querySelector('meta[http-equiv="Content-Security-Policy"]').content,
        command: document.getElementById('command')?.textContent ?? null,   // the run page's; the check page has none
        spans: Object.fromEntries([...document.querySelectorAll('span[id][data-v]')].map(s => [s.id, Number(s.dataset.v)])),
        missing: [...document.querySelectorAll('.missing')].map(p => p.textContent),
        text: document.body.innerText,
    })""")
    if screenshot:
        page.screenshot(path=str(screenshot), full_page=False)
    page.close()
    return dict(seen, outside=outside, errors=errors)


def assert_page_shows(seen: dict, rep: report.Report) -> None:
    """What every page must show: nothing from outside, no errors, every image decoded, every section, and the
    tables' values those computed in Python (the kernel's rot180, the proof table's errors)."""
    assert seen["outside"] == [] and seen["errors"] == []
    assert seen["images"] and all(complete and width > 0 for _, complete, width in seen["images"]), seen["images"]
    assert seen["uncaptioned"] == []                       # every figure's caption is on the page, not only in alt
    assert not [tag for tag in ("<figure", "<img", "<h4", "<div", "<p>", "<table") if tag in seen["text"]]  # no markup as text
    assert seen["sections"] == list(SECTIONS)
    assert "form-action 'none'" in seen["csp"] and "base-uri 'none'" in seen["csp"]
    assert seen["command"] == run_page.reproduce_command(rep.run.path) and "--overwrite" not in seen["command"]
    t = seen["tables"]
    np.testing.assert_array_equal(t["t-rot180"], np.rot90(np.array(t["t-kernel"]), 2))
    np.testing.assert_array_equal(t["t-kernel"], rep.arithmetic["kernel"]["kernel"])
    np.testing.assert_array_equal(t["t-jaxcnn-kernel"], rep.arithmetic["kernel"]["jaxcnn"])
    np.testing.assert_array_equal(t["t-dk-products"], rep.arithmetic["dk"]["products"])
    np.testing.assert_array_equal(t["t-pool-back"], rep.arithmetic["pool"]["back"])
    if "window" in rep.arithmetic:
        np.testing.assert_array_equal(t["t-products"], rep.arithmetic["window"]["products"])
        assert seen["spans"]["v-window-sum"] == pytest.approx(seen["spans"]["v-window-full"], rel=1e-12, abs=1e-15)
    assert seen["spans"]["v-dk-sum"] == pytest.approx(seen["spans"]["v-dk"], rel=1e-12)
    assert [row[0] for row in seen["proof"]] == [r.check for r in rep.proof]
    for (_, max_abs, max_rel, verdict, note), row in zip(seen["proof"], rep.proof, strict=True):
        assert (max_abs, max_rel) == (row.max_abs, row.max_rel) or np.isnan(row.max_rel)
        assert (verdict, note) == (row.verdict, row.note)
    assert "FAIL" not in [row[3] for row in seen["proof"]]


@pytest.mark.slow
def test_fashion_mnist_run_report_in_chromium(tmp_path, browser, fashion_folder):
    cfg = config_mod.load(REPO / "configs" / "fashion_mnist.toml", ["data.n_train=2000", "data.n_test=500"])
    out = tmp_path / "run"
    run.train(cfg, out, progress=False, log=lambda *_: None)
    started = time.perf_counter()
    path, rep = report.write(out)
    seconds = time.perf_counter() - started
    assert path == out / "report.html" and path.stat().st_size < 15e6 and seconds < 60
    seen = open_page(browser, path, tmp_path / "report.png")
    assert_page_shows(seen, rep)
    assert seen["missing"] == []
    text = seen["text"]
    assert "28×28 → 6@24×24 → 6@12×12 → 12@8×8 → 12@4×4 → 192 → 10" in text
    assert "3,898" in text and "RdBu_r" in text
    # a sigmoid / mean-pooling net has no kink: every central difference is compared, and passes
    assert [verdict for *_, verdict, _ in seen["proof"]] == ["pass"] * len(rep.proof)
    assert {note for *_, note in seen["proof"][6:]} == {"its step moves no kink or tie"}
    # the jax.grad rows' numbers are the checks code's, on the image the page shows
    net, image, label = rep.analysis.net, rep.analysis.image, rep.analysis.label
    manual, _ = checks.manual_grads(net, image[None], np.eye(10)[[label]])
    _, auto = loss_and_grad(net, image[None], np.eye(10)[[label]])
    want = checks.compare("ffW", manual.params["ffW"], auto.params["ffW"], checks.GRAD_RTOL)
    assert [(p[1], p[2]) for p in seen["proof"] if p[0] == "ffW: delta rule vs jax.grad"] == [(want.max_abs, want.max_rel)]
    from jaxcnn import data as data_mod
    for name in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert data_mod.sha256_of(data_mod.find_idx(fashion_folder, name)) in text


@pytest.mark.slow
def test_toy_multichannel_nonsquare_report_in_chromium_and_an_old_run(tmp_path, browser):
    data_dir = toy_folder(tmp_path / "data")
    out = tmp_path / "run"
    run.train(toy_config(data_dir, numepochs=1), out, progress=False, log=lambda *_: None)
    run.train(toy_config(data_dir, numepochs=2), out, resume=True, force=True, progress=False, log=lambda *_: None)
    _, meta = fileio.load_npz(out / "kernels.npz")
    assert meta["epochs"] == [1, 2]                        # the per-epoch records survive resume
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [sorted(m["delta_rms"]) for m in metrics] == [["layer 2", "layer 3", "layer 4", "layer 5", "od"]] * 2
    assert main(["report", str(out), "--image", "3", "--out", str(tmp_path / "toy.html")]) == 0
    rep = report.build(out, 3)
    seen = open_page(browser, tmp_path / "toy.html")
    assert_page_shows(seen, rep)
    assert "3@14×10 → 3@12×8 → 3@6×4 → 4@4×2 → 4@2×1 → 8 → 10" in seen["text"] and "Test image #3" in seen["text"]
    assert "expand(d, [s s 1]) / s² (s = 2)" in seen["text"] and "od = e (softmax" in seen["text"]
    assert seen["missing"] == []
    # a run written before the per-epoch records: the training section says so instead of failing
    (out / "kernels.npz").unlink()
    (out / "metrics.jsonl").write_text("".join(json.dumps({k: v for k, v in m.items() if k != "delta_rms"}) + "\n"
                                               for m in metrics))
    path, rep = report.write(out)
    seen = open_page(browser, path)
    assert_page_shows(seen, rep)
    assert len(seen["missing"]) == 2 and "no kernels.npz" in seen["missing"][0] and "delta_rms" in seen["missing"][1]


@pytest.mark.slow
def test_image_index_out_of_range_is_named(tmp_path):
    data_dir = toy_folder(tmp_path / "data")
    run.train(toy_config(data_dir, numepochs=1), tmp_path / "run", progress=False, log=lambda *_: None)
    with pytest.raises(report.ReportError, match=r"--image 20: the run's test set has images 0..19"):
        report.build(tmp_path / "run", 20)


# ---- slow: a ReLU / max-pooling / softmax net trained on real Fashion-MNIST images ------------------------------

@pytest.fixture(scope="module")
def modern_run(tmp_path_factory, fashion_folder):
    """configs/fashion_mnist_modern.toml (ReLU, max pooling, softmax) for one epoch of 1000 real images: its test
    images have flat zero backgrounds, so ReLUs and max-pool windows sit exactly on kinks and ties."""
    cfg = config_mod.load(REPO / "configs" / "fashion_mnist_modern.toml",
                          ["data.n_train=1000", "data.n_test=100", "train.numepochs=1"])
    out = tmp_path_factory.mktemp("modern") / "run"
    run.train(cfg, out, progress=False, log=lambda *_: None)
    return out


@pytest.mark.slow
def test_modern_net_on_real_images_never_fails_the_correct_rule(modern_run, browser, tmp_path):
    """Before the kink margins, images 0 and 4 of this run gave FAIL rows (central differences straddling a tie)."""
    central = []
    for index in (0, 1, 4):
        out = tmp_path / f"image{index}.html"
        assert main(["report", str(modern_run), "--image", str(index), "--out", str(out)]) == 0
        seen = open_page(browser, out, tmp_path / f"modern{index}.png" if index == 0 else None)
        assert f"Test image #{index}" in seen["text"]
        verdicts = {check: (verdict, note) for check, *_, verdict, note in seen["proof"]}
        assert "FAIL" not in [v for v, _ in verdicts.values()], verdicts
        assert [v for c, (v, _) in verdicts.items() if "jax.grad" in c] == ["pass"] * 6
        for check, (verdict, note) in verdicts.items():
            if "central difference" in check:
                central.append(verdict)
                assert verdict in ("pass", analysis.NOT_COMPARABLE)
                if verdict == analysis.NOT_COMPARABLE:
                    assert "from its kink or tie" in note and "L has no derivative" in note
                else:
                    assert "its step moves no kink or tie" == note or "× its ±ε step away" in note
    assert len(central) == 3 * 6 * analysis.N_SAMPLED
    assert analysis.NOT_COMPARABLE in central                    # the images do put weights within ε of kinks
    assert central.count("pass") >= len(central) // 2            # and most sampled weights are still compared


@pytest.mark.slow
def test_modern_net_on_real_images_still_fails_a_wrong_rule(modern_run, monkeypatch):
    """ReLU' taken as 1 everywhere (the δ of dead units not stopped): the rows that can be compared say FAIL."""
    monkeypatch.setattr(bp, "relu_prime", lambda a: np.ones_like(a))
    rep = report.build(modern_run, 0)
    failed = [r.check for r in rep.proof if r.verdict == "FAIL"]
    assert {"layer 2 k: delta rule vs jax.grad", "layer 4 b: delta rule vs jax.grad"} <= set(failed)
    assert any("central difference" in c and c.startswith("layer 4") for c in failed), failed
    assert '<span class="fail">FAIL</span>' in rep.html


@pytest.mark.slow
def test_a_crafted_run_folder_puts_no_element_on_the_page(tmp_path, browser, monkeypatch):
    """Markup in a run folder reaches the page as text only. kernels.npz with markup in its array names or
    epochs is refused by its reader (one line, nothing written); so that the page's own escaping is tested too,
    the reader is then made to hand the crafted record over, beside a config.toml comment carrying markup."""
    data_dir = toy_folder(tmp_path / "data")
    out = tmp_path / "run"
    run.train(toy_config(data_dir, numepochs=1), out, progress=False, log=lambda *_: None)
    arrays, meta = fileio.load_npz(out / "kernels.npz")
    link, form = "<a href=javascript:alert(1) id=planted>conv1", "<form action=https:evil.example id=planted2><button>go"
    epoch = "<a href=https:evil.example id=planted3>1"
    crafted = {link: arrays["conv1"], form: arrays["conv2"]}
    fileio.save_npz(out / "kernels.npz", crafted, dict(meta, epochs=[epoch]))
    with pytest.raises(fileio.DamagedFile, match="kernels.npz"):
        report.write(out)
    assert not (out / "report.html").exists()
    comment = "# <base href=https:evil.example/><img src=https:evil.example/x id=planted4>"
    (out / "config.toml").write_text(comment + "\n" + (out / "config.toml").read_text())
    monkeypatch.setattr(records, "read_kernels", lambda path: (crafted, [epoch]))
    path, rep = report.write(out)
    page = browser.new_page()
    page.goto(path.as_uri())
    found = page.evaluate("""() => ({planted: document.querySelectorAll('[id^=planted], a, form, button, base').length,
                                      text: document.body.textContent})""")     # textContent: folded <details> too
    page.close()
    assert found["planted"] == 0
    assert comment in found["text"]
    assert link in found["text"] and form in found["text"] and "<a href=https:evil.example id=planted3>1" in found["text"]
