"""The fast formulation (im2col + written-out delta rule) is the same maths as autodiff through lax.conv."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from jaxcnn import EXAMPLE_LAYERS, fast, init_net, model
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
]


_autodiff = jax.jit(jax.value_and_grad(model.loss))
_fast = jax.jit(fast.loss_and_grad, static_argnums=1)


def _check(net, images, targets):
    x, y = as_nhwc(net, images), jnp.asarray(targets, net.dtype)
    want_loss, want = _autodiff(net, x, y)
    loss, grads = _fast(net.params, net.layers, x, y)
    assert abs(float(loss - want_loss)) <= 1e-12 * abs(float(want_loss))
    assert_trees_close(grads, want.params, rtol=1e-12, normwise=True, dtype=jnp.float64)
    np.testing.assert_allclose(fast.forward(net.params, net.layers, x), model.forward_nhwc(net.params, net.layers, x),
                               rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("layers, shape, classes", STACKS)
def test_fast_gradient_equals_autodiff(layers, shape, classes):
    net = init_net(jax.random.key(4), layers, shape, classes)
    rng = np.random.default_rng(4)
    _check(net, rng.random((6, *shape)), np.eye(classes)[rng.integers(0, classes, 6)])


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1))
def test_fast_gradient_equals_autodiff_on_drawn_stacks(seed):
    _check(*random_case(seed, batch=3))


@pytest.mark.parametrize("sp, to_layout", [(fast.CNHW, (3, 0, 1, 2)), (fast.CHWN, (3, 1, 2, 0))])
def test_patches_order_matches_the_kernel_layout(sp, to_layout):
    a = jnp.arange(2 * 4 * 3 * 2.0).reshape(2, 4, 3, 2)                   # NHWC
    k = jnp.arange(2 * 2 * 2 * 3.0).reshape(2, 2, 2, 3)                   # HWIO
    maps = a.transpose(to_layout)
    z = (k.reshape(-1, 3).T @ fast.patches(maps, 2, sp)).reshape(fast._conv_out_shape(maps, 2, 3, sp))
    back_to_nhwc = np.argsort(to_layout)
    np.testing.assert_array_equal(z.transpose(back_to_nhwc), model.conv_valid(a, k))
