"""`ember predict run=DIR input=FILE [output=FILE]`: a trained (or exported) model on new data.

Inputs in the units of the training files: a CSV or Parquet table (one sample per row), an
.npy/.npz array, an HDF5 dataset, an image or a folder of images. They go through the run's
preprocessing (the columns and one-hot encoding of a table source, decoding and resizing of
images, the per-channel standardization) and through the model in batches. Classifiers give a
label (the class name) and the probability of every class; regression gives the values.

`run=` is a run directory or an exported file (`ember export`), whose `.json` description says
the input shape, task, class names and data settings: predicting needs nothing else. A
TorchScript or AOTInductor file is a program: it is loaded only as this user's own ember export,
or with `trust=true` (export/trust.py). NetCDF files (a glob of them too) and Zarr stores are
predicted in time chunks and written back as NetCDF or Zarr on their own coordinates
(export/fields.py).
"""

import csv
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils._pytree import tree_leaves

from ember.data.spec import DataSpec
from ember.errors import ConfigError, DataError, EmberError, first_line
from ember.export.artifacts import format_of, load_artifact
from ember.export.common import ExportError, deployed, load_model, quiet
from ember.export.fields import is_fields, predict_fields
from ember.export.trust import check_program
from ember.files import check_output, output_errors, write_atomic
from ember.options import parse_options
from ember.ranges import AT_LEAST_1, NON_NEGATIVE, Ranged

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet")
ARRAY_SUFFIXES = (".npy", ".npz", ".h5", ".hdf5", ".he5")
OUTPUT_SUFFIXES = (".csv", ".npy", ".npz", ".json")


@dataclass
class Predictor:
    """A model taking raw inputs, with what predicting needs to know about its data."""

    run: Callable[[torch.Tensor], Any]
    spec: DataSpec
    data: dict  # the run's `data` config
    source: str


@dataclass
class Predictions:
    ids: list[str]
    values: np.ndarray  # classification: probabilities (N, classes); regression: values (N, outputs)
    labels: list[str] | None  # classification: the predicted class names
    columns: list[str]  # names of the columns of `values`
    task: str


def predict_command(overrides: list[str]) -> int:
    """ember predict run=DIR|ARTIFACT input=FILE [output=FILE] [batch_size=256] [chunk=N] [trust=false]."""
    defaults = {
        "run": None,
        "input": None,
        "output": None,
        "batch_size": Ranged(256, AT_LEAST_1),
        "chunk": Ranged(0, NON_NEGATIVE),
        "trust": False,
    }
    opts, _ = parse_options("predict", overrides, defaults)
    if not opts["run"]:
        raise ConfigError(
            "ember predict needs the model: ember predict run=runs/<name>/<time> input=FILE (or "
            "run=<run>/export/model.onnx)"
        )
    if not opts["input"]:
        raise ConfigError(
            "ember predict needs input=FILE: a CSV/Parquet table, an .npy/.npz/.h5 array, "
            "NetCDF files or a Zarr store, an image or a folder of images"
        )
    if is_fields(opts["input"]) and not opts["output"]:
        raise ConfigError("ember predict on NetCDF or Zarr input writes a file: add output=predicted.nc (or .zarr)")
    predict(
        opts["run"],
        opts["input"],
        output=opts["output"],
        batch_size=opts["batch_size"],
        chunk=opts["chunk"] or None,
        trust=opts["trust"],
    )
    return 0


def predict(
    source: str | Path,
    input: str | Path,
    output: str | Path | None = None,
    batch_size: int = 256,
    echo: Callable[[str], None] | None = None,
    chunk: int | None = None,
    trust: bool = False,
) -> Any:
    """Predict every sample of `input` with a run (or exported model); write `output` if given.

    Returns `Predictions`, or for NetCDF/Zarr input an xarray.Dataset on the input's coordinates
    (predicted `chunk` time steps at a time). `trust=True` loads a TorchScript or AOTInductor file
    that is not this user's own ember export (loading one runs its program)."""
    echo = echo or print
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be at least 1")
    if is_fields(input):
        return predict_fields(load_predictor(source, trust, echo), input, output, batch_size, chunk, echo)
    if output is not None and Path(output).suffix not in OUTPUT_SUFFIXES:
        raise ConfigError(
            f"output={str(output)!r}: write predictions to a {', '.join(OUTPUT_SUFFIXES)} file (.nc or .zarr for "
            "NetCDF or Zarr input)"
        )
    if output is not None:
        check_output(output, "the predictions", "output=")
    predictor = load_predictor(source, trust, echo)
    x, ids = read_inputs(input, predictor.spec, predictor.data)
    preds = run_batches(predictor, x, ids, batch_size)
    if output is not None:
        with output_errors(output, "the predictions", "output="):
            write_predictions(preds, output)
        echo(f"wrote {len(ids)} predictions to {output}")
    else:
        show(preds)
    return preds


# -- the model -----------------------------------------------------------------------------------
def load_predictor(source: str | Path, trust: bool = False, echo: Callable[[str], None] = print) -> Predictor:
    path = Path(source)
    if path.is_dir():
        model, cfg, spec, _ = load_model(path)
        data = OmegaConf.to_container(cfg.data, resolve=True)
        return Predictor(deployed(model, spec, data), spec, data, str(path))
    if path.is_file():
        meta, spec = _description(path)
        fmt = format_of(path)
        check_program(path, fmt, meta.get("sha256"), trust, echo)
        try:
            with quiet():
                run = load_artifact(path, fmt)
        except EmberError:
            raise
        except Exception as e:  # noqa: BLE001 - a truncated or foreign file, in its runtime's words
            raise ExportError(
                f"cannot load {path} as an ember {fmt} export ({first_line(e, innermost=True)}); "
                "the file is damaged or not from ember export: export the run again"
            ) from None
        return Predictor(run, spec, (meta.get("config") or {}).get("data") or {}, str(path))
    raise ConfigError(
        f"run={str(source)!r} does not exist; pass a run directory (runs/<name>/<time>) or a file "
        "written by ember export"
    )


def _description(path: Path) -> tuple[dict, DataSpec]:
    """An export's `<file>.json` description and the DataSpec in it, or one line saying what is wrong."""
    meta_path = Path(str(path) + ".json")
    if not meta_path.is_file():
        raise ConfigError(
            f"{path} has no description {meta_path.name} beside it; pass the run directory, "
            "or export again with ember export"
        )
    fix = "export the run again with ember export (or pass the run directory)"
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ExportError(f"{meta_path} is not JSON ({first_line(e)}); {fix}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("spec"), dict):
        raise ExportError(f"{meta_path} lacks the model's data description (its 'spec'); {fix}")
    try:
        return meta, DataSpec.from_dict(meta["spec"])
    except (TypeError, ValueError) as e:
        raise ExportError(f"{meta_path} has a damaged 'spec' ({first_line(e)}); {fix}") from None


def run_batches(predictor: Predictor, x: np.ndarray, ids: list[str], batch_size: int) -> Predictions:
    spec = predictor.spec
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32))
            out = next(t for t in tree_leaves(predictor.run(batch)) if isinstance(t, torch.Tensor))
            outs.append(out.float().cpu())
    y = torch.cat(outs) if outs else torch.zeros(0, spec.out_features)
    if spec.task == "classification":
        probs = torch.softmax(y.reshape(len(y), -1), dim=1).numpy()
        names = spec.class_names or [str(i) for i in range(probs.shape[1])]
        return Predictions(
            ids,
            probs,
            [names[k] for k in probs.argmax(1)] if len(probs) else [],
            [f"prob_{n}" for n in names],
            spec.task,
        )
    values = y.reshape(len(y), -1).numpy()
    if spec.mask:  # the run's masked points (land): NaN, whatever the model gave there
        values[:, spec.mask] = np.nan
    return Predictions(ids, values, None, _value_columns(predictor.data, values.shape[1]), spec.task)


def _value_columns(data: dict, width: int) -> list[str]:
    targets = _names(data.get("target")) if data.get("name") in ("csv", "parquet") else []
    if len(targets) == width:
        return targets
    return ["value"] if width == 1 else [f"value_{i}" for i in range(width)]


# -- reading inputs ------------------------------------------------------------------------------
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
    from ember.data.tabular import _row

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
        times = parse_times(df[column], where, _row)
        order = in_order(times, where, _row)
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
    from ember.data.tabular import _FeatureEncoder, _is_text

    targets = _names(data.get("target"))
    features = list(encoding["columns"]) if encoding else _names(data.get("features"))
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
    text = [c for c in features if _is_text(df[c])]
    if text:
        raise DataError(
            f"column {text[0]!r} holds text, and the training file {str(data.get('path'))!r} that defines its one-hot "
            "encoding is gone; put it back at that path to predict"
        )
    return df[features].to_numpy(dtype=np.float32)


def _names(value) -> list[str]:
    if value is None or value == "":
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except (TypeError, ValueError):
        return False


# -- writing and showing -------------------------------------------------------------------------
def write_predictions(p: Predictions, output: str | Path) -> None:
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix
    if suffix == ".npy":
        write_atomic(path, lambda f: np.save(f, p.values))
    elif suffix == ".npz":
        extra = (
            {"labels": np.array(p.labels), "probabilities": p.values} if p.labels is not None else {"values": p.values}
        )
        write_atomic(path, lambda f: np.savez(f, ids=np.array(p.ids), **extra))
    elif suffix == ".json":
        rows = []
        for i, sample in enumerate(p.ids):
            row = {"id": sample}
            if p.labels is not None:
                row["label"] = p.labels[i]
            row.update({c: float(v) for c, v in zip(p.columns, p.values[i])})
            rows.append(row)
        write_atomic(path, json.dumps(rows, indent=1) + "\n")
    else:
        text = io.StringIO(newline="")
        w = csv.writer(text)
        w.writerow(["id"] + (["label"] if p.labels is not None else []) + p.columns)
        for i, sample in enumerate(p.ids):
            w.writerow([sample] + ([p.labels[i]] if p.labels is not None else []) + [f"{v:.6g}" for v in p.values[i]])
        write_atomic(path, text.getvalue())


def show(p: Predictions, rows: int = 10) -> None:
    """The first predictions as a table, and how to get all of them."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(p.ids)} predictions", title_justify="left")
    table.add_column("id")
    if p.labels is not None:
        table.add_column("label")
        table.add_column("probability", justify="right")
        for i in range(min(rows, len(p.ids))):
            table.add_row(p.ids[i], p.labels[i], f"{p.values[i].max():.4f}")
    else:
        for c in p.columns[:8]:
            table.add_column(c, justify="right")
        for i in range(min(rows, len(p.ids))):
            table.add_row(p.ids[i], *[f"{v:.4g}" for v in p.values[i][:8]])
    console = Console(highlight=False, soft_wrap=True, markup=False)  # names and paths are text, not rich markup
    console.print(table)
    if len(p.ids) > rows:
        console.print(f"{len(p.ids) - rows} more; write them all with output=predictions.csv (or .npy, .npz, .json)")
