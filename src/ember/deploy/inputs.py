"""What `ember predict` reads: new samples in the units of the training files, as the run took them.

A CSV or Parquet table (one sample per row; for a time-series run, one per window of rows in time
order), an .npy/.npz array, an HDF5 dataset, an image or a folder of images. Each goes through
the run's own preprocessing (a table source's columns and one-hot encoding, decoding and resizing of
images) into raw inputs of shape (N, *spec.input_shape); the per-channel standardization is
left to the model, which carries it (behind the run's normalization, or folded into an export).
"""

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ember.data.spec import DataSpec
from ember.errors import DataError, first_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet")
ARRAY_SUFFIXES = (".npy", ".npz", ".h5", ".hdf5", ".he5")


def read_inputs(input: str | Path, spec: DataSpec, data: dict) -> tuple[np.ndarray, list[str]]:
    """Raw inputs of shape (N, *spec.input_shape) from a file or folder, and an id per sample."""
    path = Path(str(input)).expanduser()
    if not path.exists():
        raise DataError(
            f"input={str(input)!r} does not exist; pass a CSV/Parquet table, an .npy/.npz/.h5 array, "
            "an image or a folder of images"
        )
    suffix = path.suffix.lower()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise DataError(
                f"input folder {path} holds no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...); "
                "pass an image folder or a data file"
            )
        return _images(files, spec, data), [str(f.relative_to(path)) for f in files]
    if suffix in IMAGE_SUFFIXES:
        return _images([path], spec, data), [path.name]
    ids = None
    if suffix in TABLE_SUFFIXES:
        x, ids = _table(path, spec, data)
    elif suffix in ARRAY_SUFFIXES:
        x = _fit_shape(_array(path, data), spec, str(path))
    else:
        raise DataError(
            f"input={path.name}: cannot read {suffix or 'files without a suffix'}; pass a .csv, .parquet, .npy, .npz, "
            ".h5 file, an image or a folder of images"
        )
    if len(x) == 0:
        raise DataError(f"{path} holds no samples (array shape {tuple(x.shape)}); pass at least one")
    _check_finite(x, path, spec, data)
    return x, ids or [str(i) for i in range(len(x))]


def _check_finite(x: np.ndarray, path: Path, spec: DataSpec, data: dict) -> None:
    """Infinite values are an error; NaN too, except in a gridded or masked run, whose model takes
    NaN (a masked point) as the run's fill value or the channel mean, as in training."""
    masked = spec.input_mask is not None or spec.mask is not None or data.get("name") == "gridded"
    ok = ~np.isinf(x) if masked else np.isfinite(x)
    bad = ~ok.reshape(len(x), -1).all(axis=1)
    if bad.any():
        raise DataError(
            f"{path} has missing or infinite values in {int(bad.sum())} sample(s), "
            f"the first is sample {int(np.flatnonzero(bad)[0])}; fix or drop them"
        )


def _fit_shape(arr: np.ndarray, spec: DataSpec, where: str) -> np.ndarray:
    """(N, *input_shape) from the array's shape: as is, one sample, or flattened rows."""
    shape = tuple(spec.input_shape)
    arr = np.asarray(arr)
    if arr.dtype.kind not in "fiub":
        raise DataError(f"{where} holds {arr.dtype} values; the model takes numbers")
    if arr.shape[1:] == shape:
        return arr.astype(np.float32, copy=False)
    if arr.shape == shape:
        return arr[None].astype(np.float32)  # one sample
    if shape == (1,) and arr.ndim == 1:
        return arr[:, None].astype(np.float32)  # a column of scalars
    if arr.ndim == 2 and arr.shape[1] == math.prod(shape):
        return arr.reshape(len(arr), *shape).astype(np.float32)  # flattened samples, one per row
    got = tuple(arr.shape[1:]) if arr.ndim > 1 else ()
    dims = ", ".join(map(str, shape))
    raise DataError(
        f"{where} holds samples of shape {got} ({arr.shape[0]} of them, array shape {tuple(arr.shape)}) "
        f"but the model takes samples of shape {shape}; pass an array of shape (N, {dims}) or (N, {math.prod(shape)})"
    )


def _array(path: Path, data: dict) -> np.ndarray:
    suffix = path.suffix.lower()
    wanted = [n for n in (data.get("inputs"), "x", "inputs", "X") if n]
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - truncated or not an .npy file
            raise DataError(
                f"cannot read {path} as a NumPy .npy file ({first_line(e)}); save it with numpy.save"
            ) from None
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                return _pick(npz.files, wanted, path, "array", lambda k: npz[k])
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001
            raise DataError(
                f"cannot read {path} as a NumPy .npz file ({first_line(e)}); save it with numpy.savez"
            ) from None
    try:
        import h5py
    except ImportError:
        raise DataError(f"reading {path.name} needs h5py: pip install 'ember[hdf5]'") from None
    try:
        with h5py.File(path, "r") as f:
            names = [k for k in f if isinstance(f[k], h5py.Dataset)]
            return _pick(names, wanted, path, "dataset", lambda k: f[k][()])
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read {path} as HDF5 ({first_line(e)}); check the file") from None


def _pick(names: list[str], wanted: list[str], path: Path, what: str, get: Callable[[str], np.ndarray]) -> np.ndarray:
    for n in wanted:
        if n in names:
            return np.asarray(get(n))
    if len(names) == 1:
        return np.asarray(get(names[0]))
    raise DataError(
        f"{path} holds {what}s {', '.join(names) or '(none)'}; name the inputs {wanted[0]!r} (the run's data.inputs) "
        f"or keep one {what} in the file"
    )


def _images(files: list[Path], spec: DataSpec, data: dict) -> np.ndarray:
    """Decoded as the imagefolder source does: grayscale or RGB, resized, scaled to [0, 1]."""
    shape = tuple(spec.input_shape)
    if len(shape) != 3 or shape[0] not in (1, 3) or shape[1] != shape[2]:
        raise DataError(
            f"the model takes samples of shape {shape}, not square images of 1 or 3 channels; "
            "pass an array or table file instead of images"
        )
    try:
        from ember.data.images import _decode
    except ImportError:  # pragma: no cover - the images module is part of ember
        raise DataError("reading images needs pillow: pip install 'ember[images]'") from None
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise DataError("reading images needs pillow: pip install 'ember[images]'") from None
    channels, size = shape[0], shape[1]
    pixels = np.stack([_decode(f, size, channels) for f in files]).astype(np.float32) / 255
    return pixels[:, None] if channels == 1 else pixels.transpose(0, 3, 1, 2).copy()


def _table(path: Path, spec: DataSpec, data: dict) -> tuple[np.ndarray, list[str] | None]:
    """A table's samples and, for a time-series run, the id of each: one sample per row, or
    one per window of rows."""
    try:
        import pandas as pd
    except ImportError:
        raise DataError(f"reading {path.name} needs pandas: pip install 'ember[tabular]'") from None
    df = _read_table(pd, path, data)
    if (spec.encoding or {}).get("window"):
        return _series(pd, df, path, spec, data)
    if data.get("name") in ("csv", "parquet"):
        x = _table_features(pd, df, path, data, spec.encoding)
    else:
        text = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
        if text:
            raise DataError(
                f"{path} has non-numeric column {text[0]!r}; a table for this model holds one flattened "
                "sample of numbers per row"
            )
        x = df.to_numpy(dtype=np.float32)
    return _fit_shape(x, spec, str(path)), None


def _series(pd, df, path: Path, spec: DataSpec, data: dict) -> tuple[np.ndarray, list[str]]:
    """A time-series run's samples from a table of its columns: the rows in time order (by the
    run's data.time_column), every `window` consecutive rows one sample laid out as training laid
    them; each named by its last row's time (or row number), the forecast being `lead` rows after."""
    from ember.data.periods import stamp
    from ember.data.series import in_order, parse_times, window_inputs
    from ember.data.table_checks import data_row

    encoding = spec.encoding
    window, column = int(encoding["window"]), encoding.get("time_column")
    if len(df) < window:
        raise DataError(
            f"{path} has {len(df)} row(s), fewer than one window of {window} (data.window of the run); "
            f"pass at least {window} consecutive rows"
        )
    labels = [str(i) for i in range(len(df))]
    if column:
        if column not in df.columns:
            raise DataError(
                f"{path} lacks the time column {column!r} (the run's data.time_column) that orders its rows"
            )
        where = f"column {column!r} of {path}"
        times = parse_times(df[column], where, data_row)
        order = in_order(times, where, data_row)
        df = df.iloc[order].reset_index(drop=True)
        labels = [stamp(t) for t in times[order]]
    x = _table_features(pd, df, path, data, encoding)
    return _fit_shape(window_inputs(x, window), spec, str(path)), labels[window - 1 :]


def _read_table(pd, path: Path, data: dict):
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        sep = "\t" if path.suffix.lower() == ".tsv" else data.get("sep") or ","
        df = pd.read_csv(path, sep=sep)
        if all(_is_number(c) for c in df.columns):  # no header row: the first row is data
            df = pd.read_csv(path, sep=sep, header=None)
    except Exception as e:  # noqa: BLE001 - parser errors, bad encodings
        raise DataError(f"cannot read {path} as a table ({first_line(e)}); check the file") from None
    if len(df) == 0:
        raise DataError(f"{path} holds no data rows")
    df.columns = [str(c) for c in df.columns]
    return df


def _table_features(pd, df, path: Path, data: dict, encoding: dict | None) -> np.ndarray:
    """The feature columns of a table run, encoded as in training (one-hot over the train file's
    values): from the run's own record of them, or (a run written before it kept one) from the
    training file."""
    from ember.data.table_checks import is_text
    from ember.data.tabular import _FeatureEncoder

    targets = column_names(data.get("target"))
    features = list(encoding["columns"]) if encoding else column_names(data.get("features"))
    train_path = Path(str(data.get("path") or ""))
    train = None
    if not encoding and data.get("path") and train_path.is_file():
        train = _read_table(pd, train_path, data)
        features = features or [c for c in train.columns if c not in targets]
    features = features or [c for c in df.columns if c not in targets]
    missing = [c for c in features if c not in df.columns]
    if missing:
        raise DataError(
            f"{path} lacks feature column(s) {', '.join(map(repr, missing))}; the model was trained on columns: "
            f"{', '.join(features)}"
        )
    bad = df[features].isna().any(axis=1).to_numpy()
    if bad.any():
        raise DataError(
            f"{path} has missing values in {int(bad.sum())} row(s), the first is data row "
            f"{int(np.flatnonzero(bad)[0]) + 1}; fill or drop them"
        )
    if encoding:
        return _FeatureEncoder(pd, encoding["categories"])(df[features]).numpy()
    if train is not None:
        return _FeatureEncoder.fit(pd, train[features].dropna())(df[features]).numpy()
    text = [c for c in features if is_text(df[c])]
    if text:
        raise DataError(
            f"column {text[0]!r} holds text, and the training file {str(data.get('path'))!r} that defines its one-hot "
            "encoding is gone; put it back at that path to predict"
        )
    return df[features].to_numpy(dtype=np.float32)


def column_names(value) -> list[str]:
    """A data option naming columns (one name, a list of them, or none) as a list of names."""
    if value is None or value == "":
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except (TypeError, ValueError):
        return False
