"""Hand-computed values on tiny inputs, the loss formula, the initialisation, dtypes."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import EXAMPLE_LAYERS, Net, init_net, loss_and_grad, predict
from jaxcnn.layers import Conv, Input, Pool
from jaxcnn.model import conv_valid, feature_vector, mean_pool
from jaxcnn.numerics import mse_loss, sigm


def test_conv_is_a_valid_cross_correlation_written_out():
    a = jnp.arange(16.0).reshape(1, 4, 4, 1)
    k = jnp.arange(9.0).reshape(3, 3, 1, 1)
    # out[0,0] = Σ a[u,v]·k[u,v] = 0·0+1·1+2·2+4·3+5·4+6·5+8·6+9·7+10·8 = 258; each step right adds Σk = 36,
    # each step down adds 4·Σk = 144.
    want = np.array([[258.0, 294.0], [402.0, 438.0]])
    np.testing.assert_array_equal(np.asarray(conv_valid(a, k))[0, :, :, 0], want)


def test_conv_sums_over_input_maps():
    a = jnp.stack([jnp.ones((3, 3)), 2 * jnp.ones((3, 3))], -1)[None]
    k = jnp.stack([jnp.ones((2, 2)), 10 * jnp.ones((2, 2))], -1)[..., None]  # (2, 2, C_in=2, C_out=1)
    np.testing.assert_array_equal(np.asarray(conv_valid(a, k))[0, :, :, 0], np.full((2, 2), 4 * 1 + 4 * 20.0))


def test_mean_pool_averages_blocks():
    a = jnp.arange(16.0).reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(np.asarray(mean_pool(a, 2))[0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]])
    a3 = jnp.arange(36.0).reshape(1, 6, 6, 1)
    assert float(mean_pool(a3, 3)[0, 0, 0, 0]) == pytest.approx(np.mean([0, 1, 2, 6, 7, 8, 12, 13, 14]))


def test_feature_vector_is_map_by_map_row_major():
    a = jnp.arange(8.0).reshape(1, 2, 2, 2)        # a[0, y, x, c] = 4y + 2x + c
    # map 0: (0, 2, 4, 6) then map 1: (1, 3, 5, 7)
    np.testing.assert_array_equal(np.asarray(feature_vector(a))[0], [0, 2, 4, 6, 1, 3, 5, 7])


def test_sigm_and_loss_are_the_toolbox_formulas():
    np.testing.assert_allclose(np.asarray(sigm(jnp.array([0.0, 2.0]))), [0.5, 1 / (1 + math.exp(-2))], rtol=1e-15)
    o = jnp.array([[0.2, 0.9], [0.5, 0.1]])
    y = jnp.array([[0.0, 1.0], [1.0, 0.0]])
    # ½·(0.04 + 0.01 + 0.25 + 0.01) / 2
    assert float(mse_loss(o, y)) == pytest.approx(0.0775, rel=1e-14)
    with pytest.raises(ValueError, match="targets must have the outputs. shape"):
        mse_loss(o, y[:, :1])


def test_tiny_net_forward_by_hand():
    net = init_net(jax.random.key(0), (Input(), Conv(1, 2), Pool(2)), (3, 5), 1)
    k = jnp.array([[1.0, 0.0], [0.0, -1.0]]).reshape(2, 2, 1, 1)
    params = {"conv": [{"k": k, "b": jnp.array([0.5])}], "ffW": jnp.array([[2.0, -1.0]]), "ffb": jnp.array([0.25])}
    net = Net(params, net.layers, net.input_shape, 1)
    x = np.arange(15.0).reshape(1, 3, 5) / 10
    z = x[0, :2, :4] - x[0, 1:3, 1:5] + 0.5          # every entry: -0.6 + 0.5 = -0.1
    a = 1 / (1 + np.exp(-z))
    fv = np.array([a[:2, :2].mean(), a[:2, 2:4].mean()])
    want = 1 / (1 + np.exp(-(2 * fv[0] - fv[1] + 0.25)))
    assert float(predict(net, x)[0, 0]) == pytest.approx(want, rel=1e-14)


def test_initialisation_follows_cnnsetup():
    net = init_net(jax.random.key(3), EXAMPLE_LAYERS, (28, 28), 10)
    bounds = [math.sqrt(6 / (1 * 25 + 6 * 25)), math.sqrt(6 / (6 * 25 + 12 * 25))]
    for p, bound in zip(net.params["conv"], bounds):
        k = np.asarray(p["k"])
        assert np.abs(k).max() <= bound and np.abs(k).max() > 0.9 * bound       # uniform over the whole range
        assert abs(k.std() - bound / math.sqrt(3)) < 0.1 * bound                  # std of U(-b, b)
        assert not np.asarray(p["b"]).any()
    w = np.asarray(net.params["ffW"])
    assert np.abs(w).max() <= math.sqrt(6 / (10 + 192))
    assert not np.asarray(net.params["ffb"]).any()


def test_initialisation_is_a_function_of_the_key():
    a = init_net(jax.random.key(5), EXAMPLE_LAYERS, (28, 28), 10)
    b = init_net(jax.random.key(5), EXAMPLE_LAYERS, (28, 28), 10)
    c = init_net(jax.random.key(6), EXAMPLE_LAYERS, (28, 28), 10)
    assert all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a.params, b.params)))
    assert not jnp.array_equal(a.params["ffW"], c.params["ffW"])


def test_float64_stays_float64_and_float32_stays_float32():
    x = np.random.default_rng(0).random((2, 28, 28))
    y = np.eye(10)[[1, 2]]
    for dtype in (jnp.float32, jnp.float64):
        net = init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10, dtype=dtype)
        loss, grads = loss_and_grad(net, x, y)
        assert loss.dtype == dtype and predict(net, x).dtype == dtype
        assert {leaf.dtype for leaf in jax.tree.leaves(grads)} == {np.dtype(dtype)}


def test_images_are_checked():
    net = init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10)
    with pytest.raises(ValueError, match=r"\(H, W, C\) = \(28, 28, 1\)"):
        predict(net, np.zeros((2, 27, 28)))
    with pytest.raises(ValueError, match="floating point"):
        predict(net, np.zeros((2, 28, 28), np.uint8))
