"""The skeleton every jaxcnn page shares: escaping, the Content-Security-Policy, the stylesheet, figures, sections.

Escaping is the default: `Html` marks markup these modules built, and `escape` turns anything else (a
string from a run folder: an array name, a config value, a path) into text. Pages have no JavaScript;
the CSP forbids every outside load.
"""
from __future__ import annotations

import html
from string import Template

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


class Html(str):
    """A string of markup that is safe as it is (built by the page modules from escaped parts)."""


def escape(text) -> Html:
    """`text` as HTML text: markup (`Html`) is kept, anything else is escaped (quotes too, for attributes)."""
    return text if isinstance(text, Html) else Html(html.escape(str(text), quote=True))


def join(parts, sep: str = "\n") -> Html:
    """Parts (markup or text) joined into one piece of markup; text parts are escaped."""
    return Html(sep.join(escape(p) for p in parts))


def img(uri: str, alt: str) -> Html:
    """An <img> of a data URI (only `data:` URIs load under the CSP)."""
    if not uri.startswith("data:"):
        raise ValueError("a page image must be a data: URI")
    return Html(f'<img src="{escape(uri)}" alt="{escape(alt)}">')


def figure(uri: str, caption, cls: str = "") -> Html:
    """A figure with its caption visible under it (and as the image's alt text)."""
    text = html.unescape(str(caption)) if isinstance(caption, Html) else str(caption)
    attr = f' class="{escape(cls)}"' if cls else ""
    return Html(f"<figure{attr}>{img(uri, text)}<figcaption>{escape(caption)}</figcaption></figure>")


def row(parts) -> Html:
    """Figures or tables side by side, wrapping on a narrow page."""
    return Html(f'<div class="row">{join(parts, "")}</div>')


def section(section_id: str, heading: str, body, tag: str = "section") -> Html:
    return Html(f'<{tag} id="{escape(section_id)}"><h2>{escape(heading)}</h2>{escape(body)}</{tag}>')


def collapsible(summary: str, body, open_: bool = True) -> Html:
    return Html(f"<details{' open' if open_ else ''}><summary>{escape(summary)}</summary>{escape(body)}</details>")


def note(text, cls: str = "missing") -> Html:
    """A highlighted paragraph: something the page cannot show, and why."""
    return Html(f'<p class="{escape(cls)}">{escape(text)}</p>')


STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 1em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #bbb; margin-top: 1.6em; } h3 { font-size: 1em; margin: 1em 0 .3em; }
h4 { font-size: .9em; font-weight: normal; margin: .6em 0 .2em; }
img { max-width: 100%; height: auto; }
figure { margin: .3em 0; } figcaption { font-size: 12px; color: #444; }
.row { display: flex; flex-wrap: wrap; gap: 1.2em; align-items: flex-start; }
table { border-collapse: collapse; margin: .4em 0; font-size: 12px; }
caption { font-size: 12px; text-align: left; padding-bottom: .2em; }
table.num td { border: 1px solid #ddd; padding: 1px 4px; text-align: right; font-variant-numeric: tabular-nums; }
table.num td.hl { background: #fee08b; }
table.rows th, table.rows td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; }
.pass { color: #1a7f37; font-weight: bold; } .fail { color: #b2182b; font-weight: bold; }
.nc { color: #8c510a; font-weight: bold; }
.missing { background: #fff4e5; border-left: 4px solid #e08214; padding: .4em .8em; }
.eq { font-family: ui-monospace, monospace; }
.gallery { display: flex; flex-wrap: wrap; gap: .6em; }
.gallery figure { margin: 0; width: 110px; font-size: 11px; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; }
details { margin: .4em 0; } summary { cursor: pointer; font-weight: bold; }
@media print { body { max-width: none; } details { display: block; } h2 { break-after: avoid; } img { break-inside: avoid; } }
"""

DOCUMENT = Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="$csp">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>$style</style></head>
<body>
<h1>$title</h1>
$body
</body></html>
""")


def document(title: str, body) -> str:
    """A whole self-contained page: `title` (text) as <title> and <h1>, then `body`."""
    return DOCUMENT.substitute(csp=CSP, title=escape(title), style=STYLE, body=escape(body))
