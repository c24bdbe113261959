"""Time series from a table: a time column parsed and put in order, and windows of past rows as
samples (`data.time_column`, `data.window`, `data.lead` of data=csv / data=parquet).

Sample i holds rows i .. i+window-1 of every input column (the target's own past among them) and
the target of row i+window-1+lead. Its number is its first row in time order, its time the
target's, and two samples share no row once `window + lead` rows lie between their numbers: the
gap `carve` leaves out between splits.
"""

import numpy as np

from ember.data.checks import plural
from ember.errors import ConfigError, DataError


def parse_times(col, where: str, row):
    """A column of dates (any format pandas reads) or of years (1870, or decimal 1870.5) as a
    pandas.DatetimeIndex, or a one-line DataError naming the first value that is no time."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        return _years(col.to_numpy(dtype=np.float64), where, row)
    if pd.api.types.is_datetime64_any_dtype(col):
        text, times = col.astype(str), col
    else:
        # Times with offsets (Z, +01:00) to UTC; times without one are read as UTC, unchanged.
        text = col.astype(str).str.strip()
        times = pd.to_datetime(text, errors="coerce", format="mixed", utc=True)
    if getattr(times.dt, "tz", None) is not None:
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    bad = times.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where} holds {plural(int(bad.sum()), 'value')} that is no date, the first {text.iloc[i]!r} in {row(i)}; "
            "write dates such as 1991-01-31, or years"
        )
    return pd.DatetimeIndex(times)


def _years(values: np.ndarray, where: str, row):
    """Years as numbers: 1870 is 1870-01-01, 1870.5 halfway through 1870."""
    import pandas as pd

    bad = ~np.isfinite(values) | (values < 1) | (values >= 10000)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where} holds {values[i]!r} in {row(i)}, which is no year; numeric times are years (1870, "
            "or 1870.5 for mid-year)"
        )
    whole = np.floor(values).astype(np.int64)
    start = pd.to_datetime(pd.Series(whole).map(lambda y: f"{y:04d}-01-01"))
    length = pd.to_datetime(pd.Series(whole + 1).map(lambda y: f"{y:04d}-01-01")) - start
    return pd.DatetimeIndex(start + length * (values - whole))


def in_order(times, where: str, row) -> np.ndarray:
    """The order that sorts the rows by time (stable), or a DataError for a time given twice:
    a series holds one row per time."""
    order = np.argsort(times.to_numpy(), kind="stable")
    ordered = times[order]
    twice = np.flatnonzero(ordered[1:] == ordered[:-1])
    if len(twice):
        i = order[twice[0] + 1]
        raise DataError(
            f"{where} holds the time {ordered[twice[0]]} twice (again in {row(i)}); a time series needs one row per "
            "time: aggregate or drop the repeats"
        )
    return order


def check_window(window: int, lead: int, rows: int, where: str) -> None:
    if window == 0 and lead == 0:
        return
    if lead == 0:
        raise ConfigError(
            f"data.window={window} with data.lead=0 would show the model the target's own value at the time it "
            "predicts; set data.lead=1 or more (steps after the window's last row)"
        )
    if rows < window + lead:
        raise DataError(
            f"{where} has {plural(rows, 'row')}, too few for one window of {window} plus a lead of {lead}; "
            "use a smaller data.window or data.lead"
        )


def windows(
    x: np.ndarray, y: np.ndarray, window: int, lead: int, bad: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Samples of `window` consecutive rows of `x` (rows, channels), flattened channel by channel
    (each channel's values from t-(window-1) to t-0), with the target `y` of row t+lead; windows
    touching a row in `bad` are left out. Returns inputs, targets and the first row of each."""
    n = len(x) - window - lead + 1
    inputs = window_inputs(x, window)[:n]
    starts = np.arange(n)
    last = starts + window - 1
    # A bad row among a window's rows or at its target: prefix sums count them in one pass.
    count = np.concatenate([[0], np.cumsum(bad)])
    keep = (count[last + 1] - count[starts] == 0) & ~bad[last + lead]
    return inputs[keep], y[last[keep] + lead], starts[keep]


def window_inputs(x: np.ndarray, window: int) -> np.ndarray:
    """Every window of `window` consecutive rows of `x` (rows, channels) as one flat input, laid
    out as training laid them (spec.input_names): what `ember predict` feeds a series model, whose
    forecast for window i is valid `lead` rows after row i+window-1."""
    view = np.lib.stride_tricks.sliding_window_view(x, window, axis=0)  # (rows-window+1, channels, window)
    return np.ascontiguousarray(view.reshape(len(view), -1))


def window_names(names: list[str], window: int) -> list[str]:
    """`column[t-k]` for every input channel of a window, in the order `windows` lays them out."""
    return [f"{name}[t-{window - 1 - j}]" for name in names for j in range(window)]
