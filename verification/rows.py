"""One row of the verification table: what was compared, the errors measured, and the tolerance that decides it."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Row:
    check: str
    max_abs: float
    max_rel: float
    tol: float
    kind: str = "rel"          # which error the tolerance applies to: "rel" or "abs"
    ok: bool | None = None     # for pass/fail checks that measure no error of their own

    @property
    def passed(self) -> bool:
        if self.ok is not None:
            return self.ok
        value = self.max_rel if self.kind == "rel" else self.max_abs
        return bool(np.isfinite(value) and value <= self.tol)
