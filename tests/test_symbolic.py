"""The symbolic group of `jaxcnn verify`: every identity exact, every wrong twin not, and the proofs' own
pieces (the symbolic convn, the max-pool assumption) held to the numeric code they stand for."""
import numpy as np
import pytest
import sympy as sp

from jaxcnn.verification import backprop as bp
from jaxcnn.verification import checks, report, symbolic

CONV_IDENTITIES = {"full-rot180", "kernel-flipall"}         # the slowest (1-3 s each): the full tier


def _numbers(array, rng):
    """Random floats for every symbol of `array`, and the array evaluated there."""
    array = np.asarray(array, dtype=object)
    free = sorted(set().union(*(sp.sympify(e).free_symbols for e in array.ravel())), key=str)
    point = dict(zip(free, rng.uniform(-1, 1, len(free))))
    return point, np.vectorize(lambda e: float(sp.sympify(e).xreplace(point)), otypes=[float])(array)


@pytest.mark.parametrize("a_shape, k_shape", [((4, 5, 2), (2, 3)), ((3, 4, 2), (2, 2, 2)), ((2, 2), (2, 2))])
@pytest.mark.parametrize("shape", ["valid", "full"])
def test_symbolic_convn_is_the_numeric_convn(a_shape, k_shape, shape, rng):
    """The symbolic `convn` the proofs differentiate is MATLAB's `convn` as backprop.py computes it (scipy):
    equal at random points, for 2-D kernels on 3-D maps, a 3-D kernel (the kernel gradient's sample flip), 2-D."""
    a, k = symbolic.symbols("a", a_shape), symbolic.symbols("k", k_shape)
    point, _ = _numbers(np.concatenate([a.ravel(), k.ravel()]), rng)
    numeric = np.vectorize(lambda s: point[s], otypes=[float])
    got = np.vectorize(lambda e: float(e.xreplace(point)), otypes=[float])(symbolic.convn(a, k, shape))
    np.testing.assert_allclose(got, bp.convn(numeric(a), numeric(k), shape), rtol=1e-13, atol=1e-14)


def test_the_lectures_2x2_written_out():
    X, K = symbolic.lecture_2x2_symbols()
    (x11, x12), (x21, x22) = X
    (k11, k12), (k21, k22) = K
    assert symbolic.convn(X, K, "valid")[0, 0] == k22 * x11 + k21 * x12 + k12 * x21 + k11 * x22
    delta = sp.Symbol("delta", real=True)
    assert (symbolic.convn(np.array([[delta]], dtype=object), bp.rot180(K), "full")
            == np.array([[delta * k22, delta * k21], [delta * k12, delta * k11]], dtype=object)).all()


@pytest.mark.parametrize("identity", [i for i in symbolic.IDENTITIES if i not in CONV_IDENTITIES])
def test_an_identity_holds_exactly(identity):
    result = symbolic.prove(identity)
    assert result.exact and result.witness == 0, result
    assert len(result.cases) >= 1


@pytest.mark.slow
@pytest.mark.parametrize("identity", sorted(CONV_IDENTITIES))
def test_a_convolution_identity_holds_exactly_on_every_size(identity):
    result = symbolic.prove(identity)
    assert result.exact, result
    labels = set(result.cases)
    assert {"3x4x2 k1", "4x5x2 k2", "5x4x2 k3", "3x4x2 k2 2->2 maps"} == labels


def test_every_identity_has_a_wrong_twin_mostly_from_the_check_catalogue():
    from jaxcnn.verification import mistakes

    assert {identity for identity, _, _ in symbolic.TWINS.values()} == set(symbolic.IDENTITIES)
    from_catalogue = [name.removeprefix("2x2: ") for name in symbolic.TWINS if name.removeprefix("2x2: ") in mistakes.BY_ID]
    assert len(from_catalogue) == len(symbolic.TWINS) - 1               # all but σ' taken at z


@pytest.mark.parametrize("twin", [pytest.param(t, marks=pytest.mark.slow) if symbolic.TWINS[t][0] in CONV_IDENTITIES
                                  else t for t in symbolic.TWINS])
def test_a_wrong_twin_does_not_hold(twin):
    """Each twin fails with a counterexample (a point where its difference is non-zero) in every case where
    its mistake can show, and in no other (rot180 and the transpose of a 1×1 kernel are the kernel)."""
    result = symbolic.prove_twin(twin)
    _, _, shows_in = symbolic.TWINS[twin]
    expected = [shows_in is None or shows_in(label) for label in result.cases]
    assert [n > 0 for n in result.nonzero] == expected, result
    assert result.witness > 1e-6


def test_softmax_od_needs_the_targets_to_sum_to_one():
    """Without Σy = 1 the difference is o·(Σy − 1), not 0: the assumption is used, not decoration."""
    result = symbolic.run_proof("no Σy = 1", lambda rules: symbolic.prove_od_softmax(rules, sum_to_one=False),
                                symbolic.lecture_rules())
    assert not result.exact and result.nonzero == (6,)


def test_the_max_pool_proof_rests_on_its_assumption():
    """sympy's Max reduces a window to its maximum only because the gaps are declared positive; with real
    gaps it stays a Max (and its derivative a Heaviside), so the proof cannot go through by accident."""
    m = sp.Symbol("m", real=True)
    assert sp.Max(m, m - sp.Symbol("p", positive=True)) == m
    assert isinstance(sp.Max(m, m - sp.Symbol("q", real=True)), sp.Max)
    mask = symbolic.max_positions(4, 6, 2, 2)
    windows = mask.reshape(2, 2, 3, 2, 2).transpose(0, 2, 4, 1, 3).reshape(12, 4)     # 12 windows of 2×2
    assert (windows.sum(axis=1) == 1).all()
    assert len({int(np.argmax(w)) for w in windows}) > 1          # the maximum is not always in one corner


def test_a_broken_rule_in_backprop_fails_its_symbolic_row(monkeypatch):
    """The proofs read the rules from backprop.py (`RULES`, what its cnnbp composes) when they run: break one
    there and its rows fail, the rest stay exact."""
    monkeypatch.setitem(bp.RULES, "through_pool", lambda d, s: bp.expand(d, [s, s, 1]))
    monkeypatch.setattr(bp, "od_sigmoid", lambda e, o: e)              # output_delta's sigmoid branch
    monkeypatch.setattr(symbolic, "IDENTITIES", {k: v for k, v in symbolic.IDENTITIES.items()
                                                  if k not in CONV_IDENTITIES})
    rows = symbolic.check_symbolic()
    failed = [row.check for row in rows if not row.passed]
    assert len(failed) == 2 and failed[0].startswith("d/da Σe⊙meanpool_s(a)") and failed[1].startswith("sigmoid + ")
    assert all("entries differ" in name for name in failed)
    assert all(row.max_abs > 0 for row in rows if not row.passed)


def test_jaxcnn_verify_prints_the_symbolic_group_as_exact(monkeypatch, capsys):
    monkeypatch.setattr(symbolic, "IDENTITIES", {k: v for k, v in symbolic.IDENTITIES.items()
                                                  if k not in CONV_IDENTITIES})
    monkeypatch.setattr(checks, "all_checks", lambda golden: [("5. symbolic", symbolic.check_symbolic())])
    assert report.main() == 0
    lines = capsys.readouterr().out.splitlines()
    body = [line for line in lines[2:-1]]
    assert lines[1] == "-- 5. symbolic" and len(body) == len(symbolic.IDENTITIES) == 7
    assert all(line.endswith("0.00e+00          -  none (sympy)  exact") for line in body), body
    assert lines[-1].startswith("7 passed, 0 failed")


def test_all_checks_has_the_symbolic_group(monkeypatch):
    for name in ("check_autodiff", "check_autodiff_modern", "check_numerical", "check_numerical_modern",
                 "check_derivations", "check_modern_derivations", "check_golden"):
        monkeypatch.setattr(checks, name, lambda *args, **kwargs: [])
    sentinel = [checks.Row("sentinel", 0.0, float("nan"), 0.0, kind="exact", ok=True)]
    monkeypatch.setattr(symbolic, "check_symbolic", lambda: sentinel)
    groups = dict(checks.all_checks())
    assert groups[next(title for title in groups if "symbolic" in title)] is sentinel


def test_exact_means_zero_not_small():
    """A difference that is tiny at the random point (1e-12·z) is not exact: only a difference that expands
    to 0, or whose numerator over a common denominator does, is; σ' − σ(1 − σ) needs the second test."""
    z = sp.Symbol("z", real=True)
    tiny = symbolic.run_proof("tiny", lambda rules: [("c", np.array([z / 10 ** 12]), np.array([0]))],
                              symbolic.lecture_rules())
    assert not tiny.exact and 0 < tiny.witness < 1e-9
    sigma = symbolic.sigm(z)
    assert sp.expand(sp.diff(sigma, z) - sigma * (1 - sigma)) != 0
    assert symbolic.vanishes(sp.diff(sigma, z) - sigma * (1 - sigma))
    assert not symbolic.vanishes(sp.diff(sigma, z) - sigma)
