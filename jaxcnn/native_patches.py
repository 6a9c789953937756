"""The polyphase patch matrix (`jaxcnn.fast.phase_patches`) by the C++ copy loop of `phase_patches.cc`.

Why: XLA:CPU builds the matrix with concatenation fusions for which it emits scalar code, and for the first
layer it also transposes the batch-outer images on the way; as plain copies of runs of w·N values it is the same
bits, made faster (docs/performance.md has the measurements). `jaxcnn.native` builds the library on first use;
without it, on a backend other than the CPU, or with `JAXCNN_PATCHES=xla` (read once per process), `jaxcnn.fast`
keeps XLA's concatenations. Programs that hold the custom calls cannot be serialised by `jax.export` (their
targets carry no compatibility guarantee): export with `JAXCNN_PATCHES=xla`.
"""
from __future__ import annotations

import threading

import jax
import numpy as np

from . import native

ENV = "JAXCNN_PATCHES"              # "native" (the default where it builds) or "xla"
LAYOUTS = {"CNHW": 0, "CHWN": 1}    # the maps' axes, as jaxcnn.fast names them
_TARGETS = {np.dtype(np.float32): "jaxcnn_phase_patches_f32", np.dtype(np.float64): "jaxcnn_phase_patches_f64"}
_ROWS_TARGETS = {dtype: name.replace("_patches_", "_patches_of_rows_") for dtype, name in _TARGETS.items()}

_state: dict = {}
_lock = threading.Lock()


def _load() -> dict:
    with _lock:
        if not _state:
            if native.choice(ENV, "native", "xla") == "xla":
                _state["reason"] = f"{ENV}=xla"
            else:
                _state.update(native.load())
        return _state


def available(dtype) -> bool:
    """Whether the copy loop is built and loaded for arrays of `dtype` (building it on the first call), and
    programs are compiled for the CPU: its targets exist for no other backend, so on a GPU the fast path keeps
    XLA's concatenations."""
    return jax.default_backend() == "cpu" and "library" in _load() and np.dtype(dtype) in _TARGETS


def status() -> str:
    """Which builds the patch matrices, and why: one line for records."""
    state = _load()
    if "library" not in state:
        return f"xla concatenations ({state['reason']})"
    if jax.default_backend() != "cpu":
        return f"xla concatenations (programs compiled for {jax.default_backend()}, the copy loop is CPU code)"
    return "native (jaxcnn/phase_patches.cc)"


def phase_patches(a, k: int, s: int, layout: str):
    """T (C·P·P, h·w·N), P = k + s − 1, of maps `a` in `layout` ("CNHW" or "CHWN"), as
    `jaxcnn.fast.phase_patches` defines it. No derivative of its own: `jaxcnn.fast` gives it one."""
    c, rest = a.shape[0], a.shape[1:]
    n, height, width = rest if layout == "CNHW" else (rest[2], rest[0], rest[1])
    p, h, w = k + s - 1, (height - k + 1) // s, (width - k + 1) // s
    call = jax.ffi.ffi_call(_TARGETS[np.dtype(a.dtype)], jax.ShapeDtypeStruct((c * p * p, h * w * n), a.dtype),
                            vmap_method="broadcast_all")
    return call(a, k=np.int64(k), s=np.int64(s), layout=np.int64(LAYOUTS[layout]))


def phase_patches_of_rows(images, rows, k: int, s: int):
    """T of the batch `images[:, rows]` of the first layer's images (C, N_stored, H, W), `rows` (N,) int32,
    without gathering the batch first. An index outside the images is an error, not a read out of bounds."""
    c, _, height, width = images.shape
    p, h, w = k + s - 1, (height - k + 1) // s, (width - k + 1) // s
    # under jax.vmap one call per member (the stored images are shared, not broadcast to every member)
    call = jax.ffi.ffi_call(_ROWS_TARGETS[np.dtype(images.dtype)],
                            jax.ShapeDtypeStruct((c * p * p, h * w * rows.shape[0]), images.dtype),
                            vmap_method="sequential")
    return call(images, rows.astype(np.int32), k=np.int64(k), s=np.int64(s))
