"""What a page shows, computed once and passed to the renderers: the delta rule on one image (cnnff + cnnbp
in the toolbox's layout, float64), the proof rows that check it, and the test-set evaluation.

The maps, deltas and gradients are the lecture's own quantities: `jaxcnn.verification.backprop.cnnff` and
`cnnbp` on `toolbox.to_toolbox(net, with_options=True)`, so they are `a`, `d`, `dk`, `od`, `fvd` exactly as
`cnnbp.m` computes them. The toolbox keeps every map transposed (`natural` turns one back).
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from .. import data as data_mod, toolbox
from ..model import loss_and_grad
from ..numerics import use_dtype
from ..train import evaluate, predict
from ..verification import backprop as bp
from ..verification import checks

N_SAMPLED = 3                 # weights per parameter group checked by central differences


def as_float64(net):
    """The same net in float64 (the delta rule and the proof table are float64)."""
    use_dtype("float64")
    return dataclasses.replace(net, params=jax.tree.map(lambda a: np.asarray(a, np.float64), net.params))


def natural(m):
    """A toolbox map H×W×1 (transposed image, one sample) -> the natural H×W picture."""
    return np.asarray(m)[:, :, 0].T


def conv_layers(tb) -> list[int]:
    """0-based indices of a toolbox dict's 'c' layers."""
    return [l for l, layer in enumerate(tb["layers"]) if layer["type"] == "c"]


@dataclasses.dataclass
class Analysis:
    """cnnff + cnnbp of one image and its label, in the toolbox's layout (float64)."""
    net: object          # the jaxcnn Net, float64
    tb: dict             # toolbox dict with options
    result: dict         # cnnbp(cnnff(tb, x), y)
    image: np.ndarray    # natural (H, W, C) floats in [0, 1]
    label: int

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.result["o"]))

    @property
    def x(self) -> list:
        """The toolbox's input maps of the image."""
        return toolbox.toolbox_input(self.image[None])

    @property
    def y(self) -> np.ndarray:
        """The one-hot label, classes×1."""
        return np.eye(self.net.n_classes)[[self.label]].T


def analyse(net, image, label: int, manual=bp) -> Analysis:
    """The delta rule (`manual`: the module with cnnff/cnnbp) on one image (natural (H, W[, C]) floats) and
    its one-hot label; the net is taken in float64."""
    net = as_float64(net)
    image = np.asarray(image, np.float64)
    image = image if image.ndim == 3 else image[..., None]
    tb = toolbox.to_toolbox(net, with_options=True)
    y = np.eye(net.n_classes)[[label]].T
    result = manual.cnnbp(manual.cnnff(tb, toolbox.toolbox_input(image[None])), y)
    return Analysis(net, tb, result, image, int(label))


def proof_rows(an: Analysis, n_sampled: int = N_SAMPLED, seed: int = 0) -> list[checks.Row]:
    """For the analysed image: the delta rule's gradients vs jax.grad (every weight, per parameter group), and
    central differences (ε = NUMGRAD_EPS, `cnnnumgradcheck.m`) vs the delta rule on `n_sampled` weights per
    group: `checks.Row`s."""
    images, targets = an.image[None], an.y.T
    _, auto = loss_and_grad(an.net, images, targets)
    manual = toolbox.grads_from_toolbox(an.result, an.net)
    groups = [(f"layer {l + 1} {name}", lambda g, i=i, name=name: g.params["conv"][i][name])
              for i, l in enumerate(conv_layers(an.tb)) for name in ("k", "b")]
    groups += [("ffW", lambda g: g.params["ffW"]), ("ffb", lambda g: g.params["ffb"])]
    rows = [checks.compare(f"{name}: delta rule vs jax.grad", get(manual), get(auto), checks.GRAD_RTOL)
            for name, get in groups]
    rng = np.random.default_rng(seed)
    for group, weights in checks.weight_groups(an.result):
        chosen = sorted(rng.choice(len(weights), size=min(n_sampled, len(weights)), replace=False))
        numeric = [central_difference(an.tb, an.x, an.y, weights[c]) for c in chosen]
        rows.append(checks.compare(f"{group}: central differences vs delta rule ({len(chosen)} sampled)",
                                   np.array(numeric), np.array([weights[c].grad for c in chosen]),
                                   checks.NUMGRAD_ATOL, "abs"))
    return rows


def central_difference(tb, x, y, weight, eps: float = checks.NUMGRAD_EPS) -> float:
    """(L(w + ε) − L(w − ε)) / 2ε for one weight, with cnnff/cnnbp (`cnnnumgradcheck.m`)."""
    up, down = (bp.cnnbp(bp.cnnff(checks.shifted(tb, weight, d), x), y)["L"] for d in (eps, -eps))
    return (up - down) / (2 * eps)


@dataclasses.dataclass
class TestResults:
    """The trained net on the run's whole test set."""
    result: object            # train.Evaluation: error_rate, confusion, bad, n_misclassified
    bad_outputs: np.ndarray   # outputs of the first `most` misclassified images


def evaluate_test_set(net, dataset, most: int) -> TestResults:
    from .run_folder import with_channels

    x = data_mod.to_float(with_channels(dataset.test_images), np.dtype(net.dtype))
    result = evaluate(net, x, dataset.test_labels)
    bad = result.bad[:most]
    outputs = np.asarray(predict(net, x[bad])) if bad.size else np.zeros((0, net.n_classes))
    return TestResults(result, outputs)
