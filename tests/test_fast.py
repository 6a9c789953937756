"""The fast formulation (im2col + written-out delta rule) is the same maths as autodiff through lax.conv."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from jaxcnn import EXAMPLE_LAYERS, fast, init_net, model, xla_options
from jaxcnn.net import as_nhwc
from jaxcnn.layers import Conv, Input, Pool
from tests.helpers import assert_trees_close
from jaxcnn.verification.checks import random_case

SLOW = pytest.mark.slow                                                 # 5-9 s each on 2 cores: full tier only
STACKS = [
    (EXAMPLE_LAYERS, (28, 28), 10),
    pytest.param((Input(), Pool(2), Conv(3, 3), Pool(2)), (16, 12, 2), 3, marks=SLOW),   # pooling straight after the input
    pytest.param((Input(), Conv(2, 3), Conv(3, 2), Conv(2, 1)), (9, 12, 3), 4, marks=SLOW),  # c-c-c, RGB, non-square
    pytest.param((Input(), Conv(4, 5), Pool(3), Pool(2)), (16, 22), 5, marks=SLOW),  # s-s
    ((Input(), Conv(1, 1)), (5, 5), 2),
    pytest.param((Input(), Conv(3, 3, "tanh"), Pool(2), Conv(2, 3)), (10, 12, 3), 3, marks=SLOW),  # RGB conv1 by window
]


_autodiff = jax.jit(jax.value_and_grad(model.loss))
_fast = xla_options.jit(fast.loss_and_grad, static_argnums=(1, 4))     # compiled as training compiles it


def _check(net, images, targets):
    x, y = as_nhwc(net, images), jnp.asarray(targets, net.dtype)
    want_loss, want = _autodiff(net, x, y)
    loss, grads = _fast(net.params, net.layers, x, y, net.output)
    assert abs(float(loss - want_loss)) <= 1e-12 * abs(float(want_loss))
    assert_trees_close(grads, want.params, rtol=1e-12, normwise=True, dtype=jnp.float64)
    np.testing.assert_allclose(fast.forward(net.params, net.layers, x, net.output),
                               model.forward_nhwc(net.params, net.layers, x, net.output), rtol=1e-13, atol=1e-15)


MODERN = [
    pytest.param((Input(), Conv(3, 5, "relu"), Pool(2, "max"), Conv(4, 3, "tanh"), Pool(2)), (20, 16), 5, "softmax",
                 marks=SLOW),
    pytest.param((Input(), Conv(2, 3, "tanh"), Pool(3, "max"), Conv(3, 2, "relu"), Conv(2, 1)), (17, 20, 3), 4,
                 "sigmoid", marks=SLOW),
    ((Input(), Pool(2, "max"), Conv(3, 3, "relu"), Pool(2, "max")), (12, 16, 2), 3, "softmax"),
]


@pytest.mark.parametrize("layers, shape, classes, output", MODERN)
def test_fast_gradient_equals_autodiff_with_every_layer_option(layers, shape, classes, output):
    net = init_net(jax.random.key(5), layers, shape, classes, output=output)
    rng = np.random.default_rng(5)
    _check(net, rng.random((6, *shape)), np.eye(classes)[rng.integers(0, classes, 6)])


def test_max_pool_ties_send_the_whole_delta_to_the_first_maximum():
    """Windows with ties (pixels quantised to a few levels): reference model, autodiff and the fast path
    agree, and each window's delta lands on one element, the first maximum in row-major order."""
    layers = (Input(), Pool(2, "max"), Conv(2, 3, "relu"), Pool(2, "max"))
    net = init_net(jax.random.key(1), layers, (12, 12), 3, output="softmax")
    rng = np.random.default_rng(1)
    images = rng.integers(0, 3, (4, 12, 12)) / 2.0                      # values 0, 0.5, 1: many ties
    _check(net, images, np.eye(3)[rng.integers(0, 3, 4)])
    a = jnp.array([[1.0, 3.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0], [2.0, 2.0, 5.0, 1.0], [2.0, 2.0, 5.0, 5.0]])
    for layout, to_maps in ((fast.CNHW, lambda m: m[None, None]), (fast.CHWN, lambda m: m[None, :, :, None])):
        pooled, mask = fast.max_pool(to_maps(a), 2, layout)
        np.testing.assert_array_equal(pooled.ravel(), [3.0, 0.0, 2.0, 5.0])
        back = fast.unpool_max(jnp.ones_like(pooled), mask, 2, layout, to_maps(a).shape).reshape(4, 4)
        np.testing.assert_array_equal(back, [[0, 1, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    grad = jax.grad(lambda m: model.max_pool(m[None, :, :, None], 2).sum())(a)
    np.testing.assert_array_equal(grad, [[0, 1, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])


@pytest.mark.parametrize("layers, shape, classes", STACKS)
def test_fast_gradient_equals_autodiff(layers, shape, classes):
    net = init_net(jax.random.key(4), layers, shape, classes)
    rng = np.random.default_rng(4)
    _check(net, rng.random((6, *shape)), np.eye(classes)[rng.integers(0, classes, 6)])


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), ties=st.booleans(), soft=st.booleans())
def test_fast_gradient_equals_autodiff_on_drawn_stacks(seed, ties, soft):
    """Drawn stacks with drawn layer options (each 'c' sigmoid, tanh or ReLU, each 's' mean or max, the output
    sigmoid or softmax); with `ties`, pixels quantised to 0, ½, 1 (tied max-pool windows, ReLU at 0); with
    `soft`, targets that are not one-hot: probability distributions for softmax, any numbers for sigmoid."""
    net, images, targets = random_case(seed, batch=3, modern=True)
    rng = np.random.default_rng(seed)
    if ties:
        images = np.round(images * 2) / 2
    if soft:
        targets = (rng.dirichlet(np.ones(net.n_classes), len(images)) if net.output == "softmax"
                   else rng.uniform(-1.0, 2.0, targets.shape))
    _check(net, images, targets)


@pytest.mark.parametrize("sp, to_layout", [(fast.CNHW, (3, 0, 1, 2)), (fast.CHWN, (3, 1, 2, 0))])
def test_patches_order_matches_the_kernel_layout(sp, to_layout):
    a = jnp.arange(2 * 4 * 3 * 2.0).reshape(2, 4, 3, 2)                   # NHWC
    k = jnp.arange(2 * 2 * 2 * 3.0).reshape(2, 2, 2, 3)                   # HWIO
    maps = a.transpose(to_layout)
    z = (k.reshape(-1, 3).T @ fast.patches(maps, 2, sp)).reshape(fast._conv_out_shape(maps, 2, 3, sp))
    back_to_nhwc = np.argsort(to_layout)
    np.testing.assert_array_equal(z.transpose(back_to_nhwc), model.conv_valid(a, k))


@pytest.mark.parametrize("k, s, hw", [(5, 2, (28, 28)), (3, 3, (9, 12)), (2, 2, (7, 5))])
def test_phase_product_is_the_convolution_grouped_by_window(k, s, hw):
    """`phase_kernel` @ `phase_patches` gives conv_valid's output, member (di, dj) of window (I, J) at row
    (o, di, dj), column (I, J, n); its transposes (`phase_col2im`, `kernel_gradient_from_phase`) are the adjoints."""
    rng = np.random.default_rng(k * 10 + s)
    n, c_in, c_out = 3, 2, 4
    x = jnp.asarray(rng.standard_normal((n, *hw, c_in)))                           # NHWC
    kern = jnp.asarray(rng.standard_normal((k, k, c_in, c_out)))                   # HWIO
    maps = x.transpose(3, 1, 2, 0)                                                 # (C, H, W, N)
    z = (fast.phase_kernel(kern, s) @ fast.phase_patches(maps, k, s))
    h, w = (hw[0] - k + 1) // s, (hw[1] - k + 1) // s
    want = model.conv_valid(x, kern)[:, :h * s, :w * s]                            # (N, H', W', C_out)
    want = want.reshape(n, h, s, w, s, c_out).transpose(5, 2, 4, 1, 3, 0).reshape(c_out * s * s, -1)
    np.testing.assert_allclose(z, want, rtol=1e-12, atol=1e-12)

    d_phases = jnp.asarray(rng.standard_normal(fast.phase_patches(maps, k, s).shape))
    cropped = maps[:, :(h - 1) * s + k + s - 1, :(w - 1) * s + k + s - 1]
    lhs = jnp.vdot(fast.phase_patches(cropped, k, s), d_phases)
    rhs = jnp.vdot(cropped, fast.phase_col2im(d_phases, c_in, k, s, cropped.shape))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)
    d_matrix = jnp.asarray(rng.standard_normal(fast.phase_kernel(kern, s).shape))
    np.testing.assert_allclose(jnp.vdot(fast.phase_kernel(kern, s), d_matrix),
                               jnp.vdot(kern, fast.kernel_gradient_from_phase(d_matrix, k, s, c_in, c_out)), rtol=1e-12)


def test_which_layers_go_by_phase():
    """Both layers of the toolbox net go by polyphase; a conv whose pooling does not tile its output, or whose
    phase kernel would be more than twice the products, keeps im2col."""
    net = init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10)
    x = jnp.zeros((2, 28, 28, 1), net.dtype)
    kinds = [type(r).__name__ for r in fast.forward_records(net.params, net.layers, x).records]
    assert kinds == ["PhaseConvRecord", "PhaseConvRecord"]
    assert fast._by_phase((Input(), Conv(2, 5), Pool(2)), 1, (28, 28))
    assert not fast._by_phase((Input(), Conv(2, 5), Pool(2)), 1, (27, 28))       # 23 rows: windows do not tile
    assert not fast._by_phase((Input(), Conv(2, 3), Pool(3, "max")), 1, (17, 20))   # (3+3-1)² = 25 > 2·9
    assert not fast._by_phase((Input(), Conv(2, 3), Conv(2, 3)), 1, (9, 9))
