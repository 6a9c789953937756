"""The test machinery: the shared tree assertion fails where a zip over leaves would not, and the
Hypothesis profile follows $CI without undoing each test's own settings."""
import os

import jax.numpy as jnp
import pytest
from hypothesis import settings

from tests import test_fast, test_verification
from tests.helpers import assert_trees_close, hypothesis_profile

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


@pytest.mark.parametrize("environ, profile", [
    ({"CI": "true"}, "ci"), ({"CI": "1"}, "ci"), ({}, "dev"), ({"CI": ""}, "dev"), ({"CI": "false"}, "dev")])
def test_the_hypothesis_profile_follows_the_ci_variable(environ, profile):
    assert hypothesis_profile(environ) == profile


@pytest.mark.parametrize("test", [test_fast.test_fast_gradient_equals_autodiff_on_drawn_stacks,
                                  test_verification.test_delta_rule_equals_jax_grad_on_drawn_stacks])
def test_per_test_settings_sit_on_top_of_the_loaded_profile(test):
    assert not settings.get_profile("dev").derandomize and settings.get_profile("ci").derandomize
    on_ci = hypothesis_profile(os.environ) == "ci"
    assert settings.default.derandomize is on_ci and (settings.default.database is None) is on_ci
    own = test._hypothesis_internal_use_settings           # what @settings(...) on the test resolved to
    assert own.max_examples == 6 and own.deadline is None  # the test's own choices win ...
    assert own.derandomize is on_ci                         # ... and the profile fills in the rest
