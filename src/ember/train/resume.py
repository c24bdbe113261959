"""Continuing a run from its newest good checkpoint (`resume=`): the new config checked against
the run's, every rank's state loaded, and rank 0's run directory reopened for writing."""

import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ember.errors import CheckpointError
from ember.rundir.directory import RunDir, resume_run_dir
from ember.track import flatten
from ember.track.console import Console
from ember.train.optim import check_optimizer_state
from ember.train.trainer import Trainer

FIXED_BY_CHECKPOINT = ("model.", "data.")
FREE_TO_CHANGE = {
    "resume",
    "data.num_workers",
    "data.eval_batch_size",
    "data.split",
    "data.fast_path",
    "trainer.progress",
}


def checked_resume_dir(cfg: DictConfig, console: Console) -> Path | None:
    """The run directory that `cfg.resume` names, its saved config.yaml compared with `cfg` (the
    DictConfig: both as the run directory writes them); None for a new run."""
    if not cfg.resume:
        return None
    run_dir = resume_run_dir(cfg)
    check_resume_config(run_dir, cfg, console)
    return run_dir


def check_resume_config(run_dir: Path, cfg: DictConfig, console: Console) -> None:
    old = flatten(OmegaConf.to_container(RunDir.open(run_dir).config(), resolve=True))
    new = flatten(OmegaConf.to_container(cfg, resolve=True))
    changed = [
        k
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k) and k not in FREE_TO_CHANGE and not k.startswith("run.")
    ]
    fixed = [k for k in changed if k.startswith(FIXED_BY_CHECKPOINT)]
    if fixed:
        what = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in fixed)
        raise CheckpointError(
            f"cannot resume {run_dir}: the model or data changed ({what}); "
            "resume with the run's settings or start a new run"
        )
    if changed:
        console.print(
            "resuming with changed settings: " + ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        )


def resume(trainer: Trainer, cfg: DictConfig, run_dir: Path, console: Console) -> RunDir | None:
    """Every rank loads the newest good checkpoint; rank 0 reopens the run directory for writing."""
    run = RunDir.open(run_dir)
    if not trainer.parallel.dist.is_main:
        _load_for_resume(trainer, run, console)
        return None
    run.lock()  # first: a second resume of a live run stops here, before it reads anything
    try:
        ckpt = _load_for_resume(trainer, run, console)
        run.reopen(cfg, ckpt["records"], trainer.state.step)
    except BaseException:
        run.release()
        raise
    return run


def _load_for_resume(trainer: Trainer, run: RunDir, console: Console) -> dict:
    run_dir = run.path
    files = trainer.checkpoint_files(run.checkpoints)
    ckpt, path = files.newest_good(warn=lambda m: console.print(f"warning: {m}"))
    # Compared on the checkpoint's own keys: a checkpoint written before a DataSpec field existed
    # still resumes (the data's shape, classes and statistics are what must not change).
    now = trainer.spec.to_dict()
    changed = [k for k, v in ckpt["spec"].items() if not _same(now.get(k), v)]
    if changed:
        raise CheckpointError(
            f"cannot resume {run_dir}: the data's {', '.join(changed)} now differ from the checkpoint {path.name}'s; "
            "resume with the run's data settings"
        )
    if "sharded" not in ckpt:  # before any optimizer kernel sees it
        check_optimizer_state(trainer.optimizer, ckpt["optimizer"], path)
    try:
        note = trainer.checkpointer.load_state_dict(ckpt)
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(
            f"cannot resume {run_dir}: {path.name} does not fit this model ({str(e).splitlines()[0]})"
        ) from None
    s = trainer.state
    console.print(f"resuming {run.path} from {path.name}: epoch {s.epoch + 1}, batch {s.batch}, step {s.step}")
    if note:
        console.print(f"note: {note}")
    return ckpt


def _same(now, saved) -> bool:
    """The data's spec now and in a checkpoint agree: tuples as lists, and floats to 1e-6: the
    statistics' last bits depend on the thread count (Darcy's target std differed by 5e-12 when a
    run made on two threads was resumed on one)."""
    if isinstance(now, float) or isinstance(saved, float):
        return (
            isinstance(now, (int, float)) and isinstance(saved, (int, float)) and math.isclose(now, saved, rel_tol=1e-6)
        )
    if isinstance(now, (list, tuple)) and isinstance(saved, (list, tuple)):
        return len(now) == len(saved) and all(_same(a, b) for a, b in zip(now, saved))
    return now == saved
