"""The polyphase patch matrices by the C++ copy loop (`jaxcnn.native_patches`, `phase_patches.cc`): the same
bits as XLA's concatenations in the matrix itself, its derivative, whole training steps and evaluation, for
either layout, under jax.vmap; XLA's way where the user asks for it, and a clear error for a bad choice."""
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import EXAMPLE_LAYERS, fast, init_net, native_patches, xla_options
from jaxcnn.layers import Conv, Input, Pool

REPO = Path(__file__).resolve().parent.parent
ENV = {**{k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAXCNN_PATCHES")}, "JAX_PLATFORMS": "cpu"}
MODERN = (Input(), Conv(6, 5, "relu"), Pool(2, "max"), Conv(12, 5, "relu"), Pool(2, "max"))
RGB = (Input(), Conv(4, 3, "tanh"), Pool(2), Conv(3, 3), Pool(2))
DTYPES = [np.float32, np.float64]                                   # tests/conftest.py turns x64 on
# (maps, images, height, width, kernel, scale): the toolbox's two layers, a batch of one, non-square maps,
# 3x3 pooling, and no pooling (s = 1)
SHAPES = [(1, 500, 28, 28, 5, 2), (6, 25, 12, 12, 5, 2), (3, 1, 9, 11, 2, 2), (2, 17, 12, 9, 4, 3), (2, 5, 7, 7, 3, 1)]


@pytest.fixture(autouse=True, scope="module")
def _built():
    assert native_patches.available(np.float32), native_patches.status()


def _xla(a, k, s, layout):
    return fast.phase_patches(fast.to_layout(a, layout, fast.CHWN), k, s)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_the_copy_loop_gives_xla_s_matrix_in_either_layout(shape, dtype):
    c, n, height, width, k, s = shape
    cnhw = jnp.asarray(np.random.default_rng(0).standard_normal((c, n, height, width)), dtype)
    want = np.asarray(_xla(cnhw, k, s, fast.CNHW))
    for layout in (fast.CNHW, fast.CHWN):
        maps = fast.to_layout(cnhw, fast.CNHW, layout)
        got = np.asarray(jax.jit(lambda a: native_patches.phase_patches(a, k, s, layout.name))(maps))
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        stacked = jnp.stack([maps, -2 * maps])                          # jax.vmap: leading axes are more maps
        batched = np.asarray(jax.vmap(lambda a: fast.maps_phase_patches(a, k, s, layout))(stacked))
        np.testing.assert_array_equal(batched, np.stack([want, np.asarray(_xla(-2 * cnhw, k, s, fast.CNHW))]))


@pytest.mark.parametrize("layout", [fast.CNHW, fast.CHWN], ids=lambda l: l.name)
def test_its_derivative_is_xla_s(layout):
    """jax.grad and jax.jvp through the copy loop (its tangent is XLA's copy) give XLA's numbers exactly."""
    rng = np.random.default_rng(1)
    maps = jnp.asarray(rng.standard_normal((3, 6, 12, 12) if layout == fast.CNHW else (3, 12, 12, 6)), np.float32)
    weights = jnp.asarray(rng.standard_normal((3 * 36, 16 * 6)), np.float32)
    native = jax.grad(lambda a: jnp.sum(weights * jnp.sin(fast.maps_phase_patches(a, 5, 2, layout))))(maps)
    xla = jax.grad(lambda a: jnp.sum(weights * jnp.sin(_xla(a, 5, 2, layout))))(maps)
    np.testing.assert_array_equal(np.asarray(native), np.asarray(xla))
    tangent = jnp.ones_like(maps)
    _, native_t = jax.jvp(lambda a: fast.maps_phase_patches(a, 5, 2, layout), (maps,), (tangent,))
    np.testing.assert_array_equal(np.asarray(native_t), np.asarray(_xla(tangent, 5, 2, layout)))


def _step_and_labels(net, x, y, monkeypatch, native: bool):
    """One training step's (loss, gradients) and the labels of a forward pass, compiled afresh as training and
    evaluation compile them, with the patch matrices by the copy loop or by XLA; and the custom calls in the HLO."""
    if not native:
        monkeypatch.setattr(native_patches, "available", lambda dtype: False)
    step = xla_options.jit(lambda p, x, y: fast.loss_and_grad(p, net.layers, x, y, net.output))
    labels = xla_options.jit(lambda p, x: jnp.argmax(fast.forward(p, net.layers, x, net.output), axis=1))
    text = step.lower(net.params, x, y).compile().as_text() + labels.lower(net.params, x).compile().as_text()
    result = (step(net.params, x, y), labels(net.params, x))
    monkeypatch.undo()
    return jax.tree.leaves(result), re.findall(r'custom_call_target="(jaxcnn_phase_patches_\w+)"', text)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layers, shape, output", [(EXAMPLE_LAYERS, (28, 28), "sigmoid"),
                                                   (MODERN, (28, 28), "softmax"),
                                                   (RGB, (14, 14, 3), "sigmoid")], ids=["toolbox", "modern", "rgb"])
def test_a_training_step_and_its_labels_are_the_same_bits_either_way(layers, shape, output, dtype, monkeypatch):
    net = init_net(jax.random.key(2), layers, shape, 10, dtype, output=output)
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.random((50, *shape, 1) if len(shape) == 2 else (50, *shape)), dtype)
    y = jnp.asarray(np.eye(10)[rng.integers(0, 10, 50)], dtype)
    native, calls = _step_and_labels(net, x, y, monkeypatch, native=True)
    xla, no_calls = _step_and_labels(net, x, y, monkeypatch, native=False)
    suffix = "f32" if np.dtype(dtype) == np.float32 else "f64"
    # both layers of each net by polyphase: two matrices in the step (one pass), two in the forward pass
    assert calls == [f"jaxcnn_phase_patches_{suffix}"] * 4 and no_calls == []
    for a, b in zip(native, xla):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_shape_the_pooling_does_not_tile_is_refused_with_the_shapes():
    maps = jnp.zeros((1, 2, 10, 10), np.float32)                       # 10 - 4 + 1 = 7 rows, pooled by 3
    with pytest.raises(Exception, match=r"3x3 pooling does not tile the 4x4 convolution's output on 10x10 maps"):
        jax.block_until_ready(native_patches.phase_patches(maps, 4, 3, "CNHW"))


def _python(code: str, **env):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env={**ENV, **env},
                          capture_output=True, text=True, timeout=300)


STATUS = """
    import json, re, jax, jax.numpy as jnp
    from jaxcnn import EXAMPLE_LAYERS, fast, init_net, native_patches
    net = init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10, jnp.float32)
    text = jax.jit(lambda p, x: fast.forward(p, net.layers, x)).lower(net.params, jnp.zeros((4, 28, 28, 1))).compile().as_text()
    print(json.dumps({"status": native_patches.status(), "calls": len(re.findall("jaxcnn_phase_patches", text))}))
"""


def test_xla_s_concatenations_where_the_user_asks_for_them(tmp_path):
    done = _python(STATUS, JAXCNN_PATCHES="xla", JAXCNN_CACHE=str(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == {"status": "xla concatenations (JAXCNN_PATCHES=xla)", "calls": 0}
    assert not (tmp_path / "cache").exists()                         # nothing built


def test_no_compiler_means_xla_s_concatenations_and_says_why(tmp_path):
    done = _python(STATUS, PATH=str(tmp_path / "empty"), CXX="", JAXCNN_CACHE=str(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == {"status": "xla concatenations (no C++ compiler ($CXX, c++ or g++) on PATH)",
                                       "calls": 0}


def test_a_misspelt_choice_is_an_error_that_names_it():
    done = _python(STATUS, JAXCNN_PATCHES="natve")
    assert done.returncode != 0
    assert "JAXCNN_PATCHES='natve': expected 'native' or 'xla'" in done.stderr


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_batch_read_in_place_is_the_gathered_batch(dtype):
    """`fast.Rows`: the copy loop reads the batch's images where they lie; the step's loss and gradients, and
    the derivative with respect to the images, are those of the gathered batch, bit for bit. An RGB net
    (whose images the loop does not read in place) gathers them first, with the same numbers."""
    rng = np.random.default_rng(4)
    for layers, shape, in_place in ((EXAMPLE_LAYERS, (28, 28, 1), True), (RGB, (14, 14, 3), False)):
        net = init_net(jax.random.key(0), layers, shape[:2] if shape[2] == 1 else shape, 10, dtype)
        images = jnp.asarray(rng.random((300, *shape)), dtype)
        rows = jnp.asarray(rng.integers(0, 300, 40), jnp.int32)
        y = jnp.asarray(np.eye(10)[rng.integers(0, 10, 40)], dtype)
        by_rows = jax.jit(lambda p, im, r, y: fast.loss_and_grad(p, net.layers, fast.Rows(im, r), y))
        gathered = jax.jit(lambda p, im, r, y: fast.loss_and_grad(p, net.layers, im[r], y))
        for a, b in zip(jax.tree.leaves(by_rows(net.params, images, rows, y)),
                        jax.tree.leaves(gathered(net.params, images, rows, y))):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        text = by_rows.lower(net.params, images, rows, y).compile().as_text()
        assert ("jaxcnn_phase_patches_of_rows" in text) == in_place
        g_rows = jax.grad(lambda im: jnp.sum(fast.forward(net.params, net.layers, fast.Rows(im, rows)) ** 2))(images)
        g_gathered = jax.grad(lambda im: jnp.sum(fast.forward(net.params, net.layers, im[rows]) ** 2))(images)
        np.testing.assert_array_equal(np.asarray(g_rows), np.asarray(g_gathered))


def test_evaluation_reads_its_chunks_in_place_with_the_same_labels(monkeypatch):
    from jaxcnn import train
    net = init_net(jax.random.key(5), EXAMPLE_LAYERS, (28, 28), 10, np.float32)
    x = jnp.asarray(np.random.default_rng(6).random((1500, 28, 28, 1)), np.float32)
    in_place = jax.jit(lambda net, x: train._labels_in_chunks(net, x, 500))
    text = in_place.lower(net, x).compile().as_text()
    assert "jaxcnn_phase_patches_of_rows_f32" in text
    assert not re.search(r"%dynamic[-_]slice\S* = f32\[", text)         # no chunk of images copied out
    labels = np.asarray(in_place(net, x))
    monkeypatch.setattr(native_patches, "available", lambda dtype: False)
    sliced = jax.jit(lambda net, x: train._labels_in_chunks(net, x, 500))
    assert "jaxcnn_phase_patches" not in sliced.lower(net, x).compile().as_text()
    np.testing.assert_array_equal(labels, np.asarray(sliced(net, x)))


def test_a_row_outside_the_images_is_an_error_not_a_read_out_of_bounds():
    images = jnp.zeros((1, 10, 28, 28), np.float32)
    with pytest.raises(Exception, match=r"image 10 of a batch is outside the 10 images"):
        jax.block_until_ready(native_patches.phase_patches_of_rows(images, jnp.asarray([3, 10], jnp.int32), 5, 2))
    with pytest.raises(Exception, match=r"image -1 of a batch is outside the 10 images"):
        jax.block_until_ready(native_patches.phase_patches_of_rows(images, jnp.asarray([-1], jnp.int32), 5, 2))


def test_batches_read_in_place_under_vmap_are_each_member_s_batch():
    """A sweep's members batched by jax.vmap share the stored images and read each its own rows."""
    net = init_net(jax.random.key(7), EXAMPLE_LAYERS, (28, 28), 10, np.float32)
    rng = np.random.default_rng(8)
    images = jnp.asarray(rng.random((200, 28, 28, 1)), np.float32)
    rows = jnp.asarray(rng.integers(0, 200, (3, 20)), jnp.int32)
    by_rows = jax.vmap(lambda r: fast.forward(net.params, net.layers, fast.Rows(images, r)))(rows)
    gathered = jax.vmap(lambda r: fast.forward(net.params, net.layers, images[r]))(rows)   # vmapped alike: same dots
    np.testing.assert_array_equal(np.asarray(by_rows), np.asarray(gathered))
    np.testing.assert_allclose(np.asarray(by_rows[2]), np.asarray(fast.forward(net.params, net.layers, images[rows[2]])),
                               rtol=1e-6)                                # each member's own batch


def test_each_step_gathers_its_batch_only_where_the_copy_loop_reads_it(monkeypatch):
    """`train.gathers_per_step`: grey images whose first layer is native; not RGB images (gathered and
    transposed by XLA anyway) nor without the copy loop, where the whole-epoch gather stays (faster there)."""
    from jaxcnn import train
    grey = init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10, np.float32)
    rgb = init_net(jax.random.key(0), RGB, (14, 14, 3), 10, np.float32)
    assert train.gathers_per_step(grey, jnp.zeros((10, 28, 28, 1), np.float32))
    assert not train.gathers_per_step(rgb, jnp.zeros((10, 14, 14, 3), np.float32))
    monkeypatch.setattr(native_patches, "available", lambda dtype: False)
    assert not train.gathers_per_step(grey, jnp.zeros((10, 28, 28, 1), np.float32))
