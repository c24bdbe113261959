"""`ember predict run=DIR input=FILE [output=FILE]`: a trained (or exported) model on new data.

Inputs in the units of the training files: a CSV or Parquet table (one sample per row), an
.npy/.npz array, an HDF5 dataset, an image or a folder of images. They go through the run's
preprocessing (the columns and one-hot encoding of a table source, decoding and resizing of
images, the per-channel standardization; deploy/inputs.py reads them) and through the model in
batches. Classifiers give a label (the class name) and the probability of every class; regression
gives the values.

`run=` is a run directory or an exported file (`ember export`), whose `.json` description says
the input shape, task, class names and data settings: predicting needs nothing else. A
TorchScript or AOTInductor file is a program: it is loaded only as this user's own ember export,
or with `trust=true` (deploy/trust.py). NetCDF files (a glob of them too) and Zarr stores are
predicted in time chunks and written back as NetCDF or Zarr on their own coordinates
(deploy/fields.py).
"""

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils._pytree import tree_leaves

from ember.data.spec import DataSpec
from ember.deploy.artifacts import format_of, load_artifact
from ember.deploy.common import ExportError, deployed, load_model, quiet
from ember.deploy.fields import is_fields, predict_fields
from ember.deploy.inputs import column_names, read_inputs
from ember.deploy.trust import check_program
from ember.errors import ConfigError, EmberError, first_line
from ember.files import check_output, output_errors, write_atomic
from ember.options import parse_options
from ember.ranges import AT_LEAST_1, NON_NEGATIVE, Ranged

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
    targets = column_names(data.get("target")) if data.get("name") in ("csv", "parquet") else []
    if len(targets) == width:
        return targets
    return ["value"] if width == 1 else [f"value_{i}" for i in range(width)]


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
