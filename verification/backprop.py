"""The lecture's delta-rule backprop: `cnnff.m`, `cnnbp.m` and `cnnapplygrads.m`, step by step, in numpy.

Written independently of `jaxcnn.model` (float64 numpy, the toolbox's own layout: maps are
lists `a[j]` of H×W×N arrays holding transposed images, kernels `k[i][j]` used by true
convolution), so that agreeing with `jax.grad` through the bridge is real evidence.
Each function's docstring quotes the lines of the toolbox it follows.
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


def cnnff(net: dict, x: list) -> dict:
    """`cnnff.m`. `x`: the input maps, a list of H×W×N arrays (one for the toolbox's single channel).

        net.layers{1}.a{1} = x;
        z = z + convn(net.layers{l - 1}.a{i}, net.layers{l}.k{i}{j}, 'valid');
        net.layers{l}.a{j} = sigm(z + net.layers{l}.b{j});
        z = convn(net.layers{l - 1}.a{j}, ones(net.layers{l}.scale) / (net.layers{l}.scale ^ 2), 'valid');
        net.layers{l}.a{j} = z(1 : net.layers{l}.scale : end, 1 : net.layers{l}.scale : end, :);
        net.fv = [net.fv; reshape(net.layers{n}.a{j}, sa(1) * sa(2), sa(3))];
        net.o = sigm(net.ffW * net.fv + repmat(net.ffb, 1, size(net.fv, 2)));
    """
    layers = net["layers"]
    acts = [list(x)]
    for l in range(1, len(layers)):
        layer, prev = layers[l], acts[l - 1]
        if layer["type"] == "c":
            a = []
            for j in range(layer["outputmaps"]):
                z = 0.0
                for i in range(len(prev)):
                    z = z + convn_valid(prev[i], layer["k"][i][j])
                a.append(sigm(z + layer["b"][j]))
        else:
            s = layer["scale"]
            a = [convn_valid(m, np.ones((s, s)) / s ** 2)[::s, ::s, :] for m in prev]
        acts.append(a)
    last = acts[-1]
    fv = np.concatenate([m.reshape(m.shape[0] * m.shape[1], m.shape[2], order="F") for m in last], axis=0)
    o = sigm(net["ffW"] @ fv + np.asarray(net["ffb"]).reshape(-1, 1))
    return dict(net, a=acts, fv=fv, o=o)


def cnnbp(net: dict, y) -> dict:
    """`cnnbp.m`: the loss, every delta, and every gradient. `y`: classes×N targets.

        net.e = net.o - y;  net.L = 1/2* sum(net.e(:) .^ 2) / size(net.e, 2);
        net.od = net.e .* (net.o .* (1 - net.o));               % output delta
        net.fvd = (net.ffW' * net.od);                          % feature vector delta
        if strcmp(net.layers{n}.type, 'c'), net.fvd = net.fvd .* (net.fv .* (1 - net.fv)); end
        net.layers{n}.d{j} = reshape(net.fvd(((j - 1) * fvnum + 1) : j * fvnum, :), sa(1), sa(2), sa(3));
    then for l = n-1 : -1 : 2 the deltas: back through layer l+1 (`_through_pool` or `_through_conv`),
    times a .* (1 - a) where layer l is 'c' (the toolbox writes these for alternating c/s stacks;
    keyed on the next layer's type they also cover c-c and s-s), then the gradients:
        net.layers{l}.dk{i}{j} = convn(flipall(net.layers{l - 1}.a{i}), net.layers{l}.d{j}, 'valid') / size(net.layers{l}.d{j}, 3);
        net.layers{l}.db{j} = sum(net.layers{l}.d{j}(:)) / size(net.layers{l}.d{j}, 3);
        net.dffW = net.od * (net.fv)' / size(net.od, 2);
        net.dffb = mean(net.od, 2);
    """
    layers, acts = net["layers"], net["a"]
    n = len(layers)
    e = net["o"] - y
    L = 0.5 * np.sum(e ** 2) / e.shape[1]
    od = e * (net["o"] * (1 - net["o"]))
    fvd = net["ffW"].T @ od
    if layers[-1]["type"] == "c":
        fvd = fvd * (net["fv"] * (1 - net["fv"]))
    sa = acts[-1][0].shape
    fvnum = sa[0] * sa[1]
    deltas = [None] * n
    deltas[-1] = [fvd[j * fvnum:(j + 1) * fvnum, :].reshape(sa, order="F") for j in range(len(acts[-1]))]
    for l in range(n - 2, 0, -1):
        nxt = layers[l + 1]
        back = (_through_pool(deltas[l + 1], nxt["scale"]) if nxt["type"] == "s"
                else _through_conv(acts[l], deltas[l + 1], nxt["k"]))
        deltas[l] = [a * (1 - a) * b for a, b in zip(acts[l], back)] if layers[l]["type"] == "c" else back
    grads = []
    for l in range(n):
        if layers[l]["type"] != "c":
            grads.append({})
            continue
        d, batch = deltas[l], deltas[l][0].shape[2]
        dk = [[convn_valid(flipall(acts[l - 1][i]), d[j])[:, :, 0] / batch for j in range(len(d))]
              for i in range(len(acts[l - 1]))]
        db = [np.sum(d[j]) / batch for j in range(len(d))]
        grads.append({"dk": dk, "db": db})
    dffW = od @ net["fv"].T / od.shape[1]
    dffb = np.mean(od, axis=1, keepdims=True)
    layers_out = [dict(layer, d=deltas[l], **grads[l]) for l, layer in enumerate(layers)]
    return dict(net, layers=layers_out, e=e, L=L, od=od, fvd=fvd, dffW=dffW, dffb=dffb)


def _through_pool(d_next, scale):
    """Back through an 's' layer (`cnnbp.m`, the 'c' branch, before its a .* (1 - a)):

        expand(net.layers{l + 1}.d{j}, [net.layers{l + 1}.scale net.layers{l + 1}.scale 1]) / net.layers{l + 1}.scale ^ 2
    """
    return [expand(d, [scale, scale, 1]) / scale ** 2 for d in d_next]


def _through_conv(a, d_next, k_next):
    """Back through a 'c' layer (`cnnbp.m`, the 's' branch):

        z = z + convn(net.layers{l + 1}.d{j}, rot180(net.layers{l + 1}.k{i}{j}), 'full');
        net.layers{l}.d{i} = z;
    """
    out = []
    for i in range(len(a)):
        z = np.zeros_like(a[i])
        for j in range(len(d_next)):
            z = z + convn_full(d_next[j], rot180(k_next[i][j]))
        out.append(z)
    return out


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
