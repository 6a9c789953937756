"""The original toolbox's reference values, from the full `.mat` file or the compact copy the package ships.

`../shared/golden/toolbox_golden.mat` (made by DeepLearnToolbox under GNU Octave; its README gives the
layout) holds more than the checks read (every layer's activations and deltas, say). `golden.npz`,
beside this file, holds what `jaxcnn.toolbox.struct_to_dict` reads of it, and nothing rounded: every float64 as Octave saved it, except the images, which are k/255 for bytes k
and are stored as those bytes (`train_x500`; the first batch `x`, `y` is its first 50 columns).
`build` makes it and proves, value by value, that it gives back what the `.mat` file gives.

`load(path)` returns the same dict from either file:
  cnn_init, cnn_grads, cnn_after, gc_init, gc_grads   toolbox net dicts (`jaxcnn.toolbox.struct_to_dict`)
  train_x500 (28, 28, 500), train_y500 (10, 500), x, y (the first batch of 50), Ls (10,), gx, gy
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from jaxcnn import toolbox
from jaxcnn.fileio import atomic_write_bytes, reading

PACKAGED = Path(__file__).resolve().with_name("golden.npz")
STRUCTS = ("cnn_init", "cnn_grads", "cnn_after", "gc_init", "gc_grads")
ARRAYS = ("train_y500", "Ls", "gx", "gy")
FIRST_BATCH = 50


def default_path() -> Path:
    return PACKAGED


def from_mat(path) -> dict:
    """The reference values from the full `.mat` file."""
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"golden file {path} not found")
    mat = scipy.io.loadmat(path, struct_as_record=False)
    missing = [k for k in (*STRUCTS, *ARRAYS, "train_x500", "x", "y") if k not in mat]
    if missing:
        raise ValueError(f"{path}: not the toolbox golden file (missing {', '.join(missing)})")
    golden = {name: toolbox.struct_to_dict(mat[name][0, 0], name) for name in STRUCTS}
    golden.update({name: np.asarray(mat[name], np.float64) for name in (*ARRAYS, "train_x500", "x", "y")})
    return golden


def _compact(golden: dict) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, skeleton): every array leaf named by its place, the rest kept in a JSON skeleton."""
    arrays = {}

    def walk(value, name):
        if isinstance(value, dict):
            return {k: walk(v, f"{name}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{name}.{i}") for i, v in enumerate(value)]
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return value
        arrays[name] = np.asarray(value, np.float64)
        return {"array": name, "float": isinstance(value, float)}

    skeleton = {name: walk(golden[name], name) for name in (*STRUCTS, *ARRAYS)}
    images = np.round(golden["train_x500"] * 255)
    arrays["train_x500_bytes"] = images.astype(np.uint8)
    return arrays, skeleton


def _expand(arrays: dict, skeleton: dict) -> dict:
    def walk(value):
        if isinstance(value, dict) and "array" in value:
            array = arrays[value["array"]]
            return float(array) if value["float"] else array
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    golden = {name: walk(skeleton[name]) for name in skeleton}
    golden["train_x500"] = arrays["train_x500_bytes"].astype(np.float64) / 255
    golden["x"] = golden["train_x500"][:, :, :FIRST_BATCH]
    golden["y"] = golden["train_y500"][:, :FIRST_BATCH]
    return golden


def from_npz(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"golden file {path} not found")
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as f:    # np.load(path) leaks it if damaged
        arrays = {k: f[k] for k in f.files}
    return _expand(arrays, json.loads(str(arrays.pop("skeleton"))))


def load(path=None) -> dict:
    """The reference values from `path` (the full `.mat` or a compact `.npz`; default: the packaged copy).
    A damaged or foreign file is one DamagedFile naming it (`jaxcnn.fileio.reading`)."""
    from scipy.io.matlab import MatReadError

    path = Path(path) if path else default_path()
    with reading(path, "toolbox golden file (.mat) or compact copy (.npz)", also=(MatReadError,)):
        return from_mat(path) if path.suffix == ".mat" else from_npz(path)


def differences(a, b, name="") -> list[str]:
    """Where two golden dicts (or parts of them) differ: types, shapes, or any bit of any value."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{name}: keys {sorted(a)} != {sorted(b)}"]
        return [d for k in a for d in differences(a[k], b[k], f"{name}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{name}: {len(a)} items != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{name}.{i}")]
    if isinstance(a, str) or isinstance(b, str):
        return [] if a == b else [f"{name}: {a!r} != {b!r}"]
    x, y = np.asarray(a), np.asarray(b)
    if x.shape != y.shape or x.dtype != y.dtype:
        return [f"{name}: {x.dtype}{list(x.shape)} != {y.dtype}{list(y.shape)}"]
    return [] if np.array_equal(x, y) else [f"{name}: values differ"]


def build(mat_path, out_path=PACKAGED) -> int:
    """Write the compact copy of `mat_path` to `out_path`, after checking that it gives back every value
    the checks read from the full file, bit for bit. Returns its size in bytes."""
    full = from_mat(mat_path)
    arrays, skeleton = _compact(full)
    diff = differences(_expand(arrays, skeleton), full)
    if diff:
        raise ValueError(f"the compact golden would differ from {mat_path}: " + "; ".join(diff[:5]))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, skeleton=np.array(json.dumps(skeleton)), **arrays)
    atomic_write_bytes(out_path, buffer.getvalue())
    return len(buffer.getvalue())
