"""Crash-safe files: write to a temporary file, fsync, rename over the target, fsync the folder.

A reader therefore sees either the old file or the new one, never half of one, even after a
`kill -9` or a power cut in the middle of a write. Arrays go into `.npz` files that load with
`allow_pickle=False`; their metadata rides along as a JSON string array.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

META_KEY = "__meta__"
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_writer(path):
    """A binary file that replaces `path` only when the `with` block ends without an exception.

    Written beside `path` under a temporary name, fsynced, renamed over `path`, and the folder fsynced.
    An exception inside the block (a digest that does not match, say) leaves `path` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)                   # as open() would create it, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        delay = float(os.environ.get("JAXCNN_TEST_WRITE_DELAY", "0"))   # crash tests kill us here
        if delay:
            time.sleep(delay)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_writer(path) as f:
        f.write(data)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def save_npz(path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Arrays plus a JSON-able `meta` dict, atomically, in one uncompressed `.npz`."""
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()}, **{META_KEY: np.array(json.dumps(meta))})
    atomic_write_bytes(path, buffer.getvalue())


def load_npz(path) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and metadata written by `save_npz`; never unpickles anything."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    if META_KEY not in arrays:
        raise ValueError(f"{path}: not a jaxcnn file (no {META_KEY} entry)")
    return arrays, json.loads(str(arrays.pop(META_KEY)))
