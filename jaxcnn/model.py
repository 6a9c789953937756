"""The toolbox CNN as pure functions over a plain pytree.

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
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from .layers import Conv, Layer, Pool, layer_shapes, parse_layers

HIGHEST = lax.Precision.HIGHEST


def float_dtype():
    """float64 when JAX's x64 mode is on, else float32: the dtype of every new net."""
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Net:
    """A network: `params` (the only traced data) and its static architecture.

    params = {"conv": [{"k": (kh, kw, C_in, C_out), "b": (C_out,)}, ...],   # one per 'c' layer
              "ffW": (classes, fvnum), "ffb": (classes,)}
    """

    params: dict
    layers: tuple[Layer, ...] = dataclasses.field(metadata=dict(static=True))
    input_shape: tuple[int, int, int] = dataclasses.field(metadata=dict(static=True))
    n_classes: int = dataclasses.field(metadata=dict(static=True))

    @property
    def dtype(self):
        return self.params["ffW"].dtype


def sigm(z):
    """The toolbox's `sigm`: 1 ./ (1 + exp(-z))."""
    return 1.0 / (1.0 + jnp.exp(-z))


def _normalise_input_shape(input_shape) -> tuple[int, int, int]:
    shape = tuple(int(d) for d in input_shape)
    return shape if len(shape) == 3 else (*shape, 1)


def init_net(key: jax.Array, layers, input_shape, n_classes: int, dtype=None) -> Net:
    """The toolbox's initialisation (`cnnsetup.m`), drawn from an explicit PRNG key.

    Kernels ~ U(±sqrt(6 / (fan_in + fan_out))) with fan_in = C_in·k², fan_out = C_out·k²;
    ffW ~ U(±sqrt(6 / (classes + fvnum))); all biases 0. `input_shape` is (H, W) or (H, W, C).
    """
    layers = parse_layers(layers)
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
    shapes = layer_shapes(layers, input_shape)
    dtype = dtype or float_dtype()
    keys = iter(jax.random.split(key, len(layers) + 1))
    conv = []
    for layer, (_, _, c_in), _ in zip(layers[1:], shapes[:-1], shapes[1:]):
        key_l = next(keys)
        if isinstance(layer, Conv):
            k, c_out = layer.kernelsize, layer.outputmaps
            bound = math.sqrt(6.0 / (c_in * k * k + c_out * k * k))
            kernel = jax.random.uniform(key_l, (k, k, c_in, c_out), dtype, -bound, bound)
            conv.append({"k": kernel, "b": jnp.zeros((c_out,), dtype)})
    h, w, maps = shapes[-1]
    fvnum = h * w * maps
    bound = math.sqrt(6.0 / (n_classes + fvnum))
    ffW = jax.random.uniform(next(keys), (n_classes, fvnum), dtype, -bound, bound)
    params = {"conv": conv, "ffW": ffW, "ffb": jnp.zeros((n_classes,), dtype)}
    return Net(params, layers, _normalise_input_shape(input_shape), n_classes)


def count_params(net: Net) -> int:
    """Number of trainable scalars."""
    return sum(int(x.size) for x in jax.tree.leaves(net.params))


def as_nhwc(net: Net, images) -> jax.Array:
    """Check `images` against the net's input and return them as (N, H, W, C) in the net's dtype."""
    images = jnp.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[1:] != net.input_shape:
        raise ValueError(f"images must be (N, H, W) or (N, H, W, C) with (H, W, C) = {net.input_shape}, "
                         f"got shape {images.shape}")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(f"images must be floating point (scale uint8 pixels by 1/255), got {images.dtype}")
    return images.astype(net.dtype)


def mean_pool(a, scale: int):
    """Mean over non-overlapping scale×scale blocks, by reshape-and-mean. (N,H,W,C) -> (N,H/s,W/s,C)."""
    n, h, w, c = a.shape
    return a.reshape(n, h // scale, scale, w // scale, scale, c).mean(axis=(2, 4))


def conv_valid(a, k):
    """'valid' cross-correlation, (N,H,W,C_in) * (kh,kw,C_in,C_out) -> (N,H-kh+1,W-kw+1,C_out)."""
    return lax.conv_general_dilated(a, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision=HIGHEST)


def feature_vector(a):
    """Flatten the last maps in the toolbox's `fv` order: map by map, each row-major. (N,h,w,C) -> (N, C·h·w)."""
    return a.transpose(0, 3, 1, 2).reshape(a.shape[0], -1)


def forward_nhwc(params: dict, layers, x):
    """`cnnff.m` on (N, H, W, C) inputs; returns the outputs `o` (N, classes)."""
    a = x
    conv = iter(params["conv"])
    for layer in layers[1:]:
        if isinstance(layer, Conv):
            p = next(conv)
            a = sigm(conv_valid(a, p["k"]) + p["b"])              # (N, H-k+1, W-k+1, outputmaps)
        elif isinstance(layer, Pool):
            a = mean_pool(a, layer.scale)                       # (N, H/s, W/s, maps)
    fv = feature_vector(a)                                      # (N, fvnum)
    return sigm(jnp.dot(fv, params["ffW"].T, precision=HIGHEST) + params["ffb"])   # (N, classes)


def predict(net: Net, images) -> jax.Array:
    """The network's outputs `o` for a batch of images: (N, classes), each in (0, 1).

    Computed by `jaxcnn.fast.forward` (im2col, channel-major; the same values as `forward_nhwc`, faster on CPU)."""
    return _predict(net, as_nhwc(net, images))


@jax.jit
def _predict(net, x):
    from .fast import forward

    return forward(net.params, net.layers, x)


def mse_loss(o, targets):
    """The toolbox's loss `L = ½·Σ(o − y)² / N` (`cnnbp.m`: 1/2* sum(net.e(:) .^ 2) / size(net.e, 2))."""
    if o.shape != targets.shape:
        raise ValueError(f"outputs {o.shape} and targets {targets.shape} differ in shape")
    return 0.5 * jnp.sum((o - targets) ** 2) / o.shape[0]


def loss(net: Net, images, targets):
    """L for a batch; `images` already (N, H, W, C) in the net's dtype or convertible to it."""
    return mse_loss(forward_nhwc(net.params, net.layers, images), targets)


def loss_and_grad(net: Net, images, targets) -> tuple[jax.Array, Any]:
    """(L, dL/dnet) for a batch; the gradient is a `Net` whose params hold the derivatives."""
    x = as_nhwc(net, images)
    targets = jnp.asarray(targets, net.dtype)
    return _loss_and_grad(net, x, targets)


_loss_and_grad = jax.jit(jax.value_and_grad(loss))
