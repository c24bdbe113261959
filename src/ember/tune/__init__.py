"""Hyperparameter search over any config key, on Optuna: `ember tune`.

Needs the `tune` extra: pip install 'ember[tune]'.
"""

from ember.errors import ConfigError


def tune_command(overrides: list[str], config_file: str | None = None, status: bool = False) -> int:
    """`ember tune [--config FILE] [overrides] [--status]`: run (or continue) the study, or report on it."""
    try:
        import optuna  # noqa: F401
    except ModuleNotFoundError:
        raise ConfigError("ember tune needs Optuna; pip install 'ember[tune]'") from None
    from ember.tune.study import tune_command as run

    return run(overrides, config_file, status)


__all__ = ["tune_command"]
