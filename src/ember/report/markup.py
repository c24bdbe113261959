"""The building blocks of every report page: escaping and number formats, the Page that collects
the charts and writes the document (its CSS, script and data inline, nothing fetched), tables and
notes. Run pages, comparisons, studies and the evaluation panels are all written from these.
"""

import html
import json
import math
from datetime import datetime
from importlib import resources


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value).lower()
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.4g}" if value == 0 or 1e-3 <= abs(value) < 1e6 else f"{value:.3e}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def duration(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "–"
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} m {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} m"


def when(ts) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if isinstance(ts, (int, float)) else "–"


def clean_json(obj):
    """JSON for JSON.parse: NaN and infinities become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    return obj


# Inside <script>, the HTML parser still looks for `</script`, and `<!--` followed by `<script`
# switches it into a state where the real `</script>` no longer ends the element (a class named
# "<!--<script>" blanked every chart). U+2028/U+2029 end lines in older JavaScript. JSON escapes
# for all five leave no markup in the blob and parse back to the same strings.
_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(obj) -> str:
    """JSON for the inside of a <script> element: no character the HTML parser reacts to."""
    text = json.dumps(obj, allow_nan=False, separators=(",", ":"))
    return text.translate(str.maketrans(_SCRIPT_ESCAPES))


# Errors are caught from the first line on, so the browser tests see every one.
_CATCH_ERRORS = (
    "window.__emberErrors=[];"
    "window.addEventListener('error',function(e){window.__emberErrors.push(String(e.message))});"
    "(function(){var ce=console.error;console.error=function(){"
    "window.__emberErrors.push(Array.prototype.join.call(arguments,' '));ce.apply(console,arguments)}})();"
)


class Page:
    """Collects charts (id -> spec) while the sections are written."""

    def __init__(self, title: str):
        self.title = title
        self.charts: dict[str, dict] = {}

    def chart(self, spec: dict, caption: str, note: str = "") -> str:
        cid = f"c{len(self.charts) + 1}"
        self.charts[cid] = spec
        small = f" <small>{esc(note)}</small>" if note else ""
        return (
            f'<figure class="chart" data-chart="{cid}"><figcaption>{esc(caption)}{small}</figcaption>'
            '<div class="chart-body"></div></figure>'
        )

    def render(self, header: str, sections: list[tuple[str, str, str]]) -> str:
        css = resources.files("ember.report").joinpath("assets/report.css").read_text()
        js = resources.files("ember.report").joinpath("assets/report.js").read_text()
        nav = "".join(f'<a href="#{sid}">{esc(name)}</a>' for sid, name, _ in sections)
        body = "".join(
            f'<section id="{sid}"><h2>{esc(name)}</h2>{content}</section>' for sid, name, content in sections
        )
        data = script_json(clean_json({"charts": self.charts}))
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(self.title)}</title><style>{css}</style><script>{_CATCH_ERRORS}</script></head>"
            f"<body>{header}<nav>{nav}</nav><main>{body}</main>"
            f'<script type="application/json" id="ember-data">{data}</script>'
            f"<script>{js}</script></body></html>\n"
        )


def table(
    rows: list[list],
    head: list[str] | None = None,
    sortable: bool = False,
    numeric: set[int] = frozenset(),
    align: bool = True,
) -> str:
    cls = ' class="sortable"' if sortable else ""
    out = [f'<div class="scroll"><table{cls}>']
    if head:
        out.append(
            "<thead><tr>"
            + "".join(f"<th{' class=num' if i in numeric else ''}>{esc(h)}</th>" for i, h in enumerate(head))
            + "</tr></thead>"
        )
    out.append("<tbody>")
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            if align and isinstance(cell, (int, float)) and not isinstance(cell, bool):
                v = f' data-v="{cell}"' if isinstance(cell, int) or math.isfinite(cell) else ""
                cells.append(f'<td class="num"{v}>{esc(fmt(cell))}</td>')
            else:
                cells.append(f"<td>{esc(fmt(cell))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def notes_html(lines: list[str]) -> str:
    return "".join(f'<div class="note">{esc(line)}</div>' for line in lines)
