"""jaxcnn's C++ custom calls: one library, compiled on first use, cached, loaded, and its XLA FFI targets
registered.

The sources ship with the package (`SOURCES`): the spinning all-reduce of the split step
(`spin_allreduce.cc`, used by `jaxcnn.spin_allreduce`) and the polyphase patch matrix
(`phase_patches.cc`, used by `jaxcnn.fast`). They are compiled together with the machine's C++ compiler
(`$CXX`, else `c++` or `g++`) against the XLA FFI headers in jaxlib, in about 5 s, into a cache folder keyed
by the sources, jaxlib's version, the compiler and its flags (`$JAXCNN_CACHE`, else
`$XDG_CACHE_HOME/jaxcnn`, else ~/.cache/jaxcnn). Where that cannot be done (no compiler, a failed build,
not x86-64 or aarch64 Linux) `load` says why, and each user keeps its XLA formulation.
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

SOURCES = tuple(Path(__file__).with_name(name) for name in ("spin_allreduce.cc", "phase_patches.cc"))
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC")
LIBRARY = "libjaxcnn_native.so"
TARGETS = ("jaxcnn_spin_allreduce_f32", "jaxcnn_spin_allreduce_f64",
           "jaxcnn_phase_patches_f32", "jaxcnn_phase_patches_f64",
           "jaxcnn_phase_patches_of_rows_f32", "jaxcnn_phase_patches_of_rows_f64")

_state: dict = {}                    # once loaded: "library" and "path"; or the "reason" it was not
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
    """Compile SOURCES into `out_dir` (made if missing) and return the library's path. A build that fails
    raises RuntimeError with the compiler's message; the library appears only whole (written under another
    name, then renamed), so processes building at once do not read each other's half-written files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / LIBRARY
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        partial = Path(tmp) / LIBRARY
        command = [cxx, *FLAGS, "-I", jax.ffi.include_dir(), *map(str, SOURCES), "-o", str(partial)]
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
    key = hashlib.sha256("\0".join([*(source.read_text() for source in SOURCES), jaxlib.__version__,
                                    _compiler_version(cxx), platform.machine(), *FLAGS]).encode()).hexdigest()[:16]
    return cache_dir() / "native" / key / LIBRARY


def _open(path: Path):
    library = ctypes.cdll.LoadLibrary(str(path))
    return library, {name: getattr(library, name) for name in TARGETS}


def _loaded() -> dict:
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "aarch64"):
        return {"reason": f"not built for {sys.platform} {platform.machine()}"}
    cxx = _compiler()
    if cxx is None:
        return {"reason": "no C++ compiler ($CXX, c++ or g++) on PATH"}
    try:
        path = _cached_path(cxx)
        try:
            library, handlers = _open(path)
        except (OSError, AttributeError):              # not built yet, or a damaged file: build it (again)
            library, handlers = _open(build(cxx, path.parent))
        for name, handler in handlers.items():
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(handler), platform="cpu")
    except Exception as error:                         # noqa: BLE001 - any failure here means XLA's way, said why
        return {"reason": f"the build failed: {' '.join(str(error).split())[:500]}"}
    return {"library": library, "path": path}


def load() -> dict:
    """The library, built on the first call: {"library": ctypes handle, "path": Path}, or {"reason": why not}."""
    with _lock:
        if not _state:
            _state.update(_loaded())
        return dict(_state)


def choice(env: str, native: str, fallback: str) -> str:
    """The user's choice in environment variable `env`: `native` (the default) or `fallback`; anything
    else is an error that names it."""
    wanted = os.environ.get(env, native).strip().lower()
    if wanted not in (native, fallback):
        raise ValueError(f"{env}={os.environ[env]!r}: expected {native!r} or {fallback!r}")
    return wanted
