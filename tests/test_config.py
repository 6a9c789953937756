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


ERROR_FIGURE = re.compile(r"\berror\b[^\n]*?(?<![\w.-])0\.\d+")         # "test error about 0.11"
A_TIME = re.compile(r"(?<![\w.-])\d+(\.\d+)?( ?- ?\d+(\.\d+)?)? ?(s|sec|seconds|min|minutes)\b")  # "2.1-2.6 s"


def _header(path: Path) -> str:
    """The comment block a config opens with."""
    lines = path.read_text().splitlines(True)
    return "".join(line for line in lines[:next(i for i, line in enumerate(lines) if not line.startswith("#"))])


def test_the_header_patterns_are_not_fooled_by_the_net_name():
    net = "# the 6c-2s-12c-2s net, alpha 1, batches of 50, 1 epoch, 100 epochs, error rates below\n"
    assert not ERROR_FIGURE.search(net) and not A_TIME.search(net)
    assert ERROR_FIGURE.search("# Expected: test error about 0.11 (the toolbox's own comment)\n")
    assert not ERROR_FIGURE.search("# Expected: test error about 11%\n# alpha 0.5\n")   # 0.5 is on another line
    for text in ("2.1-2.6 s an epoch", "about 45 s", "4-5 minutes", "(24 s)", "3.2s"):
        assert A_TIME.search(text), text


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_every_config_opens_with_its_command_error_and_a_pointer_to_the_times(path):
    """big_vision's habit: the command and the result to expect; the times, which go stale with the
    machine and the code, live in one measured table (docs/performance.md), not in five headers."""
    header = _header(path)
    assert re.search(rf"^#\s+jaxcnn (train|sweep) configs/{re.escape(path.name)}\b", header, re.M), header
    assert ERROR_FIGURE.search(header), header
    assert "docs/performance.md" in header, header
    assert not A_TIME.search(header), f"a time in the header ({A_TIME.search(header).group()}): move it to docs/performance.md"


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


def test_packaged_configs_by_name(tmp_path):
    names = config.packaged()
    assert set(names) == {p.stem for p in CONFIGS.glob("*.toml")}                  # configs/ is the one source
    assert config.load("fashion_mnist") == config.load(CONFIGS / "fashion_mnist.toml")
    assert config.load("mnist.toml") == config.load(CONFIGS / "mnist.toml")
    (tmp_path / "mnist.toml").write_text("[train]\nnumepochs = 7\n")
    assert config.load(tmp_path / "mnist.toml").train.numepochs == 7                # a path wins over a name
    assert config.description(names["mnist"]).startswith("test_example_CNN.m")
    with pytest.raises(config.ConfigError, match="no config named 'mnsit': give a .toml path or one of fashion_mnist"):
        config.load("mnsit")
    with pytest.raises(config.ConfigError, match="config file nowhere/x.toml does not exist"):
        config.load("nowhere/x.toml")
