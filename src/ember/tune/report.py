"""What a study tells: a line per trial, the leaderboard, best.yaml, importances, the history."""

import csv
import io
import json
import math
import time
from pathlib import Path

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.table import Table

from ember.config import compose
from ember.files import write_atomic
from ember.tune.budget import counts, retried
from ember.tune.storage import without_password

ORDER = {"complete": 0, "pruned": 1, "running": 2, "waiting": 3, "failed": 4, "lost": 5}


def write_json(path: Path, obj: dict) -> None:
    write_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def describe(plan) -> dict:
    return {
        "name": plan.name,
        "storage": without_password(plan.storage),
        "metric": plan.metric,
        "direction": plan.direction,
        "sampler": plan.sampler,
        "pruner": plan.pruner,
        "space": {p.key: optuna.distributions.distribution_to_json(p.distribution) for p in plan.params},
        "overrides": plan.base,
        "fingerprint": plan.fingerprint,
        "created": time.time(),
    }


def state(t: FrozenTrial, retried: set[int]) -> str:
    if t.state == TrialState.FAIL:
        return "lost" if t.number in retried else "failed"
    return {
        TrialState.COMPLETE: "complete",
        TrialState.PRUNED: "pruned",
        TrialState.RUNNING: "running",
        TrialState.WAITING: "waiting",
    }[t.state]


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _params(t: FrozenTrial) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in t.params.items())


def _best(study: optuna.Study) -> FrozenTrial | None:
    try:
        best = study.best_trial
    except ValueError:  # no complete trial yet
        return None
    return best if best.value is not None and math.isfinite(best.value) else None


class TrialLine:
    """Optuna callback: one line per finished trial."""

    def __init__(self, plan):
        self.plan = plan

    def __call__(self, study: optuna.Study, t: FrozenTrial) -> None:
        if t.user_attrs.get("surplus"):
            return
        m = self.plan.metric
        retry = t.system_attrs.get("failed_trial")
        head = f"trial {t.number}" + (f" (rerun of {retry})" if retry is not None else "")
        if t.state == TrialState.COMPLETE:
            best = _best(study)
            best_text = f"  best {_fmt(best.value)} (trial {best.number})" if best else ""
            seconds = _duration(t)
            took = f"  {seconds:.1f} s" if seconds is not None else ""
            print(f"{head}: {m} {_fmt(t.value)}  {_params(t)}{took}{best_text}", flush=True)
        elif t.state == TrialState.PRUNED:
            print(f"{head}: {t.user_attrs.get('pruned', 'pruned')}  {_params(t)}", flush=True)
        else:
            reason = (
                t.user_attrs.get("fatal") or t.user_attrs.get("error") or t.system_attrs.get("fail_reason", "failed")
            )
            print(f"{head}: failed: {reason}  {_params(t)}", flush=True)


def print_header(study: optuna.Study, plan) -> None:
    done = counts(study)[0]
    space = ", ".join(p.key for p in plan.params)
    verb = "continuing" if done else "starting"
    print(
        f"{verb} study {plan.name}: {done}/{plan.trials} trials done, {plan.sampler} sampler, {plan.pruner} pruner, "
        f"{plan.direction} {plan.metric} over {space}; {plan.jobs} worker{'s' if plan.jobs > 1 else ''}\n"
        f"study directory: {plan.dir}",
        flush=True,
    )


def show(study: optuna.Study, plan, console: Console | None = None) -> dict:
    """Write leaderboard.csv, history.csv, best.yaml and study.json's results; print the table."""
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    again = retried(trials)
    rows = _leaderboard(trials, plan, again)
    _write_csv(plan.dir / "leaderboard.csv", rows)
    _write_csv(plan.dir / "history.csv", _history(trials, plan, again))
    best = _best(study)
    tally = {s: sum(1 for r in rows if r["state"] == s) for s in ORDER}
    results = {"trials": tally, "importances": _importances(study), "updated": time.time()}
    if best is not None:
        results["best"] = {
            "trial": best.number,
            "value": best.value,
            "params": best.params,
            "run_dir": best.user_attrs.get("run_dir"),
        }
        _write_best_yaml(plan, best)
    info = plan.dir / "study.json"
    saved = json.loads(info.read_text()) if info.is_file() else {}
    write_json(info, {**saved, "results": results})
    _print_results(console or _console(), plan, rows, results, best)
    return results


def _console() -> Console:
    console = Console(highlight=False, soft_wrap=True, markup=False)  # names and paths are text, not rich markup
    if not console.is_terminal:  # a log file: no need to squeeze the table into 80 columns
        console = Console(highlight=False, soft_wrap=True, width=200, markup=False)
    return console


def _leaderboard(trials: list[FrozenTrial], plan, again: set[int]) -> list[dict]:
    """One row per trial, best first: complete trials by value, then pruned ones by their last
    reported value, then the running, waiting, failed and lost ones."""
    sign = -1.0 if plan.direction == "maximize" else 1.0
    keys = [p.key for p in plan.params]

    def rank_key(t: FrozenTrial):
        s = state(t, again)
        if s == "complete":
            v = t.value if t.value is not None and math.isfinite(t.value) else math.inf * sign
            return (ORDER[s], sign * v, t.number)
        if s == "pruned" and t.intermediate_values:
            return (ORDER[s], sign * t.intermediate_values[max(t.intermediate_values)], t.number)
        return (ORDER[s], 0.0, t.number)

    rows = []
    for rank, t in enumerate(sorted(trials, key=rank_key), 1):
        rows.append(
            {
                "rank": rank,
                "trial": t.number,
                "state": state(t, again),
                plan.metric: (
                    t.value
                    if t.state == TrialState.COMPLETE
                    else (t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)
                ),
                **{k: t.params.get(k) for k in keys},
                "epochs": t.user_attrs.get("epochs") or (max(t.intermediate_values) if t.intermediate_values else None),
                "seconds": _duration(t),
                "rerun_of": t.system_attrs.get("failed_trial"),
                "note": t.user_attrs.get("pruned") or t.user_attrs.get("error") or t.user_attrs.get("fatal") or "",
                "run_dir": t.user_attrs.get("run_dir", ""),
            }
        )
    return rows


def _history(trials: list[FrozenTrial], plan, again: set[int]) -> list[dict]:
    """The trials in the order they started, with the best value so far."""
    better = max if plan.direction == "maximize" else min
    history, best_so_far = [], None
    for t in sorted(trials, key=lambda t: t.number):
        if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value):
            best_so_far = t.value if best_so_far is None else better(best_so_far, t.value)
        history.append(
            {
                "trial": t.number,
                "state": state(t, again),
                "value": t.value,
                "best_value": best_so_far,
                "seconds": _duration(t),
                "started": t.datetime_start,
                **{p.key: t.params.get(p.key) for p in plan.params},
            }
        )
    return history


def _print_results(console: Console, plan, rows: list[dict], results: dict, best: FrozenTrial | None) -> None:
    """The first ten rows of the leaderboard, the best trial, and how to reproduce it."""
    keys = [p.key for p in plan.params]
    table = Table(title=f"study {plan.name}: " + ", ".join(f"{n} {s}" for s, n in results["trials"].items() if n))
    for col in ("#", "trial", "state", plan.metric, *keys, "epochs", "s"):
        table.add_column(col, justify="left" if col == "state" else "right")
    for r in rows[:10]:
        table.add_row(
            str(r["rank"]),
            str(r["trial"]),
            r["state"],
            _cell(r[plan.metric]),
            *(_cell(r[k]) for k in keys),
            _cell(r["epochs"]),
            _cell(r["seconds"], 1),
        )
    console.print(table)
    if len(rows) > 10:
        console.print(f"... {len(rows) - 10} more in {plan.dir / 'leaderboard.csv'}")
    if best is not None:
        console.print(f"best: trial {best.number}, {plan.metric} {_fmt(best.value)}: {_params(best)}")
        if results["importances"]:
            console.print("importance: " + ", ".join(f"{k} {v:.2f}" for k, v in results["importances"].items()))
        console.print(f"reproduce: ember train --config {plan.dir / 'best.yaml'}")
    console.print(
        f"in {plan.dir}: leaderboard.csv, history.csv, study.json"
        + (", best.yaml" if best is not None else "")
        + ", trial-<n>/"
    )


def _cell(v, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}g}" if digits != 1 else f"{v:.1f}"
    return str(v)


def _duration(t: FrozenTrial) -> float | None:
    if t.datetime_start and t.datetime_complete:
        return round((t.datetime_complete - t.datetime_start).total_seconds(), 3)
    return None


def _write_csv(path: Path, rows: list[dict]) -> None:
    text = io.StringIO(newline="")
    if rows:
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_atomic(path, text.getvalue())


def _importances(study: optuna.Study) -> dict[str, float]:
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]
    if len(complete) < 3:
        return {}
    try:
        return {k: round(float(v), 4) for k, v in optuna.importance.get_param_importances(study).items()}
    except Exception:  # too few distinct values, or one parameter only
        return {}


def _write_best_yaml(plan, best: FrozenTrial) -> None:
    cfg = compose(plan.trial_overrides(best.params))
    from omegaconf import OmegaConf

    c = OmegaConf.to_container(cfg, resolve=True)
    for key in ("run", "tune", "resume"):
        c.pop(key, None)
    c["trainer"].pop("progress", None)
    header = (
        f"# best trial of study {plan.name}: trial {best.number}, {plan.metric} {_fmt(best.value)}\n"
        f"# {_params(best)}\n# reproduce: ember train --config {plan.dir / 'best.yaml'}\n"
    )
    path = plan.dir / "best.yaml"
    write_atomic(path, header + yaml.safe_dump(c, sort_keys=False))
