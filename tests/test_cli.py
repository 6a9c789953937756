"""The real command line, end to end, on small real data."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxcnn import config, netfile, run
from tests.helpers import assert_trees_close

REPO = Path(__file__).resolve().parent.parent
SMALL = ["--set", "data.n_train=500", "--set", "data.n_test=300", "--set", "train.numepochs=2", "--set",
         "train.batchsize=25"]


def jaxcnn(*args, env=None, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "jaxcnn", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "fm"
    result = jaxcnn("train", "configs/fashion_mnist.toml", *SMALL, "--out", out,
                    env={"JAXCNN_MIRRORS": "http://127.0.0.1:9/"})
    assert result.returncode == 0, result.stderr
    return out, result


@pytest.mark.slow
def test_train_writes_the_whole_record(trained):
    out, result = trained
    lines = result.stdout.splitlines()
    assert lines[0].startswith("6c-2s-12c-2s net (3,898 parameters), fashion_mnist: 500 training / 300 test")
    assert lines[1].startswith("epoch 1/2  loss ") and "test error" in lines[1] and lines[2].startswith("epoch 2/2")
    summary = json.loads((out / "summary.json").read_text())
    for key in ("test_error", "n_misclassified", "epochs", "seconds_per_epoch", "compile_seconds", "jax", "jaxlib",
                "device", "confusion"):
        assert key in summary
    assert summary["epochs"] == 2 and summary["n_test"] == 300 and summary["compiled_programs"] == 1
    assert summary["n_misclassified"] == round(summary["test_error"] * 300)
    assert np.sum(summary["confusion"]) == 300 and np.trace(summary["confusion"]) == 300 - summary["n_misclassified"]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2] and metrics[-1]["test_error"] == summary["test_error"]
    resolved = config.load(out / "config.toml")
    assert resolved.data.n_train == 500 and resolved.train.batchsize == 25
    for png in ("loss.png", "misclassified.png"):
        head = (out / png).read_bytes()[:8]
        assert head == b"\x89PNG\r\n\x1a\n" and (out / png).stat().st_size > 10_000


@pytest.mark.slow
def test_eval_of_the_saved_net_gives_the_summary_error(trained):
    out, _ = trained
    result = jaxcnn("eval", out / "net.npz", "--dataset", "fashion_mnist", "--n-test", 300, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads(result.stdout)["test_error"] == summary["test_error"]


@pytest.mark.slow
def test_export_and_import_mat_round_trip(trained, tmp_path):
    out, _ = trained
    assert jaxcnn("export-mat", out / "net.npz", tmp_path / "cnn.mat").returncode == 0
    assert jaxcnn("import-mat", tmp_path / "cnn.mat", tmp_path / "back.npz").returncode == 0
    a, b = netfile.load(out / "net.npz"), netfile.load(tmp_path / "back.npz")
    assert a.dtype == np.float32 and b.dtype == np.float64                   # a toolbox struct is double
    widened = {k: v.astype(np.float64) for k, v in netfile.net_arrays(a).items()}
    assert_trees_close(netfile.net_arrays(b), widened)                        # bit for bit
    result = jaxcnn("eval", tmp_path / "cnn.mat", "--dataset", "fashion_mnist", "--n-test", 300, "--json")
    assert json.loads(result.stdout)["test_error"] == json.loads((out / "summary.json").read_text())["test_error"]


def test_offline_mnist_is_one_clear_line(tmp_path):
    result = jaxcnn("train", "configs/mnist.toml", "--out", tmp_path / "m",
                    env={"JAXCNN_DATA_DIR": str(tmp_path / "cache"), "JAXCNN_MIRRORS": "http://127.0.0.1:9/"})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("jaxcnn: error: mnist is not available")
    assert str(tmp_path / "cache" / "mnist") in result.stderr and "jaxcnn train fashion_mnist" in result.stderr
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


@pytest.mark.slow
def test_one_epoch_of_fashion_mnist_reaches_the_toolbox_error(tmp_path):
    """configs/fashion_mnist.toml as shipped: the toolbox gets 0.29 after one epoch."""
    cfg = config.load(REPO / "configs" / "fashion_mnist.toml")
    summary = run.train(cfg, tmp_path / "fm", progress=False, log=lambda *_: None)
    assert summary["epochs"] == 1 and summary["n_train"] == 60000 and summary["n_test"] == 10000
    assert summary["dtype"] == "float32"
    assert summary["test_error"] <= 0.30                        # measured: 0.2850


@pytest.mark.slow
def test_float64_from_the_command_line_is_float64(tmp_path):
    result = jaxcnn("train", "configs/fashion_mnist.toml", "--set", 'train.dtype="float64"', "--set", "data.n_train=100",
                    "--set", "data.n_test=50", "--out", tmp_path / "f64", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "f64" / "summary.json").read_text())["dtype"] == "float64"
    assert netfile.net_arrays(netfile.load(tmp_path / "f64" / "net.npz"))["ffW"].dtype == np.float64


def test_configs_lists_every_packaged_config_with_its_description(capsys):
    from jaxcnn import cli

    assert cli.main(["configs"]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert set(lines) == {p.stem for p in (REPO / "configs").glob("*.toml")}
    assert lines["sweep_seeds"].startswith("Eight seeds of test_example_CNN.m")
