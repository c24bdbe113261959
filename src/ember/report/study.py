"""The report of an `ember tune` study directory: optimization history, parameter importances,
parallel coordinates and the leaderboard, from the files the study writes (study.json,
history.csv, leaderboard.csv); Optuna is not needed to read them.
"""

import csv
import json
import os
from pathlib import Path

from ember.errors import CheckpointError, first_line
from ember.report.markup import Page, esc, fmt, notes_html, table, when


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
    """The page of a study: its charts, the leaderboard (linking each trial's own report, relative
    to `out`, the page's path) and the search space."""
    path = Path(path)
    info = read_study(path)
    history = _rows(path / "history.csv")
    leaderboard = _rows(path / "leaderboard.csv")
    page = Page(f"ember study: {info.get('name', path.name)}")
    notes = []
    if not history:
        notes.append("history.csv is missing or empty: no trial has been reported yet (ember tune --status writes it)")
    axes = _axes(info.get("space") or {})
    charts = _study_charts(page, info, history, axes)
    board = _leaderboard_html(leaderboard, info.get("metric", "value"), out)
    header = _study_header(info, path, notes)
    space = table(
        [[a["key"], _describe(a, (info.get("space") or {}).get(a["key"]))] for a in axes],
        ["key", "searched over"],
        align=False,
    )
    sections = [("study", "Study", charts), ("leaderboard", "Leaderboard", board), ("space", "Search space", space)]
    return page.render(header, sections)


def _study_charts(page: Page, info: dict, history: list[dict], axes: list[dict]) -> str:
    """Optimization history, parameter importances and parallel coordinates: those there is data for."""
    metric, direction = info.get("metric", "value"), info.get("direction", "minimize")
    complete = [r for r in history if r.get("state") == "complete" and isinstance(r.get("value"), (int, float))]
    charts = []
    if history:
        charts.append(_history_chart(page, history, complete, metric, direction))
    importances = (info.get("results") or {}).get("importances") or {}
    if importances:
        charts.append(_importances_chart(page, importances))
    if complete and axes:
        charts.append(_parallel_chart(page, complete, axes, metric, direction == "maximize"))
    return '<div class="grid">' + "".join(charts) + "</div>" if charts else "<p class=muted>No trials yet.</p>"


def _history_chart(page: Page, history: list[dict], complete: list[dict], metric: str, direction: str) -> str:
    """Each complete trial's value, and the best so far over all trials."""
    trials = [[r["trial"], r["value"]] for r in complete]
    best = [[r["trial"], r["best_value"]] for r in history if isinstance(r.get("best_value"), (int, float))]
    series = [
        {"name": "best so far", "points": best, "colorIndex": 1},
        {"name": "trial", "points": trials, "markers": True, "colorIndex": 0},
    ]
    return page.chart(
        {"type": "line", "series": series, "xlabel": "trial", "ylabel": metric},
        "optimization history",
        f"{direction} {metric}",
    )


def _importances_chart(page: Page, importances: dict) -> str:
    names = sorted(importances, key=importances.get, reverse=True)
    spec = {
        "type": "bars",
        "labels": names,
        "series": [{"name": "importance", "values": [importances[n] for n in names]}],
        "ymax": 1,
        "xlabel": "parameter",
        "ylabel": "importance",
    }
    return page.chart(spec, "parameter importances", "fANOVA, share of the metric's variance")


def _parallel_chart(page: Page, complete: list[dict], axes: list[dict], metric: str, maximize: bool) -> str:
    rows = [{"trial": r["trial"], metric: r["value"], **{a["key"]: r.get(a["key"]) for a in axes}} for r in complete]
    spec = {"type": "parallel", "axes": axes + [{"key": metric}], "rows": rows, "metric": metric, "maximize": maximize}
    return page.chart(spec, "parallel coordinates", "one line per complete trial, darker is better")


def _leaderboard_html(leaderboard: list[dict], metric: str, out: Path) -> str:
    """The leaderboard as a sortable table, and links to the reports of its first 20 trials that
    have one, relative to the study's page at `out`."""
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
    return board


def _study_header(info: dict, path: Path, notes: list[str]) -> str:
    """The study's name, what it optimizes and how, its trials by state, the best trial and its notes."""
    metric, direction = info.get("metric", "value"), info.get("direction", "minimize")
    results = info.get("results") or {}
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
    return (
        f'<header><h1>study {esc(info.get("name", path.name))}</h1><div class="sub">{esc(sub)}'
        f'</div><div class="sub">{esc(best_text)}</div><div class="sub">{esc(path)}</div>{notes_html(notes)}</header>'
    )
