"""`jaxcnn check`: correct ports of cnnbp.m in other styles pass, every catalogue mistake and several pairs
are named, a mistake the catalogue lacks gets no name, and the user's exceptions are results."""
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from jaxcnn import cli
from jaxcnn.verification import backprop as bp
from jaxcnn.verification import cases as cases_mod
from jaxcnn.verification import check, checker, mistakes

FIXTURES = Path(__file__).resolve().parent / "check_fixtures"
OCTAVE = FIXTURES / "octave"


def _fixture(name):
    spec = importlib.util.spec_from_file_location(f"check_fixture_{name}", FIXTURES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EINSUM = _fixture("einsum_cnnbp")


def _names(result):
    return [d["mistakes"] for d in result.diagnosis]


def _lecture(rules=None):
    """The lecture's cnnbp on the user's struct (maps inside the layers), with some rules replaced."""
    def cnnbp(net, y):
        return bp.cnnbp(dict(net, a=[layer["a"] for layer in net["layers"]],
                             mask=[layer.get("mask") for layer in net["layers"]]), y, rules)
    return cnnbp


@pytest.mark.slow
def test_correct_ports_in_other_styles_pass():
    for subject in (FIXTURES / "einsum_cnnbp.py", FIXTURES / "loops_cnnbp.py", _lecture()):
        result = check(subject)
        assert result.passed, str(result)
        assert result.error is None and result.first_failure is None and result.diagnosis == []
        assert max(q.max_rel for q in result.quantities) < 1e-12
    einsum = check(FIXTURES / "einsum_cnnbp.py")
    assert einsum.options == ["max", "relu", "softmax", "tanh"] and len(einsum.cases) == 5
    assert [q.stage for q in einsum.quantities].count("cnnff") == 6       # a of layers 2..5, fv, o
    loops = check(FIXTURES / "loops_cnnbp.py")
    assert [q.label for q in loops.quantities if q.stage == "block"] == ["rot180", "flipall", "expand", "convn"]
    assert [q.label for q in loops.quantities if q.stage == "cnnbp"] == [
        "net.e", "net.L", "net.od", "net.fvd", "net.layers{5}.d", "net.layers{4}.d", "net.layers{4}.dk",
        "net.layers{4}.db", "net.layers{3}.d", "net.layers{2}.d", "net.layers{2}.dk", "net.layers{2}.db",
        "net.dffW", "net.dffb"]


QUICK_MISTAKES = ["fvd-reshape-order", "full-conv-missing-rot180"]     # the slow tier runs the whole catalogue


@pytest.mark.parametrize("mistake", QUICK_MISTAKES)
def test_a_planted_mistake_is_named(mistake):
    result = check(EINSUM.make(mistake), options=EINSUM.OPTIONS)
    assert not result.passed and result.error is None
    assert _names(result) == [[mistake]]
    m = mistakes.BY_ID[mistake]
    assert result.diagnosis[0]["fix"] == [f"cnnbp.m line {m.line}: {bp.LINES[m.line]}"]
    with pytest.raises(AssertionError, match=f"diagnosis: {mistake}"):
        result.assert_correct()


@pytest.mark.slow
def test_every_catalogue_mistake_is_named_alone():
    wrong = {}
    for m in mistakes.CATALOGUE:
        result = check(EINSUM.make(m.id), options=EINSUM.OPTIONS)
        if _names(result) != [[m.id]]:
            wrong[m.id] = _names(result)
    assert wrong == {}
    assert len(mistakes.CATALOGUE) >= 30


PAIRS = [("error-sign", "dk-not-averaged"), ("fvd-reshape-order", "db-not-averaged"),
         ("full-conv-transpose-for-rot180", "dffb-not-averaged"), ("pool-zero-upsampling", "dk-missing-flipall"),
         ("conv-missing-activation-derivative", "full-conv-not-accumulated")]


@pytest.mark.slow
@pytest.mark.parametrize("pair", PAIRS)
def test_a_pair_of_mistakes_is_named_when_no_single_one_explains(pair):
    result = check(EINSUM.make(*pair))
    assert _names(result) == [list(pair)]


def test_a_mistake_outside_the_catalogue_gets_no_name_but_the_place():
    """dk of layer 2 scaled by 1.01 in one entry: no mistake (or pair) explains it; the first failure names
    layer 2's dk{1}{2} at MATLAB's (2, 3), with both values."""
    def cnnbp(net, y):
        out = EINSUM.cnnbp(net, y)
        out["layers"][1]["dk"][0][1] = out["layers"][1]["dk"][0][1].copy()
        out["layers"][1]["dk"][0][1][1, 2] *= 1.01
        return out
    result = check(cnnbp)
    assert not result.passed and result.diagnosis == []
    f = result.first_failure
    assert (f["quantity"], f["layer"], f["map"], f["index"]) == ("net.layers{2}.dk", 2, [1, 2], [2, 3])
    assert f["got"] == pytest.approx(1.01 * f["want"], rel=1e-12) and f["want"] != 0
    assert f["line"].startswith("cnnbp.m line 44: net.layers{l}.dk{i}{j} = convn(flipall(")
    assert [q.label for q in result.quantities if not q.passed] == ["net.layers{2}.dk"]
    assert "none of the catalogue's mistakes" in result.verdict()


def test_where_is_the_first_failing_quantity_in_backward_order_with_matlab_indices():
    result = check(_lecture(mistakes.BY_ID["pool-missing-scale-division"].rules))
    failed = [q.label for q in result.quantities if not q.passed]
    assert failed[0] == "net.layers{4}.d" and "net.layers{5}.d" not in failed and "net.dffW" not in failed
    f = result.first_failure
    case = next(c for c in cases_mod.default_cases() if c.name == f["case"])
    want = bp.cnnbp(case.ff, case.y)["layers"][3]["d"][f["map"][0] - 1]
    assert want[tuple(i - 1 for i in f["index"])] == f["want"]
    assert f["got"] == pytest.approx(4 * f["want"], rel=1e-12)          # no / s^2 with s = 2
    assert f["line"] == "cnnbp.m line 26: " + bp.LINES[26]


def test_shapes_that_differ_are_named_both():
    def cnnbp(net, y):
        out = EINSUM.cnnbp(net, y)
        return dict(out, dffW=out["dffW"].T)
    result = check(cnnbp)
    q = next(q for q in result.quantities if q.label == "net.dffW")
    assert q.problem == "shape 72×4, the lecture's is 4×72" and not q.passed
    assert result.diagnosis == []
    # trailing singleton dimensions do not count, as in MATLAB: dffb (4,), dk kh×kw×1 pass
    def squeezed(net, y):
        out = EINSUM.cnnbp(net, y)
        for layer in out["layers"]:
            if "dk" in layer:
                layer["dk"] = [[k[:, :, None] for k in row] for row in layer["dk"]]
        return dict(out, dffb=out["dffb"].ravel())
    assert check(squeezed).passed


def test_missing_required_quantities_fail_and_optional_ones_are_skipped():
    def cnnbp(net, y):
        out = EINSUM.cnnbp(net, y)
        del out["e"], out["L"], out["dffb"]
        return out
    result = check(cnnbp)
    labels = {q.label: q for q in result.quantities}
    assert "net.e" not in labels and "net.L" not in labels
    assert labels["net.dffb"].problem == "missing" and not result.passed


def test_the_users_exception_is_a_result(tmp_path):
    user = tmp_path / "student.py"
    user.write_text("import numpy as np\n\ndef cnnbp(net, y):\n    d = net['fvd']\n    return net\n")
    result = check(user)
    assert not result.passed and result.diagnosis == [] and result.quantities == []
    assert result.error == f"KeyError: 'fvd' ({user}:4, in cnnbp)"
    broken = tmp_path / "broken.py"
    broken.write_text("def cnnbp(net, y):\n    return net +\n")
    result = check(broken)
    assert not result.passed and result.error.startswith("SyntaxError") and f"{broken}:2" in result.error
    assert cli.main(["check", str(user)]) == 1
    forgot = tmp_path / "forgot_return.py"
    forgot.write_text("def cnnbp(net, y):\n    net['dffW'] = 0\n")
    result = check(forgot)
    assert not result.passed and result.error == "cnnbp returned NoneType, not the net (a dict with 'layers', 'dffW', ...)"


def test_cli_exit_codes_and_json(tmp_path, capsys, monkeypatch):
    assert cli.main(["check", str(FIXTURES / "loops_cnnbp.py")]) == 0
    assert "correct: 18 quantities" in capsys.readouterr().out
    wrong = tmp_path / "wrong.py"
    wrong.write_text(f"import importlib.util, sys\nsys.path.insert(0, {str(FIXTURES)!r})\n"
                     "import einsum_cnnbp\ncnnbp = einsum_cnnbp.make('dffb-not-averaged')\n")
    assert cli.main(["check", str(wrong), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"passed", "quantities", "first_failure", "diagnosis", "error"}
    assert out["passed"] is False and out["error"] is None
    assert out["first_failure"] == {**out["first_failure"], "quantity": "net.dffb", "layer": None, "map": None,
                                    "line": "cnnbp.m line 51: net.dffb = mean(net.od, 2);"}
    assert [d["mistakes"] for d in out["diagnosis"]] == [["dffb-not-averaged"]]
    assert out["diagnosis"][0]["max_abs"] < 1e-15
    assert all(set(q) >= {"quantity", "layer", "max_abs", "max_rel", "passed"} for q in out["quantities"])
    for argv, message in ((["check", str(tmp_path / "nope.py")], "no such file or folder"),
                          (["check", str(tmp_path / "wrong.py") + "x"], "no such file"),):
        assert cli.main(argv) == 2
        assert message in capsys.readouterr().err
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    assert cli.main(["check", str(empty)]) == 2
    assert capsys.readouterr().err.strip() == f"jaxcnn: error: {empty}: defines no function cnnbp(net, y)"
    folder = tmp_path / "mfiles"
    folder.mkdir()
    assert cli.main(["check", str(folder)]) == 2
    assert "no cnnbp.m in this folder" in capsys.readouterr().err
    shutil.copy(OCTAVE / "cnnbp.m", folder)
    monkeypatch.setattr("jaxcnn.verification.octave.shutil.which", lambda name: None)
    assert cli.main(["check", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "octave-cli is not installed" in err and "apt-get install" in err


def test_building_blocks_and_cnnff_are_checked(tmp_path):
    user = tmp_path / "blocks.py"
    user.write_text(f"import sys\nsys.path.insert(0, {str(FIXTURES)!r})\nfrom loops_cnnbp import cnnbp, flipall, expand\n"
                    "def rot180(x):\n    return x.T if x.ndim == 2 else x.transpose(1, 0, *range(2, x.ndim))\n")
    result = check(user)
    assert [q.label for q in result.quantities if not q.passed] == ["rot180"]
    assert result.first_failure["quantity"] == "rot180" and "flipdim(flipdim(X, 1), 2)" in result.first_failure["line"]
    def cnnff(net, x):
        out = EINSUM.cnnff(net, x)
        maps = out["layers"][-1]["a"]
        return dict(out, fv=np.concatenate([m.reshape(-1, m.shape[2]) for m in maps]))   # row-major: wrong
    result = check(EINSUM.cnnbp, cnnff=cnnff)
    assert [q.label for q in result.quantities if not q.passed] == ["net.fv"]
    assert result.first_failure["line"].startswith("cnnff.m: net.fv = [net.fv; reshape(")


@pytest.mark.slow
def test_the_cases_cannot_hide_a_catalogue_mistake():
    """On the cases a check with every option runs, each mistake changes some output, and no two change
    them alike (so the diagnosis of a single mistake is one name); the kernels' rot180, transpose and
    identity differ; each case has several samples of different classes and maps."""
    cases = cases_mod.cases_for(cases_mod.OPTIONS)
    keys_of = [list(checker.quantities_of(ref, ref)) for ref in checker.reference_outputs(cases)]
    outputs = {}
    for m in mistakes.CATALOGUE:
        flat = []
        for case, keys in zip(cases, keys_of):
            ref = checker.reference_outputs([case])[0]
            flat += checker._flat(checker.reference_outputs([case], (m.id,))[0], ref, keys)
        outputs[m.id] = flat
    lecture = [a for case, keys in zip(cases, keys_of)
               for a in checker._flat(checker.reference_outputs([case])[0], checker.reference_outputs([case])[0], keys)]
    assert all(not checker._equal(flat, lecture)[0] for flat in outputs.values())
    same = [(a, b) for a in outputs for b in outputs if a < b and checker._equal(outputs[a], outputs[b])[0]]
    assert same == []
    for case in cases:
        assert case.y.shape[1] >= 3 and len(set(np.argmax(case.y, axis=0))) == case.y.shape[1]
        for layer in case.net["layers"]:
            if layer["type"] == "c":
                assert len(layer["k"][0]) >= 2 and all(b != 0 for b in layer["b"])
                for k in (k for row in layer["k"] for k in row):
                    assert not np.allclose(k, k.T) and not np.allclose(k, bp.rot180(k)) and not np.allclose(k.T, bp.rot180(k))
        assert not np.array_equal(case.x[0][:, :, 0], case.x[0][:, :, 1])
    shapes = {tuple(c.ff["a"][-1][0].shape[:2]) for c in cases}
    assert any(h != w for h, w in shapes)


@pytest.mark.slow
def test_option_cases_only_when_declared_and_away_from_kinks():
    from jaxcnn.verification import checks

    assert cases_mod.KINK_MARGIN >= 1
    assert [c.name for c in cases_mod.cases_for(())] == [c.name for c in cases_mod.default_cases()]
    option_cases = cases_mod.option_cases({"relu", "max"})
    assert len(option_cases) == 2
    for case in option_cases:
        assert checks.kink_margin(case.net, case.x) >= cases_mod.KINK_MARGIN
        assert "output" not in case.net
        assert {layer.get("activation") for layer in case.net["layers"]} >= {"relu"}
        assert {layer.get("pool") for layer in case.net["layers"]} >= {"max"}
    with pytest.raises(ValueError, match="OPTIONS: unknown swish"):
        cases_mod.option_cases({"swish"})
    # a ReLU mistake is named only where ReLU is declared; undeclared, the sigmoid cases cannot see it
    assert _names(check(EINSUM.make("relu-derivative-one"), options={"relu"})) == [["relu-derivative-one"]]
    assert check(EINSUM.make("relu-derivative-one"), options=()).passed


# ---- GNU Octave --------------------------------------------------------------------------------

OCTAVE_MISTAKES = {   # id: (a line of tests/check_fixtures/octave/cnnbp.m, the same line with the mistake)
    "error-sign": ("net.e = net.o - y;", "net.e = y - net.o;"),
    "od-missing-sigmoid-derivative": ("net.od = net.e .* net.o .* (1 - net.o);", "net.od = net.e;"),
    "fvd-extra-derivative": ("if strcmp(net.layers{n}.type, 'c')", "if true"),
    "fvd-reshape-order": ("reshape(net.fvd((j - 1) * h * w + (1 : h * w), :), h, w, N);",
                          "permute(reshape(net.fvd((j - 1) * h * w + (1 : h * w), :), w, h, N), [2 1 3]);"),
    "pool-missing-scale-division": ("back = repelem(up.d{i}, s, s, 1) / s ^ 2;", "back = repelem(up.d{i}, s, s, 1);"),
    "full-conv-transpose-for-rot180": ("rot90(up.k{i}{j}, 2), 'full');", "up.k{i}{j}', 'full');"),
    "full-conv-not-accumulated": ("z(:, :, m) = z(:, :, m) + conv2(", "z(:, :, m) = conv2("),
    "dk-spatial-flip-only": ("rot90(d(:, :, m), 2), 'valid'), 2);", "rot90(d(:, :, N + 1 - m), 2), 'valid'), 2);"),
    "db-not-averaged": ("net.layers{l}.db{j} = sum(d(:)) / N;", "net.layers{l}.db{j} = sum(d(:));"),
    "dffW-not-averaged": ("net.dffW = net.od * net.fv' / N;", "net.dffW = net.od * net.fv';"),
}
OCTAVE_PAIRS = [("error-sign", "db-not-averaged"), ("pool-missing-scale-division", "dffW-not-averaged"),
                ("full-conv-transpose-for-rot180", "dk-spatial-flip-only")]


def _octave_folder(tmp_path, name, *ids):
    folder = tmp_path / name
    folder.mkdir()
    text = (OCTAVE / "cnnbp.m").read_text()
    for mistake in ids:
        old, new = OCTAVE_MISTAKES[mistake]
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    (folder / "cnnbp.m").write_text(text)
    return folder


def _needs_octave():
    if shutil.which("octave-cli") is None:
        pytest.fail("octave-cli is missing: apt-get install --no-install-recommends octave (scripts/setup does this as root)")


@pytest.mark.slow
def test_octave_correct_port_passes_and_its_exception_is_a_result(tmp_path):
    _needs_octave()
    result = check(OCTAVE)
    assert result.passed, str(result)
    assert max(q.max_rel for q in result.quantities) < 1e-12 and len(result.quantities) == 14
    folder = tmp_path / "raises"
    folder.mkdir()
    (folder / "cnnbp.m").write_text("function net = cnnbp(net, y)\n    n = numel(net.layers);\n"
                                    "    net.e = net.o - y(:, 1 : 2);\nend\n")
    result = check(folder)
    assert not result.passed and result.diagnosis == []
    assert result.error.startswith("Octave error: operator -: nonconformant arguments")
    assert result.error.endswith(f"({folder.resolve()}/cnnbp.m:3, in cnnbp)")
    # raised inside jaxcnn's expand.m, called wrongly: the place named is the user's line that called it
    (folder / "cnnbp.m").write_text("function net = cnnbp(net, y)\n    n = numel(net.layers);\n"
                                    "    net.e = expand(net.o);\nend\n")
    result = check(folder)
    assert "'S' undefined" in result.error and result.error.endswith(f"({folder.resolve()}/cnnbp.m:3, in cnnbp)")
    # the user's own helpers win over jaxcnn's: an expand.m in the folder is used (and checked as a block)
    own = _octave_folder(tmp_path, "own-expand")
    (own / "expand.m").write_text("function B = expand(A, S)\n    B = repelem(A, S(1), S(2), 1) * 2;\nend\n")
    (own / "cnnbp.m").write_text((own / "cnnbp.m").read_text().replace("repelem(up.d{i}, s, s, 1)",
                                                                        "expand(up.d{i}, [s s 1])"))
    result = check(own)
    assert result.error is None and result.first_failure["quantity"] == "expand"
    assert [q.label for q in result.quantities if not q.passed][:2] == ["expand", "net.layers{4}.d"]


@pytest.mark.slow
def test_octave_mistakes_and_pairs_are_named(tmp_path):
    _needs_octave()
    got = {}
    for mistake in OCTAVE_MISTAKES:
        got[(mistake,)] = _names(check(_octave_folder(tmp_path, mistake, mistake)))
    for pair in OCTAVE_PAIRS:
        got[pair] = _names(check(_octave_folder(tmp_path, "+".join(pair), *pair)))
    assert got == {ids: [list(ids)] for ids in got}


# ---- the report page ---------------------------------------------------------------------------

@pytest.mark.slow
def test_the_report_page_in_chromium(tmp_path):
    from jaxcnn.report import check_page
    from tests.test_report import CHROMIUM_ARGS, open_page
    from playwright import sync_api

    user = tmp_path / "<i>student.py"                       # markup in a name is text on the page
    user.write_text(f"import sys\nsys.path.insert(0, {str(FIXTURES)!r})\nimport einsum_cnnbp\n"
                    "cnnbp = einsum_cnnbp.make('full-conv-missing-rot180')\n")
    wrong = check(user)
    assert cli.main(["check", str(user), "--report", str(tmp_path / "wrong.html")]) == 1
    check_page.write(check(EINSUM.cnnbp), tmp_path / "right.html")
    raises = tmp_path / "raises.py"
    raises.write_text("def cnnbp(net, y):\n    return 1 / 0\n")
    check_page.write(check(raises), tmp_path / "raises.html")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        seen = open_page(browser, tmp_path / "wrong.html", screenshot=tmp_path / "wrong.png")
        right = open_page(browser, tmp_path / "right.html")
        raised = open_page(browser, tmp_path / "raises.html")
        page = browser.new_page()
        page.goto((tmp_path / "wrong.html").as_uri())
        injected = page.evaluate("() => document.querySelectorAll('body i').length")
        csp = page.evaluate("() => document.querySelector('meta[http-equiv]').content")
        browser.close()
    assert seen["outside"] == [] and seen["errors"] == [] and injected == 0 and "default-src 'none'" in csp
    assert seen["sections"] == ["s-verdict", "s-diagnosis", "s-quantities", "s-maps"]
    failing = [q.label for q in wrong.quantities if not q.passed]
    assert failing == ["net.layers{3}.d", "net.layers{2}.d", "net.layers{2}.dk", "net.layers{2}.db"]
    assert [alt for alt, _, _ in seen["images"]] == [f"{label}: {who}" for label in failing
                                                     for who in ("yours", "the lecture's", "yours − the lecture's")]
    assert all(complete and width > 0 for _, complete, width in seen["images"])
    assert "full-conv-missing-rot180" in seen["text"] and "fix cnnbp.m line 32: " + bp.LINES[32] in seen["text"]
    assert "<i>student.py" in seen["text"]
    for n, q in enumerate(wrong.quantities):
        assert seen["spans"][f"v-abs-{n}"] == q.max_abs and seen["spans"][f"v-rel-{n}"] == q.max_rel
    assert right["sections"] == ["s-verdict", "s-quantities"] and right["images"] == [] and "correct" in right["text"]
    assert raised["sections"] == ["s-verdict", "s-diagnosis", "s-quantities"]
    assert f"ZeroDivisionError: division by zero ({raises}:2, in cnnbp)" in raised["text"]


def test_the_docs_list_every_catalogue_entry_and_the_issues_ids():
    text = (Path(__file__).resolve().parent.parent / "docs" / "check.md").read_text()
    assert [m.id for m in mistakes.CATALOGUE if f"| `{m.id}`" not in text] == []
    issue_16 = ["error-sign", "od-missing-sigmoid-derivative", "fvd-extra-derivative", "fvd-reshape-order",
                "pool-missing-scale-division", "pool-divides-by-scale", "pool-zero-upsampling",
                "conv-missing-activation-derivative", "full-conv-missing-rot180", "full-conv-transpose-for-rot180",
                "full-conv-not-accumulated", "dk-missing-flipall", "dk-spatial-flip-only", "dk-not-averaged",
                "db-not-averaged", "dffW-not-averaged", "dffb-not-averaged"]
    assert set(issue_16) <= set(mistakes.BY_ID)
    for m in mistakes.CATALOGUE:
        assert m.line in bp.LINES and m.rule in bp.RULES and m.explanation.endswith(".")
