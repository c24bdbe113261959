"""Never lose work: real training processes killed with SIGKILL and resumed, compared bit for bit."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

BASE = [
    "data.num_samples=1000",  # 720 train samples: 23 steps per epoch at batch 32
    "data.batch_size=32",
    "trainer.max_epochs=3",
    "trainer.deterministic=true",
    "trainer.checkpoint_every_n_steps=1",
    "trainer.progress=none",
    "trainer.tensorboard=false",
    "trainer.log_every_n_steps=5",
]


def _env():
    # The default thread policy, not the suite's one thread (conftest.py): a deterministic run must
    # fix its thread count itself and keep it across a resume. Pinned, these tests passed while
    # `trainer.deterministic=true` runs resumed with another count ended with other weights.
    return {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}


def _train(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "ember", "train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )


def _newest_step(run: Path) -> int:
    steps = [int(p.stem.split("-")[1]) for p in (run / "checkpoints").glob("step-*.pt")]
    return max(steps, default=0)


def _train_and_kill(args, run: Path, at_step: int, cwd) -> None:
    """Start training and SIGKILL it once a checkpoint at or past `at_step` exists."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ember", "train", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    while proc.poll() is None:
        if run.exists() and _newest_step(run) >= at_step:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.002)
    raise AssertionError(
        f"training ended (exit {proc.returncode}) before the kill at step {at_step}: {proc.stderr.read()[-2000:]}"
    )


def _weights(run: Path) -> dict:
    return load_file(run / "model.safetensors")


def _assert_equal_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize(
    "extra, seed",
    [([], 1), (["data.fast_path=false", "data.num_workers=2"], 2), (["trainer.ema=0.9"], 3)],
    ids=["fast-path", "dataloader-2-workers", "weight-average"],
)
def test_killed_and_resumed_runs_end_bit_exact(tmp_path, extra, seed):
    args = BASE + extra
    ref = tmp_path / "reference"
    r = _train(*args, f"run.dir={ref}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    total = json.loads((ref / "summary.json").read_text())["steps"]

    run = tmp_path / "killed"
    rng = random.Random(seed)
    # Several kills, two of them inside the same epoch.
    targets = sorted(rng.sample(range(2, 23), 2) + rng.sample(range(24, total - 2), 2))
    first = ["run.dir=" + str(run)]
    for i, step in enumerate(targets):
        _train_and_kill(args + (first if i == 0 else [f"resume={run}"]), run, step, tmp_path)
        assert _newest_step(run) >= step
    r = _train(f"resume={run}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stdout
    _assert_equal_weights(_weights(ref), _weights(run))

    # metrics.jsonl continues without a duplicate step, and holds what the reference logged.
    def records(p):
        return [json.loads(line) for line in (p / "metrics.jsonl").read_text().splitlines()]

    resumed, reference = records(run), records(ref)
    keys = [(r["split"], r["step"]) for r in resumed]
    assert len(keys) == len(set(keys)), "a step was logged twice"
    assert keys == [(r["split"], r["step"]) for r in reference]
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in reference])
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"


def _start(args, cwd, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "ember", "train", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or _env(),
    )


def _wait_for_step(proc, run: Path, step: int):
    while _newest_step(run) < step:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.005)


LONG = [
    "data.num_samples=1000",
    "data.batch_size=32",
    "trainer.max_epochs=200",
    "trainer.progress=none",
    "trainer.tensorboard=false",
    "trainer.checkpoint_every_n_steps=1",
]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_stop_signals_checkpoint_and_exit_75(tmp_path, sig):
    run = tmp_path / "run"
    proc = _start(LONG + [f"run.dir={run}"], tmp_path)
    _wait_for_step(proc, run, 3)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    name = signal.Signals(sig).name
    assert err.startswith(f"preempted: preempted by {name} at step ") and f"resume={run}" in err
    assert err.count("\n") == 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "preempted"
    # The checkpoint is the step the signal interrupted, and it is what last.pt points to.
    step = summary["steps"]
    assert _newest_step(run) == step
    ckpt = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert ckpt["state"]["step"] == step


def test_requeue_calls_scontrol_under_slurm(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "scontrol.log"
    fake = bin_dir / "scontrol"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n")
    fake.chmod(0o755)
    env = {**_env(), "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}
    run = tmp_path / "run"
    proc = _start(LONG + [f"run.dir={run}", "trainer.requeue=true"], tmp_path, env)
    _wait_for_step(proc, run, 2)
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert log.read_text().strip() == "requeue 4242"
    assert "the job was requeued" in err


def test_second_sigint_exits_at_once(tmp_path):
    run = tmp_path / "run"
    # A slow loop (a DataLoader with workers) so the first SIGINT is still being honoured.
    proc = _start(
        LONG + [f"run.dir={run}", "data.fast_path=false", "data.num_workers=1", "trainer.checkpoint_every_n_steps=0"],
        tmp_path,
    )
    # Wait for the first logged step: the loop is running, with its handlers installed. (The run
    # directory exists a moment earlier, and a child of a process that ignores SIGINT, as a shell's
    # background jobs do, ignores it until then.)
    while not (run / "metrics.jsonl").exists() or not (run / "metrics.jsonl").read_text():
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode in (75, 130), err  # 130 unless the first stop completed before the second arrived
    assert "Traceback" not in err


QUICK = [
    "data.num_samples=500",
    "data.batch_size=32",
    "trainer.max_epochs=1",
    "trainer.progress=none",
    "trainer.tensorboard=false",
    "trainer.checkpoint_every_n_steps=1",
]


def _cli(capsys, *args) -> tuple[int, str, str]:
    """`ember ...` in this process: the same entry point, without a new interpreter's start-up."""
    from ember.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("finished") / "run"
    from ember.cli import main

    assert main(["train", *QUICK, f"run.dir={run}"]) == 0
    return run


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, finished_run, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    steps = sorted((run / "checkpoints").glob("step-*.pt"))
    assert len(steps) == 3  # keep_checkpoints=3: the older ones were deleted
    newest = steps[-1]
    newest.write_bytes(newest.read_bytes()[:100])  # truncated, as by a full disk
    code, out, err = _cli(capsys, "train", f"resume={run}", "trainer.max_epochs=2")
    assert code == 0, err
    assert f"warning: checkpoint '{newest}' cannot be read" in out and "falling back" in out
    assert f"resuming {run} from {steps[-2].name}" in out
    assert "resuming with changed settings: trainer.max_epochs 1 -> 2" in out


def test_a_crash_while_saving_never_leaves_a_torn_checkpoint(tmp_path):
    run = tmp_path / "run"
    rng = random.Random(0)
    for i in range(3):
        args = BASE + ["trainer.max_epochs=50"] + ([f"run.dir={run}"] if i == 0 else [f"resume={run}"])
        proc = _start(args, tmp_path)
        _wait_for_step(proc, run, _newest_step(run) + 2)
        time.sleep(rng.uniform(0, 0.02))  # somewhere inside the next few saves
        proc.kill()
        proc.wait()
        for path in (run / "checkpoints").glob("*.pt"):
            torch.load(path, weights_only=True)  # every committed file is whole


@pytest.mark.parametrize(
    "args, expected",
    [
        (["model.channels=32"], "error: cannot resume {run}: the model or data changed (model.channels 64 -> 32)"),
        (
            ["data.num_samples=2000"],
            "error: cannot resume {run}: the model or data changed (data.num_samples 500 -> 2000)",
        ),
    ],
)
def test_resume_refuses_a_changed_model_or_data(finished_run, capsys, args, expected):
    code, out, err = _cli(capsys, "train", f"resume={finished_run}", *args)
    assert code == 2
    assert err.startswith(expected.format(run=finished_run)), err


def test_resume_mistakes_are_clear_errors(tmp_path, finished_run, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _cli(capsys, "train", "resume=nowhere")
    assert code == 2 and err.startswith("error: 'nowhere' is not a run directory")
    code, out, err = _cli(capsys, "train", "resume=auto")
    assert code == 2 and "resume=auto found no unfinished run" in err
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    for p in (run / "checkpoints").glob("*.pt"):
        p.write_bytes(b"garbage")
    code, out, err = _cli(capsys, "train", f"resume={run}")
    assert code == 2 and "error: no readable checkpoint in" in err


def test_resume_auto_picks_the_newest_unfinished_run(tmp_path):
    proc = _start(LONG, tmp_path)
    (run,) = _wait_for_run(tmp_path)
    _wait_for_step(proc, run, 2)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    r = _train("resume=auto", "trainer.max_epochs=1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"resuming {run.relative_to(tmp_path)}" in r.stdout


def _wait_for_run(root: Path):
    while True:
        found = list(root.glob("runs/*/*/config.yaml"))
        if found:
            return [p.parent for p in found]
        time.sleep(0.01)


def test_stop_signal_to_the_process_group_with_loader_workers_is_a_clean_preemption(tmp_path):
    """scancel and most batch systems signal the whole process group: the DataLoader workers get
    SIGTERM too. Their death used to fail the run mid-step (a traceback, exit 1, no checkpoint)."""
    import h5py
    import numpy as np

    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["x"] = rng.normal(size=(400, 2, 12)).astype(np.float32)
        f["y"] = rng.normal(size=(400, 1)).astype(np.float32)
    run = tmp_path / "run"
    args = [
        "data=hdf5",
        f"data.path={tmp_path / 'd.h5'}",
        "data.num_workers=2",
        "data.batch_size=16",
        "trainer.max_epochs=200",
        "trainer.progress=none",
        "trainer.tensorboard=false",
        "trainer.checkpoint_every_n_steps=1",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ember", "train", *args, f"run.dir={run}"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        start_new_session=True,
    )
    _wait_for_step(proc, run, 2)
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert err.startswith("preempted: preempted by SIGTERM at step ") and err.count("\n") == 1, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "preempted" and _newest_step(run) == summary["steps"]
    r = _train(f"resume={run}", "trainer.max_epochs=1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"resuming {run} from step-{summary['steps']:09d}.pt" in r.stdout


def test_a_stop_signal_during_the_final_test_is_a_preemption(tmp_path, capsys, monkeypatch):
    """The final test runs after the loop: a batch system's SIGTERM there killed the process and
    left summary.json "running". Now the run ends as preempted, and the resume tests again."""
    from ember.train.trainer import Trainer

    finish = Trainer._finish

    def signalled(self):
        signal.raise_signal(signal.SIGTERM)  # as if it arrived while the test split is evaluated
        return finish(self)

    monkeypatch.setattr(Trainer, "_finish", signalled)
    run = tmp_path / "run"
    code, out, err = _cli(capsys, "train", *QUICK, f"run.dir={run}")
    assert code == 75 and err.startswith("preempted: preempted by SIGTERM at step "), err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "preempted" and Path(summary["checkpoint"]).name == f"step-{summary['steps']:09d}.pt"
    monkeypatch.setattr(Trainer, "_finish", finish)
    code, out, err = _cli(capsys, "train", f"resume={run}")
    assert code == 0, err
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"


def test_a_stop_signal_while_the_run_records_its_end_lets_it_finish(tmp_path, capsys, monkeypatch):
    """After training, the baselines, the weights and summary.json take a few seconds: a SIGTERM
    there killed the process with summary.json still "running"; now the run finishes its record."""
    import ember.api

    scores = ember.api._baselines

    def signalled(trainer, metrics):
        signal.raise_signal(signal.SIGTERM)
        return scores(trainer, metrics)

    monkeypatch.setattr(ember.api, "_baselines", signalled)
    run = tmp_path / "run"
    code, out, err = _cli(capsys, "train", *QUICK, f"run.dir={run}")
    assert code == 0, err
    assert (
        json.loads((run / "summary.json").read_text())["status"] == "finished" and (run / "model.safetensors").exists()
    )
