"""The training loop. Everything it needs to continue lives in `Trainer.state` plus the model,
optimizer, scheduler and scaler, which `checkpoint.capture` gathers into one checkpoint.

Hot-loop rules: no `.item()`, no printing, no host sync per step. Losses accumulate on the device
and are read every `trainer.log_every_n_steps` steps, where the NaN guard (nan_guard.py) reads them
too.
"""

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ember import baselines
from ember.data import Splits, TensorData
from ember.data.loaders import EpochLoader
from ember.errors import ConfigError
from ember.metrics import build_metrics, is_higher_better
from ember.models.layers import BATCH_NORMS, running_batch_norm
from ember.run import RunDir
from ember.track.console import Console
from ember.train import checkpoint, distributed, nan_guard, strategy
from ember.train.device import resolve_device, resolve_precision
from ember.train.distributed import Dist
from ember.train.flops import count_step_flops, peak_flops
from ember.train.losses import build_loss, resolve_loss
from ember.train.meter import IntervalMeter
from ember.train.optim import build_optimizer, build_scheduler, warmup_for_plateau
from ember.train.signals import SignalWatch
from ember.train.threads import ThreadPolicy


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


class _LossForward(nn.Module):
    """Calls a model's own `loss(batch)` through forward(), so DDP sees (and syncs) the pass."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, y):
        return self.model.loss((x, y))


class Trainer:
    def __init__(self, cfg: DictConfig, model: nn.Module, splits: Splits, run: RunDir | None, console: Console, dist: Dist | None = None):
        t = cfg.trainer
        self.cfg, self.t, self.run, self.console = cfg, t, run, console
        self.dist = dist or Dist()
        self.spec = splits.spec
        self.augment = splits.augment
        self.device = resolve_device(t.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        distributed.init(self.dist, self.device, t.dist_timeout)
        self.precision = resolve_precision(t.precision, self.device)
        cuda = self.device.type == "cuda"
        if cuda:
            # TF32 matmuls and convolutions: ~8x the fp32 rate on Ampere+ at ~1e-3 relative error.
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = t.tf32
            torch.backends.cudnn.benchmark = not t.deterministic
        # channels_last feeds cuDNN's fastest convolution kernels; only 4-D inputs have that layout.
        self.channels_last = cuda and t.channels_last and any(isinstance(m, nn.Conv2d) for m in model.modules())
        self.model = model.to(self.device, memory_format=torch.channels_last) if self.channels_last else model.to(self.device)
        if t.cuda_graphs and not cuda:
            raise ConfigError("trainer.cuda_graphs=true needs a CUDA device; remove it or set trainer.device=cuda")
        # The module the training step calls: the model (or its own loss, for models that define
        # one), spread over the processes (DDP or FSDP, ember.train.strategy) and compiled when
        # asked. Checkpoints save self.model. torch.compile's "reduce-overhead" mode records CUDA
        # graphs for static shapes.
        self.uses_loss_protocol = callable(getattr(model, "loss", None))
        runner = _LossForward(self.model) if self.uses_loss_protocol else self.model
        self.strategy = strategy.resolve(t.strategy)
        self.fsdp = self.strategy == "fsdp"  # sharded checkpoints, on any number of processes
        runner = strategy.wrap(runner, self.model, self.strategy, self.dist, self.device, self.precision)
        self.ddp = runner if self.dist.enabled and self.strategy == "ddp" else None
        self.sharded = strategy.is_sharded(self.model)
        self._no_sync = strategy.no_sync(self.strategy, runner, self.model, self.dist)
        if t.compile or t.cuda_graphs:
            # Static shapes: the epoch's short last batch and the evaluation batches get graphs of
            # their own (~5 in all), rather than one dynamic-shape graph whose kernels ran the 1-D CNN
            # at 0.66x of its eager speed on CPU in one run (benchmarks/compile.py).
            runner = torch.compile(runner, mode="reduce-overhead" if t.cuda_graphs else None, dynamic=False)
        self.forward = runner
        self._batch_norms = [m for m in model.modules() if isinstance(m, BATCH_NORMS)]
        self.loss_fn = build_loss(t.loss, self.spec, model, t.label_smoothing).to(self.device)  # rel_l2 holds the target statistics
        self.loss_name = "own" if self.uses_loss_protocol else resolve_loss(t.loss, self.spec, model)
        # What the baselines predict (the train split's climatology, or majority class); the
        # anomaly correlations are taken against the same climatology.
        self.reference = baselines.reference(splits)
        self.metrics = build_metrics(self.spec, self.reference if self.spec.task == "regression" else None).to(self.device)

        # In-memory splits move to the device once; batches are then slices, not copies.
        on_device = self.device.type != "cpu"
        place = lambda d: d.to(self.device) if isinstance(d, TensorData) and on_device else d  # noqa: E731
        d = cfg.data
        ebs = d.eval_batch_size or 4 * d.batch_size
        pin = self.device.type == "cuda"

        def loader(data, batch_size, shuffle, evaluation=False):
            if data is None:
                return None
            return EpochLoader(place(data), batch_size, shuffle, t.seed, d.num_workers, pin, d.get("fast_path", True), self.dist.rank, self.dist.world, evaluation)

        # Training batches are sharded across ranks. So are validation and test, unpadded: each
        # rank evaluates its share and the sums are combined (evaluate), so every rank holds the
        # metrics of the whole split and all take the same decisions.
        self.train_loader = loader(splits.train, d.batch_size, d.shuffle)
        self.val_loader = loader(splits.val, ebs, False, evaluation=True)
        self.test_loader = loader(splits.test, ebs, False, evaluation=True)

        # Threads of torch's CPU kernels: chosen, probed and adapted to a shared machine.
        self.threads = ThreadPolicy(t.get("threads", "auto"), self.device, loader_workers=0 if self.train_loader.fast else d.num_workers)
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

        self.optimizer = build_optimizer(cfg.optim, [p for p in model.parameters() if p.requires_grad], fusable=not self.sharded)
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

        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=dtype)) if dtype else contextlib.nullcontext
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.state = TrainState()
        self._last_train_loss: float | None = None
        self._last_logs: dict = {}
        self.meter = IntervalMeter(self.device, peak_flops=peak_flops(self.device, self.precision) if t.measure_flops else None)
        # Counting runs a copy of the model, which a sharded model cannot do alone.
        self._count_flops = t.measure_flops and not self.sharded
        self.eval_time = 0.0
        self._grad_norm = None
        self.weights_checked_at: int | None = None  # the step nan_guard last found the weights finite at
        self.step_hook = None  # called after every optimizer step (the profiler's clock)
        self.val_hook = None  # called as val_hook(epoch, metrics) after every validation (tuning's pruner)
        self._epoch = 1  # 1-based number of the epoch in progress, for records
        self.signals = SignalWatch()
        self.files = self.checkpoint_files(run.checkpoints) if run else None
        self.checkpoint_dir = run.checkpoints if run else None  # every rank's, for best.pt at the end

    def attach(self, run: RunDir) -> None:
        """The run directory this trainer writes (rank 0 only, when there are several)."""
        self.run = run
        self.files = self.checkpoint_files(run.checkpoints)
        self.checkpoint_dir = run.checkpoints

    def close(self) -> None:
        """Drop the DDP wrapper while the process group still lives. Were its C++ reducer the
        last holder of a gloo group, the group's destructor would join gloo's threads with the
        GIL held while one of them waits for the GIL: a hang at the end of the run."""
        self.ddp = self.forward = self._no_sync = None

    def checkpoint_files(self, directory: Path):
        """Whole-state .pt files written by rank 0, or (strategy=fsdp) DCP directories that every
        rank writes its shards into: then every rank holds one, with the run's directory."""
        if self.fsdp:
            from ember.train.sharded import ShardedCheckpointFiles

            return ShardedCheckpointFiles(directory, self.t.keep_checkpoints, self.dist)
        return checkpoint.CheckpointFiles(directory, self.t.keep_checkpoints)

    # -- the loop --------------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train until max_epochs/max_steps, early stopping or a stop signal; return final metrics."""
        self.console.start(self.total_steps, self.t.max_epochs)
        # The loop reads a plain copy: an OmegaConf read costs ~8 µs, and it made ~8 a step.
        self._t = SimpleNamespace(**OmegaConf.to_container(self.t, resolve=True))
        self._start, self._last_save = time.perf_counter(), time.monotonic()
        try:
            with self.signals:
                while not self._done():
                    self._train_epoch()
                if self.signals.stop:
                    return self._preempted()
                if self.meter.micro:  # the steps since the last full logging interval
                    self._log_train(self._last_logs)
        finally:
            self.console.stop()
        return self._finish()

    def _done(self) -> bool:
        state, t = self.state, self._t
        if state.stop_reason is None and t.max_steps > 0 and state.step >= t.max_steps:
            state.stop_reason = "max_steps"
        if state.stop_reason is None and state.epoch >= t.max_epochs:
            state.stop_reason = "max_epochs"
        return state.stop_reason is not None or self.signals.stop is not None

    def _train_epoch(self) -> None:
        t, state = self._t, self.state
        self.model.train()
        batches, accum = len(self.train_loader), t.grad_accum
        self._epoch = state.epoch + 1  # 1-based number of the epoch in progress, for records
        self.train_loader.set_epoch(state.epoch, state.batch)
        batch_iter, meter = iter(self.train_loader), self.meter
        for i in range(state.batch, batches):
            wait_start = time.perf_counter()
            x, y = next(batch_iter)
            meter.waited(time.perf_counter() - wait_start)
            x, y = self._to_device(x), self._to_device(y)
            if self.augment is not None:
                x, y = self.augment(x, y)
            if self._count_flops:
                self._measure_flops(x, y)
            # The last accumulation group of an epoch may hold fewer micro-batches: divide by its
            # true count so every step averages the micro-batch losses it covers.
            group = min(accum, batches - (i - i % accum))
            # Across processes, gradients are averaged once per optimizer step, not per micro-batch.
            last_of_group = (i + 1) % accum == 0 or i + 1 == batches
            sync = contextlib.nullcontext() if self._no_sync is None or last_of_group else self._no_sync()
            with sync:
                with self.autocast():
                    loss, logs = self._loss(x, y)
                scaled = loss / group if group > 1 else loss
                # A disabled GradScaler costs a few Python calls per step; skip it outside fp16.
                (self.scaler.scale(scaled) if self.scaler.is_enabled() else scaled).backward()
            meter.add(loss, x.shape[0], state.step + 1)  # not len(x): Tensor.__len__ is a Python call
            if not last_of_group:
                continue
            self._optimizer_step(loss)
            state.step += 1
            meter.steps += 1
            self.threads.step()
            if self.step_hook is not None:
                self.step_hook()
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
        if self.files and (state.epoch % t.checkpoint_every_n_epochs == 0 or state.stop_reason or state.epoch >= t.max_epochs):
            self.save_checkpoint()

    def _maybe_checkpoint(self) -> None:
        t, state = self._t, self.state
        due = (t.checkpoint_every_n_steps and state.step % t.checkpoint_every_n_steps == 0) or self.signals.save_now
        if t.checkpoint_every_n_minutes and time.monotonic() - self._last_save >= 60 * t.checkpoint_every_n_minutes:
            due = True
        if self.sharded:  # a time or a signal is local: all ranks save together or none does
            due = bool(distributed.agree_any(torch.tensor([float(bool(due))], device=self.device), self.dist).item())
        if due and self.files:
            self.save_checkpoint()

    def save_checkpoint(self) -> Path:
        """Write a step checkpoint now (also on SIGUSR2); the newest becomes last.pt."""
        nan_guard.check(self, weights=True)
        self.signals.save_now = False
        self._last_save = time.monotonic()
        return self.files.save(self, self.state.step)

    def _preempted(self) -> dict[str, float]:
        path = self.save_checkpoint() if self.files else None
        self.state.stop_reason = f"preempted by {self.signals.stop}"
        self.wall_time = time.perf_counter() - self._start
        self.checkpoint_path = path
        return {}

    def _measure_flops(self, x, y) -> None:
        self._count_flops = False
        if self.uses_loss_protocol:
            fn = lambda m, x, y: m.loss((x, y))[0]  # noqa: E731
        else:
            fn = lambda m, x, y: self.loss_fn(m(x), y)  # noqa: E731
        per_batch = count_step_flops(self.model, fn, x, y)
        self.meter.flops_per_step = per_batch * self.t.grad_accum if per_batch else None

    def _loss(self, x, y):
        if x.shape[0] == 1 and self._batch_norms:  # a last batch of one sample
            with running_batch_norm(self._batch_norms):
                return self._loss_of(x, y)
        return self._loss_of(x, y)

    def _loss_of(self, x, y):
        if self.uses_loss_protocol:
            return self.forward(x, y)
        return self.loss_fn(self.forward(x), y), {}

    def _optimizer_step(self, loss: torch.Tensor) -> None:
        if self._t.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            self._grad_norm = strategy.local(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self._t.grad_clip))
        if self.dist.enabled:
            # One small all-reduce per step: every rank learns whether any rank saw a NaN or got a
            # stop signal, so all skip, stop or go on together and none waits in a collective.
            flags = torch.tensor([float(self._t.nan_policy != "off" and nan_guard.locally_nonfinite(self, loss) is not None), float(self.signals.stop is not None)], device=self.device)
            bad, stop = distributed.agree_any(flags, self.dist).tolist()
            if stop and self.signals.stop is None:
                self.signals.stop = "a signal to another rank"
            if bad and not nan_guard.handle(self, "loss or gradient norm (on some rank)"):
                return
        elif self._t.nan_policy == "skip" and (what := nan_guard.locally_nonfinite(self, loss)) and not nan_guard.handle(self, what):
            return
        self.state.skipped_steps = 0
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None and not self.plateau:
            self.scheduler.step()
        if self.warmup is not None and self.state.step < self.warmup.total_iters:
            self.warmup.step()

    def _log_train(self, logs: dict) -> None:
        nan_guard.check(self)
        m = self.meter.record(reduce=lambda t: distributed.mean(t, self.dist), world=self.dist.world)
        self._last_train_loss = m["loss"]
        record = {"step": self.state.step, "epoch": self._epoch, "split": "train", "loss": m.pop("loss"), "lr": self.optimizer.param_groups[0]["lr"]}
        if self._grad_norm is not None:
            record["grad_norm"] = self._grad_norm.item()
        record |= {k: float(v) for k, v in logs.items()} | m
        self._emit(record)
        self.meter.reset()
        self._grad_norm = None

    def _emit(self, record: dict) -> None:
        if not self.dist.is_main:
            return  # rank 0 logs for everyone
        if self.run:
            self.run.log(record)
        self.console.show(record)

    # -- validation, best checkpoint, early stopping -----------------------------------------------
    def _validate(self) -> None:
        nan_guard.check(self, weights=True)  # before a best checkpoint can be written
        state = self.state
        start = time.perf_counter()
        metrics = self.evaluate(self.val_loader)
        self.eval_time += time.perf_counter() - start
        self._emit({"step": state.step, "epoch": self._epoch, "split": "val", **metrics})
        if self.val_hook is not None:
            self.val_hook(self._epoch, metrics)
        value = metrics[self.monitor.removeprefix("val/")]
        if self.plateau:
            self.scheduler.step(value)
        better = state.best is None or (value > state.best if self.higher_better else value < state.best)
        if better and math.isfinite(value):
            state.best, state.best_epoch, state.best_step, state.bad_validations = value, self._epoch, state.step, 0
            if self.files:
                self.files.save_best(self)
        else:
            state.bad_validations += 1
            patience = self.t.early_stopping_patience
            if patience and state.bad_validations >= patience:
                state.stop_reason = f"early stopping: {self.monitor} did not improve for {patience} validations"
        if self.dist.enabled:  # rank 0 decides, so all ranks stop at the same step
            state.stop_reason = distributed.broadcast(state.stop_reason, self.dist)

    def evaluate(self, loader) -> dict[str, float]:
        """Mean loss and the task's metrics over a loader; one host sync at the end."""
        # FSDP gathers parameters into tensors it reuses for training: inference-mode tensors
        # cannot be, so a sharded model evaluates under no_grad.
        with torch.no_grad() if self.sharded else torch.inference_mode():
            return self._evaluate(loader)

    def _evaluate(self, loader) -> dict[str, float]:
        self.model.eval()
        self.metrics.reset()
        strategy.sync_buffers(self.model, self.dist)
        loss_sum, n = torch.zeros((), device=self.device), 0
        for x, y in loader:
            loss_sum += self._eval_batch(x, y)
            n += len(x)
        if loader.sharded and self.sharded:
            # FSDP gathers parameters in every forward, so every rank makes as many calls: a rank
            # with one batch fewer makes its last one on an empty batch, and counts nothing.
            for _ in range(loader.sampler.most - len(loader)):
                self._eval_batch(x[:0], y[:0])
        if loader.sharded:  # each rank saw its share: the loss is summed here, torchmetrics syncs its own
            loss_sum, n = distributed.sum_(torch.stack([loss_sum, torch.tensor(float(n), device=self.device)]), self.dist)
        result = {"loss": (loss_sum / max(n, 1)).item()}
        if not self.uses_loss_protocol:
            result.update({k: v.item() for k, v in self.metrics.compute().items()})
        return result

    def _eval_batch(self, x, y) -> torch.Tensor:
        """The summed loss over one batch; the task's metrics take the batch too."""
        x, y = self._to_device(x), self._to_device(y)
        with self.autocast():
            if self.uses_loss_protocol:
                loss, _ = self.model.loss((x, y))
            else:
                out = (self.model if self.ddp is not None else self.forward)(x)
                loss = self.loss_fn(out, y)
                if len(x):
                    self.metrics.update(out.float(), y)
        return loss.float() * len(x)

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        if t.device != self.device:
            t = t.to(self.device, non_blocking=True)
        if self.channels_last and t.ndim == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    # -- the end of training ----------------------------------------------------------------------
    def _finish(self) -> dict[str, float]:
        """Test the best checkpoint (the last weights when there is no validation split)."""
        nan_guard.check(self, weights=True)
        state = self.state
        final: dict[str, float] = {}
        if self._last_train_loss is not None:
            final["train/loss"] = self._last_train_loss
        if state.best is not None:
            final[self.monitor] = state.best
        best = self.checkpoint_dir / "best.pt" if self.checkpoint_dir else None
        if self.dist.enabled:  # every rank tests rank 0's best.pt (each evaluates a share)
            distributed.barrier(self.dist)
        if best and best.exists():
            strategy.load_full_state_dict(self.model, checkpoint.load(best)["model"])
        if self.test_loader is not None:
            final.update({f"test/{k}": v for k, v in self.evaluate(self.test_loader).items()})
        if self.val_loader is not None:
            final.update({f"val/{k}": v for k, v in self.evaluate(self.val_loader).items()})
        self.wall_time = time.perf_counter() - self._start
        return final

    # -- state --------------------------------------------------------------------------------------
    def load_state_dict(self, ckpt: dict) -> str | None:
        """Continue from a checkpoint; returns a note when the schedule length changed."""
        return checkpoint.restore(self, ckpt)
