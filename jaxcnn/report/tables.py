"""Numbers as HTML tables: a 2-D array with its exact values (what the tests read), and rows of text."""
from __future__ import annotations

import numpy as np

from .page import Html, escape


def numbers_table(array, table_id: str, caption: str, highlight=None) -> Html:
    """A 2-D array as a table; each cell shows 4 significant digits and carries the exact value in `data-v`
    (what the tests compare). `highlight`: a boolean mask of cells to mark."""
    array = np.atleast_2d(np.asarray(array, np.float64))
    rows = []
    for i, values in enumerate(array):
        cells = "".join(f'<td data-v="{v!r}"{" class=hl" if highlight is not None and highlight[i, j] else ""}>'
                        f"{v:.4g}</td>" for j, v in enumerate(values.tolist()))
        rows.append(f"<tr>{cells}</tr>")
    return Html(f'<table class="num" id="{escape(table_id)}"><caption>{escape(caption)}</caption>'
                f'<tbody>{"".join(rows)}</tbody></table>')


def rows_table(header, rows, table_id: str, caption: str = "") -> Html:
    """A table of cells: text is escaped, `Html` cells are kept as markup."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return Html(f'<table class="rows" id="{escape(table_id)}">{cap}<thead><tr>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table>")


def value(span_id: str, x: float, digits: int = 6) -> Html:
    """One number in running text, with its exact value in `data-v`."""
    return Html(f'<span id="{escape(span_id)}" data-v="{float(x)!r}">{float(x):.{digits}g}</span>')
