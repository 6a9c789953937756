import contextlib
import gzip
import hashlib
import http.server
import re
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from jaxcnn import data
from jaxcnn.data import DataError, Source


def write_idx(path: Path, array: np.ndarray, compress: bool = False, type_code: int = 0x08) -> Path:
    raw = struct.pack(">HBB", 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def make_folder(folder: Path, n_train=12, n_test=5, shape=(6, 5), compress=True, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8)}
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        write_idx(folder / (stem + (".gz" if compress else "")), array, compress)
    return arrays


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip_any_count_and_size(tmp_path, compress):
    arrays = make_folder(tmp_path, n_train=7, n_test=3, shape=(9, 4), compress=compress)
    ds = data.load_idx_folder(tmp_path, "toy")
    np.testing.assert_array_equal(ds.train_images, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.test_labels, arrays["t10k-labels-idx1-ubyte"])
    assert ds.train_images.shape == (7, 9, 4) and ds.test_images.shape == (3, 9, 4)


def test_idx_other_types(tmp_path):
    values = np.array([[1.5, -2.0], [3.25, 4.0]], dtype=np.float32)
    np.testing.assert_array_equal(data.read_idx(write_idx(tmp_path / "f", values, type_code=0x0D)), values)


@pytest.mark.parametrize("corrupt, message", [
    (lambda raw: b"\x00\x00\x07\x03" + raw[4:], "wrong magic number 0x00000703"),
    (lambda raw: b"\x01\x00\x08\x03" + raw[4:], "wrong magic number"),
    (lambda raw: raw[:-10], "truncated: dimensions 12x6x5 need 360 data bytes, found 350"),
    (lambda raw: raw + b"\x00", "trailing bytes"),
    (lambda raw: raw[:9], "truncated header"),
    (lambda raw: raw[:2], "too short for an IDX header"),
])
def test_corrupt_idx_files_are_named(tmp_path, corrupt, message):
    make_folder(tmp_path, compress=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(DataError) as err:
        data.load_idx_folder(tmp_path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_truncated_gzip_is_named(tmp_path):
    make_folder(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: damaged or truncated gzip"):
        data.load_idx_folder(tmp_path)


@pytest.mark.parametrize("replace, message", [
    (("train-labels-idx1-ubyte.gz", np.arange(11, dtype=np.uint8) % 10), "12 training images but 11 training labels"),
    (("t10k-labels-idx1-ubyte.gz", np.array([1, 2, 10, 3, 4], np.uint8)), "test labels out of range: found 1..10"),
    (("train-images-idx3-ubyte.gz", np.zeros((12, 30), np.uint8)), "training images must have 3 or 4 dimensions"),
    (("t10k-labels-idx1-ubyte.gz", np.zeros((5, 2), np.uint8)), "test labels must have 1 dimension"),
    (("t10k-images-idx3-ubyte.gz", np.zeros((5, 6, 6), np.uint8)), "differ in size"),
])
def test_inconsistent_files_are_named(tmp_path, replace, message):
    make_folder(tmp_path)
    write_idx(tmp_path / replace[0], replace[1], compress=True)
    with pytest.raises(DataError, match=message):
        data.load_idx_folder(tmp_path)


def test_missing_folder_and_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data.load_dataset("mnist", tmp_path / "nope")
    make_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"missing t10k-labels-idx1-ubyte\[.gz\]"):
        data.load_idx_folder(tmp_path)


def test_toolbox_mat_file(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 8)
    onehot = np.eye(10, dtype=np.uint8)[labels]
    # mnist_uint8.mat: rows are the images flattened row-major (the toolbox then does reshape(train_x', 28, 28, N))
    scipy.io.savemat(tmp_path / "mnist_uint8.mat", {"train_x": images.reshape(8, 784), "train_y": onehot,
                                                    "test_x": images[:3].reshape(3, 784), "test_y": onehot[:3]})
    ds = data.load_dataset("mnist", tmp_path / "mnist_uint8.mat")
    np.testing.assert_array_equal(ds.train_images, images)
    np.testing.assert_array_equal(ds.train_labels, labels)
    scipy.io.savemat(tmp_path / "bad.mat", {"train_x": images.reshape(8, 784)})
    with pytest.raises(DataError, match="missing variable.*train_y, test_x, test_y"):
        data.load_mat(tmp_path / "bad.mat")
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(DataError, match="junk.mat: damaged or not a MATLAB"):
        data.load_mat(tmp_path / "junk.mat")


@pytest.mark.parametrize("row", [[0, 1, 1] + [0] * 7, [0] * 10, [0.5, 0.5] + [0] * 8])
def test_toolbox_mat_targets_that_are_not_one_hot_are_refused(tmp_path, row):
    """argmax would silently turn a soft or empty row into a label; the file is refused, naming the row (1-based)."""
    images = np.zeros((3, 784), np.uint8)
    train_y = np.eye(10)[[0, 1, 2]]
    train_y[1] = row
    scipy.io.savemat(tmp_path / "m.mat", {"train_x": images, "train_y": train_y, "test_x": images, "test_y": np.eye(10)[:3]})
    with pytest.raises(DataError, match=r"m.mat: .*train_y row 2 is .*not one-hot"):
        data.load_mat(tmp_path / "m.mat")


def test_subset_bounds(tmp_path):
    make_folder(tmp_path)
    ds = data.load_idx_folder(tmp_path)
    assert len(ds.subset(5, 2).train_labels) == 5
    with pytest.raises(DataError, match="data.n_train = 13: must be between 1 and the 12"):
        ds.subset(13)


def test_debian_fashion_mnist_is_read_in_place(fashion, golden):
    assert fashion.train_images.shape == (60000, 28, 28) and fashion.test_images.shape == (10000, 28, 28)
    assert np.bincount(fashion.train_labels).tolist() == [6000] * 10
    # the golden file holds the first 500 training images in the toolbox's transposed layout
    np.testing.assert_array_equal(fashion.train_images[:500] / 255, golden["train_x500"].transpose(2, 1, 0))


# ---- downloads, against a local HTTP server on loopback ------------------------------------------

@contextlib.contextmanager
def serve(routes: dict[str, bytes], lie_about_length: set = frozenset()):
    """Serve `routes` (path -> body) on 127.0.0.1; paths in `lie_about_length` announce more bytes than sent."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = routes.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + (100 if self.path in lie_about_length else 0)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _source(folder: Path) -> tuple[Source, dict[str, bytes]]:
    make_folder(folder)
    bodies = {p.name: p.read_bytes() for p in folder.iterdir()}
    return Source("toy", {name: hashlib.sha256(body).hexdigest() for name, body in bodies.items()}, ()), bodies


def test_download_tries_mirrors_in_order_and_checks_digests(tmp_path):
    source, bodies = _source(tmp_path / "origin")
    with serve({f"/good/{n}": b for n, b in bodies.items()}) as url:
        folder = data.fetch(source, tmp_path / "cache", mirrors=[f"{url}/missing/", f"{url}/good/"])
    for name, body in bodies.items():
        assert (folder / name).read_bytes() == body
    assert not list(folder.glob(".*part"))
    ds = data.load_idx_folder(folder)
    assert ds.train_images.shape == (12, 6, 5)
    # a second fetch uses the cache: no server needed
    assert data.fetch(source, folder, mirrors=["http://127.0.0.1:9/never/"]) == folder


def test_a_digest_mismatch_is_an_error_and_never_cached(tmp_path):
    source, bodies = _source(tmp_path / "origin")
    tampered = {f"/m/{n}": (b[:20] + bytes([b[20] ^ 0xFF]) + b[21:] if "t10k-images" in n else b)
                for n, b in bodies.items()}
    with serve(tampered) as url:
        with pytest.raises(DataError) as err:
            data.fetch(source, tmp_path / "cache", mirrors=[f"{url}/m/"])
    assert "t10k-images-idx3-ubyte.gz: SHA-256 mismatch" in str(err.value) and "was not cached" in str(err.value)
    assert not (tmp_path / "cache" / "t10k-images-idx3-ubyte.gz").exists()
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]


def test_a_truncated_download_is_an_error_and_never_cached(tmp_path):
    source, bodies = _source(tmp_path / "origin")
    with serve({f"/m/{n}": b for n, b in bodies.items()}, lie_about_length={"/m/train-labels-idx1-ubyte.gz"}) as url:
        with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz"):
            data.fetch(source, tmp_path / "cache", mirrors=[f"{url}/m/"])
    assert not (tmp_path / "cache" / "train-labels-idx1-ubyte.gz").exists()


def test_offline_mnist_names_the_cache_and_the_alternatives(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXCNN_DATA_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataError) as err:
        data.load_dataset("mnist", mirrors=["http://127.0.0.1:9/"])
    message = str(err.value)
    assert str(tmp_path / "cache" / "mnist") in message
    assert "data.dir" in message and "jaxcnn train fashion_mnist" in message


# Debian's dataset-fashion-mnist holds Zalando's files with the gzip header normalised (dh_strip_nondeterminism:
# the FNAME field dropped, the time stamp set to the package's, 2020-06-05); the deflate data, CRC and length
# are untouched. Putting Zalando's header back (FLG.FNAME, the file's name, and its 2017-08-31 time stamp)
# gives the published bytes. The time stamps were found by trying every second of mid-2017 against the
# published digest: a match among ~10^7 tries is no coincidence, so the digests and Debian's data agree.
ZALANDO_GZIP_MTIME = {"train-images-idx3-ubyte.gz": 1504176606, "train-labels-idx1-ubyte.gz": 1504176606,
                      "t10k-images-idx3-ubyte.gz": 1504176627, "t10k-labels-idx1-ubyte.gz": 1504176627}


def _with_zalandos_gzip_header(debian: bytes, name: str) -> bytes:
    """RFC 1952: ID1 ID2 CM FLG MTIME(4, little-endian) XFL OS [FNAME NUL] deflate data, CRC32, ISIZE."""
    assert debian[:4] == b"\x1f\x8b\x08\x00", f"{name}: not the normalised gzip header ({debian[:4].hex()})"
    flags_fname = b"\x08"
    return (debian[:3] + flags_fname + struct.pack("<I", ZALANDO_GZIP_MTIME[name]) + debian[8:10]
            + name.removesuffix(".gz").encode() + b"\0" + debian[10:])


def test_the_fashion_mnist_digests_match_debians_files(fashion_folder, tmp_path):
    """The loader's published SHA-256 against an independent copy: Debian's dataset-fashion-mnist."""
    names = sorted(p.name for p in fashion_folder.glob("*.gz"))
    assert names == sorted(data.FASHION_MNIST.files)
    for name in names:
        debian = (fashion_folder / name).read_bytes()
        restored = tmp_path / name
        restored.write_bytes(_with_zalandos_gzip_header(debian, name))
        assert data.sha256_of(restored) == data.FASHION_MNIST.files[name], name
        assert gzip.decompress(restored.read_bytes()) == gzip.decompress(debian)          # same data, same CRC


def test_the_digests_are_well_formed_and_distinct():
    """No MNIST files here to hash: at least each digest must be 64 lowercase hex digits, and no two alike
    (a digest pasted twice, or a truncated one, fails)."""
    digests = [d for s in data.SOURCES.values() for d in s.files.values()]
    assert len(digests) == 8
    assert all(re.fullmatch(r"[0-9a-f]{64}", d) for d in digests), digests
    assert len(set(digests)) == len(digests)
    assert all(set(s.files) == {f + ".gz" for f in data.IDX_FILES} for s in data.SOURCES.values())
