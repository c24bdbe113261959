"""Checkpoint files: written atomically, read without executing code."""

import dataclasses
import os
import random
from pathlib import Path

import numpy as np
import torch

from ember.errors import CheckpointError
from ember.files import damaged, load_checkpoint, publish, save_checkpoint, temp_path
from ember.train.state import TrainState

# What resuming reads from a whole-state checkpoint (a trainer.strategy=fsdp one holds "sharded"
# in place of the model and optimizer).
RESUME_KEYS = ("model", "optimizer", "scheduler", "warmup", "scaler", "state", "total_steps", "rng", "interval", "records", "spec")


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
        save_checkpoint(trainer.state_dict(), path, within=self.dir.parent)
        self._link_last(path)
        for old in self.steps()[self.keep :]:
            old.unlink(missing_ok=True)
        return path

    def save_best(self, trainer) -> None:
        save_checkpoint(trainer.state_dict(tested=True), self.dir / "best.pt", within=self.dir.parent)

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
            raise CheckpointError(f"{str(self.dir)!r} holds trainer.strategy=fsdp checkpoints; resume with trainer.strategy=fsdp")
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
