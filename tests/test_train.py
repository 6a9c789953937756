import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn import EXAMPLE_LAYERS, evaluate, init_net, loss_and_grad, make_optimizer, predict, smoothed_loss, train_epoch
from jaxcnn import train as train_mod
from jaxcnn.data import one_hot, to_float
from jaxcnn.layers import Conv, Input, Pool
from tests.helpers import assert_trees_close

SMALL = (Input(), Conv(3, 3), Pool(2), Conv(4, 3))


def _data(n=40, shape=(10, 10), classes=4, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.random((n, *shape)).astype(dtype), np.eye(classes, dtype=dtype)[rng.integers(0, classes, n)]


def _equal(a, b):
    """Bit-for-bit equal; trees of different structure are an error, not merely unequal."""
    assert jax.tree.structure(a) == jax.tree.structure(b), (jax.tree.structure(a), jax.tree.structure(b))
    return all(bool(jnp.array_equal(x, y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


ROUNDING = {jnp.float32: dict(rtol=2e-6, atol=1e-7), jnp.float64: dict(rtol=1e-13, atol=1e-16)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_update_is_w_minus_alpha_g_bit_for_bit(dtype):
    rng = np.random.default_rng(0)
    w, g = rng.standard_normal(50).astype(dtype), rng.standard_normal(50).astype(dtype)
    net = {"ffW": jnp.asarray(w)}
    opt = make_optimizer("sgd", 0.7)
    state = opt.init(net)
    updates, _ = opt.update({"ffW": jnp.asarray(g)}, state, net)
    new = optax.apply_updates(net, updates)["ffW"]
    np.testing.assert_array_equal(np.asarray(new), w - dtype(0.7) * g)     # cnnapplygrads.m, exactly


@pytest.mark.parametrize("dtype", [jnp.float32, pytest.param(jnp.float64, marks=pytest.mark.slow)])
def test_train_epoch_is_the_toolbox_loop(dtype):
    """cnnff + cnnbp + cnnapplygrads per batch, in order; equal up to rounding (XLA may fuse w - a·g into an FMA)."""
    x, y = _data(dtype=dtype)
    net = init_net(jax.random.key(0), SMALL, (10, 10), 4, dtype=dtype)
    alpha, order = 0.7, np.arange(40)[::-1]
    trained, losses = train_epoch(net, x, y, order, alpha=alpha, batchsize=20)
    want = net
    for step in range(2):
        idx = order[20 * step: 20 * (step + 1)]
        loss, grads = loss_and_grad(want, x[idx], y[idx])
        np.testing.assert_allclose(losses[step], loss, **ROUNDING[dtype])
        want = jax.tree.map(lambda w, g: w - jnp.asarray(alpha, dtype) * g, want, grads)
    assert_trees_close(trained.params, want.params, **ROUNDING[dtype], dtype=dtype)


def test_the_order_is_data_and_replays():
    x, y = _data()
    net = init_net(jax.random.key(0), SMALL, (10, 10), 4)
    order = np.random.default_rng(9).permutation(40)
    a, la = train_epoch(net, x, y, order, batchsize=10)
    b, lb = train_epoch(net, x, y, order, batchsize=10)
    c, _ = train_epoch(net, x, y, order[::-1], batchsize=10)
    assert _equal(a.params, b.params) and bool(jnp.array_equal(la, lb))
    assert not _equal(a.params, c.params)


def test_remainder_is_dropped_and_documented_size_errors():
    x, y = _data(n=23)
    net = init_net(jax.random.key(0), SMALL, (10, 10), 4)
    order = np.arange(23)
    full, losses = train_epoch(net, x, y, order, batchsize=10)
    assert losses.shape == (2,)                                  # 23 // 10 steps; samples 20..22 unused
    same, _ = train_epoch(net, x[:20], y[:20], order[:20], batchsize=10)
    assert_trees_close(full.params, same.params, rtol=1e-13, atol=1e-16)
    with pytest.raises(ValueError, match="batchsize 24 must be between 1 and the number of samples"):
        train_epoch(net, x, y, order, batchsize=24)
    with pytest.raises(ValueError, match="outside 0..22"):
        train_epoch(net, x, y, order + 1, batchsize=10)
    with pytest.raises(ValueError, match=r"targets must be \(N, classes\) = \(23, 4\), got \(23, 3\)"):
        train_epoch(net, x, y[:, :3], order, batchsize=10)


def test_smoothed_loss_is_the_toolbox_rL():
    rl = smoothed_loss([2.0, 1.0])
    np.testing.assert_allclose(rl, [2.0, 2.0, 0.99 * 2.0 + 0.01 * 1.0], rtol=1e-15)
    np.testing.assert_allclose(smoothed_loss([0.0], previous=rl), [*rl, 0.99 * rl[-1]], rtol=1e-15)


def test_epoch_scan_returns_the_same_rL_as_the_formula():
    x, y = _data()
    net = init_net(jax.random.key(0), SMALL, (10, 10), 4)
    opt = make_optimizer("sgd", 1.0)
    fn = train_mod.make_epoch_fn(opt, donate=False)
    batches = jnp.asarray(train_mod.batch_matrix(np.arange(40), 5))
    _, _, losses, rls = fn(net, opt.init(net), jnp.asarray(np.nan), jnp.asarray(x)[..., None],
                           jnp.asarray(y), batches)
    np.testing.assert_allclose(np.asarray(rls), smoothed_loss(losses)[1:], rtol=1e-13)


def test_a_second_epoch_does_not_recompile():
    x, y = _data()
    net = init_net(jax.random.key(0), SMALL, (10, 10), 4)
    before = train_mod._sgd_epoch._cache_size()
    net, _ = train_epoch(net, x, y, np.arange(40), alpha=0.5, batchsize=10)
    after_first = train_mod._sgd_epoch._cache_size()
    for alpha, seed in ((1.0, 1), (0.1, 2)):                     # new alpha and a new order: same program
        net, _ = train_epoch(net, x, y, np.random.default_rng(seed).permutation(40), alpha=alpha, batchsize=10)
    assert after_first <= before + 1
    assert train_mod._sgd_epoch._cache_size() == after_first


def test_evaluate_is_cnntest():
    net = init_net(jax.random.key(0), SMALL, (10, 10), 4)
    x, _ = _data(n=30)
    predicted = np.asarray(jnp.argmax(predict(net, x), axis=1))
    labels = predicted.copy()
    labels[[3, 7, 11]] = (labels[[3, 7, 11]] + 1) % 4
    result = evaluate(net, x, labels)
    assert result.error_rate == pytest.approx(3 / 30)
    np.testing.assert_array_equal(result.bad, [3, 7, 11])
    np.testing.assert_array_equal(result.predictions, predicted)
    assert result.confusion.sum() == 30 and np.trace(result.confusion) == 27
    assert evaluate(net, x, np.eye(4)[labels]).error_rate == result.error_rate     # one-hot accepted
    with pytest.raises(ValueError, match="29 labels for 30 images"):
        evaluate(net, x, labels[:29])


def _subset(fashion, n):
    x = jnp.asarray(to_float(fashion.train_images[:n], np.float32)[..., None])
    return x, jnp.asarray(one_hot(fashion.train_labels[:n], 10, np.float32))


def test_momentum_follows_its_rule():
    x, y = _data()
    x = jnp.asarray(x)[..., None]
    net = init_net(jax.random.key(0), SMALL, (10, 10), 4)
    opt = make_optimizer("momentum", 0.3, momentum=0.9)
    fn = train_mod.make_epoch_fn(opt, donate=False)
    got, _, _, _ = fn(net, opt.init(net), jnp.asarray(np.nan), x, jnp.asarray(y),
                      jnp.asarray(train_mod.batch_matrix(np.arange(40), 20)))
    _, g1 = loss_and_grad(net, x[:20], y[:20])
    w1 = jax.tree.map(lambda w, g: w - 0.3 * g, net, g1)                  # trace starts at 0
    _, g2 = loss_and_grad(w1, x[20:], y[20:])
    w2 = jax.tree.map(lambda w, a, b: w - 0.3 * (b + 0.9 * a), w1, g1, g2)
    assert_trees_close(got.params, w2.params, rtol=1e-13, atol=1e-16)


@pytest.mark.slow
def test_adam_from_the_config_trains_on_real_data(fashion):
    x, y = _subset(fashion, 2000)
    net = init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10, dtype=jnp.float32)
    opt = make_optimizer("adam", 0.003)
    fn = train_mod.make_epoch_fn(opt, donate=False)
    state = opt.init(net)
    batches = jnp.asarray(train_mod.batch_matrix(np.arange(2000), 10))
    means = []
    for _ in range(2):
        net, state, losses, _ = fn(net, state, jnp.asarray(np.nan, jnp.float32), x, y, batches)
        means.append(float(losses.mean()))
    assert means[1] < 0.8 * means[0] and means[1] < 0.40                  # measured: 0.46 -> 0.31
    test_x = to_float(fashion.test_images[:1000], np.float32)
    assert evaluate(net, test_x, fashion.test_labels[:1000]).error_rate < 0.5   # measured 0.38; chance 0.9


def test_unknown_optimizer_and_schedule_are_named():
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        make_optimizer("rmsprop")
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        make_optimizer("sgd", schedule="linear")


@pytest.mark.slow
def test_real_subset_loss_falls_past_the_plateau_in_float32(fashion):
    """SGD (alpha 1) sits near L = 0.45 (outputs ~ class priors) for ~300 steps, then learns features."""
    x = to_float(fashion.train_images[:2000], np.float32)
    y = one_hot(fashion.train_labels[:2000], 10, np.float32)
    net = init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10, dtype=jnp.float32)
    losses = []
    for epoch in range(2):
        net, step_losses = train_epoch(net, x, y, np.random.default_rng(epoch).permutation(2000), batchsize=10)
        assert step_losses.dtype == jnp.float32
        losses.append(np.asarray(step_losses))
    assert losses[1][-20:].mean() < 0.40 < losses[0][:20].mean()          # measured: 0.52 -> 0.38
    test_x = to_float(fashion.test_images[:1000], np.float32)
    assert evaluate(net, test_x, fashion.test_labels[:1000]).error_rate < 0.65   # measured 0.54; chance 0.9


def test_predict_takes_one_image_or_a_batch():
    grey = init_net(jax.random.key(0), SMALL, (10, 10), 4)
    x, _ = _data(n=3)
    batch = np.asarray(predict(grey, x))
    assert batch.shape == (3, 4)
    np.testing.assert_allclose(np.asarray(predict(grey, x[1])), batch[1], rtol=1e-13)            # (H, W)
    np.testing.assert_allclose(np.asarray(predict(grey, x[1][..., None])), batch[1], rtol=1e-13)  # (H, W, 1)
    rgb = init_net(jax.random.key(0), SMALL, (10, 10, 3), 4)
    images = np.random.default_rng(0).random((2, 10, 10, 3))
    np.testing.assert_allclose(np.asarray(predict(rgb, images[0])), np.asarray(predict(rgb, images))[0], rtol=1e-13)
    with pytest.raises(ValueError, match=r"images must be .* \(10, 10, 3\), got shape \(10, 10\)"):
        predict(rgb, images[0, ..., 0])


def test_evaluate_takes_images_with_or_without_their_channel_axis():
    """`evaluate` adds a grey image's channel axis inside its program (outside, the reshape copies the set):
    (N, H, W) and (N, H, W, 1) give the same labels, over several chunks, padding included; an RGB net
    refuses (N, H, W) with the shape it wants."""
    grey = init_net(jax.random.key(0), SMALL, (10, 10), 4)
    x = np.random.default_rng(1).random((1234, 10, 10)).astype(np.float32)
    labels = np.random.default_rng(2).integers(0, 4, 1234)
    flat, with_channel = evaluate(grey, x, labels), evaluate(grey, x[..., None], labels)
    np.testing.assert_array_equal(flat.predictions, with_channel.predictions)
    np.testing.assert_array_equal(flat.predictions, np.asarray(predict(grey, x)).argmax(axis=1))
    assert flat.confusion.sum() == 1234
    rgb = init_net(jax.random.key(0), SMALL, (10, 10, 3), 4)
    with pytest.raises(ValueError, match=r"images must be .* \(10, 10, 3\), got shape \(5, 10, 10\)"):
        evaluate(rgb, x[:5], labels[:5])
