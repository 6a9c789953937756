"""The checks that prove the slides' derivations, each returning rows of a report.

Every check compares two independently computed things and returns `Row`s; pytest asserts
`row.passed`, and `jaxcnn verify` prints the table. All of it runs in float64 (JAX x64 mode).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import init_net, loss_and_grad, predict, toolbox, train_epoch
from jaxcnn.layers import ACTIVATIONS, EXAMPLE_LAYERS, POOLS, Conv, Input, Pool, describe
from jaxcnn.model import loss as model_loss
from jaxcnn.model import max_pool
from jaxcnn.numerics import OUTPUTS, output_and_loss, use_dtype
from jaxcnn.toolbox import toolbox_input
from jaxcnn.verification import backprop as bp
from jaxcnn.verification import golden as golden_mod
from jaxcnn.verification import symbolic
from jaxcnn.verification.rows import Row

GRAD_RTOL = 1e-12
GOLDEN_ATOL = 1e-12
NUMGRAD_EPS, NUMGRAD_ATOL = 1e-4, 1e-8        # cnnnumgradcheck.m: epsilon = 1e-4; er = 1e-8


def compare(name, got, want, tol, kind="rel") -> Row:
    """Max absolute and relative (to the largest |want|) difference between two pytrees.

    Trees of another structure, leaves of other shapes, and any non-finite value in either tree
    give a row that fails (its errors are inf or NaN)."""
    got_l, got_def = jax.tree.flatten(got)
    want_l, want_def = jax.tree.flatten(want)
    if got_def != want_def or [np.shape(g) for g in got_l] != [np.shape(w) for w in want_l]:
        return Row(f"{name} (structure or shapes differ)", float("inf"), float("inf"), tol, kind)
    g = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in got_l] or [np.zeros(0)])
    w = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in want_l] or [np.zeros(0)])
    if not (np.all(np.isfinite(g)) and np.all(np.isfinite(w))):
        return Row(f"{name} (non-finite values)", float("nan"), float("nan"), tol, kind)
    abs_err = float(np.max(np.abs(g - w), initial=0))
    scale = float(np.max(np.abs(w), initial=0))
    return Row(name, abs_err, abs_err / scale if scale else abs_err, tol, kind)


# ---- 1. manual backprop == jax.grad -------------------------------------------------------------

def manual_grads(net, images, targets, manual=bp):
    """The delta-rule gradient of `net` (via the bridge), as a Net-shaped gradient, and L. The net's
    layer options and output travel in the toolbox dict (`with_options`); a net without options gets the
    toolbox's own dict."""
    tb = toolbox.to_toolbox(net, with_options=True)
    result = manual.cnnbp(manual.cnnff(tb, toolbox_input(images)), np.asarray(targets, np.float64).T)
    return toolbox.grads_from_toolbox(result, net), result["L"]


def check_manual_vs_autodiff(net, images, targets, name, manual=bp) -> list[Row]:
    want_loss, want = loss_and_grad(net, images, targets)
    got, got_loss = manual_grads(net, images, targets, manual)
    rows = [compare(f"{name}: L manual vs jax", got_loss, want_loss, GRAD_RTOL)]
    for i, (g, w) in enumerate(zip(got.params["conv"], want.params["conv"]), start=1):
        rows.append(compare(f"{name}: dk conv{i} manual vs jax.grad", g["k"], w["k"], GRAD_RTOL))
        rows.append(compare(f"{name}: db conv{i} manual vs jax.grad", g["b"], w["b"], GRAD_RTOL))
    rows.append(compare(f"{name}: dffW manual vs jax.grad", got.params["ffW"], want.params["ffW"], GRAD_RTOL))
    rows.append(compare(f"{name}: dffb manual vs jax.grad", got.params["ffb"], want.params["ffb"], GRAD_RTOL))
    return rows


def random_stack(rng: np.random.Generator):
    """A random valid layer stack and input shape: 1-3 blocks of c then (mostly) s, any channels,
    non-square inputs, kernel sizes 1-5, scales 1-3, sometimes c-c or s-s neighbours."""
    while True:
        h, w, c = int(rng.integers(6, 21)), int(rng.integers(6, 21)), int(rng.integers(1, 4))
        layers, hh, ww = [Input()], h, w
        for _ in range(int(rng.integers(1, 4))):
            for _ in range(1 + int(rng.random() < 0.2)):
                k = int(rng.integers(1, min(5, hh, ww) + 1))
                layers.append(Conv(int(rng.integers(1, 5)), k))
                hh, ww = hh - k + 1, ww - k + 1
            for _ in range(1 + int(rng.random() < 0.15)):
                scales = [s for s in (2, 3) if hh % s == 0 and ww % s == 0 and hh // s >= 1]
                if scales and rng.random() < 0.85:
                    s = int(rng.choice(scales))
                    layers.append(Pool(s))
                    hh, ww = hh // s, ww // s
        if len(layers) > 1:
            return tuple(layers), (h, w, c)


def random_modern_stack(rng: np.random.Generator):
    """`random_stack` (the same draws first, so the same shapes for a seed), then jaxcnn's options drawn
    for every layer and the output, so that one stack mixes them: each 'c' sigmoid, tanh or ReLU, each
    's' mean or max, the output sigmoid or softmax. Returns (layers, input shape, output)."""
    layers, shape = random_stack(rng)
    drawn = []
    for layer in layers:
        if isinstance(layer, Conv):
            layer = dataclasses.replace(layer, activation=str(rng.choice(ACTIVATIONS)))
        elif isinstance(layer, Pool):
            layer = dataclasses.replace(layer, pool=str(rng.choice(POOLS)))
        drawn.append(layer)
    return tuple(drawn), shape, str(rng.choice(OUTPUTS))


def random_case(seed: int, batch: int = 4, n_classes: int = 5, modern: bool = False):
    """A random net, inputs in [0, 1) and one-hot targets for `random_stack(seed)`, or with `modern`
    for `random_modern_stack(seed)`."""
    rng = np.random.default_rng(seed)
    layers, shape, output = random_modern_stack(rng) if modern else (*random_stack(rng), "sigmoid")
    net = init_net(jax.random.key(seed), layers, shape, n_classes, output=output)
    images = rng.random((batch, *shape))
    targets = np.eye(n_classes)[rng.integers(0, n_classes, batch)]
    return net, images, targets


def check_autodiff(seeds=range(8)) -> list[Row]:
    key = jax.random.key(0)
    net = init_net(key, EXAMPLE_LAYERS, (28, 28), 10)
    rng = np.random.default_rng(0)
    images, targets = rng.random((6, 28, 28)), np.eye(10)[rng.integers(0, 10, 6)]
    rows = check_manual_vs_autodiff(net, images, targets, "6c-2s-12c-2s")
    for seed in seeds:
        net, images, targets = random_case(seed)
        rows += check_manual_vs_autodiff(net, images, targets,
                                         f"random #{seed} {describe(net.layers)} {net.input_shape}")
    return rows


MODERN_EXAMPLE = (Input(), Conv(6, 5, "relu"), Pool(2, "max"), Conv(12, 5, "tanh"), Pool(2, "max"))


def check_autodiff_modern(seeds=range(6)) -> list[Row]:
    """The delta rule with jaxcnn's options (tanh' and ReLU', max pooling by mask, softmax's o − y) vs
    jax.grad: the example net with options, then random stacks that mix them (`random_modern_stack`).

    A ReLU at exactly 0 or a max-pool tie has no derivative, but both sides take the same convention
    there (ReLU'(0) = 0, the first maximum). Continuous random inputs make neither happen except the
    exact zeros of dead ReLUs, whose ties are harmless: the delta any of them gets is multiplied by 0."""
    net = init_net(jax.random.key(0), MODERN_EXAMPLE, (28, 28), 10, output="softmax")
    rng = np.random.default_rng(0)
    images, targets = rng.random((6, 28, 28)), np.eye(10)[rng.integers(0, 10, 6)]
    rows = check_manual_vs_autodiff(net, images, targets, f"modern {describe(net.layers)} {net.output}")
    for seed in seeds:
        net, images, targets = random_case(seed, modern=True)
        rows += check_manual_vs_autodiff(net, images, targets,
                                         f"modern #{seed} {describe(net.layers)} {net.output} {net.input_shape}")
    return rows


# ---- 2. central differences ---------------------------------------------------------------------

def numgradcheck(tb: dict, x: list, y) -> tuple[float, dict]:
    """`cnnnumgradcheck.m`: perturb every weight by ±1e-4, take (L+ - L-) / 2ε with `cnnff`/`cnnbp`,
    and return the largest |numerical − analytical| together with the analytical result."""
    worst, analytic, _ = _numgradcheck(tb, x, y)
    return worst, analytic


def _numgradcheck(tb: dict, x: list, y, pattern=None) -> tuple[float, dict, int]:
    """`numgradcheck`, plus, given `pattern` (a function of a `cnnff` result, e.g. `kink_pattern`), the
    number of perturbed nets whose pattern differs from the unperturbed net's."""
    analytic = bp.cnnbp(bp.cnnff(tb, x), y)
    want = pattern(bp.cnnff(tb, x)) if pattern else None
    changed = 0

    def loss_with(weight, delta):
        nonlocal changed
        ff = bp.cnnff(shifted(tb, weight, delta), x)
        if pattern and not all(np.array_equal(g, w) for g, w in zip(pattern(ff), want, strict=True)):
            changed += 1
        return bp.cnnbp(ff, y)["L"]

    worst = 0.0
    for weight in weights(analytic):
        numeric = (loss_with(weight, NUMGRAD_EPS) - loss_with(weight, -NUMGRAD_EPS)) / (2 * NUMGRAD_EPS)
        worst = max(worst, abs(numeric - weight.grad))
    return worst, analytic, changed


def copy_toolbox(tb: dict) -> dict:
    """A copy of a toolbox net dict whose weights (k, b, ffW, ffb) are fresh float64 arrays, safe to edit."""
    layers = []
    for layer in tb["layers"]:
        layer = dict(layer)
        if layer["type"] == "c":
            layer["k"] = [[np.array(k, np.float64) for k in row] for row in layer["k"]]
            layer["b"] = np.array(layer["b"], np.float64)
        layers.append(layer)
    return dict(tb, layers=layers, ffW=np.array(tb["ffW"], np.float64),
                ffb=np.array(tb["ffb"], np.float64).reshape(-1, 1))


@dataclasses.dataclass(frozen=True)
class Weight:
    """One scalar weight of a toolbox net: its parameter group ("ffb", "ffW", "layer 4 b", "layer 4 k"),
    its name in the toolbox's 1-based indexing ("ffW(3, 17)", "b{2}", "k{1}{2}(5, 1)", toolbox layout),
    where it lives (`locate(tb) -> (array, index)`) and its analytical gradient."""
    group: str
    name: str
    locate: object
    grad: float


def weights(analytic: dict) -> list[Weight]:
    """Every scalar weight of a `cnnbp` result (a toolbox-layout gradient dict), with its gradient, in
    `cnnnumgradcheck.m`'s order: ffb, ffW, then the 'c' layers from the last, each map's b{j} then k{i}{j}."""
    out = [Weight("ffb", f"ffb({j + 1})", lambda n, j=j: (n["ffb"], (j, 0)), float(analytic["dffb"][j, 0]))
           for j in range(analytic["dffb"].size)]
    out += [Weight("ffW", f"ffW({i + 1}, {u + 1})", lambda n, i=i, u=u: (n["ffW"], (i, u)),
                   float(analytic["dffW"][i, u]))
            for i in range(analytic["dffW"].shape[0]) for u in range(analytic["dffW"].shape[1])]
    for l in range(len(analytic["layers"]) - 1, 0, -1):
        layer = analytic["layers"][l]
        if layer["type"] != "c":
            continue
        for j in range(len(layer["db"])):
            out.append(Weight(f"layer {l + 1} b", f"b{{{j + 1}}}", lambda n, l=l, j=j: (n["layers"][l]["b"], j),
                              float(layer["db"][j])))
            for i in range(len(layer["dk"])):
                dk = layer["dk"][i][j]
                out += [Weight(f"layer {l + 1} k", f"k{{{i + 1}}}{{{j + 1}}}({u + 1}, {v + 1})",
                               lambda n, l=l, i=i, j=j, u=u, v=v: (n["layers"][l]["k"][i][j], (u, v)),
                               float(dk[u, v]))
                        for u in range(dk.shape[0]) for v in range(dk.shape[1])]
    return out


def weight_groups(analytic: dict) -> list[tuple[str, list[Weight]]]:
    """`weights` grouped by parameter, in order of first appearance: ffb, ffW, then each 'c' layer's b and k
    from the last layer."""
    groups: dict[str, list[Weight]] = {}
    for weight in weights(analytic):
        groups.setdefault(weight.group, []).append(weight)
    return list(groups.items())


def shifted(tb: dict, weight: Weight, delta: float) -> dict:
    """A copy of `tb` with `weight` moved by `delta`."""
    net = copy_toolbox(tb)
    array, index = weight.locate(net)
    array[index] += delta
    return net


def check_numerical(golden) -> list[Row]:
    tb = golden["gc_init"]
    x, y = bp.input_maps(golden["gx"]), golden["gy"]
    worst, analytic = numgradcheck(tb, x, y)
    rows = [Row("cnnnumgradcheck (2c-2s-2c-2s): |numeric - delta rule|", worst, float("nan"), NUMGRAD_ATOL, "abs")]
    net = toolbox.from_toolbox(tb)
    images, targets = toolbox.images_from_matlab(golden["gx"]), toolbox.targets_from_matlab(y)
    _, autodiff = loss_and_grad(net, images, targets)
    rows.append(compare("cnnnumgradcheck case: jax.grad vs delta rule",
                        autodiff, toolbox.grads_from_toolbox(analytic, net), GRAD_RTOL))
    toolbox_grads = golden["gc_grads"]        # the toolbox's own cnnbp on this case
    rows.append(compare("cnnnumgradcheck case: toolbox cnnbp vs delta rule",
                        [np.ravel(analytic["L"]), analytic["dffW"], analytic["dffb"], _conv_grads_of(analytic)],
                        [np.ravel(toolbox_grads["L"]), toolbox_grads["dffW"], toolbox_grads["dffb"], _conv_grads_of(toolbox_grads)],
                        GOLDEN_ATOL, "abs"))
    rows.append(compare("cnnnumgradcheck case: toolbox cnnbp vs jax.grad", autodiff,
                        toolbox.grads_from_toolbox(toolbox_grads, net), GOLDEN_ATOL, "abs"))
    from jax.test_util import check_grads
    x_nhwc = jnp.asarray(images)[..., None]
    try:
        check_grads(lambda p: model_loss(dataclasses.replace(net, params=p), x_nhwc, jnp.asarray(targets)),
                    (net.params,), order=2, modes=("rev",), eps=1e-4, atol=1e-6, rtol=1e-6)
        rows.append(Row("jax.test_util.check_grads on L (order 2, rev)", float("nan"), float("nan"), 1e-6, ok=True))
    except AssertionError as err:
        rows.append(Row(f"jax.test_util.check_grads on L: {str(err).splitlines()[0][:60]}",
                        float("nan"), float("nan"), 1e-6, ok=False))
    return rows


# central differences with the options: only where L is differentiable

KINK_MARGIN = 10            # how many times one weight's ±ε reach a kink or tie must be away
MODERN_NUMGRAD_NETS = (     # (layers, input shape, output): every option, ReLU into max pooling, tanh and ReLU last
    ((Input(), Conv(3, 3, "relu"), Pool(2, "max"), Conv(2, 3, "tanh")), (10, 10), "softmax"),
    ((Input(), Conv(2, 3, "tanh"), Pool(2, "max"), Conv(3, 3, "relu")), (10, 10, 2), "sigmoid"),
)


def kink_pattern(ff: dict) -> list:
    """Which side of every kink and tie a `cnnff` result is on: each ReLU map's a > 0, each max-pool mask."""
    out = []
    for l, layer in enumerate(ff["layers"]):
        if layer["type"] == "c" and layer.get("activation") == "relu":
            out += [a > 0 for a in ff["a"][l]]
        if layer["type"] == "s" and layer.get("pool") == "max":
            out += ff["mask"][l]
    return out


def kink_margin(tb: dict, x: list, eps: float = NUMGRAD_EPS) -> float:
    """How far `tb` at inputs `x` is from where L has no derivative, in units of how far one weight's ±ε
    can move things: the least of |z| / reach over the ReLU pre-activations z, and of
    (largest − second largest) / (2·reach) over the max-pool windows. Windows holding only exact zeros
    (dead ReLUs) are left out: they stay 0 as long as their ReLUs stay dead, which the first term checks.

    `reach` bounds, to first order, the change one weight's ±ε makes in a layer's values: a 'c' layer's
    own weight moves its z by ε·max(|a_prev|, 1) (a kernel entry multiplies an input, the bias 1); an
    earlier weight moves it by at most max_j Σ_i Σ|k{i}{j}| times the previous maps' reach; sigmoid, tanh,
    ReLU and pooling do not enlarge a change."""
    margin, reach, prev = np.inf, 0.0, list(x)
    for layer in tb["layers"][1:]:
        if layer["type"] == "c":
            k, maps = layer["k"], range(layer["outputmaps"])
            own = eps * max(1.0, *(np.max(np.abs(m)) for m in prev))
            upstream = max(sum(np.sum(np.abs(k[i][j])) for i in range(len(prev))) for j in maps) * reach
            reach = max(own, upstream)
            z = [sum(bp.convn_valid(prev[i], k[i][j]) for i in range(len(prev))) + layer["b"][j] for j in maps]
            if layer.get("activation") == "relu":
                margin = min(margin, min(np.min(np.abs(zj)) for zj in z) / reach)
            prev = [bp.activate(layer.get("activation", "sigmoid"), zj) for zj in z]
        elif layer.get("pool") == "max":
            s = layer["scale"]
            for m in prev:
                h, w, n = m.shape
                windows = m.reshape(h // s, s, w // s, s, n).transpose(0, 2, 4, 1, 3).reshape(-1, s * s)
                top = np.sort(windows, axis=1)
                live = np.any(windows != 0, axis=1)
                if s > 1 and reach > 0 and live.any():
                    margin = min(margin, np.min(top[live, -1] - top[live, -2]) / (2 * reach))
            prev = [bp.max_pool(m, s)[0] for m in prev]
        else:
            s = layer["scale"]
            prev = [bp.convn_valid(m, np.ones((s, s)) / s ** 2)[::s, ::s, :] for m in prev]
    return float(margin)


def kink_values(tb: dict, ff: dict, masks) -> list[tuple[str, np.ndarray]]:
    """Signed distances to every kink and tie of a `cnnff` result `ff` of `tb`, each with what it is: every
    ReLU pre-activation z (the kink is z = 0), and for every max-pool window each element minus the element
    `masks` (a reference `cnnff` result's `mask`) chose there (a tie is 0; ≤ 0 at the reference point).
    Evaluated on perturbed copies of a net with the reference's masks, they say which kinks a step moves."""
    out = []
    for l in range(1, len(tb["layers"])):
        layer, prev = tb["layers"][l], ff["a"][l - 1]
        if layer["type"] == "c" and layer.get("activation") == "relu":
            for j in range(layer["outputmaps"]):
                z = sum(bp.convn_valid(prev[i], layer["k"][i][j]) for i in range(len(prev))) + layer["b"][j]
                out.append((f"a ReLU pre-activation of layer {l + 1}", z))
        elif layer["type"] == "s" and layer.get("pool") == "max":
            s = layer["scale"]
            for m, mask in zip(prev, masks[l]):
                h, w = m.shape[0] // s * s, m.shape[1] // s * s
                m, mask = m[:h, :w], mask[:h, :w]
                chosen = (m * mask).reshape(h // s, s, w // s, s, -1).sum(axis=(1, 3))
                out.append((f"a max-pool window of layer {l + 1}", m - bp.expand(chosen, [s, s, 1])))
    return out


@dataclasses.dataclass(frozen=True)
class CentralDifference:
    """One weight's central difference and how far its ±ε step stays from the kinks and ties it moves."""
    slope: float          # (L(w + ε) − L(w − ε)) / 2ε
    margin: float         # least |q| / (how far the step moves q) over the kink values q it moves; inf: none
    nearest: str          # what that nearest kink or tie is ("" when the step moves none)

    @property
    def comparable(self) -> bool:
        """L is differentiable all along the step (KINK_MARGIN to spare), so the slope is its derivative."""
        return self.margin >= KINK_MARGIN


def kink_reference(tb: dict, x: list) -> tuple[list, list]:
    """(the max-pool masks, `kink_values`) of `tb` at `x`: what `central_difference` measures its steps against,
    computed once for many weights of one point."""
    ff = bp.cnnff(tb, x)
    return ff["mask"], kink_values(tb, ff, ff["mask"])


def central_difference(tb: dict, x: list, y, weight: Weight, eps: float = NUMGRAD_EPS,
                       reference: tuple | None = None) -> CentralDifference:
    """`cnnnumgradcheck.m`'s (L(w + ε) − L(w − ε)) / 2ε for one weight, with the margin of that step to the kinks.

    Where ±ε straddles a ReLU kink or a max-pool tie, the central difference measures the mean of two one-sided
    slopes, not the derivative. Real images have flat zero backgrounds, so ties are everywhere; most of them
    no step moves (both elements move alike, or not at all), and `kink_margin`'s bound over every weight is
    then 0. Here the step itself is measured: each kink value of `kink_values` before and after ±ε, and the
    margin is the least |q| over the most the step moved q, among the q the step moved at all. `reference`:
    `kink_reference(tb, x)`, when it is already known."""
    masks, here = reference or kink_reference(tb, x)
    losses, moved = [], [np.zeros(np.shape(q)) for _, q in here]
    for delta in (eps, -eps):
        net = shifted(tb, weight, delta)
        ff_step = bp.cnnff(net, x)
        losses.append(bp.cnnbp(ff_step, y)["L"])
        for n, ((_, q0), (_, q)) in enumerate(zip(here, kink_values(net, ff_step, masks), strict=True)):
            moved[n] = np.maximum(moved[n], np.abs(q - q0))
    margin, nearest = np.inf, ""
    for (what, q0), step in zip(here, moved):
        if np.any(step > 0):
            ratio = float(np.min(np.abs(q0[step > 0]) / step[step > 0]))
            if ratio < margin:
                margin, nearest = ratio, what
    return CentralDifference((losses[0] - losses[1]) / (2 * eps), margin, nearest)


def case_away_from_kinks(layers, input_shape, output, seed=0, batch=3, n_classes=3, tries=100):
    """The first (seed, net, images, targets, margin) from `seed` on whose point is at least KINK_MARGIN
    times one weight's ±ε reach away from every ReLU kink and max-pool tie (`kink_margin`)."""
    for s in range(seed, seed + tries):
        net = init_net(jax.random.key(s), layers, input_shape, n_classes, output=output)
        rng = np.random.default_rng(s)
        images, targets = rng.random((batch, *net.input_shape)), np.eye(n_classes)[rng.integers(0, n_classes, batch)]
        margin = kink_margin(toolbox.to_toolbox(net, with_options=True), toolbox_input(images))
        if margin >= KINK_MARGIN:
            return s, net, images, targets, margin
    raise RuntimeError(f"no point {KINK_MARGIN}x away from the kinks in {tries} draws from seed {seed}")


def check_numerical_modern(nets=MODERN_NUMGRAD_NETS) -> list[Row]:
    """`numgradcheck` (ε = 1e-4) on small nets with every option, at points away from ReLU kinks and
    max-pool ties. At a kink or a tie L has no derivative: its one-sided slopes differ, and a central
    difference straddling it measures their average, not the derivative the delta rule (or jax.grad)
    takes by convention. So each point is drawn (`case_away_from_kinks`) until no ReLU pre-activation and
    no window's top-two gap is within KINK_MARGIN times what one weight's ±ε can move it, and every
    perturbed forward pass is checked to keep each ReLU's sign and each window's choice (`kink_pattern`)."""
    rows = []
    for layers, shape, output in nets:
        seed, net, images, targets, margin = case_away_from_kinks(layers, shape, output)
        tb, x, y = toolbox.to_toolbox(net, with_options=True), toolbox_input(images), np.asarray(targets).T
        worst, analytic, changed = _numgradcheck(tb, x, y, pattern=kink_pattern)
        name = f"numgradcheck {describe(net.layers)} {output}"
        rows.append(Row(f"{name}: |numeric - delta rule| (seed {seed}, kinks/ties ≥ {margin:.0f}× ε-reach)", worst,
                        float("nan"), NUMGRAD_ATOL, "abs"))
        rows.append(Row(f"{name}: no ±ε step crossed a kink or tie" + (f" ({changed} did)" if changed else ""),
                        float("nan"), float("nan"), 0, ok=changed == 0))
        _, autodiff = loss_and_grad(net, images, targets)
        rows.append(compare(f"{name}: jax.grad vs delta rule", autodiff, toolbox.grads_from_toolbox(analytic, net),
                            GRAD_RTOL))
    return rows


# ---- 3. the derivations themselves ---------------------------------------------------------------

def check_derivations(seed: int = 0) -> list[Row]:
    rng = np.random.default_rng(seed)
    rows = []
    # 004: a 2×2 input X, 2×2 kernel K, one output z = conv(K, X) + θ. dz/dx_ij = δ·rot180(K)(i, j),
    # and the lecture's result: the input delta is conv(pad(δ), rot180(K)) = δ·[[k22, k21], [k12, k11]].
    X, K, delta = rng.random((2, 2)), rng.random((2, 2)), float(rng.random())
    z = float(bp.convn_valid(X, K)[0, 0])
    written_out = K[1, 1] * X[0, 0] + K[1, 0] * X[0, 1] + K[0, 1] * X[1, 0] + K[0, 0] * X[1, 1]
    rows.append(compare("004 2x2: conv(K, X) = k22·x11 + k21·x12 + k12·x21 + k11·x22", z, written_out, 1e-15, "abs"))
    by_hand = delta * np.array([[K[1, 1], K[1, 0]], [K[0, 1], K[0, 0]]])
    via_full = bp.convn_full(np.array([[delta]]), bp.rot180(K))
    # autodiff of the 'valid' convolution itself (JAX's own true convolution, not a form with rot180 in it)
    autodiff = jax.grad(lambda x: delta * _jax_convn_valid(x, jnp.asarray(K))[0, 0])(jnp.asarray(X))
    rows.append(compare("004 2x2: input delta = convn(δ, rot180(K), 'full')", via_full, by_hand, 1e-15, "abs"))
    rows.append(compare("004 2x2: input delta = d(δ·z)/dX by autodiff", autodiff, by_hand, 1e-15, "abs"))
    # adjoint of 'valid' convolution: <valid(a, k), d> = <a, full(d, rot180 k)>
    a, k = rng.random((12, 10, 3)), rng.random((5, 4))
    d = rng.random(bp.convn_valid(a, k).shape)
    lhs = np.sum(bp.convn_valid(a, k) * d)
    rhs = np.sum(a * bp.convn_full(d, bp.rot180(k)))
    rows.append(compare("<convn(a,k,'valid'), d> = <a, convn(d,rot180(k),'full')>", lhs, rhs, 1e-13))
    # kernel gradient: d<valid(a, k), d>/dk = convn(flipall(a), d, 'valid')
    grad_k = jax.grad(lambda kk: jnp.sum(_jax_convn_valid(jnp.asarray(a), kk[:, :, None]) * jnp.asarray(d)))(
        jnp.asarray(k))
    rows.append(compare("dk = convn(flipall(a), d, 'valid')", bp.convn_valid(bp.flipall(a), d)[:, :, 0], grad_k,
                        1e-13))
    # expand(.)/s² is the adjoint of mean pooling
    s = 3
    m = rng.random((9, 6, 2))
    pooled = bp.convn_valid(m, np.ones((s, s)) / s ** 2)[::s, ::s, :]
    e = rng.random(pooled.shape)
    rows.append(compare("<meanpool(a), e> = <a, expand(e, [s s 1]) / s^2>", np.sum(pooled * e),
                        np.sum(m * bp.expand(e, [s, s, 1]) / s ** 2), 1e-13))
    # sigmoid derivative a(1 − a)
    xs = np.linspace(-8, 8, 101)
    sig = bp.sigm(xs)
    rows.append(compare("sigm'(x) = a(1 - a)", sig * (1 - sig), jax.vmap(jax.grad(lambda t: 1 / (1 + jnp.exp(-t))))(xs),
                        1e-13))
    return rows


def check_modern_derivations(seed: int = 0) -> list[Row]:
    """Each option's rule against JAX differentiating the real operation (`jnp.tanh`, `jax.nn.relu`,
    `jax.nn.softmax` and the loss of `jaxcnn.numerics.output_and_loss`, `jaxcnn.model.max_pool`)."""
    rng = np.random.default_rng(seed)
    rows = []
    xs = np.linspace(-8, 8, 101)
    rows.append(compare("tanh'(x) = 1 - a²", bp.tanh_prime(bp.activate("tanh", xs)),
                        jax.vmap(jax.grad(jnp.tanh))(xs), 1e-13))
    xs = np.linspace(-8, 8, 100)                       # no x = 0, where ReLU has no derivative
    rows.append(compare("relu'(x) = [a > 0] (x ≠ 0)", bp.relu_prime(bp.activate("relu", xs)),
                        jax.vmap(jax.grad(jax.nn.relu))(xs), 0, "abs"))
    # the output deltas od = N·dL/dz, classes×N as in cnnbp
    classes, n = 5, 4
    z, y = 3 * rng.standard_normal((classes, n)), np.eye(classes)[:, rng.integers(0, classes, n)]
    n_dl_dz = {name: n * jax.grad(lambda zz, name=name: output_and_loss(name, zz.T, jnp.asarray(y.T))[1])(jnp.asarray(z))
               for name in OUTPUTS}
    o = bp.sigm(z)
    rows.append(compare("sigmoid + ½Σe²: od = e·o(1 - o) = N·dL/dz by jax.grad", bp.od_sigmoid(o - y, o),
                        n_dl_dz["sigmoid"], 1e-13))
    o = bp.softmax(z)
    rows.append(compare("softmax: diag(o) - o·oᵀ = jax.jacobian(jax.nn.softmax)",
                        [bp.softmax_jacobian(o[:, m]) for m in range(n)],
                        [jax.jacobian(jax.nn.softmax)(jnp.asarray(z[:, m])) for m in range(n)], 1e-13))
    rows.append(compare("softmax + CE the long way: (diag(o) - o·oᵀ)ᵀ·(-y/o) = o - y",
                        bp.od_softmax_the_long_way(o, y), o - y, 1e-13))
    rows.append(compare("softmax + CE: od = o - y = N·dL/dz by jax.grad", bp.od_softmax(o - y, o),
                        n_dl_dz["softmax"], 1e-13))
    # max pooling on the toolbox's transposed maps, against jaxcnn.model.max_pool on natural ones; small
    # integers make ties common, so the first-maximum order (natural row-major) is tested too
    s = 3
    ties = rng.integers(0, 3, (9, 12, 4)).astype(np.float64)          # toolbox layout: 12×9 images, N = 4

    def natural(m):
        return jnp.asarray(m.transpose(2, 1, 0)[..., None])             # (N, H, W, 1)

    def toolbox_layout(m):
        return np.asarray(m)[..., 0].transpose(2, 1, 0)

    pooled, mask = bp.max_pool(ties, s)
    rows.append(compare("maxpool value = jaxcnn.model.max_pool (ties: first max, natural row-major)", pooled,
                        toolbox_layout(max_pool(natural(ties), s)), 0, "abs"))
    e = rng.standard_normal(pooled.shape)
    grad = jax.grad(lambda t: jnp.sum(max_pool(t, s)[..., 0] * natural(e)[..., 0]))(natural(ties))
    rows.append(compare("maxpool δ: expand(e, [s s 1]) .* mask = jax.grad <max_pool(a), e> (ties)",
                        bp._through_max_pool([e], s, [mask])[0], toolbox_layout(grad), 0, "abs"))
    a = rng.random((9, 6, 2))
    pooled, mask = bp.max_pool(a, s)
    e = rng.random(pooled.shape)
    rows.append(compare("<maxpool(a), e> = <a, expand(e, [s s 1]) .* mask>", np.sum(pooled * e),
                        np.sum(a * bp._through_max_pool([e], s, [mask])[0]), 1e-13))
    return rows


def _jax_convn_valid(a, k):
    """MATLAB's convn(a, k, 'valid') as JAX's own true convolution (`jax.scipy.signal.convolve`), for autodiff."""
    return jax.scipy.signal.convolve(a, k, mode="valid", method="direct", precision=jax.lax.Precision.HIGHEST)


# ---- 4. parity with the original toolbox ----------------------------------------------------------

def check_golden(golden) -> list[Row]:
    init = golden["cnn_init"]
    want = golden["cnn_grads"]
    net = toolbox.from_toolbox(init)
    images, targets = toolbox.images_from_matlab(golden["x"]), toolbox.targets_from_matlab(golden["y"])
    rows = []
    # jaxcnn
    rows.append(compare("toolbox o  vs jaxcnn predict", np.asarray(predict(net, images)).T, want["o"],
                        GOLDEN_ATOL, "abs"))
    loss, grads = loss_and_grad(net, images, targets)
    rows.append(compare("toolbox L  vs jaxcnn loss", np.ravel(loss), np.ravel(want["L"]), GOLDEN_ATOL, "abs"))
    tb_grads = toolbox.grads_from_toolbox(want, net)
    rows.append(compare("toolbox dk, db, dffW, dffb vs jax.grad", grads, tb_grads, GOLDEN_ATOL, "abs"))
    # the manual backprop, on the toolbox's own layout (no bridge involved)
    manual = bp.cnnbp(bp.cnnff(init, bp.input_maps(golden["x"])), golden["y"])
    rows.append(compare("toolbox o, L, fv vs delta rule", [manual["o"], np.ravel(manual["L"]), manual["fv"]],
                        [want["o"], np.ravel(want["L"]), want["fv"]], GOLDEN_ATOL, "abs"))
    for l, (got_l, want_l) in enumerate(zip(manual["layers"], want["layers"]), start=1):
        if got_l["type"] == "c":
            rows.append(compare(f"toolbox layer {l} dk, db vs delta rule", [got_l["dk"], got_l["db"]],
                                [want_l["dk"], want_l["db"]], GOLDEN_ATOL, "abs"))
    rows.append(compare("toolbox dffW, dffb vs delta rule", [manual["dffW"], manual["dffb"]],
                        [want["dffW"], want["dffb"]], GOLDEN_ATOL, "abs"))
    # ten SGD steps: jaxcnn.train_epoch in the recorded order, exported with save_net
    all_x = toolbox.images_from_matlab(golden["train_x500"])
    all_y = toolbox.targets_from_matlab(golden["train_y500"])
    trained, losses = train_epoch(net, all_x, all_y, np.arange(500), alpha=1.0, batchsize=50)
    rows.append(compare("toolbox Ls (10 steps) vs train_epoch losses", np.asarray(losses),
                        golden["Ls"].ravel(), GOLDEN_ATOL, "abs"))
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        toolbox.save_net(Path(tmp) / "after.mat", trained)
        exported = toolbox.struct_to_dict(toolbox.read_struct(Path(tmp) / "after.mat"))
    after = golden["cnn_after"]
    rows.append(compare("toolbox cnn_after vs train_epoch + save_net", _weights_of(exported), _weights_of(after),
                        GOLDEN_ATOL, "abs"))
    manual_net = init
    for s in range(10):
        batch = slice(50 * s, 50 * (s + 1))
        step = bp.cnnbp(bp.cnnff(manual_net, bp.input_maps(golden["train_x500"][:, :, batch])),
                        golden["train_y500"][:, batch])
        manual_net = bp.cnnapplygrads(step, 1.0)
    rows.append(compare("toolbox cnn_after vs delta rule + cnnapplygrads", _weights_of(manual_net),
                        _weights_of(after), GOLDEN_ATOL, "abs"))
    return rows


def _conv_grads_of(tb):
    return [(layer["dk"], np.ravel(layer["db"])) for layer in tb["layers"] if layer["type"] == "c"]


def _weights_of(tb):
    return [[(layer["k"], np.ravel(layer["b"])) for layer in tb["layers"] if layer["type"] == "c"],
            tb["ffW"], np.ravel(tb["ffb"])]


def all_checks(golden_file=None) -> list[tuple[str, list[Row]]]:
    """Every check, grouped; `golden_file` is the full toolbox_golden.mat or a compact copy (default:
    the copy that ships with jaxcnn, `verification/golden.npz`)."""
    use_dtype("float64")
    golden = golden_mod.load(golden_file)
    return [("1. delta rule vs jax.grad", check_autodiff() + check_autodiff_modern()),
            ("2. central differences", check_numerical(golden) + check_numerical_modern()),
            ("3. the derivations", check_derivations() + check_modern_derivations()),
            ("4. parity with the original toolbox", check_golden(golden)),
            ("5. symbolic (sympy: each rule differentiated exactly)", symbolic.check_symbolic())]
