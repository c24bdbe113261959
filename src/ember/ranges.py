"""Valid values of config keys, written beside each key: `Annotated[float, POSITIVE]` for a
range, `Annotated[str, OneOf(LOSSES)]` for a fixed set of names.

The constraint lives in the key's type (a schema field or a builder's keyword argument), so a new
key carries it along and `check_fields` finds every one the same way: compose fails with a line
that names the key, the value and what is valid, before anything is created (torch would
otherwise find a negative learning rate or a dropout of 2 later, as a traceback).
"""

import dataclasses
import difflib
import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from ember.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """low <= value <= high (either bound may be None, or open: strict)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        # Infinite and NaN values are never in range: every ranged key is a finite setting.
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        low, high = (f"{b:g}" if isinstance(b, float) else str(b) for b in (self.low, self.high))
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {low}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {high}"
        return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


POSITIVE = Range(0, low_open=True)  # learning rates, eps, scales
NON_NEGATIVE = Range(0)  # weight decay, patience, counts that may be zero
AT_LEAST_1 = Range(1)  # sizes, depths, epochs, batch sizes
FRACTION = Range(0, 1, high_open=True)  # dropout, split fractions, betas: 1 would leave nothing
PROBABILITY = Range(0, 1)  # label smoothing, sparsity
OPEN_UNIT = Range(0, 1, low_open=True, high_open=True)  # onecycle's pct_start, plateau's factor
SEED = Range(0, 2**32 - 1)  # what numpy's seeding accepts


@dataclass(frozen=True)
class OneOf:
    """The value is one of `names`. A `Literal` in the annotation would say the same, but OmegaConf
    2.3 rejects Literal fields, so the set rides in `Annotated` like a Range. Pass the owner's own
    table (`OneOf(LOSSES)`), never a copy of it, so the names have one source."""

    names: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(self.names))  # a dict's keys or a list become a tuple


@dataclass(frozen=True)
class Ranged:
    """A command option's default with its valid range, e.g. {"atol": Ranged(1e-5, NON_NEGATIVE)}."""

    default: Any
    valid: Range


def range_of(annotation: Any) -> Range | None:
    """The Range in `Annotated[T, Range]` (also inside Optional[...]); None when there is none."""
    if typing.get_origin(annotation) is Annotated:
        return next((m for m in annotation.__metadata__ if isinstance(m, Range)), None)
    for arg in typing.get_args(annotation):  # Optional[Annotated[...]] and other unions
        found = range_of(arg)
        if found is not None:
            return found
    return None


def choices_of(annotation: Any) -> OneOf | None:
    """The OneOf in `Annotated[T, OneOf(...)]` (also inside Optional[...]); None when there is none."""
    if typing.get_origin(annotation) is Annotated:
        return next((m for m in annotation.__metadata__ if isinstance(m, OneOf)), None)
    return next((found for arg in typing.get_args(annotation) if (found := choices_of(arg)) is not None), None)


def check_choice(key: str, value: Any, choices: Sequence[str]) -> Any:
    """`value` itself, or a ConfigError naming the key, the nearest valid name and all of them."""
    if value not in choices:
        hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        raise ConfigError(
            f"{key}={value!r} is not a valid choice; {'did you mean ' + hint[0] + '? ' if hint else ''}choose one of: "
            f"{', '.join(choices)}"
        )
    return value


def check_value(key: str, value: Any, valid: Range | None) -> None:
    """Raise ConfigError when a number (or a number of a list) is outside `valid`."""
    if valid is None or value is None:
        return
    many = isinstance(value, (list, tuple))
    for item in value if many else [value]:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            continue  # a wrong type is the schema's own error
        if item not in valid:
            raise ConfigError(
                f"{key}={list(value) if many else value!r} is out of range: "
                f"{'each item ' if many else 'it '}must be {valid}"
            )


def check_annotated(key: str, value: Any, annotation: Any) -> None:
    """Check `value` (or each item of a list) against the Range or the OneOf in its annotation."""
    check_value(key, value, range_of(annotation))
    choices = choices_of(annotation)
    if choices is not None and value is not None:
        for item in value if isinstance(value, (list, tuple)) else [value]:
            check_choice(key, item, choices.names)


def check_fields(obj: Any, prefix: str) -> None:
    """Check every field of the dataclass instance `obj` that carries a Range or a OneOf."""
    for f in dataclasses.fields(obj):
        check_annotated(f"{prefix}.{f.name}" if prefix else f.name, getattr(obj, f.name), f.type)
