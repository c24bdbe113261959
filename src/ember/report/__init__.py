"""`ember report RUN [RUN ...]`: one self-contained HTML page per run, per comparison, or per
`ember tune` study directory (optimization history, parameter importances, parallel coordinates).

One run: curves per split, learning rate, throughput and data wait; the best checkpoint on the
test split (confusion matrix and per-class precision/recall, or predicted vs. true and residuals);
the model, config, environment and timings. Several runs: overlaid curves, a table of final
metrics and the config keys that differ. `ember train` writes `report.html` into every run
directory when it ends (run.report=false skips it).
"""

import copy
import os
from pathlib import Path

from ember.config import EmberConfig, compose_typed
from ember.data import Splits, build_data
from ember.errors import ConfigError, describe
from ember.files import check_output, output_errors, write_atomic
from ember.inspection.model_summary import summarize
from ember.report import evaluate, page
from ember.report.collect import RunData, labels_for, read_run
from ember.report.study import is_study, study_page
from ember.rundir.loading import load_run
from ember.scoring import baselines
from ember.track.console import Console
from ember.train.build import build_evaluator_here
from ember.train.device import restored_torch_flags
from ember.train.evaluator import Evaluator


def model_summary(model, spec) -> dict | None:
    """ember.inspection.model_summary's table of a copy of the model (its forward pass must not touch the
    trained model's BatchNorm statistics)."""
    clone = copy.deepcopy(model).cpu()
    return summarize(clone, spec, depth=2, name=type(model).__name__).to_dict()


def summary_text(summary: dict) -> str:
    rows = [("layer", "type", "output", "params")]
    rows += [
        (
            "  " * r["depth"] + r["name"].rsplit(".", 1)[-1] if r["depth"] else r["name"],
            r["kind"],
            r["output_shape"],
            f"{r['params']:,}" if r["params"] else "",
        )
        for r in summary["layers"]
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
        for row in rows
    ]
    lines.append(f"parameters: {summary['total_params']:,} ({summary['trainable_params']:,} trainable)")
    lines.append(f"FLOPs per sample (forward): {summary['flops_per_sample']:,}")
    return "\n".join(lines) + "\n"


def evaluate_split(evaluator: Evaluator, splits, baseline: str | None = None) -> dict | None:
    """The evaluator's model on the test split (or val where there is none): the report's
    evaluation; its errors per grid point are mapped beside those of `baseline` (the run's best;
    all if None), which predicts from the evaluator's reference (the baselines fitted on train)."""
    if evaluator.own_loss:
        return None  # generative models (vae, diffusion): no predictions to compare
    split = "test" if splits.test is not None else "val" if splits.val is not None else None
    if split is None:
        return None
    data, spec = getattr(splits, split), evaluator.spec
    ev = evaluate.evaluate(
        evaluator.forward,
        data,
        spec,
        references=_baseline_predictors(splits, spec, baseline, evaluator.reference, split),
    )
    result = evaluate.classification(ev, spec, data) if spec.task == "classification" else evaluate.regression(ev, spec)
    return {**result, "split": split, "truncated": ev["truncated"]}


def _baseline_predictors(splits, spec, only: str | None = None, clim=None, split: str = "test") -> dict:
    """name -> predictions in physical units from a batch of inputs, for each regression baseline
    (or `only` that one): the report maps their errors beside the model's. `clim`: the trainer's
    fitted baselines (their predictions follow the split's times), or a climatology field."""
    if spec.task != "regression":
        return {}
    clim = clim if clim is not None else baselines.fit(splits)
    if isinstance(clim, baselines.Fitted):
        return baselines.predictors(clim, split, splits.get(split), only)
    if clim is None:
        return {}
    names = [n for n in baselines.names(spec) if only is None or n == only]
    return {name: (lambda x, name=name: baselines.predict(name, x, spec, clim.float(), len(x))) for name in names}


def _single(
    run: RunData, model=None, evaluator: Evaluator | None = None, splits=None, score: bool = True
) -> tuple[str, dict | None]:
    notes, ev, summary = [], None, None
    if model is None and score and run.status == "finished":
        try:
            model, evaluator, splits = _rebuilt(run.path, notes.append)
        except Exception as e:
            notes.append(f"the best checkpoint could not be evaluated ({describe(e)})")
            model = None
    if model is not None:
        try:
            ev = (
                evaluate_split(evaluator, splits, (run.summary.get("skill") or {}).get("best"))
                if score and evaluator
                else None
            )
        except Exception as e:
            notes.append(f"the best checkpoint could not be evaluated ({describe(e)})")
        try:
            summary = model_summary(model, splits.spec)
        except Exception as e:
            notes.append(f"no model summary ({describe(e)})")
    elif score and run.status != "finished":
        notes.append("the best checkpoint is evaluated once the run has finished")
    return page.single(run, ev, summary, notes), summary


def _rebuilt(path: Path, note) -> tuple:
    """A finished run's best model, an evaluator of it as the run's final test built one (its
    device, precision and fitted baselines) and its data, rebuilt from the run directory; `note`
    hears where the run's device is not on this machine."""
    model, saved, spec = load_run(path)
    _, conf = compose_typed(saved=saved)
    splits = build_data(conf.data, stats_from=spec)
    with restored_torch_flags():
        evaluator, _ = build_evaluator_here(conf, model, splits, note)
    return model, evaluator, splits


def write_html(path: Path, text: str) -> Path:
    with output_errors(path, "the report", "-o"):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)
    return path


def build_report(runs: list[str | Path], out: str | Path | None = None, evaluate: bool = True) -> Path:
    """Write the report of one run (default RUN/report.html) or the comparison of several
    (default ./report.html); returns its path."""
    studies = [p for p in runs if is_study(Path(p))]
    if studies:
        if len(runs) > 1:
            raise ConfigError(f"{studies[0]} is an ember tune study; report it on its own: ember report {studies[0]}")
        target = Path(out) if out else Path(studies[0]) / "report.html"
        return write_html(target, study_page(Path(studies[0]), target))
    data = [read_run(p) for p in runs]
    for run, label in zip(data, labels_for([r.path for r in data])):
        run.label = label
    if len(data) == 1:
        html, _ = _single(data[0], score=evaluate)
        return write_html(Path(out) if out else data[0].path / "report.html", html)
    target = Path(out) if out else Path("report.html")
    links = []
    for run in data:
        own = run.path / "report.html"
        links.append(os.path.relpath(own, target.resolve().parent) if own.exists() else None)
    return write_html(target, page.compare(data, links))


def after_training(
    conf: EmberConfig, run_path: Path, model, evaluator: Evaluator | None, splits: Splits, warn
) -> tuple[Path | None, dict]:
    """At the end of `ember train`: report.html from the model and data still in memory (unless
    the run's typed config `conf` says run.report=false), and the artifacts the trackers keep:
    config, spec, summary, report, model summary. `model`: the trained model and `evaluator` the
    trainer's, which scored its final test (None where the model cannot run in this process
    alone: the report rebuilds both from the run directory); `splits`: the data it trained and
    was tested on. Never raises: a failure is one warning line, and the run stays finished."""
    artifacts = {name: run_path / name for name in ("config.yaml", "spec.json", "summary.json")}
    path, summary = None, None
    try:
        if conf.run.report:
            html, summary = _single(read_run(run_path), model=model, evaluator=evaluator, splits=splits)
            path = write_html(run_path / "report.html", html)
            artifacts["report.html"] = path
        elif model is not None:
            summary = model_summary(model, splits.spec)
    except Exception as e:
        warn(f"warning: report.html not written ({describe(e)})")
    if summary:
        artifacts["model_summary.txt"] = summary_text(summary)
    return path, artifacts


def report_command(args) -> int:
    if args.out:  # before the runs are read and evaluated for it
        check_output(args.out, "the report", "-o")
    path = build_report(args.runs, args.out, evaluate=not args.no_eval)
    Console("lines").print(f"report: {path}")
    return 0


__all__ = ["RunData", "after_training", "build_report", "read_run", "report_command"]
