"""The catalogue of known mistakes in a port of `cnnbp.m`: each one lecture rule replaced.

A mistake is data: its id, the rule of `verification.backprop.RULES` it replaces and the replacement,
the lecture's line (`backprop.LINES`) and what the user wrote instead, a sentence a student understands,
and where it was seen. `backprop.cnnbp(net, y, mistake.rules)` computes exactly what a port with that
mistake computes, which is how `jaxcnn check` names a user's mistake: by equality, never by guessing.
`needs` names the layer options a case must have for the mistake to change anything (a softmax-only
mistake changes nothing on a sigmoid net).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from . import backprop as bp


@dataclasses.dataclass(frozen=True)
class Mistake:
    id: str
    rule: str                       # the name in backprop.RULES it replaces
    replacement: Callable
    line: int                       # the line of cnnbp.m (backprop.LINES) to fix
    lecture: str                    # what the lecture writes there
    wrote: str                      # what the mistaken port writes instead
    explanation: str                # one sentence a student understands
    needs: frozenset = frozenset()  # layer options a case must have to show it ("softmax", "max", "relu", "tanh")
    seen: str = ""                  # where people made it

    @property
    def rules(self) -> dict:
        return {self.rule: self.replacement}

    @property
    def fix(self) -> str:
        """The line to fix: cnnbp.m's line number and text."""
        return f"cnnbp.m line {self.line}: {bp.LINES[self.line]}"


def _rot90(k):
    return np.rot90(np.asarray(k))


def _top_left(d, scale):
    """Each pooled δ at the top-left element of its s×s window, 0 elsewhere."""
    up = np.zeros((d.shape[0] * scale, d.shape[1] * scale) + d.shape[2:])
    up[::scale, ::scale] = d
    return up


def _sigmoid_twice(a, activation="sigmoid"):
    s = bp.sigm(a)
    return s * (1 - s) if activation == "sigmoid" else bp.derivative(activation, a)


def _relu_prime_one(a, activation="sigmoid"):
    return np.ones_like(a) if activation == "relu" else bp.derivative(activation, a)


def _tanh_as_sigmoid(a, activation="sigmoid"):
    return a * (1 - a) if activation == "tanh" else bp.derivative(activation, a)


def _od_sigmoid_twice(e, o, output="sigmoid"):
    return bp.od_softmax(e, o) if output == "softmax" else e * bp.sigm(o) * (1 - bp.sigm(o))


def _od_missing_derivative(e, o, output="sigmoid"):
    return e


def _od_sigmoid_always(e, o, output="sigmoid"):
    return bp.od_sigmoid(e, o)


def _max_as_mean(d_next, scale, mask):
    return [bp.expand(d, [scale, scale, 1]) / scale ** 2 for d in d_next]


def _max_no_mask(d_next, scale, mask):
    return [bp.expand(d, [scale, scale, 1]) for d in d_next]


def _fvd_always(fvd, fv, last):
    return fvd * bp.derivative(last.get("activation", "sigmoid"), fv)


def _fvd_never(fvd, fv, last):
    return fvd


def _dk_rotated(a_prev, d, flip):
    return bp.rot180(bp.convn_valid(flip(a_prev), d)[:, :, 0])


def _loss_sum(net, e, y):
    return 0.5 * np.sum(e ** 2) if net.get("output", "sigmoid") != "softmax" else bp.loss(net, e, y) * e.shape[1]


def _loss_no_half(net, e, y):
    return np.sum(e ** 2) / e.shape[1] if net.get("output", "sigmoid") != "softmax" else bp.loss(net, e, y)


M = Mistake
CATALOGUE: tuple[Mistake, ...] = (
    M("error-sign", "error", lambda o, y: y - o, 5, "e = o − y", "e = y − o",
      "The error is the output minus the target, o − y (the derivative of ½(o − y)²); y − o flips the sign of "
      "every δ and gradient, so gradient descent would climb."),
    M("loss-not-averaged", "loss", _loss_sum, 7, "L = ½·Σ e² / N", "L = ½·Σ e² (no / N)",
      "The loss is averaged over the N samples of the batch (/ size(net.e, 2)), as every gradient is."),
    M("loss-missing-half", "loss", _loss_no_half, 7, "L = ½·Σ e² / N", "L = Σ e² / N",
      "The loss has the ½ that makes its derivative exactly e; without it L is twice the lecture's."),
    M("od-missing-sigmoid-derivative", "output_delta", _od_missing_derivative, 10,
      "od = e .* (o .* (1 − o))", "od = e",
      "The output layer is a sigmoid too: its δ is the error times σ'(z) = o .* (1 − o); od = e is the "
      "softmax/cross-entropy rule, not the sigmoid/squared-error one.",
      seen="DeepLearnToolbox#100 (asks why not net.od = net.e)"),
    M("od-sigmoid-applied-twice", "output_delta", _od_sigmoid_twice,
      10, "od = e .* (o .* (1 − o))", "od = e .* (sigm(o) .* (1 − sigm(o)))",
      "o is already σ(z): σ'(z) is o .* (1 − o); applying sigm to o again takes the derivative at the wrong point."),
    M("softmax-od-with-sigmoid-derivative", "output_delta", _od_sigmoid_always, 10,
      "od = e (softmax with cross-entropy)", "od = e .* (o .* (1 − o))",
      "With a softmax output and cross-entropy, the softmax Jacobian cancels the 1/o of the log: od = o − y, "
      "with no o .* (1 − o).", needs=frozenset({"softmax"})),
    M("fvd-extra-derivative", "fvd_derivative", _fvd_always, 13,
      "fvd .* (fv .* (1 − fv)) only when the last layer is 'c'", "applied when it is 's' too",
      "Only a convolution layer has a sigmoid; when the last layer is a pooling layer, fvd is ffW' * od with "
      "no fv .* (1 − fv)."),
    M("fvd-missing-derivative", "fvd_derivative", _fvd_never, 13,
      "fvd .* (fv .* (1 − fv)) when the last layer is 'c'", "left out",
      "When the last layer is a convolution layer, fv holds its sigmoid outputs, so fvd needs the factor "
      "fv .* (1 − fv)."),
    M("fvd-reshape-order", "fvd_reshape", lambda rows, sa: rows.reshape(sa, order="C"), 20,
      "reshape(fvd rows, sa(1), sa(2), sa(3)), column-major", "reshaped row-major",
      "cnnff flattened each map column by column (MATLAB's order); numpy's reshape is row-major by default, "
      "so it needs order='F' to put each δ back where its activation came from.",
      seen="the classic numpy port slip"),
    M("pool-missing-scale-division", "through_pool", lambda d, scale: bp.expand(d, [scale, scale, 1]), 26,
      "expand(d, [s s 1]) / s^2", "expand(d, [s s 1])",
      "Mean pooling weighs each of the s² elements of a window by 1/s², so the δ it sends back is divided by s²."),
    M("pool-divides-by-scale", "through_pool", lambda d, scale: bp.expand(d, [scale, scale, 1]) / scale, 26,
      "expand(d, [s s 1]) / s^2", "expand(d, [s s 1]) / s",
      "A window has s² elements, not s: the δ sent back through mean pooling is divided by s^2."),
    M("pool-zero-upsampling", "through_pool", _top_left, 26,
      "expand(d, [s s 1]) / s^2", "d at the top-left element of each s×s window, 0 elsewhere, no division",
      "Every element of a mean-pooling window contributed to the pooled value, so every one gets δ/s²; "
      "putting δ at one element is zero-insertion upsampling (the backward of a strided subsample), not "
      "the backward of mean pooling."),
    M("conv-missing-activation-derivative", "activation_factor", lambda a, activation="sigmoid": np.ones_like(a), 26,
      "a .* (1 − a) .* (expand …)", "expand … alone",
      "A convolution layer's maps went through sigm, so its δ is multiplied by σ'(z) = a .* (1 − a)."),
    M("conv-sigmoid-applied-twice", "activation_factor", _sigmoid_twice, 26,
      "a .* (1 − a) .* (expand …)", "sigm(a) .* (1 − sigm(a)) .* (expand …)",
      "a is already σ(z): σ'(z) is a .* (1 − a); applying sigm to a again takes the derivative at the wrong point."),
    M("pool-layer-extra-derivative", "pool_layer_delta", lambda a, z: a * (1 - a) * z, 34,
      "net.layers{l}.d{i} = z", "d{i} = a .* (1 − a) .* z",
      "A pooling layer has no sigmoid (\"only conv layers has sigm function\"), so its δ is z with no "
      "a .* (1 − a)."),
    M("full-conv-missing-rot180", "full_conv_kernel", lambda k: np.asarray(k), 32,
      "convn(d, rot180(k), 'full')", "convn(d, k, 'full')",
      "The δ going back through a 'valid' convolution is a 'full' correlation with k, which convn (a true "
      "convolution) computes as convn(d, rot180(k), 'full').",
      seen="DeepLearnToolbox#169 (how to understand rot180 and 'full'), #41"),
    M("full-conv-transpose-for-rot180", "full_conv_kernel", lambda k: np.asarray(k).T, 32,
      "rot180(k)", "k' (a transpose for a rotation)",
      "rot180 flips rows and columns (flipdim(flipdim(k, 1), 2)); a transpose k' swaps them, which is a "
      "different matrix unless k is symmetric.",
      seen="BVLC/caffe#5812 and pytorch/pytorch#61100 (the transposed weight matrix of im2col read as a rotation)"),
    M("full-conv-rot90-for-rot180", "full_conv_kernel", _rot90, 32,
      "rot180(k)", "rot90(k)",
      "The kernel is turned by 180°, i.e. flipped up-down and left-right, not by 90°.",
      seen="amsukdu/SimplePythonCNN#6 (why rotate by 90 degrees?)"),
    M("full-conv-not-accumulated", "full_conv_accumulate", lambda z, term: term, 32,
      "z = z + convn(…) over j", "z = convn(…): only the last j counts",
      "An 's' map feeds every map j of the next convolution layer, so its δ is the sum over j of what each sends back."),
    M("dk-missing-flipall", "dk_flip", lambda a: np.asarray(a), 44,
      "convn(flipall(a), d, 'valid')", "convn(a, d, 'valid')",
      "The kernel gradient is a correlation of a with d; convn convolves, so a is flipped in every dimension "
      "first (flipall), which also lines sample n of a up with sample n of d.",
      seen="DeepLearnToolbox#169 (how to understand flipall, 'valid'?)"),
    M("dk-spatial-flip-only", "dk_flip", bp.rot180, 44,
      "flipall(a): rows, columns and samples", "rot180(a): rows and columns only (pairs sample n with N+1−n)",
      "convn also runs over the sample dimension, so a must be flipped there too: with rot180 alone the "
      "activations of sample n are multiplied with the δ of sample N+1−n.",
      seen="DeepLearnToolbox#168 (why flip in the batch direction?)"),
    M("dk-rotated", "kernel_gradient", _dk_rotated, 44,
      "convn(flipall(a), d, 'valid')", "rot180 of it (e.g. convn(a, flipall(d), 'valid'))",
      "dk comes out turned by 180°: correlating a with d belongs to the kernel as convn uses it, so the "
      "flip goes on a (flipall(a)), not on d or on the result.",
      seen="DeepLearnToolbox#41 (flipall(convn(ad, flipall(i), 'valid')) proposed)"),
    M("dk-not-averaged", "dk_average", lambda dk, n: dk, 44,
      "convn(…) / N", "no division",
      "The kernel gradient is the mean over the batch: divide by N = size(d{j}, 3), as dffW is."),
    M("db-not-averaged", "bias_gradient", lambda d, n: np.sum(d), 46,
      "sum(d(:)) / N", "sum(d(:))",
      "The bias gradient is the mean over the batch: divide by N = size(d{j}, 3)."),
    M("dffW-not-averaged", "dffW", lambda od, fv: od @ fv.T, 50,
      "od * fv' / N", "od * fv'",
      "dffW is the mean over the batch: divide by N = size(od, 2)."),
    M("dffb-not-averaged", "dffb", lambda od: np.sum(od, axis=1, keepdims=True), 51,
      "mean(od, 2)", "sum(od, 2)",
      "dffb is the mean of od over the batch, mean(od, 2), not its sum."),
    M("relu-derivative-one", "activation_factor", _relu_prime_one, 26,
      "ReLU: (a > 0) .* (expand …)", "1 .* (expand …)",
      "ReLU's slope is 1 where a > 0 and 0 where the unit is off: the δ of an off unit is 0.",
      needs=frozenset({"relu"})),
    M("tanh-derivative-as-sigmoid", "activation_factor", _tanh_as_sigmoid, 26,
      "tanh: (1 − a.^2) .* (expand …)", "a .* (1 − a) .* (expand …)",
      "tanh' = 1 − tanh² = 1 − a²; a .* (1 − a) is the sigmoid's.", needs=frozenset({"tanh"})),
    M("max-pool-spread-as-mean", "max_pool_back", _max_as_mean, 26,
      "max pooling: expand(d, [s s 1]) .* mask", "expand(d, [s s 1]) / s^2, as mean pooling",
      "A max-pooling window's value is one element, so all of its δ goes to that element (the mask); "
      "spreading δ/s² over the window is mean pooling's rule.", needs=frozenset({"max"})),
    M("max-pool-no-mask", "max_pool_back", _max_no_mask, 26,
      "max pooling: expand(d, [s s 1]) .* mask", "expand(d, [s s 1])",
      "Only the element that was the window's maximum gets δ; the others did not reach the output, so their "
      "δ is 0 (multiply by the mask).", needs=frozenset({"max"})),
)
del M

BY_ID = {m.id: m for m in CATALOGUE}


def rules_of(ids) -> dict:
    """The replaced rules of several mistakes at once (each a different rule)."""
    rules = {}
    for mistake_id in ids:
        mistake = BY_ID[mistake_id]
        if mistake.rule in rules:
            raise ValueError(f"{mistake_id} replaces {mistake.rule}, which another mistake in {list(ids)} replaces")
        rules.update(mistake.rules)
    return rules


class Reference:
    """`cnnff` and `cnnbp` with some mistakes made (none: the lecture's), shaped like the `backprop`
    module so that the checks of `verification.checks` (`manual=`) run on it."""

    def __init__(self, *ids):
        self.ids, self._rules = tuple(ids), rules_of(ids)

    cnnff = staticmethod(bp.cnnff)

    def cnnbp(self, net, y):
        return bp.cnnbp(net, y, self._rules)
