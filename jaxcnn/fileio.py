"""Crash-safe files: write to a temporary file, fsync, rename over the target, fsync the folder.

A reader therefore sees either the old file or the new one, never half of one, even after a
`kill -9` or a power cut in the middle of a write. Arrays go into `.npz` files that load with
`allow_pickle=False`; their metadata rides along as a JSON string array.

Reading is the other half: every reader of a file the user hands us runs its parsing inside
`reading(path, what)`, which turns whatever the parser raises on damaged bytes (a bad CRC, an EOF,
a short header, undecodable text, a missing entry) into one `DamagedFile` naming the file and how it
is damaged; the CLI prints that as one line and exits 2.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import struct
import tempfile
import time
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

META_KEY = "__meta__"
CHECKSUM_KEY = "sha256"
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


class DamagedFile(ValueError):
    """A file that is missing, unreadable, or not what it claims to be; `str()` is one line naming it."""

    def __init__(self, path, reason: str):
        self.path, self.reason = str(path), " ".join(str(reason).split())
        super().__init__(f"{self.path}: {self.reason}")


# What parsers raise on bytes that are not what they expect (scipy's MatReadError is added by its reader).
PARSE_ERRORS = (OSError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError, OverflowError,
                MemoryError, zipfile.BadZipFile, zlib.error, struct.error, UnicodeError, RecursionError, Warning)


@contextlib.contextmanager
def reading(path, what: str, error: type = DamagedFile, also: tuple = ()):
    """Run a reader's parsing of `path`: any parse error inside becomes one `error(path, reason)`.

    `what` says what the file should have been ("jaxcnn net file"); `error` is a DamagedFile subclass
    when the caller's callers expect their module's error type; `also` adds a parser's own exceptions.
    A DamagedFile raised inside (a reader's own check, with its own reason) passes through unchanged.
    A warning about the data inside (an overflow in a cast, a duplicate .mat variable) is an error too:
    a damaged file is refused in one line, never half-read with a second line on stderr."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            warnings.simplefilter("default", DeprecationWarning)           # about code, not about the file
            warnings.simplefilter("default", PendingDeprecationWarning)
            yield
    except DamagedFile as err:
        if isinstance(err, error):
            raise
        raise error(err.path, err.reason) from None
    except FileNotFoundError:
        raise error(path, "no such file") from None
    except IsADirectoryError:
        raise error(path, f"is a folder, not a {what}") from None
    except PermissionError:
        raise error(path, "permission denied") from None
    except (*PARSE_ERRORS, *also) as err:
        detail = str(err).strip() or type(err).__name__
        raise error(path, f"damaged or not a {what} ({type(err).__name__}: {detail[:300]})") from None


def content_digest(arrays: dict[str, np.ndarray], meta: dict) -> str:
    """SHA-256 over every array's name, dtype, shape and bytes and the metadata (without its checksum)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        value = np.asarray(arrays[name])            # not ascontiguousarray: it makes a 0-d array 1-d
        digest.update(json.dumps([name, value.dtype.str, list(value.shape)]).encode())
        digest.update(value.tobytes(order="C"))
    digest.update(json.dumps({k: v for k, v in meta.items() if k != CHECKSUM_KEY}, sort_keys=True).encode())
    return digest.hexdigest()


def save_npz(path, arrays: dict[str, np.ndarray], meta: dict, checksum: bool = False) -> None:
    """Arrays plus a JSON-able `meta` dict, atomically, in one uncompressed `.npz`; with `checksum`, meta
    also records `content_digest` of the whole, which `load_npz(..., checksum=True)` verifies."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    if checksum:
        meta = {**meta, CHECKSUM_KEY: content_digest(arrays, meta)}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, **{META_KEY: np.array(json.dumps(meta))})
    atomic_write_bytes(path, buffer.getvalue())


def load_npz(path, what: str = "jaxcnn .npz file", checksum: bool = False,
             error: type = DamagedFile) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and metadata written by `save_npz`; never unpickles anything. Raises `error` (a
    DamagedFile) naming `path` for anything else: not a zip, a bad CRC, no metadata, a checksum that
    does not match (with `checksum`, a missing one too)."""
    with reading(path, what, error):
        raw = Path(path).read_bytes()        # np.load(path) would leave the file open when the zip is damaged
        if raw[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
            raise error(path, f"not a {what}: an .npz is a zip archive, this file "
                              + (f"starts with {raw[:4]!r}" if raw else "is empty"))
        with np.load(io.BytesIO(raw), allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        if META_KEY not in arrays:
            raise error(path, f"not a {what} (no {META_KEY} entry)")
        stored = arrays.pop(META_KEY)
        if stored.dtype.kind != "U" or stored.ndim != 0:
            raise error(path, f"damaged {what}: {META_KEY} is {stored.dtype}{list(stored.shape)}, not a JSON string")
        meta = json.loads(str(stored))
        if not isinstance(meta, dict):
            raise error(path, f"damaged {what}: {META_KEY} is not a JSON object")
    if checksum:
        meta = verify_checksum(path, arrays, meta, what, error)
    return arrays, meta


def verify_checksum(path, arrays, meta, what: str = "jaxcnn .npz file", error: type = DamagedFile) -> dict:
    """`meta` without its checksum, once the checksum `save_npz(..., checksum=True)` recorded matches."""
    meta = dict(meta)
    recorded = meta.pop(CHECKSUM_KEY, None)
    if recorded is None:
        raise error(path, f"damaged {what}: no checksum recorded")
    if recorded != content_digest(arrays, meta):
        raise error(path, f"damaged {what}: its contents do not match the checksum recorded when it was written")
    return meta
