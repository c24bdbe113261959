"""Where metrics go. Every logger takes the same records: dicts with `step`, `epoch`, `split`
and metric values. `metrics.jsonl` is always written and is the source of truth for ember's
own commands; the trackers named by the config's `track` list (tensorboard, mlflow, wandb, csv)
get the same records.

A tracker that cannot start or fails later (a missing package, a server that is down) costs one
warning line that names it; training goes on with the others.

On resume, metrics.jsonl keeps the records logged before the checkpoint and drops the rest.
Every tracker does the same so no step is logged twice: tensorboard purges the later steps, csv
rewrites its file, mlflow and wandb (which cannot forget a logged value) start a new tracker run,
replay the kept records into it and drop the one of the interrupted attempt.
"""

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ember.errors import describe
from ember.files import write_atomic

TRACKERS = ("tensorboard", "mlflow", "wandb", "csv")
EXTRAS = {"mlflow": "mlflow", "wandb": "wandb", "tensorboard": "tensorboard"}


class JsonlLogger:
    """One JSON object per line, flushed per record so a killed run keeps what it logged."""

    def __init__(self, path: Path):
        self._file = open(path, "a", encoding="utf-8")

    def log(self, record: dict) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


@dataclass
class TrackContext:
    """What a tracker needs to start: the run directory, its resolved config, the experiment
    name, and on resume the records kept from before the checkpoint (None for a new run)."""

    path: Path
    cfg: Any  # DictConfig
    experiment: str
    kept: list[dict] | None = None
    purge_step: int | None = None

    def config_dict(self) -> dict:
        from omegaconf import OmegaConf

        return OmegaConf.to_container(self.cfg, resolve=True)

    def state(self) -> dict:
        """track.json: the ids of this run in the trackers that have ids (mlflow, wandb)."""
        p = self.path / "track.json"
        try:
            return json.loads(p.read_text()) if p.exists() else {}
        except ValueError:
            return {}

    def save_state(self, name: str, value: dict) -> None:
        state = {**self.state(), name: value}
        write_atomic(self.path / "track.json", json.dumps(state, indent=2) + "\n")


def metric_items(record: dict) -> dict[str, float]:
    """`split/metric: value` for the finite numbers of a record."""
    split = record.get("split", "train")
    out = {}
    for key, value in record.items():
        if key in ("step", "epoch", "split") or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[f"{split}/{key}"] = float(value)
    return out


def flatten(d: dict | None, prefix: str = "") -> dict:
    """Nested mappings as one level of dotted keys: {"model": {"width": 64}} -> {"model.width": 64}.
    An empty mapping stays a value of its own ({} under its key), so no key disappears: a config
    that sets `model.kwargs: {}` still differs from one that leaves the key out."""
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class TensorBoardLogger:
    name = "tensorboard"

    def __init__(self, path: Path, purge_step: int | None = None, ctx: TrackContext | None = None):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: on resume, TensorBoard hides what the killed run logged after its checkpoint.
        self._writer = SummaryWriter(log_dir=str(path), purge_step=purge_step)
        if ctx is not None and ctx.kept is None:
            import yaml

            text = yaml.safe_dump(ctx.config_dict(), sort_keys=False)
            self._writer.add_text("config", "    " + text.replace("\n", "\n    "), 0)

    def log(self, record: dict) -> None:
        for key, value in metric_items(record).items():
            self._writer.add_scalar(key, value, record["step"])

    def finish(self, summary: dict, artifacts: dict) -> None:
        step = summary.get("steps") or 0
        for key, value in (summary.get("metrics") or {}).items():
            if key.startswith("test/") and isinstance(value, (int, float)):
                self._writer.add_scalar(key, value, step)
        text = json.dumps({k: v for k, v in summary.items() if k != "metrics"}, indent=2, default=str)
        self._writer.add_text("summary", "    " + text.replace("\n", "\n    "), step)
        if isinstance(artifacts.get("model_summary.txt"), str):
            self._writer.add_text("model", "    " + artifacts["model_summary.txt"].replace("\n", "\n    "), step)

    def close(self) -> None:
        self._writer.close()


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def _warn_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Guarded:
    """A tracker whose failures are one warning line: after the first it is dropped."""

    def __init__(self, name: str, tracker: Any, warn: Callable[[str], None]):
        self.name, self.tracker, self.warn = name, tracker, warn

    def _call(self, what: str, method: str, *args) -> None:
        if self.tracker is None:
            return
        fn = getattr(self.tracker, method, None)
        if fn is None:
            return
        try:
            fn(*args)
        except Exception as e:  # a tracker never stops training
            self.warn(f"warning: tracker {self.name} failed {what} ({describe(e)}); training goes on without it")
            tracker, self.tracker = self.tracker, None
            if method != "close":
                try:
                    tracker.close()
                except Exception:
                    pass

    def log(self, record: dict) -> None:
        self._call("to log", "log", record)

    def finish(self, summary: dict, artifacts: dict) -> None:
        self._call("at the end", "finish", summary, artifacts)

    def close(self) -> None:
        self._call("to close", "close")
        self.tracker = None


def open_trackers(names: list[str], ctx: TrackContext, warn: Callable[[str], None] = _warn_stderr) -> list[Guarded]:
    """Start each named tracker; one that cannot start is a warning line and is left out."""
    out = []
    for name in dict.fromkeys(names):
        try:
            if name == "tensorboard":
                if not tensorboard_available():
                    continue  # the default; without the package there is nothing to write
                tracker = TensorBoardLogger(ctx.path / "tb", ctx.purge_step, ctx)
            elif name == "csv":
                # Each logger module imports TrackContext from this one, and its own library
                # (mlflow, wandb) when it starts: imported here, a tracker nobody asked for costs nothing.
                from ember.track.csv_logger import CsvLogger

                tracker = CsvLogger(ctx)
            elif name == "mlflow":
                from ember.track.mlflow_logger import MlflowLogger

                tracker = MlflowLogger(ctx)
            elif name == "wandb":
                from ember.track.wandb_logger import WandbLogger

                tracker = WandbLogger(ctx)
            else:
                warn(f"warning: unknown tracker {name!r}; choose from {', '.join(TRACKERS)}")
                continue
        except ImportError as e:
            extra = EXTRAS.get(name, name)
            warn(
                f"warning: tracker {name} is not available ({describe(e)}); install it with pip install "
                f"'ember[{extra}]'; training goes on without it"
            )
            continue
        except Exception as e:
            warn(f"warning: tracker {name} could not start ({describe(e)}); training goes on without it")
            continue
        out.append(Guarded(name, tracker, warn))
    return out
