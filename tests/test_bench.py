"""`jaxcnn bench`: the baseline computes the same maths as jaxcnn's model."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import bench
from jaxcnn.data import one_hot
from jaxcnn.layers import EXAMPLE_LAYERS, Conv, Input, Pool
from jaxcnn.model import init_net, loss


def assert_trees_close(actual, expected, rtol):
    """Same tree structure, then every leaf within rtol of the largest entry of its expected leaf."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    leaves = jax.tree.leaves(expected)
    assert leaves
    for a, e in zip(jax.tree.leaves(actual), leaves):
        e = np.asarray(e)
        np.testing.assert_allclose(np.asarray(a), e, rtol=rtol, atol=rtol * np.abs(e).max())


@pytest.mark.parametrize("layers, image_shape", [(EXAMPLE_LAYERS, (28, 28, 1)),
                                                 ((Input(), Conv(3, 3), Pool(2), Conv(2, 2)), (10, 14, 2))])
def test_baseline_loss_and_gradient_are_the_model_s(layers, image_shape, rng):
    """The benchmark's denominator computes `model.loss` and its gradient, also with non-square multi-channel maps
    (where an NHWC flatten or a kernel transposed the wrong way would show)."""
    net = init_net(jax.random.key(3), layers, image_shape, 10, jnp.float64)
    net = jax.tree.map(lambda p: p + 0.1 * rng.standard_normal(p.shape), net)     # non-zero biases too
    x = jnp.asarray(rng.uniform(size=(7, *image_shape)))
    y = jnp.asarray(one_hot(rng.integers(0, 10, 7), 10, np.float64))
    value, grads = jax.value_and_grad(bench.baseline_loss)(net, x, y)
    expected_value, expected_grads = jax.value_and_grad(loss)(net, x, y)
    assert value.dtype == jnp.float64 and value > 0
    np.testing.assert_allclose(value, expected_value, rtol=1e-12)
    assert_trees_close(grads, expected_grads, 1e-12)
