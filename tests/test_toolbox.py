import jax
import numpy as np
import pytest
import scipy.io

from jaxcnn import EXAMPLE_LAYERS, init_net, predict, toolbox
from jaxcnn.layers import Conv, Input, Pool
from tests.helpers import assert_trees_close


def test_golden_net_loads_and_predicts_the_toolbox_outputs(golden):
    from tests.conftest import GOLDEN
    net = toolbox.load_net(GOLDEN, var="cnn_grads")      # a struct with the extra fields a, d, dk, o, L, fv, ...
    assert net.layers == EXAMPLE_LAYERS and net.input_shape == (28, 28, 1) and net.dtype == np.float64
    o = predict(net, toolbox.images_from_matlab(golden["x"]))
    np.testing.assert_allclose(np.asarray(o).T, golden["cnn_grads"]["o"], rtol=0, atol=1e-13)


@pytest.mark.parametrize("layers, shape", [
    (EXAMPLE_LAYERS, (28, 28)),
    ((Input(), Conv(3, 3), Pool(2), Conv(2, 2)), (14, 10, 3)),
])
def test_save_and_load_round_trip_exactly(tmp_path, layers, shape):
    net = init_net(jax.random.key(2), layers, shape, 4)
    toolbox.save_net(tmp_path / "n.mat", net, var="mynet")
    back = toolbox.load_net(tmp_path / "n.mat", var="mynet", input_shape=shape)
    assert back.layers == net.layers and back.input_shape == net.input_shape
    assert_trees_close(back.params, net.params)                                          # bit for bit
    raw = scipy.io.loadmat(tmp_path / "n.mat", struct_as_record=False)["mynet"][0, 0]
    assert raw.layers[1, 0][0, 0].k.shape == (1, shape[2] if len(shape) == 3 else 1)   # k{i}{j} nested cells
    assert raw.ffb.shape == (4, 1)


def test_kernel_convention_is_rot180_transpose():
    k = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(toolbox.kernel_from_toolbox(k), [[5, 2], [4, 1], [3, 0]])
    np.testing.assert_array_equal(toolbox.kernel_to_toolbox(toolbox.kernel_from_toolbox(k)), k)


def test_image_and_target_layout_helpers():
    x = np.arange(24.0).reshape(2, 3, 4)                  # H×W×N in the toolbox
    natural = toolbox.images_from_matlab(x)
    assert natural.shape == (4, 3, 2) and natural[1, 2, 0] == x[0, 2, 1]
    np.testing.assert_array_equal(toolbox.images_to_matlab(natural), x)
    assert toolbox.targets_from_matlab(np.zeros((10, 7))).shape == (7, 10)


def test_bad_mat_files_are_named(tmp_path, golden):
    scipy.io.savemat(tmp_path / "a.mat", {"other": np.eye(2)})
    with pytest.raises(ValueError, match=r"no variable 'cnn' \(variables: other\)"):
        toolbox.load_net(tmp_path / "a.mat")
    with pytest.raises(ValueError, match="variable 'other' is not a struct"):
        toolbox.load_net(tmp_path / "a.mat", var="other")
    scipy.io.savemat(tmp_path / "b.mat", {"cnn": {"weights": np.eye(2)}})
    with pytest.raises(ValueError, match="not a toolbox cnn struct \\(no field 'layers'\\)"):
        toolbox.load_net(tmp_path / "b.mat")
    with pytest.raises(ValueError, match="no such file"):
        toolbox.load_net(tmp_path / "missing.mat")


def test_import_mat_of_a_non_square_net_needs_its_shape(tmp_path, capsys):
    from jaxcnn import cli, netfile
    net = init_net(jax.random.key(1), (Input(), Conv(2, 3), Pool(2)), (10, 6), 3)
    toolbox.save_net(tmp_path / "n.mat", net)
    assert cli.main(["import-mat", str(tmp_path / "n.mat"), str(tmp_path / "n.npz")]) == 2
    assert "cannot infer the input size" in capsys.readouterr().err
    assert cli.main(["import-mat", str(tmp_path / "n.mat"), str(tmp_path / "n.npz"), "--input-shape", "10,6"]) == 0
    back = netfile.load(tmp_path / "n.npz")
    assert back.input_shape == (10, 6, 1)
    np.testing.assert_array_equal(back.params["ffW"], net.params["ffW"])
