"""Reading run directories for `ember runs` and `ember report`: tolerant of what is missing.

A run that crashed, was killed or is still running still has something to show; a file that is
missing or damaged becomes a note in `RunData.problems`, never an exception. A directory without
config.yaml is not a run, and that is an error that says where the runs are.
"""

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ember.errors import ConfigError, first_line
from ember.files import pid_alive
from ember.scoring.metrics import is_higher_better

SKIP_DIRS = {"checkpoints", "tb", "wandb", "mlartifacts", "mlruns", "__pycache__"}


@dataclass
class RunData:
    path: Path
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)
    spec: dict | None = None
    problems: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # the problems of files that exist but cannot be read
    label: str = ""

    @property
    def status(self) -> str:
        return run_status(self.summary)

    @property
    def experiment(self) -> str:
        run = self.config.get("run") or {}
        if run.get("name"):
            return str(run["name"])
        if run.get("dir"):
            data, model = self.config.get("data") or {}, self.config.get("model") or {}
            return f"{data.get('name', '?')}-{model.get('name', '?')}"
        return self.path.parent.name

    @property
    def monitor(self) -> str | None:
        if "monitor" in self.summary:  # a finished run says; None where it had no validation split
            return self.summary["monitor"]
        m = (self.config.get("trainer") or {}).get("monitor", "auto")
        return "val/loss" if m in (None, "auto") else m

    def metrics(self) -> dict:
        """The final metrics, or for an unfinished run the best validation seen so far."""
        final = self.summary.get("metrics")
        if final:
            return dict(final)
        monitor = self.monitor
        if not monitor or "/" not in monitor:
            return {}
        split, name = monitor.split("/", 1)
        values = [r[name] for r in self.records if r.get("split") == split and isinstance(r.get(name), (int, float))]
        if not values:
            return {}
        return {monitor: max(values) if is_higher_better(monitor) else min(values)}

    def duration(self) -> float | None:
        s = self.summary
        if isinstance(s.get("wall_time_s"), (int, float)):
            return float(s["wall_time_s"])
        started = s.get("started")
        if not isinstance(started, (int, float)):
            return None
        end = s.get("finished") or (time.time() if self.status == "running" else _mtime(self.path / "metrics.jsonl"))
        return max(0.0, float(end) - float(started)) if end else None


def _mtime(p: Path) -> float | None:
    try:
        return p.stat().st_mtime
    except OSError:
        return None


def run_status(summary: dict) -> str:
    """finished / running / failed / interrupted / preempted. A run that says `running` but whose
    process on this host is gone (killed by the OOM killer, SIGKILL, a crashed node) is `failed`."""
    status = summary.get("status") or "unknown"
    if (
        status == "running"
        and summary.get("pid")
        and summary.get("host") == socket.gethostname()
        and not pid_alive(int(summary["pid"]))
    ):
        return "failed"
    return status


def status_note(run: "RunData") -> str | None:
    status = run.status
    s = run.summary
    if status == "finished":
        return None
    if status == "failed" and s.get("status") == "running":
        return (
            f"this run is not finished: its process (pid {s.get('pid')}) ended without writing a "
            "status, probably killed"
        )
    if status == "failed":
        return f"this run failed: {s.get('error', 'no error recorded')}"
    if status == "running":
        return "this run is still running: the page shows what it has logged so far"
    if status in ("preempted", "interrupted"):
        where = f"; continue with: ember train resume={run.path}" if status == "preempted" else ""
        return f"this run was {status} at step {s.get('steps', '?')} and is not finished{where}"
    return "this run has no status (summary.json is missing or damaged): the page shows what exists"


def is_run(path: Path) -> bool:
    """A run directory: config.yaml, and not an `ember tune` study (study.json; its trials are runs)."""
    return (path / "config.yaml").is_file() and not (path / "study.json").is_file()


def find_runs(root: Path) -> list[Path]:
    """Run directories at or under `root` (a directory holding config.yaml), in path order."""
    root = Path(root)
    if is_run(root):
        return [root]
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if "config.yaml" in filenames and "study.json" not in filenames and dirpath != str(root):
            found.append(Path(dirpath))
            dirnames[:] = []  # a run's own subfolders hold no runs
            continue
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
    return sorted(found)


def not_a_run(path: Path, key: str = "RUN") -> ConfigError:
    path = Path(path)
    if not path.exists():
        return ConfigError(
            f"{str(path)!r} does not exist; pass a run directory such as runs/<name>/<time> (ember runs lists them)"
        )
    inside = find_runs(path) if path.is_dir() else []
    if inside:
        shown = " ".join(str(p) for p in inside[:3]) + (" ..." if len(inside) > 3 else "")
        return ConfigError(
            f"{str(path)!r} is not a run directory (no config.yaml) but holds {len(inside)} run(s); pass them, "
            f"for example: ember report {shown}"
        )
    return ConfigError(
        f"{str(path)!r} is not a run directory (no config.yaml); pass a run directory such as runs/<name>/<time> "
        "(ember runs lists them)"
    )


def read_run(path: str | Path) -> RunData:
    path = Path(path)
    if not is_run(path):
        raise not_a_run(path)
    run = RunData(path=path, label=path.name)
    try:
        config = yaml.safe_load((path / "config.yaml").read_text()) or {}
        if not isinstance(config, dict) or any(
            not isinstance(config.get(k, {}), dict) for k in ("model", "data", "run", "trainer")
        ):
            raise ValueError("not a mapping of config groups")
        run.config = config
    except (OSError, ValueError, yaml.YAMLError) as e:  # UnicodeDecodeError is a ValueError
        _damaged(run, "config.yaml", e)
    run.summary = _typed_summary(_read_json(path / "summary.json", run) or {}, run)
    run.spec = _read_json(path / "spec.json", run, required=("input_shape", "task"))
    p = path / "metrics.jsonl"
    if p.exists():
        bad = 0
        for line in p.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                bad += 1  # a line cut short by a kill
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), (int, float)):
                run.records.append(record)
        if bad:
            run.problems.append(f"metrics.jsonl has {bad} unreadable line(s), left out")
    else:
        run.problems.append("metrics.jsonl is missing: no curves")
    return run


def _read_json(p: Path, run: RunData, required: tuple[str, ...] = ()) -> dict | None:
    if not p.exists():
        run.problems.append(f"{p.name} is missing")
        return None
    try:
        value = json.loads(p.read_text())
        if not isinstance(value, dict) or not all(k in value for k in required):
            raise ValueError("not a JSON object" + (f" with {', '.join(required)}" if required else ""))
        return value
    except (OSError, ValueError) as e:
        _damaged(run, p.name, e)
        return None


NUMBER = (int, float)
# What summary.json holds (ember.api, ember.rundir.record) and the report reads: a key of another type (valid
# JSON, wrong types: "pid": "abc", "metrics": [1, 2]) is left out and the run marked damaged, so
# that one bad file cannot stop `ember runs` or `ember report` for every run beside it.
SUMMARY_TYPES: dict[str, tuple] = {
    "status": (str,), "error": (str,), "host": (str,), "device": (str,), "monitor": (str, type(None)),
    "pid": (int,), "best_epoch": (int, type(None)), "epochs": (int,), "steps": (int,), "params": (int,),
    "started": NUMBER, "finished": NUMBER, "wall_time_s": NUMBER,
    "metrics": (dict,), "time": (dict,), "versions": (dict,), "environment": (dict,),
    "baselines": (dict, type(None)), "skill": (dict, type(None)),
}


def _typed_summary(summary: dict, run: RunData) -> dict:
    """`summary` without the keys whose values have the wrong type (noted once, as damage), and
    without the metrics, baselines or skill entries the report cannot read."""
    bad = [
        k
        for k, types in SUMMARY_TYPES.items()
        if k in summary and (not isinstance(summary[k], types) or (isinstance(summary[k], bool) and bool not in types))
    ]
    if isinstance(summary.get("pid"), int) and not 0 < summary["pid"] < 2**31:
        bad.append("pid")  # os.kill(-1, 0) asks about every process, a huge one overflows
    if isinstance(summary.get("time"), dict) and not all(
        isinstance(v, NUMBER) and not isinstance(v, bool) for v in summary["time"].values()
    ):
        bad.append("time")
    out = {k: v for k, v in summary.items() if k not in bad}
    if isinstance(out.get("metrics"), dict) and not all(
        isinstance(v, NUMBER) or v is None for v in out["metrics"].values()
    ):
        bad.append("metrics")
        out["metrics"] = {
            k: v for k, v in out["metrics"].items() if (isinstance(v, NUMBER) and not isinstance(v, bool)) or v is None
        }
    if out.get("baselines") and not all(isinstance(v, dict) for v in out["baselines"].values()):
        bad.append("baselines")
        out.pop("baselines")
    if out.get("skill") and not (
        isinstance(out["skill"].get("split"), str) and isinstance(out["skill"].get("best"), str)
    ):
        bad.append("skill")
        out.pop("skill")
    if bad:
        _damaged(run, "summary.json", f"wrong types for {', '.join(dict.fromkeys(bad))}, left out")
    return out


def _damaged(run: RunData, name: str, why: BaseException | str) -> None:
    """Note a file that exists but cannot be used: the run is shown without it, marked damaged."""
    note = f"{name} could not be read ({first_line(why)})"
    run.damaged.append(note)
    run.problems.append(note)


def labels_for(paths: list[Path]) -> list[str]:
    """Short distinct names: the last path parts that tell the runs apart."""
    # With runs of different experiments, the experiment is part of every name.
    first = 1 if len({p.resolve().parent for p in paths}) <= 1 else 2
    for depth in range(first, 5):
        labels = ["/".join(p.resolve().parts[-depth:]) for p in paths]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]


def _number(v):
    """A number, or None for anything else (the page shows numbers from the logs, never markup)."""
    return v if isinstance(v, NUMBER) and not isinstance(v, bool) else None


def curves(records: list[dict], max_points: int = 1500) -> dict[str, dict[str, list]]:
    """metric -> split -> [[step, value, epoch], ...], thinned to at most `max_points` a series."""
    out: dict[str, dict[str, list]] = {}
    for r in records:
        split = str(r.get("split", "train"))  # a list here would be an unhashable key
        for k, v in r.items():
            if k in ("step", "epoch", "split") or isinstance(v, bool):
                continue
            if v is None or isinstance(v, (int, float)):
                out.setdefault(k, {}).setdefault(split, []).append([r["step"], v, _number(r.get("epoch"))])
    for by_split in out.values():
        for split, pts in by_split.items():
            pts.sort(key=lambda p: p[0])
            if len(pts) > max_points:
                k = -(-len(pts) // max_points)
                by_split[split] = pts[::k] + ([pts[-1]] if (len(pts) - 1) % k else [])
    return out
