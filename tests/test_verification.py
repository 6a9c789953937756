"""The four groups of `jaxcnn verify`, as tests, plus derivations that are wrong on purpose."""
import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from jaxcnn import EXAMPLE_LAYERS, init_net
from jaxcnn.verification import backprop as bp
from jaxcnn.verification import checks


def _assert_rows(rows):
    failed = [row for row in rows if not row.passed]
    assert rows and not failed, failed


@pytest.mark.slow
def test_delta_rule_equals_jax_grad():
    rows = checks.check_autodiff(seeds=range(4))
    _assert_rows(rows)
    assert max(row.max_rel for row in rows) < 1e-12


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1))
def test_delta_rule_equals_jax_grad_on_drawn_stacks(seed):
    net, images, targets = checks.random_case(seed)
    _assert_rows(checks.check_manual_vs_autodiff(net, images, targets, f"seed {seed}"))


@pytest.mark.slow
def test_cnnnumgradcheck_and_check_grads(golden):
    _assert_rows(checks.check_numerical(golden))


def test_the_slides_derivations():
    _assert_rows(checks.check_derivations(seed=3))


@pytest.mark.slow
def test_parity_with_the_octave_toolbox(golden):
    rows = checks.check_golden(golden)
    _assert_rows(rows)
    assert {row.check for row in rows} >= {"toolbox cnn_after vs train_epoch + save_net",
                                          "toolbox Ls (10 steps) vs train_epoch losses"}


def test_expand_rot180_flipall_by_hand():
    np.testing.assert_array_equal(bp.expand(np.array([[1, 2], [3, 4]]), [2, 2]),
                                  [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
    np.testing.assert_array_equal(bp.rot180(np.array([[1, 2], [3, 4]])), [[4, 3], [2, 1]])
    np.testing.assert_array_equal(bp.flipall(np.arange(8).reshape(2, 2, 2)), np.arange(8)[::-1].reshape(2, 2, 2))
    np.testing.assert_array_equal(bp.convn_valid(np.array([[1.0, 2, 3]]), np.array([[1.0, 10]])), [[12.0, 23.0]])


@pytest.mark.parametrize("mistake", ["rot180 replaced by the identity", "the /s^2 dropped"])
def test_a_wrong_derivation_is_caught(monkeypatch, mistake):
    if mistake.startswith("rot180"):
        monkeypatch.setattr(bp, "rot180", lambda x: np.asarray(x))
    else:
        monkeypatch.setattr(bp, "_through_pool", lambda d_next, scale: [bp.expand(d, [scale, scale, 1]) for d in d_next])
    net = init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10)
    rng = np.random.default_rng(0)
    rows = checks.check_manual_vs_autodiff(net, rng.random((4, 28, 28)), np.eye(10)[[1, 2, 3, 4]], mistake)
    failed = [row.check for row in rows if not row.passed]
    assert any("dk conv1" in name for name in failed), rows
    assert not any("dffW" in name or "dffb" in name for name in failed)    # the output layer is still right


def test_the_packaged_golden_equals_the_full_file(golden):
    """verification/golden.npz (what an installed jaxcnn verifies against) gives back every value the
    checks read from ../shared/golden/toolbox_golden.mat, bit for bit."""
    from jaxcnn.verification import golden as golden_mod

    packaged = golden_mod.load()
    assert golden_mod.PACKAGED.stat().st_size < 2_000_000
    assert golden_mod.differences(packaged, golden) == []
    assert packaged["train_x500"].shape == (28, 28, 500) and packaged["x"].shape == (28, 28, 50)
    changed = dict(golden, Ls=golden["Ls"] * (1 + 1e-15))
    assert golden_mod.differences(packaged, changed) == [".Ls: values differ"]
