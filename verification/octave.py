"""A folder holding a MATLAB/Octave `cnnbp.m` (and optionally `cnnff.m`, `rot180.m`, `flipall.m`,
`expand.m`), run by GNU Octave (`octave-cli`) as one subprocess per check, with the data exchanged as
.mat files (scipy.io). The toolbox's helpers `sigm`, `expand` and `flipall` (rewritten for jaxcnn, in
`octave/`) are on Octave's path after the user's folder, so the user's own win. Layer options are
declared by a line `% OPTIONS = {'relu', 'max', 'softmax'}` anywhere in `cnnbp.m`.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .checker import CheckUsageError, UserCodeError, user_net

HELPERS = Path(__file__).resolve().with_name("octave")
INSTALL = ("GNU Octave's octave-cli is not installed (jaxcnn check runs a cnnbp.m with it): install it with "
           "`sudo apt-get install --no-install-recommends octave` (Debian/Ubuntu), `brew install octave` "
           "(macOS) or from https://octave.org/download")
TIMEOUT_S = 600
BLOCKS = ("rot180", "flipall", "expand")      # a block is checked when the folder has its own .m file

DRIVER = r"""
addpath('{helpers}');
addpath('{user}');
jaxcnn_user = '{user}';
function jaxcnn_fail(err, stage, user)
    where = '';
    for s = 1 : numel(err.stack)
        if strncmp(err.stack(s).file, user, numel(user))
            where = sprintf(' (%s:%d, in %s)', err.stack(s).file, err.stack(s).line, err.stack(s).name);
            break;
        end
    end
    if isempty(where) && numel(err.stack) > 0
        where = sprintf(' (%s:%d, in %s)', err.stack(1).file, err.stack(1).line, err.stack(1).name);
    end
    fid = fopen('error.txt', 'w');
    fprintf(fid, '%s\n%s%s', stage, err.message, where);
    fclose(fid);
end
function r = jaxcnn_pick(s, names)
    r = struct('present', 1);
    for q = 1 : numel(names)
        if isstruct(s) && isfield(s, names{{q}})
            r.(names{{q}}) = s.(names{{q}});
        end
    end
end
function r = jaxcnn_layers(out, names)
    r = jaxcnn_pick(out, {{'e', 'L', 'od', 'fvd', 'dffW', 'dffb', 'fv', 'o'}});
    if isstruct(out) && isfield(out, 'layers')
        r.layers = cell(1, numel(out.layers));
        for l = 1 : numel(out.layers)
            r.layers{{l}} = jaxcnn_pick(out.layers{{l}}, names);
        end
    end
end
try
    load('blocks.mat');
    for t = 1 : numel(block_names)
        result = feval(block_names{{t}}, block_args{{t}}{{:}});
        save('-v7', sprintf('block%d.mat', t), 'result');
    end
catch err
    jaxcnn_fail(err, 'block', jaxcnn_user);
    exit(0);
end
for c = 1 : {ncases}
    load(sprintf('case%d.mat', c));
    if {cnnff}
        try
            out = cnnff(net0, x);
        catch err
            jaxcnn_fail(err, 'cnnff', jaxcnn_user);
            exit(0);
        end
        res = jaxcnn_layers(out, {{'a'}});
        save('-v7', sprintf('ff%d.mat', c), 'res');
    end
    try
        out = cnnbp(net, y);
    catch err
        jaxcnn_fail(err, 'cnnbp', jaxcnn_user);
        exit(0);
    end
    res = jaxcnn_layers(out, {{'d', 'dk', 'db'}});
    save('-v7', sprintf('bp%d.mat', c), 'res');
end
"""


def _octave_string(path: Path) -> str:
    return str(path).replace("'", "''")


def _cell(items) -> np.ndarray:
    cell = np.empty((1, len(items)), dtype=object)
    for i, item in enumerate(items):
        cell[0, i] = item
    return cell


def _to_mat(value):
    """A user-format net (dicts, lists, numbers, arrays) as what scipy.io.savemat writes as MATLAB
    structs, cells and doubles (every number a double: an int64 scale would make scale ^ 2 integer)."""
    if isinstance(value, dict):
        return {k: _to_mat(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return _cell([_to_mat(v) for v in value])
    if isinstance(value, str):
        return value
    return np.asarray(value, np.float64)


def _from_mat(value):
    """scipy.io.loadmat(struct_as_record=False) values back into dicts, lists and arrays."""
    if hasattr(value, "_fieldnames"):
        return {name: _from_mat(getattr(value, name)) for name in value._fieldnames if name != "present"}
    if isinstance(value, np.ndarray) and value.dtype == object:
        items = [_from_mat(v) for v in value.ravel(order="F")]
        return items[0] if value.size == 1 and hasattr(value.ravel()[0], "_fieldnames") else items
    if isinstance(value, np.ndarray) and value.dtype.kind in "US":
        return str(value.ravel()[0]) if value.size else ""
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return np.asarray(value, np.float64)
    return value


def declared_options(cnnbp_m: Path) -> frozenset:
    match = re.search(r"OPTIONS\s*=\s*\{([^}]*)\}", cnnbp_m.read_text(errors="replace"))
    return frozenset(re.findall(r"['\"](\w+)['\"]", match.group(1))) if match else frozenset()


class OctaveSubject:
    """The user's `cnnbp.m` (and what else the folder has), run once by Octave on every case."""

    def __init__(self, folder: Path):
        self.folder = folder.resolve()
        if not (self.folder / "cnnbp.m").is_file():
            raise CheckUsageError(f"{folder}: no cnnbp.m in this folder")
        self.exe = shutil.which("octave-cli")
        if self.exe is None:
            raise CheckUsageError(INSTALL)
        self.name = str(folder)
        self.options = declared_options(self.folder / "cnnbp.m")
        self.cnnff = True if (self.folder / "cnnff.m").is_file() else None
        self.blocks = {name: True for name in BLOCKS if (self.folder / f"{name}.m").is_file()}
        self._results = None
        self._trials = []

    def prepare(self, cases, block_trials):
        """Run Octave once: the blocks' trials, then cnnff (when the folder has one) and cnnbp on every case."""
        import scipy.io

        self._trials = [(name, i) for name, trials in block_trials.items() if name in self.blocks
                        for i in range(len(trials))]
        with tempfile.TemporaryDirectory(prefix="jaxcnn-check-") as tmp:
            tmp = Path(tmp)
            scipy.io.savemat(tmp / "blocks.mat", {
                "block_names": _cell([name for name, _ in self._trials]),
                "block_args": _cell([_cell([a if isinstance(a, str) else np.asarray(a, np.float64)
                                            for a in block_trials[name][i][0]]) for name, i in self._trials]),
            })
            for c, case in enumerate(cases, start=1):
                scipy.io.savemat(tmp / f"case{c}.mat", {"net": _to_mat(user_net(case)),
                                                        "net0": _to_mat(user_net(case, with_forward=False)),
                                                        "x": case.x[0], "y": case.y})
            driver = DRIVER.format(helpers=_octave_string(HELPERS), user=_octave_string(self.folder),
                                   ncases=len(cases), cnnff="true" if self.cnnff else "false")
            (tmp / "jaxcnn_check_driver.m").write_text(driver)
            try:
                run = subprocess.run([self.exe, "--no-gui", "--quiet", "--no-window-system", "--norc",
                                      "jaxcnn_check_driver.m"], cwd=tmp, capture_output=True, text=True,
                                     timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise UserCodeError(f"Octave did not finish in {TIMEOUT_S} s (an endless loop in {self.name}?)") from None
            error = (tmp / "error.txt").read_text() if (tmp / "error.txt").is_file() else None
            results = {"block": [], "cnnff": [], "cnnbp": [], "error": None}
            if error is not None:
                stage, message = error.split("\n", 1)
                results["error"] = (stage, f"Octave error: {message.strip()}")
            elif run.returncode != 0:
                tail = (run.stderr.strip().splitlines() or ["(no output)"])[-1]
                results["error"] = ("block", f"Octave exited with status {run.returncode}: {tail}")

            def load(name, var="res"):
                return _from_mat(scipy.io.loadmat(tmp / name, struct_as_record=False)[var])
            for t in range(1, len(self._trials) + 1):
                if (tmp / f"block{t}.mat").is_file():
                    results["block"].append(load(f"block{t}.mat", "result"))
            for c in range(1, len(cases) + 1):
                if (tmp / f"ff{c}.mat").is_file():
                    results["cnnff"].append(load(f"ff{c}.mat"))
                if (tmp / f"bp{c}.mat").is_file():
                    results["cnnbp"].append(load(f"bp{c}.mat"))
        self._results = results

    def _stage(self, stage):
        error = self._results["error"]
        order = ["block", "cnnff", "cnnbp"]
        if error and order.index(error[0]) <= order.index(stage):
            raise UserCodeError(error[1])
        return self._results[stage]

    def run_cnnbp(self, cases):
        return self._stage("cnnbp")

    def run_cnnff(self, cases):
        return self._stage("cnnff")

    def run_block(self, name, index, args):
        return self._stage("block")[self._trials.index((name, index))]
