"""The run directory: one writer at a time, and nothing half-made left by a start that fails."""

import ast
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from run_support import DAMAGE, damage

import ember
from ember.cli import main
from ember.config import compose
from ember.data.spec import DataSpec
from ember.errors import CheckpointError, EmberError
from ember.rundir.directory import RunDir
from ember.rundir.record import RunRecord

TINY = ["experiment=linear_regression", "trainer.max_epochs=3", "trainer.progress=none", "track=[]"]


def test_a_second_train_or_resume_of_a_held_run_is_refused_and_a_killed_holder_is_recovered(
    ember_cli, tmp_path, hold_lock
):
    run = tmp_path / "run"
    run.mkdir()
    holder = hold_lock(run)
    stale = run / f".summary.json.{holder.pid}.tmp"  # what a writer killed mid-write leaves
    stale.write_text("{")
    refused = ember_cli("train", *TINY, f"run.dir={run}")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith("error: ") and len(refused.stderr.strip().splitlines()) == 1
    assert f"in use by process {holder.pid}" in refused.stderr
    assert not (run / "config.yaml").exists()

    first = ember_cli("train", *TINY, f"run.dir={run}")  # the SIGKILLed holder's lock is gone
    assert first.returncode == 0, first.stderr
    assert (run / "summary.json").is_file() and not stale.exists()

    holder = hold_lock(run)
    metrics = (run / "metrics.jsonl").read_text()
    again = ember_cli("train", f"resume={run}", "trainer.max_epochs=6")
    holder.stdin.close()
    holder.wait()
    assert again.returncode == 2 and f"in use by process {holder.pid}" in again.stderr
    assert "resuming " + str(run) not in again.stdout  # refused before it read the checkpoint
    assert (run / "metrics.jsonl").read_text() == metrics
    resumed = ember_cli("train", f"resume={run}", "trainer.max_epochs=6")
    assert resumed.returncode == 0, resumed.stderr


@pytest.mark.parametrize("given_dir", [False, True])
def test_a_start_that_fails_leaves_no_run_behind(tmp_path, monkeypatch, given_dir):
    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("ember.rundir.directory.open_trackers", no_space)
    mine = tmp_path / "mine" / "notes.txt"  # run.dir may be a folder the user made, with their files
    mine.parent.mkdir()
    mine.write_text("keep")
    where = f"run.dir={mine.parent}" if given_dir else f"run.root={tmp_path / 'runs'}"
    cfg = compose([*TINY, where])
    spec = DataSpec(input_shape=(1,), task="regression", target_shape=(1,))
    with pytest.raises(EmberError, match="cannot write the run directory .*No space left on device"):
        RunDir.create(cfg, spec)
    assert [p.name for p in mine.parent.iterdir()] == ["notes.txt"]
    assert not list((tmp_path / "runs").rglob("*"))[1:]  # at most the experiment's empty folder
    monkeypatch.undo()
    RunDir.create(cfg, spec).close()  # and the lock was released: the same start now succeeds


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    from ember.api import train

    cfg = compose(
        [
            "model=mlp",
            "data=digits",
            "model.width=16",
            "trainer.max_epochs=1",
            "trainer.progress=none",
            "track=[]",
            "run.report=false",
            f"run.root={tmp_path_factory.mktemp('runs')}",
        ]
    )
    return train(cfg).run_dir


COMMANDS = {
    "eval": lambda run, tmp: ["eval", f"run={run}"],
    "export": lambda run, tmp: ["export", f"run={run}", "format=safetensors", f"out={tmp / 'model.safetensors'}"],
    "predict": lambda run, tmp: ["predict", f"run={run}", f"input={tmp / 'x.npy'}", f"output={tmp / 'y.csv'}"],
    "bench": lambda run, tmp: [
        "bench",
        f"run={run}",
        "batch_sizes=1",
        "iters=1",
        "warmup=0",
        "backends=eager",
        f"out={tmp / 'bench.json'}",
    ],
    "resume": lambda run, tmp: ["train", f"resume={run}", "trainer.max_epochs=2"],
}


# resume reads the run's config and its step checkpoints, not spec.json or best.pt
CASES = [(kind, command) for kind in DAMAGE for command in COMMANDS if command != "resume" or kind.startswith("config")]


@pytest.mark.parametrize(("kind", "command"), CASES)
def test_a_damaged_run_is_one_line_error_naming_the_file(digits_run, tmp_path, capsys, kind, command):
    spec = RunDir(digits_run).spec()
    np.save(tmp_path / "x.npy", np.zeros((2, *spec.input_shape), dtype=np.float32))
    run, name = damage(digits_run, kind, tmp_path / "run")
    capsys.readouterr()
    assert main(COMMANDS[command](run, tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert name in err and "restore" in err


def test_weights_keep_the_tensors_of_a_state_dict_with_extra_state(tmp_path):
    """neuraloperator's models put a dict of their arguments in their state dict: safetensors takes tensors only."""
    import torch
    from safetensors.torch import load_file

    cfg = compose([f"run.dir={tmp_path / 'run'}"])
    run = RunDir.create(cfg, DataSpec(input_shape=(2,), task="regression"), {})
    run.save_weights({"w": torch.ones(2), "_metadata": {"args": [1, 2]}})
    assert list(load_file(run.path / "model.safetensors")) == ["w"]


# -- symbolic links planted in a run directory ------------------------------------------------------


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("entry", [".lock", "metrics.jsonl", "checkpoints"])
def test_train_into_a_folder_with_a_planted_link_is_refused_and_writes_nothing_outside(tmp_path, capsys, entry):
    victim = tmp_path / "victim"
    victim.mkdir() if entry == "checkpoints" else victim.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    (run / entry).symlink_to(victim)
    assert main(["train", *TINY, f"run.dir={run}"]) == 2
    assert "is a symbolic link in the run directory" in _one_line_error(capsys)
    assert (list(victim.iterdir()) == []) if victim.is_dir() else victim.read_text() == "precious"
    assert sorted(p.name for p in run.iterdir()) == [entry]


def test_resume_of_a_run_with_a_linked_lock_is_refused_and_the_target_untouched(digits_run, tmp_path, capsys):
    import shutil

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run = tmp_path / "run"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns(".lock"))
    (run / ".lock").symlink_to(victim)
    assert main(["train", f"resume={run}", "trainer.max_epochs=2"]) == 2
    assert ".lock' is a symbolic link" in _one_line_error(capsys)
    assert victim.read_text() == "precious"


def test_export_into_a_linked_export_folder_is_refused(digits_run, tmp_path, capsys):
    import shutil

    outside = tmp_path / "outside"
    outside.mkdir()
    run = tmp_path / "run"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns(".lock"))
    (run / "export").symlink_to(outside, target_is_directory=True)
    assert main(["export", f"run={run}", "format=safetensors"]) == 2
    assert "export' is a symbolic link" in _one_line_error(capsys)
    assert not list(outside.iterdir())


# -- interpolations in a run's config.yaml ----------------------------------------------------------


def test_a_run_config_is_never_resolved_against_the_environment(digits_run, tmp_path, monkeypatch):
    """`ember export` wrote the value of ${oc.env:NAME} in config.yaml into the export's metadata."""
    import shutil

    from safetensors import safe_open

    monkeypatch.setenv("EMBER_TEST_SECRET", "hunter2")
    run = tmp_path / "run"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns(".lock"))
    text = (run / "config.yaml").read_text()
    text = text.replace("\n  name: null", "\n  name: ${oc.env:EMBER_TEST_SECRET}", 1)
    (run / "config.yaml").write_text(text.replace("\n  mlflow_uri: null", "\n  mlflow_uri: a\\${x} ${now:%Y}", 1))
    cfg = RunDir(run).config()  # kept as written: no resolver runs, none reads the environment
    assert cfg.run.name == "${oc.env:EMBER_TEST_SECRET}" and cfg.run.mlflow_uri == "a\\${x} ${now:%Y}"
    out = tmp_path / "model.safetensors"
    assert main(["export", f"run={run}", "format=safetensors", f"out={out}"]) == 0
    with safe_open(str(out), "pt") as f:
        meta = str(f.metadata())
    written = meta + out.with_name(out.name + ".json").read_text()
    assert "hunter2" not in written and "${oc.env:EMBER_TEST_SECRET}" in written
    # resume composes the saved values again as overrides: still literal
    assert main(["train", f"resume={run}", "trainer.max_epochs=2", "trainer.progress=none"]) == 0
    assert RunDir(run).config().run.mlflow_uri == "a\\${x} ${now:%Y}"
    assert not [p for p in run.rglob("*") if p.is_file() and b"hunter2" in p.read_bytes()]


# -- summary.json: one writer, explicit transitions ---------------------------------------------


def read_summary(path) -> dict:
    return json.loads((path / "summary.json").read_text())


def test_a_run_goes_from_started_to_finished_and_each_transition_keeps_what_came_before(tmp_path):
    record = RunRecord(tmp_path)
    assert record.status() is None and record.read() == {}
    started = record.started()
    assert started["status"] == "running" and started["pid"] == os.getpid() and "environment" in started
    facts = {"run_dir": str(tmp_path), "params": 3, "metrics": {"test/mse": 0.5}}
    written = record.finished(facts)
    assert written == read_summary(tmp_path)
    assert written == {**started, **facts, "status": "finished"}
    assert next(iter(written)) == "status"  # where `ember runs` and a reader's eye look first
    record.annotated("compression", {"method": "magnitude"})
    assert read_summary(tmp_path) == {**written, "compression": {"method": "magnitude"}}


def test_a_failure_records_the_error_and_ctrl_c_is_interrupted(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = RunRecord(tmp_path / "a"), RunRecord(tmp_path / "b")
    a.started()
    b.started()
    failed = a.failed(ValueError("bad batch"), {"params": 3})
    assert failed["status"] == "failed" and failed["error"] == "ValueError: bad batch" and failed["params"] == 3
    assert b.failed(KeyboardInterrupt())["status"] == "interrupted"
    # tune restates a trial its lost worker left, as a text
    assert b.failed("trial 3 lost: killed")["error"] == "trial 3 lost: killed"
    assert read_summary(tmp_path / "b")["status"] == "failed"


def test_a_preempted_run_resumes_and_a_pruned_trial_drops_the_loops_error(tmp_path):
    record = RunRecord(tmp_path)
    record.started()
    preempted = record.preempted(40, tmp_path / "checkpoints" / "step-40.pt")
    assert preempted["steps"] == 40 and preempted["checkpoint"].endswith("step-40.pt")
    resumed = record.resumed()
    assert resumed["status"] == "running" and resumed["steps"] == 40  # what the first attempt recorded stays
    record.failed(RuntimeError("TrialPruned: pruned at epoch 2"))
    pruned = record.pruned("pruned at epoch 2 (validation 2): val/loss 0.3", 2)
    assert pruned["status"] == "pruned" and pruned["validations"] == 2 and "error" not in pruned
    assert read_summary(tmp_path) == pruned


@pytest.mark.parametrize(
    ("before", "transition"),
    [
        (["started", "failed"], "finished"),  # a failed run did not also finish
        (["started", "finished"], "failed"),
        (["started", "finished"], "preempted"),
        (["started", "finished"], "pruned"),
        (["started"], "started"),  # a run starts once; resuming is another transition
        ([], "finished"),  # no summary.json: it was never started
        (["started"], "annotated"),  # only a finished run is annotated
    ],
)
def test_an_illegal_transition_is_refused_naming_both_states_and_leaves_the_file(tmp_path, before, transition):
    record = RunRecord(tmp_path)
    calls = {
        "started": record.started,
        "failed": lambda: record.failed(ValueError("x")),
        "finished": lambda: record.finished({"metrics": {}}),
        "preempted": lambda: record.preempted(1, None),
        "pruned": lambda: record.pruned("pruned", 1),
        "annotated": lambda: record.annotated("compression", {}),
    }
    for name in before:
        calls[name]()
    kept = (tmp_path / "summary.json").read_text() if before else None
    with pytest.raises(
        CheckpointError, match=rf"cannot record .* as {transition}: its summary.json (says the run is|is missing)"
    ):
        calls[transition]()
    assert ((tmp_path / "summary.json").read_text() if before else None) == kept
    assert not (tmp_path / "summary.json").exists() or before


def test_run_dir_refuses_to_write_summary_json_outside_the_record(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(ValueError, match="transitions"):
        run.write_json("summary.json", {"status": "finished"})
    assert not (tmp_path / "summary.json").exists()


WRITERS = {"write", "write_atomic", "write_json", "write_text", "write_bytes", "publish", "dump", "open", "save"}


def writes_summary_json(tree: ast.AST) -> list[str]:
    """Functions (and the module body) that name summary.json and also call a writer: the way each
    former writer did it (a path joined with the name, then write_atomic or write_json)."""
    defs = (ast.FunctionDef, ast.AsyncFunctionDef)
    scopes = [("<module>", [s for s in tree.body if not isinstance(s, (*defs, ast.ClassDef))])]
    scopes += [(n.name, [n]) for n in ast.walk(tree) if isinstance(n, defs)]
    found = []
    for name, statements in scopes:
        nodes = [n for statement in statements for n in ast.walk(statement)]
        names = any(isinstance(n, ast.Constant) and n.value == "summary.json" for n in nodes)
        calls = {getattr(n.func, "attr", getattr(n.func, "id", None)) for n in nodes if isinstance(n, ast.Call)}
        if names and calls & WRITERS:
            found.append(name)
    return found


def test_no_module_but_the_run_record_writes_summary_json():
    src = Path(ember.__file__).parent
    offenders = {}
    for path in sorted(src.rglob("*.py")):
        if path == src / "rundir" / "record.py":
            continue
        if found := writes_summary_json(ast.parse(path.read_text())):
            offenders[str(path.relative_to(src))] = found
    assert offenders == {}, f"summary.json is written by ember.rundir.record.RunRecord's transitions only: {offenders}"
    # The check catches the way the writers wrote it before.
    before = 'def rewrite(run_dir):\n    path = run_dir / "summary.json"\n    write_atomic(path, "{}")\n'
    assert writes_summary_json(ast.parse(before)) == ["rewrite"]
    assert writes_summary_json(ast.parse('run.write_json("summary.json", {})\n')) == ["<module>"]
