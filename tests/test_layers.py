import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import EXAMPLE_LAYERS, count_params, init_net, predict
from jaxcnn.layers import Conv, Input, Pool, describe, layer_shapes, layers_to_dicts, parse_layers


def test_example_net_has_the_toolbox_sizes_and_3898_parameters():
    assert layer_shapes(EXAMPLE_LAYERS, (28, 28)) == [(28, 28, 1), (24, 24, 6), (12, 12, 6), (8, 8, 12), (4, 4, 12)]
    net = init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10)
    # 6·25 + 6 + 6·12·25 + 12 + 10·192 + 10
    assert count_params(net) == 3_898
    assert describe(net.layers) == "6c-2s-12c-2s"


def test_parse_layers_round_trips_toolbox_tables():
    tables = [{"type": "i"}, {"type": "c", "outputmaps": 6, "kernelsize": 5}, {"type": "s", "scale": 2}]
    assert parse_layers(tables) == (Input(), Conv(6, 5), Pool(2))
    assert layers_to_dicts(parse_layers(tables)) == tables


@pytest.mark.parametrize("tables, message", [
    ([{"type": "i"}, {"type": "x"}], "layer 2: unknown layer type 'x'"),
    ([{"type": "i"}, {"type": "c", "outputmaps": 6}], "layer 2 (type 'c'): missing field 'kernelsize'"),
    ([{"type": "i"}, {"type": "c", "outputmaps": 6, "kernelsize": 5, "stride": 2}], "unknown field(s) stride"),
    ([{"type": "i"}, {"type": "c", "outputmaps": 0, "kernelsize": 5}], "'outputmaps' must be >= 1"),
    ([{"type": "i"}, {"type": "s", "scale": 2.5}], "'scale' must be an integer"),
    ([{"type": "i"}, {"type": "s", "scale": True}], "'scale' must be an integer"),
    ("6c-2s", "layers must be a list"),
])
def test_bad_layer_tables_raise_naming_the_layer(tables, message):
    with pytest.raises(ValueError) as err:
        parse_layers(tables)
    assert message in str(err.value)


@pytest.mark.parametrize("layers, shape, message", [
    ((Input(), Conv(6, 5), Pool(2), Conv(12, 5), Pool(3)), (28, 28), "layer 5 (type 's'): size must be integer"),
    ((Input(), Conv(6, 5), Pool(2), Conv(12, 13)), (28, 28), "layer 4 (type 'c'): kernel 13x13 is larger than its 12x12"),
    ((Conv(6, 5),), (28, 28), "layer 1 must be the input layer"),
    ((Input(), Conv(6, 5), Input()), (28, 28), "layer 3: an input layer 'i' may only come first"),
    ((Input(),), (28, 28), "only an input layer"),
    ((Input(), Conv(2, 3)), (0, 28), "positive sizes"),
])
def test_bad_stacks_raise_naming_layer_and_sizes(layers, shape, message):
    with pytest.raises(ValueError) as err:
        layer_shapes(layers, shape)
    assert message in str(err.value)


def test_pooling_error_reports_the_actual_fractional_size():
    with pytest.raises(ValueError, match=r"8/3 x 8/3 = 2.66667 x 2.66667"):
        layer_shapes((Input(), Conv(6, 5), Pool(2), Conv(12, 5), Pool(3)), (28, 28))


@pytest.mark.parametrize("layers, shape, classes", [
    (EXAMPLE_LAYERS, (28, 28), 10),
    ((Input(), Conv(4, 3), Pool(2), Conv(5, 3)), (16, 12, 3), 7),          # RGB, non-square
    ((Input(), Conv(2, 1), Conv(3, 2), Pool(3), Pool(1)), (13, 22, 2), 4),  # c-c and s-s neighbours
    ((Input(), Pool(2), Conv(3, 3)), (10, 6), 2),
])
def test_init_and_predict_agree_on_shapes(layers, shape, classes):
    net = init_net(jax.random.key(1), layers, shape, classes, dtype=jnp.float32)
    shapes = layer_shapes(layers, shape)
    h, w, c = shapes[-1]
    assert net.params["ffW"].shape == (classes, h * w * c)
    convs = [(layer, s_in, s_out) for layer, s_in, s_out in zip(layers[1:], shapes[:-1], shapes[1:], strict=True)
             if isinstance(layer, Conv)]
    for p, (layer, s_in, s_out) in zip(net.params["conv"], convs, strict=True):
        assert p["k"].shape == (layer.kernelsize, layer.kernelsize, s_in[2], s_out[2])
    images = np.random.default_rng(0).random((3, *shape), dtype=np.float32)
    o = predict(net, images)
    assert o.shape == (3, classes) and o.dtype == jnp.float32
    assert bool(jnp.all((o > 0) & (o < 1)))
