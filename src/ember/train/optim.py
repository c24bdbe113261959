"""Optimizers and learning-rate schedules from the `optim` and `sched` config groups.

Schedules are stepped once per optimizer step (not per epoch), so their length follows
`trainer.max_steps`/`max_epochs` and gradient accumulation; `plateau` is stepped per validation.
"""

import torch
from torch.optim import lr_scheduler

from ember.errors import ConfigError

# To add an optimizer, add an entry here: name -> (build(optim config, params, fused), the defaults
# that `optim=name` sets). The name becomes a choice of the `optim` config group. `fused` is True on
# CUDA, where Adam and AdamW have single-kernel implementations.
OPTIMIZERS = {
    "sgd": (
        lambda c, p, fused: torch.optim.SGD(p, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov, weight_decay=c.weight_decay),
        {"lr": 0.01},
    ),
    "adam": (
        lambda c, p, fused: torch.optim.Adam(p, lr=c.lr, betas=tuple(c.betas), eps=c.eps, weight_decay=c.weight_decay, fused=fused or None),
        {},
    ),
    "adamw": (
        lambda c, p, fused: torch.optim.AdamW(p, lr=c.lr, betas=tuple(c.betas), eps=c.eps, weight_decay=c.weight_decay, fused=fused or None),
        {"lr": 0.003, "weight_decay": 0.01},
    ),
    "rmsprop": (
        lambda c, p, fused: torch.optim.RMSprop(p, lr=c.lr, momentum=c.momentum, eps=c.eps, weight_decay=c.weight_decay),
        {"lr": 0.01},
    ),
}


def build_optimizer(cfg, params, fused: bool = False) -> torch.optim.Optimizer:
    if cfg.name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {cfg.name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[cfg.name][0](cfg, params, fused)


def build_scheduler(cfg, optimizer, total_steps: int, steps_per_epoch: int, mode: str = "min"):
    """The schedule for `total_steps` optimizer steps, with optional linear warmup; None for `none`."""
    name, warmup = cfg.name, cfg.warmup_steps
    if name == "none" and not warmup:
        return None
    if name == "onecycle":
        if warmup:
            raise ConfigError("sched=onecycle warms up by itself (sched.pct_start); set sched.warmup_steps=0")
        max_lr = cfg.max_lr or optimizer.param_groups[0]["lr"]
        return lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=max(total_steps, 2), pct_start=cfg.pct_start)
    if name == "plateau":
        # Stepped by the trainer with each validation metric; warmup is applied separately.
        return lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=cfg.factor, patience=cfg.patience, min_lr=cfg.min_lr)
    main_steps = max(total_steps - warmup, 1)
    if name == "step":
        main = lr_scheduler.StepLR(optimizer, step_size=max(cfg.step_size * steps_per_epoch, 1), gamma=cfg.gamma)
    elif name == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=main_steps, eta_min=cfg.min_lr)
    else:  # none, with warmup only
        main = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if not warmup:
        return main
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=cfg.warmup_start_factor, end_factor=1.0, total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


def warmup_for_plateau(cfg, optimizer):
    """ReduceLROnPlateau cannot be chained; its warmup is a separate per-step schedule."""
    if cfg.name != "plateau" or not cfg.warmup_steps:
        return None
    return lr_scheduler.LinearLR(optimizer, start_factor=cfg.warmup_start_factor, end_factor=1.0, total_iters=cfg.warmup_steps)
