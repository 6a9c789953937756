"""The bridge to DeepLearnToolbox: read and write its `cnn` struct (MATLAB/Octave `save -v7`).

The toolbox keeps every image transposed (`reshape(train_x', 28, 28, N)`), convolves with
`convn(a, k, 'valid')` (a true convolution: the kernel is flipped), and flattens `fv` map by map,
column-major. In natural orientation a true convolution of transposed maps is a cross-correlation
of the untransposed maps with kernel `rot180(k)ᵀ`, so

    jaxcnn  k[:, :, i, j] = rot180(k{i}{j})ᵀ,   b[j] = b{j},   ffW = ffW,   ffb = ffb(:)

and `fv`'s order needs no change (column-major over a transposed map is row-major over the
natural one). The same linear map carries gradients (`dk`, `db`, `dffW`, `dffb`).

A toolbox net in Python is a dict mirroring the struct: {"layers": [{"type": "c", "outputmaps": 6,
"kernelsize": 5, "k": [[k11, ...], ...] (k[i][j]), "b": [b1, ...]}, {"type": "s", "scale": 2}, ...],
"ffW": (classes, fvnum), "ffb": (classes, 1)}.
"""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .layers import Conv, Input, Pool, layer_shapes, options
from .net import Net
from .numerics import use_dtype


def rot180(x):
    return np.asarray(x)[::-1, ::-1]


def kernel_from_toolbox(k_ij):
    """toolbox k{i}{j} (kh, kw) -> jaxcnn k[:, :, i, j]."""
    return rot180(k_ij).T


def kernel_to_toolbox(k):
    """jaxcnn k[:, :, i, j] -> toolbox k{i}{j}."""
    return rot180(np.asarray(k).T)


def images_from_matlab(x) -> np.ndarray:
    """Toolbox images H×W×N (each slice transposed) -> natural N×H×W."""
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"toolbox images must be H x W x N, got shape {x.shape}")
    return np.ascontiguousarray(x.transpose(2, 1, 0))


def images_to_matlab(images) -> np.ndarray:
    """Natural N×H×W -> toolbox H×W×N."""
    return np.ascontiguousarray(np.asarray(images).transpose(2, 1, 0))


def toolbox_input(images) -> list:
    """Natural (N, H, W[, C]) images -> the toolbox's input maps a{1..C}, each H×W×N transposed (float64)."""
    images = np.asarray(images, np.float64)
    if images.ndim == 3:
        images = images[..., None]
    return [images_to_matlab(images[..., c]) for c in range(images.shape[-1])]


def targets_from_matlab(y) -> np.ndarray:
    """Toolbox targets C×N -> N×C."""
    return np.ascontiguousarray(np.asarray(y).T)


def from_toolbox(tb: dict, input_shape=None, dtype=None) -> Net:
    """A toolbox net dict -> Net. `input_shape` (H, W[, C]) defaults to the square input that
    makes `ffW`'s width come out (the struct does not record the image size). `dtype` defaults to
    float64, the toolbox's own precision."""
    layers = []
    for l, layer in enumerate(tb["layers"], start=1):
        kind = layer.get("type")
        if kind == "i":
            layers.append(Input())
        elif kind == "c":
            layers.append(Conv(int(layer["outputmaps"]), int(layer["kernelsize"]), layer.get("activation", "sigmoid")))
        elif kind == "s":
            layers.append(Pool(int(layer["scale"]), layer.get("pool", "mean")))
        else:
            raise ValueError(f"toolbox net: layer {l} has unknown type {kind!r}")
    layers = tuple(layers)
    ffW = np.asarray(tb["ffW"], dtype=np.float64)
    if input_shape is None:
        input_shape = _infer_input_shape(tb, layers, ffW.shape[1])
    shapes = layer_shapes(layers, input_shape)
    h, w, c = shapes[-1]
    if ffW.shape[1] != h * w * c:
        raise ValueError(f"toolbox net: ffW is {ffW.shape[0]}x{ffW.shape[1]}, but input {tuple(input_shape)} "
                         f"gives a feature vector of {h * w * c}")
    dtype = use_dtype(dtype or "float64")
    conv = []
    for l, (layer, spec, (_, _, c_in)) in enumerate(zip(tb["layers"][1:], layers[1:], shapes[:-1]), start=2):
        if isinstance(spec, Conv):
            k = np.stack([np.stack([kernel_from_toolbox(layer["k"][i][j]) for j in range(spec.outputmaps)], -1)
                          for i in range(c_in)], -2)
            if k.shape != (spec.kernelsize, spec.kernelsize, c_in, spec.outputmaps):
                raise ValueError(f"toolbox net: layer {l} kernels do not fit its kernelsize/maps")
            conv.append({"k": jnp.asarray(k, dtype), "b": jnp.asarray(np.ravel(layer["b"]), dtype)})
    params = {"conv": conv, "ffW": jnp.asarray(ffW, dtype), "ffb": jnp.asarray(np.ravel(tb["ffb"]), dtype)}
    return Net(params, layers, tuple(shapes[0]), int(ffW.shape[0]), tb.get("output", "sigmoid"))


def _infer_input_shape(tb, layers, fvnum):
    maps = None
    for layer in tb["layers"]:
        if layer.get("type") == "c":
            maps = int(layer["outputmaps"])
    first = next((layer for layer in tb["layers"] if layer.get("type") == "c"), None)
    channels = len(first["k"]) if first is not None else 1
    maps = maps or channels
    side = int(round(np.sqrt(fvnum / maps)))
    if side * side * maps != fvnum:
        raise ValueError(f"toolbox net: cannot infer the input size from ffW width {fvnum}; pass input_shape")
    for layer in reversed(layers[1:]):
        side = side * layer.scale if isinstance(layer, Pool) else side + layer.kernelsize - 1
    return (side, side, channels)


def check_representable(net: Net) -> None:
    """Refuse, naming the option, a net that the toolbox's cnnff/cnnbp cannot run (sigm, mean pooling, sigm output)."""
    for l, layer in enumerate(net.layers, start=1):
        for name, value in options(layer).items():
            raise ValueError(f"the toolbox cannot represent this net: layer {l} has {name} = {value!r} "
                             f"(DeepLearnToolbox has sigmoid convolutions and mean pooling only)")
    if net.output != "sigmoid":
        raise ValueError(f"the toolbox cannot represent this net: output = {net.output!r} "
                         f"(DeepLearnToolbox has a sigmoid output with the squared error only)")


def to_toolbox(net: Net, with_options: bool = False) -> dict:
    """Net -> toolbox net dict (float64 numpy arrays), ready for `cnnff`/`cnnbp` or a .mat file.

    A net with layer options the toolbox lacks is refused (`check_representable`), unless
    `with_options`: then its dicts carry `activation` / `pool` per layer and `output`, for the
    delta rule of `jaxcnn.verification.backprop`, which knows them."""
    if not with_options:
        check_representable(net)
    shapes = layer_shapes(net.layers, net.input_shape)
    layers, conv = [], iter(net.params["conv"])
    maps = net.input_shape[2]
    for spec, (_, _, c_out) in zip(net.layers, shapes):
        if isinstance(spec, Input):
            layers.append({"type": "i"})
        elif isinstance(spec, Conv):
            p = next(conv)
            k = np.asarray(p["k"], np.float64)
            layers.append({"type": "c", "outputmaps": spec.outputmaps, "kernelsize": spec.kernelsize,
                           "k": [[kernel_to_toolbox(k[:, :, i, j]) for j in range(c_out)] for i in range(maps)],
                           "b": [float(v) for v in np.asarray(p["b"], np.float64)], **options(spec)})
        else:
            layers.append({"type": "s", "scale": spec.scale, "b": [0.0] * maps, **options(spec)})
        maps = c_out
    tb = {"layers": layers, "ffW": np.asarray(net.params["ffW"], np.float64),
          "ffb": np.asarray(net.params["ffb"], np.float64).reshape(-1, 1)}
    return {**tb, "output": net.output} if net.output != "sigmoid" else tb


def grads_from_toolbox(tb: dict, like: Net) -> Net:
    """The toolbox's `dk`, `db`, `dffW`, `dffb` as a Net-shaped gradient (same map as the weights)."""
    renamed = {"layers": [dict(layer, k=layer.get("dk"), b=layer.get("db")) if layer.get("type") == "c" else layer
                          for layer in tb["layers"]], "ffW": tb["dffW"], "ffb": tb["dffb"], "output": like.output}
    return from_toolbox(renamed, like.input_shape, like.dtype)


# ---- .mat files ---------------------------------------------------------------------------------

def _field(obj, name, where):
    if name not in obj._fieldnames:
        raise ValueError(f"{where}: not a toolbox cnn struct (no field '{name}')")
    return getattr(obj, name)


def _cell(x):
    """A MATLAB cell (1×n or n×1 object array) as a Python list."""
    return list(np.asarray(x, dtype=object).ravel())


def _scalar_str(x):
    return str(np.asarray(x).ravel()[0]) if np.asarray(x).size else ""


def struct_to_dict(cnn, where="cnn") -> dict:
    """A `cnn` struct from scipy.io.loadmat(struct_as_record=False) -> toolbox net dict."""
    layers = []
    for l, cell in enumerate(_cell(_field(cnn, "layers", where)), start=1):
        layer = np.asarray(cell).ravel()[0]
        where_l = f"{where}.layers{{{l}}}"
        kind = _scalar_str(_field(layer, "type", where_l))
        entry = {"type": kind}
        if kind == "c":
            entry["outputmaps"] = int(np.asarray(_field(layer, "outputmaps", where_l)).ravel()[0])
            entry["kernelsize"] = int(np.asarray(_field(layer, "kernelsize", where_l)).ravel()[0])
            entry["k"] = [[np.asarray(kij, np.float64) for kij in _cell(ki)] for ki in _cell(_field(layer, "k", where_l))]
            entry["b"] = [float(np.asarray(bj).ravel()[0]) for bj in _cell(_field(layer, "b", where_l))]
            for name in ("dk", "db"):
                if name in layer._fieldnames:
                    value = getattr(layer, name)
                    entry[name] = ([[np.asarray(x, np.float64) for x in _cell(row)] for row in _cell(value)]
                                   if name == "dk" else [float(np.asarray(x).ravel()[0]) for x in _cell(value)])
        elif kind == "s":
            entry["scale"] = int(np.asarray(_field(layer, "scale", where_l)).ravel()[0])
        elif kind != "i":
            raise ValueError(f"{where_l}: unknown layer type {kind!r}")
        layers.append(entry)
    out = {"layers": layers, "ffW": np.asarray(_field(cnn, "ffW", where), np.float64),
           "ffb": np.asarray(_field(cnn, "ffb", where), np.float64)}
    for name in ("dffW", "dffb", "o", "L", "fv"):
        if name in cnn._fieldnames:
            out[name] = np.asarray(getattr(cnn, name), np.float64)
    return out


MAT_FILE = "MATLAB v4-v7 .mat file scipy can read"


_LOADMAT_CHILD = """
import pickle, sys
import scipy.io
path, options = pickle.loads(sys.stdin.buffer.read())
try:
    result = ("ok", scipy.io.loadmat(path, **options))
except BaseException as err:
    result = ("raised", err)
sys.stdout.buffer.write(pickle.dumps(result))
"""


def load_mat_file(path, **options) -> dict:
    """scipy.io.loadmat(path), any failure on damaged bytes (an empty file included) one DamagedFile naming it.

    scipy's MAT reader can crash the interpreter (a segmentation fault) on damaged bytes, which no `except`
    catches, so it runs in a child process; a child killed by a signal means the file is damaged."""
    import pickle
    import subprocess
    import sys

    from scipy.io.matlab import MatReadError

    from .fileio import DamagedFile, reading

    with reading(path, MAT_FILE, also=(MatReadError, NotImplementedError)):
        if Path(path).stat().st_size == 0:
            raise DamagedFile(path, f"empty file, not a {MAT_FILE}")
        child = subprocess.run([sys.executable, "-c", _LOADMAT_CHILD], input=pickle.dumps((str(path), options)),
                               capture_output=True)
        if child.returncode < 0:
            raise DamagedFile(path, f"scipy's MAT-file reader crashed on it (signal {-child.returncode}): "
                                    f"damaged, not a {MAT_FILE}")
        if child.returncode != 0 or not child.stdout:
            raise DamagedFile(path, f"could not be read as a {MAT_FILE} "
                                    f"({child.stderr.decode(errors='replace').strip().splitlines()[-1:] or ['no output']})")
        status, value = pickle.loads(child.stdout)
        if status == "raised" and isinstance(value, OSError):          # no such file, a folder, permissions
            raise value
        if status == "raised":                  # anything scipy raised parsing the bytes (an UnboundLocalError too)
            detail = str(value).strip() or type(value).__name__
            raise DamagedFile(path, f"damaged or not a {MAT_FILE} ({type(value).__name__}: {detail[:300]})")
        return value


def read_struct(path, var="cnn"):
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    mat = load_mat_file(path, struct_as_record=False)
    if var not in mat:
        names = ", ".join(k for k in mat if not k.startswith("__")) or "none"
        raise ValueError(f"{path}: no variable '{var}' (variables: {names})")
    value = np.asarray(mat[var])
    if value.dtype != object or value.size != 1 or not hasattr(value.ravel()[0], "_fieldnames"):
        raise ValueError(f"{path}: variable '{var}' is not a struct")
    return value.ravel()[0]


def load_net(path, var="cnn", input_shape=None) -> Net:
    """Read a toolbox `cnn` struct saved by MATLAB or Octave (`save -v7`) as a Net.

    Extra fields (a, d, rL, o, ...) are ignored. The net is float64, as the toolbox's own numbers are.
    A struct whose fields do not make a net (cells of the wrong size, NaN or Inf weights) is one
    DamagedFile naming the file.
    """
    from .fileio import DamagedFile, reading

    struct = read_struct(path, var)
    with reading(path, f"toolbox cnn struct in '{var}'"):
        net = from_toolbox(struct_to_dict(struct, f"{path}:{var}"), input_shape)
    for name, leaf in jax.tree_util.tree_leaves_with_path(net.params):
        if not np.isfinite(np.asarray(leaf)).all():
            raise DamagedFile(path, f"{var}: {jax.tree_util.keystr(name)} holds non-finite weights (NaN or Inf)")
    return net


def _object_row(items):
    cell = np.empty((1, len(items)), dtype=object)
    for i, item in enumerate(items):
        cell[0, i] = item
    return cell


def save_net(path, net: Net, var="cnn") -> None:
    """Write `net` as a toolbox `cnn` struct (MATLAB v5 format) that `cnnff`/`cnntest` accept."""
    import scipy.io

    from .fileio import atomic_write_bytes

    tb = to_toolbox(net)
    layers = np.empty((len(tb["layers"]), 1), dtype=object)
    for l, layer in enumerate(tb["layers"]):
        entry = {"type": layer["type"]}
        if layer["type"] == "c":
            entry.update(outputmaps=float(layer["outputmaps"]), kernelsize=float(layer["kernelsize"]),
                         k=_object_row([_object_row(row) for row in layer["k"]]),
                         b=_object_row([np.float64(b) for b in layer["b"]]))
        elif layer["type"] == "s":
            entry.update(scale=float(layer["scale"]), b=_object_row([np.float64(b) for b in layer["b"]]))
        layers[l, 0] = entry
    import io

    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {var: {"layers": layers, "ffW": tb["ffW"], "ffb": tb["ffb"]}}, format="5",
                     oned_as="column")
    atomic_write_bytes(Path(path), buffer.getvalue())
