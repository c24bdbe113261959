"""The config schema: keyword-only dataclasses, so a misspelled or mistyped key fails at compose time.

`model` and `data` are open dictionaries here: their keys are the keyword arguments of the
registered model or data builder they name, and `ember.config.validate` checks them against
that signature (the function is the schema, as in timm's `create_model`).

A numeric key carries its valid range in its type, `Annotated[float, POSITIVE]`, and a key with a
fixed set of values carries the set, `Annotated[str, OneOf(LOSSES)]`, taken from the module that
acts on the value (ember.ranges). Building the dataclasses (`ember.config.typed`) checks every one
in `__post_init__`, beside the checks that span several keys of a group, before anything is created.
"""

import re
from dataclasses import dataclass, field
from typing import Annotated, Any

from ember.data.checks import NAN_POLICIES
from ember.data.periods import SPLIT_BY, parse_period
from ember.errors import ConfigError
from ember.ranges import (
    AT_LEAST_1,
    FRACTION,
    NON_NEGATIVE,
    OPEN_UNIT,
    POSITIVE,
    PROBABILITY,
    SEED,
    OneOf,
    Range,
    check_fields,
)
from ember.track import TRACKERS
from ember.train.losses import LOSSES
from ember.train.optim import OPTIMIZERS, SCHEDULES
from ember.train.strategy import STRATEGIES

# Sets of values that no other module lists: the schema is their one source.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MODES = ("auto", "min", "max")
PROGRESS = ("auto", "bar", "lines", "none")
# `ember tune`'s choices (ember.tune.samplers builds each sampler and pruner these name).
SAMPLERS = ("grid", "random", "tpe", "gp", "cmaes", "qmc", "pso")
PRUNERS = ("none", "median", "successive_halving", "hyperband")
DIRECTIONS = ("auto", "minimize", "maximize")
NAN_POLICY = ("stop", "skip", "off")
SPLITS = ("train", "val", "test")


@dataclass(kw_only=True)
class OptimConfig:
    name: Annotated[str, OneOf(sorted(OPTIMIZERS))] = "adamw"
    lr: Annotated[float, NON_NEGATIVE] = 1e-3  # 0 trains nothing, which tests and baselines use
    weight_decay: Annotated[float, NON_NEGATIVE] = 0.0
    momentum: Annotated[float, FRACTION] = 0.9  # sgd, rmsprop
    nesterov: bool = False  # sgd
    betas: Annotated[list[float], FRACTION] = field(default_factory=lambda: [0.9, 0.999])  # adam, adamw
    eps: Annotated[float, POSITIVE] = 1e-8
    # null: the single-kernel step where torch has one (sgd, adam, adamw); false: the per-parameter loop
    fused: bool | None = None

    def __post_init__(self):
        check_fields(self, "optim")
        if len(self.betas) != 2:  # a range checks each item, not how many there are
            raise ConfigError(
                f"optim.betas={list(self.betas)} must hold two values, for example optim.betas=[0.9,0.999]"
            )


@dataclass(kw_only=True)
class SchedConfig:
    name: Annotated[str, OneOf(SCHEDULES)] = "none"
    warmup_steps: Annotated[int, NON_NEGATIVE] = 0  # linear warmup from lr * warmup_start_factor
    warmup_start_factor: Annotated[float, Range(0, 1, low_open=True)] = 0.01
    step_size: Annotated[int, AT_LEAST_1] = 10  # step: epochs between decays
    gamma: Annotated[float, POSITIVE] = 0.1  # step: decay factor
    min_lr: Annotated[float, NON_NEGATIVE] = 0.0  # cosine: final lr; plateau: floor
    factor: Annotated[float, OPEN_UNIT] = 0.1  # plateau: decay factor
    patience: Annotated[int, NON_NEGATIVE] = 5  # plateau: validations without improvement before decaying
    pct_start: Annotated[float, OPEN_UNIT] = 0.25  # onecycle: fraction of steps spent rising
    max_lr: Annotated[float | None, POSITIVE] = None  # onecycle: peak lr (default: optim.lr)

    def __post_init__(self):
        check_fields(self, "sched")


@dataclass(kw_only=True)
class TrainerConfig:
    max_epochs: Annotated[int, AT_LEAST_1] = 20  # the default job: 20 epochs of MNIST-1D reach about 97% test accuracy
    max_steps: Annotated[int, Range(-1)] = -1  # optimizer steps; -1 means no limit
    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:1 | mps
    # auto (bf16 on GPUs that support it, else fp32) | fp32 | bf16 | fp16
    precision: Annotated[str, OneOf(PRECISIONS)] = "auto"
    seed: Annotated[int, SEED] = 0
    deterministic: bool = False
    compile: bool = False
    cuda_graphs: bool = False  # CUDA only: torch.compile(mode="reduce-overhead") for static shapes
    tf32: bool = True  # CUDA: TF32 matmuls and convolutions
    channels_last: bool = True  # CUDA: channels-last memory format for 2-D conv nets
    measure_flops: bool = True  # count FLOPs once and log model FLOP utilization (mfu)
    # auto | cross_entropy | nll | mse | l1 (= mae) | huber | rel_l2 (fields, vectors) | h1 (fields)
    loss: Annotated[str, OneOf(LOSSES)] = "auto"
    label_smoothing: Annotated[float, PROBABILITY] = 0.0
    grad_accum: Annotated[int, AT_LEAST_1] = 1  # micro-batches per optimizer step
    grad_clip: Annotated[float, NON_NEGATIVE] = 0.0  # max global grad norm; 0 disables clipping
    val_every_n_steps: Annotated[int, NON_NEGATIVE] = 0  # 0: validate at the end of every epoch
    log_every_n_steps: Annotated[int, AT_LEAST_1] = 50
    monitor: str = "auto"  # metric for best checkpoint / early stopping; auto: val/loss
    mode: Annotated[str, OneOf(MODES)] = "auto"  # min | max | auto (max for accuracy-like metrics)
    early_stopping_patience: Annotated[int, NON_NEGATIVE] = 0  # validations without improvement; 0 disables
    checkpoint_every_n_epochs: Annotated[int, AT_LEAST_1] = 1
    checkpoint_every_n_steps: Annotated[int, NON_NEGATIVE] = 0  # 0: only at epoch ends
    checkpoint_every_n_minutes: Annotated[float, NON_NEGATIVE] = 0.0  # 0: no time-based checkpoints
    keep_checkpoints: Annotated[int, AT_LEAST_1] = 3  # step checkpoints kept (best.pt is kept besides)
    nan_policy: Annotated[str, OneOf(NAN_POLICY)] = "stop"  # stop | skip | off: what a NaN/Inf loss or gradient does
    nan_max_skips: Annotated[int, AT_LEAST_1] = 10  # nan_policy=skip: stop after this many skipped steps in a row
    # Exponential moving average of the weights, the decay per optimizer step (0.999 averages over
    # ~1000 steps); validation, best.pt, the test, export and sampling use the average. null: the
    # model's own default (model=diffusion: 0.999, as EDM trains), else off; 0: off.
    ema: Annotated[float | None, Range(0, 1, high_open=True)] = None
    requeue: bool = False  # under SLURM: `scontrol requeue` the job after a preemption checkpoint
    devices: Annotated[int, AT_LEAST_1] = 1  # > 1: start that many local processes through torchrun
    # with several processes: ddp (auto) | fsdp (FSDP2: shards parameters, gradients, optimizer state)
    strategy: Annotated[str, OneOf(STRATEGIES)] = "auto"
    dist_timeout: Annotated[float, POSITIVE] = 1800.0  # seconds a rank waits in a collective before it is an error
    progress: Annotated[str, OneOf(PROGRESS)] = "auto"  # auto (bar on a terminal, lines otherwise) | bar | lines | none
    # CPU threads of torch's kernels: auto (probe and adapt, ember.train.threads) | N; OMP_NUM_THREADS wins
    threads: str = "auto"
    tensorboard: bool = True  # false drops tensorboard from `track` (the older switch)

    def __post_init__(self):
        check_fields(self, "trainer")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ConfigError(f"trainer.device={self.device!r} is not a device; use auto, cpu, cuda, cuda:N or mps")


@dataclass(kw_only=True)
class RunConfig:
    root: str = "runs"
    name: str | None = None  # experiment name; default "<data>-<model>"
    dir: str | None = None  # exact run directory; default <root>/<name>/<timestamp>
    report: bool = True  # write report.html in the run directory at the end of training
    # track=[mlflow]: server URL or store URI; default MLFLOW_TRACKING_URI, else sqlite <root>/mlflow.db
    mlflow_uri: str | None = None
    wandb_project: str | None = None  # track=[wandb]: the W&B project; default "ember"

    def __post_init__(self):
        check_folder_name("run.name", self.name)


@dataclass(kw_only=True)
class TuneConfig:
    """`ember tune`: a study of trials, each a normal run with some keys drawn from `space`."""

    metric: str = "val/loss"  # validation metric the study optimizes: val/loss, val/accuracy, ...
    # auto (maximize accuracy-like metrics, minimize the rest) | minimize | maximize
    direction: Annotated[str, OneOf(DIRECTIONS)] = "auto"
    trials: Annotated[int, AT_LEAST_1] = 20  # trials the study runs in all, counted over every worker and every rerun
    sampler: Annotated[str, OneOf(SAMPLERS)] = "tpe"  # grid | random | tpe | gp | cmaes | qmc | pso
    sampler_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the sampler
    pruner: Annotated[str, OneOf(PRUNERS)] = "median"  # none | median | successive_halving | hyperband
    pruner_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the pruner
    jobs: Annotated[int, AT_LEAST_1] = 1  # trials at once on this machine, each worker its own process
    # default: study.db (SQLite) in the study directory; or postgresql://..., a .journal file
    storage: str | None = None
    name: str | None = None  # study name; default <experiment>-<hash of the config>, so a rerun resumes
    # key: {type: float|int|categorical, low, high, log, step, choices}
    space: dict[str, Any] = field(default_factory=dict)
    seed: Annotated[int, SEED] = 0  # seed of the sampler
    timeout: Annotated[float, NON_NEGATIVE] = 0.0  # seconds after which no new trial starts; 0: no limit
    # seconds between heartbeats of a running trial; silent for 2x that: failed and retried
    heartbeat: Annotated[int, AT_LEAST_1] = 60
    retries: Annotated[int, NON_NEGATIVE] = 2  # times a trial whose worker died is retried

    def __post_init__(self):
        check_fields(self, "tune")
        check_folder_name("tune.name", self.name)


@dataclass(kw_only=True)
class BaselinesConfig:
    """The references every run is scored beside (ember.scoring.baselines)."""

    qdm: bool = False  # bias correction: also quantile delta mapping, the trend-preserving variant of quantile mapping

    def __post_init__(self):
        check_fields(self, "baselines")


@dataclass(kw_only=True)
class EmberConfig:
    model: Any = None
    data: Any = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    # metrics.jsonl is always written
    track: Annotated[list[str], OneOf(TRACKERS)] = field(default_factory=lambda: ["tensorboard"])
    resume: str | None = None

    def __post_init__(self):
        check_fields(self, "")


# Keys every data source understands, beside its builder's own keyword arguments.
@dataclass(kw_only=True)
class DataCommon:
    name: str
    batch_size: Annotated[int, AT_LEAST_1] = 64
    eval_batch_size: Annotated[int | None, AT_LEAST_1] = None  # default: 4 x batch_size
    val_fraction: Annotated[float, FRACTION] = 0.1  # carved from train when the source has no validation split
    test_fraction: Annotated[float, FRACTION] = 0.2  # carved from train when the source has no test split
    split_seed: Annotated[int, SEED] = 0  # seed of the carved splits; apart from trainer.seed so runs share them
    stratify: bool = True  # carve classification splits with each class in proportion
    # How test and validation are carved: auto (in time, train the earliest and test the latest
    # with a gap of lead + window between, wherever the data has times or windows; at random
    # otherwise) | time | random. Periods are START:END dates in the data's calendar, ends included.
    split_by: Annotated[str, OneOf(SPLIT_BY)] = "auto"
    train_period: str | None = None  # e.g. 1870-01:1990-12; default: what val and test leave
    val_period: str | None = None  # default: the latest val_fraction before the test split
    test_period: str | None = None  # default: the latest test_fraction of the data
    split: Annotated[str, OneOf(SPLITS)] = "test"  # split that `ember eval` evaluates
    # DataLoader workers for sources that are not in memory (file-backed: CPU count - 1)
    num_workers: Annotated[int, NON_NEGATIVE] = 0
    shuffle: bool = True
    normalize: bool = True  # standardize inputs with statistics of the train split
    normalize_target: bool = True  # regression: standardize targets too; metrics and exports stay in physical units
    nan: Annotated[str, OneOf(NAN_POLICIES)] = "error"  # error | drop: what samples holding NaN or Inf do
    augment: list[str] = field(default_factory=list)  # training-batch augmentations: flip, crop, noise, roll
    crop_padding: Annotated[int, NON_NEGATIVE] = 4  # augment=crop: zero padding before the random crop
    noise_std: Annotated[float, NON_NEGATIVE] = 0.05  # augment=noise: std of the Gaussian noise
    max_shift: Annotated[int, NON_NEGATIVE] = 8  # augment=roll: largest circular shift along the last dimension
    fast_path: bool = True  # batch in-memory splits by indexing; false: through a DataLoader
    path: str | None = None
    root: str | None = None
    target: Any = None

    def __post_init__(self):  # also the check of each source's own keys: their schemas derive from this one
        check_fields(self, "data")
        for name in ("train", "val", "test"):
            if getattr(self, f"{name}_period") is not None:
                parse_period(getattr(self, f"{name}_period"), f"data.{name}_period")
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(
                f"data.val_fraction={self.val_fraction} and data.test_fraction={self.test_fraction} leave no training "
                "data; their sum must be below 1"
            )


# Keys every model understands, beside its builder's own keyword arguments (ember.models.transfer).
@dataclass(kw_only=True)
class ModelCommon:
    name: str
    init: str | None = None  # start from these weights: a run directory, a .pt checkpoint or a .safetensors file
    freeze: list[str] = field(default_factory=list)  # parameter-name prefixes to leave untrained, e.g. [stem,stages.0]
    # auto | true | false (ember.models.residual checks it, booleans too): predict the correction to the input where
    # targets are its own variables on its grid
    residual: str = "auto"

    def __post_init__(self):  # also the check of each model's own keys: their schemas derive from this one
        check_fields(self, "model")


# The model group of `ember.fit`: the user's own nn.Module, which no registered builder makes (a
# later command reads `custom` in the run's config.yaml and says to build it by hand).
@dataclass(kw_only=True)
class CustomModel:
    name: str  # the module's class name
    custom: bool = True
    residual: str = "false"  # trained as given, never wrapped to predict a correction


def check_folder_name(key: str, name: str | None) -> None:
    """run.name and tune.name become one folder under run.root: a separator, `..` or an absolute
    name would put the run (or study) elsewhere on disk, so they are refused before anything is made."""
    if name is not None and ("/" in str(name) or "\\" in str(name) or str(name) in (".", "..")):
        raise ConfigError(
            f"{key}={name!r} is not a plain folder name (no /, \\, .. or absolute path); name it like my-experiment, "
            "or set run.dir= for an exact directory"
        )
