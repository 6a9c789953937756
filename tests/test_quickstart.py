"""The quick start where MNIST cannot be had: `jaxcnn train --check-data` tells "not here, not downloadable"
(exit 4) from every other error (exit 2), and `scripts/run` then trains the same toolbox net on
Fashion-MNIST, saying so in its first line, or with neither prints `jaxcnn train`'s own one-line error.
`jaxcnn train configs/mnist.toml` itself never substitutes a dataset (test_cli's offline test)."""
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from jaxcnn import cli, config
from tests.test_data import make_folder

REPO = Path(__file__).resolve().parent.parent
CLOSED = "http://127.0.0.1:9/"                         # a loopback port nothing listens on: refused at once
TINY = ["--set", "data.n_train=100", "--set", "data.n_test=50", "--no-progress"]


def test_check_data_exits_4_when_mnist_cannot_be_had(tmp_path, capsys):
    """conftest points the cache at an empty folder and the mirrors at a closed port."""
    assert cli.main(["train", "configs/mnist.toml", "--out", str(tmp_path / "run"), "--check-data"]) == 4
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert err.startswith("jaxcnn: error: mnist is not available here and could not be downloaded")
    assert "Connection refused" in err and "--set data.dir=PATH" in err
    assert not (tmp_path / "run").exists()


def test_check_data_says_where_the_data_comes_from(fashion_folder, tmp_path, capsys):
    assert cli.main(["train", "configs/mnist.toml", "--set", 'data.dataset="fashion_mnist"', "--set", "data.n_train=10",
                     "--out", str(tmp_path / "run"), "--check-data"]) == 0
    assert capsys.readouterr().out == f"fashion_mnist: 10 training / 10000 test images from {fashion_folder}\n"
    make_folder(tmp_path / "mine", shape=(28, 28))
    assert cli.main(["train", "configs/mnist.toml", "--set", f"data.dir={tmp_path / 'mine'}", "--check-data"]) == 0
    assert capsys.readouterr().out == f"mnist: 12 training / 5 test images from {tmp_path / 'mine'}\n"
    assert not (tmp_path / "run").exists()


def test_check_data_keeps_exit_2_for_every_other_error(tmp_path, capsys):
    """A data.dir that is missing or damaged is the user's input, not a dataset that cannot be had."""
    assert cli.main(["train", "configs/mnist.toml", "--set", f"data.dir={tmp_path / 'nowhere'}", "--check-data"]) == 2
    assert "data folder" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train-images-idx3-ubyte").write_bytes(b"not an idx file")
    assert cli.main(["train", "configs/mnist.toml", "--set", f"data.dir={tmp_path / 'bad'}", "--check-data"]) == 2
    assert cli.main(["train", "configs/mnist.toml", "--set", "train.alhpa=1", "--check-data"]) == 2


def _script(tmp_path, *args, hide_debian_fashion=False):
    """`bash scripts/run ARGS` with this interpreter (JAXCNN_PYTHON: no setup), an empty data cache and the
    mirrors at a closed port; `hide_debian_fashion` makes Debian's Fashion-MNIST folder look absent."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAXCNN_PYTHON": sys.executable,
           "JAXCNN_DATA_DIR": str(tmp_path / "cache"), "JAXCNN_MIRRORS": CLOSED}
    if hide_debian_fashion:
        hook = tmp_path / "hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text("import pathlib\nimport jaxcnn.data\n"
                                              f"jaxcnn.data.DEBIAN_FASHION_MNIST = pathlib.Path({str(tmp_path / 'absent')!r})\n")
        env["PYTHONPATH"] = os.pathsep.join([str(hook), env.get("PYTHONPATH", "")])
    return subprocess.run(["bash", REPO / "scripts" / "run", *map(str, args)], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=600)


@pytest.mark.slow
def test_scripts_run_trains_the_toolbox_net_on_fashion_mnist_when_mnist_cannot_be_had(fashion_folder, tmp_path):
    out = tmp_path / "out"
    result = _script(tmp_path, *TINY, "--out", out)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("scripts/run: MNIST cannot be had here, so this trains the same toolbox net "
                            "(configs/mnist.toml) on Fashion-MNIST instead "
                            f"(100 training / 50 test images from {fashion_folder}). To get MNIST: mnist is not available")
    assert f"into {tmp_path / 'cache' / 'mnist'}" in first and "--set data.dir=PATH" in first    # how to get MNIST
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "fashion_mnist" and summary["data_source"] == str(fashion_folder)
    assert summary["n_train"] == 100 and summary["n_test"] == 50 and summary["net"] == "6c-2s-12c-2s"
    used = config.from_dict(tomllib.loads((out / "config.toml").read_text()))
    toolbox_net = config.load(REPO / "configs" / "mnist.toml", ["data.n_train=100", "data.n_test=50"])
    assert config.diff(toolbox_net, used) == ["data.dataset"]                      # the same net, other data


@pytest.mark.slow
def test_scripts_run_with_neither_dataset_is_jaxcnn_train_s_one_line(tmp_path, monkeypatch, capsys):
    result = _script(tmp_path, *TINY, "--out", tmp_path / "out", hide_debian_fashion=True)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("jaxcnn: error: mnist is not available here and could not be downloaded")
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv("JAXCNN_DATA_DIR", str(tmp_path / "cache"))
    assert cli.main(["train", "configs/mnist.toml", *TINY, "--out", str(tmp_path / "out")]) == 2
    assert result.stderr == capsys.readouterr().err                              # word for word


@pytest.mark.slow
def test_scripts_run_trains_mnist_when_it_can_be_had(tmp_path):
    """MNIST from data.dir: no fallback, no extra line, the MNIST run."""
    make_folder(tmp_path / "mnist", n_train=60, n_test=20, shape=(28, 28))
    out = tmp_path / "out"
    result = _script(tmp_path, "--set", f"data.dir={tmp_path / 'mnist'}", "--set", "data.n_train=50", "--no-progress",
                     "--out", out)
    assert result.returncode == 0, result.stderr
    assert "scripts/run" not in result.stdout and result.stdout.startswith("6c-2s-12c-2s net")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "mnist" and summary["data_source"] == str(tmp_path / "mnist") and summary["n_train"] == 50
