"""One conformance test over every tracker, as tests/data/test_source_conformance.py is over the data sources.

A run that logs, is killed after its checkpoint at step 4 having logged steps 6 and 8, and is resumed
from that checkpoint, drives metrics.jsonl and every tracker of ember.track.TRACKERS (MLflow into a
SQLite store, W&B offline) the way ember.rundir.directory.RunDir does. Each tracker must then hold exactly the
metrics and steps of metrics.jsonl, before the resume and after it (no step twice, no value of the
killed attempt's steps left), and close cleanly: no warning, files closed, runs marked as ended.
No training runs here: the records are given.
"""

import csv
import json
import math
from pathlib import Path

import pytest
from test_trackers import wandb_history

from ember.config import compose
from ember.track import TRACKERS, JsonlLogger, TrackContext, metric_items, open_trackers

# The killed attempt logs these; its last checkpoint was at step 4 (after the first three records).
FIRST = [
    {"step": 2, "epoch": 0, "split": "train", "loss": 2.0, "lr": 0.1},
    {"step": 3, "epoch": 0, "split": "val", "loss": 1.9, "accuracy": 0.25},
    {"step": 4, "epoch": 1, "split": "train", "loss": 1.5, "lr": 0.1, "grad_norm": float("nan")},
    {"step": 6, "epoch": 1, "split": "train", "loss": 1.2, "lr": 0.05},
    {"step": 6, "epoch": 1, "split": "val", "loss": 1.4, "accuracy": 0.5},
    {"step": 8, "epoch": 2, "split": "train", "loss": 1.1, "lr": 0.05},
]
CHECKPOINT_STEP, KEPT = 4, 3
# The resumed attempt logs the same steps again, with other values, and goes on.
SECOND = [
    {"step": 6, "epoch": 1, "split": "train", "loss": 1.3, "lr": 0.05},
    {"step": 6, "epoch": 1, "split": "val", "loss": 1.45, "accuracy": 0.45},
    {"step": 8, "epoch": 2, "split": "train", "loss": 1.0, "lr": 0.05},
    {"step": 10, "epoch": 2, "split": "train", "loss": 0.9, "lr": 0.01},
    {"step": 10, "epoch": 3, "split": "val", "loss": 1.0, "accuracy": 0.75},
]
SUMMARY = {"status": "finished", "steps": 10, "epochs": 3, "metrics": {"test/loss": 0.95, "test/accuracy": 0.7}}


def jsonl_records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def points(records: list[dict]) -> list[tuple[str, int, float]]:
    """(split/metric, step, value) of every finite metric of the records, in a canonical order."""
    return sorted((key, int(r["step"]), value) for r in records for key, value in metric_items(r).items())


# -- what each tracker recorded, read back from its own files or store ---------------------------------
def read_jsonl(run: Path) -> list:
    return points([{k: v for k, v in r.items() if v is not None} for r in jsonl_records(run)])


def read_csv(run: Path) -> list:
    rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
    return points(
        [
            {k: (int(v) if k == "step" else v if k == "split" else float(v)) for k, v in row.items() if v != ""}
            for row in rows
        ]
    )


def read_tensorboard(run: Path) -> list:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = EventAccumulator(str(run / "tb"))
    tb.Reload()
    return sorted((tag, e.step, e.value) for tag in tb.Tags()["scalars"] for e in tb.Scalars(tag))


def read_mlflow(run: Path) -> list:
    from mlflow.tracking import MlflowClient

    state = json.loads((run / "track.json").read_text())["mlflow"]
    client = MlflowClient(tracking_uri=state["uri"])
    keys = client.get_run(state["run_id"]).data.metrics
    return sorted((key, m.step, m.value) for key in keys for m in client.get_metric_history(state["run_id"], key))


def read_wandb(run: Path) -> list:
    return sorted(
        (key, int(row["_step"]), value) for row in wandb_history(run) for key, value in row.items() if "/" in key
    )


READERS = {
    "jsonl": read_jsonl,
    "csv": read_csv,
    "tensorboard": read_tensorboard,
    "mlflow": read_mlflow,
    "wandb": read_wandb,
}
# Trackers that also record the final test metrics (Tracker.finish), at the run's last step.
FINISH_POINTS = {"tensorboard", "mlflow"}


def close_enough(got: list, expected: list) -> bool:
    return [(k, s) for k, s, _ in got] == [(k, s) for k, s, _ in expected] and all(
        math.isclose(a, b, rel_tol=1e-6) for (_, _, a), (_, _, b) in zip(got, expected, strict=True)
    )


# -- one run, killed and resumed ------------------------------------------------------------------------
def attempt(run: Path, cfg, records: list[dict], kept: list[dict] | None, finish: bool) -> tuple[list, list[str]]:
    """Open metrics.jsonl and every tracker as RunDir does, log `records`, end; the loggers and the warnings."""
    warnings: list[str] = []
    purge = None if kept is None else CHECKPOINT_STEP + 1
    loggers = [
        JsonlLogger(run / "metrics.jsonl"),
        *open_trackers(
            list(TRACKERS), TrackContext(run, cfg, "conformance", kept=kept, purge_step=purge), warnings.append
        ),
    ]
    for record in records:
        for logger in loggers:
            logger.log(record)
    inner = [getattr(logger, "tracker", logger) for logger in loggers]  # Guarded lets go of them on close
    for logger in loggers:
        if finish and hasattr(logger, "finish"):
            logger.finish(SUMMARY, {"model_summary.txt": "a model"})
        logger.close()
    return list(zip(loggers, inner, strict=True)), warnings


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """The run after its killed attempt (what each tracker read then) and after its resume."""
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")  # never the network, whatever keys the machine holds
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path_factory.mktemp("tracked")
    run = root / "run"
    run.mkdir()
    cfg = compose([f"run.root={root}"])
    try:
        loggers1, warnings1 = attempt(run, cfg, FIRST, kept=None, finish=False)
        before = {name: read(run) for name, read in READERS.items()}
        # RunDir.reopen: metrics.jsonl keeps the records logged before the checkpoint.
        lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)[:KEPT]
        (run / "metrics.jsonl").write_text("".join(lines))
        loggers2, warnings2 = attempt(run, cfg, SECOND, kept=jsonl_records(run), finish=True)
        yield {"run": run, "before": before, "loggers": loggers1 + loggers2, "warnings": warnings1 + warnings2}
    finally:
        mp.undo()


def test_every_tracker_has_a_reader():
    assert set(READERS) == {"jsonl", *TRACKERS}


@pytest.mark.parametrize("name", READERS)
def test_the_killed_attempt_is_recorded_as_in_metrics_jsonl(name, resumed):
    assert close_enough(resumed["before"][name], points(FIRST))


@pytest.mark.parametrize("name", READERS)
def test_after_resume_each_tracker_holds_the_records_of_metrics_jsonl_once(name, resumed):
    run = resumed["run"]
    expected = points(FIRST[:KEPT] + SECOND)
    assert read_jsonl(run) == expected
    got = READERS[name](run)
    if name in FINISH_POINTS:
        final = sorted((k, SUMMARY["steps"], v) for k, v in SUMMARY["metrics"].items())
        assert close_enough([p for p in got if p[0].startswith("test/")], final)
        got = [p for p in got if not p[0].startswith("test/")]
    assert len({(k, s) for k, s, _ in got}) == len(got), "a step logged twice"
    assert close_enough(got, expected)


def test_every_tracker_starts_and_closes_without_a_warning(resumed):
    assert resumed["warnings"] == []
    names = [getattr(tracker, "name", "jsonl") for _, tracker in resumed["loggers"]]
    assert sorted(names) == sorted(["jsonl", *TRACKERS] * 2)  # none was dropped on a failure


def test_closing_ends_what_each_tracker_holds_open(resumed):
    from mlflow.tracking import MlflowClient

    run = resumed["run"]
    # What each tracker held open: a file, an event writer, a run.
    held = {
        "jsonl": lambda t: not t._file.closed,
        "csv": lambda t: t._file is not None,
        "tensorboard": lambda t: t._writer.all_writers is not None,
        "mlflow": lambda t: t.run_id is not None,
        "wandb": lambda t: t.run is not None,
    }
    assert set(held) == set(READERS)
    for logger, tracker in resumed["loggers"]:
        assert not held[getattr(tracker, "name", "jsonl")](tracker), tracker
        logger.close()  # closing twice is harmless
    state = json.loads((run / "track.json").read_text())
    client = MlflowClient(tracking_uri=state["mlflow"]["uri"])
    assert client.get_run(state["mlflow"]["run_id"]).info.status == "FINISHED"
    # The killed attempt's MLflow run and W&B run are gone: one history per tracker.
    runs = client.search_runs([state["mlflow"]["experiment_id"]])
    assert [r.info.run_id for r in runs] == [state["mlflow"]["run_id"]]
    assert [p.name.split("-")[-1] for p in (run / "wandb").glob("offline-run-*")] == [state["wandb"]["id"]]
