"""The key=value options of the commands (`run=`, `format=`, `n=`, `depth=`): one parser for
all of them, typed after each option's default and checked against its range. Config overrides
are Hydra's (ember.config.compose); a command that takes both splits them here first.
"""

import difflib
from typing import Any

from ember.errors import ConfigError
from ember.ranges import Ranged, check_value


def parse_options(
    command: str, overrides: list[str], defaults: dict[str, Any], rest_ok: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """`key=value` options typed after their defaults; unknown keys are errors, or, with
    `rest_ok`, returned as the config overrides the command also takes.

    A default of None takes a string; a tuple default takes a comma-separated list (of ints
    when the default holds ints); a `Ranged(default, range)` is checked against its range.
    """
    valid = {k: d.valid for k, d in defaults.items() if isinstance(d, Ranged)}
    defaults = {k: d.default if isinstance(d, Ranged) else d for k, d in defaults.items()}
    options, rest = dict(defaults), []
    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq or key not in defaults:
            if rest_ok and eq:
                rest.append(item)
                continue
            hint = difflib.get_close_matches(key, list(defaults), n=1)
            did = f"did you mean {hint[0]}=? " if hint else ""
            also = " and config keys (key=value)" if rest_ok else ""
            raise ConfigError(
                f"ember {command} does not take {item!r}; {did}its options are: "
                f"{', '.join(f'{k}=' for k in defaults)}{also}"
            )
        options[key] = _typed(key, value, defaults[key])
        check_value(key, options[key], valid.get(key))
    return options, rest


def _typed(key: str, value: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, tuple):
            items = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
            return tuple(int(v) for v in items) if default and isinstance(default[0], int) else tuple(items)
    except ValueError:
        kind = {bool: "true or false", int: "a whole number", float: "a number", tuple: "a comma-separated list"}[
            type(default)
        ]
        raise ConfigError(f"{key}={value!r} must be {kind}") from None
    return value
