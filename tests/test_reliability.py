"""Crash safety, exact resume, divergence, and one clear line for every bad input."""
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxcnn import checkpoint, cli, config, data, netfile
from jaxcnn.fileio import load_npz
from tests.test_data import make_folder, serve, write_idx

REPO = Path(__file__).resolve().parent.parent
RUN = ["--set", "data.dataset=\"fashion_mnist\"", "--set", "data.n_train=500", "--set", "data.n_test=200",
       "--set", "train.batchsize=25", "--set", "train.numepochs=3", "--set", "checkpoint.every_steps=5",
       "--set", "checkpoint.keep=2"]
TIMING = {"seconds", "seconds_per_epoch", "compile_seconds"}


class Job:
    """A `jaxcnn train` subprocess whose output goes to a log file (no pipes to leak when it is killed)."""

    def __init__(self, out: Path, *extra, delay=None):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAXCNN_MIRRORS": "http://127.0.0.1:9/"}
        if delay:
            env["JAXCNN_TEST_WRITE_DELAY"] = str(delay)
        self.log = out.parent / f"{out.name}.{time.monotonic_ns()}.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "jaxcnn", "train", "configs/fashion_mnist.toml", *RUN,
                                          "--out", str(out), "--no-progress", *extra], cwd=REPO, env=env,
                                         stdout=log, stderr=subprocess.STDOUT)

    def wait(self) -> int:
        return self.proc.wait(timeout=600)

    @property
    def output(self) -> str:
        return self.log.read_text()


def _resume(out, *extra, env=None):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAXCNN_MIRRORS": "http://127.0.0.1:9/", **(env or {})}
    return subprocess.run([sys.executable, "-m", "jaxcnn", "train", "configs/fashion_mnist.toml", *RUN, *extra,
                           "--resume", str(out), "--no-progress"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def _record(out: Path) -> dict:
    """Everything a finished run leaves, minus wall-clock times."""
    metrics = [{k: v for k, v in json.loads(line).items() if k not in TIMING}
               for line in (out / "metrics.jsonl").read_text().splitlines()]
    summary = {k: v for k, v in json.loads((out / "summary.json").read_text()).items() if k not in TIMING}
    arrays, _ = load_npz(checkpoint.list_checkpoints(out)[-1])
    kernels, kernels_meta = load_npz(out / "kernels.npz")           # the report's per-epoch kernels
    return {"net": netfile.net_arrays(netfile.load(out / "net.npz")), "metrics": metrics, "summary": summary,
            "losses": arrays["losses"], "rl": arrays["rl"], "kernels": kernels, "kernel_epochs": kernels_meta["epochs"]}


def _assert_same(a, b):
    assert a["metrics"] == b["metrics"] and a["summary"] == b["summary"]
    for key in a["net"]:
        np.testing.assert_array_equal(a["net"][key], b["net"][key])       # bit for bit
    np.testing.assert_array_equal(a["losses"], b["losses"])
    np.testing.assert_array_equal(a["rl"], b["rl"])
    assert a["kernel_epochs"] == b["kernel_epochs"] == list(range(1, len(a["metrics"]) + 1))
    for key in b["kernels"]:
        np.testing.assert_array_equal(a["kernels"][key], b["kernels"][key])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    job = Job(out)
    assert job.wait() == 0, job.output
    return _record(out)


def _tmp_files(out):
    return [p for folder in (out, out / "checkpoints") if folder.is_dir() for p in folder.glob(".*.tmp")]


MOMENTS = {
    "during the 3rd checkpoint write": lambda out: (
        any(p.name.startswith(".ckpt-") for p in _tmp_files(out)) and len(checkpoint.list_checkpoints(out)) == 2),
    "during an end-of-epoch checkpoint write": lambda out: any(
        p.name.startswith(".ckpt-E0002-S000000.npz.") for p in _tmp_files(out)),
    "during the metrics.jsonl write": lambda out: any(p.name.startswith(".metrics.jsonl.") for p in _tmp_files(out)),
    "mid-epoch, between writes": lambda out: (out / "checkpoints" / "ckpt-E0002-S000010.npz").exists()
    and not _tmp_files(out),
}


@pytest.mark.slow
@pytest.mark.parametrize("moment", MOMENTS)
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, reference, moment):
    out = tmp_path / "run"
    job = Job(out, delay=0.25)
    deadline = time.monotonic() + 300
    while not MOMENTS[moment](out):
        assert job.proc.poll() is None, f"the run ended before '{moment}': {job.output}"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    job.proc.send_signal(signal.SIGKILL)
    assert job.wait() == -signal.SIGKILL
    assert not (out / "summary.json").exists()
    for path in checkpoint.list_checkpoints(out):            # every checkpoint on disk is whole
        checkpoint.stored_config(path)
    result = _resume(out)
    assert result.returncode == 0, result.stderr
    assert "resuming from ckpt-" in result.stdout
    assert not _tmp_files(out)
    _assert_same(_record(out), reference)


SPLIT = ("--set", "data.n_train=640", "--set", "train.batchsize=32")     # 20 steps of 32: 2 x 16 on 2 cores


@pytest.mark.slow
def test_a_split_run_killed_mid_epoch_resumes_bit_for_bit(tmp_path):
    """With each batch split over the cores (`jaxcnn.parallel`; on CI's 2 cores, 2 x 16), SIGKILL mid-epoch and
    resume give the uninterrupted run bit for bit; resumed on another number of devices it warns, naming both,
    and goes on the same to rounding."""
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        pytest.skip("one core: no batch to split")
    reference_out = tmp_path / "reference"
    assert Job(reference_out, *SPLIT).wait() == 0
    reference = _record(reference_out)
    assert reference["summary"]["batch_devices"] == 2
    out = tmp_path / "run"
    job = Job(out, *SPLIT, delay=0.25)
    deadline = time.monotonic() + 300
    while not MOMENTS["mid-epoch, between writes"](out):
        assert job.proc.poll() is None and time.monotonic() < deadline, job.output
        time.sleep(0.005)
    job.proc.send_signal(signal.SIGKILL)
    assert job.wait() == -signal.SIGKILL
    shutil.copytree(out, tmp_path / "copy")
    result = _resume(out, *SPLIT)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
    _assert_same(_record(out), reference)
    one_device = _resume(tmp_path / "copy", *SPLIT, env={"JAX_NUM_CPU_DEVICES": "1"})
    assert one_device.returncode == 0, one_device.stderr
    assert re.search(r"jaxcnn: warning: ckpt-E\d{4}-S\d{6}\.npz was trained with each batch split over 2 device\(s\), "
                     r"this process splits it over 1: the run goes on the same to rounding, not bit for bit", one_device.stderr)
    resumed = _record(tmp_path / "copy")
    assert resumed["summary"]["batch_devices"] == 1
    for key in reference["net"]:
        np.testing.assert_allclose(resumed["net"][key], reference["net"][key], rtol=0, atol=1e-5, err_msg=key)


@pytest.mark.slow
def test_resume_refuses_a_changed_config_naming_the_keys(tmp_path, reference, capsys):
    out = tmp_path / "run"
    assert Job(out, "--set", "train.numepochs=1").wait() == 0
    before = {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()}
    code = cli.main(["train", "configs/fashion_mnist.toml", *RUN, "--set", "train.alpha=0.5", "--resume", str(out)])
    message = capsys.readouterr().err
    assert code == 2 and "config differs" in message and "train.alpha" in message and "train.numepochs" in message
    assert {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()} == before


@pytest.mark.slow
def test_divergence_stops_naming_epoch_and_step_and_keeps_the_last_good_checkpoint(tmp_path):
    """Adam with lr 1e38 overflows the weights: the loss turns NaN within a few steps (measured: step 3).

    (SGD with alpha = 100 does not diverge here: the delta rule's a(1-a) is 0 for saturated units, as in
    the toolbox, so such a run saturates and stalls at a finite loss instead.)"""
    out = tmp_path / "run"
    job = Job(out, "--set", "train.optimizer=\"adam\"", "--set", "train.alpha=1e38", "--set", "checkpoint.every_steps=2")
    assert job.wait() == 3
    err = job.output
    match = re.search(r"non-finite loss \(nan\) at epoch 1, step (\d+);", err)
    assert match and "Traceback" not in err and "last good checkpoint is kept" in err, err
    kept = checkpoint.list_checkpoints(out)
    assert kept, "no checkpoint before the divergence"
    arrays, meta = load_npz(kept[-1])
    assert meta["step"] < int(match.group(1)) <= meta["step"] + 2       # diverged in the chunk after it
    assert meta["epoch"] == 0 and np.isfinite(arrays["losses"]).all() and arrays["losses"].size == meta["step"]
    assert not (out / "summary.json").exists() and not (out / "net.npz").exists()


# ---- bad input, through the real CLI entry point ---------------------------------------------------

def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory):
    """A finished run that bad input must leave alone. Training it takes ~10 s: its tests are `slow`."""
    out = tmp_path_factory.mktemp("earlier") / "run"
    assert cli.main(["train", "configs/fashion_mnist.toml", "--set", "data.n_train=100", "--set", "data.n_test=50",
                     "--set", "train.batchsize=50", "--out", str(out), "--no-progress"]) == 0
    return out


def _idx_folder(tmp_path, damage):
    folder = tmp_path / "idx"
    make_folder(folder, n_train=60, n_test=20, shape=(28, 28), compress=False)
    damage(folder)
    return folder


def _truncate(folder):
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])


def _bad_magic(folder):
    path = folder / "t10k-images-idx3-ubyte"
    path.write_bytes(b"\x12\x34\x08\x03" + path.read_bytes()[4:])


BAD_INPUTS = {
    "misspelled key": (["--set", "train.alhpa=1"], "unknown config key: train.alhpa"),
    "wrong type": (["--set", "train.batchsize=\"50\""], "train.batchsize: expected an integer"),
    "zero size": (["--set", "train.batchsize=0"], "train.batchsize: must be >= 1"),
    "negative size": (["--set", "data.n_train=-1"], "data.n_train: must be >= 0"),
    "stack sizes": (["--set", "model.layers=[{type='i'},{type='c',outputmaps=2,kernelsize=5},{type='s',scale=5}]"],
                    "layer 3 (type 's'): size must be integer"),
    "batch larger than data": (["--set", "data.n_train=40", "--set", "train.batchsize=50"],
                               "train.batchsize = 50 is larger than the 40 training samples"),
    "missing data folder": (["--set", "data.dir=\"/nonexistent/idx\""], "data folder /nonexistent/idx does not exist"),
    "idx wrong magic": (lambda t: ["--set", f"data.dir=\"{_idx_folder(t, _bad_magic)}\""], "wrong magic number"),
    "idx truncated": (lambda t: ["--set", f"data.dir=\"{_idx_folder(t, _truncate)}\""], "truncated"),
    "idx wrong dimensions": (lambda t: ["--set", f"data.dir=\"{_idx_folder(t, lambda f: write_idx(f / 'train-images-idx3-ubyte', np.zeros((60, 784), np.uint8)))}\""],
                             "training images must have 3 or 4 dimensions"),
    "labels out of range": (lambda t: ["--set", f"data.dir=\"{_idx_folder(t, lambda f: write_idx(f / 't10k-labels-idx1-ubyte', np.full(20, 12, np.uint8)))}\""],
                            "test labels out of range: found 12..12"),
    "counts differ": (lambda t: ["--set", f"data.dir=\"{_idx_folder(t, lambda f: write_idx(f / 'train-labels-idx1-ubyte', np.zeros(59, np.uint8)))}\""],
                      "60 training images but 59 training labels"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_and_nothing_is_lost(case, tmp_path, earlier_run, capsys):
    args, message = BAD_INPUTS[case]
    args = args(tmp_path) if callable(args) else args
    before = _digest(earlier_run.parent)
    out = tmp_path / "new"
    code = cli.main(["train", "configs/fashion_mnist.toml", "--set", "data.n_test=50", *args, "--out", str(out),
                     "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert err.startswith("jaxcnn: error: ") and "Traceback" not in err
    assert _digest(earlier_run.parent) == before
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_an_existing_run_is_not_overwritten(earlier_run, capsys):
    before = _digest(earlier_run)
    code = cli.main(["train", "configs/fashion_mnist.toml", "--set", "data.n_train=100", "--out", str(earlier_run)])
    err = capsys.readouterr().err
    assert code == 2 and "already holds a run" in err and "--overwrite" in err
    assert _digest(earlier_run) == before


def test_a_download_with_the_wrong_digest_is_refused(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "origin"
    make_folder(folder, shape=(28, 28))
    with serve({f"/m/{p.name}": p.read_bytes() for p in folder.iterdir()}) as url:
        monkeypatch.setenv("JAXCNN_MIRRORS", f"{url}/m/")
        code = cli.main(["train", "configs/mnist.toml", "--out", str(tmp_path / "new")])
    err = capsys.readouterr().err
    assert code == 2 and "SHA-256 mismatch" in err and "train-images-idx3-ubyte.gz" in err and "Traceback" not in err
    # The served files are random, so no digest matches: the first file fails and nothing may be kept in
    # the cache the download went to (conftest's no_real_mirrors points JAXCNN_DATA_DIR at a fresh folder):
    # no .gz, and no temporary .part file left behind.
    cache = data.cache_root() / "mnist"
    assert cache.is_dir(), f"the download did not go to {cache}"
    assert sorted(p.name for p in cache.iterdir()) == []
    assert not (tmp_path / "new").exists()


def test_mat_files_without_the_variable_or_struct(tmp_path, capsys):
    import scipy.io
    scipy.io.savemat(tmp_path / "x.mat", {"net": np.eye(3), "cnn": {"weights": np.eye(2)}})
    assert cli.main(["import-mat", str(tmp_path / "x.mat"), str(tmp_path / "n.npz"), "--var", "mynet"]) == 2
    assert "no variable 'mynet' (variables: net, cnn)" in capsys.readouterr().err
    assert cli.main(["import-mat", str(tmp_path / "x.mat"), str(tmp_path / "n.npz")]) == 2
    assert "not a toolbox cnn struct (no field 'layers')" in capsys.readouterr().err
    assert not (tmp_path / "n.npz").exists()


@pytest.mark.slow
def test_a_checkpoint_from_another_architecture_is_refused(earlier_run, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(earlier_run, out)
    before = _digest(out)
    code = cli.main(["train", "configs/fashion_mnist.toml", "--set", "data.n_train=100", "--set", "data.n_test=50",
                     "--set", "train.batchsize=50", "--set",
                     "model.layers=[{type='i'},{type='c',outputmaps=4,kernelsize=5},{type='s',scale=2}]",
                     "--resume", str(out), "--force"])
    err = capsys.readouterr().err
    assert code == 2 and "checkpoint from another architecture" in err
    assert _digest(out) == before


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(config.ConfigError):
        cli.main(["--debug", "train", "configs/fashion_mnist.toml", "--set", "train.alhpa=1"])
