"""The sections of a run's page that say how good the model is: the best checkpoint's evaluation
(classification panels, or regression panels with maps of gridded fields), the rollout against
lead time, and the final metrics beside the baselines'.
"""

from ember.report.fields import field_html
from ember.report.markup import Page, esc, fmt, notes_html, table


def evaluation_section(page: Page, ev: dict) -> str:
    """The best checkpoint on one split (`ev`, from ember.report.evaluate): the panels of its task,
    or the note of why it could not be evaluated."""
    where = f"best checkpoint on the {ev['split']} split, {ev.get('n', 0):,} samples"
    if ev.get("truncated"):
        where += " (the first ones only)"
    intro = f'<p class="muted">{esc(where)}</p>'
    if "confusion" in ev:
        return intro + classification_panels(page, ev)
    if "scatter" in ev:
        return intro + regression_panels(page, ev)
    if ev.get("error"):
        return intro + notes_html([ev["error"]])
    return intro


def classification_panels(page: Page, ev: dict) -> str:
    """Confusion matrix and precision/recall per class, the per-class table, the most confused examples."""
    labels = ev["labels"]
    confusion = page.chart(
        {"type": "heatmap", "labels": labels, "values": ev["confusion"], "title": "confusion matrix"},
        "confusion matrix",
        f"accuracy {ev['accuracy']:.4g}",
    )
    bars = {
        "type": "bars",
        "labels": labels,
        "series": [{"name": "precision", "values": ev["precision"]}, {"name": "recall", "values": ev["recall"]}],
        "ymax": 1,
        "xlabel": "class",
        "ylabel": "score",
    }
    per_class = page.chart(bars, "precision and recall per class")
    rows = [[labels[i], ev["precision"][i], ev["recall"][i], ev["support"][i]] for i in range(len(labels))]
    per_class_table = (
        "<details><summary>per-class table</summary>"
        f"{table(rows, ['class', 'precision', 'recall', 'support'], sortable=True, numeric={1, 2, 3})}</details>"
    )
    examples = confused_examples_html(page, ev.get("examples") or [])
    return f'<div class="grid">{confusion}{per_class}</div>{per_class_table}{examples}'


def confused_examples_html(page: Page, examples: list[dict]) -> str:
    """The wrong predictions made with the highest confidence: an image as it is, a signal as a
    small chart with one line per channel."""
    if not examples:
        return ""
    figures = []
    for ex in examples:
        caption = f"#{ex['index']}: true {ex['true']}, predicted {ex['pred']} ({ex['p']:.0%})"
        if "png" in ex:
            figures.append(
                f'<figure><img class="px" alt="{esc(caption)}" src="{esc(ex["png"])}"><figcaption>'
                f"{esc(caption)}</figcaption></figure>"
            )
            continue
        series = [
            {"name": f"channel {c}", "points": [[j, v] for j, v in enumerate(ch)], "colorIndex": c}
            for c, ch in enumerate(ex["signal"])
        ]
        spec = {"type": "line", "series": series, "compact": True, "height": 130, "xlabel": "", "ylabel": ""}
        figures.append(page.chart(spec, caption))
    return (
        "<h3>Most confused examples</h3><p class=muted>wrong predictions made with the highest confidence</p>"
        '<div class="examples">' + "".join(figures) + "</div>"
    )


def regression_panels(page: Page, ev: dict) -> str:
    """Predicted against true and the residuals, then the maps of a gridded target."""
    note = f"R² {ev['r2']:.4g}, RMSE {ev['rmse']:.4g}, MAE {ev['mae']:.4g}"
    scatter = page.chart(
        {"type": "scatter", "points": ev["scatter"], "xlabel": "true", "ylabel": "predicted"},
        "predicted vs. true",
        note,
    )
    hist = ev["hist"]
    residuals_spec = {
        "type": "bars",
        "edges": hist["edges"],
        "series": [{"name": "samples", "values": hist["counts"]}],
        "xlabel": "residual (predicted − true)",
        "ylabel": "count",
    }
    hist_note = f"{ev['clipped']} beyond the range shown are counted in the end bins" if ev.get("clipped") else ""
    residuals = page.chart(residuals_spec, "residuals", hist_note)
    return (
        f'<div class="grid">{scatter}{residuals}</div>'
        + sample_maps_html(ev.get("maps") or [])
        + error_maps_html(ev.get("error_maps") or [])
    )


def sample_maps_html(samples: list[dict]) -> str:
    """Per sample of a gridded target: the target, the prediction on the same scale, and the error."""
    parts = []
    for m in samples:
        name = f"{m['variable']}, " if m.get("variable") else ""
        parts.append(f"<h3>Sample {esc(m['index'])}</h3>{_maps_div(m['true'])}")
        for key, what in (
            ("true", f"{name}target"),
            ("pred", "prediction, same scale"),
            ("error", "error (prediction − target)"),
        ):
            parts.append(field_html(m[key], what))
        parts.append("</div>")
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
        ""
        if verdict.get("beaten")
        else notes_html([f"the model does not beat the {verdict['best']} baseline on {split}"])
    )
    return f"<p>{esc(line)}, on the {esc(split)} split.</p>{warn}" + table(
        rows, ["metric", "model", *base], numeric=set(range(1, len(base) + 2))
    )
