"""`ember.load_run`: a run's model with its trained weights, its config and its DataSpec."""

from pathlib import Path

from omegaconf import DictConfig
from torch import nn

from ember.data.spec import DataSpec
from ember.errors import CheckpointError, ConfigError, first_line
from ember.files import load_checkpoint, model_weights
from ember.models import builder_kwargs, create_model
from ember.rundir.directory import RunDir
from ember.rundir.notebook import run_html


class LoadedRun(tuple):
    """What `load_run` returns: the (model, config, spec) tuple, unpacked as before, which also
    knows its run directory and shows its metrics and curves in a notebook."""

    def __new__(cls, model: nn.Module, cfg: DictConfig, spec: DataSpec, path: Path):
        run = super().__new__(cls, (model, cfg, spec))
        run.path = Path(path)
        return run

    def _repr_html_(self) -> str:
        summary = RunDir(self.path).summary()
        return run_html(f"{self[1].model.name} on {self[1].data.name}", summary.get("metrics") or {}, self.path)


def load_run(path: str | Path, which: str = "best") -> LoadedRun:
    """The model of a run with its `best` (or `last`) weights, its config and its DataSpec:
    `model, cfg, spec = ember.load_run("runs/...")`; in a notebook it shows its metrics."""
    run = RunDir.open(path)
    cfg, spec = run.config(), run.spec()
    if cfg.model.get("custom"):
        raise ConfigError(
            f"{run.path} trained a custom model ({cfg.model.name}); build it yourself and load "
            f"{run.checkpoints / (which + '.pt')}"
        )
    model = create_model(cfg.model.name, spec, **builder_kwargs(cfg.model))
    path = run.checkpoints / f"{which}.pt"
    if which == "best" and not path.exists():  # a run without validation keeps no best: its last is it
        path = run.checkpoints / "last.pt"
    try:
        model.load_state_dict(model_weights(load_checkpoint(path), path))
    except (RuntimeError, KeyError, TypeError) as e:  # another model's weights, or not a checkpoint's content
        raise CheckpointError(
            f"{str(path)!r} does not fit the run's model {cfg.model.name} ({first_line(e)}); "
            "it belongs to another run: restore this run's checkpoint, or train it again"
        ) from None
    return LoadedRun(model, cfg, spec, run.path)
