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
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ember.data import Splits, TensorData, make_loader
from ember.errors import ConfigError
from ember.metrics import build_metrics, is_higher_better, prepare
from ember.run import RunDir
from ember.track.console import Console
from ember.train import checkpoint
from ember.train.losses import build_loss
from ember.train.optim import build_optimizer, build_scheduler, warmup_for_plateau


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
    step: int = 0  # optimizer steps taken
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
        self.generator = torch.Generator().manual_seed(t.seed)
        bs = cfg.data.batch_size
        ebs = cfg.data.eval_batch_size or 4 * bs
        workers = cfg.data.num_workers
        pin = self.device.type == "cuda"
        self.train_loader = make_loader(place(splits.train), bs, cfg.data.shuffle, self.generator, workers, pin)
        self.val_loader = splits.val is not None and make_loader(place(splits.val), ebs, False, None, workers, pin) or None
        self.test_loader = splits.test is not None and make_loader(place(splits.test), ebs, False, None, workers, pin) or None

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

    # -- the loop --------------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train until max_epochs/max_steps or early stopping; return the final metrics."""
        self.console.start(self.total_steps, self.t.max_epochs)
        self._start = time.perf_counter()
        self._reset_interval()
        try:
            while self.state.stop_reason is None:
                self._train_epoch()
                if self.state.stop_reason is None and self.state.epoch >= self.t.max_epochs:
                    self.state.stop_reason = "max_epochs"
            if self._micro:  # the steps since the last full logging interval
                self._log_train(self._last_logs)
        finally:
            self.console.stop()
        return self._finish()

    def _train_epoch(self) -> None:
        t, state = self.t, self.state
        self.model.train()
        batches, accum = len(self.train_loader), t.grad_accum
        self._epoch = state.epoch + 1  # 1-based number of the epoch in progress, for records
        for i, (x, y) in enumerate(self.train_loader):
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
            self._optimizer_step()
            state.step += 1
            self.console.step(state.step, self._epoch)
            if state.step % t.log_every_n_steps == 0:
                self._log_train(logs)
            if t.val_every_n_steps and state.step % t.val_every_n_steps == 0:
                self._validate()
                self.model.train()
            if t.max_steps > 0 and state.step >= t.max_steps:
                state.stop_reason = "max_steps"
            if state.stop_reason:
                break
        self._last_logs = logs
        state.epoch += 1
        if not t.val_every_n_steps and self.val_loader is not None:
            self._validate()
        if self.run and (state.epoch % t.checkpoint_every_n_epochs == 0 or state.stop_reason):
            self.run.save_checkpoint("last.pt", self.state_dict())

    def _loss(self, x, y):
        if self.uses_loss_protocol:
            return self.model.loss((x, y))
        return self.loss_fn(self.forward(x), y), {}

    def _optimizer_step(self) -> None:
        if self.t.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            self._grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.t.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None and not self.plateau:
            self.scheduler.step()
        if self.warmup is not None and self.state.step < self.warmup.total_iters:
            self.warmup.step()

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
                self.run.save_checkpoint("best.pt", self.state_dict())
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
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "warmup": self.warmup.state_dict() if self.warmup is not None else None,
            "scaler": self.scaler.state_dict(),
            "state": asdict(self.state),
            "rng": checkpoint.rng_state(),
            "loader_rng": self.generator.get_state(),
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "spec": self.spec.to_dict(),
        }

    def load_state_dict(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt["scheduler"] is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.warmup is not None and ckpt["warmup"] is not None:
            self.warmup.load_state_dict(ckpt["warmup"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.state = TrainState(**ckpt["state"])
        checkpoint.set_rng_state(ckpt["rng"])
        self.generator.set_state(ckpt["loader_rng"])
