"""The Python API and the engine behind the CLI: compose -> data -> model -> Trainer -> run dir.

The config is typed once, where training starts: `cfg` is the DictConfig (saved as the run's
config.yaml, compared with a resumed run's), `conf` the same config as the schema's dataclasses
(`ember.config.typed`), which everything else reads.
"""

import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

import ember
from ember.config import compose, compose_typed, override_value, typed
from ember.config.schema import CustomModel, DataCommon, EmberConfig
from ember.data import Splits, build_data
from ember.data.given import as_data, infer_spec
from ember.data.spec import DataSpec
from ember.errors import CheckpointError, ConfigError, Preempted
from ember.models import count_parameters, create_model, model_kwargs
from ember.models.residual import Residual
from ember.rundir.directory import RunDir, resume_run_dir
from ember.scoring import baselines
from ember.track.console import Console
from ember.train import distributed, strategy
from ember.train.build import build_trainer
from ember.train.callbacks import Callbacks
from ember.train.device import restored_torch_flags, seed_everything
from ember.train.resume import checked_resume_dir, resume
from ember.train.trainer import Trainer

GROUP_KEYS = ("data", "optim", "sched", "trainer", "run")


@dataclass
class Result:
    """What a training run produced."""

    metrics: dict[str, float]
    run_dir: Path | None
    model: nn.Module
    best_epoch: int | None = None
    summary: dict = field(default_factory=dict)

    def _repr_html_(self) -> str:
        """In a notebook: the metrics table and the loss curves, not the dataclass's fields."""
        from ember.rundir.notebook import run_html

        when = f"best epoch {self.best_epoch}" if self.best_epoch else f"{self.summary.get('epochs', '?')} epochs"
        return run_html(f"{type(self.model).__name__}: {when}", self.metrics, self.run_dir)


def train(
    cfg: DictConfig | list[str], console: Console | None = None, on_validation=None, conf: EmberConfig | None = None
) -> Result:
    """Train from a composed config, or from overrides as `ember train` takes them:
    `ember.train_config(["model=mlp", "trainer.max_epochs=5"])`.

    With `cfg.resume` (a run directory, or `auto`), continue that run from its newest good
    checkpoint with `cfg` as the config; model and data settings must match the run's.
    `on_validation(epoch, metrics)` is called after every validation; an exception it raises
    ends the run (tuning's pruner). `conf`: `cfg` typed, where the caller has it
    (`compose_for_resume`'s pair); otherwise it is typed here.
    """
    if isinstance(cfg, DictConfig):
        conf = conf or typed(cfg)  # the caller composed it, and may have changed it since
    else:
        cfg, conf = compose_typed([cfg] if isinstance(cfg, str) else list(cfg))
    d = distributed.from_env()
    # Rank 0 speaks for every process; the others train silently.
    console = console or (
        Console(conf.trainer.progress) if d.is_main else Console("none", stream=open(os.devnull, "w"))
    )
    resume_dir = checked_resume_dir(cfg, console)
    seed_everything(conf.trainer.seed)
    splits = build_data(conf.data)
    m = conf.model
    model = create_model(m.name, splits.spec, **model_kwargs(m))
    for note in splits.notes:
        console.print(f"note: {note}")
    if isinstance(model, Residual):
        console.print(
            f"model.residual={m.residual}: {m.name} predicts the correction to its input "
            f"({_residual_case(splits.spec)}), starting from the {baselines.names(splits.spec)[-1]} baseline; "
            "model.residual=false predicts the field itself"
        )
    return train_model(cfg, conf, model, splits, console, resume_dir, Callbacks(on_validation=on_validation))


def _residual_case(spec: DataSpec) -> str:
    names = ", ".join(spec.target_names or [])
    return f"{names} {spec.lead} steps ahead" if spec.lead else f"{names}: bias correction or same-grid downscaling"


# The public name (ember.train is the package of the training loop).
train_config = train


def compose_for_resume(overrides: list[str], config_file: str | None = None) -> tuple[DictConfig, EmberConfig]:
    """`ember train [resume=DIR] [overrides]`: the config (for a resumed run its own, then the new
    overrides) and the same config typed, as `train(cfg, conf=conf)` takes them."""
    cfg, conf = compose_typed(overrides, config_file)
    if not cfg.resume and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
        # torchrun restarted the workers after a failure: continue where the last attempt stopped.
        overrides = [*overrides, f"resume={cfg.run.dir or 'auto'}"]
        cfg, conf = compose_typed(overrides, config_file)
    if not cfg.resume:
        return cfg, conf
    run_dir = resume_run_dir(cfg)
    saved = RunDir.open(run_dir).config()
    cfg, conf = compose_typed(overrides, config_file, saved)
    cfg.resume = conf.resume = str(run_dir)
    return cfg, conf


def fit(model: nn.Module, train: Any, val: Any = None, test: Any = None, **overrides: Any) -> Result:
    """Train your own `nn.Module` with ember's loop, run directory and config keys.

    `train`, `val`, `test`: a Dataset yielding (x, y), or an (X, y) pair of tensors/arrays; or
    `train` the Splits of `ember.load_data`, with their val and test splits and their DataSpec
    (so the loss and metrics know the targets' statistics and report in the data's units).
    `overrides`: config groups as dicts (`trainer={"max_epochs": 5}`) or any key that belongs to
    exactly one group (`max_epochs=5`, `lr=1e-3`, `batch_size=32`). `resume=` a run directory
    (or "auto", the newest unfinished run of this model) continues that run from its newest
    good checkpoint, exactly as an uninterrupted run would have gone on.
    Example: `ember.fit(model, (X, y), max_epochs=20, lr=0.01).metrics`.
    """
    if isinstance(train, Splits):
        if val is not None or test is not None:
            raise ConfigError(
                "ember.fit(model, splits) takes the val and test splits from `splits`; pass no val= or test="
            )
        splits = train
    else:
        splits = Splits(
            train=as_data(train, "train"), val=as_data(val, "val"), test=as_data(test, "test"), spec=infer_spec(train)
        )
    cfg, conf = compose_typed(["data.val_fraction=0", "data.normalize=false"] + _fit_overrides(overrides))
    # The user's own model and data have no registry schema: the model as given, and the keys
    # every data source has, typed like them (the trainer reads them), named custom.
    conf.model = CustomModel(name=type(model).__name__)
    conf.data = DataCommon(**{**{k: getattr(conf.data, k) for k in DataCommon.__dataclass_fields__}, "name": "custom"})
    OmegaConf.set_struct(cfg, False)
    cfg.model, cfg.data = OmegaConf.structured(conf.model), OmegaConf.structured(conf.data)  # what config.yaml saves
    console = Console(conf.trainer.progress)
    resume_dir = checked_resume_dir(cfg, console)
    seed_everything(conf.trainer.seed)
    return train_model(cfg, conf, model, splits, console, resume_dir)


def train_model(
    cfg: DictConfig,
    conf: EmberConfig,
    model: nn.Module,
    splits: Splits,
    console: Console,
    resume_dir: Path | None = None,
    callbacks: Callbacks | None = None,
) -> Result:
    """Train `model` on `splits` as `conf` (the typed `cfg`) says, into a new run directory (or
    `resume_dir`): what `train`, `fit` and compress's fine-tuning share. `cfg` is only saved as
    the run's config.yaml; `callbacks`: what the loop calls (the pruner)."""
    # torch's global switches are the run's only for the run (ember.fit in a notebook).
    with restored_torch_flags():
        # Everything that can fail on bad input runs before the run directory is created.
        trainer = build_trainer(conf, model, splits, console, distributed.from_env(), callbacks)
        try:
            return _run_built(cfg, conf, trainer, splits, console, resume_dir)
        finally:
            trainer.close()
            distributed.shutdown()


def _run_built(
    cfg: DictConfig, conf: EmberConfig, trainer: Trainer, splits: Splits, console: Console, resume_dir: Path | None
) -> Result:
    if conf.trainer.loss == "auto" and trainer.loss_name == "rel_l2":
        console.print(
            "note: trainer.loss=auto trains this neural operator on the relative L2 error (rel_l2), as its paper does; "
            "set trainer.loss=mse for MSE"
        )
    d, batch, accum = trainer.parallel.dist, conf.data.batch_size, conf.trainer.grad_accum
    if d.enabled:
        console.print(f"{d.world} processes, global batch {batch} x {d.world} x {accum} = {batch * d.world * accum}")
    if resume_dir is not None:
        run = resume(trainer, cfg, resume_dir, console)
    elif d.is_main:
        run = RunDir.create(cfg, splits.spec, splits.record())
        console.print(f"run directory: {run.path}")
    else:
        run = None  # only rank 0 writes the run directory
    path = Path(distributed.broadcast(str(run.path) if d.is_main else None, d))
    try:
        return _train_and_record(conf, trainer, splits, run, path, console)
    except RuntimeError as e:
        # A peer that died or hung shows up inside DDP's or FSDP's own collectives (backward's
        # all-reduce, a parameter all-gather): one line naming this rank, not a C++ traceback.
        if d.enabled and distributed.is_collective_failure(e):
            raise distributed.collective_failed(e, d) from None
        raise
    finally:
        if run is not None:
            run.release()


def _train_and_record(
    conf: EmberConfig, trainer: Trainer, splits: Splits, run: RunDir | None, path: Path, console: Console
) -> Result:
    """Train, and record how the run ended in its summary.json (rank 0: `run`; the others None)."""
    summary = {"run_dir": str(path), "params": count_parameters(trainer.model), "device": str(trainer.device)}
    try:
        metrics = trainer.fit(run, path / "checkpoints")
    except BaseException as e:
        if run:
            try:
                run.record.failed(e, summary)
            except CheckpointError:
                pass  # the run's own error (its directory deleted, say) says more; it is raised below
            run.close()
        raise
    state = trainer.state
    if state.stop_reason.startswith("preempted"):
        _preempted(conf, trainer, run, path, summary, console)
    # Training is over: a stop signal now (a batch system's SIGTERM to the group) waits the few
    # seconds until the weights and summary.json are written, instead of leaving it "running".
    with trainer.guard.signals:
        base, verdict = _baselines(trainer, metrics)
        weights = strategy.full_state_dict(trainer.model)  # under FSDP every rank takes part
        if trainer.parallel.sharded_checkpoints:  # its step checkpoints are shards: last.pt is the whole final model
            trainer.files.save_whole(trainer.checkpointer, weights, "last.pt")
        if run:
            run.save_weights(weights)
        summary.update(_finished(trainer, metrics, base, verdict))
        summary = run.record.finished(summary) if run else summary
    report = None
    if run:
        from ember.report import after_training

        # A sharded model cannot run on rank 0 alone: the report rebuilds it from the run directory.
        alone = not trainer.parallel.sharded_params
        model, evaluator = (trainer.model, trainer.evaluator) if alone else (None, None)
        report, artifacts = after_training(conf, path, model, evaluator, splits, console.print)
        run.close(artifacts)
    if state.stop_reason and state.stop_reason.startswith("early stopping"):
        console.print(state.stop_reason)
    console.print(_time_report(summary["time"], conf.data, summary["threads"]))
    if report is not None:
        console.print(f"report: {report}")
    _show_result(trainer, path, metrics, base, verdict, console)
    return Result(metrics=metrics, run_dir=path, model=trainer.model, best_epoch=state.best_epoch, summary=summary)


def _preempted(
    conf: EmberConfig, trainer: Trainer, run: RunDir | None, path: Path, summary: dict, console: Console
) -> NoReturn:
    """A stop signal ended training: record it, requeue the job where asked, and raise Preempted
    with the command that continues the run."""
    state = trainer.state
    if run:
        run.record.preempted(state.step, trainer.checkpoint_path, summary)
        run.close()
    requeued = trainer.parallel.dist.is_main and _requeue(conf, console)
    custom = isinstance(conf.model, CustomModel)
    again = f"ember.fit(..., resume={str(path)!r})" if custom else f"ember train resume={path}"
    then = "the job was requeued" if requeued else f"continue with: {again}"
    raise Preempted(f"{state.stop_reason} at step {state.step}; checkpoint {trainer.checkpoint_path}; {then}")


def _show_result(trainer: Trainer, path: Path, metrics: dict, base: dict, verdict: dict | None, console: Console):
    """The final tables beside the baselines, then the model's own summary line: the result last,
    where the eye lands."""
    state = trainer.state
    when = f"{state.epoch} epochs"
    if trainer.monitor:
        when = f"best epoch {state.best_epoch} of {state.epoch} by {trainer.monitor.name}"
    if trainer.ema is not None:
        when += f", the weights' moving average (trainer.ema={trainer.ema_decay:g})"
    title = f"{path.parent.name}: {when}, {trainer.wall_time:.1f} s"
    baselines.show(console, title, metrics, base, verdict, trainer.spec, baselines.lines(trainer.reference))
    if callable(getattr(trainer.model, "describe", None)):
        console.print(trainer.model.describe())


def _finished(trainer: Trainer, metrics: dict, base: dict, verdict: dict | None) -> dict:
    """What summary.json says of a finished run."""
    return {
        "status": "finished",
        "metrics": metrics,
        "monitor": trainer.monitor.name if trainer.monitor else None,
        "best_epoch": trainer.state.best_epoch,
        "epochs": trainer.state.epoch,
        "steps": trainer.state.step,
        "stop_reason": trainer.state.stop_reason,
        "wall_time_s": round(trainer.wall_time, 3),
        "time": {
            "total_s": round(trainer.wall_time, 3),
            "data_wait_s": round(trainer.meter.total_wait, 3),
            "eval_s": round(trainer.eval_time, 3),
        },
        "baselines": base,
        "skill": verdict,
        "baseline_notes": baselines.lines(trainer.reference),
        "threads": trainer.threads.summary(),
        "flops_per_step": trainer.meter.flops_per_step,
        "precision": trainer.precision,
        "tested_weights": (
            f"exponential moving average, decay {trainer.ema_decay:g}"
            if trainer.ema is not None
            else "training weights"
        ),
        "versions": {"ember": ember.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "finished": time.time(),
    }


def _baselines(trainer: Trainer, metrics: dict[str, float]) -> tuple[dict, dict | None]:
    """The baselines' scores on val and test, and the model's verdict against the best of them
    (its skill joins `metrics`). Every rank takes part: the scores are summed across them."""
    base, extra = {}, {}
    if not trainer.uses_loss_protocol:
        held_out = (("val", trainer.val_loader), ("test", trainer.test_loader))
        data = {split: loader.data for split, loader in held_out if loader is not None}
        # The model beside the baselines where they correct biases (its distribution's scores).
        model = baselines.model_predictor(trainer.evaluator.forward, trainer.spec)
        base, extra = baselines.score_run(trainer.reference, data, trainer.device, model)
    metrics.update(extra)  # the model's distribution beside the baselines' (bias correction)
    verdict = baselines.verdict(metrics, base, trainer.spec)
    if verdict and "skill" in verdict:
        metrics[f"{verdict['split']}/skill"] = verdict["skill"]
    return base, verdict


def _time_report(t: dict, data: DataCommon, threads: dict | None = None) -> str:
    """Where the time went, the threads and why, and one concrete hint when the loop mostly
    waited for data (`data`: the typed data group) or the CPU was shared."""
    total = max(t["total_s"], 1e-9)
    wait, evaluation = t["data_wait_s"] / total, t["eval_s"] / total
    line = f"time: {total:.1f} s, of which waiting for data {wait:.0%}, validation {evaluation:.0%}"
    if threads:
        line += f"; {threads['threads']} thread(s): {threads['why']}"
    if wait > 0.3:
        if not data.fast_path:
            line += "; hint: the data is in memory, set data.fast_path=true to batch it by indexing"
        else:
            line += f"; hint: the loop is input-bound, raise data.num_workers (now {data.num_workers})"
    elif threads and threads.get("step_spread", 1) > 5:
        fix = (
            "ember dropped to fewer threads when it saw it"
            if threads["changes"][1:]
            else "run with trainer.threads=1 beside other work"
        )
        line += f"; steps varied {threads['step_spread']:.0f}x: the CPU was shared ({fix})"
    return line


def _requeue(conf: EmberConfig, console: Console) -> bool:
    """Under SLURM with trainer.requeue=true: put the job back in the queue after the checkpoint."""
    job = os.environ.get("SLURM_JOB_ID")
    if not (conf.trainer.requeue and job):
        return False
    try:
        subprocess.run(["scontrol", "requeue", job], check=True, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        console.print(f"warning: scontrol requeue {job} failed ({e}); resubmit the job with resume=auto")
        return False
    return True


def _fit_overrides(overrides: dict[str, Any]) -> list[str]:
    from ember.config.schema import DataCommon, OptimConfig, RunConfig, SchedConfig, TrainerConfig

    schemas = {
        "data": DataCommon,
        "optim": OptimConfig,
        "sched": SchedConfig,
        "trainer": TrainerConfig,
        "run": RunConfig,
    }
    out = []
    for key, value in overrides.items():
        if key == "track":  # a top-level list, not a group
            out.append(f"track={override_value(list(value) if isinstance(value, (list, tuple)) else [value])}")
            continue
        if key == "resume":  # a top-level key, not a group's; None: a new run
            out.append(f"resume={override_value(None if value is None else str(value))}")
            continue
        if key in schemas:
            if not isinstance(value, dict):
                raise ConfigError(f"{key}= takes a dict of {key} keys, for example {key}={{...}}")
            out += [f"{key}.{k}={override_value(v)}" for k, v in value.items()]
            continue
        owners = [g for g, s in schemas.items() if key in s.__dataclass_fields__]
        if len(owners) != 1:
            why = (
                f"is in {' and '.join(owners)}; write {owners[0]}={{'{key}': ...}}"
                if owners
                else "is not a key of any group"
            )
            valid = sorted({f for s in schemas.values() for f in s.__dataclass_fields__})
            raise ConfigError(f"fit() argument {key!r} {why}; valid: {', '.join(schemas)} or one of {', '.join(valid)}")
        out.append(f"{owners[0]}.{key}={override_value(value)}")
    return out


def load_data(name: str = "mnist1d", **options: Any) -> Splits:
    """A registered data source built with its defaults and the given options, as `ember train
    data=NAME data.key=value` builds it: `splits = ember.load_data("burgers", resolution=64)`."""
    return build_data(compose([f"data={name}"] + [f"data.{k}={override_value(v)}" for k, v in options.items()]).data)
