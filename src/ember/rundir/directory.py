"""The run directory's files: the one handshake between training and everything after it.

    <run>/config.yaml       the fully resolved config
    <run>/spec.json         the DataSpec the model was sized from
    <run>/metrics.jsonl     one JSON record per logged interval and validation
    <run>/checkpoints/      step-<N>.pt (the newest few), last.pt (= the newest), best.pt
    <run>/model.safetensors final weights of the best model
    <run>/summary.json      status, final metrics, best epoch, wall time, versions
    <run>/tb/               TensorBoard event files (track=[tensorboard], the default)
    <run>/metrics.csv       the records as a table (track=[csv])
    <run>/track.json        this run's ids in MLflow and W&B (track=[mlflow], [wandb])
    <run>/wandb/            W&B's files of the run (track=[wandb])
    <run>/report.html       curves, evaluation, config and environment on one offline page

Every file written during training goes through RunDir, so a later multi-process run can make
rank 0 the only writer in one place. summary.json has one writer, the run's RunRecord: each change
of a run's status is one of its transitions, checked against the status recorded. Everything after
training (eval, export, predict, bench, compress, report, sample, tune) reads a run through this
package: `RunDir.open` for its files, `ember.rundir.loading.load_run` for its model with the trained weights.
"""

import json
import os
import re
import shutil
from datetime import datetime
from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from safetensors.torch import save

from ember.data.spec import DataSpec
from ember.errors import CheckpointError, ConfigError, EmberError, first_line
from ember.files import (
    LOCK_NAME,
    lock_dir,
    refuse_links,
    remove_stale_temps,
    unlock_dir,
    write_atomic,
)
from ember.rundir.record import RunRecord
from ember.track import JsonlLogger, TrackContext, open_trackers


def default_run_name(cfg: DictConfig) -> str:
    return cfg.run.name or f"{cfg.data.name}-{cfg.model.name}"


# What ember and its trackers write at the top of a run directory: none may be a symbolic link
# (a library that opens its file by name would write wherever the link points).
RUN_ENTRIES = (
    LOCK_NAME,
    "config.yaml",
    "spec.json",
    "splits.json",
    "summary.json",
    "metrics.jsonl",
    "metrics.csv",
    "model.safetensors",
    "report.html",
    "track.json",
    "rollout.json",
    "checkpoints",
    "tb",
    "wandb",
    "export",
)


# (group, key, value) of config keys a run written before them trained without: targets were not
# standardized and no model was residual.
LEGACY = (("data", "normalize_target", False), ("model", "residual", "false"))


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self._loggers: list = []
        self.records = 0  # metric records written; a checkpoint remembers it for resume
        self.warn = None  # where tracker warnings go (a callable taking one line); default stderr
        self.record = RunRecord(self.path)  # summary.json: the run's status, written only there

    @classmethod
    def create(cls, cfg: DictConfig, spec: DataSpec, splits: dict | None = None) -> "RunDir":
        """A new run directory, locked for this process. A start that fails removes what it
        wrote, so no half-made run is left to look like one that is running."""
        run = cls(_claim(cfg))
        before = set(os.listdir(run.path))  # a given run.dir may hold the user's own files
        run.lock()
        if (run.path / "config.yaml").exists():
            run.release()
            raise ConfigError(
                f"run.dir={str(run.path)!r} already holds a run; choose a new directory or leave run.dir unset"
            )
        try:
            run.checkpoints.mkdir(exist_ok=True)
            run.write_text("config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
            run.write_json("spec.json", spec.to_dict())
            if splits is not None:  # the source rows of each split ember carved
                run.write_json("splits.json", splits)
            run.record.started()
            run._open_loggers(cfg, purge_step=None)
        except BaseException as e:
            run.close()
            for name in set(os.listdir(run.path)) - before:
                p = run.path / name
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
            if not os.listdir(run.path) and not cfg.run.dir:
                run.path.rmdir()
            if isinstance(e, OSError):
                raise EmberError(
                    f"cannot write the run directory {str(run.path)!r} ({e.strerror or e}); "
                    "free space or choose a writable run.root or run.dir"
                ) from None
            raise
        return run

    def lock(self) -> None:
        """Make this process the run's only writer (see ember.files.lock_dir); then remove the
        temporary files that writers killed earlier left behind."""
        refuse_links(self.path, RUN_ENTRIES)  # before the lock, so a refused directory gets no .lock
        lock_dir(self.path)
        try:  # and after: one planted in between
            refuse_links(self.path, RUN_ENTRIES)
        except EmberError:
            self.release()
            raise
        for d in (self.path, self.checkpoints):
            if d.is_dir():
                remove_stale_temps(d)

    def reopen(self, cfg: DictConfig, records: int, step: int) -> None:
        """Continue writing a run from a checkpoint: keep the first `records` metric records
        (those logged before the checkpoint), so no step is logged twice."""
        self.lock()
        path = self.path / "metrics.jsonl"
        lines = path.read_text().splitlines(keepends=True)[:records] if path.exists() else []
        self.write_text("metrics.jsonl", "".join(lines))
        self.records = len(lines)
        self.write_text("config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        self.record.resumed()
        self._open_loggers(cfg, purge_step=step + 1, kept=self.metrics())

    def _open_loggers(self, cfg: DictConfig, purge_step: int | None, kept: list[dict] | None = None) -> None:
        self._loggers.append(JsonlLogger(self.path / "metrics.jsonl"))
        names = list(cfg.get("track") or [])
        if not cfg.trainer.get("tensorboard", True):  # the older switch, still honoured
            names = [n for n in names if n != "tensorboard"]
        ctx = TrackContext(self.path, cfg, default_run_name(cfg), kept=kept, purge_step=purge_step)
        kwargs = {"warn": self.warn} if self.warn else {}
        self._loggers += open_trackers(names, ctx, **kwargs)


    @classmethod
    def open(cls, path: str | Path, key: str = "run") -> "RunDir":
        run = cls(Path(path))
        if not (run.path / "config.yaml").is_file():
            raise CheckpointError(
                f"{str(run.path)!r} is not a run directory (no config.yaml); pass {key}=runs/<name>/<time>"
            )
        return run

    # -- reading --
    # Every command that needs a run's config or spec reads it here, so a damaged file is one
    # error, the same for eval, export, predict, bench, report and resume.
    def config(self) -> DictConfig:
        try:
            cfg = OmegaConf.create(literal(OmegaConf.to_container(OmegaConf.load(self.path / "config.yaml"))))
        except (OSError, ValueError, yaml.YAMLError, OmegaConfBaseException) as e:  # UnicodeDecodeError is a ValueError
            raise self.damaged("config.yaml", e) from None
        if not (
            isinstance(cfg, DictConfig)
            and all(isinstance(cfg.get(g), DictConfig) and cfg[g].get("name") for g in ("model", "data"))
        ):
            raise self.damaged("config.yaml", "not a mapping with model and data sections")
        # Keys added since the run was written, at the value that reproduces how it trained.
        for group, key, value in LEGACY:
            if key not in cfg[group]:
                cfg[group][key] = value
        return cfg

    def spec(self) -> DataSpec:
        try:
            return DataSpec.from_dict(json.loads((self.path / "spec.json").read_text()))
        except (OSError, ValueError, TypeError) as e:  # not JSON, not a mapping, or not a DataSpec's keys
            raise self.damaged("spec.json", e) from None

    def damaged(self, name: str, why: BaseException | str) -> CheckpointError:
        return CheckpointError(
            f"{str(self.path / name)!r} is damaged ({first_line(why)}); restore it from a copy of the run, "
            "or train the run again"
        )

    def summary(self) -> dict:
        return self.record.read()

    def metrics(self) -> list[dict]:
        p = self.path / "metrics.jsonl"
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.exists() else []

    # -- writing --
    def log(self, record: dict) -> None:
        self.records += 1
        for logger in self._loggers:
            logger.log(record)

    def save_weights(self, state_dict: dict) -> None:
        # safetensors holds tensors only: a module's extra state (neuraloperator's models keep
        # their constructor arguments there as a dict) stays in the checkpoints.
        tensors = {k: v.contiguous() for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
        write_atomic(self.path / "model.safetensors", save(tensors), within=self.path)

    def write_json(self, name: str, obj: dict) -> None:
        self.write_text(name, json.dumps(obj, indent=2) + "\n")

    def write_text(self, name: str, text: str) -> None:
        if name == RunRecord.NAME:  # a bug: one writer, so every status change is a checked transition
            raise ValueError(
                f"{name} is written by the transitions of RunDir.record (ember.rundir.record.RunRecord) only"
            )
        write_atomic(self.path / name, text, within=self.path)

    def close(self, artifacts: dict | None = None) -> None:
        """End the loggers; trackers get the final summary and `artifacts` (name: Path or text)."""
        summary = self.summary()
        for logger in self._loggers:
            finish = getattr(logger, "finish", None)
            if finish is not None:
                finish(summary, artifacts or {})
            logger.close()
        self._loggers = []
        self.release()

    def release(self) -> None:
        """Let another process write the run (also done by the kernel when this one ends)."""
        unlock_dir(self.path)


def literal(node):
    """A config read from a file with every `${...}` kept as text: ember writes config.yaml
    resolved, so an interpolation there was put by someone else, and resolving `${oc.env:NAME}`
    would copy the reader's secret into what it writes (an export's metadata). OmegaConf reads
    `\\${` as a literal `${`, and a backslash before it doubled as one backslash."""
    if isinstance(node, dict):
        return {k: literal(v) for k, v in node.items()}
    if isinstance(node, list):
        return [literal(v) for v in node]
    if isinstance(node, str) and "${" in node:
        return re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", node)
    return node


def resume_run_dir(cfg: DictConfig) -> Path:
    """The run `resume=` names: a run directory, or (auto) the newest run of this experiment that
    did not finish and has a checkpoint."""
    if cfg.resume != "auto":
        return RunDir.open(cfg.resume, key="resume").path
    base = Path(cfg.run.root) / default_run_name(cfg)
    for path in sorted(base.glob("*/"), reverse=True):
        run = RunDir(path)
        if run.record.status() != "finished" and any(run.checkpoints.glob("*.pt")):
            return path
    raise ConfigError(
        f"resume=auto found no unfinished run with a checkpoint under {str(base)!r}; start a new run without resume="
    )


def _claim(cfg: DictConfig) -> Path:
    """The directory of a new run: run.dir, or runs/<experiment>/<time>, made here. mkdir is the
    claim, so two runs started in the same second take two directories."""
    if cfg.run.dir:
        path = Path(cfg.run.dir)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EmberError(
                f"cannot make the run directory {str(path)!r} ({e.strerror or e}); choose a writable run.dir"
            ) from None
        return path
    base = Path(cfg.run.root) / default_run_name(cfg) / datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EmberError(
            f"cannot make the run directory {str(base.parent)!r} ({e.strerror or e}); choose a writable run.root"
        ) from None
    path, i = base, 1
    while True:
        try:
            path.mkdir()
            return path
        except FileExistsError:
            path, i = base.with_name(f"{base.name}-{i}"), i + 1
