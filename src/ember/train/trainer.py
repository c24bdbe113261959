"""The training loop. Everything it needs to continue lives in `Trainer.state` plus the model,
optimizer, scheduler and scaler, which `state_dict()` gathers into one checkpoint.

Hot-loop rules: no `.item()`, no printing, no host sync per step. Losses accumulate on the device
and are read every `trainer.log_every_n_steps` steps.
"""

import contextlib
import math
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ember.data import Splits, TensorData
from ember.errors import ConfigError, NonFiniteError
from ember.metrics import build_metrics, is_higher_better, prepare
from ember.run import RunDir
from ember.track.console import Console
from ember.train import checkpoint
from ember.train.losses import build_loss
from ember.train.optim import build_optimizer, build_scheduler, warmup_for_plateau
from ember.train.sampling import EpochLoader
from ember.train.signals import SignalWatch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name} but CUDA is not available here; use trainer.device=auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.device=mps but MPS is not available here; use trainer.device=auto or cpu")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        # cuBLAS needs this set before its first call to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


@dataclass
class TrainState:
    epoch: int = 0  # completed epochs
    batch: int = 0  # micro-batches of the current epoch already trained on
    step: int = 0  # optimizer steps taken
    skipped_steps: int = 0  # consecutive steps skipped for a non-finite loss (nan_policy=skip)
    best: Optional[float] = None  # best value of the monitored metric
    best_epoch: Optional[int] = None
    best_step: Optional[int] = None
    bad_validations: int = 0  # validations since the last improvement (early stopping)
    stop_reason: Optional[str] = None


class Trainer:
    def __init__(self, cfg: DictConfig, model: nn.Module, splits: Splits, run: RunDir | None, console: Console):
        t = cfg.trainer
        self.cfg, self.t, self.run, self.console = cfg, t, run, console
        self.spec = splits.spec
        self.augment = splits.augment
        self.device = resolve_device(t.device)
        self.model = model.to(self.device)
        # The model that runs forward passes; compiled when asked. Checkpoints save self.model.
        self.forward = torch.compile(self.model) if t.compile else self.model
        self.uses_loss_protocol = callable(getattr(model, "loss", None))
        self.loss_fn = build_loss(t.loss, self.spec, model, t.label_smoothing)
        self.metrics = build_metrics(self.spec).to(self.device)

        # In-memory splits move to the device once; batches are then slices, not copies.
        on_device = self.device.type != "cpu"
        place = lambda d: d.to(self.device) if isinstance(d, TensorData) and on_device else d  # noqa: E731
        d = cfg.data
        ebs = d.eval_batch_size or 4 * d.batch_size
        pin = self.device.type == "cuda"

        def loader(data, batch_size, shuffle):
            if data is None:
                return None
            return EpochLoader(place(data), batch_size, shuffle, t.seed, d.num_workers, pin, d.get("fast_path", True))

        self.train_loader = loader(splits.train, d.batch_size, d.shuffle)
        self.val_loader = loader(splits.val, ebs, False)
        self.test_loader = loader(splits.test, ebs, False)

        batches = len(self.train_loader)
        if batches == 0:
            raise ConfigError("the train split is empty; check the data source")
        self.steps_per_epoch = math.ceil(batches / t.grad_accum)
        total = self.steps_per_epoch * t.max_epochs
        self.total_steps = min(total, t.max_steps) if t.max_steps > 0 else total

        self.monitor = ("val/loss" if t.monitor == "auto" else t.monitor) if self.val_loader else None
        if not self.monitor and t.early_stopping_patience:
            raise ConfigError("trainer.early_stopping_patience needs a validation split; set data.val_fraction > 0 or pass val data")
        self.higher_better = t.mode == "max" or (t.mode == "auto" and self.monitor and is_higher_better(self.monitor))
        computed = ["loss"] if self.uses_loss_protocol else ["loss", *self.metrics.keys()]
        if self.monitor and (not self.monitor.startswith("val/") or self.monitor.removeprefix("val/") not in computed):
            raise ConfigError(f"trainer.monitor={t.monitor!r} is not a validation metric of this run; choose one of: {', '.join('val/' + k for k in computed)}")

        self.optimizer = build_optimizer(cfg.optim, [p for p in model.parameters() if p.requires_grad])
        sched_cfg = cfg.sched
        if sched_cfg.name == "onecycle" and self.total_steps * sched_cfg.pct_start < 2:
            # OneCycleLR cannot rise and fall within so few steps.
            console.print(f"note: {self.total_steps} steps are too few for sched=onecycle; training at a constant lr")
            sched_cfg = OmegaConf.merge(sched_cfg, {"name": "none"})
        mode = "max" if self.higher_better else "min"
        self.scheduler = build_scheduler(sched_cfg, self.optimizer, self.total_steps, self.steps_per_epoch, mode)
        self.plateau = isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        if self.plateau and not self.monitor:
            raise ConfigError("sched=plateau needs a validation split to watch; set data.val_fraction > 0 or choose another sched")
        self.warmup = warmup_for_plateau(sched_cfg, self.optimizer)

        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.precision)
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=dtype)) if dtype else contextlib.nullcontext
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=t.precision == "fp16")
        self.state = TrainState()
        self._last_train_loss: float | None = None
        self._last_logs: dict = {}
        self._epoch = 1  # 1-based number of the epoch in progress, for records
        self.signals = SignalWatch()
        self.files = run.checkpoint_files(t.keep_checkpoints) if run else None

    def attach(self, run: RunDir) -> None:
        """The run directory this trainer writes (rank 0 only, when there are several)."""
        self.run = run
        self.files = run.checkpoint_files(self.t.keep_checkpoints)

    # -- the loop --------------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train until max_epochs/max_steps, early stopping or a stop signal; return final metrics."""
        self.console.start(self.total_steps, self.t.max_epochs)
        self._start = time.perf_counter()
        self._last_save = time.monotonic()
        if self.state.step == 0:
            self._reset_interval()
        try:
            with self.signals:
                while not self._done():
                    self._train_epoch()
                if self.signals.stop:
                    return self._preempted()
                if self._micro:  # the steps since the last full logging interval
                    self._log_train(self._last_logs)
        finally:
            self.console.stop()
        return self._finish()

    def _done(self) -> bool:
        state, t = self.state, self.t
        if state.stop_reason is None and t.max_steps > 0 and state.step >= t.max_steps:
            state.stop_reason = "max_steps"
        if state.stop_reason is None and state.epoch >= t.max_epochs:
            state.stop_reason = "max_epochs"
        return state.stop_reason is not None or self.signals.stop is not None

    def _train_epoch(self) -> None:
        t, state = self.t, self.state
        self.model.train()
        batches, accum = len(self.train_loader), t.grad_accum
        self._epoch = state.epoch + 1  # 1-based number of the epoch in progress, for records
        self.train_loader.set_epoch(state.epoch, state.batch)
        for i, (x, y) in enumerate(self.train_loader, start=state.batch):
            x, y = self._to_device(x), self._to_device(y)
            if self.augment is not None:
                x, y = self.augment(x, y)
            # The last accumulation group of an epoch may hold fewer micro-batches: divide by its
            # true count so every step averages the micro-batch losses it covers.
            group = min(accum, batches - (i - i % accum))
            with self.autocast():
                loss, logs = self._loss(x, y)
            self.scaler.scale(loss / group).backward()
            self._loss_sum += loss.detach()
            self._micro += 1
            self._samples += len(x)
            if (i + 1) % accum and i + 1 != batches:
                continue
            self._optimizer_step(loss)
            state.step += 1
            state.batch = i + 1
            self._last_logs = logs
            self.console.step(state.step, self._epoch)
            if state.step % t.log_every_n_steps == 0:
                self._log_train(logs)
            if t.val_every_n_steps and state.step % t.val_every_n_steps == 0:
                self._validate()
                self.model.train()
            if t.max_steps > 0 and state.step >= t.max_steps:
                state.stop_reason = "max_steps"
            if state.stop_reason or self.signals.stop:
                break
            self._maybe_checkpoint()
        if self.signals.stop and state.batch < batches:
            return  # preempted mid-epoch: the epoch goes on after resume
        state.batch = 0
        state.epoch += 1
        if not t.val_every_n_steps and self.val_loader is not None:
            self._validate()
        if self.run and (state.epoch % t.checkpoint_every_n_epochs == 0 or state.stop_reason or state.epoch >= t.max_epochs):
            self.save_checkpoint()

    def _maybe_checkpoint(self) -> None:
        t, state = self.t, self.state
        due = (t.checkpoint_every_n_steps and state.step % t.checkpoint_every_n_steps == 0) or self.signals.save_now
        if t.checkpoint_every_n_minutes and time.monotonic() - self._last_save >= 60 * t.checkpoint_every_n_minutes:
            due = True
        if due and self.run:
            self.save_checkpoint()

    def save_checkpoint(self) -> Path:
        """Write a step checkpoint now (also on SIGUSR2); the newest becomes last.pt."""
        self.signals.save_now = False
        self._last_save = time.monotonic()
        return self.files.save(self.state_dict(), self.state.step)

    def _preempted(self) -> dict[str, float]:
        path = self.save_checkpoint() if self.run else None
        self.state.stop_reason = f"preempted by {self.signals.stop}"
        self.wall_time = time.perf_counter() - self._start
        self.checkpoint_path = path
        return {}

    def _loss(self, x, y):
        if self.uses_loss_protocol:
            return self.model.loss((x, y))
        return self.loss_fn(self.forward(x), y), {}

    def _optimizer_step(self, loss: torch.Tensor) -> None:
        if self.t.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            self._grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.t.grad_clip)
        if self.t.nan_policy != "off" and not self._finite(loss):
            return
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None and not self.plateau:
            self.scheduler.step()
        if self.warmup is not None and self.state.step < self.warmup.total_iters:
            self.warmup.step()

    def _finite(self, loss: torch.Tensor) -> bool:
        """False (and the update skipped) when the loss or a gradient is NaN or infinite.

        With fp16 the GradScaler already skips steps whose gradients overflowed (that is how it
        finds its scale), so only the loss is checked there. This costs one host sync per step
        on an accelerator; trainer.nan_policy=off removes it.
        """
        state = self.state
        norm = self._grad_norm
        if norm is None and not self.scaler.is_enabled():
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])) if grads else None
        bad = ~torch.isfinite(loss.detach().float())
        if norm is not None and not self.scaler.is_enabled():
            bad = bad | ~torch.isfinite(norm)
        if not bool(bad):
            state.skipped_steps = 0
            return True
        what = "loss" if not torch.isfinite(loss.detach()).item() else "gradient norm"
        last = self.files.steps()[0] if self.files and self.files.steps() else None
        where = f"step {state.step + 1} (epoch {self._epoch})"
        if self.t.nan_policy == "skip" and state.skipped_steps + 1 < self.t.nan_max_skips:
            state.skipped_steps += 1
            self.optimizer.zero_grad(set_to_none=True)
            self.console.print(f"warning: non-finite {what} at {where}; update skipped ({state.skipped_steps} in a row)")
            return False
        hint = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        raise NonFiniteError(
            f"non-finite {what} at {where}; {hint}. Lower optim.lr, set trainer.grad_clip, check the data for NaN, or use trainer.nan_policy=skip"
        )

    def _reset_interval(self) -> None:
        self._loss_sum = torch.zeros((), device=self.device)
        self._micro = self._samples = 0
        self._grad_norm = None
        self._interval_start = time.perf_counter()

    def _log_train(self, logs: dict) -> None:
        loss = (self._loss_sum / self._micro).item()  # the one host sync per interval
        self._last_train_loss = loss
        elapsed = time.perf_counter() - self._interval_start
        record = {"step": self.state.step, "epoch": self._epoch, "split": "train", "loss": loss, "lr": self.optimizer.param_groups[0]["lr"]}
        if self._grad_norm is not None:
            record["grad_norm"] = self._grad_norm.item()
        record.update({k: float(v) for k, v in logs.items()})
        record["samples_per_s"] = round(self._samples / elapsed) if elapsed > 0 else None
        self._emit(record)
        self._reset_interval()

    def _emit(self, record: dict) -> None:
        if self.run:
            self.run.log(record)
        self.console.show(record)

    # -- validation, best checkpoint, early stopping -----------------------------------------------
    def _validate(self) -> None:
        state = self.state
        metrics = self.evaluate(self.val_loader)
        self._emit({"step": state.step, "epoch": self._epoch, "split": "val", **metrics})
        value = metrics[self.monitor.removeprefix("val/")]
        if self.plateau:
            self.scheduler.step(value)
        better = state.best is None or (value > state.best if self.higher_better else value < state.best)
        if better and math.isfinite(value):
            state.best, state.best_epoch, state.best_step, state.bad_validations = value, self._epoch, state.step, 0
            if self.run:
                self.files.save_best(self.state_dict())
        else:
            state.bad_validations += 1
            patience = self.t.early_stopping_patience
            if patience and state.bad_validations >= patience:
                state.stop_reason = f"early stopping: {self.monitor} did not improve for {patience} validations"

    @torch.inference_mode()
    def evaluate(self, loader) -> dict[str, float]:
        """Mean loss and the task's metrics over a loader; one host sync at the end."""
        self.model.eval()
        self.metrics.reset()
        loss_sum, n = torch.zeros((), device=self.device), 0
        for x, y in loader:
            x, y = self._to_device(x), self._to_device(y)
            with self.autocast():
                if self.uses_loss_protocol:
                    loss, _ = self.model.loss((x, y))
                else:
                    out = self.forward(x)
                    loss = self.loss_fn(out, y)
                    self.metrics.update(*prepare(self.spec, out.float(), y))
            loss_sum += loss.float() * len(x)
            n += len(x)
        result = {"loss": (loss_sum / max(n, 1)).item()}
        if not self.uses_loss_protocol:
            result.update({k: v.item() for k, v in self.metrics.compute().items()})
        return result

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        return t if t.device == self.device else t.to(self.device, non_blocking=True)

    # -- the end of training ----------------------------------------------------------------------
    def _finish(self) -> dict[str, float]:
        """Test the best checkpoint (the last weights when there is no validation split)."""
        state = self.state
        final: dict[str, float] = {}
        if self._last_train_loss is not None:
            final["train/loss"] = self._last_train_loss
        if state.best is not None:
            final[self.monitor] = state.best
        if self.run and (self.run.checkpoints / "best.pt").exists():
            self.model.load_state_dict(checkpoint.load(self.run.checkpoints / "best.pt")["model"])
        if self.test_loader is not None:
            final.update({f"test/{k}": v for k, v in self.evaluate(self.test_loader).items()})
        if self.val_loader is not None:
            final.update({f"val/{k}": v for k, v in self.evaluate(self.val_loader).items()})
        self.wall_time = time.perf_counter() - self._start
        return final

    # -- state --------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue exactly: weights, optimizer, schedules, scaler, every RNG,
        the position in the data (epoch, batch), the partial logging interval and the number of
        metric records written, with the config and DataSpec it was trained with."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "warmup": self.warmup.state_dict() if self.warmup is not None else None,
            "scaler": self.scaler.state_dict(),
            "state": asdict(self.state),
            "total_steps": self.total_steps,
            "rng": checkpoint.rng_state(),
            "interval": {"loss_sum": self._loss_sum.cpu(), "micro": self._micro, "samples": self._samples},
            "records": self.run.records if self.run else 0,
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "spec": self.spec.to_dict(),
        }

    def load_state_dict(self, ckpt: dict) -> str | None:
        """Continue from a checkpoint; returns a note when the schedule length changed."""
        note = None
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.state = TrainState(**{**ckpt["state"], "stop_reason": None})
        if self.warmup is not None and ckpt["warmup"] is not None:
            self.warmup.load_state_dict(ckpt["warmup"])
        if self.scheduler is not None and ckpt["scheduler"] is not None:
            if ckpt["total_steps"] == self.total_steps or self.plateau:
                self.scheduler.load_state_dict(ckpt["scheduler"])
            else:
                # A new length: the new schedule, advanced to the current step.
                with warnings.catch_warnings():  # "scheduler stepped before optimizer": on purpose
                    warnings.simplefilter("ignore")
                    for _ in range(self.state.step):
                        self.scheduler.step()
                note = f"the lr schedule now spans {self.total_steps} steps instead of {ckpt['total_steps']}"
        checkpoint.set_rng_state(ckpt["rng"])
        interval = ckpt["interval"]
        self._loss_sum = interval["loss_sum"].to(self.device)
        self._micro, self._samples = interval["micro"], interval["samples"]
        self._interval_start = time.perf_counter()
        self._grad_norm = None
        self._epoch = self.state.epoch + (1 if self.state.batch else 0)
        return note
