"""Processes: tune.jobs workers, Ctrl-C, and workers sharing a study in PostgreSQL, one of them killed."""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from tune_support import LR, TINY

from ember.tune import tune_command
from ember.tune.budget import counted
from ember.tune.storage import with_driver

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120"}


def _ember_tune(args, cwd) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ember", "tune", *args],
        cwd=cwd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(predicate, timeout: float, what: str, process: subprocess.Popen):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"ember tune exited with {process.returncode} while waiting for {what}:\n{out}\n{err}")
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"timed out waiting for {what}")


def test_jobs_run_trials_in_worker_processes(runs, capsys):
    assert tune_command(TINY + [f"run.root={runs}", "tune.jobs=2", "tune.trials=3", "tune.sampler=random", LR]) == 0
    assert "2 workers" in capsys.readouterr().out
    (study_dir,) = (runs / "mnist1d-mlp").glob("tune-*")
    study = optuna.load_study(
        study_name=json.loads((study_dir / "study.json").read_text())["name"],
        storage=f"sqlite:///{study_dir / 'study.db'}",
    )
    trials = counted(study.trials)
    assert len(trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    pids = {t.user_attrs["worker"].rsplit(":", 1)[1] for t in trials}
    # Processes, not threads of this one. (Which of the two took which trial depends on how fast
    # each started, so one may have taken them all.)
    assert str(os.getpid()) not in pids and 1 <= len(pids) <= 2
    # The two workers share the CPUs: each trial's thread budget is half of them.
    summaries = [json.loads(p.read_text()) for p in study_dir.rglob("summary.json")]
    assert len(summaries) == 3 and {s["threads"]["budget"] for s in summaries} == {
        max(1, len(os.sched_getaffinity(0)) // 2)
    }


def test_ctrl_c_leaves_the_study_consistent_and_a_rerun_finishes_it(tmp_path, capsys):
    runs = tmp_path / "runs"
    args = TINY + ["trainer.max_epochs=40", f"run.root={runs}", "tune.trials=2", "tune.sampler=random", LR]
    p = _ember_tune(args, tmp_path)
    metrics = _wait_for(
        lambda: next(iter(runs.glob("mnist1d-mlp/tune-*/trial-0/metrics.jsonl")), None), 120, "trial 0 to train", p
    )
    _wait_for(lambda: '"val"' in metrics.read_text(), 60, "a validation", p)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 75, out + err
    assert "preempted: preempted by SIGINT" in err and "trial 0 is queued again; continue with the same command" in err
    study_dir = metrics.parent.parent
    study = optuna.load_study(
        study_name=json.loads((study_dir / "study.json").read_text())["name"],
        storage=f"sqlite:///{study_dir / 'study.db'}",
    )
    lost, rerun = study.trials
    assert (
        lost.state == optuna.trial.TrialState.FAIL
        and rerun.state == optuna.trial.TrialState.WAITING
        and rerun.params == lost.params
    )
    summary = json.loads((study_dir / "trial-0" / "summary.json").read_text())
    assert summary["status"] == "failed" and "trial 0 lost: preempted by SIGINT" in summary["error"]

    assert tune_command(args) == 0  # the same command: the lost trial is run again, then one more
    out = capsys.readouterr().out
    assert "trial 1 (rerun of 0): val/loss" in out and "trial 2: val/loss" in out
    study = optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{study_dir / 'study.db'}")
    assert [t.number for t in counted(study.trials)] == [1, 2] and "1 lost" in out


# -- PostgreSQL ---------------------------------------------------------------------------------


def _pg_bin() -> Path | None:
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True):
        if os.access(f"{d}/initdb", os.X_OK) and os.access(f"{d}/pg_ctl", os.X_OK):
            return Path(d)
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server on a loopback port, run as the postgres user when we are root."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql (.ci/run does)"
        )
    pytest.importorskip("psycopg2", reason="psycopg2 is missing: pip install 'ember[tune]'")
    prefix = []
    root = Path(tempfile.mkdtemp(prefix="ember-pg-"))
    if os.geteuid() == 0:  # the server refuses to run as root
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the server as")
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]

    def run(*cmd):
        subprocess.run(prefix + [str(c) for c in cmd], check=True, capture_output=True, timeout=120, cwd=root)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"
    run(bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(bin_dir / "pg_ctl", "-D", data, "-o", options, "-l", root / "server.log", "-w", "-t", "60", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_postgres_workers_share_a_study_and_a_killed_workers_trial_is_run_again_once(postgres, tmp_path):
    runs = tmp_path / "runs"
    args = TINY + [
        "trainer.max_epochs=40",
        f"run.root={runs}",
        f"tune.storage={postgres}",
        "tune.name=shared",
        "tune.trials=6",
        "tune.heartbeat=1",
        "tune.sampler=random",
        "tune.pruner=none",
        LR,
    ]
    a = _ember_tune(args, tmp_path)
    b = _ember_tune(args, tmp_path)  # the same command on "another node"
    # One storage for every poll: each load_study(storage=URL) opens its own connection pool, and
    # on a loaded machine the polls outnumbered PostgreSQL's 100 connections.
    storage = optuna.storages.RDBStorage(with_driver(postgres))

    def running_trial_of_a():
        try:
            study = optuna.load_study(study_name="shared", storage=storage)
        except KeyError:  # not created yet
            return None
        for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
            if (
                t.user_attrs.get("worker", "").endswith(f":{a.pid}")
                and (Path(t.user_attrs["run_dir"]) / "metrics.jsonl").exists()
            ):
                return t
        return None

    killed = _wait_for(running_trial_of_a, 120, "worker A to be in the middle of a trial", a)
    a.kill()  # SIGKILL: no cleanup, its trial stays RUNNING until its heartbeat goes stale
    a.communicate(timeout=30)
    out, err = b.communicate(timeout=240)
    assert b.returncode == 0, out + err

    trials = optuna.load_study(study_name="shared", storage=storage).trials
    by_number = {t.number: t for t in trials}
    lost = by_number[killed.number]
    assert lost.state == optuna.trial.TrialState.FAIL
    reruns = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(reruns) == 1 and reruns[0].state == optuna.trial.TrialState.COMPLETE and reruns[0].params == lost.params
    budget = counted(trials)
    assert len(budget) == 6 and killed.number not in {t.number for t in budget}  # none lost, none counted twice
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in budget)
    dirs = [t.user_attrs["run_dir"] for t in budget]
    assert len(set(dirs)) == 6 and all(
        json.loads((Path(d) / "summary.json").read_text())["status"] == "finished" for d in dirs
    )
    summary = json.loads((Path(lost.user_attrs["run_dir"]) / "summary.json").read_text())
    assert summary["status"] == "failed" and "lost: its worker stopped sending heartbeats" in summary["error"]
    assert {t.user_attrs["worker"].rsplit(":", 1)[1] for t in budget} <= {str(a.pid), str(b.pid)}
    assert {Path(d).parent.name for d in dirs} == {"tune-shared"}  # nodes agree on the study directory


def test_a_rerun_draws_new_parameters_not_trial_0s_again(runs, capsys):
    """After a killed worker or Ctrl-C the command is run again: its workers used to start the
    sampler's stream from the seed anew, so the first new trial repeated trial 0's parameters."""
    args = TINY + ["trainer.max_epochs=1", f"run.root={runs}", "tune.sampler=random", LR]
    assert tune_command(args + ["tune.trials=1"]) == 0
    assert tune_command(args + ["tune.trials=2"]) == 0  # the same study, one trial more
    (study_dir,) = (runs / "mnist1d-mlp").glob("tune-*")
    study = optuna.load_study(
        study_name=json.loads((study_dir / "study.json").read_text())["name"],
        storage=f"sqlite:///{study_dir / 'study.db'}",
    )
    first, second = study.trials
    assert second.params != first.params
