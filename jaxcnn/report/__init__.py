"""`jaxcnn report RUN_DIR`: one self-contained HTML page that follows one test image through a trained net.

The package is split by concern so that other pages can share its machinery:
`page` (skeleton, escaping, CSP), `figures` (PNG data URIs, diverging scales), `tables`, `run_folder`
(reading a run), `analysis` (the delta rule on one image, the proof rows, the test-set evaluation: computed
once, then passed to the renderers), `arithmetic` (section 4) and `run_page` (the run page's sections).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .. import fileio
from . import analysis, arithmetic, run_page
from .run_folder import ReportError, Run, load_run

__all__ = ["Report", "ReportError", "build", "write", "load_run"]


@dataclasses.dataclass
class Report:
    html: str
    analysis: analysis.Analysis
    arithmetic: dict          # the values section 4's tables show
    proof: list               # the proof table's rows
    run: Run


def build(run_dir, image_index: int = 0) -> Report:
    """The report of the run in `run_dir` on test image `image_index`, as a page and the values it shows."""
    run = load_run(run_dir)
    image, label = run.test_image(image_index)
    an = analysis.analyse(run.net, image, label)
    section4, values = arithmetic.arithmetic_section(an)
    proof = analysis.proof_rows(an)
    results = analysis.evaluate_test_set(run.net, run.dataset, run_page.GALLERY)
    page = run_page.render(run, image_index, an, section4, proof, results)
    return Report(page, an, values, proof, run)


def write(run_dir, image_index: int = 0, out=None) -> tuple[Path, Report]:
    """Build the report and write it (default RUN_DIR/report.html) atomically."""
    out = Path(out) if out else Path(run_dir) / "report.html"
    report = build(run_dir, image_index)
    fileio.atomic_write_text(out, report.html)
    return out, report
