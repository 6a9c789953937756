"""What the reference model and the fast path share: the sigmoid, the loss, and the float precision.

`use_dtype` is the one place that turns on JAX's x64 mode. Everything that decides a dtype (a
config's `train.dtype`, a saved net's arrays, the float64 verification) asks it, after the config
or file that applies has been read, so a float64 run or net never becomes float32 silently.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

HIGHEST = lax.Precision.HIGHEST
DTYPES = {"float32": jnp.float32, "float64": jnp.float64}


def use_dtype(name) -> type:
    """The float dtype called `name` ("float32" or "float64", or a numpy dtype), ready for use.

    float64 needs JAX's x64 mode, which is switched on here (and never off: arrays made before
    keep their dtype, and float32 nets stay float32 because every net carries its own dtype).
    """
    key = jnp.dtype(name).name
    if key not in DTYPES:
        raise ValueError(f"unsupported float dtype {key!r} (expected {', '.join(DTYPES)})")
    if key == "float64" and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)
    return DTYPES[key]


def default_dtype():
    """float64 when JAX's x64 mode is on, else float32: the dtype of a new net when none is given."""
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def sigm(z):
    """The toolbox's `sigm`: 1 ./ (1 + exp(-z))."""
    return 1.0 / (1.0 + jnp.exp(-z))


def check_targets(o, targets) -> None:
    """Outputs and targets must have the same shape: no silent broadcasting between them."""
    if o.shape != targets.shape:
        raise ValueError(f"targets must have the outputs' shape {tuple(o.shape)} (N, classes), "
                         f"got {tuple(targets.shape)}")


def mse_loss(o, targets):
    """The toolbox's loss `L = ½·Σ(o − y)² / N` (`cnnbp.m`: 1/2* sum(net.e(:) .^ 2) / size(net.e, 2))."""
    check_targets(o, targets)
    return 0.5 * jnp.sum((o - targets) ** 2) / o.shape[0]
