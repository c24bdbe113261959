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
    fused: Optional[bool] = None  # null: the single-kernel step where torch has one (sgd, adam, adamw); false: the per-parameter loop


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
    precision: str = "auto"  # auto (bf16 on GPUs that support it, else fp32) | fp32 | bf16 | fp16
    seed: int = 0
    deterministic: bool = False
    compile: bool = False
    cuda_graphs: bool = False  # CUDA only: torch.compile(mode="reduce-overhead") for static shapes
    tf32: bool = True  # CUDA: TF32 matmuls and convolutions
    channels_last: bool = True  # CUDA: channels-last memory format for 2-D conv nets
    measure_flops: bool = True  # count FLOPs once and log model FLOP utilization (mfu)
    loss: str = "auto"  # auto | cross_entropy | nll | mse | l1 (= mae) | huber | rel_l2 (fields, vectors)
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
    devices: int = 1  # > 1: start that many local processes through torchrun
    strategy: str = "auto"  # with several processes: ddp (auto) | fsdp (FSDP2: shards parameters, gradients, optimizer state)
    dist_timeout: float = 1800.0  # seconds a rank waits in a collective before it is an error
    progress: str = "auto"  # auto (bar on a terminal, lines otherwise) | bar | lines | none
    tensorboard: bool = True  # false drops tensorboard from `track` (the older switch)


@dataclass(kw_only=True)
class RunConfig:
    root: str = "runs"
    name: Optional[str] = None  # experiment name; default "<data>-<model>"
    dir: Optional[str] = None  # exact run directory; default <root>/<name>/<timestamp>
    report: bool = True  # write report.html in the run directory at the end of training
    mlflow_uri: Optional[str] = None  # track=[mlflow]: server URL or store URI; default MLFLOW_TRACKING_URI, else sqlite <root>/mlflow.db
    wandb_project: Optional[str] = None  # track=[wandb]: the W&B project; default "ember"


@dataclass(kw_only=True)
class TuneConfig:
    """`ember tune`: a study of trials, each a normal run with some keys drawn from `space`."""

    metric: str = "val/loss"  # validation metric the study optimizes: val/loss, val/accuracy, ...
    direction: str = "auto"  # auto (maximize accuracy-like metrics, minimize the rest) | minimize | maximize
    trials: int = 20  # trials the study runs in all, counted over every worker and every rerun
    sampler: str = "tpe"  # grid | random | tpe | gp | cmaes | qmc | pso
    sampler_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the sampler
    pruner: str = "median"  # none | median | successive_halving | hyperband
    pruner_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the pruner
    jobs: int = 1  # trials at once on this machine, each worker its own process
    storage: Optional[str] = None  # default: study.db (SQLite) in the study directory; or postgresql://..., a .journal file
    name: Optional[str] = None  # study name; default <experiment>-<hash of the config>, so a rerun resumes
    space: dict[str, Any] = field(default_factory=dict)  # key: {type: float|int|categorical, low, high, log, step, choices}
    seed: int = 0  # seed of the sampler
    timeout: float = 0.0  # seconds after which no new trial starts; 0: no limit
    heartbeat: int = 60  # seconds between heartbeats of a running trial; silent for 2x that: failed and retried
    retries: int = 2  # times a trial whose worker died is retried


@dataclass(kw_only=True)
class EmberConfig:
    model: Any = None
    data: Any = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    track: list[str] = field(default_factory=lambda: ["tensorboard"])  # any of tensorboard, mlflow, wandb, csv; metrics.jsonl is always written
    resume: Optional[str] = None


# Keys every data source understands, beside its builder's own keyword arguments.
@dataclass(kw_only=True)
class DataCommon:
    name: str
    batch_size: int = 64
    eval_batch_size: Optional[int] = None  # default: 4 x batch_size
    val_fraction: float = 0.1  # carved from train when the source has no validation split
    test_fraction: float = 0.2  # carved from train when the source has no test split
    split_seed: int = 0  # seed of the carved splits; apart from trainer.seed so runs share them
    stratify: bool = True  # carve classification splits with each class in proportion
    split: str = "test"  # split that `ember eval` evaluates
    num_workers: int = 0  # DataLoader workers for sources that are not in memory (file-backed: CPU count - 1)
    shuffle: bool = True
    normalize: bool = True  # standardize inputs with statistics of the train split
    normalize_target: bool = True  # regression: standardize targets too; metrics and exports stay in physical units
    nan: str = "error"  # error | drop: what samples holding NaN or Inf do
    augment: list[str] = field(default_factory=list)  # training-batch augmentations: flip, crop, noise, roll
    crop_padding: int = 4  # augment=crop: zero padding before the random crop
    noise_std: float = 0.05  # augment=noise: std of the Gaussian noise
    max_shift: int = 8  # augment=roll: largest circular shift along the last dimension
    fast_path: bool = True  # batch in-memory splits by indexing; false: through a DataLoader
    path: Optional[str] = None
    root: Optional[str] = None
    target: Any = None


# Keys every model understands, beside its builder's own keyword arguments (ember.models.transfer).
@dataclass(kw_only=True)
class ModelCommon:
    name: str
    init: Optional[str] = None  # start from these weights: a run directory, a .pt checkpoint or a .safetensors file
    freeze: list[str] = field(default_factory=list)  # parameter-name prefixes to leave untrained, e.g. [stem,stages.0]
    residual: str = "auto"  # auto | true | false: predict the correction to the input where targets are its own variables on its grid
