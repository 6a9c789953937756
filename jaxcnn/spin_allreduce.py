"""The split step's all-reduce as a small C++ custom call whose waiting thread spins, not sleeps.

Why: XLA:CPU's in-process all-reduce parks the first device's thread on a condition variable, and on
a VM that halts idle vCPUs at once each wake-up is a trip through the hypervisor, twice a step. With
the wait spun (`spin_allreduce.cc`) split epochs ran 1.19 - 1.32x faster on the AVX-512 Xeon (per-round
medians, docs/performance.md), and the sums are the same bits as `psum`'s: every device adds the slices in
device order, as psum does.

`jaxcnn.native` builds and loads the C++ file on first use. Where that cannot be done (no compiler, a failed
build, not x86-64 or aarch64 Linux), or where `JAXCNN_ALLREDUCE=xla` says so, the step uses `jax.lax.psum`
as before, and `plan` says which and why.
"""
from __future__ import annotations

import ctypes
import threading

import jax
import jax.numpy as jnp
import numpy as np

from . import native

ENV = "JAXCNN_ALLREDUCE"            # "spin" (the default where it builds) or "xla"
_TARGETS = {np.dtype(np.float32): "jaxcnn_spin_allreduce_f32", np.dtype(np.float64): "jaxcnn_spin_allreduce_f64"}

_state: dict = {}                    # once loaded: "library", "path" and the limits; or "reason" it was not
_groups: dict[tuple[int, ...], int] = {}
_lock = threading.Lock()


def _open(library):
    limits = {}
    for name in ("capacity_bytes", "max_groups", "max_devices"):
        function = getattr(library, f"jaxcnn_spin_allreduce_{name}")
        function.restype = ctypes.c_int64
        limits[name] = function()
    return limits


def _load() -> None:
    with _lock:
        if not _state:
            _state.update(_loaded())


def _loaded() -> dict:
    if native.choice(ENV, "spin", "xla") == "xla":
        return {"reason": f"{ENV}=xla"}
    loaded = native.load()
    if "library" not in loaded:
        return loaded
    return {**loaded, **_open(loaded["library"])}


def available() -> bool:
    """Whether the spinning all-reduce is built and loaded (building it on the first call)."""
    _load()
    return "library" in _state


def status() -> str:
    """Whether the library is built, and where, or why not: one line for records."""
    _load()
    if "library" in _state:
        return f"built at {_state['path']}"
    return f"not used: {_state['reason']}"


def plan(values: int, dtype, device_ids: tuple[int, ...]) -> tuple[int | None, str]:
    """(slot group, description) for summing a vector of `values` values of `dtype` over the devices
    `device_ids`: a group where the spinning sum takes it, else None, and in the description which all-reduce
    is used and why (for `jaxcnn train`'s first line and the records). Each distinct set of devices gets its
    own group, while any is left."""
    if not available():
        return None, f"xla psum ({_state['reason']})"
    dtype = np.dtype(dtype)
    if dtype not in _TARGETS:
        return None, f"xla psum ({dtype.name} is not summed by the spin)"
    if values * dtype.itemsize > _state["capacity_bytes"]:
        return None, f"xla psum ({values:,} values of {dtype.name} do not fit its {_state['capacity_bytes']:,}-byte slots)"
    if not 1 <= len(device_ids) <= _state["max_devices"]:
        return None, f"xla psum ({len(device_ids)} devices, the spin takes at most {_state['max_devices']})"
    with _lock:
        if device_ids not in _groups and len(_groups) < _state["max_groups"]:
            _groups[device_ids] = len(_groups)
        group = _groups.get(device_ids)
    if group is None:
        return None, f"xla psum (all {_state['max_groups']} of the spin's device groups are taken)"
    return group, "spin (jaxcnn/spin_allreduce.cc)"


def summed(flat, axis: str, group: int):
    """The sum of `flat` over the devices of mesh axis `axis` (inside `shard_map`), by the spinning
    custom call of slot group `group` (from `plan`)."""
    return jax.ffi.ffi_call(_TARGETS[np.dtype(flat.dtype)], jax.ShapeDtypeStruct(flat.shape, flat.dtype))(
        flat, jax.lax.axis_index(axis).astype(jnp.int32), group=np.int64(group),
        devices=np.int64(jax.lax.axis_size(axis)))
