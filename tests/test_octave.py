"""The original toolbox's own `cnnff`/`cnntest`, run by GNU Octave, accept nets written by `save_net`."""
import shutil
import subprocess
from pathlib import Path

import jax
import numpy as np
import pytest
import scipy.io

from jaxcnn import EXAMPLE_LAYERS, evaluate, init_net, predict, toolbox, train_epoch
from jaxcnn.data import one_hot, to_float

MATLAB = Path(__file__).resolve().parent / "matlab"


def octave(script: str, cwd: Path):
    exe = shutil.which("octave-cli")
    if exe is None:
        pytest.fail("octave-cli is missing: apt-get install --no-install-recommends octave (scripts/setup does this as root)")
    result = subprocess.run([exe, "--no-gui", "--quiet", "--no-window-system", "--eval",
                             f"addpath('{MATLAB}'); {script}"], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_cnnff_and_cnntest_accept_an_exported_net(tmp_path, fashion):
    images = to_float(fashion.train_images[:300], np.float64)
    net = init_net(jax.random.key(3), EXAMPLE_LAYERS, (28, 28), 10)
    net, _ = train_epoch(net, images, one_hot(fashion.train_labels[:300], 10, np.float64), np.arange(300))
    test = to_float(fashion.test_images[:40], np.float64)
    labels = fashion.test_labels[:40]
    toolbox.save_net(tmp_path / "net.mat", net)
    scipy.io.savemat(tmp_path / "data.mat", {"x": toolbox.images_to_matlab(test), "y": one_hot(labels, 10, np.float64).T})
    octave("load('net.mat'); load('data.mat'); out = cnnff(cnn, x); o = out.o; [er, bad] = cnntest(cnn, x, y); "
           "save('-v7', 'out.mat', 'o', 'er', 'bad');", tmp_path)
    out = scipy.io.loadmat(tmp_path / "out.mat")
    np.testing.assert_allclose(out["o"], np.asarray(predict(net, test)).T, rtol=0, atol=1e-13)
    result = evaluate(net, test, labels)
    assert out["er"].item() == result.error_rate and result.error_rate > 0
    np.testing.assert_array_equal(np.ravel(out["bad"]).astype(int) - 1, result.bad)     # MATLAB is 1-based
