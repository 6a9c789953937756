"""The cases `jaxcnn check` runs a user's `cnnbp` on: chosen so that no mistake of the catalogue can hide.

A test input hides a bug when the wrong and the right rule agree on it: cs231n's max-pool check used
stride = window, so a backward that overwrote instead of adding passed (0809zheng/CS231n-assignment2019#19).
So every case has
  - several different samples (batch ≥ 3, different classes), so that flipping over the samples shows
    (rot180 for flipall pairs sample n with N+1−n) and a sum for a mean shows;
  - several maps per layer, so that a sum over j that is not a sum shows;
  - random kernels whose rot180, transpose, rot90 and identity all differ, and random non-zero biases;
and the set has the toolbox's own 6c-2s-12c-2s on real 28×28 MNIST images, a non-square
i-3c(k3)-3s-4c(k3)-2s (non-square final maps, so a row-major reshape shows), and a stack that ends in
'c' (so that the fvd line's derivative is exercised). All stay within what the toolbox's `cnnbp`
handles: one input map, alternating c and s. With layer options declared, two more cases use them, at
points away from ReLU kinks and max-pool ties (`checks.kink_margin`).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from . import backprop as bp

OPTIONS = frozenset({"tanh", "relu", "max", "softmax"})
# How far from a kink or tie an option case must be, in units of one weight's ±1e-4 reach
# (`checks.kink_margin`): nothing is perturbed here, so the margin has only to dwarf rounding (a gap of
# ~1e-4 against 1e-16), which keeps a user's own cnnff on the same side of every ReLU and max.
KINK_MARGIN = 1
MNIST = "golden.npz"      # the toolbox's first 500 MNIST training images, shipped with jaxcnn (`golden.py`)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    net: dict        # the toolbox net before cnnff: layers with type, outputmaps, kernelsize, k, b, scale, ...
    x: list          # the input maps a{1}: one H×W×N array
    y: np.ndarray    # onum×N targets
    ff: dict         # the lecture's cnnff of net on x (`backprop.cnnff`)


def _mnist(n_images: int, seed: int):
    """n images of different classes from the packaged MNIST batch (toolbox layout, H×W×N) and their labels."""
    from pathlib import Path

    with np.load(Path(__file__).with_name(MNIST)) as z:
        images, labels = z["train_x500_bytes"].astype(np.float64) / 255, np.argmax(z["train_y500"], axis=0)
    rng = np.random.default_rng(seed)
    picked, seen = [], set()
    for i in rng.permutation(labels.size):
        if labels[i] not in seen:
            picked.append(int(i))
            seen.add(labels[i])
        if len(picked) == n_images:
            break
    return images[:, :, picked], labels[picked]


def _kernel(rng, size, fan):
    """A toolbox-style kernel ((rand − 0.5)·2·sqrt(6 / fan)) whose rot180, transpose and rot90 differ from it
    and from each other."""
    while True:
        k = (rng.random((size, size)) - 0.5) * 2 * np.sqrt(6 / fan)
        if size == 1:
            return k
        variants = [k, bp.rot180(k), k.T, np.rot90(k), np.rot90(k, -1), bp.rot180(k).T]
        gaps = [np.max(np.abs(a - b)) for i, a in enumerate(variants) for b in variants[i + 1:]]
        if min(gaps) > 0.05 * np.max(np.abs(k)):
            return k


def build_net(rng, spec, input_hw, onum, output="sigmoid") -> dict:
    """A toolbox net dict for `spec`, a list of ("c", outputmaps, kernelsize[, activation]) and
    ("s", scale[, pool]), with random kernels, non-zero biases and output weights."""
    layers, maps, (h, w) = [{"type": "i"}], 1, input_hw
    for item in spec:
        if item[0] == "c":
            _, out, k = item[:3]
            fan = maps * k * k + out * k * k
            layer = {"type": "c", "outputmaps": out, "kernelsize": k,
                     "k": [[_kernel(rng, k, fan) for _ in range(out)] for _ in range(maps)],
                     "b": [float(v) for v in rng.choice([-1, 1], out) * rng.uniform(0.1, 0.5, out)]}
            if len(item) > 3 and item[3] != "sigmoid":
                layer["activation"] = item[3]
            maps, h, w = out, h - k + 1, w - k + 1
        else:
            _, s = item[:2]
            layer = {"type": "s", "scale": s}
            if len(item) > 2 and item[2] != "mean":
                layer["pool"] = item[2]
            if h % s or w % s:
                raise ValueError(f"scale {s} does not divide the {h}x{w} maps")
            h, w = h // s, w // s
        layers.append(layer)
    fvnum = maps * h * w
    net = {"layers": layers, "ffW": (rng.random((onum, fvnum)) - 0.5) * 2 * np.sqrt(6 / (onum + fvnum)),
           "ffb": rng.uniform(-0.3, 0.3, (onum, 1))}
    if output != "sigmoid":
        net["output"] = output
    return net


def _case(name, spec, x, labels, onum, seed, output="sigmoid"):
    net = build_net(np.random.default_rng(seed), spec, x.shape[:2], onum, output)
    labels = np.asarray(labels) if onum >= 10 else np.arange(len(labels)) % onum   # real digits, else distinct classes
    y = np.eye(onum)[:, labels]
    return Case(name, net, [x], y, bp.cnnff(net, [x]))


def default_cases() -> list[Case]:
    """The three sigmoid/mean/MSE cases every check runs, smallest first (a mistaken rule is usually
    rejected on the first)."""
    images, labels = _mnist(4, seed=0)
    return [
        _case("i-2c(k3)-2s-3c(k2) on 3 MNIST crops 12×16 (ends in 'c')", [("c", 2, 3), ("s", 2), ("c", 3, 2)],
              images[8:20, 6:22, :3], labels[:3], 4, seed=2),
        _case("i-3c(k3)-3s-4c(k3)-2s on 3 MNIST crops 20×26 (non-square)", [("c", 3, 3), ("s", 3), ("c", 4, 3), ("s", 2)],
              images[4:24, 1:27, 1:4], labels[1:4], 5, seed=1),
        _case("the toolbox's 6c-2s-12c-2s on 4 MNIST images 28×28", [("c", 6, 5), ("s", 2), ("c", 12, 5), ("s", 2)],
              images, labels, 10, seed=0),
    ]


def option_cases(options) -> list[Case]:
    """Two cases with the declared options (a subset of OPTIONS), each kept sigmoid where an option is not
    declared, on random inputs drawn until every ReLU pre-activation and every max-pool window's top two
    are at least `KINK_MARGIN` times one ε-step away from a kink or a tie."""
    from . import checks

    options = frozenset(options)
    unknown = options - OPTIONS
    if unknown:
        raise ValueError(f"OPTIONS: unknown {', '.join(sorted(unknown))} (known: {', '.join(sorted(OPTIONS))})")
    if not options:
        return []
    first = "relu" if "relu" in options else "tanh" if "tanh" in options else "sigmoid"
    second = "tanh" if "tanh" in options else "sigmoid"
    pool = "max" if "max" in options else "mean"
    output = "softmax" if "softmax" in options else "sigmoid"
    stacks = [
        (f"i-3c(k3, {first})-2s({pool})-2c(k3, {second})-2s on 3 random 14×18 inputs, {output} output",
         [("c", 3, 3, first), ("s", 2, pool), ("c", 2, 3, second), ("s", 2)], (14, 18)),
        (f"i-2c(k3, {second})-2s({pool})-3c(k2, {first}) on 3 random 12×10 inputs, {output} output",
         [("c", 2, 3, second), ("s", 2, pool), ("c", 3, 2, first)], (12, 10)),
    ]
    cases = []
    for number, (name, spec, hw) in enumerate(stacks):
        for seed in range(1000 * number, 1000 * number + 1000):
            rng = np.random.default_rng(seed)
            x = rng.random((*hw, 3))
            case = _case(name, spec, x, [0, 1, 2], 3, seed, output)
            if checks.kink_margin(case.net, case.x) >= checks.KINK_MARGIN:
                cases.append(case)
                break
        else:
            raise RuntimeError(f"no point away from the kinks for {name}")
    return cases


def cases_for(options=()) -> list[Case]:
    return default_cases() + option_cases(options)
