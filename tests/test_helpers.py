"""The test machinery: the shared tree assertion fails where a zip over leaves would not."""
import jax.numpy as jnp
import pytest

from tests.helpers import assert_trees_close

TREE = {"conv": [{"k": jnp.ones((2, 3)), "b": jnp.zeros(2)}], "ffW": jnp.eye(2)}


def test_a_missing_leaf_is_a_failure_not_a_shorter_zip():
    shorter = {"conv": [{"k": jnp.ones((2, 3)), "b": jnp.zeros(2)}]}
    with pytest.raises(AssertionError, match="tree structures differ"):
        assert_trees_close(TREE, shorter)
    with pytest.raises(AssertionError, match="tree structures differ"):
        assert_trees_close({"a": jnp.ones(2), "b": jnp.ones(2)}, {"a": jnp.ones(2), "c": jnp.ones(2)})


def test_shape_dtype_and_value_failures_name_the_leaf():
    with pytest.raises(AssertionError, match=r"\['ffW'\]: shape \(2, 2\), want \(4,\)"):
        assert_trees_close(TREE, {**TREE, "ffW": jnp.ones(4)})
    with pytest.raises(AssertionError, match=r"\['ffW'\]: dtype float32, want float64"):
        assert_trees_close({**TREE, "ffW": jnp.eye(2, dtype=jnp.float32)}, TREE)
    with pytest.raises(AssertionError, match=r"\['conv'\]\[0\]\['b'\]: dtype float64, want float32"):
        assert_trees_close(TREE, TREE, dtype=jnp.float32)
    off = {**TREE, "conv": [{"k": jnp.ones((2, 3)).at[1, 2].add(1e-9), "b": jnp.zeros(2)}]}
    with pytest.raises(AssertionError, match=r"\['conv'\]\[0\]\['k'\]"):
        assert_trees_close(off, TREE)                                   # rtol = atol = 0: bit for bit
    with pytest.raises(AssertionError, match=r"\['conv'\]\[0\]\['k'\]"):
        assert_trees_close(off, TREE, rtol=1e-10)
    assert_trees_close(off, TREE, rtol=1e-8)


def test_normwise_scales_by_the_largest_entry():
    want = {"w": jnp.array([1.0, 1e-6])}
    got = {"w": jnp.array([1.0, 2e-6])}                                  # 100% off in the small entry
    assert_trees_close(got, want, rtol=1e-5, normwise=True)             # but 1e-6 of the largest
    with pytest.raises(AssertionError, match=r"\['w'\]: max \|got - want\| = 1e-06 > 0 \+ 1e-07 \* 1"):
        assert_trees_close(got, want, rtol=1e-7, normwise=True)
    with pytest.raises(AssertionError):
        assert_trees_close(got, want, rtol=1e-5)                         # elementwise it fails

