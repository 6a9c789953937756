"""The lecture's backprop rules as exact identities, proved with sympy.

Each proof writes a forward expression in symbols (the maps x, kernels k and deltas δ of several
sizes, non-square maps, kernels 1–3, a batch of 2), differentiates it with `sympy.diff`, and subtracts
the rule as `verification/backprop.py` writes it (`full_conv_kernel` = rot180, `dk_flip` = flipall,
`through_pool` = expand/s², `max_pool_back` = the mask, `activation_factor` = σ' or tanh',
`output_delta`), applied to the same symbols. The
identity holds when every entry of the difference expands to 0: exact, for those sizes, not to 1e-15.
The rules are `backprop.RULES`, the ones its `cnnbp` composes, looked up at call time, so a broken rule
there fails here too.

Every identity has wrong twins (`TWINS`): the same proof with one rule replaced by a mistake people
make, most of them entries of `jaxcnn check`'s catalogue (`verification.mistakes`). A twin is shown wrong by a counterexample, a point where its difference is non-zero in floats;
that cannot be a simplifier's blind spot. The argument for all sizes, at the level of indices, is in
docs/verification.md.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable

import numpy as np
import sympy as sp

from jaxcnn.verification import backprop as bp
from jaxcnn.verification.rows import Row

# (H, W, kernelsize, input maps, output maps, N): non-square maps, kernels 1-3, a batch of 2, and one
# case with 2 -> 2 maps so that the sum over j in `z = z + convn(...)` is proved too
CONV_CASES = ((3, 4, 1, 1, 1, 2), (4, 5, 2, 1, 1, 2), (5, 4, 3, 1, 1, 2), (3, 4, 2, 2, 2, 2))
POOL_CASES = ((4, 6, 2, 2), (6, 3, 3, 2))          # (H, W, scale, N)
OUTPUT_CASE = (3, 2)                                # (classes, N)


# ---- symbols and the forward operations, by their definitions --------------------------------------

def symbols(name: str, shape, **assumptions) -> np.ndarray:
    """An object array of sympy symbols named after MATLAB's 1-based indices, e.g. x(2,3,1)."""
    out = np.empty(shape, dtype=object)
    for index in np.ndindex(*shape):
        out[index] = sp.Symbol(f"{name}({','.join(str(i + 1) for i in index)})", real=True, **assumptions)
    return out


def convn(a, k, shape: str) -> np.ndarray:
    """MATLAB's `convn(a, k, shape)` on symbols, from the definition of true convolution:
    full(n) = Σ_m a(m)·k(n − m), and 'valid' the part where k lies wholly inside a
    (n from size(k) − 1 to size(a) − 1, 0-based). `k` may have fewer dimensions than `a`."""
    a, k = np.asarray(a, dtype=object), np.asarray(k, dtype=object)
    k = k.reshape(k.shape + (1,) * (a.ndim - k.ndim))
    terms = {n: [] for n in np.ndindex(*(A + K - 1 for A, K in zip(a.shape, k.shape)))}
    for m in np.ndindex(*a.shape):
        for q in np.ndindex(*k.shape):
            terms[tuple(i + j for i, j in zip(m, q))].append(a[m] * k[q])
    full = np.empty(tuple(A + K - 1 for A, K in zip(a.shape, k.shape)), dtype=object)
    for n, t in terms.items():
        full[n] = sp.Add(*t)
    if shape == "full":
        return full
    if shape != "valid":
        raise ValueError(f"shape must be 'valid' or 'full', got {shape!r}")
    return full[tuple(slice(K - 1, A) for A, K in zip(a.shape, k.shape))]


def sigm(z):
    """`sigm.m`: 1 ./ (1 + exp(-z))."""
    return 1 / (1 + sp.exp(-z))


def tanh(z):
    """tanh by its definition, (e^z − e^−z)/(e^z + e^−z), so that sympy derives it rather than looks it up."""
    return (sp.exp(z) - sp.exp(-z)) / (sp.exp(z) + sp.exp(-z))


def gradient(f, wrt: np.ndarray) -> np.ndarray:
    """∂f/∂w for every symbol of `wrt`, shaped like it."""
    out = np.empty(wrt.shape, dtype=object)
    for index in np.ndindex(*wrt.shape):
        out[index] = sp.diff(f, wrt[index])
    return out


def total(x) -> sp.Expr:
    return sp.Add(*np.ravel(np.asarray(x, dtype=object)))


def vanishes(expr) -> bool:
    """Whether `expr` is identically 0: its numerator over a common denominator expands to 0."""
    expr = sp.expand(expr)
    return expr == 0 or sp.expand(sp.numer(sp.together(expr))) == 0


# ---- the rules, as backprop.py writes them -----------------------------------------------------------

def lecture_rules(**replaced) -> dict:
    """backprop.py's named rules (`backprop.RULES`, the ones its `cnnbp` composes), read now, with some
    `replaced` (a mistake of the catalogue is one replacement: `lecture_rules(**mistake.rules)`)."""
    unknown = set(replaced) - set(bp.RULES)
    if unknown:
        raise ValueError(f"unknown rules {sorted(unknown)}; rules are {', '.join(bp.RULES)}")
    return {**bp.RULES, **replaced}


# ---- the proofs: each returns, per case, (label, derivative of the forward expression, the rule) -----

def prove_2x2(rules):
    """The lecture's 2×2 example (`004`, 粗略证明): z = conv(K, X) + θ = k22·x11 + k21·x12 + k12·x21 + k11·x22,
    so ∂(δ·z)/∂X = δ·[[k22, k21], [k12, k11]] = convn(δ, rot180(K), 'full') with the 1×1 δ."""
    X, K = lecture_2x2_symbols()
    delta, theta = sp.symbols("delta theta", real=True)
    conv = convn(X, K, "valid")[0, 0]
    (x11, x12), (x21, x22) = X
    (k11, k12), (k21, k22) = K
    written_out = k22 * x11 + k21 * x12 + k12 * x21 + k11 * x22
    return [("conv written out", np.array([conv]), np.array([written_out])),
            ("2x2", gradient(delta * (conv + theta), X), convn(np.array([[delta]], dtype=object), rules["full_conv_kernel"](K), "full"))]


def lecture_2x2_symbols():
    """The slide's X = [x11 x12; x21 x22] and K = [k11 k12; k21 k22]."""
    X = np.array([[sp.Symbol(f"x{r}{c}", real=True) for c in (1, 2)] for r in (1, 2)], dtype=object)
    K = np.array([[sp.Symbol(f"k{r}{c}", real=True) for c in (1, 2)] for r in (1, 2)], dtype=object)
    return X, K


@functools.lru_cache(maxsize=None)
def _conv_case(h, w, ks, n_in, n_out, n):
    """The symbols and the forward expression of one 'c' case (shared by the two convolution proofs)."""
    x = [symbols(f"x{i + 1}", (h, w, n)) for i in range(n_in)]
    k = [[symbols(f"k{i + 1}{j + 1}", (ks, ks)) for j in range(n_out)] for i in range(n_in)]
    d = [symbols(f"d{j + 1}", (h - ks + 1, w - ks + 1, n)) for j in range(n_out)]
    # f = Σ_j Σ δ_j ⊙ z_j with z_j = Σ_i convn(x_i, k_ij, 'valid'): the forward pass of a 'c' layer, before
    # σ, paired with the delta coming back (so ∂f/∂x is the delta one layer down)
    f = sp.Add(*(total(d[j] * sum(convn(x[i], k[i][j], "valid") for i in range(n_in))) for j in range(n_out)))
    label = f"{h}x{w}x{n} k{ks}" + (f" {n_in}->{n_out} maps" if n_in * n_out > 1 else "")
    return label, x, k, d, f


def prove_full_conv(rules):
    """∂/∂x_i of Σ_j Σ δ_j ⊙ Σ_i convn(x_i, k_ij, 'valid') = Σ_j convn(δ_j, rot180(k_ij), 'full')
    (`cnnbp.m`: z = z + convn(net.layers{l + 1}.d{j}, rot180(net.layers{l + 1}.k{i}{j}), 'full'))."""
    out = []
    for case in CONV_CASES:
        label, x, k, d, f = _conv_case(*case)
        for i in range(len(x)):
            rule = sum(convn(d[j], rules["full_conv_kernel"](k[i][j]), "full") for j in range(len(d)))
            out.append((label, gradient(f, x[i]), rule))
    return out


def prove_kernel_grad(rules):
    """∂/∂k_ij of the same f = convn(flipall(x_i), δ_j, 'valid'): the sample dimension is flipped too, so
    that the 'valid' convolution over it pairs sample n with δ's sample n (DeepLearnToolbox #168). This is
    the sum over the batch; `cnnbp.m` then divides by N = size(d, 3) because L is averaged."""
    out = []
    for case in CONV_CASES:
        label, x, k, d, f = _conv_case(*case)
        for i in range(len(x)):
            for j in range(len(d)):
                out.append((label, gradient(f, k[i][j]), convn(rules["dk_flip"](x[i]), d[j], "valid")[:, :, 0]))
    return out


def prove_mean_pool(rules):
    """∂/∂a of Σ e ⊙ meanpool_s(a) = expand(e, [s s 1]) / s², meanpool as `cnnff.m` computes it:
    z = convn(a, ones(s) / s^2, 'valid'); z(1 : s : end, 1 : s : end, :)."""
    out = []
    for h, w, s, n in POOL_CASES:
        a, e = symbols("a", (h, w, n)), symbols("e", (h // s, w // s, n))
        pooled = convn(a, np.full((s, s), sp.Rational(1, s ** 2), dtype=object), "valid")[::s, ::s, :]
        out.append((f"{h}x{w}x{n} s{s}", gradient(total(e * pooled), a), rules["through_pool"](e, s)))
    return out


def max_positions(h, w, s, n, seed=0) -> np.ndarray:
    """Where each s×s window's maximum sits in the proofs (drawn, so not always the same corner): a 0/1 mask."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w, n), dtype=int)
    for p, q, m in np.ndindex(h // s, w // s, n):
        u, v = divmod(int(rng.integers(s * s)), s)
        mask[p * s + u, q * s + v, m] = 1
    return mask


def prove_max_pool(rules):
    """With each window's maximum fixed, ∂/∂a of Σ e ⊙ maxpool_s(a) = expand(e, [s s 1]) .* mask.

    The assumption: in each window one element is strictly larger than the others, and a stays where that
    remains so (the set where the maximum is this element is open, and the derivative is taken inside it).
    It is given to sympy as a change of variables: the window's maximum is m and every other element is
    m − p with p > 0, so `sympy.Max` itself reduces the window to m; then m = a(max) and p = a(max) − a(other)
    turn it back into the a's before differentiating. At a tie there is no derivative; jaxcnn takes the first
    maximum there, which the numerical checks test."""
    out = []
    for h, w, s, n in POOL_CASES:
        a, e, mask = symbols("a", (h, w, n)), symbols("e", (h // s, w // s, n)), max_positions(h, w, s, n)
        pooled = np.empty(e.shape, dtype=object)
        for p, q, c in np.ndindex(*e.shape):
            window = [(p * s + u, q * s + v, c) for u in range(s) for v in range(s)]
            top = next(i for i in window if mask[i])
            peak = sp.Symbol(f"m{p}{q}{c}", real=True)
            gaps = {i: sp.Symbol(f"p{i}", positive=True) for i in window if i != top}
            value = sp.Max(peak, *(peak - g for g in gaps.values()))      # = peak, since every gap is > 0
            pooled[p, q, c] = value.subs({peak: a[top]} | {g: a[top] - a[i] for i, g in gaps.items()},
                                         simultaneous=True)
        out.append((f"{h}x{w}x{n} s{s}", gradient(total(e * pooled), a), rules["max_pool_back"]([e], s, [mask])[0]))
    return out


def prove_sigmoid(rules):
    """σ'(z) = σ(1 − σ), written through a = σ(z) as `cnnbp.m` does (`sigm_prime(a)`)."""
    z = sp.Symbol("z", real=True)
    return [("z", np.array([sp.diff(sigm(z), z)]), np.array([rules["activation_factor"](sigm(z), "sigmoid")]))]


def prove_tanh(rules):
    """tanh'(z) = 1 − tanh², through a = tanh(z) (`tanh_prime(a)`)."""
    z = sp.Symbol("z", real=True)
    return [("z", np.array([sp.diff(tanh(z), z)]), np.array([rules["activation_factor"](tanh(z), "tanh")]))]


def _targets(classes, n, sum_to_one):
    y = symbols("y", (classes, n))
    if sum_to_one:                                   # Σ_k y_k = 1 in every column: the last class is the rest
        for m in range(n):
            y[classes - 1, m] = 1 - sum(y[:classes - 1, m])
    return y


def prove_od_sigmoid(rules):
    """N·∂L/∂z = od = e ⊙ o(1 − o) for L = ½·Σ(o − y)²/N, o = σ(z) (`cnnbp.m`: net.od = net.e .* (net.o .* (1 - net.o)))."""
    classes, n = OUTPUT_CASE
    z, y = symbols("z", (classes, n)), symbols("y", (classes, n))
    o = np.vectorize(sigm, otypes=[object])(z)
    L = sp.Rational(1, 2) * total((o - y) ** 2) / n
    return [(f"{classes}x{n}", n * gradient(L, z), rules["output_delta"](o - y, o, "sigmoid"))]


def prove_od_softmax(rules, sum_to_one=True):
    """N·∂L/∂z = od = o − y for L = −Σ y ⊙ log(o)/N, o = softmax(z) per column, when every column of y sums to 1."""
    classes, n = OUTPUT_CASE
    z, y = symbols("z", (classes, n)), _targets(classes, n, sum_to_one)
    o = np.empty_like(z)
    for m in range(n):
        column = sp.Add(*(sp.exp(zk) for zk in z[:, m]))
        o[:, m] = [sp.exp(zk) / column for zk in z[:, m]]
    L = -total(y * np.vectorize(sp.log, otypes=[object])(o)) / n
    return [(f"{classes}x{n}" + (", Σy = 1" if sum_to_one else ""), n * gradient(L, z), rules["output_delta"](o - y, o, "softmax"))]


@dataclasses.dataclass(frozen=True)
class Identity:
    statement: str
    prove: Callable            # rules -> [(case label, derivative, rule)]


IDENTITIES = {
    "2x2-rot180": Identity("004 2x2: d(δ·conv(K,X))/dX = convn(δ, rot180(K), 'full')", prove_2x2),
    "full-rot180": Identity("d/dx Σδ⊙convn(x,k,'valid') = convn(δ, rot180(k), 'full')", prove_full_conv),
    "kernel-flipall": Identity("d/dk Σδ⊙convn(x,k,'valid') = convn(flipall(x), δ, 'valid') (before /N)",
                               prove_kernel_grad),
    "mean-pool-expand": Identity("d/da Σe⊙meanpool_s(a) = expand(e, [s s 1]) / s^2", prove_mean_pool),
    "max-pool-mask": Identity("d/da Σe⊙maxpool_s(a) = expand(e, [s s 1]) .* mask (strict max fixed)",
                              prove_max_pool),
    "sigmoid-prime": Identity("σ'(z) = σ(1 - σ)", prove_sigmoid),
    "tanh-prime": Identity("tanh'(z) = 1 - tanh²", prove_tanh),
    "od-sigmoid-mse": Identity("sigmoid + ½Σe²/N: N·dL/dz = od = e ⊙ o(1 - o)", prove_od_sigmoid),
    "od-softmax-ce": Identity("softmax + CE: N·dL/dz = o - y when Σy = 1", prove_od_softmax),
}

# Wrong twins: (identity, the replaced rules, which cases must show the mistake: None = every case). Most
# are entries of jaxcnn check's catalogue (`verification.mistakes`, by id), the rest are this module's own.
# rot180, a transpose or a rot90 of a 1×1 kernel is the kernel, so those cannot show with k = 1.
def _catalogue(mistake_id):
    from jaxcnn.verification import mistakes

    return lambda: lecture_rules(**mistakes.BY_ID[mistake_id].rules)


def _not_k1(label):
    return "k1" not in label


TWINS = {
    "2x2: full-conv-missing-rot180": ("2x2-rot180", _catalogue("full-conv-missing-rot180"),
                                      lambda label: label == "2x2"),
    "full-conv-missing-rot180": ("full-rot180", _catalogue("full-conv-missing-rot180"), _not_k1),
    "full-conv-transpose-for-rot180": ("full-rot180", _catalogue("full-conv-transpose-for-rot180"), _not_k1),
    "full-conv-rot90-for-rot180": ("full-rot180", _catalogue("full-conv-rot90-for-rot180"), _not_k1),
    "dk-missing-flipall": ("kernel-flipall", _catalogue("dk-missing-flipall"), None),
    "dk-spatial-flip-only": ("kernel-flipall", _catalogue("dk-spatial-flip-only"), None),
    "pool-missing-scale-division": ("mean-pool-expand", _catalogue("pool-missing-scale-division"), None),
    "pool-divides-by-scale": ("mean-pool-expand", _catalogue("pool-divides-by-scale"), None),
    "max-pool-spread-as-mean": ("max-pool-mask", _catalogue("max-pool-spread-as-mean"), None),
    "max-pool-no-mask": ("max-pool-mask", _catalogue("max-pool-no-mask"), None),
    "sigmoid': z(1 - z), the derivative taken at z": ("sigmoid-prime", lambda: lecture_rules(
        activation_factor=lambda a, activation="sigmoid": sp.Symbol("z", real=True) * (1 - sp.Symbol("z", real=True))),
        None),
    "tanh-derivative-as-sigmoid": ("tanh-prime", _catalogue("tanh-derivative-as-sigmoid"), None),
    "od-missing-sigmoid-derivative": ("od-sigmoid-mse", _catalogue("od-missing-sigmoid-derivative"), None),
    "softmax-od-with-sigmoid-derivative": ("od-softmax-ce", _catalogue("softmax-od-with-sigmoid-derivative"), None),
}


@dataclasses.dataclass(frozen=True)
class Result:
    """One proof (or twin) over its cases: `nonzero[c]` counts the entries of case c whose difference does
    not vanish; `witness` is the largest |difference| at a random point (0 where every entry vanishes)."""
    name: str
    cases: tuple[str, ...]
    nonzero: tuple[int, ...]
    witness: float
    seconds: float

    @property
    def exact(self) -> bool:
        return not any(self.nonzero)


def run_proof(name, prove, rules, seed=0) -> Result:
    """Each entry's difference is 0 when it expands to 0 (`vanishes`). One that does not is first evaluated at
    a random point: a non-zero value there is a counterexample, which settles it without the slower
    common-denominator test (and which is what `witness` reports)."""
    started = time.perf_counter()
    labels, nonzero, witness = [], [], 0.0
    rng = np.random.default_rng(seed)
    for label, derivative, rule in prove(rules):
        derivative, rule = np.asarray(derivative, dtype=object), np.asarray(rule, dtype=object)
        if derivative.shape != rule.shape:
            raise ValueError(f"{name} {label}: the rule's shape {rule.shape} is not the derivative's {derivative.shape}")
        bad = 0
        for difference in (sp.expand(d - r) for d, r in zip(derivative.ravel(), rule.ravel())):
            if difference == 0:
                continue
            free = sorted(difference.free_symbols, key=str)
            point = {s: sp.Float(v) for s, v in zip(free, rng.uniform(0.1, 0.9, len(free)))}
            value = abs(complex(difference.xreplace(point).evalf()))
            if value > 1e-9 or not vanishes(difference):
                bad += 1
                witness = max(witness, value)
        labels.append(label)
        nonzero.append(bad)
    return Result(name, tuple(labels), tuple(nonzero), witness, time.perf_counter() - started)


def prove(identity: str, rules=None) -> Result:
    """Run one identity (`IDENTITIES`) with backprop.py's rules (or `rules`)."""
    return run_proof(identity, IDENTITIES[identity].prove, rules or lecture_rules())


def prove_twin(twin: str) -> Result:
    identity, rules, _ = TWINS[twin]
    return run_proof(twin, IDENTITIES[identity].prove, rules())


def check_symbolic():
    """`jaxcnn verify`'s symbolic group: one row per identity, over all its cases, result 'exact' when every
    entry of every case's difference expands to 0."""
    rows = []
    for key, identity in IDENTITIES.items():
        result = prove(key)
        cases = sorted(set(result.cases), key=result.cases.index)
        name = f"{identity.statement} [{', '.join(cases)}]"
        if not result.exact:
            name += f" ({sum(result.nonzero)} entries differ)"
        rows.append(Row(name, result.witness, float("nan"), 0.0, kind="exact", ok=result.exact))
    return rows
