"""report.html: written by `ember train` and `ember report`, one offline file, opened in headless
Chromium to check that every chart was drawn, nothing was logged to the console and the page
fits a phone's width."""

import json
import re
import shutil

import numpy as np
import pytest
from report_browser import external_references, png_size, render

from ember.cli import main
from ember.report import evaluate
from ember.report.page import Page


def chart_specs(html: str) -> dict:
    data = re.search(r'<script type="application/json" id="ember-data">(.*?)</script>', html, re.S).group(1)
    return json.loads(data.replace("<\\/", "</"))["charts"]


def check_page(path, screenshots, name, kinds=()):
    html = path.read_text()
    assert external_references(html) == []
    specs = chart_specs(html)
    assert {s["type"] for s in specs.values()} >= set(kinds)
    wide = render(path, 1280, 900, screenshots / f"{name}.png")
    assert wide.console == [], wide.console
    assert (wide.charts, wide.rendered, wide.errors) == (len(specs), len(specs), 0), wide.body
    assert wide.svgs >= len(specs) and wide.width == 1280
    assert wide.screenshot is not None and png_size(wide.screenshot)[0] == 1280
    narrow = render(path, 390, 844, screenshots / f"{name}-narrow.png")
    assert narrow.console == [] and narrow.errors == 0 and narrow.rendered == len(specs), narrow.body
    assert narrow.width == 390 and narrow.body["overflow"] == "0", "the page is wider than a phone's screen"
    return specs


def test_train_writes_a_classification_report_that_renders(classification_runs, screenshots):
    run = classification_runs[0]
    path = run / "report.html"
    assert path.exists()
    specs = check_page(path, screenshots, "classification", kinds=("line", "heatmap", "bars"))
    titles = [t.strip() for t in re.findall(r"<figcaption>([^<]*)", path.read_text())]
    for title in ("loss", "accuracy", "learning rate", "throughput (samples/s)", "data wait (share of time)", "confusion matrix", "precision and recall per class"):
        assert title in titles
    heatmap = next(s for s in specs.values() if s["type"] == "heatmap")
    assert len(heatmap["labels"]) == 10 and sum(map(sum, heatmap["values"])) == 100  # 20% of 500 samples
    html = path.read_text()
    for section in ("Most confused examples", "Model", "Config", "Environment", "Timings"):
        assert section in html


def test_regression_report_has_scatter_and_residuals(regression_run, screenshots):
    check_page(regression_run / "report.html", screenshots, "regression", kinds=("line", "scatter", "bars"))
    html = (regression_run / "report.html").read_text()
    assert "predicted vs. true" in html and "residuals" in html


def test_report_command_compares_runs(classification_runs, regression_run, screenshots, tmp_path, capsys):
    out = tmp_path / "compare.html"
    assert main(["report", *map(str, classification_runs), str(regression_run), "-o", str(out)]) == 0
    assert f"report: {out}" in capsys.readouterr().out
    specs = check_page(out, screenshots, "compare", kinds=("line",))
    loss = next(s for s in specs.values() if s["ylabel"] == "loss")
    assert len({s["colorIndex"] for s in loss["series"]}) == 3  # one colour per run
    html = out.read_text()
    assert "optim.lr" in html and "Config differences" in html and "report.html" in html


def test_report_of_one_run_rebuilds_the_evaluation_from_disk(classification_runs, tmp_path):
    out = tmp_path / "again.html"
    assert main(["report", str(classification_runs[1]), "-o", str(out)]) == 0
    kinds = [s["type"] for s in chart_specs(out.read_text()).values()]
    assert "heatmap" in kinds and "bars" in kinds


def test_unfinished_run_with_missing_metrics_still_gets_a_page(classification_runs, tmp_path, screenshots, capsys):
    run = tmp_path / "exp" / "broken"
    shutil.copytree(classification_runs[0], run)
    (run / "metrics.jsonl").unlink()
    (run / "report.html").unlink()
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({"status": "running", "started": summary["started"], "pid": 2**22 + 12345, "host": summary["host"]}))
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "not finished" in html and "metrics.jsonl is missing" in html and "No metrics were logged" in html
    page = render(run / "report.html", 800, 600)
    assert page.errors == 0 and page.console == []


def test_not_a_run_is_one_clear_line(classification_runs, tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    experiment = classification_runs[0].parent
    assert main(["report", str(experiment)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a run directory" in err and "holds 2 run(s)" in err


def test_the_browser_check_catches_a_broken_chart(tmp_path):
    page = Page("broken")
    figure = page.chart({"type": "nonsense"}, "a chart that cannot be drawn")
    path = tmp_path / "broken.html"
    path.write_text(page.render("<header></header>", [("s", "s", figure)]))
    shown = render(path, 800, 600)
    assert shown.charts == 1 and shown.rendered == 0 and shown.errors == 1


def test_gridded_targets_become_maps():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(5, 2, 8, 12)).astype(np.float32)
    spec = type("Spec", (), {"target_shape": (2, 8, 12), "task": "regression"})()
    result = evaluate.regression({"output": y + 0.1, "target": y, "truncated": False}, spec)
    assert len(result["maps"]) == 3 and abs(result["rmse"] - 0.1) < 1e-4
    pytest.importorskip("PIL")
    import base64
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(base64.b64decode(result["maps"][0]["true"].split(",", 1)[1])))
    assert img.size == (12, 8) and img.mode == "RGB"
