"""The config schema: keyword-only dataclasses, so a misspelled or mistyped key fails at compose time.

`model` and `data` are open dictionaries here: their keys are the keyword arguments of the
registered model or data builder they name, and `ember.config.validate` checks them against
that signature (the function is the schema, as in timm's `create_model`).
"""

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(kw_only=True)
class OptimConfig:
    name: str = "adamw"  # an entry of ember.train.optim.OPTIMIZERS
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd, rmsprop
    nesterov: bool = False  # sgd
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam, adamw
    eps: float = 1e-8


@dataclass(kw_only=True)
class SchedConfig:
    name: str = "none"  # none | step | cosine | plateau | onecycle
    warmup_steps: int = 0  # linear warmup from lr * warmup_start_factor
    warmup_start_factor: float = 0.01
    step_size: int = 10  # step: epochs between decays
    gamma: float = 0.1  # step: decay factor
    min_lr: float = 0.0  # cosine: final lr; plateau: floor
    factor: float = 0.1  # plateau: decay factor
    patience: int = 5  # plateau: validations without improvement before decaying
    pct_start: float = 0.25  # onecycle: fraction of steps spent rising
    max_lr: Optional[float] = None  # onecycle: peak lr (default: optim.lr)


@dataclass(kw_only=True)
class TrainerConfig:
    max_epochs: int = 10
    max_steps: int = -1  # optimizer steps; -1 means no limit
    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:1 | mps
    precision: str = "fp32"  # fp32 | bf16 | fp16
    seed: int = 0
    deterministic: bool = False
    compile: bool = False
    loss: str = "auto"  # auto | cross_entropy | nll | mse | l1 (= mae) | huber
    label_smoothing: float = 0.0
    grad_accum: int = 1  # micro-batches per optimizer step
    grad_clip: float = 0.0  # max global grad norm; 0 disables clipping
    val_every_n_steps: int = 0  # 0: validate at the end of every epoch
    log_every_n_steps: int = 50
    monitor: str = "auto"  # metric for best checkpoint / early stopping; auto: val/loss
    mode: str = "auto"  # min | max | auto (max for accuracy-like metrics)
    early_stopping_patience: int = 0  # validations without improvement; 0 disables
    checkpoint_every_n_epochs: int = 1
    checkpoint_every_n_steps: int = 0  # 0: only at epoch ends
    checkpoint_every_n_minutes: float = 0.0  # 0: no time-based checkpoints
    keep_checkpoints: int = 3  # step checkpoints kept (best.pt is kept besides)
    nan_policy: str = "stop"  # stop | skip | off: what a NaN/Inf loss or gradient does
    nan_max_skips: int = 10  # nan_policy=skip: stop after this many skipped steps in a row
    requeue: bool = False  # under SLURM: `scontrol requeue` the job after a preemption checkpoint
    progress: str = "auto"  # auto (bar on a terminal, lines otherwise) | bar | lines | none
    tensorboard: bool = True  # write event files when the tensorboard package is installed


@dataclass(kw_only=True)
class RunConfig:
    root: str = "runs"
    name: Optional[str] = None  # experiment name; default "<data>-<model>"
    dir: Optional[str] = None  # exact run directory; default <root>/<name>/<timestamp>


@dataclass(kw_only=True)
class EmberConfig:
    model: Any = None
    data: Any = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    run: RunConfig = field(default_factory=RunConfig)
    resume: Optional[str] = None


# Keys every data source understands, beside its builder's own keyword arguments.
@dataclass(kw_only=True)
class DataCommon:
    name: str
    batch_size: int = 64
    eval_batch_size: Optional[int] = None  # default: 4 x batch_size
    val_fraction: float = 0.1  # carved from train when the source has no validation split
    split: str = "test"  # split that `ember eval` evaluates
    num_workers: int = 0  # DataLoader workers for sources that are not in memory
    shuffle: bool = True
    normalize: bool = True  # standardize inputs with statistics of the train split
    fast_path: bool = True  # batch in-memory splits by indexing; false: through a DataLoader
    path: Optional[str] = None
    root: Optional[str] = None
    target: Any = None
