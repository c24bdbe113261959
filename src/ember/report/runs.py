"""`ember runs [DIR] [--sort METRIC] [--json]`: one row per run under DIR (default `runs`).

Columns: experiment, run, status (finished / running / failed / interrupted / preempted), start
time, model, data, the best validation value of the monitored metric, the main test metric
(accuracy for classification, R² for regression, else loss), and duration. `--sort` takes any
`split/metric` (best first: highest for accuracy-like metrics, lowest for losses and errors) or
started, duration, status, experiment, model, data. `--json` prints every row with every metric.
"""

import json
import os
import sys
from datetime import datetime
from pathlib import Path

from ember.errors import ConfigError, first_line
from ember.report.collect import RunData, find_runs, read_run
from ember.report.markup import clean_json, duration
from ember.scoring.metrics import is_higher_better

COLUMNS = ("started", "duration", "status", "experiment", "model", "data", "run")


def _main_test(metrics: dict) -> str | None:
    for key in ("test/accuracy", "test/r2", "test/loss"):
        if key in metrics:
            return key
    return next((k for k in metrics if k.startswith("test/")), None)


def row(run: RunData, root: Path) -> dict:
    metrics = run.metrics()
    started = run.summary.get("started")
    try:
        rel = str(run.path.relative_to(root)) if run.path != root else run.path.name
    except ValueError:
        rel = str(run.path)
    return {
        "path": str(run.path),
        "run": rel,
        "experiment": run.experiment,
        "started": (
            datetime.fromtimestamp(started).isoformat(timespec="seconds") if isinstance(started, (int, float)) else None
        ),
        "model": (run.config.get("model") or {}).get("name"),
        "data": (run.config.get("data") or {}).get("name"),
        "status": run.status,
        "monitor": run.monitor,
        "best": metrics.get(run.monitor) if run.monitor else None,
        "best_epoch": run.summary.get("best_epoch"),
        "test_metric": _main_test(metrics),
        "duration_s": round(run.duration(), 3) if run.duration() is not None else None,
        "epochs": run.summary.get("epochs"),
        "steps": run.summary.get("steps"),
        "metrics": metrics,
        "error": run.summary.get("error"),
        "damaged": run.damaged,
    }


def collect(root: str | Path) -> list[dict]:
    root = Path(root)
    if not root.exists():
        raise ConfigError(
            f"{str(root)!r} does not exist; pass the directory that holds your runs (run.root, default runs)"
        )
    if not root.is_dir():
        raise ConfigError(
            f"{str(root)!r} is not a directory; pass the directory that holds your runs (run.root, default runs)"
        )
    rows = []
    for path in find_runs(root):
        try:
            rows.append(row(read_run(path), root))
        except ConfigError:
            continue
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as e:
            # read_run leaves out what it knows to be damaged; anything it missed marks this run,
            # and the listing goes on: one bad file must not hide every run beside it.
            rows.append(_unreadable(path, root, e))
    return rows


def _unreadable(path: Path, root: Path, why: BaseException) -> dict:
    rel = str(path.relative_to(root)) if path != root and path.is_relative_to(root) else str(path)
    row = {
        k: None
        for k in (
            "experiment",
            "started",
            "model",
            "data",
            "monitor",
            "best",
            "best_epoch",
            "test_metric",
            "duration_s",
            "epochs",
            "steps",
            "error",
        )
    }
    return {
        **row,
        "path": str(path),
        "run": rel,
        "experiment": path.parent.name,
        "status": "unknown",
        "metrics": {},
        "damaged": [f"could not be read ({first_line(why)})"],
    }


def sort_rows(rows: list[dict], key: str | None) -> list[dict]:
    if not key:
        return sorted(rows, key=lambda r: (r["started"] or "", r["run"]))
    if key in COLUMNS:
        field = "duration_s" if key == "duration" else key
        present = [r for r in rows if r.get(field) is not None]
        return sorted(present, key=lambda r: r[field]) + [r for r in rows if r.get(field) is None]
    if "/" not in key:
        raise ConfigError(
            f"--sort {key!r}: sort by a metric such as val/loss or test/accuracy, or by one of: {', '.join(COLUMNS)}"
        )
    present = [r for r in rows if isinstance(r["metrics"].get(key), (int, float))]
    if rows and not present:
        known = sorted({k for r in rows for k in r["metrics"]})
        raise ConfigError(
            f"--sort {key!r}: no run has that metric; the runs have: {', '.join(known) or 'no metrics yet'}"
        )
    present.sort(key=lambda r: r["metrics"][key], reverse=is_higher_better(key))
    return present + [r for r in rows if r not in present]


def _num(v) -> str:
    if not isinstance(v, (int, float)):
        return ""
    return f"{v:.4g}"


def _duration(s) -> str:
    return duration(s) if s is not None else ""


def print_table(rows: list[dict], sort: str | None, root: Path) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False)
    if not console.is_terminal:  # a file or a pipe: full rows, not wrapped at 80 columns
        console = Console(highlight=False, width=250)
    if not rows:
        console.print(f"no runs under {root}", markup=False)
        return
    console.print(f"{len(rows)} run{'s' if len(rows) != 1 else ''} under {root}", markup=False)
    table = Table()
    for name in ("experiment", "run", "status", "started", "model", "data", "best val", "test", "time"):
        table.add_column(name, justify="right" if name in ("time",) else "left", overflow="fold")
    extra = sort if sort and "/" in sort and all(sort not in (r["monitor"], r["test_metric"]) for r in rows) else None
    if extra:
        table.add_column(extra, justify="right")
    style = {"finished": "green", "failed": "red", "running": "blue", "preempted": "yellow", "interrupted": "yellow"}
    for r in rows:
        best = f"{r['monitor'].split('/', 1)[-1]} {_num(r['best'])}" if r["monitor"] and r["best"] is not None else ""
        test = (
            f"{r['test_metric'].split('/', 1)[-1]} {_num(r['metrics'][r['test_metric']])}" if r["test_metric"] else ""
        )
        status = f"[{style.get(r['status'], 'default')}]{escape(str(r['status']))}[/]" + (
            " [red]damaged[/]" if r["damaged"] else ""
        )
        run_name = Path(r["run"]).name if r["experiment"] == Path(r["run"]).parent.name else r["run"]
        cells = [
            r["experiment"],
            run_name,
            (r["started"] or "").replace("T", " ")[:16],
            r["model"] or "",
            r["data"] or "",
            best,
            test,
            _duration(r["duration_s"]),
        ]
        if extra:
            cells.append(_num(r["metrics"].get(extra)))
        # Names come from the runs' files: `[/y]` in one is text, not Rich markup (MarkupError).
        cells = [escape(str(c)) for c in cells]
        table.add_row(*cells[:2], status, *cells[2:])
    console.print(table)
    for r in rows:  # what is wrong with a damaged run, and what to do
        if r["damaged"]:
            console.print(
                f"damaged: {r['run']}: {'; '.join(r['damaged'])}; "
                "restore the files from a copy of the run, or delete it",
                markup=False,
                soft_wrap=True,
            )


def runs_command(args) -> int:
    root = Path(args.dir)
    rows = sort_rows(collect(root), args.sort)
    try:
        _print(rows, args, root)
    except BrokenPipeError:  # `ember runs --json | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _print(rows: list[dict], args, root: Path) -> None:
    if args.json:
        json.dump(clean_json(rows), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print_table(rows, args.sort, root)
