"""Optimizers and learning-rate schedules from the `optim` and `sched` config groups.

Schedules are stepped once per optimizer step (not per epoch), so their length follows
`trainer.max_steps`/`max_epochs` and gradient accumulation; `plateau` is stepped per validation.
"""

import warnings

import torch
from torch.optim import lr_scheduler

from ember.errors import CheckpointError, ConfigError

# To add an optimizer, add an entry here: name -> (build(optim config, params, fused), the defaults
# that `optim=name` sets). The name becomes a choice of the `optim` config group. `fused` is None
# (torch's default) or True for the optimizers in FUSED.
OPTIMIZERS = {
    "sgd": (
        lambda c, p, fused: torch.optim.SGD(
            p, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov, weight_decay=c.weight_decay, fused=fused
        ),
        {"lr": 0.01},
    ),
    "adam": (
        lambda c, p, fused: torch.optim.Adam(
            p, lr=c.lr, betas=tuple(c.betas), eps=c.eps, weight_decay=c.weight_decay, fused=fused
        ),
        {},
    ),
    "adamw": (
        lambda c, p, fused: torch.optim.AdamW(
            p, lr=c.lr, betas=tuple(c.betas), eps=c.eps, weight_decay=c.weight_decay, fused=fused
        ),
        {"lr": 0.003, "weight_decay": 0.01},
    ),
    "rmsprop": (
        lambda c, p, fused: torch.optim.RMSprop(
            p, lr=c.lr, momentum=c.momentum, eps=c.eps, weight_decay=c.weight_decay
        ),
        {"lr": 0.01},
    ),
}


# Those with a single-kernel step (one pass over each parameter, no per-op dispatch) on CPU and GPUs.
# On a small model it is most of the step: AdamW's fused step made a tiny MLP's epoch ~30% faster on
# CPU than the per-parameter loop. Its sums run in another order, so the weights differ from the
# loop's in the last bits (~1e-7 after 570 steps); optim.fused=false gives the loop back exactly.
FUSED = ("sgd", "adam", "adamw")


def _fused_devices() -> list[str]:
    try:  # private to torch: without it, the two devices every torch>=2.6 fuses on
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        return _get_fused_kernels_supported_devices()
    except ImportError:
        return ["cuda", "cpu"]


def build_optimizer(cfg, params: list, fusable: bool = True) -> torch.optim.Optimizer:
    """`fusable` is False where the caller knows the fused kernel cannot take the parameters
    (sharded DTensors); optim.fused=null then falls back to torch's default."""
    if cfg.name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {cfg.name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    fused = cfg.fused
    if fused and cfg.name not in FUSED:
        raise ConfigError(
            f"optim.fused=true: optim={cfg.name} has no fused step; "
            f"choose one of {', '.join(FUSED)} or set optim.fused=null"
        )
    if fused is None:
        devices = _fused_devices()
        fusable = (
            fusable and cfg.name in FUSED and all(p.is_floating_point() and p.device.type in devices for p in params)
        )
        fused = fusable or None
    elif fused and not fusable:
        raise ConfigError(
            "optim.fused=true cannot run on sharded parameters (trainer.strategy=fsdp); set optim.fused=null"
        )
    return OPTIMIZERS[cfg.name][0](cfg, params, fused or None)


# The schedules build_scheduler makes; each name is an option of the `sched` config group.
SCHEDULES = ("none", "step", "cosine", "plateau", "onecycle")


def build_scheduler(cfg, optimizer, total_steps: int, steps_per_epoch: int, mode: str = "min"):
    """The schedule for `total_steps` optimizer steps, with optional linear warmup; None for `none`."""
    name, warmup = cfg.name, cfg.warmup_steps
    if name == "none" and not warmup:
        return None
    if name == "onecycle":
        if warmup:
            raise ConfigError("sched=onecycle warms up by itself (sched.pct_start); set sched.warmup_steps=0")
        max_lr = cfg.max_lr or optimizer.param_groups[0]["lr"]
        return lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lr, total_steps=max(total_steps, 2), pct_start=cfg.pct_start
        )
    if name == "plateau":
        # Stepped by the trainer with each validation metric; warmup is applied separately.
        return lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=mode, factor=cfg.factor, patience=cfg.patience, min_lr=cfg.min_lr
        )
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
    return lr_scheduler.LinearLR(
        optimizer, start_factor=cfg.warmup_start_factor, end_factor=1.0, total_iters=cfg.warmup_steps
    )


def load_schedule(scheduler, saved: dict | None, saved_total: int, total: int, step: int) -> str | None:
    """Resume an lr schedule; returns a note when its length changed (then the new schedule is
    advanced to `step`). A plateau schedule has no length."""
    if scheduler is None:
        return None
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if saved is not None and (saved_total == total or plateau):
        scheduler.load_state_dict(saved)
        return None
    if plateau:
        return None
    with warnings.catch_warnings():  # "scheduler stepped before optimizer": on purpose
        warnings.simplefilter("ignore")
        for _ in range(step):
            scheduler.step()
    return f"the lr schedule now spans {total} steps instead of {saved_total}"


def check_optimizer_state(optimizer: torch.optim.Optimizer, saved, path) -> None:
    """Refuse (CheckpointError, one line) a saved optimizer state that does not fit `optimizer`'s
    parameters, before load_state_dict: torch checks the group sizes only, and the fused AdamW
    kernel, handed moments of another shape, wrote past them (heap corruption, SIGABRT). Each
    state tensor but `step` must have its parameter's shape and a floating dtype; each entry must
    belong to a parameter (torch maps them in order: the i-th saved id to the i-th parameter)."""
    why = _state_mismatch(optimizer, saved)
    if why:
        raise CheckpointError(
            f"the optimizer state in {str(path)!r} does not fit the model ({why}); it is damaged or from another "
            "model: delete it to resume from the previous checkpoint, or start a new run"
        )


def _state_mismatch(optimizer: torch.optim.Optimizer, saved) -> str | None:
    if (
        not isinstance(saved, dict)
        or not isinstance(saved.get("state"), dict)
        or not isinstance(saved.get("param_groups"), list)
    ):
        return "not an optimizer state: no state and param_groups"
    groups = saved["param_groups"]
    sizes = [len(g.get("params", [])) if isinstance(g, dict) else -1 for g in groups]
    want = [len(g["params"]) for g in optimizer.param_groups]
    if sizes != want:
        return f"parameter groups of {sizes} parameters, the model's optimizer has {want}"
    ids = [i for g in groups for i in g["params"]]
    if not all(isinstance(i, int) for i in ids) or len(set(ids)) != len(ids):
        return "parameter ids that are not distinct integers"
    params = dict(zip(ids, (p for g in optimizer.param_groups for p in g["params"]), strict=True))
    for key, entry in saved["state"].items():
        if key not in params:
            return f"state for parameter {key!r}, which the model does not have ({len(params)} parameters)"
        if not isinstance(entry, dict):
            return f"state of parameter {key!r} is a {type(entry).__name__}, not a mapping"
        why = _entry_mismatch(entry, params[key])
        if why:
            return f"parameter {key!r}: {why}"
    return None


def _entry_mismatch(entry: dict, param: torch.Tensor) -> str | None:
    for name, value in entry.items():
        if name == "step":
            if isinstance(value, torch.Tensor) and (
                value.numel() != 1 or value.is_complex() or value.dtype == torch.bool
            ):
                return f"step holds {tuple(value.shape)} {value.dtype}, not one number"
            continue
        if value is None or not isinstance(value, torch.Tensor):
            continue  # SGD's momentum_buffer before the first step; plain numbers of other optimizers
        if tuple(value.shape) != tuple(param.shape):
            return f"{name} has shape {tuple(value.shape)}, the parameter {tuple(param.shape)}"
        if not value.is_floating_point():
            return f"{name} is {value.dtype}, not a floating-point tensor"
    return None
