"""Where a study lives, and what happens to the trials of a worker that died.

- default: `study.db`, SQLite in the study directory (safe for the processes of `tune.jobs`);
- `postgresql://user@host:port/db` (or mysql://, sqlite:///path): a database many nodes share;
- a path ending in `.journal` (or `journal:PATH`): Optuna's append-only journal file.

Database storages run Optuna's heartbeat: a running trial records a heartbeat every
`tune.heartbeat` seconds, and one silent for twice that (its worker was killed, its node lost) is
failed by whichever worker looks next and queued again with the same parameters, up to
`tune.retries` times. The lost trial's run directory says so.
"""

import contextlib
import warnings
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from ember.errors import ConfigError, EmberError
from ember.rundir.record import RunRecord

try:  # Optuna >= 4.9 renamed RetryFailedTrialCallback
    from optuna.storages import RetryHeartbeatStaleTrialCallback as _Retry
except ImportError:  # pragma: no cover - older Optuna
    from optuna.storages import RetryFailedTrialCallback as _Retry



@contextlib.contextmanager
def quiet():
    """The heartbeat and its retry callback are marked experimental; crash safety rests on them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def fail_stale_trials(study: optuna.Study) -> None:
    with quiet():
        optuna.storages.fail_stale_trials(study)


def storage_url(storage: str | None, study_dir: Path) -> str:
    return storage or f"sqlite:///{(study_dir / 'study.db').resolve()}"


class RetryLost:
    """Heartbeat-stale (or interrupted) trial -> failed, queued again, and its run directory told."""

    def __init__(self, max_retry: int):
        with quiet():
            self.retry = _Retry(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.retry(study, trial)
        run_dir = trial.user_attrs.get("run_dir")
        record = RunRecord(Path(run_dir)) if run_dir else None
        if record and record.status() in ("running", "failed", "interrupted", "preempted"):
            reason = trial.user_attrs.get("interrupted") or "its worker stopped sending heartbeats (killed or lost)"
            record.failed(f"trial {trial.number} lost: {reason}; queued again with the same parameters")


def make_storage(url: str, heartbeat: int, retries: int) -> optuna.storages.BaseStorage:
    if url.endswith(".journal") or url.startswith("journal:"):
        path = url.removeprefix("journal:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(path)
        return optuna.storages.JournalStorage(backend)
    if "://" not in url:
        raise ConfigError(
            f"tune.storage={url!r} is not a database URL or a .journal file; use e.g. postgresql://user@host:5432/db, "
            "sqlite:///study.db or study.journal"
        )
    url = with_driver(url)
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        with quiet():
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=kwargs,
                heartbeat_interval=heartbeat,
                grace_period=2 * heartbeat,
                **{_callback_arg(): RetryLost(retries)},
            )
    except ModuleNotFoundError as e:
        raise ConfigError(
            f"tune.storage={without_password(url)} needs the {e.name} package; pip install 'ember[tune]'"
        ) from None
    except ImportError as e:
        raise ConfigError(
            f"tune.storage={without_password(url)}: the database's Python driver is missing ({e}); "
            "pip install 'ember[tune]' for PostgreSQL"
        ) from None
    except Exception as e:  # sqlalchemy's URL and connection errors
        if type(e).__module__.startswith("sqlalchemy"):
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EmberError(f"cannot open tune.storage={without_password(url)}: {first}") from None
        raise


def with_driver(url: str) -> str:
    """postgresql:// through psycopg2 where it is the driver installed (SQLAlchemy 2.1 defaults to psycopg 3)."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def _callback_arg() -> str:
    import inspect

    params = inspect.signature(optuna.storages.RDBStorage).parameters
    return "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params else "failed_trial_callback"


def without_password(url: str) -> str:
    """The URL without its password, for messages."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}@{host}"
    return url
