"""The guard: the NaN/Inf decisions (trainer.nan_policy) and the stop decisions, agreed across ranks.

- `stop` (the default), in one process: the losses are checked where the loop reads the device
  anyway (logging) and before every validation, checkpoint and the end of the run, not after
  every step, so the loop makes no host sync; the first non-finite loss is still traced to its
  step (IntervalMeter keeps the interval's losses one by one). The weights are checked there too:
  the last update's NaN shows in no loss yet, and no checkpoint may hold one.
- `skip` checks every step, before the update, which it must be able to skip.
- Across processes, one small all-reduce per step tells every rank whether any rank saw a NaN or
  got a stop signal, so all skip, stop or go on at the same step and none waits in a collective.
"""

import math

import torch

from ember.errors import NonFiniteError
from ember.train import distributed, strategy
from ember.train.distributed import Dist
from ember.train.signals import SignalWatch


class Guard:
    def __init__(self, policy: str, max_skips: int, steps_per_epoch: int, dist: Dist, device: torch.device, console):
        self.policy, self.max_skips, self.steps_per_epoch = policy, max_skips, steps_per_epoch
        self.dist, self.device, self.console = dist, device, console
        self.signals = SignalWatch()  # SIGTERM/SIGUSR1... asking to stop, SIGUSR2 asking to save
        self.weights_checked_at: int | None = None  # the step the weights were last found finite at

    @property
    def stop(self) -> str | None:
        """The reason to stop now (a signal's name), or None."""
        return self.signals.stop

    def step_allowed(self, loss: torch.Tensor, grad_norm, params, state, files) -> bool:
        """Before the optimizer step: whether to take it (False: skipped under nan_policy=skip)."""
        if self.dist.enabled:
            local = self.policy != "off" and self._nonfinite(loss, grad_norm, params) is not None
            flags = torch.tensor([float(local), float(self.signals.stop is not None)], device=self.device)
            bad, stop = distributed.agree_any(flags, self.dist).tolist()
            if stop and self.signals.stop is None:
                self.signals.stop = "a signal to another rank"
            return not bad or self._handle("loss or gradient norm (on some rank)", state, files)
        if self.policy == "skip" and (what := self._nonfinite(loss, grad_norm, params)):
            return self._handle(what, state, files)
        return True

    def agree(self, due: bool) -> bool:
        """A local decision (a clock, a signal) taken by all ranks together: true if any rank says so."""
        if not self.dist.enabled:
            return due
        return bool(distributed.agree_any(torch.tensor([float(due)], device=self.device), self.dist).item())

    def check(self, meter, params, state, files, weights: bool = False) -> None:
        """Under `stop` in one process: raise if a loss since the last interval read (or, with
        `weights`, a parameter) is non-finite."""
        if self.policy != "stop" or self.dist.enabled:
            return
        step = meter.first_nonfinite()
        if step is not None:
            self._handle("loss", state, files, step)
        # The weights change only with a step: at an epoch's end, validation, its checkpoint and
        # the end of the run ask about the same weights, which are read once.
        if weights and self.weights_checked_at != state.step:
            params = list(params)
            if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
                self._handle("weights", state, files, state.step, after=True)
            self.weights_checked_at = state.step

    def _nonfinite(self, loss: torch.Tensor, grad_norm, params) -> str | None:
        """What of this process's step is non-finite ("loss" or "gradient norm"), or None. The
        gradient norm is checked when clipping computed it anyway, and always under skip (`grad_norm`
        is None with fp16, whose GradScaler skips overflowing steps itself)."""
        norm = grad_norm
        if norm is None and self.policy == "skip" and params is not None:
            grads = [p.grad for p in params if p.grad is not None]
            norm = strategy.local(torch.nn.utils.get_total_norm(grads)) if grads else None
        if not math.isfinite(loss.item()):  # one scalar read: no extra kernel
            return "loss"
        if norm is not None and not bool(torch.isfinite(norm).item()):
            return "gradient norm"
        return None

    def _handle(self, what: str, state, files, step=None, after: bool = False) -> bool:
        """Skip the update (returns False) or stop the run, as nan_policy says. `step`: the step the
        value came from (default: the one in progress), or a (first, last) span of them."""
        if isinstance(step, tuple):
            where = f"at a step from {step[0] or 'the resume'} to {step[1]}"
        else:
            step = step or state.step + 1
            where = f"{'after' if after else 'at'} step {step} (epoch {math.ceil(step / self.steps_per_epoch)})"
        if self.policy == "skip" and state.skipped_steps + 1 < self.max_skips:
            state.skipped_steps += 1
            self.console.print(f"warning: non-finite {what} {where}; update skipped ({state.skipped_steps} in a row)")
            return False
        last = files.steps()[0] if files and files.steps() else None
        hint = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        raise NonFiniteError(
            f"non-finite {what} {where}; {hint}. Lower optim.lr, set trainer.grad_clip, check the data for NaN, "
            "or use trainer.nan_policy=skip"
        )
