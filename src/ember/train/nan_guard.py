"""The NaN/Inf guard: what a non-finite loss, gradient or weight does (trainer.nan_policy).

- `stop` (the default), in one process: the losses are checked where the loop reads the device
  anyway (logging) and before every validation, checkpoint and the end of the run, not after
  every step, so the loop makes no host sync; the first non-finite loss is still traced to its
  step (IntervalMeter keeps the interval's losses one by one). The weights are checked there too:
  the last update's NaN shows in no loss yet, and no checkpoint may hold one.
- `skip` checks every step, before the update, which it must be able to skip.
- Across processes, the trainer's per-step all-reduce tells every rank whether any saw a NaN, so
  all skip or stop at the same step.
"""

import math

import torch

from ember.errors import NonFiniteError
from ember.train import strategy


def locally_nonfinite(trainer, loss: torch.Tensor) -> str | None:
    """What of this process's step is non-finite ("loss" or "gradient norm"), or None. The gradient
    norm is checked when clipping computed it anyway, and always under skip; with fp16 the
    GradScaler skips overflowing steps itself. One host sync on an accelerator."""
    norm = None if trainer.scaler.is_enabled() else trainer._grad_norm
    if norm is None and trainer._t.nan_policy == "skip" and not trainer.scaler.is_enabled():  # _t: the loop's plain copy
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        norm = strategy.local(torch.nn.utils.get_total_norm(grads)) if grads else None
    if not math.isfinite(loss.item()):  # one scalar read: no extra kernel
        return "loss"
    if norm is not None and not bool(torch.isfinite(norm).item()):
        return "gradient norm"
    return None


def check(trainer, weights: bool = False) -> None:
    """Under `stop` in one process: raise if a loss since the last interval read (or, with
    `weights`, a parameter) is non-finite."""
    if trainer.t.nan_policy != "stop" or trainer.dist.enabled:
        return
    step = trainer.meter.first_nonfinite()
    if step is not None:
        handle(trainer, "loss", step)
    # The weights change only with a step: at an epoch's end, validation, its checkpoint and the
    # end of the run ask about the same weights, which are read once.
    if weights and trainer.weights_checked_at != trainer.state.step:
        params = list(trainer.model.parameters())
        if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            handle(trainer, "weights", trainer.state.step, after=True)
        trainer.weights_checked_at = trainer.state.step


def handle(trainer, what: str, step=None, after: bool = False) -> bool:
    """Skip the update (returns False) or stop the run, as trainer.nan_policy says. `step`: the step
    the value came from (default: the one in progress), or a (first, last) span of them."""
    state, t = trainer.state, trainer.t
    if isinstance(step, tuple):
        where = f"at a step from {step[0] or 'the resume'} to {step[1]}"
    else:
        step = step or state.step + 1
        where = f"{'after' if after else 'at'} step {step} (epoch {math.ceil(step / trainer.steps_per_epoch)})"
    if t.nan_policy == "skip" and state.skipped_steps + 1 < t.nan_max_skips:
        state.skipped_steps += 1
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.console.print(f"warning: non-finite {what} {where}; update skipped ({state.skipped_steps} in a row)")
        return False
    last = trainer.files.steps()[0] if trainer.files and trainer.files.steps() else None
    hint = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
    raise NonFiniteError(f"non-finite {what} {where}; {hint}. Lower optim.lr, set trainer.grad_clip, check the data for NaN, or use trainer.nan_policy=skip")
