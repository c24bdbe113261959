"""Trackers: every one gets the records of metrics.jsonl at the same optimizer steps, keeps that
true across a resume, and a tracker that fails is one warning line while training goes on."""

import csv
import json
import sys
from pathlib import Path

import pytest
import yaml

from ember.api import compose_for_resume, train
from ember.config import compose
from ember.errors import ConfigError
from ember.track import flatten
from ember.track.console import Console

TINY = [
    "data.num_samples=500",
    "trainer.max_epochs=2",
    "trainer.progress=none",
    "trainer.log_every_n_steps=2",
    "trainer.grad_accum=2",
    "sched=none",
    "run.report=false",
]


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def steps_of(recs: list[dict], split: str, key: str = "loss") -> list[int]:
    return [r["step"] for r in recs if r["split"] == split and r.get(key) is not None]


def wandb_history(run: Path) -> list[dict]:
    """History rows of the run's one offline W&B run, read from its .wandb file (LevelDB log
    format: 32 KiB blocks of records with 7-byte headers, after a 7-byte file header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    files = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    data, pos, buf, rows = files[0].read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracked")
    result = train(
        compose([*TINY, f"run.root={root}", "track=[tensorboard,csv,mlflow,wandb]"]), console=Console("none")
    )
    return root, result.run_dir


def mlflow_client(root: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")


def test_every_tracker_has_the_records_of_metrics_jsonl(tracked):
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    root, run = tracked
    recs = records(run)
    train_steps, val_steps = steps_of(recs, "train"), steps_of(recs, "val")
    assert train_steps == sorted(set(train_steps)) and train_steps == [2, 4, 6]  # grad_accum=2: optimizer steps
    assert val_steps == [3, 6]

    rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
    assert [(int(r["step"]), r["split"]) for r in rows] == [(r["step"], r["split"]) for r in recs]
    assert float(rows[0]["loss"]) == pytest.approx(recs[0]["loss"])

    client = mlflow_client(root)
    state = json.loads((run / "track.json").read_text())
    ml = client.get_run(state["mlflow"]["run_id"])
    assert ml.info.status == "FINISHED" and ml.info.run_name == run.name
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert ml.data.params["optim.lr"] == str(config["optim"]["lr"]) and ml.data.params["model.name"] == "cnn1d"
    assert [m.step for m in client.get_metric_history(ml.info.run_id, "train/loss")] == train_steps
    assert [m.step for m in client.get_metric_history(ml.info.run_id, "val/accuracy")] == val_steps
    assert "test/accuracy" in ml.data.metrics and ml.data.tags["ember.status"] == "finished"
    names = {a.path for a in client.list_artifacts(ml.info.run_id)}
    assert {"config.yaml", "spec.json", "summary.json", "model_summary.txt"} <= names

    history = wandb_history(run)
    assert [h["_step"] for h in history if "train/loss" in h] == train_steps
    assert [h["_step"] for h in history if "val/loss" in h] == val_steps
    files = next((run / "wandb").glob("offline-run-*")) / "files"
    assert (files / "config.yaml").exists() and (files / "model_summary.txt").exists()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = EventAccumulator(str(run / "tb"))
    tb.Reload()
    assert [e.step for e in tb.Scalars("train/loss")] == train_steps
    assert [e.step for e in tb.Scalars("val/loss")] == val_steps


def test_resume_logs_no_step_twice_in_any_tracker(tracked):
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    root, run = tracked
    client = mlflow_client(root)
    old = json.loads((run / "track.json").read_text())
    # What a killed attempt leaves behind: a step logged after its last checkpoint.
    client.log_metric(old["mlflow"]["run_id"], "train/loss", 9.0, step=7)
    cfg, conf = compose_for_resume([f"resume={run}", "trainer.max_epochs=3", "trainer.progress=none"])
    train(cfg, console=Console("none"), conf=conf)
    recs = records(run)
    train_steps = steps_of(recs, "train")
    assert train_steps == [2, 4, 6, 8, 9] and steps_of(recs, "val") == [3, 6, 9]  # 9: the last, partial interval

    new = json.loads((run / "track.json").read_text())
    assert new["mlflow"]["run_id"] != old["mlflow"]["run_id"]
    assert client.get_run(old["mlflow"]["run_id"]).info.lifecycle_stage == "deleted"
    assert [m.step for m in client.get_metric_history(new["mlflow"]["run_id"], "train/loss")] == train_steps
    assert [h["_step"] for h in wandb_history(run) if "train/loss" in h] == train_steps
    rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
    assert [(int(r["step"]), r["split"]) for r in rows] == [(r["step"], r["split"]) for r in recs]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = EventAccumulator(str(run / "tb"))
    tb.Reload()
    assert [e.step for e in tb.Scalars("train/loss")] == train_steps


def test_a_failing_tracker_is_one_warning_and_training_goes_on(tmp_path, monkeypatch, capsys):
    from ember.track.csv_logger import CsvLogger

    calls = []

    def broken_log(self, record):
        calls.append(record)
        if len(calls) > 1:
            raise OSError("disk full")
        return original(self, record)

    original = CsvLogger.log
    monkeypatch.setattr(CsvLogger, "log", broken_log)
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    overrides = [*TINY, f"run.root={tmp_path}", "track=[csv,mlflow,wandb]", "run.mlflow_uri=http://127.0.0.1:9"]
    result = train(compose(overrides), console=Console("none"))
    assert result.summary["status"] == "finished"
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3, warnings
    assert any("tracker mlflow could not start" in w and "127.0.0.1:9 does not answer" in w for w in warnings)
    assert any("tracker wandb is not available" in w and "pip install 'ember[wandb]'" in w for w in warnings)
    assert any("tracker csv failed to log (OSError: disk full); training goes on without it" in w for w in warnings)
    assert len(calls) == 2  # dropped after its failure


def test_track_config():
    with pytest.raises(
        ConfigError,
        match=(
            r"track='mlfow' is not a valid choice; did you mean mlflow\? choose one of: tensorboard, mlflow, wandb, csv"
        ),
    ):
        compose(["track=[mlfow]"])
    assert list(compose([]).track) == ["tensorboard"]
    assert list(compose(["track=csv,mlflow"]).track) == ["csv", "mlflow"]  # brackets optional
    assert list(compose(["track=[]"]).track) == []


def test_tensorboard_off_with_the_older_switch(tmp_path):
    run = train(
        compose([*TINY, f"run.root={tmp_path}", "trainer.tensorboard=false", "track=[tensorboard,csv]"]),
        console=Console("none"),
    ).run_dir
    assert not (run / "tb").exists() and (run / "metrics.csv").exists()


def test_flatten_gives_dotted_keys_and_keeps_an_empty_mapping_as_a_value():
    nested = {"model": {"name": "mlp", "kwargs": {}}, "trainer": {"ema": {"decay": 0.99}}, "seed": 0}
    assert flatten(nested) == {"model.name": "mlp", "model.kwargs": {}, "trainer.ema.decay": 0.99, "seed": 0}
    assert flatten(None) == {}
