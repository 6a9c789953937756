"""`jaxcnn check PATH --report FILE`: one self-contained page of a check's result — the verdict and the
diagnosis, the quantities in backward order, then for each failing quantity the user's maps beside the
lecture's and their difference, all three on one diverging scale (red positive, blue negative).

Arrays are drawn as MATLAB shows them (row 1 at the top), which for the toolbox's maps is the image
transposed, since the toolbox stores every image transposed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import fileio
from . import figures
from .page import Html, document, escape, figure, join, note, row, section
from .tables import rows_table, value


def _panels(entries, worst):
    """2-D panels of one quantity in one case and their titles: each map j (or kernel i, j) of the sample
    holding the worst entry, or the array itself."""
    sample = worst.get("index", (0, 0, 0))
    panels, titles = [], []
    for where, array in entries:
        a = np.asarray(array, np.float64)
        if a.ndim == 3:
            a = a[:, :, sample[2] if len(sample) > 2 else 0]
        panels.append(np.atleast_2d(a) if a.ndim < 2 else a)
        titles.append("{" + "}{".join(map(str, where)) + "}" if where else "")
    return panels, titles


def _same_size(panels):
    return len({p.shape for p in panels}) == 1


def failing_figures(result) -> list:
    """For each failing quantity with numbers to draw: (label, caption text, three data URIs)."""
    out = []
    for q in result.quantities:
        if q.passed or q.problem or q.label not in result.details or q.name == "L":
            continue
        case = q.worst["case"]
        got, want = next((g, w) for c, g, w in result.details[q.label] if c.name == case)
        got_panels, titles = _panels([(where, np.reshape(np.asarray(g, np.float64), np.shape(w))) for (where, g), (_, w)
                                      in zip(got, want)], q.worst)
        want_panels, _ = _panels(want, q.worst)
        if not _same_size(want_panels):
            continue
        diff = [g - w for g, w in zip(got_panels, want_panels)]
        limit = figures.symmetric_limit(got_panels + want_panels + diff)
        cols = min(len(want_panels), 12)
        uris = [figures.maps_png(p, titles, limit=limit, cols=cols) for p in (got_panels, want_panels, diff)]
        sample = q.worst.get("index", ())
        of_sample = f", sample n = {sample[2] + 1}" if len(sample) > 2 else ""
        out.append((q.label, f"case: {case}{of_sample}; scale ±{limit:.3g}", uris))
    return out


def render(result) -> str:
    verdict_cls = "pass" if result.passed else "fail"
    verdict_word = "correct" if result.passed else ("raised an exception" if result.error else "wrong")
    verdict = [Html(f'<p id="verdict" class="{verdict_cls}">{escape(verdict_word)}</p>'),
               Html(f'<pre style="white-space: pre-wrap">{escape(result.verdict())}</pre>')]
    body = [section("s-verdict", "Verdict", join(verdict))]
    if not result.passed:
        if result.diagnosis:
            items = []
            for d in result.diagnosis:
                parts = [Html(f'<h3 class="mistake">{escape(" + ".join(d["mistakes"]))}</h3>'),
                         Html(f"<p>every output equals this mistake's to 1e-10 (max |difference| "
                              f"{value('v-diag-' + '-'.join(d['mistakes']), d['max_abs'], 3)})</p>")]
                for explanation, fix in zip(d["explanations"], d["fix"]):
                    parts += [Html(f"<p>{escape(explanation)}</p>"), Html(f'<pre class="fix">fix {escape(fix)}</pre>')]
                items.append(join(parts))
            body.append(section("s-diagnosis", "Diagnosis", join(items)))
        else:
            body.append(section("s-diagnosis", "Diagnosis", note(
                "No mistake of the catalogue, and no pair of them, gives these numbers: start from the first failure."
                if not result.error else "The code raised before it could be compared.")))
    rows = [[q.label, q.stage, value(f"v-abs-{n}", q.max_abs, 3) if np.isfinite(q.max_abs) else "-",
             value(f"v-rel-{n}", q.max_rel, 3) if np.isfinite(q.max_rel) else "-",
             Html(f'<span class="{"pass" if q.passed else "fail"}">{"pass" if q.passed else "FAIL"}</span>'),
             q.problem or ""] for n, q in enumerate(result.quantities)]
    body.append(section("s-quantities", "Quantities, in the order the backward pass makes them", rows_table(
        ["quantity", "stage", "max abs", "max rel", "result", "problem"], rows, "t-quantities",
        f"float64, pass at max rel ≤ {result.tolerance:g}; cases: {'; '.join(result.cases)}")))
    panels = []
    for label, caption, (got, want, diff) in failing_figures(result):
        panels.append(Html(f'<h3 class="quantity">{escape(label)}</h3><p>{escape(caption)}</p>'))
        panels.append(row([figure(got, f"{label}: yours"), figure(want, f"{label}: the lecture's"),
                           figure(diff, f"{label}: yours − the lecture's")]))
    if panels:
        body.append(section("s-maps", "Failing quantities: yours, the lecture's, the difference", join(panels)))
    return document(f"jaxcnn check: {result.subject}", join(body))


def write(result, path) -> Path:
    """Write the page atomically; returns its path."""
    path = Path(path)
    fileio.atomic_write_text(path, render(result))
    return path
