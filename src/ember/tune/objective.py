"""One trial: draw the parameters, compose the config, train a normal run, report to the pruner."""

import gc
import io
import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

from ember.api import Result, train
from ember.errors import ConfigError, Preempted, describe
from ember.files import write_atomic
from ember.rundir.record import RunRecord
from ember.track.console import Console
from ember.tune.budget import is_surplus, stored
from ember.tune.space import Param, suggest, to_overrides


@dataclass
class Plan:
    """Everything a worker needs to run trials of a study; picklable for worker processes."""

    name: str
    dir: Path
    storage: str  # URL or journal path
    base: list[str]  # the command's overrides (config file first)
    params: list[Param]
    metric: str  # val/<name>
    direction: str  # minimize | maximize
    trials: int
    sampler: str
    sampler_args: dict
    pruner: str
    pruner_args: dict
    seed: int
    jobs: int
    timeout: float
    heartbeat: int
    retries: int
    fingerprint: str
    shared: bool = False  # storage given by the user: other nodes may run trials too
    cfg: Any = None  # the composed config, for study.json and config.yaml (not sent to workers)

    @property
    def trial_base(self) -> list[str]:
        """Overrides every trial starts from: the command's, then the metric as the monitor."""
        mode = "max" if self.direction == "maximize" else "min"
        return self.base + ["trainer.progress=none", f"trainer.monitor={self.metric}", f"trainer.mode={mode}"]

    def trial_overrides(self, values: dict) -> list[str]:
        return self.trial_base + to_overrides(self.params, values)


class Fatal(ConfigError):
    """A mistake every trial would make (a metric the runs do not have): the study stops."""


class Objective:
    def __init__(self, plan: Plan):
        self.plan = plan
        self.current: optuna.Trial | None = None
        self.interrupted: str | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        plan, self.current = self.plan, trial
        if is_surplus(trial.study, stored(trial.study, trial.number), plan.trials):
            trial.set_user_attr("surplus", True)  # another worker took the last place first
            raise optuna.TrialPruned("surplus")
        values = suggest(trial, plan.params)
        run_dir = plan.dir / f"trial-{trial.number}"
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        result = self._train(trial, values, run_dir)
        value = result.metrics.get(plan.metric)
        if value is None:
            text = (
                f"tune.metric={plan.metric} was not measured: the trials have no validation split; "
                "set data.val_fraction above 0"
            )
            trial.set_user_attr("fatal", text)
            raise Fatal(text)
        summary = result.summary
        trial.set_user_attr("epochs", summary.get("epochs"))
        trial.set_user_attr("best_epoch", summary.get("best_epoch"))
        trial.set_user_attr("seconds", summary.get("wall_time_s"))
        if not math.isfinite(value):
            trial.set_user_attr("error", f"{plan.metric} is {value}")
        return float(value)

    def _train(self, trial: optuna.Trial, values: dict[str, Any], run_dir: Path) -> Result:
        """Train the trial's run, reporting each validation to the pruner; record on the trial
        why it ended early (pruned, interrupted, failed), and keep its output in output.log."""
        plan, validations = self.plan, 0
        leaf = plan.metric.removeprefix("val/")

        def on_validation(epoch: int, metrics: dict) -> None:
            nonlocal validations
            validations += 1
            value = float(metrics[leaf])
            trial.report(value, validations)
            if trial.should_prune():
                raise optuna.TrialPruned(
                    f"pruned at epoch {epoch} (validation {validations}): {plan.metric} {value:.4g}"
                )

        out = io.StringIO()
        try:
            # Overrides, not a composed config: train composes and types the trial's config once.
            return train(
                plan.trial_overrides(values) + [f"run.dir={run_dir}"],
                Console("none", stream=out),
                on_validation=on_validation,
            )
        except optuna.TrialPruned as e:
            trial.set_user_attr("pruned", str(e))
            if RunRecord(run_dir).status() is not None:
                RunRecord(run_dir).pruned(str(e), validations)
            raise
        except Preempted as e:  # the trainer saw SIGINT/SIGTERM, saved and stopped
            self.interrupted = str(e).split(";")[0]
            trial.set_user_attr("interrupted", self.interrupted)
            raise KeyboardInterrupt from e
        except KeyboardInterrupt:
            self.interrupted = "interrupted"
            trial.set_user_attr("interrupted", self.interrupted)
            raise
        except ConfigError as e:
            text = str(e)
            if text.startswith("trainer.monitor="):  # the metric is not one the runs compute
                text = "tune.metric=" + text.removeprefix("trainer.monitor=").replace("trainer.monitor", "tune.metric")
                trial.set_user_attr("fatal", text)
                raise Fatal(text) from None
            trial.set_user_attr("error", describe(e))
            raise
        except Exception as e:  # a failed trial: NaN guard, out of memory, a bug in a model
            trial.set_user_attr("error", describe(e))
            raise
        finally:
            if run_dir.is_dir():
                write_atomic(run_dir / "output.log", out.getvalue())
            _free_memory()


def _free_memory() -> None:
    gc.collect()
    try:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover - cleanup must not hide the trial's own outcome
        pass
