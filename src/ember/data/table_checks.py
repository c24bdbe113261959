"""A table's values checked before they become tensors: the rows holding a missing or infinite
value, numbers beyond float32, and text columns that one-hot encoding would silently get wrong
(numbers with a stray word, dates, ids). Each finding is a DataError naming the column and the
file row, so the user fixes the file rather than reading a NaN loss.
"""

import re
from pathlib import Path

import numpy as np

from ember.data.checks import plural
from ember.errors import DataError
from ember.ranges import check_choice


def missing_or_infinite_rows(part, order: np.ndarray, path: Path, nan: str) -> np.ndarray:
    """Rows holding a missing or infinite value (data.nan=drop), or a DataError naming the first one."""
    check_choice("data.nan", nan, ("error", "drop"))
    numeric = part.select_dtypes("number")
    bad = (
        part.isna().to_numpy() if len(numeric.columns) == 0 else part.isna().to_numpy() | _isinf(part, numeric.columns)
    )
    bad_rows = bad.any(axis=1)
    if not bad_rows.any() or nan == "drop":
        if bad_rows.all():
            raise DataError(f"every row of {path} holds a missing or infinite value; fix the file")
        return bad_rows
    row, col = np.argwhere(bad)[0]
    counts = bad.sum(axis=0)
    columns = list(part.columns)
    per_column = ", ".join(f"{c}: {n}" for c, n in zip(columns, counts) if n)
    raise DataError(
        f"{path} has {plural(int(bad.sum()), 'missing or infinite value')} ({per_column}); "
        f"the first is in column {columns[col]!r} "
        f"of {data_row(order[row])}; fix the file or set data.nan=drop to drop the "
        f"{plural(int(bad_rows.sum()), 'row')} holding them"
    )


FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_float32(part, bad: np.ndarray, order: np.ndarray, path: Path) -> None:
    """A DataError for a number beyond float32's range (about 3.4e38): finite in the file, it
    would be inf in the network's float32 and every loss after it NaN."""
    for c in part.columns:
        col = part[c]
        if is_text(col):
            continue
        values = col.to_numpy(dtype=np.float64)
        over = (np.abs(values) > FLOAT32_MAX) & ~bad
        if over.any():
            i = int(np.flatnonzero(over)[0])
            raise DataError(
                f"column {c!r} of {path} holds {values[i]:.6g} in {data_row(order[i])}, "
                "beyond the float32 range (±3.4e38) the network computes in; "
                "rescale the column (other units, or its logarithm) or fix the value"
            )


def _isinf(part, numeric_columns) -> np.ndarray:
    out = np.zeros(part.shape, dtype=bool)
    for j, c in enumerate(part.columns):
        if c in numeric_columns:
            out[:, j] = np.isinf(part[c].to_numpy(dtype=np.float64))
    return out


# Dates and times as text (2024-01-31, 2024-01-31T12:00:00Z, 31/01/2024, 1.31.24): not categories.
DATE = re.compile(
    r"^(\d{4}-\d{1,2}-\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?|\d{1,2}[/.]\d{1,2}[/.]\d{2,4})$"
)
MOSTLY = 0.8  # the share of values that makes a column "numbers with stray text" or "dates"
MANY_CATEGORIES = 20  # more distinct text values than this, and more than half the rows: not a category


def check_text_columns(frame, kept: np.ndarray, path: Path, categorical: list[str], only_stray: bool = False) -> None:
    """A DataError for a text column that one-hot encoding would silently get wrong: numbers with
    a few stray words, dates, or so many distinct values (ids, free text) that they are no
    category. `kept` maps the frame's rows to the file's; data.categorical names columns that are
    categories all the same."""
    import pandas as pd

    for c in frame.columns:
        col = frame[c]
        if c in categorical or not is_text(col) or pd.api.types.is_bool_dtype(col):
            continue
        text = col.astype(str).str.strip()
        where = f"column {c!r} of {path}"
        numeric = pd.to_numeric(text, errors="coerce").notna().to_numpy()
        if numeric.mean() >= MOSTLY:
            i = int(np.flatnonzero(~numeric)[0])
            raise DataError(
                f"{where} holds numbers but for {plural(int((~numeric).sum()), 'text value')}, "
                f"the first {text.iloc[i]!r} in {data_row(kept[i])}; "
                "as text the whole column would become one-hot categories: fix or empty the value(s) "
                "(data.nan=drop drops rows with empty ones)"
            )
        if only_stray:
            continue
        fix = (
            "leave it out by listing the other columns in data.features, "
            f"or set data.categorical=[{c}] if it is a category"
        )
        dates = text.str.match(DATE).to_numpy()
        if dates.mean() >= MOSTLY:
            raise DataError(
                f"{where} holds dates such as {text.iloc[0]!r} ({data_row(kept[0])}), "
                "which would become one category per date; "
                f"order the table in time by them (data.time_column={c}), "
                f"turn them into numbers (day of year, hour, a timestamp) in the file, or {fix}"
            )
        distinct = text.nunique()
        if distinct > MANY_CATEGORIES and distinct > len(text) / 2:
            raise DataError(
                f"{where} holds {distinct} distinct text values in {len(text)} rows (such as {text.iloc[0]!r} in "
                f"{data_row(kept[0])}), too many for one-hot categories; {fix}"
            )


def check_like_train(test, train, kept: np.ndarray, path: Path) -> None:
    """The test file's columns that are numbers in the train file must be numbers there too."""
    import pandas as pd

    for c in test.columns:
        if not is_text(train[c]) and is_text(test[c]):
            numeric = pd.to_numeric(test[c].astype(str).str.strip(), errors="coerce").notna().to_numpy()
            i = int(np.flatnonzero(~numeric)[0])
            raise DataError(
                f"column {c!r} of {path} holds the text {str(test[c].iloc[i])!r} in {data_row(kept[i])}, "
                "where the train file has numbers; fix or empty the value"
            )


def data_row(i) -> str:
    """Row `i` (0: the first after the header) as the user finds it in the file."""
    return f"data row {int(i) + 1} (line {int(i) + 2} of a CSV)"


def is_text(col) -> bool:
    """Text or boolean: a column one-hot encoded, not read as numbers."""
    import pandas as pd

    return not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)
