"""The HTML of a report: one file, its CSS, script and data inline, nothing fetched.

Python decides what to show and hands each chart to the page as JSON (`charts`); the inline
script (assets/report.js) draws them as SVG. Tables, notes, config and images are plain HTML.
"""

import html
import json
import math
from datetime import datetime
from importlib import resources

import yaml

from ember.report.collect import RunData, curves, status_note
from ember.report.fields import field_html
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


def _clean(obj):
    """JSON for JSON.parse: NaN and infinities become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def metric_order(names) -> list[str]:
    names = list(dict.fromkeys(names))
    middle = [n for n in names if n not in FIRST and n not in LAST]
    return [n for n in FIRST if n in names] + middle + [n for n in LAST if n in names]


# Inside <script>, the HTML parser still looks for `</script`, and `<!--` followed by `<script`
# switches it into a state where the real `</script>` no longer ends the element (a class named
# "<!--<script>" blanked every chart). U+2028/U+2029 end lines in older JavaScript. JSON escapes
# for all five leave no markup in the blob and parse back to the same strings.
_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(obj) -> str:
    """JSON for the inside of a <script> element: no character the HTML parser reacts to."""
    text = json.dumps(obj, allow_nan=False, separators=(",", ":"))
    return text.translate(str.maketrans(_SCRIPT_ESCAPES))


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
        data = script_json(_clean({"charts": self.charts}))
        # Errors are caught from the first line on, so the browser tests see every one.
        catch = (
            "window.__emberErrors=[];window.addEventListener('error',function(e){window.__emberErrors.push(String(e.message))});"
            "(function(){var ce=console.error;console.error=function(){window.__emberErrors.push(Array.prototype.join.call(arguments,' '));ce.apply(console,arguments)}})();"
        )
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(self.title)}</title><style>{css}</style><script>{catch}</script></head>"
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
    out = [f"<div class=\"scroll\"><table{cls}>"]
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


def _notes(lines: list[str]) -> str:
    return "".join(f'<div class="note">{esc(line)}</div>' for line in lines)


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


def evaluation_section(page: Page, ev: dict) -> str:
    parts = []
    where = f"best checkpoint on the {ev['split']} split, {ev.get('n', 0):,} samples"
    if ev.get("truncated"):
        where += " (the first ones only)"
    parts.append(f'<p class="muted">{esc(where)}</p>')
    if "confusion" in ev:
        k = len(ev["labels"])
        parts.append('<div class="grid">')
        parts.append(
            page.chart(
                {"type": "heatmap", "labels": ev["labels"], "values": ev["confusion"], "title": "confusion matrix"},
                "confusion matrix",
                f"accuracy {ev['accuracy']:.4g}",
            )
        )
        bars = {
            "type": "bars",
            "labels": ev["labels"],
            "series": [{"name": "precision", "values": ev["precision"]}, {"name": "recall", "values": ev["recall"]}],
            "ymax": 1,
            "xlabel": "class",
            "ylabel": "score",
        }
        parts.append(page.chart(bars, "precision and recall per class"))
        parts.append("</div>")
        rows = [[ev["labels"][i], ev["precision"][i], ev["recall"][i], ev["support"][i]] for i in range(k)]
        parts.append(
            "<details><summary>per-class table</summary>"
            f"{table(rows, ['class', 'precision', 'recall', 'support'], sortable=True, numeric={1, 2, 3})}</details>"
        )
        examples = ev.get("examples") or []
        if examples:
            parts.append(
                "<h3>Most confused examples</h3><p class=muted>wrong predictions made with the highest confidence</p>"
                '<div class="examples">'
            )
            for ex in examples:
                caption = f"#{ex['index']}: true {ex['true']}, predicted {ex['pred']} ({ex['p']:.0%})"
                if "png" in ex:
                    parts.append(
                        f'<figure><img class="px" alt="{esc(caption)}" src="{esc(ex["png"])}"><figcaption>'
                        f"{esc(caption)}</figcaption></figure>"
                    )
                else:
                    series = [
                        {"name": f"channel {c}", "points": [[j, v] for j, v in enumerate(ch)], "colorIndex": c}
                        for c, ch in enumerate(ex["signal"])
                    ]
                    parts.append(
                        page.chart(
                            {
                                "type": "line",
                                "series": series,
                                "compact": True,
                                "height": 130,
                                "xlabel": "",
                                "ylabel": "",
                            },
                            caption,
                        )
                    )
            parts.append("</div>")
    elif "scatter" in ev:
        note = f"R² {ev['r2']:.4g}, RMSE {ev['rmse']:.4g}, MAE {ev['mae']:.4g}"
        hist_note = f"{ev['clipped']} beyond the range shown are counted in the end bins" if ev.get("clipped") else ""
        parts.append('<div class="grid">')
        parts.append(
            page.chart(
                {"type": "scatter", "points": ev["scatter"], "xlabel": "true", "ylabel": "predicted"},
                "predicted vs. true",
                note,
            )
        )
        hist = ev["hist"]
        parts.append(
            page.chart(
                {
                    "type": "bars",
                    "edges": hist["edges"],
                    "series": [{"name": "samples", "values": hist["counts"]}],
                    "xlabel": "residual (predicted − true)",
                    "ylabel": "count",
                },
                "residuals",
                hist_note,
            )
        )
        parts.append("</div>")
        for m in ev.get("maps") or []:
            name = f"{m['variable']}, " if m.get("variable") else ""
            parts.append(f"<h3>Sample {esc(m['index'])}</h3>{_maps_div(m['true'])}")
            for key, what in (
                ("true", f"{name}target"),
                ("pred", "prediction, same scale"),
                ("error", "error (prediction − target)"),
            ):
                parts.append(field_html(m[key], what))
            parts.append("</div>")
        parts.append(error_maps_html(ev.get("error_maps") or []))
    elif ev.get("error"):
        parts.append(_notes([ev["error"]]))
    return "".join(parts)


def _maps_div(panel: dict) -> str:
    """A row of panels: several across, or one per row for a band much wider than tall."""
    return '<div class="maps wide">' if panel.get("aspect", 1) > 3 else '<div class="maps">'


def error_maps_html(variables: list[dict]) -> str:
    """Per variable: mean bias and RMSE per grid point of the model beside each baseline's, on
    shared scales, each panel north up with latitude and longitude axes and a colour bar."""
    parts = []
    for v in variables:
        units = f" {v['units']}" if v.get("units") else ""
        parts.append(
            f"<h3>{esc(v['variable'])}: error per grid point</h3><p class=muted>mean bias from −{esc(v['bias_max'])} "
            f"(blue) to +{esc(v['bias_max'])}{esc(units)} (red); RMSE from 0 to {esc(v['rmse_max'])}{esc(units)}</p>"
        )
        for kind, label in (("bias", "mean bias"), ("rmse", "RMSE")):  # one row each: the model, then the baseline
            panels = v["predictors"]
            parts.append(_maps_div(panels[0][kind]) if panels else '<div class="maps">')
            for p in panels:
                parts.append(field_html(p[kind], f"{p['name']}: {label} {fmt(p['mean_' + kind])}{units}"))
            parts.append("</div>")
    return "".join(parts)


def rollout_section(page: Page, result: dict) -> str:
    """RMSE and anomaly correlation against lead time, the model beside persistence and
    climatology (`ember eval run=DIR rollout=N`)."""
    scores, leads = result["scores"], result["lead"]
    first = scores["model"][0]
    rmse = "wrmse" if any(k.split("/")[0] == "wrmse" for k in first) else "rmse"
    per_variable = any("/" in k for k in first)  # several variables: their own, not the pooled
    keys = [k for k in first if k.split("/")[0] in (rmse, "acc") and ("/" in k) == per_variable]
    charts = []
    for key in keys:
        series = [
            {
                "name": name,
                "points": [[lead, step[key]] for lead, step in zip(leads, per_step) if key in step],
                "colorIndex": i,
            }
            for i, (name, per_step) in enumerate(scores.items())
        ]
        charts.append(
            page.chart(
                {"type": "line", "series": series, "xlabel": "lead (time steps)", "ylabel": key},
                f"{key} against lead time",
            )
        )
    rows = [[lead] + [scores[name][i].get(k, "") for name in scores for k in keys] for i, lead in enumerate(leads)]
    head = ["lead"] + [f"{name} {k}" for name in scores for k in keys]
    intro = (
        f"<p class=muted>{esc(result['forecasts'])} forecasts from start times of the {esc(result['split'])} split, "
        "each fed back as the next input.</p>"
    )
    return (
        intro + '<div class="grid">' + "".join(charts) + "</div>" + table(rows, head, numeric=set(range(1, len(head))))
    )


def baselines_section(summary: dict, metrics: dict) -> str:
    """The model's metrics beside the baselines' on the split the skill score uses."""
    base, verdict = summary.get("baselines") or {}, summary.get("skill") or {}
    if not base or not verdict:
        return ""
    split = verdict["split"]
    names = [
        k.split("/", 1)[1]
        for k in metrics
        if k.startswith(split + "/") and k not in (f"{split}/loss", f"{split}/skill")
    ]
    rows = [[n, metrics.get(f"{split}/{n}", "")] + [base[b].get(f"{split}/{n}", "") for b in base] for n in names]
    line = (
        (
            f"skill {fmt(verdict['skill'])} against the {verdict['best']} baseline (1 − MSE_model / "
            f"MSE_{verdict['best']}, in standardized units)"
        )
        if "skill" in verdict
        else f"best baseline: {verdict['best']}"
    )
    warn = (
        "" if verdict.get("beaten") else _notes([f"the model does not beat the {verdict['best']} baseline on {split}"])
    )
    return f"<p>{esc(line)}, on the {esc(split)} split.</p>{warn}" + table(
        rows, ["metric", "model", *base], numeric=set(range(1, len(base) + 2))
    )


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
    s = run.summary
    page = Page(f"ember report: {run.experiment}/{run.path.name}")
    status = run.status
    metrics = s.get("metrics") or run.metrics()
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
    header = (
        f'<header><h1>{esc(run.experiment)} <span class="muted">/ {esc(run.path.name)}</span> <span class="badge '
        f'{esc(status)}">{esc(status)}</span></h1><div class="sub">{esc(sub)}</div><div class="sub">{esc(run.path)}'
        f'</div>{_notes([n for n in [status_note(run)] + run.problems + notes if n])}<div class="cards">'
        f"{cards_html}</div></header>"
    )
    sections = [("curves", "Training curves", curve_charts(page, [run]))]
    if ev:
        sections.append(("evaluation", "Evaluation", evaluation_section(page, ev)))
    if metrics:
        splits = list(dict.fromkeys(k.split("/", 1)[0] for k in metrics))
        names = list(dict.fromkeys(k.split("/", 1)[1] for k in metrics if "/" in k))
        rows = [[n] + [metrics.get(f"{sp}/{n}", "") for sp in splits] for n in names]
        sections.append(
            ("metrics", "Final metrics", table(rows, ["metric"] + splits, numeric=set(range(1, len(splits) + 1))))
        )
    if (run.path / "rollout.json").is_file():
        try:
            sections.append(
                ("rollout", "Rollout", rollout_section(page, json.loads((run.path / "rollout.json").read_text())))
            )
        # a damaged file: a note, not a lost page
        except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            sections.append(
                ("rollout", "Rollout", _notes([f"rollout.json could not be read ({type(e).__name__}: {e})"]))
            )
    if baselines_html := baselines_section(s, metrics):
        sections.append(("baselines", "Beside the baselines", baselines_html))
    sections.append(("model", "Model", model_section(model, s)))
    sections.append(
        (
            "config",
            "Config",
            (
                f"<pre>{esc(yaml.safe_dump(run.config, sort_keys=False))}</pre>"
                if run.config
                else "<p class=muted>No config.</p>"
            ),
        )
    )
    sections.append(("run", "Summary, environment, timings", run_tables(run)))
    return page.render(header, sections)


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
        f"</div>{_notes(notes)}</header>"
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
