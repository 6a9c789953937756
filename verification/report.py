"""`jaxcnn verify`: run every check and print check, max abs error, max rel error, tolerance, pass/fail
(or "exact" for the symbolic group's identities)."""
from __future__ import annotations

import math
import sys
import time


def _fmt(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2e}"


def _tolerance(row) -> str:
    return "none (sympy)" if row.kind == "exact" else f"{row.kind} {_fmt(row.tol):>8}"


def _result(row) -> str:
    """pass/FAIL; a symbolic row (kind "exact": its difference expanded to 0) says "exact"."""
    if not row.passed:
        return "FAIL"
    return "exact" if row.kind == "exact" else "pass"


def main(golden=None) -> int:
    from jaxcnn.verification.checks import all_checks

    started = time.perf_counter()
    groups = all_checks(golden)
    width = max(len(row.check) for _, rows in groups for row in rows)
    failed = 0
    print(f"{'check':<{width}}  {'max abs':>9}  {'max rel':>9}  {'tol':>12}  result")
    for title, rows in groups:
        print(f"-- {title}")
        for row in rows:
            failed += not row.passed
            print(f"{row.check:<{width}}  {_fmt(row.max_abs):>9}  {_fmt(row.max_rel):>9}  "
                  f"{_tolerance(row):>12}  {_result(row)}")
    total = sum(len(rows) for _, rows in groups)
    print(f"{total - failed} passed, {failed} failed in {time.perf_counter() - started:.1f} s (float64)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
