"""The trained-net file: `net.npz`, readable by numpy alone.

Entries: `conv{i}.k` (kh, kw, C_in, C_out) and `conv{i}.b` (C_out,) for the i-th 'c' layer
(1-based), `ffW` (classes, fvnum), `ffb` (classes,), and `__meta__`, a JSON string with
{"format": "jaxcnn-net", "version": 1, "layers": [...toolbox tables...], "input_shape": [H, W, C],
"n_classes": K, "dtype": "float32" | "float64", "output": "sigmoid" | "softmax"}; layer tables carry
their `activation` / `pool` when not the toolbox's. Conventions are those of `jaxcnn.net` (natural
orientation, cross-correlation). A net loads in the dtype it was saved in (a float64 net turns on
JAX's x64 mode through `numerics.use_dtype`), so its values survive every command bit for bit.
A file that does not fit this (damaged bytes, a missing array, a shape, dtype or NaN/Inf that the
architecture does not allow) is refused as one `DamagedFile` line naming it.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .fileio import DamagedFile, load_npz, reading, save_npz
from .layers import layer_shapes, layers_to_dicts, parse_layers
from .net import Net
from .numerics import OUTPUTS, use_dtype

FORMAT, VERSION = "jaxcnn-net", 1


def net_arrays(net: Net) -> dict[str, np.ndarray]:
    arrays = {}
    for i, p in enumerate(net.params["conv"], start=1):
        arrays[f"conv{i}.k"], arrays[f"conv{i}.b"] = np.asarray(p["k"]), np.asarray(p["b"])
    arrays["ffW"], arrays["ffb"] = np.asarray(net.params["ffW"]), np.asarray(net.params["ffb"])
    return arrays


def net_meta(net: Net) -> dict:
    return {"format": FORMAT, "version": VERSION, "layers": layers_to_dicts(net.layers),
            "input_shape": list(net.input_shape), "n_classes": net.n_classes, "dtype": np.dtype(net.dtype).name,
            "output": net.output}


def save(path, net: Net) -> None:
    save_npz(path, net_arrays(net), net_meta(net))


def from_arrays(arrays: dict, meta: dict, where="net") -> Net:
    """Rebuild a Net, checking every array's shape, dtype and finiteness against the architecture in
    `meta`; anything that does not fit is a DamagedFile naming `where`."""
    with reading(where, FILE):
        return _from_arrays(arrays, meta, where)


FILE = "jaxcnn net file"


def _from_arrays(arrays, meta, where):
    if meta.get("format") != FORMAT:
        raise DamagedFile(where, f"not a {FILE} (format {meta.get('format')!r}, expected {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise DamagedFile(where, f"{FILE} version {meta.get('version')!r}, this jaxcnn reads version {VERSION}")
    layers = parse_layers(meta["layers"])
    input_shape = meta["input_shape"]
    if not isinstance(input_shape, list) or not all(type(d) is int for d in input_shape):
        raise DamagedFile(where, f"input_shape {input_shape!r} is not a list of integers")
    input_shape = tuple(input_shape)
    shapes = layer_shapes(layers, input_shape)
    if meta.get("dtype") not in (None, "float32", "float64"):
        raise DamagedFile(where, f"dtype {meta['dtype']!r} is not float32 or float64")
    dtype = use_dtype(meta.get("dtype") or (arrays["ffW"].dtype if "ffW" in arrays else "float32"))
    conv, n = [], 0
    for layer, (_, _, c_in), (_, _, c_out) in zip(layers[1:], shapes[:-1], shapes[1:]):
        if layer.type == "c":
            n += 1
            k = layer.kernelsize
            conv.append({"k": _take(arrays, f"conv{n}.k", (k, k, c_in, c_out), where, dtype),
                         "b": _take(arrays, f"conv{n}.b", (c_out,), where, dtype)})
    h, w, c = shapes[-1]
    classes = meta["n_classes"]
    if type(classes) is not int or classes < 1:
        raise DamagedFile(where, f"n_classes {classes!r} is not a positive integer")
    params = {"conv": conv, "ffW": _take(arrays, "ffW", (classes, h * w * c), where, dtype),
              "ffb": _take(arrays, "ffb", (classes,), where, dtype)}
    output = meta.get("output", "sigmoid")
    if output not in OUTPUTS:
        raise DamagedFile(where, f"unknown output layer {output!r} (expected {', '.join(OUTPUTS)})")
    return Net(params, layers, input_shape, classes, output)


def _take(arrays, key, shape, where, dtype):
    if key not in arrays:
        raise DamagedFile(where, f"missing array {key}")
    value = arrays[key]
    if value.shape != shape:
        raise DamagedFile(where, f"{key} has shape {value.shape}, the architecture needs {shape}")
    if value.dtype != np.dtype(dtype):
        raise DamagedFile(where, f"{key} is {value.dtype}, the net's dtype is {np.dtype(dtype).name}")
    bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
    if bad:
        raise DamagedFile(where, f"{key} holds {bad} non-finite value(s) (NaN or Inf)")
    return jnp.asarray(value, dtype)


def load(path) -> Net:
    """Read a net.npz; a damaged or inconsistent file is one DamagedFile naming it."""
    arrays, meta = load_npz(path, FILE)
    return from_arrays(arrays, meta, str(path))
