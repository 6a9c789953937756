"""What the reference model and the fast path share: the activations, the outputs and their losses,
and the float precision.

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


def activate(name: str, z):
    """A 'c' layer's nonlinearity: the toolbox's sigmoid, tanh, or ReLU."""
    if name == "sigmoid":
        return sigm(z)
    if name == "tanh":
        return jnp.tanh(z)
    if name == "relu":
        return jax.nn.relu(z)                     # relu'(0) = 0
    raise ValueError(f"unknown activation {name!r} (sigmoid, tanh, relu)")


def activation_derivative(name: str, a):
    """dσ/dz written through the activation a = σ(z), as the delta rule uses it: a(1−a), 1−a², [a > 0]."""
    if name == "sigmoid":
        return a * (1 - a)
    if name == "tanh":
        return 1 - a * a
    if name == "relu":
        return (a > 0).astype(a.dtype)
    raise ValueError(f"unknown activation {name!r} (sigmoid, tanh, relu)")


OUTPUTS = ("sigmoid", "softmax")


def output_and_loss(output: str, z, targets):
    """(o, L) of the output layer from its pre-activations z (N, classes).

    "sigmoid" (the toolbox's): o = σ(z), L = ½·Σ(o − y)²/N.
    "softmax": o = softmax(z), L = −Σ y·log o / N, with log o = log_softmax(z) (log-sum-exp, stable)."""
    check_targets(z, targets)
    if output == "sigmoid":
        o = sigm(z)
        return o, mse_loss(o, targets)
    if output == "softmax":
        log_o = jax.nn.log_softmax(z, axis=-1)
        return jnp.exp(log_o), -jnp.sum(targets * log_o) / z.shape[0]
    raise ValueError(f"unknown output {output!r} (sigmoid, softmax)")


def output_delta(output: str, o, targets):
    """dL/dz · N, the output delta `od`: (o − y)·o(1 − o) for the sigmoid/MSE output (`cnnbp.m`),
    o − y for softmax with cross-entropy (the softmax Jacobian cancels the 1/o of the loss)."""
    e = o - targets
    return e * o * (1 - o) if output == "sigmoid" else e


def check_targets(o, targets) -> None:
    """Outputs and targets must have the same shape: no silent broadcasting between them."""
    if o.shape != targets.shape:
        raise ValueError(f"targets must have the outputs' shape {tuple(o.shape)} (N, classes), "
                         f"got {tuple(targets.shape)}")


def mse_loss(o, targets):
    """The toolbox's loss `L = ½·Σ(o − y)² / N` (`cnnbp.m`: 1/2* sum(net.e(:) .^ 2) / size(net.e, 2))."""
    check_targets(o, targets)
    return 0.5 * jnp.sum((o - targets) ** 2) / o.shape[0]
