"""The reference model: `cnnff.m` as plain JAX, differentiated by `jax.grad`.

`lax.conv` for the convolutions, reshape-and-mean (or reshape-and-take-the-first-maximum) for the
pooling, the output layer's loss, autodiff for the gradient: the definition every faster or
hand-derived formulation is tested against.
Array conventions are `jaxcnn.net`'s (natural orientation, NHWC maps, HWIO cross-correlation kernels).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from .layers import Conv, Pool
from .net import Net, as_nhwc, as_targets
from .numerics import HIGHEST, activate, output_and_loss


def mean_pool(a, scale: int):
    """Mean over non-overlapping scale×scale blocks, by reshape-and-mean. (N,H,W,C) -> (N,H/s,W/s,C)."""
    n, h, w, c = a.shape
    return a.reshape(n, h // scale, scale, w // scale, scale, c).mean(axis=(2, 4))


def max_pool(a, scale: int):
    """Max over non-overlapping scale×scale blocks. (N,H,W,C) -> (N,H/s,W/s,C).

    Each block's value is taken from its first maximum in row-major window order (as PyTorch does), by
    an explicit argmax, so that the gradient sends the whole delta to that one element (`jnp.max`'s
    would split it among ties)."""
    n, h, w, c = a.shape
    windows = a.reshape(n, h // scale, scale, w // scale, scale, c).transpose(0, 1, 3, 5, 2, 4)
    windows = windows.reshape(n, h // scale, w // scale, c, scale * scale)       # row-major window order
    first = jnp.argmax(windows, axis=-1)[..., None]
    return jnp.take_along_axis(windows, first, axis=-1)[..., 0]


def pool(a, layer: Pool):
    return mean_pool(a, layer.scale) if layer.pool == "mean" else max_pool(a, layer.scale)


def conv_valid(a, k):
    """'valid' cross-correlation, (N,H,W,C_in) * (kh,kw,C_in,C_out) -> (N,H-kh+1,W-kw+1,C_out)."""
    return lax.conv_general_dilated(a, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision=HIGHEST)


def feature_vector(a):
    """Flatten the last maps in the toolbox's `fv` order: map by map, each row-major. (N,h,w,C) -> (N, C·h·w)."""
    return a.transpose(0, 3, 1, 2).reshape(a.shape[0], -1)


def output_input(params: dict, layers, x):
    """`cnnff.m` up to the output layer on (N, H, W, C) inputs: z = ffW·fv + ffb, (N, classes)."""
    a = x
    conv = iter(params["conv"])
    for layer in layers[1:]:
        if isinstance(layer, Conv):
            p = next(conv)
            a = activate(layer.activation, conv_valid(a, p["k"]) + p["b"])   # (N, H-k+1, W-k+1, outputmaps)
        elif isinstance(layer, Pool):
            a = pool(a, layer)                                              # (N, H/s, W/s, maps)
    fv = feature_vector(a)                                                  # (N, fvnum)
    return jnp.dot(fv, params["ffW"].T, precision=HIGHEST) + params["ffb"]  # (N, classes)


def forward_nhwc(params: dict, layers, x, output: str = "sigmoid"):
    """`cnnff.m` on (N, H, W, C) inputs; returns the outputs `o` (N, classes)."""
    z = output_input(params, layers, x)
    return output_and_loss(output, z, jnp.zeros_like(z))[0]


def loss(net: Net, images, targets):
    """L for a batch; `images` (N, H, W, C) in the net's dtype, `targets` (N, classes)."""
    return output_and_loss(net.output, output_input(net.params, net.layers, images), targets)[1]


_loss_and_grad = jax.jit(jax.value_and_grad(loss))


def loss_and_grad(net: Net, images, targets) -> tuple[jax.Array, Any]:
    """(L, dL/dnet) for a batch by autodiff of the reference model; the gradient is a `Net` whose
    params hold the derivatives."""
    x = as_nhwc(net, images)
    return _loss_and_grad(net, x, as_targets(net, targets, x.shape[0]))
