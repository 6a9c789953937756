"""A vectorised port of cnnbp.m (numpy sliding windows and einsum, no scipy, nothing of jaxcnn), written
for the tests of `jaxcnn check`: `make(*slips)` plants mistakes, each written out here in this style,
so that the checker must recognise them from the numbers alone. `cnnbp` is the correct one."""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

OPTIONS = {"tanh", "relu", "max", "softmax"}


def _rot180(k):
    return k[::-1, ::-1]


def _valid(a, kernel):
    """True 'valid' convolution of a (H×W×N) with a 2-D kernel, by windows."""
    kh, kw = kernel.shape
    return np.einsum("xynuv,uv->xyn", sliding_window_view(a, (kh, kw), axis=(0, 1)), kernel[::-1, ::-1])


def _full(d, kernel):
    kh, kw = kernel.shape
    return _valid(np.pad(d, ((kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0))), kernel)


def _valid3(a, d):
    """True 'valid' convolution of a (H×W×N) with d (h×w×N) over all three dimensions: a kh×kw result."""
    h, w, _ = d.shape
    return np.einsum("uvnxy,xyn->uv", sliding_window_view(a, (h, w), axis=(0, 1)), d[::-1, ::-1, ::-1])


def _prime(a, activation):
    return {"sigmoid": lambda: a * (1 - a), "tanh": lambda: 1 - a ** 2, "relu": lambda: (a > 0) * 1.0}[activation]()


def make(*slips):
    slips = set(slips)

    def cnnbp(net, y):
        layers, n = net["layers"], len(net["layers"])
        N = y.shape[1]
        o = net["o"]
        e = y - o if "error-sign" in slips else o - y
        softmax = net.get("output") == "softmax"
        if softmax:
            z = np.log(np.maximum(o, 1e-300))
            L = -np.sum(y * z) if "loss-not-averaged" in slips else -np.sum(y * z) / N
        else:
            L = np.sum(e ** 2) / 2
            L = L if "loss-not-averaged" in slips else L / N
            L = 2 * L if "loss-missing-half" in slips else L
        if "od-missing-sigmoid-derivative" in slips or (softmax and "softmax-od-with-sigmoid-derivative" not in slips):
            od = e
        elif "od-sigmoid-applied-twice" in slips:
            s = 1 / (1 + np.exp(-o))
            od = e * s * (1 - s)
        else:
            od = e * o * (1 - o)
        fvd = np.einsum("cf,cn->fn", net["ffW"], od)
        last = layers[-1]
        if (last["type"] == "c" or "fvd-extra-derivative" in slips) and "fvd-missing-derivative" not in slips:
            fvd = fvd * _prime(net["fv"], last.get("activation", "sigmoid"))
        h, w, _ = last["a"][0].shape
        order = "C" if "fvd-reshape-order" in slips else "F"
        blocks = fvd.reshape(len(last["a"]), h * w, N)
        d = {n - 1: [b.reshape(h, w, N, order=order) for b in blocks]}
        for l in range(n - 2, 0, -1):
            up, layer = layers[l + 1], layers[l]
            a = np.stack(layer["a"])                              # maps × H × W × N
            if up["type"] == "s":
                s = up["scale"]
                dn = np.stack(d[l + 1])
                if up.get("pool") == "max":
                    spread = np.kron(dn, np.ones((1, s, s, 1)))
                    if "max-pool-spread-as-mean" in slips:
                        back = spread / s ** 2
                    elif "max-pool-no-mask" in slips:
                        back = spread
                    else:
                        back = spread * np.stack(up["mask"])
                elif "pool-zero-upsampling" in slips:
                    back = np.zeros((dn.shape[0], dn.shape[1] * s, dn.shape[2] * s, N))
                    back[:, ::s, ::s, :] = dn
                else:
                    back = np.kron(dn, np.ones((1, s, s, 1)))
                    back = back if "pool-missing-scale-division" in slips else \
                        back / s if "pool-divides-by-scale" in slips else back / s ** 2
                activation = layer.get("activation", "sigmoid")
                if "conv-missing-activation-derivative" in slips or (activation == "relu" and "relu-derivative-one" in slips):
                    factor = 1.0
                elif "conv-sigmoid-applied-twice" in slips and activation == "sigmoid":
                    sa = 1 / (1 + np.exp(-a))
                    factor = sa * (1 - sa)
                elif activation == "tanh" and "tanh-derivative-as-sigmoid" in slips:
                    factor = a * (1 - a)
                else:
                    factor = _prime(a, activation)
                d[l] = list(factor * back)
            else:
                turn = (lambda k: k) if "full-conv-missing-rot180" in slips else (lambda k: k.T) \
                    if "full-conv-transpose-for-rot180" in slips else np.rot90 \
                    if "full-conv-rot90-for-rot180" in slips else _rot180
                maps = []
                for i in range(len(layer["a"])):
                    terms = [_full(d[l + 1][j], turn(up["k"][i][j])) for j in range(len(d[l + 1]))]
                    z = terms[-1] if "full-conv-not-accumulated" in slips else np.sum(terms, axis=0)
                    if "pool-layer-extra-derivative" in slips:
                        z = a[i] * (1 - a[i]) * z
                    maps.append(z)
                d[l] = maps
        out = {**net, "e": e, "L": L, "od": od, "fvd": fvd, "layers": [dict(layer) for layer in layers]}
        for l in range(1, n):
            out["layers"][l]["d"] = d[l]
            if layers[l]["type"] != "c":
                continue
            prev = layers[l - 1]["a"]
            flip = (lambda a: a) if "dk-missing-flipall" in slips else (lambda a: a[::-1, ::-1]) \
                if "dk-spatial-flip-only" in slips else (lambda a: a[::-1, ::-1, ::-1])
            dk = [[_valid3(flip(prev[i]), d[l][j]) for j in range(len(d[l]))] for i in range(len(prev))]
            if "dk-rotated" in slips:
                dk = [[_rot180(k) for k in row] for row in dk]
            out["layers"][l]["dk"] = dk if "dk-not-averaged" in slips else [[k / N for k in row] for row in dk]
            db = np.einsum("jxyn->j", np.stack(d[l]))
            out["layers"][l]["db"] = list(db if "db-not-averaged" in slips else db / N)
        out["dffW"] = od @ net["fv"].T if "dffW-not-averaged" in slips else od @ net["fv"].T / N
        out["dffb"] = od.sum(axis=1, keepdims=True) if "dffb-not-averaged" in slips else od.mean(axis=1, keepdims=True)
        return out

    return cnnbp


cnnbp = make()


def cnnff(net, x):
    """The forward pass, vectorised: every map of a 'c' layer at once."""
    out = {**net, "layers": [dict(layer) for layer in net["layers"]]}
    maps = [x]
    out["layers"][0]["a"] = maps
    for layer in out["layers"][1:]:
        if layer["type"] == "c":
            act = {"sigmoid": lambda z: 1 / (1 + np.exp(-z)), "tanh": np.tanh,
                   "relu": lambda z: np.maximum(z, 0)}[layer.get("activation", "sigmoid")]
            maps = [act(sum(_valid(maps[i], layer["k"][i][j]) for i in range(len(maps))) + layer["b"][j])
                    for j in range(layer["outputmaps"])]
        else:
            s = layer["scale"]
            h, w, n = maps[0].shape
            blocks = [m.reshape(h // s, s, w // s, s, n) for m in maps]
            maps = [b.max(axis=(1, 3)) if layer.get("pool") == "max" else b.mean(axis=(1, 3)) for b in blocks]
        layer["a"] = maps
    fv = np.concatenate([m.reshape(-1, m.shape[2], order="F") for m in maps])
    z = net["ffW"] @ fv + net["ffb"]
    out["fv"] = fv
    if net.get("output") == "softmax":
        ez = np.exp(z - z.max(axis=0))
        out["o"] = ez / ez.sum(axis=0)
    else:
        out["o"] = 1 / (1 + np.exp(-z))
    return out
