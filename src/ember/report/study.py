"""The report of an `ember tune` study directory: optimization history, parameter importances,
parallel coordinates and the leaderboard, from the files the study writes (study.json,
history.csv, leaderboard.csv); Optuna is not needed to read them.
"""

import csv
import json
import os
from pathlib import Path

from ember.errors import CheckpointError, first_line
from ember.report.page import Page, esc, fmt, table, when


def is_study(path: Path) -> bool:
    return (Path(path) / "study.json").is_file()


def read_study(path: Path) -> dict:
    """A study's study.json (the one place it is read: ember tune, its --status, ember report)."""
    p = Path(path) / "study.json"
    try:
        info = json.loads(p.read_text())
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        info = first_line(e)
    if not isinstance(info, dict) or not isinstance(info.get("overrides"), list):
        why = info if isinstance(info, str) else "not a JSON object with the study's overrides"
        raise CheckpointError(
            f"{str(p)!r} is damaged ({why}); restore it from a copy, or start the study again in a new run.dir"
        )
    return info


def _value(text: str):
    if text in ("", None):
        return None
    try:
        v = float(text)
    except ValueError:
        return text
    return int(v) if v.is_integer() and "." not in text and "e" not in text.lower() else v


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [{k: _value(v) for k, v in row.items()} for row in csv.DictReader(path.read_text().splitlines())]


def _axes(space: dict) -> list[dict]:
    axes = []
    for key, dist in space.items():
        try:
            attrs = (
                json.loads(dist).get("attributes", {}) if isinstance(dist, str) else (dist or {}).get("attributes", {})
            )
        except ValueError:
            attrs = {}
        if "choices" in attrs:
            axes.append({"key": key, "choices": [str(c) for c in attrs["choices"]]})
        else:
            axes.append({"key": key, "log": bool(attrs.get("log"))})
    return axes


def _describe(axis: dict, dist) -> str:
    if axis.get("choices"):
        return "one of: " + ", ".join(axis["choices"])
    try:
        a = json.loads(dist).get("attributes", {}) if isinstance(dist, str) else {}
    except ValueError:
        a = {}
    if "low" not in a:
        return str(dist)
    kind = "int" if "Int" in str(dist) else "float"
    extra = (", log scale" if a.get("log") else "") + (f", step {a['step']}" if a.get("step") else "")
    return f"{kind} from {fmt(a['low'])} to {fmt(a['high'])}{extra}"


def study_page(path: Path, out: Path) -> str:
    path = Path(path)
    info = read_study(path)
    metric, direction = info.get("metric", "value"), info.get("direction", "minimize")
    history = _rows(path / "history.csv")
    leaderboard = _rows(path / "leaderboard.csv")
    results = info.get("results") or {}
    page = Page(f"ember study: {info.get('name', path.name)}")
    notes = []
    if not history:
        notes.append("history.csv is missing or empty: no trial has been reported yet (ember tune --status writes it)")

    complete = [r for r in history if r.get("state") == "complete" and isinstance(r.get("value"), (int, float))]
    charts = []
    if history:
        trials = [[r["trial"], r["value"]] for r in complete]
        best = [[r["trial"], r["best_value"]] for r in history if isinstance(r.get("best_value"), (int, float))]
        series = [
            {"name": "best so far", "points": best, "colorIndex": 1},
            {"name": "trial", "points": trials, "markers": True, "colorIndex": 0},
        ]
        charts.append(
            page.chart(
                {"type": "line", "series": series, "xlabel": "trial", "ylabel": metric},
                "optimization history",
                f"{direction} {metric}",
            )
        )
    importances = results.get("importances") or {}
    if importances:
        names = sorted(importances, key=importances.get, reverse=True)
        spec = {
            "type": "bars",
            "labels": names,
            "series": [{"name": "importance", "values": [importances[n] for n in names]}],
            "ymax": 1,
            "xlabel": "parameter",
            "ylabel": "importance",
        }
        charts.append(page.chart(spec, "parameter importances", "fANOVA, share of the metric's variance"))
    axes = _axes(info.get("space") or {})
    if complete and axes:
        rows = [
            {"trial": r["trial"], metric: r["value"], **{a["key"]: r.get(a["key"]) for a in axes}} for r in complete
        ]
        spec = {
            "type": "parallel",
            "axes": axes + [{"key": metric}],
            "rows": rows,
            "metric": metric,
            "maximize": direction == "maximize",
        }
        charts.append(page.chart(spec, "parallel coordinates", "one line per complete trial, darker is better"))
    curves = '<div class="grid">' + "".join(charts) + "</div>" if charts else "<p class=muted>No trials yet.</p>"

    head = [k for k in (leaderboard[0].keys() if leaderboard else []) if k != "run_dir"]
    rows = [[r.get(k, "") if r.get(k) is not None else "" for k in head] for r in leaderboard]
    board = table(rows, head, sortable=True) if rows else "<p class=muted>No leaderboard yet.</p>"
    links = []
    for r in leaderboard[:20]:
        own = Path(str(r.get("run_dir") or "")) / "report.html"
        if r.get("run_dir") and own.is_file():
            links.append(
                f'<li><a href="{esc(os.path.relpath(own.resolve(), Path(out).resolve().parent))}">trial '
                f"{esc(r['trial'])}</a> ({esc(r.get('state', ''))}, {esc(fmt(r.get(metric)))})</li>"
            )
    if links:
        board += "<h3>Trial reports</h3><ul>" + "".join(links) + "</ul>"

    tally = ", ".join(f"{n} {s}" for s, n in (results.get("trials") or {}).items() if n)
    best = results.get("best") or {}
    best_text = (
        f"best: trial {best.get('trial')}, {metric} {fmt(best.get('value'))}, "
        + ", ".join(f"{k}={fmt(v)}" for k, v in (best.get("params") or {}).items())
        if best
        else "no complete trial yet"
    )
    sub = (
        f"{direction} {metric} · {info.get('sampler', '?')} sampler, {info.get('pruner', '?')} pruner · created "
        f"{when(info.get('created'))} · {tally}"
    )
    note_html = "".join(f'<div class="note">{esc(n)}</div>' for n in notes)
    header = (
        f'<header><h1>study {esc(info.get("name", path.name))}</h1><div class="sub">{esc(sub)}'
        f'</div><div class="sub">{esc(best_text)}</div><div class="sub">{esc(path)}</div>{note_html}</header>'
    )
    space = table(
        [[a["key"], _describe(a, (info.get("space") or {}).get(a["key"]))] for a in axes],
        ["key", "searched over"],
        align=False,
    )
    sections = [("study", "Study", curves), ("leaderboard", "Leaderboard", board), ("space", "Search space", space)]
    return page.render(header, sections)
