"""How a run looks in a Jupyter notebook: its final metrics as a table and its loss curves inline,
instead of a wall of text. `ember.fit`'s Result and `ember.load_run`'s run render through
`run_html`; the curves are a small SVG drawn from `metrics.jsonl`, so nothing else is needed.
"""

import html
import json
from pathlib import Path

WIDTH, HEIGHT, PAD = 460, 200, 36
COLORS = {"train": "#1f77b4", "val": "#ff7f0e"}


def run_html(title: str, metrics: dict[str, float], run_dir: Path | None) -> str:
    """A heading, the split x metric table of `metrics` (`split/name` keys) and the loss curves."""
    splits = list(dict.fromkeys(k.split("/", 1)[0] for k in metrics if "/" in k))
    names = list(dict.fromkeys(k.split("/", 1)[1] for k in metrics if "/" in k))
    head = "".join(f"<th>{html.escape(s)}</th>" for s in splits)
    rows = "".join(
        f"<tr><td>{html.escape(n)}</td>"
        + "".join(f"<td style='text-align:right'>{_fmt(metrics.get(f'{s}/{n}'))}</td>" for s in splits)
        + "</tr>"
        for n in names
    )
    table = f"<table><thead><tr><th>metric</th>{head}</tr></thead><tbody>{rows}</tbody></table>"
    where = f"<div style='color:#666'>{html.escape(str(run_dir))}</div>" if run_dir else ""
    curves = loss_svg(read_records(run_dir)) if run_dir else ""
    return (
        f"<div><b>{html.escape(title)}</b>{where}<div style='display:flex;gap:24px;align-items:flex-start'>"
        f"{table}{curves}</div></div>"
    )


def read_records(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a kill: the rest still draw
    return records


def loss_svg(records: list[dict]) -> str:
    """Train and validation loss against step, as an inline SVG line chart."""
    series = {
        s: [(r["step"], r["loss"]) for r in records if r.get("split") == s and isinstance(r.get("loss"), (int, float))]
        for s in COLORS
    }
    points = [p for pts in series.values() for p in pts]
    if len(points) < 2:
        return ""
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    sx = (WIDTH - 2 * PAD) / ((x1 - x0) or 1)
    sy = (HEIGHT - 2 * PAD) / ((y1 - y0) or 1)
    lines = []
    for name, pts in series.items():
        if pts:
            path = " ".join(f"{PAD + (x - x0) * sx:.1f},{HEIGHT - PAD - (y - y0) * sy:.1f}" for x, y in pts)
            lines.append(f"<polyline fill='none' stroke='{COLORS[name]}' stroke-width='1.5' points='{path}'/>")
            lines.append(
                f"<text x='{WIDTH - PAD}' y='{PAD - 8 + 14 * list(COLORS).index(name)}' fill='{COLORS[name]}' "
                f"font-size='11' text-anchor='end'>{name} loss</text>"
            )
    axes = (
        f"<line x1='{PAD}' y1='{HEIGHT - PAD}' x2='{WIDTH - PAD}' y2='{HEIGHT - PAD}' stroke='#999'/><line x1='{PAD}' "
        f"y1='{PAD}' x2='{PAD}' y2='{HEIGHT - PAD}' stroke='#999'/>"
        f"<text x='{PAD}' y='{HEIGHT - 12}' font-size='11'>step {x0}</text><text x='{WIDTH - PAD}' y='{HEIGHT - 12}' "
        f"font-size='11' text-anchor='end'>{x1}</text>"
        f"<text x='4' y='{PAD}' font-size='11'>{_fmt(y1)}</text><text x='4' y='{HEIGHT - PAD}' "
        f"font-size='11'>{_fmt(y0)}</text>"
    )
    return f"<svg width='{WIDTH}' height='{HEIGHT}' xmlns='http://www.w3.org/2000/svg'>{axes}{''.join(lines)}</svg>"


def _fmt(v) -> str:
    if v is None:
        return ""
    return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))
