"""Splits in time: periods given as START:END dates, the samples they select, the gaps between
splits, and the line a run prints about them.

Dates are compared against the data's own time index (a pandas.DatetimeIndex, or an
xarray.CFTimeIndex for cftime calendars such as 360_day), by its partial-string slicing: `1990`
as an END means the end of 1990, `2000-02-30` is a date of the 360_day calendar.
"""

import re

import numpy as np

from ember.errors import ConfigError

SPLIT_BY = ("auto", "time", "random")
PERIOD_KEYS = {"train": "data.train_period", "val": "data.val_period", "test": "data.test_period"}
# A date as written in a period: a year, year-month, year-month-day, optionally a time of day.
DATE = re.compile(r"-?\d{1,4}(-\d{1,2}(-\d{1,2}([T ]\d{1,2}(:\d{2}(:\d{2}(\.\d+)?)?)?)?)?)?")


def parse_period(text: str, key: str) -> tuple[str | None, str | None]:
    """`START:END` as its two dates (either may be empty: open), or a one-line ConfigError.

    A time of day holds colons too, so the split is at the colon that leaves a date on each side."""
    text = str(text).strip()
    for i, c in enumerate(text):
        if c != ":":
            continue
        start, end = text[:i].strip(), text[i + 1 :].strip()
        if all(not part or DATE.fullmatch(part) for part in (start, end)) and (start or end):
            return start or None, end or None
    raise ConfigError(
        f"{key}={text!r} is not a period; write START:END dates, both ends included, for example {key}=1870-01:1990-12 "
        "(a year, year-month or year-month-day each)"
    )


def period_mask(times, text: str, key: str) -> np.ndarray:
    """Which samples of `times` lie in the period `text` (both ends included), or a one-line
    ConfigError for a date the calendar has not, a reversed period, or one outside the data."""
    start, end = parse_period(text, key)
    order = np.asarray(times.argsort(), dtype=np.int64)
    ordered = times[order]
    for date in (start, end):
        try:
            if date is not None:
                ordered.slice_indexer(date, date)
        except (ValueError, TypeError, KeyError):
            raise ConfigError(
                f"{key}={text!r}: {date!r} is not a date of this data's calendar "
                f"({calendar(times)}); write a date it has"
            ) from None
    # Reversed: fewer samples up to END than up to START (partial dates: `1990` ends with 1990).
    if (
        start is not None
        and end is not None
        and ordered.slice_indexer(None, end).stop < ordered.slice_indexer(None, start).stop
    ):
        raise ConfigError(f"{key}={text!r} ends before it starts; write START:END with START first")
    span = ordered.slice_indexer(start, end)
    mask = np.zeros(len(times), dtype=bool)
    mask[order[span]] = True
    if not mask.any():
        raise ConfigError(
            f"{key}={text!r} holds no sample: the data runs from {stamp(ordered[0])} to {stamp(ordered[-1])}; "
            "choose dates inside that"
        )
    return mask


def calendar(times) -> str:
    return getattr(times, "calendar", None) or "standard"


def near(rows: np.ndarray, mask: np.ndarray, gap: int) -> np.ndarray:
    """Samples not in `mask` whose source row lies within `gap` rows of a sample in it: what must
    be left out between two splits so that neither holds the other's inputs or targets."""
    out = np.zeros(len(rows), dtype=bool)
    if gap <= 0 or not mask.any():
        return out
    marked = np.sort(rows[mask])
    i = np.searchsorted(marked, rows)
    left = marked[np.clip(i - 1, 0, len(marked) - 1)]
    right = marked[np.clip(i, 0, len(marked) - 1)]
    distance = np.minimum(np.abs(rows - left), np.abs(right - rows))
    return (distance <= gap) & ~mask


def stamp(t) -> str:
    """A time as the user wrote it: the date, with the time of day only where it is not midnight."""
    text = t.isoformat() if hasattr(t, "isoformat") else str(t)
    return text[:10] if text[10:].strip("T:0. ") == "" else text.replace("T", " ")


def span(times) -> tuple[str, str]:
    """First and last time of a split."""
    return stamp(times.min()), stamp(times.max())


def describe(sizes: dict, times: dict | None, rows: dict, gap: int, given: set[str]) -> str:
    """The line a run prints about its splits in time (or in row order, where the data has no
    times): each split's first and last time and size, and the gap left out between them."""
    parts = []
    for name in ("train", "val", "test"):
        if name not in sizes:
            continue
        if times and name in times and len(times[name]):
            first, last = span(times[name])
            where = f" {first}..{last}"
        elif rows.get(name):
            where = f" rows {min(rows[name])}..{max(rows[name])}"
        else:
            where = ""
        origin = ", data.test_path" if name == "test" and name in given else ", the source's" if name in given else ""
        parts.append(f"{name}{where} ({sizes[name]}{origin})")
    how = "split in time" if times else "split in row order (the data has no times)"
    return (
        f"{how}: "
        + f", gap {gap}, ".join(parts)
        + (
            f"; {gap} sample(s) left out at each border so that no split holds another's inputs or targets"
            if gap
            else ""
        )
    )
