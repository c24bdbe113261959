"""report.html: written by `ember train` and `ember report`, one offline file, opened in headless
Chromium to check that every chart was drawn, nothing was logged to the console and the page
fits a phone's width."""

import json
import re
import shutil

import numpy as np
import pytest
import torch
from conftest import tiny_run
from report_browser import external_references, png_size, render

from ember.cli import main
from ember.report import evaluate
from ember.report.markup import Page


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
    for title in (
        "loss",
        "accuracy",
        "learning rate",
        "throughput (samples/s)",
        "data wait (share of time)",
        "confusion matrix",
        "precision and recall per class",
    ):
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


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with CUDA runs the trained device")
def test_a_gpu_runs_report_is_evaluated_on_a_machine_without_one(classification_runs, tmp_path):
    run = tmp_path / "exp" / "gpu"
    shutil.copytree(classification_runs[0], run)
    config = run / "config.yaml"
    assert "  device: auto\n" in config.read_text()
    config.write_text(config.read_text().replace("  device: auto\n", "  device: cuda\n"))
    out = tmp_path / "gpu.html"
    assert main(["report", str(run), "-o", str(out)]) == 0
    assert "could not be evaluated" not in out.read_text() and "heatmap" in [
        s["type"] for s in chart_specs(out.read_text()).values()
    ]


def test_the_reports_evaluation_is_the_final_tests(tmp_path):
    """One evaluator: the report's RMSE is the final test's, whether the report is written by the
    training process or rebuilt from the run directory by `ember report`; under trainer.ema both
    score the weights' moving average, not the last weights."""
    run = tiny_run(tmp_path, "experiment=linear_regression", "trainer.max_epochs=8", "trainer.ema=0.9")
    tested = json.loads((run / "summary.json").read_text())["metrics"]["test/rmse"]
    again = tmp_path / "again.html"
    assert main(["report", str(run), "-o", str(again)]) == 0
    for page in (run / "report.html", again):
        shown = float(re.search(r"RMSE ([0-9.e+-]+)", page.read_text()).group(1))
        assert shown == pytest.approx(tested, rel=1e-3), page.name


def test_unfinished_run_with_missing_metrics_still_gets_a_page(classification_runs, tmp_path, screenshots, capsys):
    run = tmp_path / "exp" / "broken"
    shutil.copytree(classification_runs[0], run)
    (run / "metrics.jsonl").unlink()
    (run / "report.html").unlink()
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(
        json.dumps({"status": "running", "started": summary["started"], "pid": 2**22 + 12345, "host": summary["host"]})
    )
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

    img = Image.open(io.BytesIO(base64.b64decode(result["maps"][0]["true"]["png"].split(",", 1)[1])))
    assert img.size == (12, 8) and img.mode == "RGB"


def write_study(path, trials):
    """A study directory as `ember tune` leaves it: study.json, history.csv, leaderboard.csv, config.yaml."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text("model:\n  name: cnn1d\n")
    space = {
        "optim.lr": json.dumps(
            {"name": "FloatDistribution", "attributes": {"step": None, "low": 1e-4, "high": 0.1, "log": True}}
        ),
        "model.activation": json.dumps(
            {"name": "CategoricalDistribution", "attributes": {"choices": ["relu", "gelu"]}}
        ),
    }
    results = {
        "trials": {"complete": len(trials)},
        "importances": {"optim.lr": 0.9, "model.activation": 0.1},
        "best": {"trial": 0, "value": trials[0][1], "params": {"optim.lr": trials[0][2]}},
    }
    info = {
        "name": "demo",
        "metric": "val/loss",
        "direction": "minimize",
        "sampler": "tpe",
        "pruner": "median",
        "space": space,
        "results": results,
        "created": 1.8e9,
    }
    (path / "study.json").write_text(json.dumps({**info, "overrides": []}))
    best, history = None, ["trial,state,value,best_value,seconds,started,optim.lr,model.activation"]
    for n, value, lr, act in trials:
        best = value if best is None else min(best, value)
        history.append(f"{n},complete,{value},{best},1.5,2026-11-25 18:47:14,{lr},{act}")
    (path / "history.csv").write_text("\n".join(history) + "\n")
    board = ["rank,trial,state,val/loss,optim.lr,model.activation,epochs,seconds,rerun_of,note,run_dir"]
    board += [
        f"{i + 1},{n},complete,{v},{lr},{act},2,1.5,,,"
        for i, (n, v, lr, act) in enumerate(sorted(trials, key=lambda t: t[1]))
    ]
    (path / "leaderboard.csv").write_text("\n".join(board) + "\n")


def test_study_page(tmp_path, screenshots, capsys):
    study = tmp_path / "exp" / "tune-1"
    write_study(
        study, [(0, 1.9, 0.004, "relu"), (1, 1.7, 0.01, "gelu"), (2, 2.3, 0.0002, "gelu"), (3, 1.8, 0.006, "relu")]
    )
    assert main(["report", str(study)]) == 0
    specs = check_page(study / "report.html", screenshots, "study", kinds=("line", "bars", "parallel"))
    parallel = next(s for s in specs.values() if s["type"] == "parallel")
    assert [a["key"] for a in parallel["axes"]] == ["optim.lr", "model.activation", "val/loss"] and len(
        parallel["rows"]
    ) == 4
    html = (study / "report.html").read_text()
    assert "float from 1.000e-04 to 0.1, log scale" in html and "one of: relu, gelu" in html


def test_confused_images_are_drawn():
    import torch

    from ember.data import TensorData

    x = torch.rand(6, 1, 8, 8)
    data = TensorData(x, torch.tensor([0, 1, 0, 1, 0, 1]))
    spec = type("Spec", (), {"input_shape": (1, 8, 8), "mean": None, "std": None})()
    logits = np.array([[0.0, 3.0], [3.0, 0.0], [5.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    examples = evaluate.confused_examples(logits, np.array([0, 1, 0, 1, 0, 1]), data, spec, ["a", "b"])
    assert [e["index"] for e in examples] == [0, 1, 4, 5]  # wrong ones, most confident first
    assert examples[0]["png"].startswith("data:image/png;base64,") and (examples[0]["true"], examples[0]["pred"]) == (
        "a",
        "b",
    )
