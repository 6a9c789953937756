"""The lecture's delta-rule backprop: `cnnff.m`, `cnnbp.m` and `cnnapplygrads.m`, step by step, in numpy.

Written independently of `jaxcnn.model` (float64 numpy, the toolbox's own layout: maps are
lists `a[j]` of H×W×N arrays holding transposed images, kernels `k[i][j]` used by true
convolution), so that agreeing with `jax.grad` through the bridge is real evidence.
Each function's docstring quotes the lines of the toolbox it follows.

Beyond the toolbox, the net dict may carry jaxcnn's layer options (`toolbox.to_toolbox(net,
with_options=True)`): a 'c' layer's `activation` ("tanh", "relu"), an 's' layer's `pool` ("max"),
and the net's `output` ("softmax"). Absent keys are the toolbox's own sigmoid, mean pooling and
sigmoid/MSE output, so a toolbox net runs exactly the toolbox's arithmetic. Each option's rule
(`tanh_prime`, `relu_prime`, `max_pool` with `_through_max_pool`, `od_softmax`) sits beside the
line of `cnnbp.m` it replaces, with its derivation in the docstring.
"""
from __future__ import annotations

import numpy as np
from scipy import signal


def convn(a, k, shape):
    """MATLAB's `convn(a, k, shape)`: n-D true convolution (kernel flipped), shape 'valid' or 'full'.

    `k` may have fewer dimensions than `a` (trailing singleton dimensions), as in `convn(x, k2d, 'valid')`.
    """
    a, k = np.asarray(a, np.float64), np.asarray(k, np.float64)
    k = k.reshape(k.shape + (1,) * (a.ndim - k.ndim))
    return signal.convolve(a, k, mode=shape, method="direct")


def convn_valid(a, k):
    return convn(a, k, "valid")


def convn_full(a, k):
    return convn(a, k, "full")


def rot180(x):
    """`cnnbp.m`: `X = flipdim(flipdim(X, 1), 2)`: flip rows and columns."""
    return np.asarray(x)[::-1, ::-1]


def flipall(x):
    """The toolbox's `flipall`: flip every dimension."""
    x = np.asarray(x)
    return x[tuple(slice(None, None, -1) for _ in range(x.ndim))]


def expand(a, factors):
    """The toolbox's `expand(A, S)`: repeat each element S(d) times along dimension d (Kronecker with ones)."""
    out = np.asarray(a)
    for axis, s in enumerate(factors):
        out = np.repeat(out, s, axis=axis) if axis < out.ndim else out
    return out


def sigm(x):
    """`sigm.m`: 1 ./ (1 + exp(-x))."""
    return 1.0 / (1.0 + np.exp(-x))


def activate(activation: str, z):
    """A 'c' layer's nonlinearity: the toolbox's `sigm`, `tanh`, or ReLU `max(z, 0)`."""
    if activation == "sigmoid":
        return sigm(z)
    if activation == "tanh":
        return np.tanh(z)
    if activation == "relu":
        return np.maximum(z, 0.0)
    raise ValueError(f"unknown activation {activation!r} (sigmoid, tanh, relu)")


# ---- the activation's derivative, written through a = σ(z) as `cnnbp.m` writes it ----------------

def sigm_prime(a):
    """The toolbox's σ'(z) = a .* (1 - a) (`cnnbp.m`: `net.layers{l}.a{j} .* (1 - net.layers{l}.a{j})`
    and `net.fv .* (1 - net.fv)`).

    σ = 1/(1 + e^−z), so σ' = e^−z/(1 + e^−z)² = σ·(1 − σ) = a(1 − a)."""
    return a * (1 - a)


def tanh_prime(a):
    """tanh'(z) = 1 - a .^ 2, in place of `cnnbp.m`'s `a .* (1 - a)` for a tanh 'c' layer.

    tanh = sinh/cosh, so tanh' = (cosh² − sinh²)/cosh² = 1 − tanh² = 1 − a²."""
    return 1 - a ** 2


def relu_prime(a):
    """ReLU'(z) = (a > 0), in place of `cnnbp.m`'s `a .* (1 - a)` for a ReLU 'c' layer.

    a = max(z, 0) is z where z > 0 (slope 1) and 0 where z < 0 (slope 0), and a > 0 exactly where z > 0.
    At z = 0 there is no derivative; the convention is 0, as in `jax.nn.relu` (and PyTorch)."""
    return (a > 0).astype(np.float64)


def derivative(activation: str, a):
    """dσ/dz through a = σ(z), the factor the delta rule multiplies by: `sigm_prime`, `tanh_prime` or `relu_prime`."""
    return {"sigmoid": sigm_prime, "tanh": tanh_prime, "relu": relu_prime}[activation](a)


# ---- max pooling ---------------------------------------------------------------------------------

def max_pool(a, s):
    """Max pooling of one map `a` (H×W×N, toolbox layout) over s×s windows: (pooled map, mask).

    Each window takes its first maximum in the natural image's row-major order, as
    `jaxcnn.model.max_pool` (and PyTorch) do, and the mask is 1 at that element, 0 elsewhere. The
    toolbox's maps hold transposed images, so the natural (u, v) of a window is its array (v, u), and
    natural row-major order (u outer, v inner) is column-major order in the array, MATLAB's own
    `reshape` order:

        w = reshape(a(rows, cols, :), s * s, N);     % column by column = natural row by row
        [z, i] = max(w);                             % MATLAB's max returns the first maximum
        mask(rows, cols, :) = reshape(full(sparse(i, 1 : N, 1, s * s, N)), s, s, N);
    """
    h, w, n = a.shape
    pooled, mask = np.zeros((h // s, w // s, n)), np.zeros_like(a, dtype=np.float64)
    for p in range(h // s):
        for q in range(w // s):
            rows, cols = slice(p * s, (p + 1) * s), slice(q * s, (q + 1) * s)
            window = a[rows, cols, :].reshape(s * s, n, order="F")
            i = np.argmax(window, axis=0)                      # numpy's argmax returns the first maximum too
            pooled[p, q, :] = window[i, np.arange(n)]
            chosen = np.zeros((s * s, n))
            chosen[i, np.arange(n)] = 1.0
            mask[rows, cols, :] = chosen.reshape(s, s, n, order="F")
    return pooled, mask


# ---- the output layer ----------------------------------------------------------------------------

def softmax(z):
    """Column-wise softmax of classes×N pre-activations, exp(z) ./ sum(exp(z)); the column maximum is
    subtracted first (softmax(z − c) = softmax(z)), so that exp cannot overflow."""
    ez = np.exp(z - np.max(z, axis=0, keepdims=True))
    return ez / np.sum(ez, axis=0, keepdims=True)


def od_sigmoid(e, o):
    """The toolbox's output delta, `cnnbp.m`: net.od = net.e .* (net.o .* (1 - net.o)).

    L = ½·Σ(o − y)²/N with o = σ(z): ∂L/∂z = (o − y)·σ'(z)/N = e .* o(1 − o)/N. `od` leaves out the 1/N;
    `dffW`, `dk`, ... divide by N."""
    return e * (o * (1 - o))


def od_softmax(e, o):
    """The output delta of a softmax output with cross-entropy, in place of `cnnbp.m`'s
    `net.od = net.e .* (net.o .* (1 - net.o))`:   net.od = net.e   (= o − y).

    Per sample, L = −Σ_k y_k log o_k with o = softmax(z), whose Jacobian is ∂o_k/∂z_c = o_k([k = c] − o_c):
    ∂L/∂z_c = −Σ_k (y_k/o_k)·o_k([k = c] − o_c) = −y_c + o_c·Σ_k y_k = o_c − y_c, since Σ_k y_k = 1 (one-hot
    targets). The sigmoid's o(1 − o) is gone: the Jacobian's o_k cancels the 1/o_k of the log.
    `od_softmax_the_long_way` takes the same product with nothing cancelled."""
    return e


def softmax_jacobian(o):
    """∂o_k/∂z_c = o_k([k = c] − o_c) of one sample's softmax output o (classes,): diag(o) − o·oᵀ."""
    return np.diag(o) - np.outer(o, o)


def od_softmax_the_long_way(o, y):
    """`od` of softmax + cross-entropy by the chain rule with nothing cancelled: for each sample (column)
    n, (∂o/∂z)ᵀ · ∂L_n/∂o with ∂L_n/∂o = −y ./ o. Equal to `od_softmax`'s o − y for one-hot y."""
    return np.stack([softmax_jacobian(o[:, n]).T @ (-y[:, n] / o[:, n]) for n in range(o.shape[1])], axis=1)


def cnnff(net: dict, x: list) -> dict:
    """`cnnff.m`. `x`: the input maps, a list of H×W×N arrays (one for the toolbox's single channel).

        net.layers{1}.a{1} = x;
        z = z + convn(net.layers{l - 1}.a{i}, net.layers{l}.k{i}{j}, 'valid');
        net.layers{l}.a{j} = sigm(z + net.layers{l}.b{j});
        z = convn(net.layers{l - 1}.a{j}, ones(net.layers{l}.scale) / (net.layers{l}.scale ^ 2), 'valid');
        net.layers{l}.a{j} = z(1 : net.layers{l}.scale : end, 1 : net.layers{l}.scale : end, :);
        net.fv = [net.fv; reshape(net.layers{n}.a{j}, sa(1) * sa(2), sa(3))];
        net.o = sigm(net.ffW * net.fv + repmat(net.ffb, 1, size(net.fv, 2)));

    With options: a 'c' layer's `activation` replaces the `sigm` of its maps (`activate`); a max-pooling
    's' layer replaces the two mean-pooling lines by `max_pool` and keeps each map's mask in
    `mask[l][j]` for `cnnbp`; a softmax `output` replaces the last `sigm` by `softmax`. The output's
    pre-activation is kept as `logits`, for a loss that stays finite when an output underflows.
    """
    layers = net["layers"]
    acts, masks = [list(x)], [None]
    for l in range(1, len(layers)):
        layer, prev = layers[l], acts[l - 1]
        mask = None
        if layer["type"] == "c":
            a = []
            for j in range(layer["outputmaps"]):
                z = 0.0
                for i in range(len(prev)):
                    z = z + convn_valid(prev[i], layer["k"][i][j])
                a.append(activate(layer.get("activation", "sigmoid"), z + layer["b"][j]))
        elif layer.get("pool", "mean") == "max":
            pooled = [max_pool(m, layer["scale"]) for m in prev]
            a, mask = [p for p, _ in pooled], [m for _, m in pooled]
        else:
            s = layer["scale"]
            a = [convn_valid(m, np.ones((s, s)) / s ** 2)[::s, ::s, :] for m in prev]
        acts.append(a)
        masks.append(mask)
    last = acts[-1]
    fv = np.concatenate([m.reshape(m.shape[0] * m.shape[1], m.shape[2], order="F") for m in last], axis=0)
    z = net["ffW"] @ fv + np.asarray(net["ffb"]).reshape(-1, 1)
    o = softmax(z) if net.get("output", "sigmoid") == "softmax" else sigm(z)
    return dict(net, a=acts, mask=masks, fv=fv, o=o, logits=z)


# ---- cnnbp.m, rule by rule -----------------------------------------------------------------------
# `cnnbp` below composes small named rules, each beside the line of `cnnbp.m` it follows, so that a
# mistake is one rule replaced (`cnnbp(net, y, rules={"full_conv_kernel": lambda k: k})`): the
# catalogue of `jaxcnn.verification.mistakes` is made of such replacements, and `jaxcnn check` runs it.

LINES = {   # the lines of the lecture's `cnnbp.m` (DeepLearnToolbox's CNN/cnnbp.m) that the rules follow
    5: "net.e = net.o - y;",
    7: "net.L = 1/2* sum(net.e(:) .^ 2) / size(net.e, 2);",
    10: "net.od = net.e .* (net.o .* (1 - net.o));   %  output delta",
    11: "net.fvd = (net.ffW' * net.od);              %  feature vector delta",
    12: "if strcmp(net.layers{n}.type, 'c')         %  only conv layers has sigm function",
    13: "net.fvd = net.fvd .* (net.fv .* (1 - net.fv));",
    20: "net.layers{n}.d{j} = reshape(net.fvd(((j - 1) * fvnum + 1) : j * fvnum, :), sa(1), sa(2), sa(3));",
    26: "net.layers{l}.d{j} = net.layers{l}.a{j} .* (1 - net.layers{l}.a{j}) .* (expand(net.layers{l + 1}.d{j}, "
        "[net.layers{l + 1}.scale net.layers{l + 1}.scale 1]) / net.layers{l + 1}.scale ^ 2);",
    32: "z = z + convn(net.layers{l + 1}.d{j}, rot180(net.layers{l + 1}.k{i}{j}), 'full');",
    34: "net.layers{l}.d{i} = z;",
    44: "net.layers{l}.dk{i}{j} = convn(flipall(net.layers{l - 1}.a{i}), net.layers{l}.d{j}, 'valid') "
        "/ size(net.layers{l}.d{j}, 3);",
    46: "net.layers{l}.db{j} = sum(net.layers{l}.d{j}(:)) / size(net.layers{l}.d{j}, 3);",
    50: "net.dffW = net.od * (net.fv)' / size(net.od, 2);",
    51: "net.dffb = mean(net.od, 2);",
}


def error(o, y):
    """`cnnbp.m` line 5: net.e = net.o - y."""
    return o - y


def loss(net, e, y):
    """`cnnbp.m` line 7: net.L = 1/2* sum(net.e(:) .^ 2) / size(net.e, 2).

    A softmax output has the cross-entropy L = −Σ y .* log(o) / N instead, with log o taken from the
    output's pre-activation z (`cnnff`'s `logits`) as log_softmax(z) = z − max z − log Σ exp(z − max z):
    an output that underflows to o = 0 then still has a finite log o, where log(0) would make 0·log 0 = NaN."""
    if net.get("output", "sigmoid") != "softmax":
        return 0.5 * np.sum(e ** 2) / e.shape[1]
    if "logits" in net:
        z = net["logits"] - np.max(net["logits"], axis=0, keepdims=True)
        log_o = z - np.log(np.sum(np.exp(z), axis=0, keepdims=True))
        return -np.sum(y * log_o) / e.shape[1]
    from scipy.special import xlogy               # o alone: 0·log 0 = 0, as the limit is
    return -np.sum(xlogy(y, net["o"])) / e.shape[1]


def output_delta(e, o, output="sigmoid"):
    """`cnnbp.m` line 10: net.od = net.e .* (net.o .* (1 - net.o)) (`od_sigmoid`), or o − y for a softmax
    output with cross-entropy (`od_softmax`)."""
    return od_softmax(e, o) if output == "softmax" else od_sigmoid(e, o)


def fv_delta(ffW, od):
    """`cnnbp.m` line 11: net.fvd = (net.ffW' * net.od)."""
    return ffW.T @ od


def fvd_derivative(fvd, fv, last):
    """`cnnbp.m` lines 12-13: only when the last layer is 'c' (only conv layers have a sigm function),
    net.fvd = net.fvd .* (net.fv .* (1 - net.fv)); a pooling layer passes fvd on as it is."""
    return fvd * derivative(last.get("activation", "sigmoid"), fv) if last["type"] == "c" else fvd


def fvd_reshape(rows, sa):
    """`cnnbp.m` line 20: reshape(net.fvd(((j - 1) * fvnum + 1) : j * fvnum, :), sa(1), sa(2), sa(3)):
    map j's fvnum rows of fvd back into an sa(1)×sa(2)×N map, column-major (MATLAB's order, as `cnnff`
    flattened it)."""
    return rows.reshape(sa, order="F")


def activation_factor(a, activation="sigmoid"):
    """`cnnbp.m` line 26's first factor, a .* (1 - a): σ'(z) written through a = σ(z) (`derivative`)."""
    return derivative(activation, a)


def conv_layer_delta(factor, back):
    """`cnnbp.m` line 26: a 'c' layer's δ is its activation factor times what comes back from above."""
    return factor * back


def through_pool(d, scale):
    """`cnnbp.m` line 26: expand(net.layers{l + 1}.d{j}, [scale scale 1]) / net.layers{l + 1}.scale ^ 2: each
    pooled δ copied to its s×s window and weighed by 1/s², as mean pooling weighs each element."""
    return expand(d, [scale, scale, 1]) / scale ** 2


def full_conv_kernel(k):
    """`cnnbp.m` line 32: rot180(net.layers{l + 1}.k{i}{j}) (lines 53-54: flipdim(flipdim(X, 1), 2))."""
    return rot180(k)


def full_conv_accumulate(z, term):
    """`cnnbp.m` line 32: z = z + convn(...): an 's' map's δ sums what every map j above sends it."""
    return z + term


def pool_layer_delta(a, z):
    """`cnnbp.m` line 34: net.layers{l}.d{i} = z: a pooling layer has no activation, so no factor."""
    return z


def dk_flip(a):
    """`cnnbp.m` line 44: flipall(net.layers{l - 1}.a{i}): rows, columns and samples."""
    return flipall(a)


def kernel_gradient(a_prev, d, flip):
    """`cnnbp.m` line 44: convn(flipall(a{i}), d{j}, 'valid'), a kh×kw(×1) sum over every sample; `flip`
    is the `dk_flip` rule."""
    return convn_valid(flip(a_prev), d)[:, :, 0]


def dk_average(dk, n):
    """`cnnbp.m` line 44: ... / size(net.layers{l}.d{j}, 3): the mean over the N samples."""
    return dk / n


def bias_gradient(d, n):
    """`cnnbp.m` line 46: net.layers{l}.db{j} = sum(net.layers{l}.d{j}(:)) / size(net.layers{l}.d{j}, 3)."""
    return np.sum(d) / n


def dffW(od, fv):
    """`cnnbp.m` line 50: net.dffW = net.od * (net.fv)' / size(net.od, 2)."""
    return od @ fv.T / od.shape[1]


def dffb(od):
    """`cnnbp.m` line 51: net.dffb = mean(net.od, 2)."""
    return np.mean(od, axis=1, keepdims=True)


def _through_pool(d_next, scale, rule=through_pool):
    """Back through a mean-pooling 's' layer (`cnnbp.m` line 26, before its a .* (1 - a)):

        expand(net.layers{l + 1}.d{j}, [net.layers{l + 1}.scale net.layers{l + 1}.scale 1]) / net.layers{l + 1}.scale ^ 2
    """
    return [rule(d, scale) for d in d_next]


def _through_max_pool(d_next, scale, mask):
    """Back through a max-pooling 's' layer, in place of `cnnbp.m`'s mean-pooling line (`_through_pool`):

        expand(net.layers{l + 1}.d{j}, [net.layers{l + 1}.scale net.layers{l + 1}.scale 1]) .* net.layers{l + 1}.mask{j}

    with no / scale ^ 2. A window's pooled value is one of its elements, z = a(chosen), so ∂z/∂a is 1 at
    the chosen element and 0 at the others: the window's whole delta goes to that element, which `expand`
    copies to every element of the window and the mask keeps at one. (Mean pooling has ∂z/∂a = 1/s² at
    every element instead.)"""
    return [expand(d, [scale, scale, 1]) * m for d, m in zip(d_next, mask)]


def _through_conv(a, d_next, k_next, flip=full_conv_kernel, accumulate=full_conv_accumulate):
    """Back through a 'c' layer (`cnnbp.m` lines 30-34, the 's' branch):

        z = z + convn(net.layers{l + 1}.d{j}, rot180(net.layers{l + 1}.k{i}{j}), 'full');
        net.layers{l}.d{i} = z;
    """
    out = []
    for i in range(len(a)):
        z = np.zeros_like(a[i])
        for j in range(len(d_next)):
            z = accumulate(z, convn_full(d_next[j], flip(k_next[i][j])))
        out.append(z)
    return out


RULES = {   # the lecture's rules, by name; `cnnbp(net, y, rules)` replaces any of them
    "error": error, "loss": loss, "output_delta": output_delta, "fv_delta": fv_delta,
    "fvd_derivative": fvd_derivative, "fvd_reshape": fvd_reshape,
    "through_pool": through_pool, "max_pool_back": _through_max_pool,
    "activation_factor": activation_factor, "conv_layer_delta": conv_layer_delta,
    "full_conv_kernel": full_conv_kernel, "full_conv_accumulate": full_conv_accumulate,
    "pool_layer_delta": pool_layer_delta,
    "dk_flip": dk_flip, "kernel_gradient": kernel_gradient, "dk_average": dk_average,
    "bias_gradient": bias_gradient, "dffW": dffW, "dffb": dffb,
}


def cnnbp(net: dict, y, rules: dict | None = None) -> dict:
    """`cnnbp.m`: the loss, every delta, and every gradient. `y`: classes×N targets. `rules` replaces any
    of the lecture's `RULES` by name (a mistake of the catalogue is one such replacement).

        net.e = net.o - y;  net.L = 1/2* sum(net.e(:) .^ 2) / size(net.e, 2);     % `error`, `loss`
        net.od = net.e .* (net.o .* (1 - net.o));               % `output_delta`
        net.fvd = (net.ffW' * net.od);                          % `fv_delta`
        if strcmp(net.layers{n}.type, 'c'), net.fvd = net.fvd .* (net.fv .* (1 - net.fv)); end   % `fvd_derivative`
        net.layers{n}.d{j} = reshape(net.fvd(((j - 1) * fvnum + 1) : j * fvnum, :), sa(1), sa(2), sa(3));  % `fvd_reshape`
    then for l = n-1 : -1 : 2 the deltas: back through layer l+1 (`through_pool` or
    `full_conv_kernel`, `full_conv_accumulate`), times a .* (1 - a) where layer l is 'c'
    (`activation_factor`, `conv_layer_delta`; `pool_layer_delta` where it is 's'; the toolbox writes
    these for alternating c/s stacks; keyed on the next layer's type they also cover c-c and s-s), then
    the gradients:
        net.layers{l}.dk{i}{j} = convn(flipall(net.layers{l - 1}.a{i}), net.layers{l}.d{j}, 'valid') / size(net.layers{l}.d{j}, 3);
        net.layers{l}.db{j} = sum(net.layers{l}.d{j}(:)) / size(net.layers{l}.d{j}, 3);
        net.dffW = net.od * (net.fv)' / size(net.od, 2);
        net.dffb = mean(net.od, 2);
    (`dk_flip`, `kernel_gradient`, `dk_average`, `bias_gradient`, `dffW`, `dffb`).

    With options: a softmax output has the cross-entropy loss and `od_softmax` (o − y); the a .* (1 - a)
    of a tanh or ReLU 'c' layer, in the deltas and in the `fvd` line, becomes `tanh_prime` (1 − a²) or
    `relu_prime` (a > 0); a max-pooling layer sends δ back along its mask (`_through_max_pool`, the
    rule `max_pool_back`) instead of spreading it. The gradients are the same lines.
    """
    r = RULES if rules is None else {**RULES, **rules}
    unknown = set(r) - set(RULES)
    if unknown:
        raise ValueError(f"cnnbp: no rule named {', '.join(sorted(unknown))} (rules: {', '.join(RULES)})")
    layers, acts = net["layers"], net["a"]
    n = len(layers)
    output = net.get("output", "sigmoid")
    e = r["error"](net["o"], y)
    L = r["loss"](net, e, y)
    od = r["output_delta"](e, net["o"], output)
    fvd = r["fvd_derivative"](r["fv_delta"](net["ffW"], od), net["fv"], layers[-1])
    sa = acts[-1][0].shape
    fvnum = sa[0] * sa[1]
    deltas = [None] * n
    deltas[-1] = [r["fvd_reshape"](fvd[j * fvnum:(j + 1) * fvnum, :], sa) for j in range(len(acts[-1]))]
    for l in range(n - 2, 0, -1):
        nxt = layers[l + 1]
        if nxt["type"] == "c":
            back = _through_conv(acts[l], deltas[l + 1], nxt["k"], r["full_conv_kernel"], r["full_conv_accumulate"])
        elif nxt.get("pool", "mean") == "max":
            back = r["max_pool_back"](deltas[l + 1], nxt["scale"], net["mask"][l + 1])
        else:
            back = _through_pool(deltas[l + 1], nxt["scale"], r["through_pool"])
        if layers[l]["type"] == "c":
            activation = layers[l].get("activation", "sigmoid")
            deltas[l] = [r["conv_layer_delta"](r["activation_factor"](a, activation), b) for a, b in zip(acts[l], back)]
        else:
            deltas[l] = [r["pool_layer_delta"](a, b) for a, b in zip(acts[l], back)]
    grads = []
    for l in range(n):
        if layers[l]["type"] != "c":
            grads.append({})
            continue
        d, batch = deltas[l], deltas[l][0].shape[2]
        dk = [[r["dk_average"](r["kernel_gradient"](acts[l - 1][i], d[j], r["dk_flip"]), batch) for j in range(len(d))]
              for i in range(len(acts[l - 1]))]
        db = [r["bias_gradient"](d[j], batch) for j in range(len(d))]
        grads.append({"dk": dk, "db": db})
    layers_out = [dict(layer, d=deltas[l], **grads[l]) for l, layer in enumerate(layers)]
    return dict(net, layers=layers_out, e=e, L=L, od=od, fvd=fvd, dffW=r["dffW"](od, net["fv"]), dffb=r["dffb"](od))


def cnnapplygrads(net: dict, alpha: float) -> dict:
    """`cnnapplygrads.m`: plain SGD.

        net.layers{l}.k{ii}{j} = net.layers{l}.k{ii}{j} - opts.alpha * net.layers{l}.dk{ii}{j};
        net.layers{l}.b{j} = net.layers{l}.b{j} - opts.alpha * net.layers{l}.db{j};
        net.ffW = net.ffW - opts.alpha * net.dffW;
        net.ffb = net.ffb - opts.alpha * net.dffb;
    """
    layers = []
    for layer in net["layers"]:
        if layer["type"] == "c":
            layer = dict(layer,
                         k=[[k - alpha * dk for k, dk in zip(row, drow)] for row, drow in zip(layer["k"], layer["dk"])],
                         b=[b - alpha * db for b, db in zip(layer["b"], layer["db"])])
        layers.append(layer)
    return dict(net, layers=layers, ffW=net["ffW"] - alpha * net["dffW"],
                ffb=np.asarray(net["ffb"]).reshape(-1, 1) - alpha * net["dffb"])


def input_maps(x) -> list:
    """Toolbox input H×W×N (one map) or H×W×C×N (C maps) -> the list `a{1}`, `a{2}`, ..."""
    x = np.asarray(x, np.float64)
    return [x] if x.ndim == 3 else [x[:, :, c, :] for c in range(x.shape[2])]
