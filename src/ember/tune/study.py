"""`ember tune`: a study of trials over any config keys, on one machine or many.

    runs/<experiment>/tune-<time>/      (or run.dir=...)
      study.json      name, storage, metric, space, the command's overrides; results after each report
      config.yaml     the composed config the trials start from
      study.db        the Optuna study (SQLite), unless tune.storage names another
      trial-<n>/      a normal run directory per trial (summary.json says finished, pruned or failed)
      leaderboard.csv trials best first; history.csv trials in order with the best so far
      best.yaml       the best trial's config: `ember train --config best.yaml` reproduces it

The study's name is `tune.name`, or `<experiment>-<hash of the config>`: the same command finds the
same study (in the newest study directory of that name, or in the shared storage) and continues it,
so a rerun after Ctrl-C, a crash or on another node adds trials to it instead of starting over.
`tune.trials` is the study's total: trials lost with a killed worker and run again count once.
"""

import hashlib
import json
import multiprocessing
import os
import signal
import socket
import time
import zlib
from datetime import datetime
from pathlib import Path

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from ember.config import compose, typed
from ember.config.compose import file_overrides
from ember.errors import ConfigError, EmberError, Preempted
from ember.report.study import read_study
from ember.rundir.directory import default_run_name
from ember.scoring.metrics import is_higher_better
from ember.track import flatten
from ember.tune import report
from ember.tune.budget import counts, stored
from ember.tune.objective import Fatal, Objective, Plan
from ember.tune.samplers import make_pruner, make_sampler
from ember.tune.space import parse_space, validate
from ember.tune.storage import RetryLost, fail_stale_trials, make_storage, storage_url

# Optuna's own per-trial log lines are replaced by ember's (report.TrialLine).
optuna.logging.set_verbosity(optuna.logging.ERROR)

# Keys that do not change what a trial computes: changing them keeps the study.
NOT_IN_FINGERPRINT = {
    "tune": ("trials", "jobs", "timeout", "storage", "name", "heartbeat", "retries"),
    "trainer": ("progress",),
    "data": ("num_workers",),
}


def tune_command(overrides: list[str], config_file: str | None = None, status: bool = False) -> int:
    plan = make_plan(overrides, config_file, status)
    if status:
        study = load(plan)
        report.show(study, plan)
        return 0
    return run(plan)


def make_plan(overrides: list[str], config_file: str | None = None, status: bool = False) -> Plan:
    base = (file_overrides(config_file) if config_file else []) + list(overrides)
    cfg = compose(base)
    if (
        status
        and cfg.run.dir
        and (Path(cfg.run.dir) / "study.json").is_file()
        and all(o.startswith(("run.dir=", "tune.storage=")) for o in overrides)
        and not config_file
    ):
        # `ember tune --status run.dir=STUDY_DIR`: the study's own command.
        saved = read_study(Path(cfg.run.dir))
        base = saved["overrides"] + [f"run.dir={cfg.run.dir}"] + [o for o in overrides if o.startswith("tune.storage=")]
        cfg = compose(base)
    t = typed(cfg).tune  # the schema's TuneConfig: choices and ranges checked, plain values
    if cfg.resume:
        raise ConfigError(
            "resume= continues a training run; a study continues when you rerun the same ember tune command"
        )
    metric = t.metric if "/" in t.metric else f"val/{t.metric}"
    if not metric.startswith("val/"):
        raise ConfigError(
            f"tune.metric={t.metric!r} must be a validation metric (val/loss, val/accuracy, ...): "
            "trials are compared and pruned on the validation split"
        )
    direction = t.direction if t.direction != "auto" else ("maximize" if is_higher_better(metric) else "minimize")
    params = parse_space(t.space)
    fingerprint = _fingerprint(cfg)
    name = t.name or f"{default_run_name(cfg)}-{fingerprint[:8]}"
    study_dir = _study_dir(cfg, name, fingerprint, shared=bool(t.storage), must_exist=status and not t.storage)
    plan = Plan(
        name=name,
        dir=study_dir,
        storage=storage_url(t.storage, study_dir),
        base=[o for o in base if not o.startswith("run.dir=")],
        params=params,
        metric=metric,
        direction=direction,
        trials=t.trials,
        sampler=t.sampler,
        sampler_args=dict(t.sampler_args),
        pruner=t.pruner,
        pruner_args=dict(t.pruner_args),
        seed=t.seed,
        jobs=t.jobs,
        timeout=t.timeout,
        heartbeat=t.heartbeat,
        retries=t.retries,
        fingerprint=fingerprint,
        shared=bool(t.storage),
    )
    if not status:
        validate(params, plan.trial_base)
        make_sampler(plan.sampler, plan.sampler_args, plan.seed, params)  # bad arguments fail now
        make_pruner(plan.pruner, plan.pruner_args)
    plan.cfg = cfg
    return plan


def _fingerprint(cfg: DictConfig) -> str:
    c = OmegaConf.to_container(cfg, resolve=True)
    for key in ("run", "resume"):
        c.pop(key, None)
    for group, keys in NOT_IN_FINGERPRINT.items():
        for key in keys:
            c[group].pop(key, None)
    return hashlib.sha1(json.dumps(c, sort_keys=True, default=str).encode()).hexdigest()


def _study_dir(cfg: DictConfig, name: str, fingerprint: str, shared: bool, must_exist: bool) -> Path:
    """run.dir, else the newest study directory of this study's name, else a new one.

    With a shared storage the nodes cannot agree on a time, so the directory is named after the
    study: tune-<name>.
    """
    if cfg.run.dir:
        path = Path(cfg.run.dir)
        _check_same_study(path, fingerprint, cfg)
        return path
    experiment = Path(cfg.run.root) / default_run_name(cfg)
    if shared:
        return experiment / f"tune-{name}"
    for path in sorted(experiment.glob("tune-*/"), reverse=True):
        if (path / "study.json").is_file() and read_study(path).get("name") == name:
            _check_same_study(path, fingerprint, cfg)
            return path
    if must_exist:
        raise ConfigError(
            f"no study {name!r} under {str(experiment)!r}; start it with the same command without --status, "
            "or pass run.dir=STUDY_DIR"
        )
    base = experiment / f"tune-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    path, i = base, 1
    while path.exists():
        path, i = base.with_name(f"{base.name}-{i}"), i + 1
    return path


def _check_same_study(path: Path, fingerprint: str, cfg: DictConfig) -> None:
    info = path / "study.json"
    if not info.is_file():
        return
    saved = read_study(path)
    if saved.get("fingerprint") not in (None, fingerprint):
        raise ConfigError(
            f"study {saved.get('name')!r} in {str(path)!r} was started with another config "
            f"({_changed_keys(path / 'config.yaml', cfg)}); rerun with its settings, or start a new study (another "
            "run.dir or tune.name)"
        )


def _changed_keys(config_file: Path, cfg: DictConfig) -> str:
    try:
        old = flatten(OmegaConf.to_container(OmegaConf.load(config_file)))
    except Exception:
        return "its config.yaml is unreadable"
    new = flatten(OmegaConf.to_container(cfg, resolve=True))
    free = {f"{group}.{key}" for group, keys in NOT_IN_FINGERPRINT.items() for key in keys}
    keys = [
        k
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k) and k not in free and not k.startswith(("run.", "tune.space."))
    ]
    keys += (
        ["tune.space"]
        if any(old.get(k) != new.get(k) for k in set(old) | set(new) if k.startswith("tune.space."))
        else []
    )
    shown = [k if k == "tune.space" else f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:4]]
    return "changed: " + ", ".join(shown) if keys else "different keys"


# -- running ------------------------------------------------------------------------------------


def run(plan: Plan) -> int:
    study = _create(plan)
    report.print_header(study, plan)
    if plan.jobs == 1:
        code = _work(plan, 0)
    else:
        code = _spawn(plan)
    study = load(plan)
    report.show(study, plan)
    return code


def _create(plan: Plan) -> optuna.Study:
    plan.dir.mkdir(parents=True, exist_ok=True)
    storage = make_storage(plan.storage, plan.heartbeat, plan.retries)
    study = optuna.create_study(study_name=plan.name, storage=storage, direction=plan.direction, load_if_exists=True)
    if study.direction.name.lower() != plan.direction:
        raise ConfigError(
            f"study {plan.name!r} {study.direction.name.lower()}s its metric; "
            f"set tune.direction={study.direction.name.lower()} or name a new study with tune.name="
        )
    attrs = study.user_attrs
    if attrs.get("fingerprint", plan.fingerprint) != plan.fingerprint:
        raise ConfigError(
            f"study {plan.name!r} in tune.storage was started with another config; rerun with its settings, "
            "or name a new study with tune.name="
        )
    if "fingerprint" not in attrs:
        for key, value in (("fingerprint", plan.fingerprint), ("metric", plan.metric)):
            study.set_user_attr(key, value)
    if not (plan.dir / "study.json").is_file():
        OmegaConf.save(plan.cfg, plan.dir / "config.yaml", resolve=True)
        report.write_json(plan.dir / "study.json", report.describe(plan))
    return study


def load(plan: Plan) -> optuna.Study:
    storage = make_storage(plan.storage, plan.heartbeat, plan.retries)
    try:
        study = optuna.load_study(study_name=plan.name, storage=storage)
    except KeyError:
        raise ConfigError(
            f"no study {plan.name!r} in {plan.storage}; start it with the same command without --status"
        ) from None
    return study


class Interrupted(EmberError):
    """Ctrl-C: the running trials stopped and were queued again."""

    exit_code = 130
    label = "interrupted"


def _spawn(plan: Plan) -> int:
    """tune.jobs worker processes, each its own Python (spawned: no CUDA or thread state is copied)."""
    ctx = multiprocessing.get_context("spawn")
    cfg, plan.cfg = plan.cfg, None
    procs = [ctx.Process(target=_worker_main, args=(plan, i), name=f"ember-tune-{i}") for i in range(plan.jobs)]
    for p in procs:
        p.start()
    plan.cfg = cfg
    previous = signal.signal(signal.SIGTERM, lambda *_: [p.terminate() for p in procs if p.is_alive()])
    interrupted = False
    try:
        while any(p.is_alive() for p in procs):
            try:
                for p in procs:
                    p.join()
            except KeyboardInterrupt:  # the workers got it too; they finish their step and save
                interrupted = True
    finally:
        signal.signal(signal.SIGTERM, previous)
    codes = [p.exitcode for p in procs]
    if interrupted or any(c in (75, 130) for c in codes):
        error = Preempted if 75 in codes and not interrupted else Interrupted
        raise error(
            f"study {plan.name} stopped; its interrupted trials are queued again; continue with the same command"
        )
    for i, c in enumerate(codes):
        if c not in (0, 2):  # killed: its trial is failed by the heartbeat and run again by another
            print(f"note: worker {i} exited with {'signal ' + str(-c) if c < 0 else 'code ' + str(c)}", flush=True)
    return 2 if 2 in codes else 0


def _worker_main(plan: Plan, index: int) -> None:
    import sys

    # The workers share this machine's CPUs: each trial's thread budget is its share of them.
    os.environ["EMBER_CPU_SHARE"] = str(plan.jobs)

    try:
        code = _work(plan, index)
    except EmberError as e:
        print(f"{e.label}: {e}", file=sys.stderr, flush=True)
        code = e.exit_code
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


def _work(plan: Plan, index: int) -> int:
    """Run trials until the study has plan.trials of them (lost ones counted once), or time is up."""
    seed = plan.seed + index
    if plan.shared:  # several nodes run the same command: give each its own stream of draws
        seed += zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode()) % 1_000_000
    storage = make_storage(plan.storage, plan.heartbeat, plan.retries)
    study = optuna.load_study(study_name=plan.name, storage=storage, pruner=make_pruner(plan.pruner, plan.pruner_args))
    # A rerun (after a killed worker, Ctrl-C, a larger tune.trials) would replay the first run's
    # draws: its first new trial repeated trial 0's parameters. The trials already in the study
    # move the stream on; a fresh study keeps the seed's draws.
    seed = (seed + 1_000_003 * len(study.get_trials(deepcopy=False))) % 2**32  # numpy takes 32 bits
    sampler = study.sampler = make_sampler(plan.sampler, plan.sampler_args, seed, plan.params, storage)
    objective = Objective(plan)
    deadline = time.monotonic() + plan.timeout if plan.timeout > 0 else None
    poll = min(1.0, plan.heartbeat / 2)
    waiting_said = False
    grid = isinstance(sampler, optuna.samplers.GridSampler)
    while deadline is None or time.monotonic() < deadline:
        fail_stale_trials(study)
        done, running, waiting = counts(study)
        if done >= plan.trials or (grid and not waiting and sampler.is_exhausted(study)):
            break
        if not waiting and done + running >= plan.trials:
            if not isinstance(storage, optuna.storages.RDBStorage):
                break  # no heartbeat (journal file): a lost trial cannot be told from a slow one
            if not waiting_said and plan.jobs == 1:
                print(
                    f"waiting for {running} trial{'s' if running > 1 else ''} running elsewhere (rerun here if lost)",
                    flush=True,
                )
                waiting_said = True
            time.sleep(poll)  # the last trials run elsewhere; stay to rerun any whose worker dies
            continue
        objective.current = objective.interrupted = None
        try:
            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[report.TrialLine(plan)])
        except KeyboardInterrupt:
            trial = objective.current
            if trial is not None:
                frozen = stored(study, trial.number)  # Optuna has failed it; queue it again
                if frozen.state == TrialState.FAIL:
                    RetryLost(plan.retries)(study, frozen)
            what = objective.interrupted if objective.interrupted not in (None, "interrupted") else "interrupted"
            queued = f" and trial {trial.number} is queued again" if trial is not None else ""
            error = Preempted if what.startswith("preempted") else Interrupted
            raise error(f"{what}: study {plan.name} is consistent{queued}; continue with the same command") from None
        if getattr(sampler, "refused", None):  # a study storage holding a state that could run code
            raise sampler.refused
        fatal = objective.current and stored(study, objective.current.number).user_attrs.get("fatal")
        if fatal:
            raise Fatal(fatal)
    return 0
