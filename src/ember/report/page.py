"""The HTML of a run's report and of the comparison of several runs: one file, its CSS, script
and data inline, nothing fetched.

Python decides what to show and hands each chart to the page as JSON (`charts`); the inline
script (assets/report.js) draws them as SVG. Tables, notes, config and images are plain HTML.
The building blocks (Page, table, formats) are in markup.py; the sections that score the model
(evaluation, rollout, baselines) in evaluation_panels.py.
"""

import json
from pathlib import Path

import yaml

from ember.report.collect import RunData, curves, status_note
from ember.report.evaluation_panels import baselines_section, evaluation_section, rollout_section
from ember.report.markup import Page, duration, esc, fmt, notes_html, table, when
from ember.track import flatten

FIRST = ["loss"]
LAST = ["lr", "samples_per_s", "data_wait", "grad_norm", "step_ms", "peak_mem_mb", "mfu"]
TITLES = {
    "loss": "loss",
    "lr": "learning rate",
    "samples_per_s": "throughput (samples/s)",
    "data_wait": "data wait (share of time)",
    "grad_norm": "gradient norm",
    "step_ms": "step time (ms)",
    "peak_mem_mb": "peak memory (MiB)",
    "mfu": "model FLOP utilization",
}
SPLIT_STYLE = {"train": (0, False), "val": (1, True), "test": (2, False)}


def metric_order(names) -> list[str]:
    names = list(dict.fromkeys(names))
    middle = [n for n in names if n not in FIRST and n not in LAST]
    return [n for n in FIRST if n in names] + middle + [n for n in LAST if n in names]


def curve_charts(page: Page, runs: list[RunData]) -> str:
    """One chart per metric; series per split, and per run when there are several."""
    data = [curves(r.records) for r in runs]
    names = metric_order(n for d in data for n in d)
    figures = []
    for name in names:
        series = []
        for i, (run, d) in enumerate(zip(runs, data)):
            by_split = d.get(name) or {}
            for split in sorted(by_split, key=lambda sp: (SPLIT_STYLE.get(sp, (9,))[0], sp)):
                points = by_split[split]
                color, dash = SPLIT_STYLE.get(split, (3, False))
                label = split if len(runs) == 1 else f"{run.label} {split}"
                series.append(
                    {"name": label, "points": points, "colorIndex": i if len(runs) > 1 else color, "dash": dash}
                )
        if not series:
            continue
        spec = {
            "type": "line",
            "series": series,
            "xlabel": "step",
            "ylabel": TITLES.get(name, name),
            "logy": name == "loss",
        }
        figures.append(page.chart(spec, TITLES.get(name, name)))
    if not figures:
        return "<p class=muted>No metrics were logged.</p>"
    return '<div class="grid">' + "".join(figures) + "</div>"


def model_section(model: dict | None, summary: dict) -> str:
    if not model:
        return (
            f"<p>{esc(summary.get('params', '?'))} parameters.</p>"
            if summary.get("params")
            else "<p class=muted>No model summary.</p>"
        )
    lines = [
        (
            f"{model['total_params']:,} parameters ({model['trainable_params']:,} trainable), "
            f"{model['flops_per_sample']:,} FLOPs per sample forward"
        )
    ]
    rows = [[r["name"], r["kind"], r["output_shape"], r["params"] or ""] for r in model["layers"]]
    return f"<p>{esc(lines[0])}</p>" + table(rows, ["layer", "type", "output", "params"], numeric={3})


def kv_rows(d: dict) -> list[list]:
    return [[k, v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v)] for k, v in d.items()]


def single(run: RunData, ev: dict | None, model: dict | None, notes: list[str]) -> str:
    """The page of one run: curves, the best checkpoint's evaluation, final metrics, rollout and
    baselines where the run has them, then the model, config, environment and timings."""
    s = run.summary
    page = Page(f"ember report: {run.experiment}/{run.path.name}")
    metrics = s.get("metrics") or run.metrics()
    header = single_header(run, metrics, notes)
    sections = [("curves", "Training curves", curve_charts(page, [run]))]
    if ev:
        sections.append(("evaluation", "Evaluation", evaluation_section(page, ev)))
    if metrics:
        sections.append(("metrics", "Final metrics", metrics_table(metrics)))
    if (run.path / "rollout.json").is_file():
        sections.append(("rollout", "Rollout", _rollout_html(page, run.path / "rollout.json")))
    if baselines_html := baselines_section(s, metrics):
        sections.append(("baselines", "Beside the baselines", baselines_html))
    sections.append(("model", "Model", model_section(model, s)))
    sections.append(("config", "Config", _config_html(run.config)))
    sections.append(("run", "Summary, environment, timings", run_tables(run)))
    return page.render(header, sections)


def single_header(run: RunData, metrics: dict, notes: list[str]) -> str:
    """The run's name and status, what it trained on and where it lies, its notes, and a card per
    headline number (status, epochs, time, parameters, each test metric)."""
    s, status = run.summary, run.status
    cards = [
        ("status", status),
        ("best epoch", s.get("best_epoch")),
        ("epochs", s.get("epochs")),
        ("time", duration(run.duration())),
        ("parameters", f"{s['params']:,}" if isinstance(s.get("params"), int) else None),
    ]
    cards += [(k, fmt(v)) for k, v in metrics.items() if k.startswith("test/")]
    cards_html = "".join(
        f'<div class="card"><div class="k">{esc(k)}</div><div class="v">{esc(fmt(v))}</div></div>'
        for k, v in cards
        if v is not None
    )
    sub = (
        f"{run.experiment} · {(run.config.get('model') or {}).get('name', '?')} on "
        f"{(run.config.get('data') or {}).get('name', '?')} · started {when(s.get('started'))} · {s.get('device', '')}"
    )
    return (
        f'<header><h1>{esc(run.experiment)} <span class="muted">/ {esc(run.path.name)}</span> <span class="badge '
        f'{esc(status)}">{esc(status)}</span></h1><div class="sub">{esc(sub)}</div><div class="sub">{esc(run.path)}'
        f'</div>{notes_html([n for n in [status_note(run)] + run.problems + notes if n])}<div class="cards">'
        f"{cards_html}</div></header>"
    )


def metrics_table(metrics: dict) -> str:
    """The final metrics: one row per metric, one column per split."""
    splits = list(dict.fromkeys(k.split("/", 1)[0] for k in metrics))
    names = list(dict.fromkeys(k.split("/", 1)[1] for k in metrics if "/" in k))
    rows = [[n] + [metrics.get(f"{sp}/{n}", "") for sp in splits] for n in names]
    return table(rows, ["metric"] + splits, numeric=set(range(1, len(splits) + 1)))


def _rollout_html(page: Page, path: Path) -> str:
    try:
        return rollout_section(page, json.loads(path.read_text()))
    # a damaged file: a note, not a lost page
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        return notes_html([f"rollout.json could not be read ({type(e).__name__}: {e})"])


def _config_html(config: dict) -> str:
    if not config:
        return "<p class=muted>No config.</p>"
    return f"<pre>{esc(yaml.safe_dump(config, sort_keys=False))}</pre>"


def run_tables(run: RunData) -> str:
    s = run.summary
    t = s.get("time") or {}
    steps = [r["step_ms"] for r in run.records if isinstance(r.get("step_ms"), (int, float))]
    speed = [r["samples_per_s"] for r in run.records if isinstance(r.get("samples_per_s"), (int, float))]
    timing = {
        "started": when(s.get("started")),
        "finished": when(s.get("finished")),
        "wall time": duration(run.duration()),
        "waiting for data": (
            f"{duration(t['data_wait_s'])} ({t['data_wait_s'] / max(t['total_s'], 1e-9):.0%})"
            if "data_wait_s" in t and "total_s" in t
            else "–"
        ),
        "validation and test": duration(t.get("eval_s")),
        "median step time": f"{sorted(steps)[len(steps) // 2]:.3g} ms" if steps else "–",
        "mean throughput": f"{sum(speed) / len(speed):,.0f} samples/s" if speed else "–",
    }
    env = {**(s.get("versions") or {}), **(s.get("environment") or {})}
    for key in ("device", "precision", "host", "flops_per_step"):
        if s.get(key) is not None:
            env[key] = s[key]
    rest = {
        k: v
        for k, v in s.items()
        if k not in ("metrics", "time", "versions", "environment", "pid", "host", "baselines")
    }
    return "".join(
        f"<h3>{name}</h3>" + table(kv_rows(d), align=False)
        for name, d in (("Timings", timing), ("Environment", env), ("summary.json", rest))
    )


def compare(runs: list[RunData], links: list[str | None]) -> str:
    page = Page(f"ember report: {len(runs)} runs")
    all_metrics = [r.metrics() for r in runs]
    keys = [
        k
        for prefix in ("test/", "val/", "train/")
        for k in dict.fromkeys(k for m in all_metrics for k in m)
        if k.startswith(prefix)
    ]
    head = ["run", "status", "model", "data", "best epoch", "time (s)"] + keys
    rows = []
    for run, m in zip(runs, all_metrics):
        d = run.duration()
        rows.append(
            [
                run.label,
                run.status,
                (run.config.get("model") or {}).get("name", "?"),
                (run.config.get("data") or {}).get("name", "?"),
                run.summary.get("best_epoch", ""),
                round(d, 1) if d is not None else "",
            ]
            + [m.get(k, "") for k in keys]
        )
    table_html = table(rows, head, sortable=True, numeric={4, 5} | set(range(6, len(head))))
    link_html = "".join(f'<li><a href="{esc(link)}">{esc(r.label)}</a></li>' for r, link in zip(runs, links) if link)
    if link_html:
        table_html += f"<h3>Each run's own report</h3><ul>{link_html}</ul>"
    notes = [f"{r.label}: {n}" for r in runs for n in [status_note(r)] + r.problems if n]
    header = (
        f'<header><h1>{len(runs)} runs compared</h1><div class="sub">{esc(", ".join(r.label for r in runs))}'
        f"</div>{notes_html(notes)}</header>"
    )
    sections = [
        ("table", "Final metrics", table_html),
        ("curves", "Curves", curve_charts(page, runs)),
        ("diff", "Config differences", config_diff(runs)),
    ]
    return page.render(header, sections)


def config_diff(runs: list[RunData]) -> str:
    flat = [flatten(r.config) for r in runs]
    keys = sorted(set().union(*flat))
    differ = [
        k
        for k in keys
        if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flat}) > 1 and not k.startswith("run.")
    ]
    if not differ:
        return "<p>The runs have the same config (apart from run.*).</p>"
    rows = "".join(
        "<tr><td>"
        + esc(k)
        + "</td>"
        + "".join(f'<td class="diff">{esc(fmt(f.get(k, "–")))}</td>' for f in flat)
        + "</tr>"
        for k in differ
    )
    head = "<tr><th>key</th>" + "".join(f"<th>{esc(r.label)}</th>" for r in runs) + "</tr>"
    same = len(keys) - len(differ)
    return (
        f'<p class=muted>{len(differ)} key(s) differ; {same} are the same.</p><div class="scroll"><table><thead>{head}'
        f"</thead><tbody>{rows}</tbody></table></div>"
    )
