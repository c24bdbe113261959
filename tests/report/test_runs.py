"""`ember runs`: the table of runs, --sort, --json, and the status of runs that did not finish."""

import json
import shutil

import pytest
import yaml
from run_support import DAMAGE, damage

from ember.cli import main


def set_summary(run, **changes):
    summary = json.loads((run / "summary.json").read_text())
    summary.update(changes)
    (run / "summary.json").write_text(json.dumps(summary))


def test_runs_table_json_and_sort(classification_runs, regression_run, runs_root, tmp_path, capsys):
    root = tmp_path / "runs"
    shutil.copytree(runs_root, root)
    crashed = root / "mnist1d-cnn1d" / "crashed"
    shutil.copytree(classification_runs[0], crashed)
    set_summary(crashed, status="running", metrics=None, pid=2**22 + 4242)  # its process is gone
    preempted = root / "mnist1d-cnn1d" / "preempted"
    shutil.copytree(classification_runs[0], preempted)
    set_summary(preempted, status="preempted", metrics=None)
    (root / "mlflow.db").write_text("")  # stores beside the runs are not runs
    study = root / "mnist1d-cnn1d" / "tune-1"  # a study is not a run, but its trials are
    study.mkdir()
    (study / "study.json").write_text("{}")
    shutil.copy(classification_runs[0] / "config.yaml", study / "config.yaml")
    shutil.copytree(classification_runs[1], study / "trial-0")

    assert main(["runs", str(root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_run = {r["run"]: r for r in rows}
    assert len(rows) == 6 and "mnist1d-cnn1d/tune-1/trial-0" in by_run and "mnist1d-cnn1d/tune-1" not in by_run
    assert by_run["mnist1d-cnn1d/crashed"]["status"] == "failed"
    assert by_run["mnist1d-cnn1d/preempted"]["status"] == "preempted"
    assert by_run["mnist1d-cnn1d/preempted"]["best"] is not None  # from metrics.jsonl, the best so far
    reg = next(r for r in rows if r["experiment"] == "linear_regression")
    assert (
        reg["test_metric"] == "test/r2" and reg["model"] == "ann" and reg["data"] == "linear" and reg["duration_s"] > 0
    )
    assert reg["monitor"] is None and reg["best"] is None  # no validation split
    finished = [r for r in rows if r["status"] == "finished" and r["experiment"] == "mnist1d-cnn1d"]
    assert len(finished) == 2 and all(
        r["test_metric"] == "test/accuracy" and r["monitor"] == "val/loss" and r["best"] is not None for r in finished
    )

    assert main(["runs", str(root), "--sort", "test/accuracy", "--json"]) == 0
    order = [r["metrics"].get("test/accuracy") for r in json.loads(capsys.readouterr().out)]
    known = [v for v in order if v is not None]
    assert known == sorted(known, reverse=True) and order[: len(known)] == known  # best first, missing last

    assert main(["runs", str(root), "--sort", "val/loss"]) == 0
    out = capsys.readouterr().out
    assert "6 runs under" in out
    for word in ("finished", "failed", "preempted", "linear_regression", "accuracy", "r2", "loss"):
        assert word in out


def test_runs_mistakes_are_one_line(tmp_path, classification_runs, runs_root, capsys):
    assert main(["runs", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["runs", str(runs_root), "--sort", "val/nonsense"]) == 2
    err = capsys.readouterr().err
    assert "no run has that metric" in err and "val/loss" in err
    assert main(["runs", str(tmp_path)]) == 0
    assert "no runs under" in capsys.readouterr().out


@pytest.mark.parametrize("kind", [*DAMAGE, "summary_not_json"])
def test_a_damaged_run_is_listed_and_marked_among_the_rest(classification_runs, tmp_path, capsys, kind):
    root = tmp_path / "runs"
    shutil.copytree(classification_runs[0], root / "good", ignore=shutil.ignore_patterns(".lock"))
    if kind == "summary_not_json":
        shutil.copytree(classification_runs[0], root / "bad", ignore=shutil.ignore_patterns(".lock"))
        (root / "bad" / "summary.json").write_text("[1")
    else:
        damage(classification_runs[0], kind, root / "bad")
    assert main(["runs", str(root), "--json"]) == 0
    rows = {r["run"]: r for r in json.loads(capsys.readouterr().out)}
    assert sorted(rows) == ["bad", "good"] and rows["good"]["damaged"] == []
    damaged = kind not in ("best_from_another_model",)  # ember runs does not read the weights
    assert bool(rows["bad"]["damaged"]) == damaged
    assert main(["runs", str(root)]) == 0
    out = capsys.readouterr().out
    assert ("damaged: bad: " in out) == damaged and "damaged: good" not in out


@pytest.mark.parametrize(
    "wrong",
    [
        {"pid": "abc", "status": "running"},
        {"pid": -1, "status": "running", "time": {"total_s": "long"}},
        {"metrics": [1, 2]},
        {"started": "yesterday", "best_epoch": "one", "metrics": {"val/loss": "low"}},
        {"skill": {"best": 3}, "baselines": [1]},
    ],
)
def test_a_summary_of_wrong_types_marks_its_run_and_the_rest_are_listed(classification_runs, tmp_path, capsys, wrong):
    """Valid JSON, wrong types (issue 35): `ember runs` and `ember report` went down for every run."""
    root = tmp_path / "runs"
    for name in ("good", "bad"):
        shutil.copytree(classification_runs[0], root / name, ignore=shutil.ignore_patterns(".lock", "report.html"))
    set_summary(root / "bad", **wrong)
    assert main(["runs", str(root), "--json"]) == 0
    rows = {r["run"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["good"]["damaged"] == [] and rows["good"]["metrics"]
    assert (
        len(rows["bad"]["damaged"]) == 1
        and "summary.json" in rows["bad"]["damaged"][0]
        and "wrong types" in rows["bad"]["damaged"][0]
    )
    assert main(["runs", str(root)]) == 0
    out = capsys.readouterr().out
    assert "damaged: bad: summary.json" in out and out.count("damaged:") == 1
    assert main(["report", str(root / "good"), str(root / "bad"), "-o", str(tmp_path / "both.html"), "--no-eval"]) == 0
    assert main(["report", str(root / "bad"), "--no-eval"]) == 0
    assert "wrong types" in (root / "bad" / "report.html").read_text()


def test_markup_in_names_is_text_in_the_runs_table(classification_runs, tmp_path, capsys):
    """A run named `[/y]` raised Rich's MarkupError (issue 35)."""
    root = tmp_path / "runs [/]"
    run = root / "[/y]" / "r1"
    shutil.copytree(classification_runs[0], run, ignore=shutil.ignore_patterns(".lock"))
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["run"]["name"] = "[/y][bold]x"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["runs", str(root)]) == 0
    out = capsys.readouterr().out
    assert "[/y][bold]x" in out and "runs [/]" in out
