"""The training loop. `ember.train.build.build_trainer` builds a Trainer from the config; `fit`
runs it. Everything it needs to continue is the checkpointer's (checkpoint.Checkpointer); validation
and the test are the evaluator's (evaluator.Evaluator).

Hot-loop rules: no `.item()`, no printing, no host sync per step. Losses accumulate on the device
and are read every `trainer.log_every_n_steps` steps, where the guard (guard.py) reads them too.
The components own their state and timing: the guard decides about NaNs and stop signals, the
cadences (cadence.py) when logging, validation and checkpoints are due, the meter what an
interval measured, the thread policy how many threads the kernels get.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ember.files import load_checkpoint
from ember.models.layers import BATCH_NORMS, running_batch_norm
from ember.rundir.directory import RunDir
from ember.track.console import Console
from ember.train import checkpoint, distributed, strategy
from ember.train.cadence import Every
from ember.train.callbacks import Callbacks
from ember.train.checkpoint import Checkpointer
from ember.train.evaluator import Evaluator
from ember.train.flops import loss_step_flops
from ember.train.guard import Guard
from ember.train.meter import IntervalMeter
from ember.train.state import Monitor
from ember.train.strategy import Parallel
from ember.train.threads import ThreadPolicy

if TYPE_CHECKING:  # the config layer sits above the loop (it names the optimizers and schedules)
    from ember.config.schema import TrainerConfig


@dataclass(kw_only=True, eq=False)
class Trainer:
    # cfg.trainer: a dataclass field read, where an OmegaConf read costs ~8 µs and the loop makes several a step
    t: "TrainerConfig"
    model: nn.Module  # the training weights; the step calls parallel.step_module
    parallel: Parallel
    evaluator: Evaluator  # validation and the final test (the tested weights, loss, metrics, device)
    checkpointer: Checkpointer  # optimizer, schedules, scaler, counters, RNG: what a checkpoint holds
    loss_name: str
    augment: Callable | None
    train_loader: Any
    val_loader: Any
    test_loader: Any
    monitor: Monitor | None
    ema_decay: float
    steps_per_epoch: int
    threads: ThreadPolicy
    meter: IntervalMeter
    guard: Guard
    console: Console
    logging: Every
    validation: Every
    checkpointing: Every
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
        self.plateau = isinstance(self.checkpointer.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        self._batch_norms = [m for m in self.model.modules() if isinstance(m, BATCH_NORMS)]
        # counting runs a copy of the model
        self._count_flops = self.t.measure_flops and not self.parallel.sharded_params
        self._grad_norm: torch.Tensor | None = None  # of the last step, when clipping computed it
        self._last_logs: dict = {}

    # -- the loop --------------------------------------------------------------------------------
    def fit(self, run: RunDir | None = None, checkpoint_dir: Path | None = None) -> dict[str, float]:
        """Train until max_epochs/max_steps, early stopping or a stop signal; return final metrics.
        `run`: the directory rank 0 logs to; `checkpoint_dir`: where checkpoints go (every rank)."""
        self.run, self.checkpoint_dir = run, checkpoint_dir
        self.checkpointer.records = lambda: run.records if run else 0
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
        if self.files and (
            self.checkpointing.at_epoch_end(state.epoch) or state.stop_reason or state.epoch >= self.t.max_epochs
        ):
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
        state, ck, fp16 = self.state, self.checkpointer, self.checkpointer.scaler.is_enabled()  # fp16: a GradScaler
        scaler, optimizer = ck.scaler, ck.optimizer
        for k, (x, y) in enumerate(micro_batches):
            x, y = self._prepared(x, y)
            with self.parallel.accumulating(defer=k < n - 1):  # gradients reduced once, with the last
                with self.autocast():
                    loss, self._last_logs = self._loss(x, y)
                scaled = loss / n if n > 1 else loss  # every step averages the losses it covers
                (scaler.scale(scaled) if fp16 else scaled).backward()  # a disabled scaler costs calls
            self.meter.add(loss, x.shape[0], state.step + 1)  # not len(x): Tensor.__len__ is a Python call
        if self.t.grad_clip > 0:
            scaler.unscale_(optimizer)
            self._grad_norm = strategy.local(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.t.grad_clip))
        # The guard reads the last micro-batch's loss; fp16's GradScaler skips overflowing steps itself.
        if self.guard.step_allowed(
            loss, None if fp16 else self._grad_norm, None if fp16 else self.model.parameters(), state, self.files
        ):
            state.skipped_steps = 0
            if fp16:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            if ck.scheduler is not None and not self.plateau:
                ck.scheduler.step()
            if ck.warmup is not None and state.step < ck.warmup.total_iters:
                ck.warmup.step()
            if ck.ema is not None:
                ck.ema.update_parameters(self.model)
        optimizer.zero_grad(set_to_none=True)
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
        record = {
            "step": self.state.step,
            "epoch": self.state.epoch_in_progress,
            "split": "train",
            "loss": m.pop("loss"),
            "lr": self.optimizer.param_groups[0]["lr"],
        }
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
        return self.files.save(self.checkpointer, self.state.step)

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
        metrics = self.evaluator.evaluate(self.val_loader, "val")
        self.eval_time += time.perf_counter() - start
        self._emit({"step": state.step, "epoch": state.epoch_in_progress, "split": "val", **metrics})
        if self.callbacks.on_validation is not None:
            self.callbacks.on_validation(state.epoch_in_progress, metrics)
        value = metrics[monitor.name.removeprefix("val/")]
        if self.plateau:
            self.checkpointer.scheduler.step(value)
        if monitor.improved(value, state.best):
            state.best, state.best_epoch, state.best_step, state.bad_validations = (
                value,
                state.epoch_in_progress,
                state.step,
                0,
            )
            if self.files:
                self.files.save_best(self.checkpointer)
        else:
            state.bad_validations += 1
            if monitor.patience and state.bad_validations >= monitor.patience:
                state.stop_reason = f"early stopping: {monitor.name} did not improve for {monitor.patience} validations"
        if self.parallel.dist.enabled:  # rank 0 decides, so all ranks stop at the same step
            state.stop_reason = distributed.broadcast(state.stop_reason, self.parallel.dist)

    def evaluate(self, loader) -> dict[str, float]:
        """Mean loss and the task's metrics over one of this trainer's loaders."""
        split = next((s for s in ("val", "test", "train") if getattr(self, f"{s}_loader", None) is loader), None)
        return self.evaluator.evaluate(loader, split)

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
        self.train_loader.stop_workers()  # training is over: their memory goes before the test's workers start
        if self.test_loader is not None:
            final.update({f"test/{k}": v for k, v in self.evaluator.evaluate(self.test_loader, "test").items()})
        if self.val_loader is not None:
            final.update({f"val/{k}": v for k, v in self.evaluator.evaluate(self.val_loader, "val").items()})
        self.wall_time = time.perf_counter() - self._start
        return final

    def close(self) -> None:
        self.parallel.close()

    # -- the parts the evaluator and the checkpointer hold, as callers name them ----------------
    state = property(lambda self: self.checkpointer.state)
    optimizer = property(lambda self: self.checkpointer.optimizer)
    ema = property(lambda self: self.checkpointer.ema)  # trainer.ema: the averaged weights validation and the test use
    total_steps = property(lambda self: self.checkpointer.total_steps)
    tested_model = property(lambda self: self.evaluator.model)  # validation's, best.pt's and the test's weights
    spec = property(lambda self: self.evaluator.spec)
    device = property(lambda self: self.evaluator.device)
    precision = property(lambda self: self.evaluator.precision)
    autocast = property(lambda self: self.evaluator.autocast)
    to_device = property(lambda self: self.evaluator.to_device)
    loss_fn = property(lambda self: self.evaluator.loss_fn)

    @property
    def reference(self):
        """What the baselines predict (the train split's climatology, or the majority class)."""
        return self.evaluator.reference

    @reference.setter
    def reference(self, value) -> None:
        self.evaluator.reference = value
