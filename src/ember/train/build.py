"""Build a Trainer from the config: every setting is resolved and checked here, once, before
anything is written, so the loop (trainer.py) only runs.

`build_trainer(cfg, model, splits, console, dist)` takes the typed config (`ember.config.typed`:
the schema's dataclasses, every value already checked) and resolves the device, the precision and
how the model is spread over processes (strategy.Parallel), builds the loaders, loss, metrics,
optimizer and schedules, and hands the trainer its components: the guard (NaN and stop
decisions), the cadences of logging, validation and checkpoints, the meter and the thread policy.
"""

import contextlib
import dataclasses
import math
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ember.data import Splits, TensorData
from ember.data.loaders import EpochLoader
from ember.errors import ConfigError
from ember.models import brings_own_loss
from ember.scoring import baselines
from ember.scoring.metrics import build_metrics, is_higher_better
from ember.track.console import Console
from ember.train import distributed, strategy
from ember.train.cadence import Every
from ember.train.callbacks import Callbacks
from ember.train.checkpoint import Checkpointer
from ember.train.device import resolve_device, resolve_precision, set_torch_flags
from ember.train.distributed import Dist
from ember.train.evaluator import Evaluator
from ember.train.flops import peak_flops
from ember.train.guard import Guard
from ember.train.losses import build_loss, resolve_loss
from ember.train.meter import IntervalMeter
from ember.train.optim import build_optimizer, build_scheduler, warmup_for_plateau
from ember.train.state import Monitor
from ember.train.threads import ThreadPolicy
from ember.train.trainer import Trainer

if TYPE_CHECKING:  # the config layer sits above the loop (it names the optimizers and schedules)
    from ember.config.schema import DataCommon, EmberConfig, SchedConfig, TrainerConfig


def build_trainer(
    cfg: "EmberConfig",
    model: nn.Module,
    splits: Splits,
    console: Console,
    dist: Dist | None = None,
    callbacks: Callbacks | None = None,
) -> Trainer:
    """A trainer ready to `fit`, or a ConfigError naming the setting that cannot work. `callbacks`:
    the caller's functions the loop calls (after a step, a validation, the final test)."""
    t, dist = cfg.trainer, dist or Dist()
    device, precision, model, channels_last = _placed(t, model, splits, dist)
    # The module the step calls: the model (or its own loss), spread over the processes (DDP or
    # FSDP) and compiled when asked; "reduce-overhead" records CUDA graphs for static shapes.
    compile_mode = _compile_mode(t, device)
    own_loss = brings_own_loss(model)
    parallel = strategy.plan(t.strategy, model, own_loss, dist, device, precision, compile_mode)
    # rel_l2 holds the target statistics
    loss_fn = None if own_loss else build_loss(t.loss, splits.spec, model, t.label_smoothing).to(device)
    reference, metrics = _scoring(cfg, splits, device)
    loaders = _loaders(cfg.data, t.seed, splits, device, dist)
    if len(loaders[0]) == 0:
        raise ConfigError("the train split is empty; check the data source")
    steps_per_epoch = math.ceil(len(loaders[0]) / t.grad_accum)
    total = steps_per_epoch * t.max_epochs
    total_steps = min(total, t.max_steps) if t.max_steps > 0 else total
    monitor = _monitor(t, loaders[1] is not None, ["loss"] if own_loss else ["loss", *metrics.keys()])
    optimizer = build_optimizer(
        cfg.optim, [p for p in model.parameters() if p.requires_grad], fusable=not parallel.sharded_params
    )
    scheduler, warmup = _schedules(cfg.sched, optimizer, total_steps, steps_per_epoch, monitor, console)
    ema_decay = getattr(model, "ema_decay", 0.0) if t.ema is None else t.ema
    ema = _averaged(ema_decay, model, parallel)
    evaluator = Evaluator(  # of the average under trainer.ema, else of the model as the strategy calls it
        model=ema.module if ema is not None else model, module=parallel.eval_module if ema is None else ema.module,
        loss_fn=loss_fn, metrics=metrics, spec=splits.spec, device=device, precision=precision,
        autocast=_autocast(device, precision), channels_last=channels_last, reference=reference, dist=dist,
        sharded_params=parallel.sharded_params,
    )
    # Threads of torch's CPU kernels: chosen, probed and adapted to a shared machine.
    workers = 0 if loaders[0].fast else cfg.data.num_workers
    threads = ThreadPolicy(t.threads, device, loader_workers=workers, deterministic=t.deterministic)
    meter = IntervalMeter(device, peak_flops=peak_flops(device, precision) if t.measure_flops else None)
    checkpointer = Checkpointer(
        model=model, tested=evaluator.model, optimizer=optimizer, scheduler=scheduler, warmup=warmup,
        scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"), ema=ema, meter=meter, threads=threads,
        total_steps=total_steps, config=dataclasses.asdict(cfg), spec=splits.spec, note=console.print,
    )
    return Trainer(
        t=t, model=model, parallel=parallel, evaluator=evaluator, checkpointer=checkpointer,
        loss_name="own" if own_loss else resolve_loss(t.loss, splits.spec, model), augment=splits.augment,
        train_loader=loaders[0], val_loader=loaders[1], test_loader=loaders[2], monitor=monitor, ema_decay=ema_decay,
        steps_per_epoch=steps_per_epoch, threads=threads, meter=meter,
        guard=Guard(t.nan_policy, t.nan_max_skips, steps_per_epoch, dist, device, console), console=console,
        logging=Every(steps=t.log_every_n_steps), validation=_validation(t, monitor),
        checkpointing=Every(
            steps=t.checkpoint_every_n_steps, epochs=t.checkpoint_every_n_epochs, minutes=t.checkpoint_every_n_minutes
        ),
        callbacks=callbacks or Callbacks(),
    )


def _placed(t: "TrainerConfig", model: nn.Module, splits: Splits, dist: Dist):
    """The device, the precision resolved on it, the model moved there (channels-last where that
    helps) and whether it is channels-last; torch's global switches set for the run."""
    device = _device(t, dist)
    precision = resolve_precision(t.precision, device)
    set_torch_flags(device, t.tf32, t.deterministic, keep_memory=_in_memory(splits))  # the caller restores them
    # channels_last feeds cuDNN's fastest convolution kernels; only 4-D inputs have that layout.
    channels_last = (
        device.type == "cuda" and t.channels_last and any(isinstance(m, nn.Conv2d) for m in model.modules())
    )
    model = model.to(device, memory_format=torch.channels_last) if channels_last else model.to(device)
    return device, precision, model, channels_last


def _compile_mode(t: "TrainerConfig", device: torch.device) -> str | None:
    """How the training step is compiled: "reduce-overhead" records CUDA graphs (trainer.cuda_graphs,
    CUDA only), "default" under trainer.compile, else None. Evaluation runs the model as it is."""
    if t.cuda_graphs and device.type != "cuda":
        raise ConfigError("trainer.cuda_graphs=true needs a CUDA device; remove it or set trainer.device=cuda")
    return "reduce-overhead" if t.cuda_graphs else "default" if t.compile else None


def _in_memory(splits: Splits) -> bool:
    """Whether every split is a tensor in memory (device.keep_freed_memory: not for file reads)."""
    return all(d is None or isinstance(d, TensorData) for d in (splits.train, splits.val, splits.test))


def _scoring(cfg: "EmberConfig", splits: Splits, device: torch.device):
    """The baselines, fitted in one pass over the train split, and the task's metrics: the anomaly
    correlations are taken against the baselines' climatology (seasonal where the data has times:
    the evaluator hands each evaluation batch its own)."""
    reference = baselines.reference(splits, qdm=bool(getattr(cfg, "baselines", None) and cfg.baselines.qdm))
    metrics = build_metrics(splits.spec, reference.mean if splits.spec.task == "regression" else None).to(device)
    return reference, metrics


def _validation(t, monitor: Monitor | None) -> Every:
    """Every trainer.val_every_n_steps steps, else every epoch; never without a validation split."""
    return Every(steps=t.val_every_n_steps, epochs=0 if t.val_every_n_steps else 1) if monitor else Every()


def build_evaluator(cfg: "EmberConfig", model: nn.Module, splits: Splits) -> tuple[Evaluator, tuple]:
    """An evaluator of `model` with the run's device, precision, loss and metrics, and the loaders
    (train, val, test) of `splits`, in one process: no optimizer, schedule or parallel wrapper."""
    t, dist = cfg.trainer, Dist()
    device, precision, model, channels_last = _placed(t, model, splits, dist)
    own_loss = brings_own_loss(model)
    loss_fn = None if own_loss else build_loss(t.loss, splits.spec, model, t.label_smoothing).to(device)
    reference, metrics = _scoring(cfg, splits, device)
    evaluator = Evaluator(
        model=model, module=model, loss_fn=loss_fn, metrics=metrics, spec=splits.spec, device=device,
        precision=precision,
        autocast=_autocast(device, precision), channels_last=channels_last, reference=reference, dist=dist,
    )
    return evaluator, _loaders(cfg.data, t.seed, splits, device, dist)


def build_evaluator_here(cfg: "EmberConfig", model: nn.Module, splits: Splits, note) -> tuple[Evaluator, tuple]:
    """`build_evaluator`, or, where the run's device is not on this machine (a GPU run read on a
    laptop), the same on the device at hand, said through `note` (one line)."""
    try:
        return build_evaluator(cfg, model, splits)
    except ConfigError as e:
        t = cfg.trainer
        if t.device in ("auto", "cpu") or "not available here" not in str(e):
            raise
        here = dataclasses.replace(t, device="auto", precision="auto")
        note(f"trainer.device={t.device} is not available here: evaluated on this machine's (trainer.device=auto)")
        return build_evaluator(dataclasses.replace(cfg, trainer=here), model, splits)


def _autocast(device: torch.device, precision: str):
    """The context the forward passes run in: autocast to bf16/fp16, or nothing under fp32."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext


def _averaged(decay: float, model: nn.Module, parallel) -> AveragedModel | None:
    """trainer.ema: an exponential moving average of the weights (and of the buffers, so a
    BatchNorm's statistics match the averaged weights), updated after every optimizer step."""
    if not decay:
        return None
    if parallel.sharded_params:
        raise ConfigError(
            "trainer.ema does not work with trainer.strategy=fsdp yet; use trainer.strategy=ddp or trainer.ema=0"
        )
    return AveragedModel(model, multi_avg_fn=_ema_with_warmup(decay), use_buffers=True)


def _ema_with_warmup(decay: float):
    """The EMA update with the warmup timm and diffusers use: the n-th average takes the decay
    min(decay, (1 + n) / (10 + n)). A fixed 0.999 over a run of a few hundred steps kept most of
    the first weights: the diffusion model's test loss was 2.2x that of its training weights
    (benchmarks/weight_average.py)."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        n = int(n_averaged)  # AveragedModel reads its count on the host anyway
        d = min(decay, (1 + n) / (10 + n))
        if averaged[0].is_floating_point() or averaged[0].is_complex():
            torch._foreach_lerp_(averaged, current, 1 - d)  # one kernel for all, as torch's own EMA does
        else:  # integer buffers (a BatchNorm's batch count)
            for a, c in zip(averaged, current, strict=True):
                a.copy_(a * d + c * (1 - d))

    return update


def _device(t, dist: Dist) -> torch.device:
    device = resolve_device(t.device)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    distributed.init(dist, device, t.dist_timeout)
    return device


def _loaders(d: "DataCommon", seed: int, splits: Splits, device: torch.device, dist: Dist) -> tuple:
    """Train, val and test loaders. Training batches are sharded across ranks. So are validation
    and test, unpadded: each rank evaluates its share and the sums are combined, so every rank
    holds the metrics of the whole split and all take the same decisions."""
    # In-memory splits move to the device once; batches are then slices, not copies.
    on_device = device.type != "cpu"
    eval_batch = d.eval_batch_size or 4 * d.batch_size

    def loader(data, batch_size, shuffle, evaluation=False, persistent=True):
        if data is None:
            return None
        if isinstance(data, TensorData) and on_device:
            data = data.to(device)
        return EpochLoader(
            data, batch_size, shuffle, seed=seed, num_workers=d.num_workers, pin_memory=device.type == "cuda",
            fast=d.fast_path, rank=dist.rank, world=dist.world, evaluation=evaluation, persistent=persistent,
        )

    # read once: no workers kept
    return (
        loader(splits.train, d.batch_size, d.shuffle),
        loader(splits.val, eval_batch, False, True),
        loader(splits.test, eval_batch, False, True, persistent=False),
    )


def _monitor(t, has_val: bool, computed: list[str]) -> Monitor | None:
    if not has_val:
        if t.early_stopping_patience:
            raise ConfigError(
                "trainer.early_stopping_patience needs a validation split; set data.val_fraction > 0 or pass val data"
            )
        return None
    name = "val/loss" if t.monitor == "auto" else t.monitor
    if not name.startswith("val/") or name.removeprefix("val/") not in computed:
        raise ConfigError(
            f"trainer.monitor={t.monitor!r} is not a validation metric of this run; choose one of: "
            f"{', '.join('val/' + k for k in computed)}"
        )
    higher = t.mode == "max" or (t.mode == "auto" and is_higher_better(name))
    return Monitor(name=name, higher_better=higher, patience=t.early_stopping_patience)


def _schedules(
    sched: "SchedConfig", optimizer, total_steps: int, steps_per_epoch: int, monitor: Monitor | None, console: Console
):
    """The lr schedule and, beside a plateau schedule, its linear warmup."""
    if sched.name == "onecycle" and total_steps * sched.pct_start < 2:
        # OneCycleLR cannot rise and fall within so few steps.
        console.print(f"note: {total_steps} steps are too few for sched=onecycle; training at a constant lr")
        sched = dataclasses.replace(sched, name="none")
    mode = "max" if monitor and monitor.higher_better else "min"
    scheduler = build_scheduler(sched, optimizer, total_steps, steps_per_epoch, mode)
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and not monitor:
        raise ConfigError(
            "sched=plateau needs a validation split to watch; set data.val_fraction > 0 or choose another sched"
        )
    return scheduler, warmup_for_plateau(sched, optimizer)
