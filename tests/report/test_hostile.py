"""Untrusted content in a report runs no script (issue 35: an `epoch` string in metrics.jsonl ran
script on hover through report.js's tooltip). Markup goes into every field a run's files can set:
run name, metric names and values, epochs, splits, config strings, status, error, notes, variable
names, units, class names, baseline names; the page is opened in Chromium and every chart is
hovered and every legend button clicked; the payload would set window.__pwned, change the title
and add an element with id "xss"."""

import json

import numpy as np
import yaml
from report_browser import CHROMIUM, render

from ember.report import build_report, fields
from ember.report.evaluation_panels import evaluation_section
from ember.report.markup import Page, esc

MARK = (
    "document.title='pwned';window.__pwned=1;var d=document.createElement('b');d.id='xss';document.body.appendChild(d)"
)
P = f"x\"'><img src=x onerror=\"{MARK}\"></script><script>{MARK}</script><!--<script>[/y]"

# Hover every chart (at each drawn point and across each plot), open every tooltip, click every
# legend button; then wait for any image error handler a payload would have planted.
HOVER = """(async () => {
  let tips = 0;
  const fire = (el, x, y) => {
    el.dispatchEvent(new PointerEvent("pointermove", {bubbles: true, clientX: x, clientY: y}));
    if (document.querySelector(".tip").style.display === "block") tips++;
  };
  for (const svg of document.querySelectorAll("figure svg")) {
    svg.scrollIntoView();
    const hit = svg.querySelector("rect.hit");
    const marks = Array.from(svg.querySelectorAll("circle, rect.bar, rect.cell, path.pc"));
    for (const m of marks) {
      const b = m.getBoundingClientRect();
      fire(hit || m, b.left + b.width / 2, b.top + b.height / 2);
    }
    if (hit) {
      const b = hit.getBoundingClientRect();
      for (let f = 0.02; f < 1; f += 0.08) fire(hit, b.left + b.width * f, b.top + b.height / 2);
    }
  }
  document.querySelectorAll(".legend button").forEach(b => b.click());
  await new Promise(r => setTimeout(r, 500));
  return {tips: tips, title: document.title, pwned: window.__pwned || null, xss: !!document.getElementById("xss"),
          shown: document.body.innerText.includes("onerror="), errors: document.body.dataset.errors};
})()"""


def hostile_run(root):
    """A run directory written by hand, markup in every string its files hold."""
    run = root / P.replace("/", "_")[:40] / "20260101-000000"
    run.mkdir(parents=True)
    config = {
        "run": {"name": P},
        "model": {"name": P, "activation": P},
        "data": {"name": P, "path": P, "variables": [P]},
        "trainer": {"monitor": f"val/{P}"},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = {f"test/{P}": 0.5, f"val/{P}": 0.25, "test/loss": 0.4}
    summary = {
        "status": P,
        "error": P,
        "device": P,
        "metrics": metrics,
        "best_epoch": 1,
        "epochs": 2,
        "steps": 4,
        "params": 10,
        "started": 1.8e9,
        "finished": 1.8e9 + 5,
        "versions": {P: P},
        "environment": {P: P},
        "baseline_notes": [P],
        "note": P,
        "skill": {"split": "test", "best": P, "skill": 0.1, "beaten": False},
        "baselines": {P: {f"test/{P}": 0.6}},
    }
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "spec.json").write_text(json.dumps({"input_shape": [1], "task": P, "names": [P]}))
    records = [
        {"step": i, "epoch": P, "split": s, "loss": 1.0 / i, P: 0.1 * i} for i in range(1, 6) for s in ("train", "val")
    ]
    records += [{"step": 6, "epoch": 3, "split": P, "loss": 0.2}, {"step": 7, "split": "val", "loss": P}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    rollout = {
        "scores": {"model": [{f"rmse/{P}": 1.0}, {f"rmse/{P}": 2.0}], P: [{f"rmse/{P}": 1.5}, {f"rmse/{P}": 2.5}]},
        "lead": [1, 2],
        "forecasts": P,
        "split": P,
    }
    (run / "rollout.json").write_text(json.dumps(rollout))
    return run


class Spec:
    lat, lon, target_units = [-10.0, 0.0, 10.0], [0.0, 10.0, 20.0, 30.0], [P]

    def target_name(self, c):
        return P


def hostile_evaluation(p: Page) -> str:
    """Evaluation sections (gridded regression, classification) with markup in every name."""
    panel = fields.field_panel(np.arange(12.0).reshape(3, 4), Spec(), 0, 11, False, P)
    maps = [
        {
            "variable": P,
            "units": P,
            "bias_max": 1,
            "rmse_max": 1,
            "predictors": [{"name": P, "mean_bias": 0.1, "mean_rmse": 0.2, "bias": panel, "rmse": panel}],
        }
    ]
    regression = {
        "split": P,
        "n": 3,
        "r2": 0.9,
        "rmse": 0.1,
        "mae": 0.1,
        "scatter": [[1, 1.1], [2, 1.9]],
        "hist": {"edges": [0, 1, 2], "counts": [1, 2]},
        "maps": [{"index": P, "variable": P, "true": panel, "pred": panel, "error": panel}],
        "error_maps": maps,
    }
    classification = {
        "split": P,
        "n": 4,
        "labels": [P, "b"],
        "confusion": [[1, 1], [0, 2]],
        "accuracy": 0.75,
        "precision": [1, 0.67],
        "recall": [0.5, 1],
        "support": [2, 2],
        "examples": [{"index": 0, "true": P, "pred": "b", "p": 0.9, "signal": [[0.1, 0.2] * 5]}],
    }
    lines = {
        "type": "line",
        "xlabel": P,
        "ylabel": P,
        "series": [{"name": P, "color": P, "colorIndex": P, "points": [[1, 0.5, P], [2, P, P], [P, 0.1]]}],
    }
    parallel = {
        "type": "parallel",
        "axes": [{"key": P, "choices": [P]}, {"key": "m"}],
        "rows": [{"trial": P, P: P, "m": 1.0}, {"trial": 1, P: P, "m": 2.0}],
        "metric": "m",
    }
    charts = p.chart(lines, P, P) + p.chart(parallel, P)
    return evaluation_section(p, regression) + evaluation_section(p, classification) + charts


def assert_safe(html: str, path, width=1100):
    assert "<img src=x" not in html and "<script>document" not in html  # escaped, never markup
    if not CHROMIUM:
        return
    path.write_text(html)
    shown = render(path, width, 900, script=HOVER)
    result = shown.extra.get("script")
    assert result, shown.extra
    assert result["pwned"] is None and not result["xss"] and result["title"] != "pwned", result
    assert result["shown"] and result["tips"] > 0, result  # the payload is on the page as text, and tooltips opened
    assert shown.rendered == shown.charts, shown.body


def test_a_run_with_markup_everywhere_runs_no_script(tmp_path):
    run = hostile_run(tmp_path / "runs")
    out = build_report([run], tmp_path / "one.html", evaluate=False)
    assert_safe(out.read_text(), tmp_path / "one.html")
    other = hostile_run(tmp_path / "runs2")
    both = build_report([run, other], tmp_path / "both.html", evaluate=False)
    assert_safe(both.read_text(), tmp_path / "both.html")


def test_evaluation_charts_and_maps_with_markup_run_no_script(tmp_path):
    p = Page(P)
    html = p.render(f"<header>{esc(P)}</header>", [("s", P, hostile_evaluation(p))])
    assert_safe(html, tmp_path / "evaluation.html")
