"""The split step's all-reduce as a small C++ custom call whose waiting thread spins, not sleeps.

Why: XLA:CPU's in-process all-reduce parks the first device's thread on a condition variable, and on
a VM that halts idle vCPUs at once each wake-up is a trip through the hypervisor, twice a step. With
the wait spun (`spin_allreduce.cc`) the split epoch took 1.18 - 1.32x less time on the AVX-512 Xeon
(docs/performance.md), and the sums are the same bits as `psum`'s: every device adds the slices in
device order.

The C++ file ships with the package and is compiled on first use with the machine's C++ compiler
(`$CXX`, else `c++` or `g++`) against the XLA FFI headers in jaxlib, into a cache folder keyed by the
source, jaxlib's version and the compiler (`$JAXCNN_CACHE`, else `$XDG_CACHE_HOME/jaxcnn`, else
~/.cache/jaxcnn). Where that cannot be done (no compiler, a failed build, not x86-64 or aarch64 Linux),
or where `JAXCNN_ALLREDUCE=xla` says so, the step uses `jax.lax.psum` as before: `status()` says which
and why.
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
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

SOURCE = Path(__file__).with_name("spin_allreduce.cc")
ENV = "JAXCNN_ALLREDUCE"            # "spin" (the default where it builds) or "xla"
MAX_GROUPS = 4                       # distinct device groups per process, as spin_allreduce.cc sizes them
MAX_DEVICES = 8
_TARGETS = {np.dtype(np.float32): "jaxcnn_spin_allreduce_f32", np.dtype(np.float64): "jaxcnn_spin_allreduce_f64"}

_state: dict = {}                    # "library", "capacity", "reason", "path" once loaded or refused
_groups: dict[tuple[int, ...], int] = {}


def cache_dir() -> Path:
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
        return subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def build(cxx: str, out_dir: Path) -> Path:
    """Compile SOURCE into `out_dir` (made if missing) and return the library's path. A build that fails
    raises RuntimeError with the compiler's message; the library appears only whole (written under another
    name, then renamed), so processes building at once do not read each other's half-written files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "libjaxcnn_spin_allreduce.so"
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        partial = Path(tmp) / target.name
        command = [cxx, "-O2", "-std=c++17", "-shared", "-fPIC",
                   "-I", jax.ffi.include_dir(), str(SOURCE), "-o", str(partial)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as error:
            raise RuntimeError(f"{cxx} could not be run: {error}") from None
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-8:])
            raise RuntimeError(f"{cxx} failed (exit {done.returncode}):\n{tail}")
        os.replace(partial, target)
    return target


def _library_path(cxx: str) -> Path:
    import jaxlib
    key = hashlib.sha256(SOURCE.read_bytes() + jaxlib.__version__.encode() + _compiler_version(cxx).encode()
                         + platform.machine().encode()).hexdigest()[:16]
    path = cache_dir() / "spin_allreduce" / key / "libjaxcnn_spin_allreduce.so"
    return path if path.is_file() else build(cxx, path.parent)


def _load() -> None:
    if _state:
        return
    wanted = os.environ.get(ENV, "spin").strip().lower()
    if wanted not in ("spin", "xla"):
        raise ValueError(f"{ENV}={os.environ[ENV]!r}: expected 'spin' or 'xla'")
    if wanted == "xla":
        _state["reason"] = f"{ENV}=xla"
        return
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "aarch64"):
        _state["reason"] = f"not built for {sys.platform} {platform.machine()}"
        return
    cxx = _compiler()
    if cxx is None:
        _state["reason"] = "no C++ compiler ($CXX, c++ or g++) on PATH"
        return
    try:
        path = _library_path(cxx)
        library = ctypes.cdll.LoadLibrary(str(path))
        handlers = {name: getattr(library, name) for name in _TARGETS.values()}
        capacity = library.jaxcnn_spin_allreduce_capacity_bytes
    except (RuntimeError, OSError, AttributeError) as error:
        _state["reason"] = f"the build failed: {error}"
        return
    for name, handler in handlers.items():
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(handler), platform="cpu")
    capacity.restype = ctypes.c_int64
    _state.update(library=library, path=path, capacity=capacity())


def available() -> bool:
    _load()
    return "library" in _state


def status() -> str:
    """One line for records and `jaxcnn bench`: which all-reduce the split step uses, and why."""
    _load()
    if "library" in _state:
        return f"spin (jaxcnn/spin_allreduce.cc, built at {_state['path']})"
    return f"xla psum ({_state['reason']})"


def describe() -> str:
    """A few words for `jaxcnn train`'s first line: how the slices' gradients are summed."""
    return ("summed by jaxcnn's spinning all-reduce" if available()
            else f"summed by XLA's psum ({_state['reason']})")


def fits(flat, devices: int) -> bool:
    """Whether the spinning sum can take `flat` over `devices` devices: it is built, the dtype and length
    fit its slots, and there are at most MAX_DEVICES devices."""
    return (available() and 1 <= devices <= MAX_DEVICES and np.dtype(flat.dtype) in _TARGETS
            and flat.ndim == 1 and flat.size * flat.dtype.itemsize <= _state["capacity"])


def group_of(device_ids: tuple[int, ...]) -> int | None:
    """The slot group of the devices a mesh holds (each mesh its own barrier), or None when all
    MAX_GROUPS are taken by other meshes."""
    if device_ids not in _groups:
        if len(_groups) >= MAX_GROUPS:
            return None
        _groups[device_ids] = len(_groups)
    return _groups[device_ids]


def summed(flat, axis: str, group: int):
    """The sum of `flat` over the devices of mesh axis `axis` (inside `shard_map`), by the spinning
    custom call of slot group `group`. Check `fits` first."""
    return jax.ffi.ffi_call(_TARGETS[np.dtype(flat.dtype)], jax.ShapeDtypeStruct(flat.shape, flat.dtype))(
        flat, jax.lax.axis_index(axis).astype(jnp.int32), group=np.int64(group),
        devices=np.int64(jax.lax.axis_size(axis)))
