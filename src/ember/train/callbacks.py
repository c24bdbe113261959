"""What the caller of a training run wants to hear from its loop, given when the trainer is built.

A tuner's pruner, a profiler or a tracker passes its functions here, to `build_trainer`; none is set
on a trainer afterwards, so everything a Trainer calls is visible where it is made. An exception a
callback raises ends the run as any failure in the loop does (tuning's pruner stops a trial so).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Callbacks:
    # After every optimizer step, with the train record logged at that step (loss, lr, ...), or an
    # empty dict on the steps that log nothing: reading the loss every step would sync the host.
    on_step: Callable[[int, dict[str, float]], None] | None = None
    # After every validation, with the epoch in progress and the validation metrics (no "val/").
    on_validation: Callable[[int, dict[str, float]], None] | None = None
    # Once, after the final test, with the run's final metrics; not called for a preempted run.
    on_fit_end: Callable[[Any], None] | None = None
