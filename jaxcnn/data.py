"""Datasets: IDX files (gzipped or not), the toolbox's `mnist_uint8.mat`, and checked downloads.

Where the data comes from, in order:
  1. `data.dir` in the config: a folder with the four standard IDX files, or a `.mat` file;
  2. for Fashion-MNIST, Debian's `dataset-fashion-mnist` read in place (/usr/share/datasets/fashion-mnist);
  3. the cache folder, `$JAXCNN_DATA_DIR/<dataset>` or `~/.cache/jaxcnn/<dataset>`, filled on first use
     from a list of mirrors ($JAXCNN_MIRRORS replaces it); every file is checked against its published
     SHA-256 before it is cached.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import struct
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from .fileio import atomic_writer


class DataError(ValueError):
    """A data file or folder that is missing, damaged or not what it claims to be."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """uint8 images (N, H, W) or (N, H, W, C) in natural orientation, and integer labels (N,)."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    n_classes: int = 10
    source: str = ""

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> "Dataset":
        """The first n_train / n_test samples of each split (all of them when None)."""
        for key, n, have in (("data.n_train", n_train, len(self.train_labels)),
                             ("data.n_test", n_test, len(self.test_labels))):
            if n is not None and not 1 <= n <= have:
                raise DataError(f"{key} = {n}: must be between 1 and the {have} samples available")
        return dataclasses.replace(self, train_images=self.train_images[:n_train],
                                   train_labels=self.train_labels[:n_train],
                                   test_images=self.test_images[:n_test], test_labels=self.test_labels[:n_test])


@dataclasses.dataclass(frozen=True)
class Source:
    """A downloadable dataset: the four IDX files, their published SHA-256, and mirrors to try in order."""

    name: str
    files: dict[str, str]
    mirrors: tuple[str, ...]


IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

MNIST = Source("mnist", {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}, ("https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/"))

FASHION_MNIST = Source("fashion_mnist", {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}, ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"))

SOURCES = {s.name: s for s in (MNIST, FASHION_MNIST)}
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
}

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read one IDX file (gzipped or not), checking its magic number, type, rank and length."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as err:
            raise DataError(f"{path}: damaged or truncated gzip data ({err})") from None
    if len(raw) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    zero, type_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or type_code not in _IDX_TYPES or ndim == 0:
        raise DataError(f"{path}: wrong magic number 0x{raw[:4].hex()} (expected 0x0000TTDD: "
                        f"type 08/09/0B/0C/0D/0E, DD dimensions)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated header ({len(raw)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[type_code])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path}: {'truncated' if len(raw) - header < expected else 'trailing bytes'}: "
                        f"dimensions {'x'.join(map(str, dims))} need {expected} data bytes, found {len(raw) - header}")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _check_pair(images, labels, split: str, where, n_classes: int = 10):
    if images.ndim not in (3, 4):
        raise DataError(f"{where}: {split} images must have 3 or 4 dimensions (N, H, W[, C]), got {images.shape}")
    if images.dtype != np.uint8:
        raise DataError(f"{where}: {split} images must be unsigned bytes, got {images.dtype}")
    if labels.ndim != 1:
        raise DataError(f"{where}: {split} labels must have 1 dimension, got {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{where}: {images.shape[0]} {split} images but {labels.shape[0]} {split} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"{where}: {split} labels out of range: found {labels.min()}..{labels.max()}, "
                        f"expected 0..{n_classes - 1}")


def find_idx(folder: Path, stem: str) -> Path:
    """The file of `folder` holding IDX `stem` (one of IDX_FILES): `stem`, `stem.gz`, or with '.idx' for '-idx'."""
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: missing {stem}[.gz]")


def idx_paths(folder) -> list[Path]:
    """The four IDX files of a data folder, in IDX_FILES order (what a run's data came from)."""
    return [find_idx(Path(folder), stem) for stem in IDX_FILES]


def load_idx_folder(folder, name: str = "") -> Dataset:
    """A folder holding the four standard IDX files (train-/t10k- images/labels, .gz or not)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist")
    arrays = [read_idx(find_idx(folder, stem)) for stem in IDX_FILES]
    _check_pair(arrays[0], arrays[1], "training", folder)
    _check_pair(arrays[2], arrays[3], "test", folder)
    if arrays[0].shape[1:] != arrays[2].shape[1:]:
        raise DataError(f"{folder}: training images {arrays[0].shape[1:]} and test images "
                        f"{arrays[2].shape[1:]} differ in size")
    return Dataset(name or folder.name, arrays[0], arrays[1].astype(np.int64), arrays[2],
                   arrays[3].astype(np.int64), source=str(folder))


def load_mat(path, name: str = "mnist") -> Dataset:
    """The toolbox's `mnist_uint8.mat`: train_x (N×784 uint8, rows row-major images), train_y (N×10)."""
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        mat = scipy.io.loadmat(path)
    except (ValueError, NotImplementedError, TypeError, OSError, IndexError, KeyError) as err:
        raise DataError(f"{path}: not a MATLAB v4-v7 .mat file scipy can read ({err})") from None
    missing = [k for k in ("train_x", "train_y", "test_x", "test_y") if k not in mat]
    if missing:
        raise DataError(f"{path}: missing variable(s) {', '.join(missing)} (expected train_x, train_y, test_x, test_y)")

    def images(x, key):
        side = int(round(np.sqrt(x.shape[1])))
        if x.ndim != 2 or side * side != x.shape[1]:
            raise DataError(f"{path}: {key} must be N x (side*side), got {x.shape}")
        return np.ascontiguousarray(x.reshape(-1, side, side)).astype(np.uint8)

    def labels(y, key):
        if y.ndim != 2:
            raise DataError(f"{path}: {key} must be N x classes one-hot, got {y.shape}")
        return y.argmax(axis=1).astype(np.int64)

    tx, ty = images(mat["train_x"], "train_x"), labels(mat["train_y"], "train_y")
    vx, vy = images(mat["test_x"], "test_x"), labels(mat["test_y"], "test_y")
    n_classes = mat["train_y"].shape[1]
    _check_pair(tx, ty, "training", path, n_classes)
    _check_pair(vx, vy, "test", path, n_classes)
    return Dataset(name, tx, ty, vx, vy, n_classes=n_classes, source=str(path))


def cache_root() -> Path:
    """Where downloads are kept: $JAXCNN_DATA_DIR, else ~/.cache/jaxcnn."""
    env = os.environ.get("JAXCNN_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "jaxcnn"


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_one(url: str, target: Path, sha256: str, timeout: float) -> None:
    """Fetch `url` into `target` atomically (`fileio.atomic_writer`), keeping it only if it arrived
    whole and its SHA-256 matches."""
    with atomic_writer(target) as out, urllib.request.urlopen(url, timeout=timeout) as response:
        expected_length = response.headers.get("Content-Length")
        digest, size = hashlib.sha256(), 0
        for block in iter(lambda: response.read(1 << 20), b""):
            out.write(block)
            digest.update(block)
            size += len(block)
        if expected_length is not None and size != int(expected_length):
            raise DataError(f"{target.name}: truncated download from {url}: {size} of {expected_length} bytes")
        if digest.hexdigest() != sha256:
            raise DataError(f"{target.name}: SHA-256 mismatch for {url}: got {digest.hexdigest()}, "
                            f"expected {sha256}; the file was not cached")


def mirrors_from_env() -> tuple[str, ...]:
    """$JAXCNN_MIRRORS: comma-separated base URLs tried instead of the built-in mirrors (a local copy, say)."""
    return tuple(m.strip().rstrip("/") + "/" for m in os.environ.get("JAXCNN_MIRRORS", "").split(",") if m.strip())


def fetch(source: Source, folder=None, mirrors=None, timeout: float = 30.0) -> Path:
    """Make sure `folder` (default: the cache) holds the verified files of `source`; returns it.

    Each file is tried on each mirror in turn. A file whose digest does not match is never kept.
    """
    folder = Path(folder) if folder is not None else cache_root() / source.name
    folder.mkdir(parents=True, exist_ok=True)
    mirrors = mirrors or mirrors_from_env() or source.mirrors
    for name, sha256 in source.files.items():
        target = folder / name
        if target.is_file() and sha256_of(target) == sha256:
            continue
        errors = []
        for mirror in mirrors:
            try:
                _download_one(mirror + name, target, sha256, timeout)
                break
            except DataError as err:
                errors.append(str(err))
            except (urllib.error.URLError, OSError, ValueError) as err:
                errors.append(f"{urllib.parse.urlsplit(mirror).netloc or mirror}: {getattr(err, 'reason', err)}")
        else:
            raise DataError(f"could not download {name} of {source.name} into {folder} ({'; '.join(errors)})")
    return folder


def load_dataset(dataset: str = "mnist", folder=None, mirrors=None) -> Dataset:
    """Load a named dataset, or the IDX folder / `.mat` file `folder` when given (see module doc)."""
    if folder:
        path = Path(folder).expanduser()
        if path.suffix == ".mat":
            return load_mat(path, dataset)
        if not path.exists():
            raise DataError(f"data folder {path} does not exist (data.dir in the config)")
        return load_idx_folder(path, dataset)
    if dataset not in SOURCES:
        raise DataError(f"unknown dataset {dataset!r}: expected one of {', '.join(SOURCES)} or set data.dir")
    if dataset == "fashion_mnist" and DEBIAN_FASHION_MNIST.is_dir():
        return load_idx_folder(DEBIAN_FASHION_MNIST, dataset)
    try:
        return load_idx_folder(fetch(SOURCES[dataset], mirrors=mirrors), dataset)
    except DataError as err:
        target = cache_root() / dataset
        raise DataError(
            f"{dataset} is not available here and could not be downloaded: {err}. "
            f"Alternatives: put the four IDX files (train-images-idx3-ubyte.gz, ...) into {target} "
            f"(or set JAXCNN_DATA_DIR), point data.dir at a folder of them or at mnist_uint8.mat "
            f"(--set data.dir=PATH), or train on Fashion-MNIST (jaxcnn train fashion_mnist; "
            f"apt-get install dataset-fashion-mnist)") from None


def one_hot(labels, n_classes: int, dtype=np.float32) -> np.ndarray:
    """(N,) class indices -> (N, n_classes) one-hot targets, as the toolbox's `train_y`."""
    return np.eye(n_classes, dtype=dtype)[np.asarray(labels)]


def to_float(images, dtype=np.float32) -> np.ndarray:
    """uint8 pixels -> floats in [0, 1], as the toolbox's `double(x) / 255`."""
    return np.asarray(images, dtype=dtype) / np.asarray(255, dtype=dtype)
