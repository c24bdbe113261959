"""Tables: CSV and Parquet files, one sample per row (pandas; `pip install 'ember[tabular]'`).

    ember train data=csv data.path=weather.csv data.target=rain model=mlp
    ember train data=parquet data.path=runs.parquet data.target=[energy,pressure] data.features=[a,b,c]

The target column decides the task unless `data.task` says it: integer, boolean or text labels
are classification (text labels become class ids in sorted order), floats are regression;
several target columns are a multi-output regression. Text feature columns are one-hot encoded; a text column that is no
category (numbers with a stray word, dates, ids) is an error that names it, unless data.categorical names it.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch

from ember.data import Splits, register_data
from ember.data.checks import check_labels, existing_path, one_class, require, required_key, unknown_name
from ember.data.loaders import TensorData
from ember.data.series import check_window, in_order, parse_times, window_names, windows
from ember.data.spec import DataSpec
from ember.data.table_checks import (
    check_float32,
    check_like_train,
    check_text_columns,
    data_row,
    is_text,
    missing_or_infinite_rows,
)
from ember.errors import DataError
from ember.ranges import NON_NEGATIVE, check_choice


@register_data("csv")
def csv(
    cfg,
    *,
    features: tuple[str, ...] = (),
    task: str = "auto",
    num_classes: Annotated[int, NON_NEGATIVE] = 0,
    sep: str = ",",
    test_path: str | None = None,
    categorical: tuple[str, ...] = (),
    time_column: str | None = None,
    window: Annotated[int, NON_NEGATIVE] = 0,
    lead: Annotated[int, NON_NEGATIVE] = 0,
) -> Splits:
    """A CSV file with a header row: data.target column(s) from the others (or data.features)."""

    def read(pd, path):
        return pd.read_csv(path, sep=sep)

    return _table(
        cfg,
        "csv",
        "a CSV file with a header row",
        read,
        _Columns(features, task, num_classes, test_path, categorical, time_column, window, lead),
    )


@register_data("parquet")
def parquet(
    cfg,
    *,
    features: tuple[str, ...] = (),
    task: str = "auto",
    num_classes: Annotated[int, NON_NEGATIVE] = 0,
    test_path: str | None = None,
    categorical: tuple[str, ...] = (),
    time_column: str | None = None,
    window: Annotated[int, NON_NEGATIVE] = 0,
    lead: Annotated[int, NON_NEGATIVE] = 0,
) -> Splits:
    """A Parquet file: data.target column(s) from the others (or data.features)."""

    def read(pd, path):
        require("pyarrow", "tabular", "parquet")
        return pd.read_parquet(path)

    return _table(
        cfg,
        "parquet",
        "a Parquet file",
        read,
        _Columns(features, task, num_classes, test_path, categorical, time_column, window, lead),
    )


@dataclass
class _Columns:
    """The table builders' own keys."""

    features: tuple
    task: str
    num_classes: int
    test_path: str | None
    categorical: tuple
    time_column: str | None
    window: int
    lead: int

    @property
    def series(self) -> bool:
        """Samples are windows of past rows (data.window or data.lead), not single rows."""
        return bool(self.window or self.lead)


def _table(cfg, source: str, what: str, read, opt: _Columns) -> Splits:
    pd = require("pandas", "tabular", source)
    check_choice("data.task", opt.task, ("auto", "classification", "regression"))
    path = existing_path(cfg.path, "data.path", source, what)
    df = _read(pd, read, path, source)
    targets, features, categorical = _columns(df, cfg.target, opt, path, source)
    window = max(opt.window, 1)
    if opt.series:
        check_window(opt.window, opt.lead, len(df), str(path))
    columns = features + [t for t in targets if t not in features]  # a series' target is a feature too
    train = _Rows.of(df, columns, path, cfg.nan, opt)
    # Text where numbers were meant would be one-hot encoded without a word: say so instead.
    check_text_columns(train.good[features], train.good_rows, path, categorical)
    if opt.task != "classification":
        check_text_columns(train.good[targets], train.good_rows, path, categorical, only_stray=True)
    test = _test_rows(pd, read, opt, columns, train, source, what, cfg.nan)
    encode = _FeatureEncoder.fit(pd, train.good[features])
    task = _task(train.good[targets], opt.task, targets)
    target_of, spec_extra = _targets(train, targets, task, opt.num_classes)
    names = encode.names(features)
    # What predicting needs, kept in the run: the feature columns and their one-hot categories.
    spec_extra |= {"input_names": names, "encoding": {"columns": features, "categories": encode.categories}}
    x, y, rows, times = train.samples(encode, features, target_of, window, opt)
    if opt.series:
        spec_extra |= _series_spec(names, features, targets, encode, window, opt, task)
    splits = Splits(train=TensorData(x, y), spec=DataSpec(input_shape=(x.shape[1],), task=task, **spec_extra))
    if opt.time_column or opt.series:
        splits.gap = window + opt.lead
    if times is not None:
        splits.times = {"train": times}
    if test is not None:
        xt, yt, _, test_times = test.samples(encode, features, target_of, window, opt)
        splits.test = TensorData(xt, yt)
        if test_times is not None:
            splits.times["test"] = test_times
    if len(rows) != len(df) or not np.array_equal(rows, np.arange(len(df))):
        splits.indices = {"train": rows.tolist()}  # rows (in time order, with a time column) left after dropping
    return splits


def _targets(train: "_Rows", targets: list[str], task: str, num_classes: int):
    """How a table's rows become targets (class ids, or the target columns as floats), fitted on
    the train rows so that a test file is labelled alike; and what the spec says of them."""
    if task == "classification":
        column = targets[0]
        labels = _LabelEncoder(train.good[column], f"column {column!r} of {train.path}", num_classes)

        def class_ids(rows: _Rows) -> torch.Tensor:
            return rows.labels(labels, column)

        return class_ids, {"num_classes": labels.num_classes, "class_names": labels.names}

    def target_values(rows: _Rows) -> torch.Tensor:
        return rows.values(_regression_targets, targets)

    return target_values, {"target_shape": (len(targets),), "target_names": [str(t) for t in targets]}


def _columns(df, target, opt: _Columns, path: Path, source: str) -> tuple[list[str], list[str], list[str]]:
    """The target, feature and categorical columns, checked against the file's."""
    targets = _names(target)
    required_key(
        targets,
        "data.target",
        source,
        f"the column(s) to predict; columns of {path}: {', '.join(map(str, df.columns))}",
    )
    time = [opt.time_column] if opt.time_column else []
    features = _names(opt.features) or [c for c in df.columns if c not in targets + time]
    if opt.series:  # the target's own past is an input
        features += [t for t in targets if t not in features]
    categorical = _names(opt.categorical)
    for name, kind, key in (
        [(n, "target", "target") for n in targets]
        + [(n, "feature", "features") for n in features]
        + [(n, "categorical", "categorical") for n in categorical]
        + [(n, "time", "time_column") for n in time]
    ):
        if name not in df.columns:
            raise unknown_name(
                name,
                [str(c) for c in df.columns],
                f"{kind} column",
                str(path),
                f"set data.{key} to columns of the file",
            )
    both = [c for c in targets if c in features and not opt.series]
    if both:
        raise DataError(
            f"column {both[0]!r} of {path} is both the target and a feature, so the model would be shown the answer; "
            "remove it from data.features"
        )
    if time and time[0] in features + targets:
        raise DataError(
            f"column {time[0]!r} of {path} is the time column (data.time_column) "
            f"and a {'target' if time[0] in targets else 'feature'}; leave it out of data.features and data.target"
        )
    if not features:
        raise DataError(f"{path} has no feature column besides the target {targets}; add columns or set data.features")
    return targets, features, categorical


def _series_spec(names, features, targets, encode, window: int, opt: _Columns, task: str) -> dict:
    """A window's input names (`nino34[t-11]` .. `nino34[t-0]`), the lead, and, for regression,
    the input channel holding each target's last observed value: the persistence baseline and
    residual learning read it (spec.identity_channels with spec.lead)."""
    out = {"input_names": window_names(names, window), "lead": opt.lead}
    out["encoding"] = {
        "columns": features,
        "categories": encode.categories,
        "window": window,
        "lead": opt.lead,
        "time_column": opt.time_column,
    }
    if task == "regression" and not any(t in encode.categories for t in targets):
        out["identity_channels"] = [names.index(t) * window + window - 1 for t in targets]
    return out


def _test_rows(
    pd, read, opt: _Columns, columns: list[str], train: "_Rows", source: str, what: str, nan: str
) -> "_Rows | None":
    if not opt.test_path:
        return None
    tpath = existing_path(opt.test_path, "data.test_path", source, what)
    test_df = _read(pd, read, tpath, source)
    missing = [c for c in columns + ([opt.time_column] if opt.time_column else []) if c not in test_df.columns]
    if missing:
        raise unknown_name(
            missing[0],
            [str(c) for c in test_df.columns],
            "column",
            str(tpath),
            "data.test_path must have the train file's columns; its columns are",
        )
    if opt.series:
        check_window(opt.window, opt.lead, len(test_df), str(tpath))
    test = _Rows.of(test_df, columns, tpath, nan, opt)
    check_like_train(test.good, train.good, test.good_rows, tpath)
    return test


def _names(value) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, (str, int, float)):  # a numeric column name such as data.target=3
        return [str(value)]
    return [str(v) for v in value]


def _read(pd, read, path: Path, source: str):
    try:
        df = read(pd, path)
    except Exception as e:  # noqa: BLE001 - parser errors, bad encodings, truncated or non-table files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(
            f"cannot read {path} as {source}: {first}; check that the file is a complete {source} file"
        ) from None
    if len(df) == 0:
        raise DataError(f"{path} holds no data rows; check the file")
    df.columns = [str(c) for c in df.columns]
    return df


class _Rows:
    """A table's columns in sample order (time order with data.time_column, else the file's),
    which rows hold a missing or infinite value, and the file row and time of each."""

    def __init__(self, frame, order: np.ndarray, bad: np.ndarray, times, path: Path):
        self.frame, self.order, self.bad, self.times, self.path = frame, order, bad, times, path
        self.good = frame.iloc[np.flatnonzero(~bad)].reset_index(drop=True)
        self.good_rows = order[~bad]  # file rows of the good ones, for messages

    @classmethod
    def of(cls, df, columns: list[str], path: Path, nan: str, opt) -> "_Rows":
        times, order = None, np.arange(len(df))
        if opt.time_column:
            where = f"column {opt.time_column!r} of {path}"
            times = parse_times(df[opt.time_column], where, data_row)
            order = in_order(times, where, data_row)
            times, df = times[order], df.iloc[order].reset_index(drop=True)
        part = df[columns]
        bad = missing_or_infinite_rows(part, order, path, nan)
        check_float32(part, bad, order, path)
        return cls(part, order, bad, times, path)

    def labels(self, encoder: "_LabelEncoder", column: str) -> torch.Tensor:
        """Class ids of every row; -1 where the row is bad (no sample keeps it)."""
        out = torch.full((len(self.frame),), -1, dtype=torch.long)
        out[torch.from_numpy(~self.bad)] = encoder(self.good[column], self.path)
        return out

    def values(self, convert, targets: list[str]) -> torch.Tensor:
        return convert(self.frame[targets], self.path)

    def samples(self, encode, features: list[str], target_of, window: int, opt):
        """Inputs, targets, the number (row in sample order) and target time of each sample:
        one per good row, or one per window of rows touching no bad one (data.window/lead)."""
        x, y = encode(self.frame[features]), target_of(self)
        if not opt.series:
            keep = np.flatnonzero(~self.bad)
            return x[keep], y[keep], keep, None if self.times is None else self.times[keep]
        xs, ys, starts = windows(x.numpy(), y.numpy(), window, opt.lead, self.bad)
        if len(starts) == 0:
            raise DataError(
                f"every window of {window} row(s) and its target {opt.lead} row(s) later in {self.path} touches a row "
                "with a missing or infinite value; fix the file, or use a smaller data.window"
            )
        times = None if self.times is None else self.times[starts + window - 1 + opt.lead]
        return torch.from_numpy(xs), torch.from_numpy(ys), starts, times


def _task(targets, task: str, names: list[str]) -> str:
    import pandas as pd

    if task != "auto":
        if task == "classification" and len(names) > 1:
            raise DataError(
                f"data.task=classification takes one target column, got {names}; pick one, or data.task=regression"
            )
        return task
    if len(names) > 1:
        return "regression"
    col = targets[names[0]]
    return "classification" if is_text(col) or pd.api.types.is_integer_dtype(col) else "regression"


class _FeatureEncoder:
    """Numeric columns as they are; text/boolean columns one-hot over the train file's values.

    `categories` (column -> its values, in one-hot order) is all it holds: the run keeps it in
    spec.json (`encoding`), so predicting never needs the training file again."""

    def __init__(self, pd, categories: dict[str, list[str]]):
        self.pd, self.categories = pd, categories

    @classmethod
    def fit(cls, pd, frame) -> "_FeatureEncoder":
        return cls(pd, {c: sorted(frame[c].astype(str).unique()) for c in frame.columns if is_text(frame[c])})

    def names(self, columns: list[str]) -> list[str]:
        """A name per input channel: the column, or `column=value` for a one-hot one."""
        return [n for c in columns for n in ([f"{c}={v}" for v in self.categories[c]] if c in self.categories else [c])]

    def __call__(self, frame) -> torch.Tensor:
        parts = []
        for c in frame.columns:
            if c in self.categories:
                codes = self.pd.Categorical(frame[c].astype(str), categories=self.categories[c]).codes
                # A value absent from the train file gets all zeros rather than an error.
                parts.append(np.eye(len(self.categories[c]), dtype=np.float32)[codes] * (codes >= 0)[:, None])
            else:
                parts.append(frame[c].to_numpy(dtype=np.float32)[:, None])
        return torch.from_numpy(np.concatenate(parts, axis=1))


class _LabelEncoder:
    """Class ids: integer labels kept (and checked 0..K-1), text labels numbered in sorted order."""

    def __init__(self, col, where: str, num_classes: int):
        import pandas as pd

        self.text = is_text(col)
        if self.text:
            self.names = sorted(col.astype(str).unique())
            self.num_classes = len(self.names)
            if self.num_classes == 1 and not num_classes:
                raise one_class(where, self.names[0])
        else:
            values = col.to_numpy()
            if not pd.api.types.is_integer_dtype(col) and not np.all(np.mod(values, 1) == 0):
                raise DataError(
                    f"{where} holds non-integer values such as {values[np.mod(values, 1) != 0][0]}; "
                    "data.task=classification needs class labels, or use data.task=regression"
                )
            self.num_classes = check_labels(values.astype(np.int64), where, num_classes)
            self.names = [str(i) for i in range(self.num_classes)]

    def __call__(self, col, path: Path) -> torch.Tensor:
        if self.text:
            values = col.astype(str)
            unknown = sorted(set(values) - set(self.names))
            if unknown:
                raise DataError(
                    f"{path} has label {unknown[0]!r}, which the train file does not have; "
                    f"the labels are {', '.join(self.names)}"
                )
            return torch.as_tensor(np.searchsorted(self.names, values.to_numpy()), dtype=torch.long)
        y = col.to_numpy().astype(np.int64)
        check_labels(y, f"labels in {path}", self.num_classes)
        return torch.as_tensor(y, dtype=torch.long)


def _regression_targets(frame, path: Path) -> torch.Tensor:
    for c in frame.columns:
        if is_text(frame[c]):
            raise DataError(
                f"target column {c!r} of {path} holds text; regression needs numbers (one text target column is "
                "classification: data.task=classification)"
            )
    return torch.from_numpy(np.array(frame.to_numpy(dtype=np.float32)))

