"""The trained-net file: `net.npz`, readable by numpy alone.

Entries: `conv{i}.k` (kh, kw, C_in, C_out) and `conv{i}.b` (C_out,) for the i-th 'c' layer
(1-based), `ffW` (classes, fvnum), `ffb` (classes,), and `__meta__`, a JSON string with
{"format": "jaxcnn-net", "version": 1, "layers": [...toolbox tables...], "input_shape": [H, W, C],
"n_classes": K, "dtype": "float32" | "float64", "output": "sigmoid" | "softmax"}; layer tables carry
their `activation` / `pool` when not the toolbox's. Conventions are those of `jaxcnn.net` (natural
orientation, cross-correlation). A net loads in the dtype it was saved in (a float64 net turns on
JAX's x64 mode through `numerics.use_dtype`), so its values survive every command bit for bit.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .fileio import load_npz, save_npz
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
    """Rebuild a Net, checking every array's shape against the architecture in `meta`."""
    if meta.get("format") != FORMAT:
        raise ValueError(f"{where}: not a jaxcnn net file (format {meta.get('format')!r})")
    layers = parse_layers(meta["layers"])
    input_shape = tuple(meta["input_shape"])
    shapes = layer_shapes(layers, input_shape)
    dtype = use_dtype(meta.get("dtype") or (arrays["ffW"].dtype if "ffW" in arrays else "float32"))
    conv, n = [], 0
    for layer, (_, _, c_in), (_, _, c_out) in zip(layers[1:], shapes[:-1], shapes[1:]):
        if layer.type == "c":
            n += 1
            k = layer.kernelsize
            conv.append({"k": _take(arrays, f"conv{n}.k", (k, k, c_in, c_out), where, dtype),
                         "b": _take(arrays, f"conv{n}.b", (c_out,), where, dtype)})
    h, w, c = shapes[-1]
    classes = int(meta["n_classes"])
    params = {"conv": conv, "ffW": _take(arrays, "ffW", (classes, h * w * c), where, dtype),
              "ffb": _take(arrays, "ffb", (classes,), where, dtype)}
    output = meta.get("output", "sigmoid")
    if output not in OUTPUTS:
        raise ValueError(f"{where}: unknown output layer {output!r} (expected {', '.join(OUTPUTS)})")
    return Net(params, layers, input_shape, classes, output)


def _take(arrays, key, shape, where, dtype):
    if key not in arrays:
        raise ValueError(f"{where}: missing array {key}")
    if arrays[key].shape != shape:
        raise ValueError(f"{where}: {key} has shape {arrays[key].shape}, the architecture needs {shape}")
    return jnp.asarray(arrays[key], dtype)


def load(path) -> Net:
    arrays, meta = load_npz(path)
    return from_arrays(arrays, meta, str(path))
