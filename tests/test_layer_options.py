"""The layer options beyond the toolbox (tanh, ReLU, max pooling, softmax + cross-entropy): forward on
hand-computed inputs, configs, saved nets, and the toolbox's refusal."""
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import config, fast, init_net, loss_and_grad, model, netfile, predict, toolbox
from jaxcnn.train import fast_loss_and_grad
from jaxcnn.verification import backprop as bp
from jaxcnn.layers import Conv, Input, Pool, describe
from jaxcnn.numerics import activation_derivative, output_and_loss

REPO = Path(__file__).resolve().parent.parent


def _one_conv_net(activation, k, b, output="sigmoid"):
    """A 3x3 input, one 2x2 kernel, one map, a 4-wide fv and 2 classes with ffW = [[1,0,0,0],[0,1,0,0]]."""
    net = init_net(jax.random.key(0), (Input(), Conv(1, 2, activation)), (3, 3), 2, jnp.float64, output=output)
    params = {"conv": [{"k": jnp.asarray(k, jnp.float64).reshape(2, 2, 1, 1), "b": jnp.array([b])}],
              "ffW": jnp.eye(2, 4), "ffb": jnp.zeros(2)}
    return type(net)(params, net.layers, net.input_shape, net.n_classes, net.output)


X = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0], [2.0, 0.0, 1.0]])
K = np.array([[1.0, -1.0], [0.5, 0.0]])
# cross-correlation of X with K, written out: z[i, j] = Σ_uv K[u, v]·X[i+u, j+v], then b = -0.5
Z = np.array([[1 - 2 + 0 + 0, 2 - 0 + 0.5 + 0], [0 - 1 + 1 + 0, 1 - 3 + 0 + 0]]) - 0.5     # [[-1.5, 2], [-0.5, -2.5]]


@pytest.mark.parametrize("activation, expected", [("relu", np.maximum(Z, 0)), ("tanh", np.tanh(Z)),
                                                  ("sigmoid", 1 / (1 + np.exp(-Z)))])
def test_conv_activations_on_a_hand_computed_map(activation, expected):
    net = _one_conv_net(activation, K, -0.5)
    fv = expected.ravel()                                          # one map, row-major
    o = np.asarray(predict(net, X))                                # sigmoid outputs of fv[0], fv[1]
    np.testing.assert_allclose(o, 1 / (1 + np.exp(-fv[:2])), rtol=1e-15)


def test_softmax_output_and_cross_entropy_by_hand():
    net = _one_conv_net("relu", K, -0.5, output="softmax")
    z = np.maximum(Z, 0).ravel()[:2]                               # [0, 2]
    o = np.exp(z) / np.exp(z).sum()                                # [1/(1+e²), e²/(1+e²)]
    np.testing.assert_allclose(np.asarray(predict(net, X)), o, rtol=1e-15)
    loss = model.loss(net, jnp.asarray(X)[None, :, :, None], jnp.array([[0.0, 1.0]]))
    np.testing.assert_allclose(loss, -np.log(o[1]), rtol=1e-15)
    big = jnp.array([[1000.0, 0.0]])                               # log-sum-exp keeps it finite
    o_big, loss_big = output_and_loss("softmax", big, jnp.array([[0.0, 1.0]]))
    assert float(loss_big) == pytest.approx(1000.0, rel=1e-15) and np.isfinite(np.asarray(o_big)).all()


def test_max_pool_by_hand_with_a_tie():
    """The left window [[1, 3], [3, 0]] has its maximum twice; the first in row-major order, (0, 1), takes it."""
    a = jnp.array([[1.0, 3.0, 0.0, -1.0], [3.0, 0.0, -2.0, -1.0]])[None, :, :, None]
    np.testing.assert_array_equal(model.max_pool(a, 2)[0, :, :, 0], [[3.0, 0.0]])
    net = init_net(jax.random.key(0), (Input(), Pool(2, "max")), (2, 4), 2, jnp.float64)
    params = {"conv": [], "ffW": jnp.eye(2), "ffb": jnp.zeros(2)}
    net = type(net)(params, net.layers, net.input_shape, 2, "sigmoid")
    np.testing.assert_allclose(np.asarray(predict(net, a[0, :, :, 0])), 1 / (1 + np.exp(-np.array([3.0, 0.0]))))
    chosen = np.array([[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])     # (0, 1) in the left window, (0, 2) in the right
    # the reference model, by jax.grad: the whole delta of each window reaches its chosen element only
    np.testing.assert_array_equal(jax.grad(lambda a: model.max_pool(a, 2).sum())(a)[0, :, :, 0], chosen)
    # the fast path's mask (layout CNHW: maps (C, N, H, W)), one-hot over each window in row-major order
    _, mask = fast.max_pool(a.transpose(3, 0, 1, 2), 2, fast.CNHW)
    np.testing.assert_array_equal(mask[0, 0, 0], [[0, 1, 0, 0], [1, 0, 0, 0]])
    # the delta rule's mask, on the toolbox's transposed map (H×W×N): natural (0, 1) is array (1, 0)
    _, tb_mask = bp.max_pool(np.asarray(a[0, :, :, 0]).T[:, :, None], 2)
    np.testing.assert_array_equal(tb_mask[:, :, 0].T, chosen)


def test_a_tied_max_pool_sends_the_kernel_gradient_through_the_first_maximum():
    """One 2×2 kernel K = [[1, 0], [0, 0]] on X: the relu maps are z = X[:2, :2] = [[1, 3], [3, 0]], pooled to
    their tied maximum 3. Its delta reaches position (0, 1), so dk = db · X[0:2, 1:3]; the other tied element
    would give db · X[1:3, 0:2]. Both gradient paths, reference and fast."""
    x = np.array([[1.0, 3.0, 5.0], [3.0, 0.0, 7.0], [2.0, 4.0, 6.0]])
    net = init_net(jax.random.key(0), (Input(), Conv(1, 2, "relu"), Pool(2, "max")), (3, 3), 2, jnp.float64)
    params = {"conv": [{"k": jnp.array([[1.0, 0.0], [0.0, 0.0]]).reshape(2, 2, 1, 1), "b": jnp.zeros(1)}],
              "ffW": jnp.array([[1.0], [-2.0]]), "ffb": jnp.zeros(2)}
    net = type(net)(params, net.layers, net.input_shape, 2, "sigmoid")
    first, second = x[0:2, 1:3], x[1:3, 0:2]
    assert not np.allclose(first, second)
    for name, grad_of in (("reference", loss_and_grad), ("fast", fast_loss_and_grad)):
        _, grads = grad_of(net, x[None], np.array([[1.0, 0.0]]))
        db = float(grads.params["conv"][0]["b"][0])
        assert abs(db) > 1e-3, name
        np.testing.assert_allclose(grads.params["conv"][0]["k"][:, :, 0, 0], db * first, rtol=1e-13, err_msg=name)


def test_activation_derivatives_through_the_activation():
    a = jnp.array([-0.5, 0.0, 0.25])
    np.testing.assert_array_equal(activation_derivative("relu", jnp.maximum(a, 0)), [0.0, 0.0, 1.0])    # relu'(0) = 0
    np.testing.assert_allclose(activation_derivative("tanh", jnp.tanh(a)), 1 - np.tanh(a) ** 2, rtol=1e-15)
    assert float(jax.grad(jax.nn.relu)(0.0)) == 0.0


def test_init_options():
    layers = (Input(), Conv(6, 5, "relu"), Pool(2, "max"))
    toolbox_net = init_net(jax.random.key(0), layers, (28, 28), 10)
    he = init_net(jax.random.key(0), layers, (28, 28), 10, init="he")
    assert float(jnp.abs(toolbox_net.params["conv"][0]["k"]).max()) <= np.sqrt(6 / (25 + 150))
    assert np.sqrt(6 / (25 + 150)) < float(jnp.abs(he.params["conv"][0]["k"]).max()) <= np.sqrt(6 / 25)
    with pytest.raises(ValueError, match="init must be one of toolbox, he"):
        init_net(jax.random.key(0), layers, (28, 28), 10, init="xavier")
    with pytest.raises(ValueError, match="output must be one of sigmoid, softmax"):
        init_net(jax.random.key(0), layers, (28, 28), 10, output="linear")


@pytest.mark.parametrize("text, message", [
    ('[model]\noutput = "logits"\n', "model.output: 'logits' is not one of sigmoid, softmax"),
    ('[model]\ninit = "glorot"\n', "model.init: 'glorot' is not one of toolbox, he"),
    ('[model]\nlayers = [{type = "i"}, {type = "c", outputmaps = 2, kernelsize = 3, activation = "elu"}]\n',
     "model.layers: layer 2 (type 'c'): 'activation' must be one of sigmoid, tanh, relu, got 'elu'"),
    ('[model]\nlayers = [{type = "i"}, {type = "s", scale = 2, pool = "min"}]\n',
     "model.layers: layer 2 (type 's'): 'pool' must be one of mean, max, got 'min'"),
    ('[model]\nlayers = [{type = "i"}, {type = "s", scale = 2, activation = "relu"}]\n',
     "model.layers: layer 2 (type 's'): unknown field(s) activation"),
])
def test_bad_option_values_are_one_line_naming_the_key(tmp_path, text, message):
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(config.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config.load(tmp_path / "bad.toml")


def test_the_modern_config_survives_its_own_record(tmp_path):
    cfg = config.load("fashion_mnist_modern")
    assert cfg.model.output == "softmax" and describe(cfg.model.layers) == "6c(relu)-2s(max)-12c(relu)-2s(max)"
    (tmp_path / "resolved.toml").write_text(config.dumps(cfg))                # what a run folder's config.toml holds
    assert config.load(tmp_path / "resolved.toml") == cfg


def test_net_file_round_trip_keeps_the_options(tmp_path):
    layers = (Input(), Conv(3, 3, "tanh"), Pool(2, "max"), Conv(2, 2, "relu"))
    net = init_net(jax.random.key(2), layers, (10, 12, 2), 4, jnp.float64, output="softmax")
    netfile.save(tmp_path / "net.npz", net)
    back = netfile.load(tmp_path / "net.npz")
    assert back.layers == layers and back.output == "softmax" and back.dtype == jnp.float64
    x = np.random.default_rng(0).random((3, 10, 12, 2))
    np.testing.assert_array_equal(np.asarray(predict(back, x)), np.asarray(predict(net, x)))


def test_the_toolbox_export_refuses_options_naming_them(tmp_path):
    net = init_net(jax.random.key(2), (Input(), Conv(2, 3), Pool(2, "max")), (10, 10), 4, jnp.float64)
    with pytest.raises(ValueError, match="layer 3 has pool = 'max'"):
        toolbox.save_net(tmp_path / "x.mat", net)
    softmax = init_net(jax.random.key(2), (Input(), Conv(2, 3)), (10, 10), 4, jnp.float64, output="softmax")
    with pytest.raises(ValueError, match="output = 'softmax'"):
        toolbox.save_net(tmp_path / "x.mat", softmax)
    assert not (tmp_path / "x.mat").exists()
    netfile.save(tmp_path / "net.npz", net)
    result = subprocess.run([sys.executable, "-m", "jaxcnn", "export-mat", tmp_path / "net.npz", tmp_path / "x.mat"],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert "jaxcnn: error: the toolbox cannot represent this net: layer 3 has pool = 'max'" in result.stderr
