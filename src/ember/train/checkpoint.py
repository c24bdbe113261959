"""Checkpoint files: written atomically, read without executing code."""

import os
import random
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from ember.errors import CheckpointError
from ember.files import fsync_dir, publish, temp_path, write_atomic  # noqa: F401 (fsync_dir: used as checkpoint.fsync_dir)


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save through ember.files.write_atomic, fsynced: a reader (or a job killed
    mid-write) sees the old checkpoint or the new one, never half of one."""
    write_atomic(path, lambda f: torch.save(obj, f))


def load(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; check the run directory (ember runs lists them)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read ({type(e).__name__}); it is corrupt or not an ember checkpoint") from None


def rng_state() -> dict:
    """Every random generator the loop draws from, in types that weights_only loading accepts."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(x):
    return tuple(_as_tuples(i) for i in x) if isinstance(x, (list, tuple)) else x


class CheckpointFiles:
    """The checkpoints of a run: `step-<N>.pt` (the newest K kept), `last.pt` (the newest, a
    hard link), and `best.pt`. A new file is committed before any old one is deleted."""

    def __init__(self, directory: Path, keep: int):
        self.dir = Path(directory)
        self.keep = max(1, keep)

    def steps(self) -> list[Path]:
        """Step checkpoints, newest first."""
        return sorted(self.dir.glob("step-*.pt"), reverse=True)

    def save(self, trainer, step: int) -> Path:
        path = self.dir / f"step-{step:09d}.pt"
        save_atomic(capture(trainer), path)
        self._link_last(path)
        for old in self.steps()[self.keep :]:
            old.unlink(missing_ok=True)
        return path

    def save_best(self, trainer) -> None:
        save_atomic(capture(trainer), self.dir / "best.pt")

    def _link_last(self, path: Path) -> None:
        tmp = temp_path(self.dir / "last.pt")
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)
            publish(tmp, self.dir / "last.pt")
        except OSError:  # a filesystem without hard links: write a copy
            tmp.unlink(missing_ok=True)
            save_atomic(load(path), self.dir / "last.pt")

    def newest_good(self, warn) -> tuple[dict, Path]:
        """The newest checkpoint that loads; `warn(message)` is told about each one that does not."""
        if not self.steps() and any(self.dir.glob("step-*.dcp")):
            raise CheckpointError(f"{str(self.dir)!r} holds trainer.strategy=fsdp checkpoints; resume with trainer.strategy=fsdp")
        candidates = self.steps() or ([self.dir / "last.pt"] if (self.dir / "last.pt").exists() else [])
        for path in candidates:
            try:
                return load(path), path
            except CheckpointError as e:
                warn(f"{e}; falling back to the previous checkpoint")
        raise CheckpointError(f"no readable checkpoint in {str(self.dir)!r}; start a new run without resume=")


def capture(trainer, weights: bool = True) -> dict:
    """Everything needed to continue exactly: weights, optimizer, schedules, scaler, every RNG,
    the position in the data (epoch, batch), the partial logging interval and the number of
    metric records written, with the config and DataSpec it was trained with. `weights=False`
    leaves out the model and optimizer, which sharded checkpoints keep in their own files."""
    return {
        **({"model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict()} if weights else {}),
        "scheduler": trainer.scheduler.state_dict() if trainer.scheduler is not None else None,
        "warmup": trainer.warmup.state_dict() if trainer.warmup is not None else None,
        "scaler": trainer.scaler.state_dict(),
        "state": asdict(trainer.state),
        "total_steps": trainer.total_steps,
        "rng": rng_state(),
        "interval": trainer.meter.state_dict(),
        "records": trainer.run.records if trainer.run else 0,
        "config": OmegaConf.to_container(trainer.cfg, resolve=True),
        "spec": trainer.spec.to_dict(),
    }


def restore(trainer, ckpt: dict) -> str | None:
    """Continue from a checkpoint; returns a note when the schedule length changed."""
    note = None
    # Schedulers add keys to the param groups (initial_lr, max_lr, ...); a checkpoint written
    # under another schedule lacks them, so the keys of the current schedule are kept.
    before = [dict(g) for g in trainer.optimizer.param_groups]
    if "sharded" in ckpt:  # a trainer.strategy=fsdp checkpoint directory (ember.train.sharded)
        from ember.train.sharded import load_weights

        load_weights(trainer, Path(ckpt["sharded"]))
    else:
        trainer.model.load_state_dict(ckpt["model"])
        trainer.optimizer.load_state_dict(ckpt["optimizer"])
    for group, old in zip(trainer.optimizer.param_groups, before):
        for key, value in old.items():
            group.setdefault(key, value)
    trainer.scaler.load_state_dict(ckpt["scaler"])
    trainer.state = type(trainer.state)(**{**ckpt["state"], "stop_reason": None})
    if trainer.warmup is not None and ckpt["warmup"] is not None:
        trainer.warmup.load_state_dict(ckpt["warmup"])
    if trainer.scheduler is not None:
        if ckpt["scheduler"] is not None and (ckpt["total_steps"] == trainer.total_steps or trainer.plateau):
            trainer.scheduler.load_state_dict(ckpt["scheduler"])
        elif not trainer.plateau:
            # A new length: the new schedule, advanced to the current step.
            with warnings.catch_warnings():  # "scheduler stepped before optimizer": on purpose
                warnings.simplefilter("ignore")
                for _ in range(trainer.state.step):
                    trainer.scheduler.step()
            note = f"the lr schedule now spans {trainer.total_steps} steps instead of {ckpt['total_steps']}"
    set_rng_state(ckpt["rng"])
    trainer.meter.load_state_dict(ckpt["interval"])
    trainer._grad_norm = None
    trainer._epoch = trainer.state.epoch + (1 if trainer.state.batch else 0)
    return note
