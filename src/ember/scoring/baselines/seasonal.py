"""The seasonal cycle of a time-indexed split: which calendar slot each sample's valid time falls
in, and the train split's mean per slot, smoothed.

The slot follows the data's time step, read from the train split's times:
- one sample a year or less often: no season (the all-time mean);
- monthly: the calendar month (12 slots);
- daily: the day of the year in the file's calendar (360 in a 360_day calendar, 365 in noleap,
  366 otherwise), smoothed with a centred 31-day running window that wraps around the year, so
  that a day's climatology draws on about 31 x years samples, not `years`; WeatherBench 2 uses a
  61-day window on 1990-2019 ERA5, its shorter records are why ember uses 31;
- sub-daily: the day of the year (smoothed as above) and the hour of the day.
Times are a pandas.DatetimeIndex or an xarray.CFTimeIndex (contract C2); both give `.month`,
`.hour` and the day of the year.
"""

import numpy as np

WINDOW = 31  # days of the running mean over the day of the year
YEAR_DAYS = {"360_day": 360, "noleap": 365, "365_day": 365, "all_leap": 366, "366_day": 366}


def _day_of_year(times) -> np.ndarray:
    # pandas deprecates `dayofyear` for `day_of_year`; cftime indexes have only the former.
    return np.asarray(
        getattr(times, "day_of_year", None) if hasattr(times, "day_of_year") else times.dayofyear, dtype=np.int64
    )


def resolution(times) -> str:
    """'none', 'month', 'day' or 'hour': the finest calendar slot the train times resolve."""
    if times is None or len(times) < 2:
        return "none"
    year, month = np.asarray(times.year), np.asarray(times.month)
    day, hour = _day_of_year(times), np.asarray(times.hour)
    if len(np.unique(np.stack([year, day]), axis=1)[0]) < len(times) and len(np.unique(hour)) > 1:
        return "hour"
    if len(np.unique(np.stack([year, month]), axis=1)[0]) < len(times):
        return "day"
    if len(np.unique(year)) < len(times):
        return "month"
    return "none"


class Calendar:
    """Maps valid times to slot numbers (-1: a slot the train split never saw, e.g. an hour of
    the day missing from it)."""

    def __init__(self, kind: str, train_times, calendar: str | None = None):
        self.kind = kind
        cal = calendar or getattr(train_times, "calendar", None) or "standard"
        self.days = YEAR_DAYS.get(str(cal), 366)
        self.hours = np.unique(np.asarray(train_times.hour)) if kind == "hour" else np.zeros(1, dtype=np.int64)

    @property
    def slots(self) -> int:
        return {"none": 1, "month": 12}.get(self.kind, self.days * len(self.hours))

    def describe(self) -> str:
        if self.kind == "none":
            return "the all-time mean of the train split"
        if self.kind == "month":
            return "the train split's mean per calendar month"
        hours = f" and hour of the day ({len(self.hours)} hours)" if self.kind == "hour" else ""
        return f"the train split's mean per day of the year{hours}, smoothed over a {WINDOW}-day window"

    def keys(self, times) -> np.ndarray:
        """Slot of each time in `times`, as int64."""
        n = len(times)
        if self.kind == "none":
            return np.zeros(n, dtype=np.int64)
        if self.kind == "month":
            return np.asarray(times.month, dtype=np.int64) - 1
        day = np.minimum(_day_of_year(times), self.days) - 1
        if self.kind == "day":
            return day
        hour = np.asarray(times.hour)
        slot = np.searchsorted(self.hours, hour)
        known = (slot < len(self.hours)) & (self.hours[np.minimum(slot, len(self.hours) - 1)] == hour)
        return np.where(known, day * len(self.hours) + slot, -1)

    def smooth(self, table: np.ndarray) -> np.ndarray:
        """Sums (or counts) per slot summed over the running window of days (a no-op for months)."""
        if self.kind in ("none", "month"):
            return table
        h, half = len(self.hours), WINDOW // 2
        by_day = table.reshape(self.days, h, -1)
        wrapped = np.concatenate([by_day[-half:], by_day, by_day[:half]])
        c = np.concatenate([np.zeros_like(by_day[:1]), np.cumsum(wrapped, axis=0)])
        return (c[WINDOW:] - c[:-WINDOW]).reshape(table.shape)


def month_keys(times, n: int) -> np.ndarray:
    """Calendar month (0-11) of each time; all 0 where there are no times (one all-time slot)."""
    return np.zeros(n, dtype=np.int64) if times is None else np.asarray(times.month, dtype=np.int64) - 1
