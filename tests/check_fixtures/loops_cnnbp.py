"""A loop-by-loop port of cnnbp.m for the tests of `jaxcnn check`: every convolution an explicit sum over
kernel offsets, every map and sample its own loop; plain Python and numpy slicing, nothing of jaxcnn."""
import numpy as np


def _corr_valid(a, k):
    """Σ_uv a[x+u, y+v] k[u, v] over kernel offsets, for 2-D a and k."""
    kh, kw = k.shape
    out = np.zeros((a.shape[0] - kh + 1, a.shape[1] - kw + 1))
    for u in range(kh):
        for v in range(kw):
            out += k[u, v] * a[u:u + out.shape[0], v:v + out.shape[1]]
    return out


def cnnbp(net, y):
    layers = net["layers"]
    n, N = len(layers), y.shape[1]
    e = net["o"] - y
    od = e * net["o"] * (1 - net["o"])
    fvd = net["ffW"].T @ od
    if layers[-1]["type"] == "c":
        fvd = fvd * net["fv"] * (1 - net["fv"])
    h, w, _ = layers[-1]["a"][0].shape
    deltas = {n - 1: []}
    for j in range(len(layers[-1]["a"])):
        d = np.zeros((h, w, N))
        for m in range(N):
            for c in range(w):               # column-major: rows vary fastest
                for r in range(h):
                    d[r, c, m] = fvd[j * h * w + c * h + r, m]
        deltas[n - 1].append(d)
    for l in range(n - 2, 0, -1):
        up, maps = layers[l + 1], layers[l]["a"]
        deltas[l] = []
        for i, a in enumerate(maps):
            if up["type"] == "s":
                s = up["scale"]
                back = np.zeros_like(a)
                for p in range(a.shape[0]):
                    for q in range(a.shape[1]):
                        back[p, q, :] = deltas[l + 1][i][p // s, q // s, :] / (s * s)
                deltas[l].append(a * (1 - a) * back)
            else:
                z = np.zeros_like(a)
                for j, d in enumerate(deltas[l + 1]):
                    k = up["k"][i][j]
                    kh, kw = k.shape
                    for m in range(a.shape[2]):
                        # the input δ of a 'valid' true convolution: each output δ sent back along k
                        for x in range(d.shape[0]):
                            for yy in range(d.shape[1]):
                                z[x:x + kh, yy:yy + kw, m] += d[x, yy, m] * k[::-1, ::-1]
                deltas[l].append(z)
    out = dict(net, e=e, L=0.5 * np.sum(e ** 2) / N, od=od, fvd=fvd, layers=[dict(layer) for layer in layers])
    for l in range(1, n):
        out["layers"][l]["d"] = deltas[l]
        if layers[l]["type"] != "c":
            continue
        prev = layers[l - 1]["a"]
        dk = [[None] * len(deltas[l]) for _ in prev]
        for i, a in enumerate(prev):
            for j, d in enumerate(deltas[l]):
                g = sum(_corr_valid(a[:, :, m], d[:, :, m]) for m in range(N))
                dk[i][j] = g[::-1, ::-1] / N          # the kernel is used flipped (true convolution)
        out["layers"][l]["dk"] = dk
        out["layers"][l]["db"] = [float(np.sum(d)) / N for d in deltas[l]]
    out["dffW"] = od @ net["fv"].T / N
    out["dffb"] = od.mean(axis=1).reshape(-1, 1)
    return out


def rot180(x):
    return np.flip(np.flip(x, 0), 1)


def flipall(x):
    return np.flip(x)


def expand(a, s):
    out = np.asarray(a)
    for axis, times in enumerate(s):
        out = np.repeat(out, times, axis=axis)
    return out


def convn(a, k, shape):
    from scipy.signal import convolve

    a, k = np.asarray(a), np.asarray(k)
    return convolve(a, k.reshape(k.shape + (1,) * (a.ndim - k.ndim)), mode=shape)
