"""The four groups of `jaxcnn verify`, as tests, plus derivations that are wrong on purpose."""
import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from jaxcnn import EXAMPLE_LAYERS, Conv, Input, Pool, init_net
from jaxcnn.layers import describe
from jaxcnn.verification import backprop as bp
from jaxcnn.verification import checks, mistakes


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


@pytest.mark.parametrize("mistake", ["full-conv-missing-rot180", "pool-missing-scale-division"])
def test_a_wrong_derivation_is_caught(mistake):
    """Two mistakes of the catalogue (rot180 replaced by the identity, the /s^2 dropped) fail against jax.grad."""
    net = init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10)
    rng = np.random.default_rng(0)
    rows = checks.check_manual_vs_autodiff(net, rng.random((4, 28, 28)), np.eye(10)[[1, 2, 3, 4]], mistake,
                                           manual=mistakes.Reference(mistake))
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


# ---- the layer options: tanh, ReLU, max pooling, softmax -----------------------------------------

def test_modern_stacks_keep_the_shapes_and_mix_every_option():
    options = set()
    for seed in range(6):                                   # the seeds `jaxcnn verify` runs
        layers, shape, output = checks.random_modern_stack(np.random.default_rng(seed))
        plain, plain_shape = checks.random_stack(np.random.default_rng(seed))
        assert shape == plain_shape
        assert [(l.type, getattr(l, "kernelsize", None), getattr(l, "scale", None)) for l in layers] == \
               [(l.type, getattr(l, "kernelsize", None), getattr(l, "scale", None)) for l in plain]
        drawn = {getattr(l, "activation", None) for l in layers} | {getattr(l, "pool", None) for l in layers}
        options |= drawn | {output}
    assert options >= {"sigmoid", "tanh", "relu", "mean", "max", "softmax"}
    example = describe(checks.MODERN_EXAMPLE)
    assert example == "6c(relu)-2s(max)-12c(tanh)-2s(max)"


@pytest.mark.slow
def test_delta_rule_with_options_equals_jax_grad():
    rows = checks.check_autodiff_modern()
    _assert_rows(rows)
    assert max(row.max_rel for row in rows) < 1e-12
    names = " ".join(row.check for row in rows)
    assert all(option in names for option in ("(relu)", "(tanh)", "(max)", "softmax", "sigmoid"))


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1))
def test_delta_rule_with_options_equals_jax_grad_on_drawn_stacks(seed):
    net, images, targets = checks.random_case(seed, modern=True)
    _assert_rows(checks.check_manual_vs_autodiff(net, images, targets, f"seed {seed}"))


@pytest.mark.slow
def test_central_differences_with_options_away_from_kinks():
    rows = checks.check_numerical_modern()
    _assert_rows(rows)
    assert len(rows) == 3 * len(checks.MODERN_NUMGRAD_NETS)
    assert sum("no ±ε step crossed a kink or tie" in row.check for row in rows) == len(checks.MODERN_NUMGRAD_NETS)


def _tiny(layer, x, ffW):
    """A toolbox dict i-`layer` (1×1 kernel) and its input maps, for margins and kinks worked by hand."""
    tb = {"layers": [{"type": "i"}, *layer], "ffW": np.asarray(ffW, np.float64), "ffb": np.zeros((len(ffW), 1))}
    return tb, checks.toolbox_input(np.asarray(x, np.float64)[None])


def _one_by_one(activation, k, b):
    return {"type": "c", "outputmaps": 1, "kernelsize": 1, "k": [[np.array([[k]])]], "b": [b], "activation": activation}


def test_kink_margin_by_hand():
    eps = checks.NUMGRAD_EPS
    # ReLU: z = 0.5·x - 0.25 is exactly 0 at x = 0.5
    tb, x = _tiny([_one_by_one("relu", 0.5, -0.25)], [[0.5, 0.9], [0.1, 0.7]], np.ones((2, 4)))
    assert checks.kink_margin(tb, x) == 0
    # tanh then 2x2 max pooling: a tie, then a gap of tanh(.3) - tanh(.2) against ±ε·max(|x|, 1) on each side
    pool = {"type": "s", "scale": 2, "pool": "max"}
    tb, x = _tiny([_one_by_one("tanh", 1.0, 0.0), pool], [[0.3, 0.3], [0.1, 0.2]], np.ones((2, 1)))
    assert checks.kink_margin(tb, x) == 0
    tb, x = _tiny([_one_by_one("tanh", 1.0, 0.0), pool], [[0.3, 0.2], [0.1, 0.0]], np.ones((2, 1)))
    assert checks.kink_margin(tb, x) == pytest.approx((np.tanh(0.3) - np.tanh(0.2)) / (2 * eps), rel=1e-12)
    # dead ReLUs: their window of exact zeros is no tie; only |z| = 1 - x counts
    tb, x = _tiny([_one_by_one("relu", 1.0, -1.0), pool], [[0.3, 0.2], [0.1, 0.0]], np.ones((2, 1)))
    assert checks.kink_margin(tb, x) == pytest.approx(0.7 / eps, rel=1e-12)


def test_central_differences_straddling_a_relu_kink_measure_something_else():
    """Why check_numerical_modern keeps away from kinks: at z = 0 the delta rule and jax.grad agree (both
    take ReLU'(0) = 0), but (L(w + ε) − L(w − ε)) / 2ε is the average of the one-sided slopes."""
    from jaxcnn import loss_and_grad, toolbox

    tb, x = _tiny([_one_by_one("relu", 0.5, -0.25)], [[0.5, 0.9], [0.1, 0.7]],
                  [[1.0, -1.0, 0.5, 2.0], [-0.5, 1.0, 1.0, -1.0]])
    y = np.array([[1.0], [0.0]])
    worst, analytic, crossed = checks._numgradcheck(tb, x, y, pattern=checks.kink_pattern)
    assert worst > 1e4 * checks.NUMGRAD_ATOL
    assert crossed == 2                     # the +ε steps of k and b switch the ReLU on (a > 0); the -ε steps keep it off
    net = toolbox.from_toolbox(tb, input_shape=(2, 2))
    _, autodiff = loss_and_grad(net, toolbox.images_from_matlab(x[0]), y.T)
    _assert_rows([checks.compare("jax.grad vs delta rule at the kink", autodiff,
                                 toolbox.grads_from_toolbox(analytic, net), checks.GRAD_RTOL)])


def test_the_options_derivations():
    _assert_rows(checks.check_modern_derivations(seed=3))


def test_max_pool_takes_the_first_maximum_of_the_natural_image_by_hand():
    """Natural windows [[1, 3], [3, 0]] and [[5, 5], [2, 5]]: values 3 and 5, taken at natural (0, 1) and
    (0, 0), the first maxima in row-major order, though the toolbox array holds the transposed image."""
    image = np.array([[1.0, 3, 5, 5], [3, 0, 2, 5]])
    maps = checks.toolbox_input(image[None])[0]                  # 4×2×1, the transpose
    pooled, mask = bp.max_pool(maps, 2)
    np.testing.assert_array_equal(pooled[:, :, 0].T, [[3, 5]])
    np.testing.assert_array_equal(mask[:, :, 0].T, [[0, 1, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(mask[:, :, 0], [[0, 0], [1, 0], [1, 0], [0, 0]])   # array (1, 0) = natural (0, 1)
    d = np.array([[7.0, 11.0]]).T[:, :, None]                     # the pooled map's delta, toolbox layout
    back = bp._through_max_pool([d], 2, [mask])[0]
    np.testing.assert_array_equal(back[:, :, 0].T, [[0, 7, 11, 0], [0, 0, 0, 0]])   # no / s²


CONV1 = {"dk conv1", "db conv1"}
WRONG_TWINS = {     # catalogue id: (first layers' options, output, rows that must fail)
    "max-pool-spread-as-mean": (("sigmoid", "max"), "sigmoid", CONV1),
    "softmax-od-with-sigmoid-derivative": (("sigmoid", "mean"), "softmax", CONV1 | {"dk conv2", "db conv2", "dffW", "dffb"}),
    "relu-derivative-one": (("relu", "mean"), "sigmoid", CONV1),
    "tanh-derivative-as-sigmoid": (("tanh", "mean"), "sigmoid", CONV1),
}


@pytest.mark.parametrize("mistake", WRONG_TWINS)
def test_a_wrong_derivation_of_an_option_is_caught(mistake):
    (activation, pool), output, must_fail = WRONG_TWINS[mistake]
    layers = (Input(), Conv(3, 3, activation), Pool(2, pool), Conv(2, 3), Pool(2))
    net = init_net(jax.random.key(0), layers, (14, 14), 4, output=output)
    rng = np.random.default_rng(0)
    images, targets = rng.random((4, 14, 14)), np.eye(4)[[0, 1, 2, 3]]
    _assert_rows(checks.check_manual_vs_autodiff(net, images, targets, "right"))
    rows = checks.check_manual_vs_autodiff(net, images, targets, "wrong", manual=mistakes.Reference(mistake))
    failed = {row.check.removeprefix("wrong: ").removesuffix(" manual vs jax.grad") for row in rows if not row.passed}
    assert failed == must_fail, rows                # the affected gradients fail, the others (and L) still pass


def test_max_pool_read_in_the_wrong_order_is_caught_by_the_tie_rows(monkeypatch):
    """The first maximum in the toolbox array's row-major order (the transposed image's) gives the same
    values, so random data cannot tell; the tie rows of check_modern_derivations can."""
    right = bp.max_pool

    def transposed_order(a, s):
        pooled, mask = right(a.transpose(1, 0, 2), s)
        return pooled.transpose(1, 0, 2), mask.transpose(1, 0, 2)

    monkeypatch.setattr(bp, "max_pool", transposed_order)
    rows = checks.check_modern_derivations(seed=3)
    assert [row.check for row in rows if not row.passed] == \
           ["maxpool δ: expand(e, [s s 1]) .* mask = jax.grad <max_pool(a), e> (ties)"]


def test_the_softmax_loss_stays_finite_when_an_output_underflows():
    """Issue 15: with o = softmax(z) underflowing to exactly 0 for a class whose target is 0, −Σ y·log o
    was 0·log 0 = NaN; from the logits it is log-sum-exp(z) − z_y, written out here."""
    one = {"type": "c", "outputmaps": 1, "kernelsize": 1, "k": [[np.array([[1.0]])]], "b": [0.0]}
    tb = {"layers": [{"type": "i"}, one], "ffW": np.array([[1000.0, 0.0], [-1000.0, 0.0], [0.0, 1.0]]),
          "ffb": np.zeros((3, 1)), "output": "softmax"}
    x = [np.array([[[3.0]], [[0.5]]])]                     # 2×1×1: one sample
    ff = bp.cnnff(tb, x)
    z = (tb["ffW"] @ ff["fv"])[:, 0]
    assert ff["o"][1, 0] == 0.0                             # exp(z_1 − z_0) underflows
    y = np.array([[1.0], [0.0], [0.0]])
    want = np.log(np.sum(np.exp(z - z[0])))                # log Σ exp(z) − z_0, without overflow
    assert np.isfinite(bp.cnnbp(ff, y)["L"])
    np.testing.assert_allclose(bp.cnnbp(ff, y)["L"], want, rtol=1e-14)
    y = np.array([[0.0], [0.0], [1.0]])                     # the target's own output underflows: L is large, finite
    assert ff["o"][2, 0] == 0.0
    np.testing.assert_allclose(bp.cnnbp(ff, y)["L"], z[0] + np.log1p(np.sum(np.exp(z[1:] - z[0]))) - z[2], rtol=1e-14)
