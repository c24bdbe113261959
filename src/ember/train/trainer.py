"""The training loop. `ember.train.build.build_trainer` builds a Trainer from the config; `fit`
runs it. Everything it needs to continue lives in `Trainer.state_dict()`.

Hot-loop rules: no `.item()`, no printing, no host sync per step. Losses accumulate on the device
and are read every `trainer.log_every_n_steps` steps, where the guard (guard.py) reads them too.
The components own their state and timing: the guard decides about NaNs and stop signals, the
cadences (cadence.py) when logging, validation and checkpoints are due, the meter what an
interval measured, the thread policy how many threads the kernels get.
"""

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ember import baselines
from ember.data.spec import DataSpec
from ember.files import load_checkpoint
from ember.models.layers import BATCH_NORMS, running_batch_norm
from ember.run import RunDir
from ember.track.console import Console
from ember.train import checkpoint, distributed, strategy
from ember.train.callbacks import Callbacks
from ember.train.cadence import Every
from ember.train.flops import loss_step_flops
from ember.train.guard import Guard
from ember.train.meter import IntervalMeter
from ember.train.optim import load_schedule
from ember.train.state import Monitor, TrainState
from ember.train.strategy import Parallel
from ember.train.threads import ThreadPolicy

if TYPE_CHECKING:  # the config layer sits above the loop (it names the optimizers and schedules)
    from ember.config.schema import EmberConfig, TrainerConfig


@dataclass(kw_only=True, eq=False)
class Trainer:
    cfg: "EmberConfig"  # the whole config, typed (ember.config.typed), saved in every checkpoint
    t: "TrainerConfig"  # cfg.trainer: a dataclass field read, where an OmegaConf read costs ~8 µs and the loop makes several a step
    spec: DataSpec
    model: nn.Module  # what checkpoints save; the step calls parallel.step_module
    parallel: Parallel
    device: torch.device
    precision: str  # fp32 | bf16 | fp16
    channels_last: bool
    autocast: Callable[[], Any]
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module | None  # None: the model defines its own loss(batch)
    loss_name: str
    metrics: nn.Module  # torchmetrics collection of the task
    reference: Any  # what the baselines predict (the train split's climatology, or majority class)
    augment: Callable | None
    train_loader: Any
    val_loader: Any
    test_loader: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    warmup: Any  # the linear warmup beside a plateau schedule
    monitor: Monitor | None
    ema: AveragedModel | None  # trainer.ema: the averaged weights, which validation and the test use
    ema_decay: float
    steps_per_epoch: int
    total_steps: int
    threads: ThreadPolicy
    meter: IntervalMeter
    guard: Guard
    console: Console
    logging: Every
    validation: Every
    checkpointing: Every
    state: TrainState = field(default_factory=TrainState)
    # Where the run writes, from `fit` on (None for rank > 0 and for a trainer that only evaluates).
    run: RunDir | None = None
    files: Any = None  # checkpoint.CheckpointFiles or sharded.ShardedCheckpointFiles
    checkpoint_dir: Path | None = None  # every rank's, for best.pt at the end
    callbacks: Callbacks = Callbacks()  # the caller's: profiler, pruner (given at build time)
    eval_time: float = 0.0
    wall_time: float = 0.0
    last_train_loss: float | None = None
    checkpoint_path: Path | None = None  # the checkpoint a preempted run wrote

    def __post_init__(self):
        self.uses_loss_protocol = self.loss_fn is None
        self.plateau = isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        self._batch_norms = [m for m in self.model.modules() if isinstance(m, BATCH_NORMS)]
        self._count_flops = self.t.measure_flops and not self.parallel.sharded_params  # counting runs a copy of the model
        self._grad_norm: torch.Tensor | None = None  # of the last step, when clipping computed it
        self._last_logs: dict = {}

    # -- the loop --------------------------------------------------------------------------------
    def fit(self, run: RunDir | None = None, checkpoint_dir: Path | None = None) -> dict[str, float]:
        """Train until max_epochs/max_steps, early stopping or a stop signal; return final metrics.
        `run`: the directory rank 0 logs to; `checkpoint_dir`: where checkpoints go (every rank)."""
        self.run, self.checkpoint_dir = run, checkpoint_dir
        if checkpoint_dir is not None and (self.parallel.dist.is_main or self.parallel.sharded_checkpoints):
            self.files = self.checkpoint_files(checkpoint_dir)  # sharded: every rank writes its shards
        self.console.start(self.total_steps, self.t.max_epochs)
        self._start = time.perf_counter()
        self.checkpointing.ran()
        try:
            with self.guard.signals:
                while not self._done():
                    self._train_epoch()
                if self.guard.stop:
                    return self._preempted()
                if self.meter.micro:  # the steps since the last full logging interval
                    self._log_train()
                # Still watched: a stop signal during the final test (a batch system's SIGTERM
                # killed the process there, leaving summary.json "running") ends the run as
                # preempted after it; the resume starts from the final checkpoint and tests again.
                final = self._finish()
                if self.guard.agree(self.guard.stop is not None):  # every rank, or none
                    self.guard.signals.stop = self.guard.stop or "a signal to another rank"
                    return self._preempted(save=False)
        finally:
            self.console.stop()
        if self.callbacks.on_fit_end is not None:
            self.callbacks.on_fit_end(final)
        return final

    def _done(self) -> bool:
        state, t = self.state, self.t
        if state.stop_reason is None and t.max_steps > 0 and state.step >= t.max_steps:
            state.stop_reason = "max_steps"
        if state.stop_reason is None and state.epoch >= t.max_epochs:
            state.stop_reason = "max_epochs"
        return state.stop_reason is not None or self.guard.stop is not None

    def _train_epoch(self) -> None:
        state, batches, accum = self.state, len(self.train_loader), self.t.grad_accum
        self.model.train()
        self.train_loader.set_epoch(state.epoch, state.batch)
        batch_iter = iter(self.train_loader)
        while state.batch < batches:
            # The last accumulation group of an epoch may hold fewer micro-batches.
            n = min(accum - state.batch % accum, batches - state.batch)
            self.train_step(self._micro_batches(batch_iter, n), n)
            state.batch += n
            self.console.step(state.step, state.epoch_in_progress)
            logged = self._log_train() if self.logging.at_step(state.step) else {}
            if self.callbacks.on_step is not None:
                self.callbacks.on_step(state.step, logged)
            if self.validation.at_step(state.step):
                self._validate()
                self.model.train()
            if self.t.max_steps > 0 and state.step >= self.t.max_steps:
                state.stop_reason = "max_steps"
            if state.stop_reason or self.guard.stop:
                break
            if self._checkpoint_due():
                self.save_checkpoint()
        if self.guard.stop and state.batch < batches:
            return  # preempted mid-epoch: the epoch goes on after resume
        state.batch, state.epoch = 0, state.epoch + 1
        if self.val_loader is not None and self.validation.at_epoch_end(state.epoch):
            self._validate()
        if self.files and (self.checkpointing.at_epoch_end(state.epoch) or state.stop_reason or state.epoch >= self.t.max_epochs):
            self.save_checkpoint()

    def _micro_batches(self, batch_iter, n: int):
        """The next `n` batches, read one at a time as the step asks (the wait is the meter's)."""
        for _ in range(n):
            wait_start = time.perf_counter()
            batch = next(batch_iter)
            self.meter.waited(time.perf_counter() - wait_start)
            yield batch

    def train_step(self, micro_batches, n: int) -> None:
        """One optimizer step over `n` micro-batches: accumulate, clip, guard, step, schedule,
        average. The step is counted even when the guard skips it (nan_policy=skip)."""
        state, scaler, fp16 = self.state, self.scaler, self.scaler.is_enabled()  # fp16: a GradScaler
        for k, (x, y) in enumerate(micro_batches):
            x, y = self._prepared(x, y)
            with self.parallel.accumulating(defer=k < n - 1):  # gradients reduced once, with the last
                with self.autocast():
                    loss, self._last_logs = self._loss(x, y)
                scaled = loss / n if n > 1 else loss  # every step averages the losses it covers
                (scaler.scale(scaled) if fp16 else scaled).backward()  # a disabled scaler costs calls
            self.meter.add(loss, x.shape[0], state.step + 1)  # not len(x): Tensor.__len__ is a Python call
        if self.t.grad_clip > 0:
            scaler.unscale_(self.optimizer)
            self._grad_norm = strategy.local(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.t.grad_clip))
        # The guard reads the last micro-batch's loss; fp16's GradScaler skips overflowing steps itself.
        if self.guard.step_allowed(loss, None if fp16 else self._grad_norm, None if fp16 else self.model.parameters(), state, self.files):
            state.skipped_steps = 0
            if fp16:
                scaler.step(self.optimizer)
                scaler.update()
            else:
                self.optimizer.step()
            if self.scheduler is not None and not self.plateau:
                self.scheduler.step()
            if self.warmup is not None and state.step < self.warmup.total_iters:
                self.warmup.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        self.meter.steps += 1
        self.threads.step()

    def _prepared(self, x, y) -> tuple[torch.Tensor, torch.Tensor]:
        """A micro-batch on the device, augmented; the first one's FLOPs are counted."""
        x, y = self.to_device(x), self.to_device(y)
        if self.augment is not None:
            x, y = self.augment(x, y)
        if self._count_flops:
            self._measure_flops(x, y)
        return x, y

    def _loss(self, x, y) -> tuple[torch.Tensor, dict]:
        if x.shape[0] == 1 and self._batch_norms:  # a last batch of one sample
            with running_batch_norm(self._batch_norms):
                return self._loss_of(x, y)
        return self._loss_of(x, y)

    def _loss_of(self, x, y) -> tuple[torch.Tensor, dict]:
        if self.uses_loss_protocol:
            return self.parallel.step_module(x, y)
        return self.loss_fn(self.parallel.step_module(x), y), {}

    def _measure_flops(self, x, y) -> None:
        self._count_flops = False
        per_batch = loss_step_flops(self.model, self.loss_fn, x, y)
        self.meter.flops_per_step = per_batch * self.t.grad_accum if per_batch else None

    def _check(self, weights: bool = False) -> None:
        self.guard.check(self.meter, self.model.parameters(), self.state, self.files, weights)

    def _log_train(self) -> dict:
        self._check()
        dist = self.parallel.dist
        m = self.meter.record(reduce=lambda t: distributed.mean(t, dist), world=dist.world)
        self.last_train_loss = m["loss"]
        record = {"step": self.state.step, "epoch": self.state.epoch_in_progress, "split": "train", "loss": m.pop("loss"), "lr": self.optimizer.param_groups[0]["lr"]}
        if self._grad_norm is not None:
            record["grad_norm"] = self._grad_norm.item()
        record |= {k: float(v) for k, v in self._last_logs.items()} | m
        self._emit(record)
        self.meter.reset()
        self._grad_norm = None
        return record

    def _emit(self, record: dict) -> None:
        if not self.parallel.dist.is_main:
            return  # rank 0 logs for everyone
        if self.run:
            self.run.log(record)
        self.console.show(record)

    # -- checkpoints --------------------------------------------------------------------------------
    def checkpoint_files(self, directory: Path):
        """Whole-state .pt files written by rank 0, or (strategy=fsdp) DCP directories that every
        rank writes its shards into."""
        if self.parallel.sharded_checkpoints:
            from ember.train.sharded import ShardedCheckpointFiles  # torch.distributed.checkpoint: ~1 s to import

            return ShardedCheckpointFiles(directory, self.t.keep_checkpoints, self.parallel.dist)
        return checkpoint.CheckpointFiles(directory, self.t.keep_checkpoints)

    def _checkpoint_due(self) -> bool:
        due = self.checkpointing.at_step(self.state.step) or self.guard.signals.save_now
        if self.parallel.sharded_checkpoints:  # a clock or a signal is local: all ranks save together or none does
            due = self.guard.agree(due)
        return due and self.files is not None

    def save_checkpoint(self) -> Path:
        """Write a step checkpoint now (also on SIGUSR2); the newest becomes last.pt."""
        self._check(weights=True)
        self.guard.signals.save_now = False
        self.checkpointing.ran()
        return self.files.save(self, self.state.step)

    def _preempted(self, save: bool = True) -> dict[str, float]:
        """`save=False`: training had ended; its final checkpoint is the newest one."""
        newest = self.files.steps() if self.files and not save else None
        path = newest[0] if newest else self.save_checkpoint() if self.files else None
        self.state.stop_reason = f"preempted by {self.guard.stop}"
        self.wall_time = time.perf_counter() - self._start
        self.checkpoint_path = path
        return {}

    # -- validation, best checkpoint, early stopping -----------------------------------------------
    def _validate(self) -> None:
        self._check(weights=True)  # before a best checkpoint can be written
        state, monitor = self.state, self.monitor
        start = time.perf_counter()
        metrics = self.evaluate(self.val_loader)
        self.eval_time += time.perf_counter() - start
        self._emit({"step": state.step, "epoch": state.epoch_in_progress, "split": "val", **metrics})
        if self.callbacks.on_validation is not None:
            self.callbacks.on_validation(state.epoch_in_progress, metrics)
        value = metrics[monitor.name.removeprefix("val/")]
        if self.plateau:
            self.scheduler.step(value)
        if monitor.improved(value, state.best):
            state.best, state.best_epoch, state.best_step, state.bad_validations = value, state.epoch_in_progress, state.step, 0
            if self.files:
                self.files.save_best(self)
        else:
            state.bad_validations += 1
            if monitor.patience and state.bad_validations >= monitor.patience:
                state.stop_reason = f"early stopping: {monitor.name} did not improve for {monitor.patience} validations"
        if self.parallel.dist.enabled:  # rank 0 decides, so all ranks stop at the same step
            state.stop_reason = distributed.broadcast(state.stop_reason, self.parallel.dist)

    def evaluate(self, loader) -> dict[str, float]:
        """Mean loss and the task's metrics over a loader; one host sync at the end."""
        # FSDP gathers parameters into tensors it reuses for training: inference-mode tensors
        # cannot be, so a sharded model evaluates under no_grad.
        with torch.no_grad() if self.parallel.sharded_params else torch.inference_mode():
            return self._evaluate(loader)

    def _evaluate(self, loader) -> dict[str, float]:
        dist, model = self.parallel.dist, self.tested_model
        model.eval()
        self.metrics.reset()
        strategy.sync_buffers(model, dist)
        loss_sum, n = torch.zeros((), device=self.device), 0
        # The seasonal climatology of each batch's valid times: the reference of `acc`.
        clim = baselines.batch_climatology(self.reference, self._split_of(loader), loader)
        for i, (x, y) in enumerate(loader):
            loss_sum += self._eval_batch(x, y, clim(i, len(x)) if clim else None)
            n += len(x)
        if loader.sharded and self.parallel.sharded_params:
            # FSDP gathers parameters in every forward, so every rank makes as many calls: a rank
            # with one batch fewer makes its last one on an empty batch, and counts nothing.
            for _ in range(loader.sampler.most - len(loader)):
                self._eval_batch(x[:0], y[:0])
        if loader.sharded:  # each rank saw its share: the loss is summed here, torchmetrics syncs its own
            loss_sum, n = distributed.sum_(torch.stack([loss_sum, torch.tensor(float(n), device=self.device)]), dist)
        result = {"loss": (loss_sum / max(n, 1)).item()}
        if not self.uses_loss_protocol:
            result.update({k: v.item() for k, v in self.metrics.compute().items()})
        return result

    def _split_of(self, loader) -> str | None:
        return next((s for s in ("val", "test", "train") if getattr(self, f"{s}_loader", None) is loader), None)

    def _eval_batch(self, x, y, clim: torch.Tensor | None = None) -> torch.Tensor:
        """The summed loss over one batch; the task's metrics take the batch too (and `clim`,
        its climatology, for the anomaly correlation)."""
        x, y = self.to_device(x), self.to_device(y)
        with self.autocast():
            if self.uses_loss_protocol:
                loss, _ = self.tested_model.loss((x, y))
            else:
                out = self.parallel.eval_module(x) if self.ema is None else self.ema.module(x)
                loss = self.loss_fn(out, y)
                if len(x):
                    if clim is None:
                        self.metrics.update(out.float(), y)
                    else:
                        self.metrics.update(out.float(), y, climatology=clim.to(self.device))
        return loss.float() * len(x)

    @property
    def tested_model(self) -> nn.Module:
        """The weights validation, best.pt and the test use: the moving average under trainer.ema."""
        return self.ema.module if self.ema is not None else self.model

    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        if t.device != self.device:
            t = t.to(self.device, non_blocking=True)
        if self.channels_last and t.ndim == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    # -- the end of training ----------------------------------------------------------------------
    def _finish(self) -> dict[str, float]:
        """Test the best checkpoint (the last weights when there is no validation split)."""
        self._check(weights=True)
        state = self.state
        final: dict[str, float] = {}
        if self.last_train_loss is not None:
            final["train/loss"] = self.last_train_loss
        if state.best is not None:
            final[self.monitor.name] = state.best
        best = self.checkpoint_dir / "best.pt" if self.checkpoint_dir else None
        if self.parallel.dist.enabled:  # every rank tests rank 0's best.pt (each evaluates a share)
            distributed.barrier(self.parallel.dist)
        if best and best.exists():
            strategy.load_full_state_dict(self.tested_model, load_checkpoint(best)["model"])
        if self.ema is not None:  # the run returns, saves and exports the weights it tested
            self.model.load_state_dict(self.ema.module.state_dict())
        if self.test_loader is not None:
            final.update({f"test/{k}": v for k, v in self.evaluate(self.test_loader).items()})
        if self.val_loader is not None:
            final.update({f"val/{k}": v for k, v in self.evaluate(self.val_loader).items()})
        self.wall_time = time.perf_counter() - self._start
        return final

    def close(self) -> None:
        self.parallel.close()

    # -- state --------------------------------------------------------------------------------------
    def state_dict(self, weights: bool = True, tested: bool = False) -> dict:
        """Everything needed to continue exactly: weights, optimizer, schedules, scaler, every RNG,
        the position in the data (epoch, batch), the partial logging interval and the number of
        metric records written, with the config and DataSpec it was trained with. `weights=False`
        leaves out the model and optimizer, which sharded checkpoints keep in their own files.
        `tested` (best.pt): "model" holds the weights validation used, the average under trainer.ema;
        step checkpoints hold the training weights there and the average under "ema"."""
        model = self.tested_model if tested else self.model
        return {
            **({"model": model.state_dict(), "optimizer": self.optimizer.state_dict()} if weights else {}),
            **({"ema": self.ema.state_dict()} if weights and self.ema is not None else {}),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "warmup": self.warmup.state_dict() if self.warmup is not None else None,
            "scaler": self.scaler.state_dict(),
            "state": asdict(self.state),
            "total_steps": self.total_steps,
            "rng": checkpoint.rng_state(),
            "threads": self.threads.threads,  # a deterministic run resumes with the same count
            "interval": self.meter.state_dict(),
            "records": self.run.records if self.run else 0,
            "config": asdict(self.cfg),
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
        checkpoint.set_rng_state(ckpt["rng"])
        if thread_note := self.threads.resume(ckpt.get("threads")):
            self.console.print(thread_note)
        self.meter.load_state_dict(ckpt["interval"])
        self._grad_norm = None
        return note
