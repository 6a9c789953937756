"""The XLA:CPU compiler options that jaxcnn's compiled programs use, chosen by the dtype they compute in.

XLA:CPU hands dots (and small reductions) to YNNPACK by default. For this net's shapes, measured on the
AVX-512 Xeon (docs/performance.md):
- float32: YNNPACK won two of the five products and lost three, and whole training and evaluation
  programs ran faster on XLA's own Eigen kernels, so float32 programs turn YNNPACK off;
- float64: jaxlib's Eigen ran the products at 13 – 28 GFLOP/s where numpy's OpenBLAS reached 28 – 70 and
  YNNPACK 30 – 59 (1.5 – 4x Eigen on every product), so float64 programs give YNNPACK each dot by itself,
  and nothing around it.
float32 programs also ask LLVM for 512-bit vectors where the CPU has them (XLA's default is 256): once the
patch matrices were copied natively, the sigmoids were the largest non-product ops, and with 16 lanes the
first layer's took 0.71 - 0.76 ms a 500-image chunk instead of 1.05 (epochs 1.03 - 1.07x faster, evaluation
1.02 - 1.08x, three interleaved runs; the toolbox net's epochs were the same bits with and without it, which
is measured, not promised: wider vectors may reorder a reduction's additions). On a CPU without AVX-512 it
changes nothing. The options only concern the CPU backend; the numbers differ at most by the order of
additions (the fast path is held to `jax.grad` at 1e-12 in float64 under them).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

_YNN_FUSIONS = "xla_cpu_experimental_ynn_fusion_type"
_VECTOR_WIDTH = "xla_cpu_prefer_vector_width"


def for_dtype(dtype) -> dict[str, str]:
    """The compiler options for a program whose floating-point arrays are `dtype`."""
    if np.dtype(dtype) == np.float64:
        return {_YNN_FUSIONS: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
    return {_YNN_FUSIONS: "", _VECTOR_WIDTH: "512"}


def floating_dtype(args) -> np.dtype:
    """The floating dtype of the arrays in `args` (a pytree): that of its first floating leaf, float32 if none."""
    for leaf in jax.tree.leaves(args):
        dtype = getattr(leaf, "dtype", None)
        if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
            return np.dtype(dtype)
    return np.dtype(np.float32)


def jit(fn, *, options=for_dtype, **jit_kwargs):
    """`jax.jit(fn, **jit_kwargs)`, compiled with `options(dtype)` for the floating dtype of the arguments it
    is called or lowered with: one jitted function per dtype. `.lower` and `._cache_size` work as jit's;
    `options=None` is plain `jax.jit`."""
    if options is None:
        return jax.jit(fn, **jit_kwargs)
    by_dtype = {}

    def jitted_for(args):
        dtype = floating_dtype(args)
        if dtype not in by_dtype:
            by_dtype[dtype] = jax.jit(fn, compiler_options=options(dtype), **jit_kwargs)
        return by_dtype[dtype]

    @functools.wraps(fn)
    def call(*args, **kwargs):
        return jitted_for((args, kwargs))(*args, **kwargs)

    call.lower = lambda *args, **kwargs: jitted_for((args, kwargs)).lower(*args, **kwargs)
    call._cache_size = lambda: sum(jitted._cache_size() for jitted in by_dtype.values())   # programs compiled
    return call
