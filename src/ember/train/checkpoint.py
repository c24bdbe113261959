"""Checkpoints: the Checkpointer (what a checkpoint holds, and continuing from one) and the files
(written atomically, read without executing code)."""

import dataclasses
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ember.errors import CheckpointError
from ember.files import damaged, load_checkpoint, publish, save_checkpoint, temp_path
from ember.train.optim import load_schedule
from ember.train.state import TrainState

# What resuming reads from a whole-state checkpoint (a trainer.strategy=fsdp one holds "sharded"
# in place of the model and optimizer).
RESUME_KEYS = (
    "model",
    "optimizer",
    "scheduler",
    "warmup",
    "scaler",
    "state",
    "total_steps",
    "rng",
    "interval",
    "records",
    "spec",
)


def rng_state() -> dict:
    """Every random generator the loop draws from, in types that weights_only loading accepts."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
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


@dataclass(kw_only=True, eq=False)
class Checkpointer:
    """The Stateful parts of a run, saved and restored together: the weights (and their moving
    average), the optimizer, the schedules, the scaler, the counters, the partial logging
    interval, the thread count and every RNG, with the config and DataSpec the run trained with.
    It holds those parts, never the trainer, so what a checkpoint holds is read here alone."""

    model: Any  # nn.Module: the training weights
    tested: Any  # nn.Module: the weights validation uses (trainer.ema's average, or `model`)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    warmup: Any  # the linear warmup beside a plateau schedule
    scaler: torch.amp.GradScaler
    ema: Any  # AveragedModel | None
    meter: Any  # IntervalMeter: the partial logging interval
    threads: Any  # ThreadPolicy: a deterministic run resumes with the same count
    total_steps: int
    config: dict  # the whole typed config, as saved
    spec: Any  # DataSpec
    state: TrainState = dataclasses.field(default_factory=TrainState)
    records: Callable[[], int] = lambda: 0  # metric records the run has written (its RunDir's count)
    note: Callable[[str], None] = print  # where a note about the resume goes (the console)

    def state_dict(self, weights: bool = True, tested: bool = False) -> dict:
        """Everything needed to continue exactly. `weights=False` leaves out the model and
        optimizer, which sharded checkpoints keep in their own files. `tested` (best.pt): "model"
        holds the weights validation used, the average under trainer.ema; step checkpoints hold
        the training weights there and the average under "ema"."""
        model = self.tested if tested else self.model
        return {
            **({"model": model.state_dict(), "optimizer": self.optimizer.state_dict()} if weights else {}),
            **({"ema": self.ema.state_dict()} if weights and self.ema is not None else {}),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "warmup": self.warmup.state_dict() if self.warmup is not None else None,
            "scaler": self.scaler.state_dict(),
            "state": asdict(self.state),
            "total_steps": self.total_steps,
            "rng": rng_state(),
            "threads": self.threads.threads,
            "interval": self.meter.state_dict(),
            "records": self.records(),
            "config": self.config,
            "spec": self.spec.to_dict(),
        }

    def load_state_dict(self, ckpt: dict) -> str | None:
        """Continue from a checkpoint; returns a note when the schedule length changed."""
        # Schedulers add keys to the param groups (initial_lr, max_lr, ...); a checkpoint written
        # under another schedule lacks them, so the keys of the current schedule are kept.
        before = [dict(g) for g in self.optimizer.param_groups]
        if "sharded" in ckpt:  # a trainer.strategy=fsdp checkpoint directory
            from ember.train.sharded import load_weights  # torch.distributed.checkpoint: ~1 s to import

            load_weights(self, Path(ckpt["sharded"]))
        else:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.ema is not None and "ema" in ckpt:  # else (trainer.ema set on resume) it averages from here on
            self.ema.load_state_dict(ckpt["ema"])
        for group, old in zip(self.optimizer.param_groups, before):
            for key, value in old.items():
                group.setdefault(key, value)
        self.scaler.load_state_dict(ckpt["scaler"])
        self.state = TrainState(**{**ckpt["state"], "stop_reason": None})
        if self.warmup is not None and ckpt["warmup"] is not None:
            self.warmup.load_state_dict(ckpt["warmup"])
        note = load_schedule(self.scheduler, ckpt["scheduler"], ckpt["total_steps"], self.total_steps, self.state.step)
        set_rng_state(ckpt["rng"])
        if thread_note := self.threads.resume(ckpt.get("threads")):
            self.note(thread_note)
        self.meter.load_state_dict(ckpt["interval"])
        return note

    def save(self, path: Path, tested: bool = False) -> None:
        """Write the whole state to `path` atomically (the run directory holds it)."""
        save_checkpoint(self.state_dict(tested=tested), path)

    def load(self, path: Path) -> str | None:
        """Continue from the checkpoint file at `path` (checked like a resume's)."""
        return self.load_state_dict(check_resumable(load_checkpoint(path), Path(path)))


class CheckpointFiles:
    """The checkpoints of a run: `step-<N>.pt` (the newest K kept), `last.pt` (the newest, a
    hard link), and `best.pt`. A new file is committed before any old one is deleted."""

    def __init__(self, directory: Path, keep: int):
        self.dir = Path(directory)
        self.keep = max(1, keep)

    def steps(self) -> list[Path]:
        """Step checkpoints, newest first."""
        return sorted(self.dir.glob("step-*.pt"), reverse=True)

    def save(self, checkpointer: Checkpointer, step: int) -> Path:
        path = self.dir / f"step-{step:09d}.pt"
        save_checkpoint(checkpointer.state_dict(), path, within=self.dir.parent)
        self._link_last(path)
        for old in self.steps()[self.keep :]:
            old.unlink(missing_ok=True)
        return path

    def save_best(self, checkpointer: Checkpointer) -> None:
        save_checkpoint(checkpointer.state_dict(tested=True), self.dir / "best.pt", within=self.dir.parent)

    def _link_last(self, path: Path) -> None:
        tmp = temp_path(self.dir / "last.pt")
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)
            publish(tmp, self.dir / "last.pt")
        except OSError:  # a filesystem without hard links: write a copy
            tmp.unlink(missing_ok=True)
            save_checkpoint(load_checkpoint(path), self.dir / "last.pt", within=self.dir.parent)

    def newest_good(self, warn) -> tuple[dict, Path]:
        """The newest checkpoint that loads; `warn(message)` is told about each one that does not."""
        if not self.steps() and any(self.dir.glob("step-*.dcp")):
            raise CheckpointError(
                f"{str(self.dir)!r} holds trainer.strategy=fsdp checkpoints; resume with trainer.strategy=fsdp"
            )
        candidates = self.steps() or ([self.dir / "last.pt"] if (self.dir / "last.pt").exists() else [])
        for path in candidates:
            try:
                return check_resumable(load_checkpoint(path), path), path
            except CheckpointError as e:
                warn(f"{e}; falling back to the previous checkpoint")
        raise CheckpointError(f"no readable checkpoint in {str(self.dir)!r}; start a new run without resume=")


def check_resumable(ckpt, path: Path) -> dict:
    """`ckpt` if it holds what resuming reads, else a one-line CheckpointError naming the file
    (a bare tensor saved as a checkpoint, a key missing, a state key this ember does not know)."""
    if not isinstance(ckpt, dict):
        raise damaged(path, f"it holds a {type(ckpt).__name__}, not a checkpoint's mapping")
    keys = [k for k in RESUME_KEYS if k not in ckpt and not ("sharded" in ckpt and k in ("model", "optimizer"))]
    if keys:
        raise damaged(path, f"no {', '.join(keys)}")
    fields = {f.name for f in dataclasses.fields(TrainState)}
    if not isinstance(ckpt["state"], dict) or set(ckpt["state"]) - fields or not isinstance(ckpt["spec"], dict):
        extra = sorted(set(ckpt["state"]) - fields) if isinstance(ckpt["state"], dict) else []
        raise damaged(path, f"unknown training-state keys {extra}" if extra else "its state or spec is not a mapping")
    return ckpt
