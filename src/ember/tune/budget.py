"""The study's budget of trials, read from the shared storage by every worker: which trials count
(a lost trial queued again counts once, a surplus one not at all), how many are done, and whether
a new trial came after the budget was taken. The workers (study), each trial (objective) and the
report all ask the same questions here.
"""

import optuna
from optuna.trial import FrozenTrial, TrialState


def retried(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of the lost trials that were queued again (their reruns name them)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def counted(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials of the study's budget: not a lost trial that was queued again (its rerun counts
    instead), not a surplus one (started by a worker that raced another for the last place)."""
    again = retried(trials)
    return [t for t in trials if t.number not in again and not t.user_attrs.get("surplus")]


def counts(study: optuna.Study) -> tuple[int, int, int]:
    """(finished, running, waiting) trials of the budget."""
    trials = counted(study.get_trials(deepcopy=False))
    done = sum(1 for t in trials if t.state.is_finished())
    running = sum(1 for t in trials if t.state == TrialState.RUNNING)
    waiting = sum(1 for t in trials if t.state == TrialState.WAITING)
    return done, running, waiting


def is_surplus(study: optuna.Study, trial: FrozenTrial, budget: int) -> bool:
    """Whether a new trial came after the budget was taken: trial numbers order the workers' claims."""
    if "failed_trial" in trial.system_attrs:  # a rerun replaces a lost trial: never surplus
        return False
    before = [t for t in counted(study.get_trials(deepcopy=False)) if t.number < trial.number]
    return len(before) >= budget


def stored(study: optuna.Study, number: int) -> FrozenTrial:
    """Trial `number` as the storage holds it now (a running Trial shows no system attributes or state)."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)
