"""`jaxcnn report`: the page's arithmetic against hand-computed truths, and the page as a reader sees it (Chromium
driven by Playwright, every outside request aborted) for the default Fashion-MNIST net and a non-square,
three-channel toy net with every layer option."""
import dataclasses
import json
import shutil
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxcnn import config as config_mod, fileio, init_net, report, run
from jaxcnn.report import analysis, arithmetic, run_page
from jaxcnn.cli import build_parser, main
from jaxcnn.layers import Conv, Input, Pool
from jaxcnn.verification import backprop as bp
from jaxcnn.verification import checks
from tests.test_data import write_idx

REPO = Path(__file__).resolve().parent.parent
SECTIONS = ("architecture", "forward", "backward", "arithmetic", "proof", "training", "results", "footer")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TOY_LAYERS = (Input(), Conv(3, 3, "tanh"), Pool(2, "max"), Conv(4, 3, "relu"), Pool(2))


# ---- quick: the arithmetic the page shows --------------------------------------------------------------

@pytest.fixture(scope="module")
def toy_analysis():
    """The delta rule on one 14×10×3 image through a net with tanh, max pooling, ReLU and softmax."""
    net = init_net(jax.random.key(0), TOY_LAYERS, (14, 10, 3), 10, output="softmax")
    image = np.random.default_rng(0).random((14, 10, 3))
    return analysis.analyse(net, image, 4)


def test_kernel_table_is_the_kernel_rotated(toy_analysis):
    _, values = arithmetic.kernel_tables(toy_analysis)
    k = values["kernel"]
    np.testing.assert_array_equal(values["rot180"], k[::-1, ::-1])
    np.testing.assert_array_equal(values["jaxcnn"], k[::-1, ::-1].T)      # jaxcnn k = rot180(toolbox k)ᵀ


def test_full_window_products_sum_to_the_full_convolution(toy_analysis):
    _, v = arithmetic.full_window(toy_analysis)
    assert v["sum"] == pytest.approx(v["full"], rel=1e-12, abs=1e-15)
    np.testing.assert_allclose(v["products"], v["window"] * toy_analysis.tb["layers"][v["layer"]]["k"][0][0])


def test_dk_entry_is_the_window_sum(toy_analysis):
    _, v = arithmetic.dk_entry(toy_analysis)
    assert v["sum"] == pytest.approx(v["dk"], rel=1e-12)
    a = toy_analysis.result["a"][2][0][:, :, 0]
    np.testing.assert_array_equal(v["flipall"], a[::-1, ::-1])


def test_pool_block_goes_back_by_the_pools_rule(toy_analysis):
    _, v = arithmetic.pool_block(toy_analysis)
    assert (v["s"], v["max"]) == (2, False)                 # the last 's' after a 'c': layer 5, mean pooling
    np.testing.assert_allclose(v["back"], np.kron(v["block"], np.ones((2, 2))) / 4)


def test_proof_rows_pass_and_cover_every_parameter(toy_analysis):
    rows = analysis.proof_rows(toy_analysis)
    names = [r.check.split(":")[0] for r in rows]
    for group in ("layer 2 k", "layer 2 b", "layer 4 k", "layer 4 b", "ffW", "ffb"):
        assert names.count(group) == 2, group             # once against jax.grad, once by central differences
    assert all(r.passed for r in rows), [r for r in rows if not r.passed]


def test_architecture_rows_count_parameters_by_hand():
    net = init_net(jax.random.key(0), TOY_LAYERS, (14, 10, 3), 10)
    rows = run_page.architecture_rows(net)
    assert [r[2] for r in rows[:5]] == ["3@14×10", "3@12×8", "3@6×4", "4@4×2", "4@2×1"]
    assert [r[3] for r in rows] == ["0", "84", "0", "112", "0", "0", "90", "<b>286</b>"]   # 9·3·3+3, 9·3·4+4, 8·10+10
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
             r.cells[4].textContent]),
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
    assert seen["sections"] == list(SECTIONS)
    t = seen["tables"]
    np.testing.assert_array_equal(t["t-rot180"], np.rot90(np.array(t["t-kernel"]), 2))
    np.testing.assert_array_equal(t["t-kernel"], rep.arithmetic["kernel"]["kernel"])
    np.testing.assert_array_equal(t["t-jaxcnn-kernel"], rep.arithmetic["kernel"]["jaxcnn"])
    np.testing.assert_array_equal(t["t-products"], rep.arithmetic["window"]["products"])
    np.testing.assert_array_equal(t["t-dk-products"], rep.arithmetic["dk"]["products"])
    np.testing.assert_array_equal(t["t-pool-back"], rep.arithmetic["pool"]["back"])
    assert seen["spans"]["v-window-sum"] == pytest.approx(seen["spans"]["v-window-full"], rel=1e-12, abs=1e-15)
    assert seen["spans"]["v-dk-sum"] == pytest.approx(seen["spans"]["v-dk"], rel=1e-12)
    assert [row[0] for row in seen["proof"]] == [r.check for r in rep.proof]
    for (_, max_abs, max_rel, verdict), row in zip(seen["proof"], rep.proof):
        assert (max_abs, max_rel) == (row.max_abs, row.max_rel) or np.isnan(row.max_rel)
        assert verdict == "pass"


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
    # proof rows recomputed by the checks code give the same numbers
    again = analysis.proof_rows(rep.analysis)
    assert [(r.max_abs, r.max_rel) for r in again] == [(r.max_abs, r.max_rel) for r in rep.proof]
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
