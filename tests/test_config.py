import re
from pathlib import Path

import pytest

from jaxcnn import config
from jaxcnn.config import ConfigError
from jaxcnn.layers import EXAMPLE_LAYERS

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_mnist_config_is_test_example_cnn():
    cfg = config.load(CONFIGS / "mnist.toml")
    assert (cfg.train.alpha, cfg.train.batchsize, cfg.train.numepochs) == (1.0, 50, 1)
    assert cfg.model.layers == EXAMPLE_LAYERS and cfg.data.dataset == "mnist"
    assert config.load(CONFIGS / "mnist_100epochs.toml").train.numepochs == 100
    fashion = config.load(CONFIGS / "fashion_mnist.toml")
    assert fashion.data.dataset == "fashion_mnist" and fashion.model == cfg.model and fashion.train == cfg.train


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_every_config_opens_with_its_command_time_and_error(path):
    header = "".join(line for line in path.read_text().splitlines(True) if line.startswith("#"))
    assert f"jaxcnn train configs/{path.name}" in header or f"jaxcnn sweep configs/{path.name}" in header
    assert re.search(r"\d+(\.\d+)? ?(s|seconds|minutes|x)", header) and re.search(r"error", header)


@pytest.mark.parametrize("text, message", [
    ("[train]\nalhpa = 1.0\n", "unknown config key: train.alhpa"),
    ("[trian]\nalpha = 1.0\n", "unknown config section [trian]"),
    ("[train]\nbatchsize = 'fifty'\n", "train.batchsize: expected an integer, got 'fifty'"),
    ("[train]\nbatchsize = 50.0\n", "train.batchsize: expected an integer"),
    ("[train]\nbatchsize = 0\n", "train.batchsize: must be >= 1, got 0"),
    ("[train]\nnumepochs = -2\n", "train.numepochs: must be >= 1"),
    ("[train]\nalpha = -1\n", "train.alpha: must be > 0"),
    ("[train]\nalpha = true\n", "train.alpha: expected a number"),
    ("[train]\noptimizer = 'lbfgs'\n", "train.optimizer: 'lbfgs' is not one of sgd, momentum, adam"),
    ("[data]\nn_train = -5\n", "data.n_train: must be >= 0"),
    ("[data]\ndataset = 'cifar'\n", "data.dataset: 'cifar' is not one of"),
    ("[model]\nlayers = [{type = 'i'}, {type = 'c', outputmaps = 6}]\n", "model.layers: layer 2 (type 'c'): missing field"),
    ("[model]\nlayers = [{type = 'q'}]\n", "model.layers: layer 1: unknown layer type 'q'"),
    ("train = 3\n", "[train] must be a table"),
    ("[train\n", "not valid TOML"),
])
def test_bad_configs_name_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert message in str(err.value)


def test_overrides_are_typed_and_checked():
    cfg = config.load(CONFIGS / "mnist.toml", ["train.alpha=0.5", "data.dir=/tmp/x y", "train.numepochs=3"])
    assert (cfg.train.alpha, cfg.data.dir, cfg.train.numepochs) == (0.5, "/tmp/x y", 3)
    with pytest.raises(ConfigError, match="unknown config key: train.epochs"):
        config.load(CONFIGS / "mnist.toml", ["train.epochs=3"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        config.load(CONFIGS / "mnist.toml", ["alpha=3"])
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(CONFIGS / "nope.toml")


def test_dumps_round_trips_and_diff_names_keys(tmp_path):
    cfg = config.load(CONFIGS / "fashion_mnist.toml", ["train.seed=7"])
    (tmp_path / "c.toml").write_text(config.dumps(cfg))
    again = config.load(tmp_path / "c.toml")
    assert again == cfg
    other = config.load(tmp_path / "c.toml", ["train.alpha=0.1", "data.n_train=100"])
    assert config.diff(cfg, other) == ["train.alpha", "data.n_train"]
