"""Targets: the reference gradient (`jaxcnn.loss_and_grad`, autodiff) and the fast one (od = o − y, in
`train.fast_loss_and_grad` and `train_epoch`) agree on every target they accept, and every entry point
refuses the same targets with the same one line.

Softmax/cross-entropy: od = o − y is N·dL/dz only when each target row sums to 1 (in general it is
o·Σy − y), so a softmax net takes probability distributions only. Sigmoid/MSE: any finite targets."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import evaluate, fast, init_net, loss_and_grad, model, train_epoch
from jaxcnn.layers import Conv, Input, Pool
from jaxcnn.net import target_sum_tolerance
from jaxcnn.train import fast_loss_and_grad
from tests.helpers import assert_trees_close

LAYERS = (Input(), Conv(3, 3, "relu"), Pool(2, "max"), Conv(4, 3, "tanh"))
N, CLASSES = 6, 4
TIGHT = dict(rtol=1e-11, atol=1e-13)


def _case(output, dtype=jnp.float64):
    net = init_net(jax.random.key(3), LAYERS, (10, 10), CLASSES, dtype, output=output, init="he")
    images = np.random.default_rng(0).random((N, 10, 10)).astype(dtype)
    return net, images


def _sgd_epoch_net(net, grads, alpha=0.5):
    return jax.tree.map(lambda w, g: w - jnp.asarray(alpha, net.dtype) * g, net.params, grads.params)


def _soft_distributions(rng):
    """One-hot, label-smoothed and Dirichlet rows: probability distributions that are not all one-hot."""
    one_hot = np.eye(CLASSES)[[0, 1, 2, 3, 0, 1]]
    smoothed = 0.9 * one_hot + 0.1 / CLASSES
    dirichlet = rng.dirichlet(np.ones(CLASSES), N)
    return {"one-hot": one_hot, "label-smoothed": smoothed, "dirichlet": dirichlet}


@pytest.mark.parametrize("kind", ["one-hot", "label-smoothed", "dirichlet"])
def test_both_gradients_agree_on_softmax_distributions(kind):
    net, images = _case("softmax")
    targets = _soft_distributions(np.random.default_rng(1))[kind]
    loss, grads = loss_and_grad(net, images, targets)
    fast_loss, fast_grads = fast_loss_and_grad(net, images, targets)
    np.testing.assert_allclose(fast_loss, loss, **TIGHT)
    assert_trees_close(fast_grads.params, grads.params, **TIGHT)
    assert float(jnp.abs(grads.params["ffb"]).max()) > 1e-3            # a real gradient, not zeros
    trained, losses = train_epoch(net, images, targets, np.arange(N), alpha=0.5, batchsize=N)
    np.testing.assert_allclose(losses[0], loss, **TIGHT)
    assert_trees_close(trained.params, _sgd_epoch_net(net, grads), **TIGHT)


def test_both_gradients_agree_on_any_finite_sigmoid_targets():
    """MSE is defined for every target: rows that sum to 0.5, negative and above-one entries are all fine."""
    net, images = _case("sigmoid")
    targets = np.random.default_rng(2).uniform(-2.0, 3.0, (N, CLASSES))
    targets[0] = [0.5, 0.0, 0.0, 0.0]
    loss, grads = loss_and_grad(net, images, targets)
    fast_loss, fast_grads = fast_loss_and_grad(net, images, targets)
    np.testing.assert_allclose(fast_loss, loss, **TIGHT)
    assert_trees_close(fast_grads.params, grads.params, **TIGHT)
    trained, _ = train_epoch(net, images, targets, np.arange(N), alpha=0.5, batchsize=N)
    assert_trees_close(trained.params, _sgd_epoch_net(net, grads), **TIGHT)


def test_unchecked_the_fast_rule_is_wrong_by_o_times_one_minus_the_row_sum():
    """Why softmax targets are checked: with a row summing to 0.5 the losses agree but the fast path's
    ffb gradient is off by o·(1 − Σy)/N (the issue's 0.29), which the checked entry points now refuse."""
    net, images = _case("softmax")
    targets = np.eye(CLASSES)[[0, 1, 2, 3, 0, 1]]
    targets[2] = [0.0, 0.0, 0.5, 0.0]
    x, y = model.as_nhwc(net, images), jnp.asarray(targets)
    loss, grads = jax.jit(jax.value_and_grad(model.loss))(net, x, y)
    fast_loss, fast_grads = jax.jit(fast.loss_and_grad, static_argnums=(1, 4))(net.params, net.layers, x, y, "softmax")
    np.testing.assert_allclose(fast_loss, loss, **TIGHT)
    o = np.asarray(model.forward_nhwc(net.params, net.layers, x, "softmax"))
    gap = o[2] * (1 - targets[2].sum()) / N
    np.testing.assert_allclose(np.asarray(fast_grads["ffb"]) - np.asarray(grads.params["ffb"]), gap, rtol=1e-9)
    assert np.abs(gap).max() > 1e-3


def _bad_softmax_targets():
    good = np.eye(CLASSES)[[0, 1, 2, 3, 0, 1]]
    cases = {}
    for name, row, values, message in [
        ("row sums to 0.5", 2, [0.0, 0.0, 0.5, 0.0], "targets row 2 sums to 0.5: softmax/cross-entropy targets "
                                                      "must be a probability distribution per sample"),
        ("negative entry, sum 1", 4, [1.5, -0.5, 0.0, 0.0], "targets row 4 holds -0.5 in column 1: softmax"),
        ("sum 1 + 1e-9", 1, [0.0, 1.0 + 1e-9, 0.0, 0.0], "targets row 1 sums to 1.000000001: softmax"),
        ("nan", 5, [0.0, np.nan, 1.0, 0.0], "targets row 5 holds nan in column 1: targets must be finite"),
        ("inf", 0, [np.inf, 0.0, 0.0, 0.0], "targets row 0 holds inf in column 0: targets must be finite"),
        ("all zero", 3, [0.0, 0.0, 0.0, 0.0], "targets row 3 sums to 0.0: softmax"),
    ]:
        targets = good.copy()
        targets[row] = values
        cases[name] = (targets, message)
    return cases


ENTRY_POINTS = {
    "loss_and_grad": lambda net, x, y: loss_and_grad(net, x, y),
    "fast_loss_and_grad": lambda net, x, y: fast_loss_and_grad(net, x, y),
    "train_epoch": lambda net, x, y: train_epoch(net, x, y, np.arange(N), batchsize=3),
    "evaluate": lambda net, x, y: evaluate(net, x, y),
}


@pytest.mark.parametrize("case", list(_bad_softmax_targets()))
def test_every_entry_point_refuses_the_same_softmax_targets_in_one_line(case):
    net, images = _case("softmax")
    targets, message = _bad_softmax_targets()[case]
    for name, call in ENTRY_POINTS.items():
        with pytest.raises(ValueError) as err:
            call(net, images, targets)
        assert str(err.value).startswith(message), (name, str(err.value))
        assert "\n" not in str(err.value), name


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_every_entry_point_refuses_non_finite_sigmoid_targets(value):
    net, images = _case("sigmoid")
    targets = np.zeros((N, CLASSES))
    targets[3, 2] = value
    for name, call in ENTRY_POINTS.items():
        with pytest.raises(ValueError, match=rf"^targets row 3 holds {value} in column 2: targets must be finite$"):
            call(net, images, targets)


@pytest.mark.parametrize("dtype", [pytest.param(jnp.float32, marks=pytest.mark.slow), jnp.float64])
def test_the_sum_tolerance_is_the_rounding_of_the_net_s_dtype(dtype):
    """A true distribution rounded to the net's dtype is accepted; a row off by 4× the tolerance is not."""
    net, images = _case("softmax", dtype)
    tolerance = target_sum_tolerance(CLASSES, dtype)
    assert tolerance == CLASSES * np.finfo(dtype).eps
    rng = np.random.default_rng(5)
    rounded = rng.dirichlet(np.full(CLASSES, 0.3), N).astype(dtype)       # sums off 1 by rounding only
    loss_and_grad(net, images, rounded)
    train_epoch(net, images, rounded, np.arange(N), batchsize=N)
    off = np.eye(CLASSES, dtype=np.float64)[[0, 1, 2, 3, 0, 1]]
    off[4, 0] += 4 * tolerance
    with pytest.raises(ValueError, match="targets row 4 sums to 1.0"):
        loss_and_grad(net, images, off)
    with pytest.raises(ValueError, match="targets row 4 sums to 1.0"):
        train_epoch(net, images, off, np.arange(N), batchsize=N)


def test_evaluate_still_takes_class_indices_and_one_hot_rows():
    net, images = _case("softmax")
    labels = np.array([0, 1, 2, 3, 0, 1])
    by_index = evaluate(net, images, labels)
    assert evaluate(net, images, np.eye(CLASSES)[labels]).error_rate == by_index.error_rate


def test_targets_are_checked_outside_jit_not_traced():
    net, images = _case("softmax")
    targets = np.eye(CLASSES)[[0, 1, 2, 3, 0, 1]]
    with pytest.raises(TypeError, match="targets are checked on concrete values"):
        jax.jit(lambda y: loss_and_grad(net, images, y)[0])(targets)
