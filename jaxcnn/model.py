"""The reference model: `cnnff.m` as plain JAX, differentiated by `jax.grad`.

`lax.conv` for the convolutions, reshape-and-mean for the pooling, the toolbox's loss, autodiff for
the gradient: the definition every faster or hand-derived formulation is tested against.
Array conventions are `jaxcnn.net`'s (natural orientation, NHWC maps, HWIO cross-correlation kernels).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from .layers import Conv, Pool
from .net import Net, as_nhwc, as_targets
from .numerics import HIGHEST, mse_loss, sigm


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


def loss(net: Net, images, targets):
    """L for a batch; `images` (N, H, W, C) in the net's dtype, `targets` (N, classes)."""
    return mse_loss(forward_nhwc(net.params, net.layers, images), targets)


_loss_and_grad = jax.jit(jax.value_and_grad(loss))


def loss_and_grad(net: Net, images, targets) -> tuple[jax.Array, Any]:
    """(L, dL/dnet) for a batch by autodiff of the reference model; the gradient is a `Net` whose
    params hold the derivatives."""
    x = as_nhwc(net, images)
    return _loss_and_grad(net, x, as_targets(net, targets, x.shape[0]))
