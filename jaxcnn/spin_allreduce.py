"""The split step's all-reduce as a small C++ custom call whose waiting thread spins, not sleeps.

Why: XLA:CPU's in-process all-reduce parks the first device's thread on a condition variable, and on
a VM that halts idle vCPUs at once each wake-up is a trip through the hypervisor, twice a step. With
the wait spun (`spin_allreduce.cc`) split epochs ran 1.19 - 1.32x faster on the AVX-512 Xeon (per-round
medians, docs/performance.md), and the sums are the same bits as `psum`'s: every device adds the slices in
device order, as psum does.

The C++ file ships with the package and is compiled on first use with the machine's C++ compiler
(`$CXX`, else `c++` or `g++`) against the XLA FFI headers in jaxlib, into a cache folder keyed by the
source, jaxlib's version, the compiler and its flags (`$JAXCNN_CACHE`, else `$XDG_CACHE_HOME/jaxcnn`, else
~/.cache/jaxcnn). Where that cannot be done (no compiler, a failed build, not x86-64 or aarch64 Linux),
or where `JAXCNN_ALLREDUCE=xla` says so, the step uses `jax.lax.psum` as before, and `plan` says which and
why. The first build takes about 4 s, before the first split program is compiled.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

SOURCE = Path(__file__).with_name("spin_allreduce.cc")
ENV = "JAXCNN_ALLREDUCE"            # "spin" (the default where it builds) or "xla"
FLAGS = ("-O2", "-std=c++17", "-shared", "-fPIC")
LIBRARY = "libjaxcnn_spin_allreduce.so"
_TARGETS = {np.dtype(np.float32): "jaxcnn_spin_allreduce_f32", np.dtype(np.float64): "jaxcnn_spin_allreduce_f64"}

_state: dict = {}                    # once loaded: "library", "path" and the limits; or "reason" it was not
_groups: dict[tuple[int, ...], int] = {}
_lock = threading.Lock()


def cache_dir() -> Path:
    """Where built libraries are kept: $JAXCNN_CACHE, else $XDG_CACHE_HOME/jaxcnn, else ~/.cache/jaxcnn."""
    if os.environ.get("JAXCNN_CACHE"):
        return Path(os.environ["JAXCNN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jaxcnn"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _compiler_version(cxx: str) -> str:
    try:
        return subprocess.run([cxx, "--version"], capture_output=True, text=True, errors="replace", timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def build(cxx: str, out_dir: Path) -> Path:
    """Compile SOURCE into `out_dir` (made if missing) and return the library's path. A build that fails
    raises RuntimeError with the compiler's message; the library appears only whole (written under another
    name, then renamed), so processes building at once do not read each other's half-written files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / LIBRARY
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        partial = Path(tmp) / LIBRARY
        command = [cxx, *FLAGS, "-I", jax.ffi.include_dir(), str(SOURCE), "-o", str(partial)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=300)
        except (OSError, subprocess.SubprocessError) as error:
            raise RuntimeError(f"{cxx} could not be run: {error}") from None
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-8:])
            raise RuntimeError(f"{cxx} failed (exit {done.returncode}):\n{tail}")
        os.replace(partial, target)
    return target


def _cached_path(cxx: str) -> Path:
    import jaxlib
    key = hashlib.sha256("\0".join([SOURCE.read_text(), jaxlib.__version__, _compiler_version(cxx),
                                    platform.machine(), *FLAGS]).encode()).hexdigest()[:16]
    return cache_dir() / "spin_allreduce" / key / LIBRARY


def _open(path: Path):
    library = ctypes.cdll.LoadLibrary(str(path))
    handlers = {name: getattr(library, name) for name in _TARGETS.values()}
    limits = {}
    for name in ("capacity_bytes", "max_groups", "max_devices"):
        function = getattr(library, f"jaxcnn_spin_allreduce_{name}")
        function.restype = ctypes.c_int64
        limits[name] = function()
    return library, handlers, limits


def _load() -> None:
    with _lock:
        if not _state:
            _state.update(_loaded())


def _loaded() -> dict:
    wanted = os.environ.get(ENV, "spin").strip().lower()
    if wanted not in ("spin", "xla"):
        raise ValueError(f"{ENV}={os.environ[ENV]!r}: expected 'spin' or 'xla'")
    if wanted == "xla":
        return {"reason": f"{ENV}=xla"}
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "aarch64"):
        return {"reason": f"not built for {sys.platform} {platform.machine()}"}
    cxx = _compiler()
    if cxx is None:
        return {"reason": "no C++ compiler ($CXX, c++ or g++) on PATH"}
    try:
        path = _cached_path(cxx)
        try:
            library, handlers, limits = _open(path)
        except (OSError, AttributeError):              # not built yet, or a damaged file: build it (again)
            library, handlers, limits = _open(build(cxx, path.parent))
        for name, handler in handlers.items():
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(handler), platform="cpu")
    except Exception as error:                         # noqa: BLE001 - any failure here means psum, said why
        return {"reason": f"the build failed: {' '.join(str(error).split())[:500]}"}
    return {"library": library, "path": path, **limits}


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
