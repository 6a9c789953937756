"""`jaxcnn check`: a user's own `cnnbp` checked quantity by quantity against the lecture's, and the
mistake named by the catalogue (`verification.mistakes`).

The contract (the toolbox's struct as dicts and 0-based lists, exactly as `cnnbp.m` reads it):
  cnnbp(net, y) -> net
    net["layers"][l]: "type" ('i', 'c', 's'), "a" (list of H×W×N maps, the toolbox's orientation: each
      image transposed), for 'c' "outputmaps", "kernelsize", "k" (k[i][j], kh×kw, used by true
      convolution), "b" (b[j]), for 's' "scale"; with layer options also 'c' "activation" ("tanh",
      "relu"), 's' "pool" ("max", with "mask": the 0/1 maps of the chosen elements) and net "output"
      ("softmax"); absent means the toolbox's sigmoid, mean pooling and sigmoid output.
    net["ffW"] (onum×fvnum), net["ffb"] (onum×1), net["fv"] (fvnum×N), net["o"] (onum×N); y is onum×N.
    It returns the net with "d" (d[j]) on every layer after the input, "dk" (dk[i][j]) and "db" (db[j])
    on each 'c' layer, and "dffW", "dffb" (all required); "e", "L", "od", "fvd" are compared when present.
  cnnff(net, x) -> net, optional: x is the H×W×N input (cnnff.m: net.layers{1}.a{1} = x); net has no
    "a", "fv", "o" yet; compared: every layer's "a" after the input, "fv", "o".
  rot180(X), flipall(X), expand(A, S), convn(a, k, shape), optional building blocks.
Arrays are compared as MATLAB sizes them: trailing singleton dimensions do not count (a 5×5×1 dk is 5×5).
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import time
import traceback
from pathlib import Path

import numpy as np

from . import backprop as bp
from . import mistakes as catalogue
from .cases import Case, cases_for

RTOL = 1e-10
CNNFF_LINES = {   # the lines of the toolbox's cnnff.m the forward quantities come from
    "a_c": "net.layers{l}.a{j} = sigm(z + net.layers{l}.b{j});",
    "a_s": "net.layers{l}.a{j} = z(1 : net.layers{l}.scale : end, 1 : net.layers{l}.scale : end, :);",
    "fv": "net.fv = [net.fv; reshape(net.layers{n}.a{j}, sa(1) * sa(2), sa(3))];",
    "o": "net.o = sigm(net.ffW * net.fv + repmat(net.ffb, 1, size(net.fv, 2)));",
}
BLOCK_LINES = {
    "rot180": "cnnbp.m line 54: X = flipdim(flipdim(X, 1), 2);",
    "flipall": "util/flipall.m: every dimension of X flipped",
    "expand": "util/expand.m: each element of A repeated S(d) times along dimension d",
    "convn": "MATLAB's convn(a, k, shape): n-D true convolution, 'valid' or 'full'",
}


class CheckUsageError(ValueError):
    """What was given cannot be checked (no such file, no cnnbp, Octave missing): `jaxcnn check` exits 2."""


class UserCodeError(Exception):
    """The user's code raised; `message` names the exception and the user's file and line."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


@dataclasses.dataclass
class Quantity:
    name: str                 # "e", "L", "od", "fvd", "d", "dk", "db", "dffW", "dffb", "a", "fv", "o", or a block's
    layer: int | None         # the toolbox's 1-based l of net.layers{l}
    stage: str                # "block", "cnnff" or "cnnbp"
    max_abs: float = 0.0
    max_rel: float = 0.0
    passed: bool = True
    problem: str | None = None       # a structure or shape mismatch, in words
    worst: dict | None = None        # {case, map, index, got, want} of the worst entry

    @property
    def label(self) -> str:
        if self.stage == "block":
            return self.name
        if self.layer is None:
            return f"net.{self.name}"
        return f"net.layers{{{self.layer}}}.{self.name}"

    def to_json(self) -> dict:
        return {"quantity": self.label, "name": self.name, "layer": self.layer, "stage": self.stage,
                "max_abs": _finite(self.max_abs), "max_rel": _finite(self.max_rel), "passed": self.passed,
                "problem": self.problem}


def _finite(x):
    return float(x) if np.isfinite(x) else None


@dataclasses.dataclass
class CheckResult:
    """What `check` found. `passed`, `quantities`, `first_failure`, `diagnosis`, `error` are the JSON of
    `jaxcnn check --json` (`to_json`); `assert_correct()` raises AssertionError with the diagnosis."""
    subject: str
    passed: bool
    quantities: list
    first_failure: dict | None
    diagnosis: list
    error: str | None
    cases: list
    options: list
    seconds: float
    tolerance: float = RTOL
    details: dict = dataclasses.field(default_factory=dict, repr=False)   # per quantity: the arrays, for the report

    def to_json(self) -> dict:
        return {"passed": self.passed, "quantities": [q.to_json() for q in self.quantities],
                "first_failure": self.first_failure, "diagnosis": self.diagnosis, "error": self.error,
                "subject": self.subject, "tolerance": self.tolerance, "cases": self.cases, "options": self.options}

    def verdict(self) -> str:
        if self.error:
            return f"{self.subject}: raised {self.error}"
        if self.passed:
            return (f"{self.subject}: correct: {len(self.quantities)} quantities equal the lecture's to "
                    f"{self.tolerance:g} (relative) on {len(self.cases)} cases")
        lines = [f"{self.subject}: wrong"]
        f = self.first_failure
        if f:
            where = f["quantity"] + "".join(f"{{{m}}}" for m in f.get("map") or [])
            if f.get("problem"):
                lines.append(f"first failure: {where}: {f['problem']}")
            else:
                index = "(" + ", ".join(map(str, f["index"])) + ")"
                layer = f" (layer {f['layer']})" if f.get("layer") else ""
                lines.append(f"first failure: {where}{index}{layer}: yours {f['got']:.6g}, "
                             f"the lecture's {f['want']:.6g} (case: {f['case']})")
            lines.append(f"  the lecture computes it at {f['line']}")
        if self.diagnosis:
            for d in self.diagnosis:
                lines.append(f"diagnosis: {' + '.join(d['mistakes'])} (every output equal to 1e-10; "
                             f"max |difference| {d['max_abs']:.1e})")
                for mistake_id in d["mistakes"]:
                    m = catalogue.BY_ID[mistake_id]
                    lines.append(f"  {m.id}: {m.explanation}")
                    lines.append(f"    you wrote {m.wrote}; the lecture: {m.lecture}; fix {m.fix}")
        else:
            lines.append("diagnosis: none of the catalogue's mistakes (or pairs of them) gives your numbers; "
                         "start from the first failure")
        return "\n".join(lines)

    def table(self) -> str:
        width = max([len(q.label) for q in self.quantities] + [8])
        out = [f"{'quantity':<{width}}  {'max abs':>9}  {'max rel':>9}  result"]
        for q in self.quantities:
            result = "pass" if q.passed else f"FAIL{': ' + q.problem if q.problem else ''}"
            out.append(f"{q.label:<{width}}  {q.max_abs:9.2e}  {q.max_rel:9.2e}  {result}")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.table() + "\n" + self.verdict()

    def assert_correct(self):
        """Raise AssertionError carrying the verdict and diagnosis unless the user's code is correct."""
        if not self.passed:
            raise AssertionError(self.verdict())


# ---- the subjects: a Python file or callable, or an Octave folder --------------------------------

def user_net(case: Case, with_forward=True) -> dict:
    """The net the user's cnnbp gets: the toolbox struct, with the lecture's forward pass filled in."""
    ff = case.ff
    layers = []
    for l, layer in enumerate(case.net["layers"]):
        layer = copy.deepcopy(layer)
        if with_forward:
            layer["a"] = [np.array(m) for m in ff["a"][l]]
            if layer.get("pool") == "max":
                layer["mask"] = [np.array(m) for m in ff["mask"][l]]
        layers.append(layer)
    net = {"layers": layers, "ffW": np.array(case.net["ffW"]), "ffb": np.array(case.net["ffb"])}
    if "output" in case.net:
        net["output"] = case.net["output"]
    if with_forward:
        net.update(fv=np.array(ff["fv"]), o=np.array(ff["o"]))
    return net


def _user_frame(err: BaseException, files) -> str:
    frames = [f for f in traceback.extract_tb(err.__traceback__) if Path(f.filename).resolve() in files]
    if isinstance(err, SyntaxError) and err.filename and Path(err.filename).resolve() in files:
        return f"{err.filename}:{err.lineno}"
    if not frames:
        return ""
    f = frames[-1]
    return f"{f.filename}:{f.lineno}, in {f.name}"


def _describe_error(err: BaseException, files) -> str:
    where = _user_frame(err, files)
    text = f"{type(err).__name__}: {err}"
    return f"{text} ({where})" if where else text


class PythonSubject:
    """The user's Python functions, called on deep copies of the cases."""

    def __init__(self, cnnbp, cnnff=None, blocks=None, options=(), name=None, files=()):
        self.cnnbp, self.cnnff, self.blocks = cnnbp, cnnff, dict(blocks or {})
        self.options = frozenset(options)
        self.name = name or getattr(cnnbp, "__qualname__", "cnnbp")
        self.files = {Path(f).resolve() for f in files}
        try:
            import inspect
            self.files.add(Path(inspect.getsourcefile(cnnbp)).resolve())
        except (TypeError, OSError):
            pass

    def _call(self, fn, *args):
        try:
            return fn(*copy.deepcopy(args))
        except Exception as err:           # the user's code raising is a result
            raise UserCodeError(_describe_error(err, self.files)) from err

    def prepare(self, cases, block_trials):
        """Nothing to prepare: each function is called as the check goes."""

    def run_cnnbp(self, cases):
        return [self._call(self.cnnbp, user_net(case), case.y) for case in cases]

    def run_cnnff(self, cases):
        return [self._call(self.cnnff, user_net(case, with_forward=False), case.x[0]) for case in cases]

    def run_block(self, name, index, args):
        return self._call(self.blocks[name], *args)


def load_python(path: Path) -> PythonSubject:
    """A Python file's `cnnbp` (required), `cnnff`, building blocks and `OPTIONS`."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(f"jaxcnn_check_user_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise UserCodeError(_describe_error(err, {path.resolve()})) from err
    finally:
        sys.path.remove(str(path.parent))
    if not callable(getattr(module, "cnnbp", None)):
        raise CheckUsageError(f"{path}: defines no function cnnbp(net, y)")
    options = getattr(module, "OPTIONS", ())
    if isinstance(options, str) or not all(isinstance(o, str) for o in options):
        raise CheckUsageError(f"{path}: OPTIONS must be a set of names like {{'relu', 'max', 'softmax'}}")
    blocks = {name: getattr(module, name) for name in BLOCK_LINES if callable(getattr(module, name, None))}
    cnnff = getattr(module, "cnnff", None)
    return PythonSubject(module.cnnbp, cnnff if callable(cnnff) else None, blocks, options, str(path), {path})


# ---- comparing -------------------------------------------------------------------------------------

def _matlab_shape(x) -> tuple:
    """The size MATLAB would show: no trailing singleton dimensions; a 1-D numpy array is a column."""
    shape = tuple(np.shape(x))
    shape = shape + (1,) if len(shape) == 1 else shape
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    while len(shape) == 2 and shape[-1] == 1 and shape[0] == 1:
        shape = ()
    return shape


def _as_array(x):
    try:
        return np.asarray(x, np.float64)
    except (TypeError, ValueError):
        return None


def _shape_text(shape) -> str:
    return "×".join(map(str, shape)) if shape else "a scalar"


def _squeeze_to(x, shape):
    return np.asarray(x, np.float64).reshape(shape)


def quantities_of(net: dict, reference: dict) -> dict:
    """The (name, layer) -> list of (map, array) of a cnnbp result, as the reference result has them.

    map is None, (j,) or (i, j), 1-based; a missing key gives a list holding None for what is missing."""
    out = {}
    for name in ("e", "L", "od", "fvd"):
        out[(name, None)] = [(None, net.get(name))] if name in net else None
    layers = net.get("layers") if isinstance(net, dict) else None
    ref_layers = reference["layers"]
    for l in range(len(ref_layers) - 1, 0, -1):
        layer = layers[l] if isinstance(layers, (list, tuple)) and l < len(layers) and isinstance(layers[l], dict) else {}
        out[("d", l + 1)] = _maps(layer.get("d"), len(ref_layers[l]["d"]))
        if ref_layers[l]["type"] == "c":
            out[("dk", l + 1)] = _maps2(layer.get("dk"), len(ref_layers[l]["dk"]), len(ref_layers[l]["dk"][0]))
            out[("db", l + 1)] = _maps(layer.get("db"), len(ref_layers[l]["db"]))
    for name in ("dffW", "dffb"):
        out[(name, None)] = [(None, net.get(name))]
    return out


def _maps(cell, count):
    if cell is None:
        return [((j + 1,), None) for j in range(count)]
    if isinstance(cell, (list, tuple)):
        cell = list(cell)
    elif isinstance(cell, np.ndarray) and (cell.dtype == object or cell.ndim == 1):
        cell = list(cell.ravel())
    else:
        cell = [cell]
    if len(cell) != count:
        return f"{len(cell)} maps, the lecture has {count}"
    return [((j + 1,), c) for j, c in enumerate(cell)]


def _maps2(cell, count_i, count_j):
    if cell is None:
        return [((i + 1, j + 1), None) for i in range(count_i) for j in range(count_j)]
    rows = list(cell) if isinstance(cell, (list, tuple, np.ndarray)) else [cell]
    if len(rows) != count_i:
        return f"{len(rows)} rows i of dk{{i}}{{j}}, the lecture has {count_i}"
    out = []
    for i, row in enumerate(rows):
        row = list(row) if isinstance(row, (list, tuple, np.ndarray)) and np.ndim(row) != 2 else [row]
        if len(row) != count_j:
            return f"dk{{{i + 1}}} has {len(row)} maps j, the lecture has {count_j}"
        out += [((i + 1, j + 1), k) for j, k in enumerate(row)]
    return out


def compare_entries(got_entries, want_entries):
    """Max abs and per-case rel error of one quantity in one case, and the worst entry; or a problem string."""
    if isinstance(got_entries, str):
        return got_entries
    if got_entries is None:
        return "missing"
    worst = None
    max_abs, scale = 0.0, 0.0
    for (where, got), (_, want) in zip(got_entries, want_entries):
        want = np.asarray(want, np.float64)
        if got is None:
            return "missing" + (f" (map {_map_text(where)})" if where else "")
        g = _as_array(got)
        if g is None:
            return f"not numbers ({type(got).__name__})" + (f" (map {_map_text(where)})" if where else "")
        if _matlab_shape(g) != _matlab_shape(want):
            return f"shape {_shape_text(_matlab_shape(g))}, the lecture's is {_shape_text(_matlab_shape(want))}" + \
                (f" (map {_map_text(where)})" if where else "")
        g = _squeeze_to(g, want.shape)
        scale = max(scale, float(np.max(np.abs(want), initial=0.0)))
        diff = np.abs(g - want)
        if not np.all(np.isfinite(g)):
            bad = np.argwhere(~np.isfinite(g))[0]
            return dict(abs=np.inf, scale=scale, where=where, index=tuple(bad), got=float(g[tuple(bad)]),
                        want=float(want[tuple(bad)]))
        if diff.size and (worst is None or diff.max() > worst["abs"]):
            index = np.unravel_index(np.argmax(diff), diff.shape)
            worst = dict(abs=float(diff.max()), where=where, index=tuple(int(i) for i in index),
                         got=float(g[index]), want=float(want[index]))
        max_abs = max(max_abs, float(diff.max(initial=0.0)))
    worst = worst or dict(abs=0.0, where=None, index=(), got=0.0, want=0.0)
    worst["scale"] = scale
    return worst


def _map_text(where):
    return ", ".join(map(str, where)) if where else ""


def line_of(name, layer, reference_net) -> str:
    """The lecture line that computes a quantity (cnnbp.m's text, or cnnff.m's)."""
    numbers = {"e": 5, "L": 7, "od": 10, "fvd": 11, "dk": 44, "db": 46, "dffW": 50, "dffb": 51}
    if name in numbers:
        n = numbers[name]
        if name == "fvd" and reference_net["layers"][-1]["type"] == "c":
            return f"cnnbp.m lines 11-13: {bp.LINES[11].split('%')[0].strip()} then {bp.LINES[13]}"
        return f"cnnbp.m line {n}: {bp.LINES[n].split('  %')[0].strip()}"
    if name == "d":
        layers = reference_net["layers"]
        if layer == len(layers):
            return f"cnnbp.m line 20: {bp.LINES[20]}"
        if layers[layer - 1]["type"] == "c":
            return f"cnnbp.m line 26: {bp.LINES[26]}"
        return f"cnnbp.m line 32: {bp.LINES[32]}"
    if name == "a":
        return "cnnff.m: " + CNNFF_LINES["a_c" if reference_net["layers"][layer - 1]["type"] == "c" else "a_s"]
    if name in ("fv", "o"):
        return "cnnff.m: " + CNNFF_LINES[name]
    return BLOCK_LINES.get(name, "")


def _compare_quantity(q: Quantity, per_case):
    """Fill q from [(case, got entries, want entries)], the cases that have this quantity."""
    for case, got, want in per_case:
        outcome = compare_entries(got, want)
        if isinstance(outcome, str):
            q.passed, q.problem, q.max_abs, q.max_rel = False, outcome, np.inf, np.inf
            q.worst = {"case": case.name, "net": case.net}
            return
        rel = outcome["abs"] / outcome["scale"] if outcome["scale"] else outcome["abs"]
        if not np.isfinite(rel) or rel > q.max_rel or q.worst is None:
            q.worst = dict(outcome, case=case.name, net=case.net)
        q.max_abs = max(q.max_abs, outcome["abs"])
        q.max_rel = max(q.max_rel, rel) if np.isfinite(rel) else np.inf
    q.passed = bool(np.isfinite(q.max_rel) and q.max_rel <= RTOL)


def _order(key):
    """Backward order: e, L, od, fvd, then d, dk, db per layer from the top, dffW, dffb; forward: a, fv, o."""
    name, layer = key
    head, tail = ["a", "e", "L", "od", "fvd"], ["fv", "o", "dffW", "dffb"]
    if name in head and layer is None:
        return (0, head.index(name), 0)
    if name in tail:
        return (2, tail.index(name), 0)
    if name == "a":
        return (1, layer, 0)
    return (1, -layer, ["d", "dk", "db"].index(name))


def _failure(q: Quantity) -> dict:
    w = q.worst or {}
    reference_net = w.get("net")
    return {"quantity": q.label, "layer": q.layer, "map": list(w["where"]) if w.get("where") else None,
            "index": [int(i) + 1 for i in w["index"]] or [1] if "index" in w else None,
            "got": w.get("got"), "want": w.get("want"),
            "line": line_of(q.name, q.layer, reference_net) if reference_net else BLOCK_LINES.get(q.name, ""),
            "case": w.get("case"), "problem": q.problem}


# ---- the diagnosis -------------------------------------------------------------------------------

_REFERENCE_CACHE: dict = {}


def reference_outputs(cases, ids=()):
    """The lecture's cnnbp with the mistakes `ids` made, on each case (cached: the cases are fixed)."""
    out = []
    for case in cases:
        key = (case.name, tuple(ids))
        if key not in _REFERENCE_CACHE:
            with np.errstate(all="ignore"):
                _REFERENCE_CACHE[key] = bp.cnnbp(case.ff, case.y, catalogue.rules_of(ids))
        out.append(_REFERENCE_CACHE[key])
    return out


def _flat(result, reference, keys):
    q = quantities_of(result, reference)
    return [np.asarray(a, np.float64) for key in keys if key in q for _, a in q[key]]


def _equal(user_arrays, mistaken_arrays):
    """Whether every user array equals the mistaken one to RTOL (relative to its largest entry); max abs."""
    worst = 0.0
    for g, w in zip(user_arrays, mistaken_arrays):
        if g.shape != w.shape or not np.all(np.isfinite(w)):
            return False, np.inf
        diff = float(np.max(np.abs(g - w), initial=0.0))
        scale = float(np.max(np.abs(w), initial=0.0))
        if diff > RTOL * (scale if scale else 1.0):
            return False, diff
        worst = max(worst, diff)
    return True, worst


def diagnose(user_results, cases, keys) -> list[dict]:
    """The mistakes (single, else pairs) whose outputs equal the user's on every case, best first."""
    lecture = reference_outputs(cases)
    user = []
    for result, ref, case in zip(user_results, lecture, cases):
        arrays = []
        got, want = quantities_of(result, ref), quantities_of(ref, ref)
        for key in [k for k in keys if k in want]:
            for (_, g), (_, w) in zip(got[key], want[key]):
                arrays.append(_squeeze_to(g, np.shape(w)))
        user.append(arrays)
    lecture_flat = [_flat(r, r, keys) for r in lecture]
    options = set().union(*(_options_of(case) for case in cases))

    def explains(ids):
        worst = 0.0
        for case, ref, user_arrays in zip(cases, lecture, user):
            ok, err = _equal(user_arrays, _flat(reference_outputs([case], ids)[0], ref, keys))
            if not ok:
                return None
            worst = max(worst, err)
        return worst

    def changes(mistake):
        for case, ref, flat in zip(cases, lecture, lecture_flat):
            if not _equal(_flat(reference_outputs([case], (mistake.id,))[0], ref, keys), flat)[0]:
                return True
        return False

    live = [m for m in catalogue.CATALOGUE if m.needs <= options and changes(m)]
    found = [(err, (m.id,)) for m in live if (err := explains((m.id,))) is not None]
    if not found:
        for a, b in itertools.combinations(live, 2):
            if a.rule != b.rule and (err := explains((a.id, b.id))) is not None:
                found.append((err, (a.id, b.id)))
    order = {m.id: n for n, m in enumerate(catalogue.CATALOGUE)}
    found.sort(key=lambda item: (item[0], [order[i] for i in item[1]]))
    return [{"mistakes": list(ids), "max_abs": err,
             "explanations": [catalogue.BY_ID[i].explanation for i in ids],
             "fix": [catalogue.BY_ID[i].fix for i in ids]} for err, ids in found]


def _options_of(case: Case) -> set:
    found = {case.net.get("output", "sigmoid")}
    for layer in case.net["layers"]:
        found |= {layer.get("activation", "sigmoid"), layer.get("pool", "mean")}
    return found & {"tanh", "relu", "max", "softmax"}


# ---- building blocks and cnnff -------------------------------------------------------------------

def _block_inputs():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 3, 2))                    # non-square, asymmetric, 2 samples
    a, k2, k3 = rng.standard_normal((6, 5, 3)), rng.standard_normal((3, 2)), rng.standard_normal((3, 2, 2))
    return {
        "rot180": [((x,), bp.rot180(x)), ((x[:, :, 0],), bp.rot180(x[:, :, 0]))],
        "flipall": [((x,), bp.flipall(x))],
        "expand": [((x, [2, 3, 1]), bp.expand(x, [2, 3, 1])), ((x[:, :, 0], [3, 2]), bp.expand(x[:, :, 0], [3, 2]))],
        "convn": [((a, k2, "valid"), bp.convn(a, k2, "valid")), ((a, k2, "full"), bp.convn(a, k2, "full")),
                  ((a, k3, "valid"), bp.convn(a, k3, "valid")), ((a, k3, "full"), bp.convn(a, k3, "full"))],
    }


def check_blocks(subject) -> list[Quantity]:
    out = []
    for name, trials in _block_inputs().items():
        if name not in subject.blocks:
            continue
        q = Quantity(name, None, "block")
        for index, (args, want) in enumerate(trials):
            got = subject.run_block(name, index, args)
            outcome = compare_entries([(None, got)], [(None, want)])
            if isinstance(outcome, str):
                q.passed, q.problem, q.max_abs, q.max_rel = False, f"{outcome} on a {_shape_text(np.shape(args[0]))} input", np.inf, np.inf
                break
            q.max_abs = max(q.max_abs, outcome["abs"])
            q.max_rel = max(q.max_rel, outcome["abs"] / outcome["scale"])
            if q.worst is None or outcome["abs"] >= q.worst["abs"]:
                q.worst = dict(outcome, case=f"{name} of a {_shape_text(np.shape(args[0]))} input")
        q.passed = q.passed and q.max_rel <= RTOL
        out.append(q)
    return out


def forward_quantities(net, reference_ff, case) -> dict:
    out = {}
    layers = net.get("layers") if isinstance(net, dict) else None
    for l in range(1, len(case.net["layers"])):
        layer = layers[l] if isinstance(layers, (list, tuple)) and l < len(layers) and isinstance(layers[l], dict) else {}
        out[("a", l + 1)] = _maps(layer.get("a"), len(reference_ff["a"][l]))
    for name in ("fv", "o"):
        out[(name, None)] = [(None, net.get(name) if isinstance(net, dict) else None)]
    return out


def _reference_forward_entries(case):
    ff = case.ff
    out = {("a", l + 1): [((j + 1,), m) for j, m in enumerate(ff["a"][l])] for l in range(1, len(case.net["layers"]))}
    out[("fv", None)], out[("o", None)] = [(None, ff["fv"])], [(None, ff["o"])]
    return out


# ---- the check ------------------------------------------------------------------------------------

def check(subject, *, cnnff=None, options=None) -> CheckResult:
    """Check a user's `cnnbp`: a Python callable, a Python file path (its `cnnbp`, `cnnff`, building
    blocks and `OPTIONS`), or a folder holding `cnnbp.m` (run by GNU Octave). See the module docstring
    for the contract; `CheckResult.assert_correct()` raises AssertionError with the diagnosis."""
    started = time.perf_counter()
    if callable(subject):
        subject = PythonSubject(subject, cnnff, options=options or ())
    else:
        path = Path(subject)
        if path.is_dir():
            from .octave import OctaveSubject
            subject = OctaveSubject(path)
        elif path.is_file() and path.suffix == ".py":
            try:
                subject = load_python(path)
            except UserCodeError as err:
                return CheckResult(str(path), False, [], None, [], err.message, [], [], time.perf_counter() - started)
        elif path.is_file():
            raise CheckUsageError(f"{path}: not a Python file (.py) or a folder holding cnnbp.m")
        else:
            raise CheckUsageError(f"{path}: no such file or folder")
        if options is not None:
            subject.options = frozenset(options)
    cases = cases_for(subject.options)
    result = CheckResult(subject.name, False, [], None, [], None, [c.name for c in cases],
                         sorted(subject.options), 0.0)
    try:
        _run(subject, cases, result)
    except UserCodeError as err:
        result.error, result.passed, result.diagnosis = err.message, False, []
    result.seconds = time.perf_counter() - started
    return result


def _run(subject, cases, result):
    subject.prepare(cases, _block_inputs())
    result.quantities += check_blocks(subject) if subject.blocks else []
    if subject.cnnff is not None:
        forward = subject.run_cnnff(cases)
        for returned in forward:
            if not isinstance(returned, dict):
                raise UserCodeError(f"cnnff returned {type(returned).__name__}, not the net (a dict with 'layers', 'fv', 'o')")
        per_case = [(c, forward_quantities(f, c.ff, c), _reference_forward_entries(c)) for f, c in zip(forward, cases)]
        result.quantities += _compared(per_case, "cnnff", result)[0]
    user = subject.run_cnnbp(cases)
    for returned in user:
        if not isinstance(returned, dict):
            raise UserCodeError(f"cnnbp returned {type(returned).__name__}, not the net (a dict with 'layers', 'dffW', ...)")
    lecture = reference_outputs(cases)
    per_case = [(c, quantities_of(u, ref), quantities_of(ref, ref)) for c, u, ref in zip(cases, user, lecture)]
    quantities, compared = _compared(per_case, "cnnbp", result)
    result.quantities += quantities
    failing = [q for q in result.quantities if not q.passed]
    result.passed = not failing
    if failing:
        result.first_failure = _failure(failing[0])
        bp_failing = [q for q in failing if q.stage == "cnnbp"]
        if bp_failing and not any(q.problem for q in result.quantities if q.stage == "cnnbp"):
            result.diagnosis = diagnose(user, cases, compared)


def _compared(per_case, stage, result):
    """Quantities of one stage in order, each over the cases that have it; and the keys compared."""
    keys = sorted({key for _, _, want in per_case for key in want}, key=_order)
    quantities, compared = [], []
    for key in keys:
        rows = [(case, got[key], want[key]) for case, got, want in per_case if key in want]
        if stage == "cnnbp" and key[0] in ("e", "L", "od", "fvd") and all(got is None for _, got, _ in rows):
            continue                                   # compared when present
        q = Quantity(key[0], key[1], stage)
        _compare_quantity(q, rows)
        quantities.append(q)
        compared.append(key)
        result.details[q.label] = rows
    return quantities, compared
