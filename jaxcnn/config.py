"""Experiment configs: TOML files loaded strictly into frozen dataclasses.

Sections and keys keep the toolbox's names (`opts.alpha`, `opts.batchsize`, `opts.numepochs`,
`cnn.layers`). An unknown section or key, a value of the wrong type, or a number that is not finite or
out of its range (`alpha = 1e400` is TOML's inf) is a ConfigError naming `section.key`; a file that is
not UTF-8 TOML is a DamagedConfig naming the file.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
import math
import tomllib
import typing
from pathlib import Path
from typing import Any

from .fileio import DamagedFile, reading
from .layers import EXAMPLE_LAYERS, Layer, layers_to_dicts, parse_layers
from .net import INITS
from .numerics import OUTPUTS
from .optimizers import OPTIMIZERS, SCHEDULES, check_hyperparameters


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


class DamagedConfig(ConfigError, DamagedFile):
    """A config file that cannot be read as UTF-8 TOML."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    alpha: float = 1.0            # learning rate (opts.alpha)
    batchsize: int = 50           # opts.batchsize
    numepochs: int = 1            # opts.numepochs
    seed: int = 0                 # PRNG seed for the initial weights and the epoch permutations
    optimizer: str = "sgd"        # sgd (= cnnapplygrads.m), momentum, adam
    momentum: float = 0.0         # sgd: any in [0, 1); momentum: > 0; adam: unused, must stay 0
    schedule: str = "constant"    # constant, cosine, exponential (decay over all steps)
    dtype: str = "float32"        # float32 or float64 (float64 turns on JAX's x64 mode)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    layers: tuple[Layer, ...] = EXAMPLE_LAYERS
    output: str = "sigmoid"       # sigmoid (the toolbox's, squared error) or softmax (cross-entropy)
    init: str = "toolbox"         # toolbox (cnnsetup.m) or he (for ReLU nets)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dataset: str = "mnist"        # mnist or fashion_mnist
    dir: str = ""                 # a folder of IDX files or a mnist_uint8.mat; "" = cache / download
    n_train: int = 0              # use the first n training samples (0 = all)
    n_test: int = 0               # use the first n test samples (0 = all)


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 0          # also checkpoint every N SGD steps inside an epoch (0 = per epoch only)
    keep: int = 3                 # how many checkpoints to keep


@dataclasses.dataclass(frozen=True)
class Config:
    train: TrainConfig = TrainConfig()
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()


_POSITIVE = {"train.batchsize", "train.numepochs", "checkpoint.keep"}
_INT_MAX = 2 ** 31 - 1                           # sizes and counts beyond this are typos, and overflow int32
_SEED_MAX = 2 ** 32 - 1                          # jax.random.key keeps 32 bits of a seed without x64
_NON_NEGATIVE = {"train.seed", "train.momentum", "data.n_train", "data.n_test", "checkpoint.every_steps"}
_CHOICES = {"train.optimizer": OPTIMIZERS, "train.schedule": SCHEDULES,
            "train.dtype": ("float32", "float64"), "data.dataset": ("mnist", "fashion_mnist"),
            "model.output": OUTPUTS, "model.init": INITS}


def _check_value(key: str, kind, value):
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            value = float(value)
        except OverflowError:
            raise ConfigError(f"{key}: {value} is too large for a float") from None
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {value}")
        if key == "train.alpha" and not value > 0:
            raise ConfigError(f"{key}: must be > 0, got {value}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        most = _SEED_MAX if key == "train.seed" else _INT_MAX
        if value > most:
            raise ConfigError(f"{key}: must be <= {most}, got {value}")
    elif kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
    elif key == "model.layers":
        try:
            return parse_layers(value)
        except ValueError as err:
            raise ConfigError(f"model.layers: {err}") from None
    if key in _POSITIVE and value < 1:
        raise ConfigError(f"{key}: must be >= 1, got {value}")
    if key in _NON_NEGATIVE and value < 0:
        raise ConfigError(f"{key}: must be >= 0, got {value}")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(_CHOICES[key])}")
    return value


def from_dict(raw: dict[str, Any]) -> Config:
    """Build a Config from nested dicts (a parsed TOML file), checking every key and type."""
    sections = {f.name: f.type for f in dataclasses.fields(Config)}
    hints = typing.get_type_hints(Config)
    built = {}
    for section, body in raw.items():
        if section not in sections:
            raise ConfigError(f"unknown config section [{section}] (expected {', '.join(sections)})")
        if not isinstance(body, dict):
            raise ConfigError(f"[{section}] must be a table")
        cls = hints[section]
        fields = typing.get_type_hints(cls)
        values = {}
        for key, value in body.items():
            if key not in fields:
                raise ConfigError(f"unknown config key: {section}.{key} (expected one of {', '.join(fields)})")
            kind = fields[key]
            values[key] = _check_value(f"{section}.{key}", kind if kind in (int, float, str) else None, value)
        built[section] = cls(**values)
    config = Config(**built)
    try:
        check_hyperparameters(config.train.optimizer, config.train.momentum)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return config


def to_dict(config: Config) -> dict[str, Any]:
    """The config as plain nested dicts (layers as toolbox-style tables), for TOML/JSON records."""
    out = {}
    for f in dataclasses.fields(config):
        section = dataclasses.asdict(getattr(config, f.name))
        if f.name == "model":
            section["layers"] = layers_to_dicts(getattr(config, f.name).layers)
        out[f.name] = section
    return out


def parse_override(text: str) -> tuple[str, str, Any]:
    """'section.key=value' -> (section, key, value); value parsed as TOML, else taken as a string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return section, key, value


def read_raw(path, overrides: list[str] = ()) -> dict[str, Any]:
    """A TOML config file as nested dicts, with `--set section.key=value` overrides applied (not yet checked).

    `path` is a file, or the name of a packaged config (`resolve`)."""
    path = resolve(path)
    with reading(path, "UTF-8 TOML config", DamagedConfig):
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise DamagedConfig(path, f"not valid TOML ({err})") from None
    for text in overrides:
        section, key, value = parse_override(text)
        raw.setdefault(section, {})[key] = value
    return raw


def load(path, overrides: list[str] = ()) -> Config:
    """Read a TOML config file (or packaged config, by name) and apply `--set section.key=value` overrides.

    Without overrides, an error in a value is prefixed with the file's path (the run folder's
    config.toml that `jaxcnn report` reads, say); with them, the value may come from either."""
    raw = read_raw(path, overrides)
    try:
        return from_dict(raw)
    except ConfigError as err:
        if overrides:
            raise
        raise ConfigError(f"{resolve(path)}: {err}") from None


def dumps(config: Config) -> str:
    """The resolved config as TOML text (readable back by `load`)."""
    lines = []
    for section, body in to_dict(config).items():
        lines.append(f"[{section}]")
        for key, value in body.items():
            if key == "layers":
                items = ",\n  ".join("{" + ", ".join(f"{k} = {_toml(v)}" for k, v in d.items()) + "}" for d in value)
                lines.append(f"layers = [\n  {items},\n]")
            else:
                lines.append(f"{key} = {_toml(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return repr(value)
    return str(value)


def diff(a: Config, b: Config) -> list[str]:
    """The dotted keys whose values differ between two configs."""
    da, db = to_dict(a), to_dict(b)
    return [f"{s}.{k}" for s in da for k in da[s] if da[s][k] != db[s][k]]




def packaged() -> dict:
    """The configs that ship with jaxcnn (the repository's configs/), by name: {"mnist": resource, ...}."""
    folder = importlib.resources.files("jaxcnn.configs")
    return {Path(entry.name).stem: entry for entry in sorted(folder.iterdir(), key=lambda e: e.name)
            if entry.name.endswith(".toml")}


def resolve(name_or_path):
    """A config file: an existing path as given, else the packaged config of that name (`mnist`, `mnist.toml`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    configs = packaged()
    name = path.stem if path.suffix == ".toml" and path.parent == Path(".") else str(name_or_path)
    if name in configs:
        return configs[name]
    if path.suffix == ".toml" or path.parent != Path("."):
        raise ConfigError(f"config file {path} does not exist (packaged configs: {', '.join(configs)})")
    raise ConfigError(f"no config named {name!r}: give a .toml path or one of {', '.join(configs)}")


def description(resource) -> str:
    """A config's one-line description: the first line of its header comment."""
    for line in resource.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""
