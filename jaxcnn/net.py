"""A network as data: the `Net` pytree, the toolbox's initialisation, and the input check.

Conventions (all arrays in natural orientation, as stored in IDX files):
  images  (N, H, W) or (N, H, W, C), float;  targets (N, classes)
  conv kernels `k`  (kh, kw, C_in, C_out), applied as a cross-correlation (HWIO, NHWC)
  the feature vector `fv` stacks the last maps map by map, each flattened row-major, which is
  exactly the toolbox's order, so `ffW` (classes, fvnum) means the same thing in both programs.
`jaxcnn.toolbox` converts to and from the toolbox's transposed, true-convolution layout.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from .layers import Conv, Layer, layer_shapes, parse_layers
from .numerics import OUTPUTS, default_dtype


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Net:
    """A network: `params` (the only traced data) and its static architecture.

    params = {"conv": [{"k": (kh, kw, C_in, C_out), "b": (C_out,)}, ...],   # one per 'c' layer
              "ffW": (classes, fvnum), "ffb": (classes,)}
    `output` is the output layer: "sigmoid" (the toolbox's, with L = ½·Σe²/N) or "softmax" (cross-entropy).
    """

    params: dict
    layers: tuple[Layer, ...] = dataclasses.field(metadata=dict(static=True))
    input_shape: tuple[int, int, int] = dataclasses.field(metadata=dict(static=True))
    n_classes: int = dataclasses.field(metadata=dict(static=True))
    output: str = dataclasses.field(default="sigmoid", metadata=dict(static=True))

    @property
    def dtype(self):
        return self.params["ffW"].dtype


def normalise_input_shape(input_shape) -> tuple[int, int, int]:
    """(H, W) or (H, W, C) -> (H, W, C)."""
    shape = tuple(int(d) for d in input_shape)
    return shape if len(shape) == 3 else (*shape, 1)


INITS = ("toolbox", "he")


def init_net(key: jax.Array, layers, input_shape, n_classes: int, dtype=None, *, output: str = "sigmoid",
             init: str = "toolbox") -> Net:
    """The toolbox's initialisation (`cnnsetup.m`), drawn from an explicit PRNG key.

    Kernels ~ U(±sqrt(6 / (fan_in + fan_out))) with fan_in = C_in·k², fan_out = C_out·k²;
    ffW ~ U(±sqrt(6 / (classes + fvnum))); all biases 0. `init="he"` draws kernels ~ U(±sqrt(6 / fan_in))
    and ffW ~ U(±sqrt(6 / fvnum)) instead (He's uniform, for ReLU nets). `input_shape` is (H, W) or
    (H, W, C). `dtype` defaults to float64 when JAX's x64 mode is on, else float32.
    """
    layers = parse_layers(layers)
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    shapes = layer_shapes(layers, input_shape)
    dtype = dtype or default_dtype()
    keys = iter(jax.random.split(key, len(layers) + 1))
    conv = []
    for layer, (_, _, c_in) in zip(layers[1:], shapes[:-1]):
        key_l = next(keys)
        if isinstance(layer, Conv):
            k, c_out = layer.kernelsize, layer.outputmaps
            fan = c_in * k * k + (c_out * k * k if init == "toolbox" else 0)
            bound = math.sqrt(6.0 / fan)
            kernel = jax.random.uniform(key_l, (k, k, c_in, c_out), dtype, -bound, bound)
            conv.append({"k": kernel, "b": jnp.zeros((c_out,), dtype)})
    h, w, maps = shapes[-1]
    fvnum = h * w * maps
    bound = math.sqrt(6.0 / (fvnum + (n_classes if init == "toolbox" else 0)))
    ffW = jax.random.uniform(next(keys), (n_classes, fvnum), dtype, -bound, bound)
    params = {"conv": conv, "ffW": ffW, "ffb": jnp.zeros((n_classes,), dtype)}
    return Net(params, layers, normalise_input_shape(input_shape), n_classes, output)


def count_params(net: Net) -> int:
    """Number of trainable scalars."""
    return sum(int(x.size) for x in jax.tree.leaves(net.params))


def checked_images(net: Net, images) -> jax.Array:
    """Check `images` against the net's input: (N, H, W) or (N, H, W, C) as given, in the net's dtype.

    Not reshaped here: outside a compiled program a reshape copies the array (10,000 test images: 3 - 5 ms),
    inside one it is free, so `evaluate` and `predict` reshape where they compute."""
    images = jnp.asarray(images)
    h, w, c = net.input_shape
    if images.ndim not in (3, 4) or images.shape[1:] != ((h, w) if images.ndim == 3 else (h, w, c)) or (
            images.ndim == 3 and c != 1):
        raise ValueError(f"images must be (N, H, W) or (N, H, W, C) with (H, W, C) = {net.input_shape}, "
                         f"got shape {images.shape}")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(f"images must be floating point (scale uint8 pixels by 1/255), got {images.dtype}")
    return images.astype(net.dtype)


def as_nhwc(net: Net, images) -> jax.Array:
    """Check `images` against the net's input and return them as (N, H, W, C) in the net's dtype."""
    images = checked_images(net, images)
    return images if images.ndim == 4 else images[..., None]


def as_targets(net: Net, targets, n: int) -> jax.Array:
    """Check `targets` against the batch and the net's output layer: (N, classes) in the net's dtype.

    Softmax/cross-entropy targets must be a probability distribution per sample: entries ≥ 0, each
    row summing to 1 within `target_sum_tolerance` (the fast path's output delta od = o − y is N·dL/dz
    only then; in general it is o·Σy − y). Sigmoid/MSE targets may be any finite numbers. The check
    reads concrete values, so it runs before jit, never inside a compiled program.
    """
    if isinstance(targets, jax.core.Tracer):
        raise TypeError("targets are checked on concrete values: call this outside jax.jit/vmap/grad")
    targets = jnp.asarray(targets, net.dtype)
    if targets.shape != (n, net.n_classes):
        raise ValueError(f"targets must be (N, classes) = ({n}, {net.n_classes}), got {tuple(targets.shape)}")
    problem = target_problem(np.asarray(targets), net.output)
    if problem:
        raise ValueError(problem)
    return targets


def target_sum_tolerance(n_classes: int, dtype) -> float:
    """How far a softmax target row's sum may be from 1: n_classes·eps of `dtype`, the rounding that
    n_classes entries of a true distribution can carry in that dtype."""
    return n_classes * float(np.finfo(dtype).eps)


def target_problem(targets: np.ndarray, output: str) -> str:
    """What is wrong with (N, classes) `targets` for the `output` layer, naming the first bad row; '' if nothing."""
    finite = np.isfinite(targets)
    sums = targets.sum(axis=1, dtype=np.float64)
    tolerance = target_sum_tolerance(targets.shape[1], targets.dtype)
    if output == "softmax":
        bad = ~finite.all(axis=1) | (targets < 0).any(axis=1) | ~(np.abs(sums - 1) <= tolerance)
    else:
        bad = ~finite.all(axis=1)
    if not bad.any():
        return ""
    row = int(np.flatnonzero(bad)[0])
    values = targets[row]
    if not finite[row].all():
        column = int(np.flatnonzero(~finite[row])[0])
        return f"targets row {row} holds {float(values[column])} in column {column}: targets must be finite"
    if (values < 0).any():
        column = int(np.flatnonzero(values < 0)[0])
        what = f"holds {float(values[column])!r} in column {column}"
    else:
        what = f"sums to {float(sums[row])!r}"
    return (f"targets row {row} {what}: softmax/cross-entropy targets must be a probability distribution "
            f"per sample (entries >= 0, summing to 1 within {tolerance:.1e})")
