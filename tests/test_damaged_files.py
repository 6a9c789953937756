"""Every file the CLI reads, damaged every way we can think of, gets one line and exit 2, and nothing changes.

A property-based fuzz over each reader (net.npz, the toolbox .mat, IDX files, checkpoints, kernels.npz,
metrics.jsonl, summary.json, configs): bytes flipped, truncated, grown, emptied, replaced by text; inside
a valid .npz, arrays turned NaN/Inf, reshaped, retyped, dropped, and metadata fields replaced. Each damaged
file is first given to the library reader the command uses: it either reads (the damage missed everything
the reader relies on, such as a zip timestamp: counted as "harmless") or raises a ValueError naming the
file; in the second case the real command runs in-process (`jaxcnn.cli.main`) and must exit 2 with exactly
one line on stderr, naming the file, no traceback, and leave every file in the folder as it was. A few
subprocess cases prove the real exit code. Run with `--hypothesis-show-statistics` to see the counts.
"""
import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import scipy.io
from hypothesis import event, given, settings, strategies as st

from jaxcnn import checkpoint, cli, config, data, netfile, records, run, toolbox
from jaxcnn.checkpoint import TrainState
from jaxcnn.fileio import META_KEY, DamagedFile, load_npz, save_npz
from jaxcnn.net import Net
from jaxcnn.optimizers import init_state
from tests.test_data import make_folder

REPO = Path(__file__).resolve().parent.parent
QUICK, SLOW = 12, 150                  # examples per reader: quick tier, and the slow tier's deeper run

SETTINGS = ["--set", "data.n_train=20", "--set", "data.n_test=10", "--set", "train.batchsize=10",
            "--set", "checkpoint.keep=1"]


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A folder with one good file of every kind, made without training: a run folder (config.toml,
    net.npz, kernels.npz, metrics.jsonl, summary.json, one checkpoint), a toolbox .mat, four IDX files
    and a config file."""
    root = tmp_path_factory.mktemp("files")
    cfg = config.load("fashion_mnist", SETTINGS[1::2])
    out = root / "run"
    out.mkdir()
    (out / "config.toml").write_text(config.dumps(cfg))
    (root / "config.toml").write_text(config.dumps(cfg))
    net, later = (_numpy_net(cfg.model.layers, seed) for seed in (0, 1))     # no JAX compiles: a cheap fixture
    opt_state = init_state(run.optimizer_spec(cfg, 2), net, cfg.train.alpha)
    key = jax.random.wrap_key_data(np.array([0, 7], np.uint32))
    netfile.save(out / "net.npz", net)
    run.record_kernels(out, net, 1)
    run.record_kernels(out, later, 2)
    rms = {"layer 2": 0.01, "layer 4": 0.02, "od": 0.1}
    (out / "metrics.jsonl").write_text("".join(json.dumps(
        {"epoch": e, "loss_mean": 0.5 / e, "loss_last": 0.4 / e, "rL": 0.45, "test_error": 0.9 - 0.1 * e,
         "n_misclassified": 9 - e, "seconds": 0.1, "delta_rms": rms}) + "\n" for e in (1, 2)))
    (out / "summary.json").write_text(json.dumps(
        {"test_error": 0.7, "n_misclassified": 7, "n_test": 10, "n_train": 20, "epochs": 2, "steps_per_epoch": 2,
         "final_rL": 0.4, "seconds_per_epoch": 0.1, "confusion": np.eye(10, dtype=int).tolist(),
         "dtype": "float32"}, indent=2) + "\n")
    state = TrainState(net, opt_state, key, 1, 0, np.full(2, 0.5, np.float32), np.full(3, 0.5, np.float32),
                       [json.loads((out / "metrics.jsonl").read_text().splitlines()[0])], config.dumps(cfg))
    checkpoint.save(out, state, keep=1)
    toolbox.save_net(root / "net.mat", netfile.load(out / "net.npz"))
    arrays = make_folder(root / "idx", n_train=20, n_test=10, shape=(28, 28), compress=False)
    scipy.io.savemat(root / "mnist_uint8.mat", {          # the toolbox's dataset file, rows are row-major images
        "train_x": arrays["train-images-idx3-ubyte"].reshape(20, 784), "test_x": arrays["t10k-images-idx3-ubyte"].reshape(10, 784),
        "train_y": np.eye(10, dtype=np.uint8)[arrays["train-labels-idx1-ubyte"]],
        "test_y": np.eye(10, dtype=np.uint8)[arrays["t10k-labels-idx1-ubyte"]]})
    (root / "out").mkdir()
    return root


def _numpy_net(layers, seed) -> Net:
    """A 6c-2s-12c-2s net of random float32 numpy weights, as init_net's shapes."""
    rng = np.random.default_rng(seed)
    draw = lambda *shape: rng.uniform(-0.5, 0.5, shape).astype(np.float32)
    return Net({"conv": [{"k": draw(5, 5, 1, 6), "b": draw(6)}, {"k": draw(5, 5, 6, 12), "b": draw(12)}],
                "ffW": draw(10, 192), "ffb": draw(10)}, layers, (28, 28, 1), 10)


def _ckpt(root):
    return checkpoint.list_checkpoints(root / "run")[0]


# name: (the file to damage, the library reader its command uses, the command's argv). A dataset's message may name
# the folder instead of the file (image and label counts that differ between two files).
READERS = {
    "net.npz": (lambda r: r / "run" / "net.npz", netfile.load,
                lambda r, p: ["export-mat", str(p), str(r / "out" / "exported.mat")]),
    "toolbox .mat": (lambda r: r / "net.mat", toolbox.load_net,
                     lambda r, p: ["import-mat", str(p), str(r / "out" / "imported.npz")]),
    "IDX train images": (lambda r: r / "idx" / "train-images-idx3-ubyte", lambda p: data.load_idx_folder(p.parent),
                         lambda r, p: ["eval", str(r / "run" / "net.npz"), "--data", str(p.parent)]),
    "IDX test labels": (lambda r: r / "idx" / "t10k-labels-idx1-ubyte", lambda p: data.load_idx_folder(p.parent),
                        lambda r, p: ["eval", str(r / "run" / "net.npz"), "--data", str(p.parent)]),
    "mnist_uint8.mat": (lambda r: r / "mnist_uint8.mat", data.load_mat,
                        lambda r, p: ["eval", str(r / "run" / "net.npz"), "--data", str(p)]),
    "checkpoint": (_ckpt, checkpoint.read, lambda r, p: ["train", "--resume", str(r / "run"), "--no-progress"]),
    "kernels.npz": (lambda r: r / "run" / "kernels.npz", records.read_kernels, lambda r, p: ["report", str(r / "run")]),
    "metrics.jsonl": (lambda r: r / "run" / "metrics.jsonl", records.read_metrics,
                      lambda r, p: ["report", str(r / "run")]),
    "summary.json": (lambda r: r / "run" / "summary.json", records.read_summary,
                     lambda r, p: ["report", str(r / "run")]),
    "config": (lambda r: r / "config.toml", config.load,
               lambda r, p: ["train", str(p), "--out", str(r / "out" / "new"), "--no-progress"]),
    "run's config.toml": (lambda r: r / "run" / "config.toml", config.load, lambda r, p: ["report", str(r / "run")]),
}
NPZ = ("net.npz", "checkpoint", "kernels.npz")


def run_cli(argv) -> tuple[int, str, str]:
    """`jaxcnn ARGV` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def check_damaged(root: Path, name: str, damaged: bytes) -> str:
    """Put `damaged` in place of reader `name`'s file, then: the reader reads it ("harmless") or the command
    fails as promised ("refused"). The good file is put back whatever happens."""
    path_of, reader, argv = READERS[name]
    path = path_of(root)
    good = path.read_bytes()
    try:
        path.write_bytes(damaged)
        try:
            reader(path)
        except ValueError as err:
            assert str(path) in str(err) or (name.startswith("IDX") and str(path.parent) in str(err)), err
        else:
            return "harmless"
        before = _digest(root)
        code, out, err = run_cli(argv(root, path))
        lines = err.splitlines()
        assert code == 2 and len(lines) == 1 and not out, (code, out, err)
        assert lines[0].startswith("jaxcnn: error: ") and "Traceback" not in err
        assert str(path) in lines[0] or (name.startswith("IDX") and str(path.parent) in lines[0]), lines[0]
        assert _digest(root) == before, "a refused command changed a file"
        return "refused"
    finally:
        path.write_bytes(good)


# ---- mutations ----------------------------------------------------------------------------------------

@st.composite
def byte_damage(draw, good: bytes):
    """A copy of `good` with bytes flipped (often in the first 64: headers), cut short, grown, emptied, or
    replaced by text."""
    kind = draw(st.sampled_from(["flip", "truncate", "grow", "empty", "text"]))
    event(f"bytes: {kind}")
    if kind == "flip":
        damaged = bytearray(good)
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.one_of(st.integers(0, min(63, len(good) - 1)), st.integers(0, len(good) - 1)))
            mask = draw(st.integers(1, 255))
            damaged[at] ^= mask
            kind += f" {at}^{mask:#04x}"
        return bytes(damaged), kind
    if kind == "truncate":
        at = draw(st.integers(0, len(good) - 1))
        return good[:at], f"truncated to {at} of {len(good)} bytes"
    if kind == "grow":
        at, extra = draw(st.integers(0, len(good))), draw(st.binary(min_size=1, max_size=64))
        return good[:at] + extra + good[at:], f"grown by {extra!r} at {at}"
    if kind == "empty":
        return b"", kind
    text = draw(st.text(min_size=1, max_size=200))
    return text.encode(), f"replaced by {text!r}"


BAD_VALUES = [np.nan, np.inf, -np.inf, "x", None, -1, 0, [], {}, [1, 2], 1e308, True]


@st.composite
def npz_damage(draw, good: bytes, name: str):
    """(a valid .npz made from `good`'s arrays with one changed, whether reader `name` must refuse it, how): NaN or
    Inf inside, another shape or dtype, dropped, an extra entry, or one metadata field replaced. Every array
    of net.npz and kernels.npz is used by its reader, and a checkpoint's checksum covers everything."""
    with np.load(io.BytesIO(good), allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays[META_KEY]))
    names = sorted(k for k in arrays if k != META_KEY)
    key = draw(st.sampled_from(names))
    value = arrays[key]
    kind = draw(st.sampled_from(["nan", "inf", "shape", "dtype", "drop", "extra", "meta"]))
    event(f"npz: {kind}")
    must = False
    if kind in ("nan", "inf") and value.dtype.kind == "f" and value.size:
        value = value.copy()
        value.flat[draw(st.integers(0, value.size - 1))] = np.nan if kind == "nan" else -np.inf
        arrays[key], must = value, True
    elif kind == "shape":
        arrays[key] = draw(st.sampled_from([value[None], value.ravel()[:-1] if value.size else np.zeros(1),
                                            np.zeros((2, 3), value.dtype), value.reshape(-1)]))
        must = arrays[key].shape != value.shape
    elif kind == "dtype":
        with np.errstate(all="ignore"):                    # a uint32 key overflows float16: that is the point
            arrays[key] = value.astype(draw(st.sampled_from([np.float16, np.int32, np.complex64, np.bool_, "U3"])))
        must = arrays[key].dtype != value.dtype
    elif kind == "drop":
        del arrays[key]
        must = name != "kernels.npz" or len(names) == 1         # kernels.npz may hold fewer layers
    elif kind == "extra":
        arrays["junk"] = np.arange(3)
        must = name != "net.npz"                                 # net.npz ignores entries it does not use
    else:
        field = draw(st.sampled_from(sorted(meta)))
        new = draw(st.sampled_from(BAD_VALUES))
        must = name == "checkpoint" and json.dumps(new) != json.dumps(meta[field])
        meta[field] = new
    arrays[META_KEY] = np.array(json.dumps(meta))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    how = f"{kind} {key}" if kind != "meta" else f"meta {field} = {new!r}"
    return buffer.getvalue(), must, how


class Damage:
    """Damaged bytes, whether the reader must refuse them, and how they were made (Hypothesis prints this
    repr for a failing case, not the bytes)."""

    def __init__(self, data: bytes, must: bool, how: str):
        self.data, self.must, self.how = data, must, how

    def __repr__(self):
        return f"Damage({self.how}; {len(self.data)} bytes; must be refused: {self.must})"


@st.composite
def damage(draw, name: str, good: bytes):
    if name in NPZ and draw(st.booleans()):
        return Damage(*draw(npz_damage(good, name)))
    data, how = draw(byte_damage(good))
    return Damage(data, False, how)


def _fuzz(root, name, data_strategy):
    damaged = data_strategy.draw(damage(name, READERS[name][0](root).read_bytes()), label="damage")
    outcome = check_damaged(root, name, damaged.data)
    event(outcome)
    assert outcome == "refused" or not damaged.must, f"{name}: the reader accepted a file it must refuse"


@pytest.mark.parametrize("name", READERS)
@settings(max_examples=QUICK)
@given(data_strategy=st.data())
def test_damaged_file_is_one_line_exit_2_and_changes_nothing(root, name, data_strategy):
    _fuzz(root, name, data_strategy)


@pytest.mark.slow
@pytest.mark.parametrize("name", READERS)
@settings(max_examples=SLOW)
@given(data_strategy=st.data())
def test_damaged_file_fuzz_deeper(root, name, data_strategy):
    _fuzz(root, name, data_strategy)


# ---- each kind of damage by hand: what the line says --------------------------------------------------

def _flip(data: bytes, at: int) -> bytes:
    damaged = bytearray(data)
    damaged[at] ^= 0xFF
    return bytes(damaged)


def test_the_line_says_how_each_file_is_damaged(root, monkeypatch):
    """The line of a few hand-made cases, each of which raised a raw exception, exited 1 or was accepted
    before; each names the file, and is said before any data is loaded (`report` reads every record first)."""
    def no_data(*args, **kwargs):
        raise AssertionError("the command loaded the dataset before reading its files")

    monkeypatch.setattr(run, "load_data", no_data)
    cases = {
        "net.npz": (lambda b: _flip(b, len(b) // 2), "damaged or not a jaxcnn net file (BadZipFile: Bad CRC-32"),
        "toolbox .mat": (lambda b: b"hello world", "damaged or not a MATLAB v4-v7 .mat file scipy can read "
                                                   "(MatReadError: Mat file appears to be truncated)"),
        "kernels.npz": (lambda b: b[:len(b) - 40], "damaged or not a jaxcnn kernels record"),
        "checkpoint": (lambda b: b"", "no good checkpoint to resume from"),
        "metrics.jsonl": (lambda b: b.replace(b'"test_error": 0.8', b'"test_error": NaN'),
                          "line 1: non-finite number test_error = nan"),
        "summary.json": (lambda b: b"[1, 2]", "summary.json: not a JSON object"),
        "IDX train images": (lambda b: b[:-1], "truncated: dimensions 20x28x28 need 15680 data bytes, found 15679"),
        "IDX test labels": (lambda b: b[:-1] + b"\x0c", "test labels out of range: found 0..12, expected 0..9"),
        "config": (lambda b: b"\xff\xfe[train]", "damaged or not a UTF-8 TOML config (UnicodeDecodeError"),
    }
    for name, (damage, message) in cases.items():
        path_of, _, argv = READERS[name]
        path = path_of(root)
        good = path.read_bytes()
        try:
            path.write_bytes(damage(good))
            assert damage(good) != good, name
            code, _, err = run_cli(argv(root, path))
        finally:
            path.write_bytes(good)
        assert code == 2 and message in err and str(path) in err and len(err.splitlines()) == 1, (name, err)


@pytest.mark.slow
def test_a_damaged_golden_file_is_one_line(tmp_path):
    """`jaxcnn verify --golden FILE` reads the reference values first: damaged, it says so before any check."""
    from jaxcnn.verification import golden

    packaged = golden.default_path().read_bytes()
    for name, damaged in (("golden.npz", packaged[: len(packaged) // 3]), ("golden.mat", b"")):
        path = tmp_path / name
        path.write_bytes(damaged)
        code, out, err = run_cli(["verify", "--golden", path])
        assert code == 2 and not out and len(err.splitlines()) == 1, err
        assert err.startswith(f"jaxcnn: error: {path}: damaged or not a toolbox golden file"), err


def test_a_damaged_file_error_is_one_line():
    assert str(DamagedFile("a/net.npz", "Bad CRC-32\n  for ffW")) == "a/net.npz: Bad CRC-32 for ffW"


def test_kernels_content_damage_names_the_array(root):
    path = root / "run" / "kernels.npz"
    good = path.read_bytes()
    arrays, meta = load_npz(path)
    nan = arrays["conv2"].copy()
    nan[1, 0, 0, 0, 0] = np.nan
    try:
        for change, message in (({"conv1": arrays["conv1"][:1]}, r"conv1 is float64\[1, 5, 5, 1, 6\], expected float64 "
                                                                  r"\[2 epochs"),
                                ({"conv2": nan}, r"conv2 holds 1 non-finite value\(s\)"),
                                ({"conv1": arrays["conv1"].astype(np.float32)}, "conv1 is float32")):
            save_npz(path, {**arrays, **change}, meta)
            with pytest.raises(DamagedFile, match=message):
                records.read_kernels(path)
        save_npz(path, arrays, {**meta, "epochs": [2, 1]})
        with pytest.raises(DamagedFile, match=r"epochs \[2, 1\] is not an increasing list"):
            records.read_kernels(path)
    finally:
        path.write_bytes(good)


def test_npz_content_damage_names_the_array(root):
    path = root / "run" / "net.npz"
    good = path.read_bytes()
    arrays, meta = load_npz(path)
    try:
        for value, message in ((np.full_like(arrays["ffb"], np.nan), "ffb holds 10 non-finite value(s)"),
                               (arrays["ffb"].astype(np.float16), "ffb is float16, the net's dtype is float32"),
                               (arrays["ffb"][:-1], "ffb has shape (9,), the architecture needs (10,)")):
            save_npz(path, {**arrays, "ffb": value}, meta)
            with pytest.raises(DamagedFile, match=f"{path}: " + message.replace("(", r"\(").replace(")", r"\)")):
                netfile.load(path)
    finally:
        path.write_bytes(good)


def test_a_checkpoint_whose_contents_changed_fails_its_checksum(root, tmp_path):
    """The zip is well-formed and every CRC holds, but one loss differs from what was written."""
    path = _ckpt(root)
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["losses"] = arrays["losses"] + 1
    changed = tmp_path / path.name
    np.savez(changed, **arrays)
    with pytest.raises(checkpoint.DamagedCheckpoint, match="do not match the checksum recorded"):
        checkpoint.read(changed)
    arrays["losses"] = arrays["losses"] - 1
    arrays["opt.count"] = arrays["opt.count"].reshape(1)           # the same bytes, another shape (the fuzz found it)
    np.savez(changed, **arrays)
    with pytest.raises(checkpoint.DamagedCheckpoint, match="do not match the checksum recorded"):
        checkpoint.read(changed)
    arrays_back, meta = checkpoint.read(path)                    # the original verifies
    assert meta["epoch"] == 1 and "sha256" not in meta
    np.testing.assert_array_equal(arrays_back["losses"], np.full(2, 0.5, np.float32))


# ---- config numbers -----------------------------------------------------------------------------------

BAD_NUMBERS = {
    "train.alpha": ["1e400", "-1e400", "nan", "inf", "0", "-0.5"],
    "train.momentum": ["nan", "inf", "-0.1", "1.0"],
    "train.batchsize": ["0", "-3", str(2 ** 31)],
    "train.numepochs": ["0", "-1", str(2 ** 40)],
    "train.seed": ["-1", str(2 ** 32)],
    "data.n_train": ["-1", str(2 ** 31)],
    "data.n_test": ["-5"],
    "checkpoint.every_steps": ["-1", str(2 ** 63)],
    "checkpoint.keep": ["0", "-2"],
}


@settings(max_examples=QUICK * 2)
@given(case=st.sampled_from([(k, v) for k, values in BAD_NUMBERS.items() for v in values]),
       in_file=st.booleans())
def test_non_finite_or_absurd_config_numbers_are_refused_naming_the_key(root, case, in_file):
    key, value = case
    section, name = key.split(".")
    if in_file:
        path = root / "out" / "numbers.toml"
        text = config.dumps(config.load("fashion_mnist")).replace(f"[{section}]\n", f"[{section}]\n{name} = {value}\n", 1)
        text = "\n".join(line for line in text.splitlines()            # drop the key's own line, keep ours
                         if not (line.startswith(f"{name} = ") and line != f"{name} = {value}")) + "\n"
        path.write_text(text)
        argv = ["train", path, "--out", root / "out" / "never"]
    else:
        argv = ["train", "fashion_mnist", "--set", f"{key}={value}", "--out", root / "out" / "never"]
    before = _digest(root)
    code, out, err = run_cli(argv)
    assert code == 2 and len(err.splitlines()) == 1 and f"{key}: " in err and not out, err
    assert _digest(root) == before


# ---- the real process: exit codes, and resume past a damaged checkpoint -----------------------------------

def _jaxcnn(*argv, cwd=REPO):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "jaxcnn", *map(str, argv)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_an_empty_mat_file_exits_2_in_one_line(tmp_path):
    (tmp_path / "empty.mat").write_bytes(b"")
    result = _jaxcnn("import-mat", tmp_path / "empty.mat", tmp_path / "net.npz")
    assert result.returncode == 2 and result.stderr.splitlines() == [
        f"jaxcnn: error: {tmp_path / 'empty.mat'}: empty file, not a MATLAB v4-v7 .mat file scipy can read"], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.mat"]


def test_a_mat_file_that_crashes_scipys_reader_is_one_line(tmp_path, capsys):
    """One byte of a toolbox .mat's struct header (found by this file's fuzz) makes scipy.io.loadmat crash the
    interpreter with a segmentation fault, which no except catches: jaxcnn reads .mat files in a child process."""
    from jaxcnn.layers import EXAMPLE_LAYERS

    toolbox.save_net(tmp_path / "cnn.mat", _numpy_net(EXAMPLE_LAYERS, 0))
    damaged = bytearray((tmp_path / "cnn.mat").read_bytes())
    damaged[380] = 179
    (tmp_path / "cnn.mat").write_bytes(damaged)
    bare = subprocess.run([sys.executable, "-c", f"import scipy.io; scipy.io.loadmat({str(tmp_path / 'cnn.mat')!r}, "
                                                 "struct_as_record=False)"], capture_output=True)
    assert cli.main(["import-mat", str(tmp_path / "cnn.mat"), str(tmp_path / "net.npz")]) == 2
    line = capsys.readouterr().err.splitlines()
    assert len(line) == 1 and str(tmp_path / "cnn.mat") in line[0], line
    if bare.returncode < 0:                          # scipy 1.17 here; a later scipy may refuse it cleanly instead
        assert f"scipy's MAT-file reader crashed on it (signal {-bare.returncode})" in line[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.mat"]


@pytest.mark.slow
def test_real_exit_codes_of_damaged_files(root, tmp_path):
    net = tmp_path / "net.npz"
    net.write_bytes(_flip((root / "run" / "net.npz").read_bytes(), 300))
    result = _jaxcnn("eval", net, "--data", root / "idx")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1 and str(net) in result.stderr, result.stderr
    result = _jaxcnn("train", "fashion_mnist", "--set", "train.alpha=1e400", "--out", tmp_path / "run")
    assert result.returncode == 2 and result.stderr.splitlines() == [
        "jaxcnn: error: train.alpha: must be a finite number, got inf"], result.stderr
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A real run to its end (test_reliability's settings: 3 epochs, checkpoints every 5 steps, the newest 2
    kept) and its record."""
    from tests.test_reliability import Job, _record

    out = tmp_path_factory.mktemp("finished") / "run"
    job = Job(out)
    assert job.wait() == 0, job.output
    return out, _record(out)


@pytest.mark.slow
def test_resume_skips_a_damaged_newest_checkpoint_and_equals_an_uninterrupted_run(tmp_path, finished_run):
    """The finished run's newest checkpoint loses a bit: the resume warns once naming it, sets it aside,
    continues from the one before, and ends bit for bit where the uninterrupted run ended. Then with every
    checkpoint damaged, the resume says so in one line, exits 2 and changes nothing."""
    from tests.test_reliability import _assert_same, _record, _resume

    out = tmp_path / "run"
    shutil.copytree(finished_run[0], out)
    older, newest = checkpoint.list_checkpoints(out)
    newest.write_bytes(_flip(newest.read_bytes(), newest.stat().st_size // 2))
    result = _resume(out)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"jaxcnn: warning: skipping damaged checkpoint {newest}: "), lines
    assert f"resuming from {older.name}" in result.stdout
    assert (newest.parent / (newest.name + ".damaged")).exists()
    _assert_same(_record(out), finished_run[1])
    for path in checkpoint.list_checkpoints(out):
        checkpoint.read(path)

    for path in checkpoint.list_checkpoints(out):
        path.write_bytes(path.read_bytes()[:100])
    before = _digest(out)
    result = _jaxcnn("train", "--resume", out, "--no-progress")
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "no good checkpoint to resume from" in lines[0], result.stderr
    assert all(path.name in lines[0] for path in checkpoint.list_checkpoints(out))
    assert _digest(out) == before
