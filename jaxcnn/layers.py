"""The toolbox's layer stack: `i` (input), `c` (convolution), `s` (pooling).

A stack is a tuple of frozen dataclasses, parsed from the toolbox's own struct fields
(`type`, `outputmaps`, `kernelsize`, `scale`) and validated up front the way `cnnsetup.m`
walks `mapsize` through the layers, so a bad stack fails before anything is compiled.
Beyond the toolbox, a 'c' layer may set `activation` ("sigmoid", the toolbox's, "tanh" or "relu")
and an 's' layer `pool` ("mean", the toolbox's, or "max"); the defaults are the toolbox's.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence, Union


@dataclasses.dataclass(frozen=True)
class Input:
    type: str = "i"


ACTIVATIONS = ("sigmoid", "tanh", "relu")
POOLS = ("mean", "max")


@dataclasses.dataclass(frozen=True)
class Conv:
    outputmaps: int
    kernelsize: int
    activation: str = "sigmoid"
    type: str = "c"


@dataclasses.dataclass(frozen=True)
class Pool:
    scale: int
    pool: str = "mean"
    type: str = "s"


Layer = Union[Input, Conv, Pool]

#: The 6c-2s-12c-2s net of `test_example_CNN.m`.
EXAMPLE_LAYERS: tuple[Layer, ...] = (Input(), Conv(6, 5), Pool(2), Conv(12, 5), Pool(2))

_FIELDS = {"i": (), "c": ("outputmaps", "kernelsize"), "s": ("scale",)}
_OPTIONS = {"i": {}, "c": {"activation": ACTIVATIONS}, "s": {"pool": POOLS}}      # optional, with their choices
_CLASSES = {"i": Input, "c": Conv, "s": Pool}


def parse_layers(specs: Sequence[Mapping | Layer]) -> tuple[Layer, ...]:
    """Turn toolbox-style dicts (`{"type": "c", "outputmaps": 6, "kernelsize": 5}`) into layers.

    Raises ValueError naming the layer (1-based, as in `cnn.layers{l}`) and the bad field.
    """
    if isinstance(specs, (str, bytes)) or not isinstance(specs, Sequence):
        raise ValueError(f"layers must be a list of layer tables, got {type(specs).__name__}")
    layers = []
    for l, spec in enumerate(specs, start=1):
        if isinstance(spec, (Input, Conv, Pool)):
            layers.append(spec)
            continue
        if not isinstance(spec, Mapping):
            raise ValueError(f"layer {l}: expected a table like {{type = 'c', ...}}, got {spec!r}")
        kind = spec.get("type")
        if kind not in _FIELDS:
            raise ValueError(f"layer {l}: unknown layer type {kind!r} (expected 'i', 'c' or 's')")
        unknown = sorted(set(spec) - {"type", *_FIELDS[kind], *_OPTIONS[kind]})
        if unknown:
            raise ValueError(f"layer {l} (type '{kind}'): unknown field(s) {', '.join(unknown)}; "
                             f"expected {', '.join([*_FIELDS[kind], *_OPTIONS[kind]]) or 'none'}")
        values = {}
        for name in _FIELDS[kind]:
            if name not in spec:
                raise ValueError(f"layer {l} (type '{kind}'): missing field '{name}'")
            value = spec[name]
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"layer {l} (type '{kind}'): '{name}' must be an integer, got {value!r}")
            if value < 1:
                raise ValueError(f"layer {l} (type '{kind}'): '{name}' must be >= 1, got {value}")
            values[name] = value
        for name, choices in _OPTIONS[kind].items():
            if name in spec:
                if spec[name] not in choices:
                    raise ValueError(f"layer {l} (type '{kind}'): '{name}' must be one of {', '.join(choices)}, "
                                     f"got {spec[name]!r}")
                values[name] = spec[name]
        layers.append(_CLASSES[kind](**values))
    return tuple(layers)


def layer_shapes(layers: Sequence[Layer], input_shape: Sequence[int]) -> list[tuple[int, int, int]]:
    """The (height, width, maps) after each layer, checked as `cnnsetup.m` checks `mapsize`.

    `input_shape` is (H, W) or (H, W, C). Raises ValueError naming the layer and the sizes for:
    a first layer that is not `i`, an `i` elsewhere, a kernel larger than its map, a map size
    that pooling does not divide, and a stack that has no layer after the input.
    """
    if len(input_shape) not in (2, 3) or any(int(d) < 1 for d in input_shape):
        raise ValueError(f"input_shape must be (H, W) or (H, W, C) of positive sizes, got {tuple(input_shape)}")
    h, w = int(input_shape[0]), int(input_shape[1])
    maps = int(input_shape[2]) if len(input_shape) == 3 else 1
    if not layers or not isinstance(layers[0], Input):
        raise ValueError("layer 1 must be the input layer {type = 'i'}")
    shapes = [(h, w, maps)]
    for l, layer in enumerate(layers[1:], start=2):
        if isinstance(layer, Input):
            raise ValueError(f"layer {l}: an input layer 'i' may only come first")
        if isinstance(layer, Conv):
            k = layer.kernelsize
            if k > h or k > w:
                raise ValueError(f"layer {l} (type 'c'): kernel {k}x{k} is larger than its {h}x{w} input map")
            h, w, maps = h - k + 1, w - k + 1, layer.outputmaps
        elif isinstance(layer, Pool):
            s = layer.scale
            if h % s or w % s:
                raise ValueError(f"layer {l} (type 's'): size must be integer. Actual: "
                                 f"{h}/{s} x {w}/{s} = {h / s:g} x {w / s:g}")
            h, w = h // s, w // s
        else:
            raise ValueError(f"layer {l}: unknown layer {layer!r}")
        shapes.append((h, w, maps))
    if len(shapes) == 1:
        raise ValueError("the layer stack has only an input layer; add 'c' or 's' layers")
    return shapes


def layers_to_dicts(layers: Sequence[Layer]) -> list[dict]:
    """The inverse of `parse_layers`, for configs and saved nets (options only where they are not the default)."""
    out = []
    for layer in layers:
        entry = {"type": layer.type, **{f: getattr(layer, f) for f in _FIELDS[layer.type]}}
        entry.update({name: getattr(layer, name) for name, choices in _OPTIONS[layer.type].items()
                      if getattr(layer, name) != choices[0]})
        out.append(entry)
    return out


def options(layer) -> dict:
    """A layer's options that differ from the toolbox's, e.g. {"activation": "relu"}."""
    return {name: getattr(layer, name) for name, choices in _OPTIONS[layer.type].items()
            if getattr(layer, name) != choices[0]}


def describe(layers: Sequence[Layer]) -> str:
    """The usual short name, e.g. '6c-2s-12c-2s'."""
    parts = []
    for layer in layers:
        if isinstance(layer, Conv):
            parts.append(f"{layer.outputmaps}c" + ("" if layer.activation == "sigmoid" else f"({layer.activation})"))
        elif isinstance(layer, Pool):
            parts.append(f"{layer.scale}s" + ("" if layer.pool == "mean" else f"({layer.pool})"))
    return "-".join(parts)
