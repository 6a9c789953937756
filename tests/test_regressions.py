"""Paths that once gave a wrong answer without a word (found in a review of 1497b5f); each test failed there."""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io

from jaxcnn import EXAMPLE_LAYERS, checkpoint, evaluate, fast, init_net, netfile, toolbox
from jaxcnn.checkpoint import ArchitectureMismatch, TrainState

REPO = Path(__file__).resolve().parent.parent


def jaxcnn(*args, cwd=REPO):
    """The command in a fresh process, where JAX's x64 mode starts off (unlike in this test process)."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    return subprocess.run([sys.executable, "-m", "jaxcnn", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**env, "JAX_PLATFORMS": "cpu"}, timeout=600)


@pytest.mark.slow
def test_resume_of_a_float64_run_without_its_config_stays_float64(tmp_path):
    """`--resume DIR` with the config omitted reads the run folder's config.toml, float64 included."""
    (tmp_path / "f64.toml").write_text('[train]\nbatchsize = 25\nnumepochs = 2\ndtype = "float64"\n'
                                       '[data]\ndataset = "fashion_mnist"\nn_train = 100\nn_test = 50\n')
    out = tmp_path / "run"
    done = jaxcnn("train", tmp_path / "f64.toml", "--out", out, "--no-progress")
    assert done.returncode == 0, done.stderr
    finished = netfile.net_arrays(netfile.load(out / "net.npz"))
    last = checkpoint.list_checkpoints(out)[-1]
    assert last.name == "ckpt-E0002-S000000.npz"
    last.unlink()                                            # as if killed before the second epoch ended
    (out / "net.npz").unlink()
    resumed = jaxcnn("train", "--resume", out, "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from ckpt-E0001-S000000.npz" in resumed.stdout
    again = netfile.net_arrays(netfile.load(out / "net.npz"))
    for key in finished:
        assert again[key].dtype == np.float64
        np.testing.assert_array_equal(again[key], finished[key])


@pytest.fixture
def float64_net(tmp_path):
    net = init_net(jax.random.key(3), EXAMPLE_LAYERS, (28, 28), 10, dtype=jnp.float64)
    noise = np.random.default_rng(0).standard_normal(net.params["ffW"].shape) * 1e-9     # below float32's resolution
    net = dataclasses.replace(net, params={**net.params, "ffW": net.params["ffW"] + noise})
    netfile.save(tmp_path / "net.npz", net)
    return net, tmp_path / "net.npz"


def test_export_mat_keeps_a_float64_net_exact(tmp_path, float64_net):
    net, path = float64_net
    result = jaxcnn("export-mat", path, tmp_path / "cnn.mat")
    assert result.returncode == 0, result.stderr
    cnn = scipy.io.loadmat(tmp_path / "cnn.mat", struct_as_record=False)["cnn"][0, 0]
    np.testing.assert_array_equal(cnn.ffW, np.asarray(net.params["ffW"]))
    exported = toolbox.from_toolbox(toolbox.struct_to_dict(cnn), (28, 28))
    for got, want in zip(jax.tree.leaves(exported.params), jax.tree.leaves(net.params), strict=True):
        np.testing.assert_array_equal(got, want)


def test_import_mat_keeps_the_toolbox_float64_values(tmp_path, golden):
    want = toolbox.from_toolbox(golden["cnn_init"])
    toolbox.save_net(tmp_path / "init.mat", want)
    result = jaxcnn("import-mat", tmp_path / "init.mat", tmp_path / "init.npz")
    assert result.returncode == 0, result.stderr
    arrays = netfile.net_arrays(netfile.load(tmp_path / "init.npz"))
    np.testing.assert_array_equal(want.params["ffW"], golden["cnn_init"]["ffW"])
    assert arrays["ffW"].dtype == np.float64
    np.testing.assert_array_equal(arrays["ffW"], want.params["ffW"])
    np.testing.assert_array_equal(arrays["conv2.k"], want.params["conv"][1]["k"])


def test_eval_runs_a_float64_net_in_float64(tmp_path, float64_net):
    net, path = float64_net
    result = jaxcnn("eval", path, "--dataset", "fashion_mnist", "--n-test", "200", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["dtype"] == "float64"
    from jaxcnn.data import load_idx_folder, to_float
    data = load_idx_folder("/usr/share/datasets/fashion-mnist", "fashion_mnist").subset(None, 200)
    want = evaluate(net, to_float(data.test_images, np.float64), data.test_labels)
    assert record["n_misclassified"] == want.n_misclassified and record["confusion"] == want.confusion.tolist()


def test_the_fast_gradient_refuses_targets_of_another_shape():
    """With 10 images and 10 classes, targets (10,) used to broadcast against the (10, 10) outputs."""
    net = init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10)
    x = jnp.asarray(np.random.default_rng(0).random((10, 28, 28, 1)))
    for targets in (jnp.ones(10), jnp.ones((1, 10)), jnp.ones((10, 1))):
        with pytest.raises(ValueError, match=r"targets must have the outputs' shape \(10, 10\)"):
            fast.loss_and_grad(net.params, net.layers, x, targets)


def test_evaluate_refuses_labels_outside_the_classes():
    net = init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10)
    images = np.random.default_rng(0).random((4, 28, 28))
    with pytest.raises(ValueError, match=r"labels must be class indices 0..9, found 0..10"):
        evaluate(net, images, np.array([0, 3, 10, 2]))
    with pytest.raises(ValueError, match=r"found -1..2"):
        evaluate(net, images, np.array([0, -1, 1, 2]))


def _state(net, opt_state):
    return TrainState(net, opt_state, jax.random.key(0), 1, 0, np.zeros(3), np.zeros(4), [], "")


def test_checkpoint_leaves_load_by_name_not_by_position(tmp_path):
    """Two optimizer states with the same leaf shapes in the same order but other names: loading one
    into the other used to succeed silently."""
    net = init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10)
    saved = checkpoint.save(tmp_path, _state(net, {"mu": jnp.zeros(3), "nu": jnp.ones(3)}), keep=2)
    state = checkpoint.load(saved, net, {"mu": jnp.ones(3), "nu": jnp.zeros(3)})
    np.testing.assert_array_equal(state.opt_state["nu"], np.ones(3))
    with pytest.raises(ArchitectureMismatch, match=r"no opt\['trace'\]; unexpected opt\['nu'\]"):
        checkpoint.load(saved, net, {"mu": jnp.zeros(3), "trace": jnp.zeros(3)})
