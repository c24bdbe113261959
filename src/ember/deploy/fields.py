"""`ember predict` on gridded files: NetCDF (one file or a glob of them) or Zarr in, NetCDF or
Zarr out, streamed in time chunks.

    ember predict run=runs/sst/<time> input=new.nc output=corrected.nc
    ember predict run=model.onnx input='era5/*.nc' output=corrected.zarr chunk=24

The run's input variables (spec.input_names) are read from the file, a chunk of time steps at a
time, through the run's fill value, masks and standardization (NaN inputs become the channel
mean, masked target points come out NaN: contract C1), and the predicted variables are written
on the input's own coordinates (time in its calendar, latitude and longitude whatever their
names), with the attributes of the variable they predict (units, long_name, standard_name) and a
`history` line naming the run. xarray and dask do the streaming: the prediction is a lazy dask
array, one block per time chunk, which `to_netcdf` / `to_zarr` compute and write block by block
on one thread, so memory holds a few chunks whatever the file's size.
"""

import datetime
import glob
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import ember
from ember.data.cf import is_zarr, netcdf_engine
from ember.errors import ConfigError, DataError, first_line
from ember.files import check_output, output_errors, publish, temp_path

FIELD_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf", ".zarr")
FIELD_OUTPUTS = (".nc", ".nc4", ".zarr")
CHUNK_BYTES = 16 * 2**20  # input bytes per time chunk when chunk= is not given: peak memory is about 10 times it
KEPT_ATTRS = ("units", "long_name", "standard_name", "cell_methods")


def is_fields(input: str | Path) -> bool:
    """Whether `input` is a NetCDF file, a glob of them or a Zarr store."""
    text = str(input)
    if glob.has_magic(text):
        return Path(text).suffix.lower() in FIELD_SUFFIXES
    p = Path(text).expanduser()
    return p.suffix.lower() in FIELD_SUFFIXES or (p.is_dir() and is_zarr(p))


def open_fields(input: str | Path, time_dim: str = "time"):
    """The file(s) as one lazy, dask-backed xarray.Dataset (decoded: scale_factor, _FillValue,
    times in their calendar)."""
    import xarray as xr

    text = os.path.expanduser(str(input))
    files = sorted(glob.glob(text)) if glob.has_magic(text) else [text]
    if not files:
        raise DataError(f"input={text!r} matches no file; pass a NetCDF file, a glob like 'era5/*.nc' or a Zarr store")
    if not Path(files[0]).exists():
        raise DataError(f"input={text!r} does not exist; pass a NetCDF file, a glob like 'era5/*.nc' or a Zarr store")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*consolidated metadata", category=RuntimeWarning)
            if len(files) > 1:
                return xr.open_mfdataset(
                    files,
                    engine=netcdf_engine(files),
                    combine="by_coords",
                    data_vars="minimal",
                    coords="minimal",
                    compat="override",
                    chunks={},
                    parallel=False,
                )
            engine = "zarr" if is_zarr(Path(files[0])) else netcdf_engine(files)
            return xr.open_dataset(files[0], engine=engine, chunks={})
    except Exception as e:  # noqa: BLE001 - truncated files, unknown formats, files that do not combine
        raise DataError(
            f"cannot open {text} with xarray ({first_line(e)}); pass NetCDF files or a Zarr store that xarray reads"
        ) from None


def region(ds, data: dict):
    """The run's region and levels (data.lat, data.lon, data.level) cut from a larger file, as the
    training files were; times are the file's own."""
    from ember.data.cf import Subset, select

    levels = tuple(float(v) for v in _listed(data.get("level")))
    subset = Subset(
        time_dim=str(data.get("time_dim") or "time"),
        lat=data.get("lat"),
        lon=data.get("lon"),
        level=levels,
        strict_level=False,
    )
    return select(ds, subset, "the input") if subset.lat or subset.lon or subset.level else ds


def channels(ds, spec):
    """The run's level channels (`t@500`: variable t at level 500 of its vertical axis) as
    variables of their own, lazily, so each input channel is one variable of the dataset."""
    from ember.data.cf import axis_dim

    for name in spec.input_names or []:
        base, at, level = name.rpartition("@")
        if name in ds.data_vars or not at or base not in ds.data_vars:
            continue
        z = axis_dim(ds, ds[base].dims, "level")
        if z is None:
            continue
        values = np.asarray(ds[z].values, dtype=float) if z in ds.coords else np.arange(ds.sizes[z], dtype=float)
        hit = np.flatnonzero(np.isclose(values, float(level)))
        if len(hit):
            ds = ds.assign({name: ds[base].isel({z: int(hit[0])}, drop=True)})
    return ds


def levels_as_dims(out, ds):
    """Predicted level channels (`t@500`, `t@850`) back as one variable `t` on the input's
    vertical axis, where the input has that variable with one."""
    import xarray as xr

    from ember.data.cf import axis_dim

    groups: dict[str, list[tuple[str, float]]] = {}
    for name in map(str, out.data_vars):
        base, at, level = name.rpartition("@")
        if at and base in ds.data_vars and axis_dim(ds, ds[base].dims, "level") is not None:
            groups.setdefault(base, []).append((name, float(level)))
    for base, members in groups.items():
        z = axis_dim(ds, ds[base].dims, "level")
        coord = xr.DataArray([v for _, v in members], dims=z, attrs=dict(ds[z].attrs) if z in ds.coords else {})
        stacked = xr.concat([out[n] for n, _ in members], dim=z).assign_coords({z: coord})
        stacked.attrs = {**out[members[0][0]].attrs}
        out = out.drop_vars([n for n, _ in members]).assign({base: stacked.transpose(stacked.dims[1], z, ...)})
    return out


@dataclass
class Layout:
    """Where the run's inputs lie in the file and what the output looks like."""

    variables: list[str]
    time_dim: str
    grid: list[str]  # the input fields' dimensions after time
    names: list[str]  # output variables, one per target channel (or `probability`)
    out_dims: list[str]  # the output fields' dimensions after time and the channel
    out_sizes: dict[str, int]
    coords: dict[str, Any]  # extra coordinates for output dimensions the input lacks


def layout(ds, spec, data: dict) -> Layout:
    """The run's variables in `ds`, checked against the run's input shape."""
    time_dim = str(data.get("time_dim") or "time")
    variables = list(spec.input_names or _listed(data.get("variables")))
    if spec.mask_channel and len(variables) == spec.input_shape[0]:
        variables = variables[:-1]  # the mask channel ("mask") is the run's, not the file's
    if not variables:
        raise DataError(
            "the run does not name its input variables (spec.input_names or data.variables); "
            "predict NetCDF with a run trained by data=gridded"
        )
    missing = [v for v in variables if v not in ds.data_vars]
    if missing:
        raise DataError(
            f"the input lacks variable(s) {', '.join(map(repr, missing))} the run was trained on; it holds: "
            f"{', '.join(map(str, ds.data_vars)) or '(none)'}"
        )
    first = ds[variables[0]]
    if time_dim not in first.dims:
        raise DataError(
            f"variable {variables[0]!r} has no {time_dim!r} dimension (dims {first.dims}); "
            "predict needs one sample per time step"
        )
    grid = [str(d) for d in first.dims if d != time_dim]
    want = tuple(spec.input_shape[1:])
    for v in variables:
        got = tuple(ds.sizes[d] for d in grid) if set(ds[v].dims) == set(first.dims) else None
        if got != want:
            shape = dict(zip(ds[v].dims, ds[v].shape))
            raise DataError(
                f"variable {v!r} lies on a grid {shape} but the run was trained on fields of shape {want}; "
                "pass the same grid (regrid or subset the file)"
            )
    return _output_layout(ds, spec, variables, time_dim, grid)


def _output_layout(ds, spec, variables: list[str], time_dim: str, grid: list[str]) -> Layout:
    if spec.task == "classification":
        names = spec.class_names or [str(i) for i in range(spec.num_classes)]
        return Layout(variables, time_dim, grid, ["probability"], ["class"], {"class": len(names)}, {"class": names})
    shape = tuple(spec.target_shape) or (1,)
    channels, tgrid = shape[0], shape[1:]
    names = list(spec.target_names or [])
    if len(names) != channels:
        names = ["prediction"] if channels == 1 else [f"prediction_{i}" for i in range(channels)]
    if tgrid == tuple(ds.sizes[d] for d in grid):
        return Layout(variables, time_dim, grid, names, grid, {}, {})
    # Another grid (downscaling): lat and lon from the run's spec where they fit.
    dims = ["lat", "lon"][-len(tgrid):] if len(tgrid) <= 2 else [f"dim_{i}" for i in range(len(tgrid))]
    dims = [f"out_{d}" if d in ds.dims else d for d in dims]
    coords = {}
    for d, n, values in zip(dims, tgrid, [spec.lat, spec.lon][-len(tgrid):] if len(tgrid) <= 2 else []):
        if values is not None and len(values) == n:
            coords[d] = np.asarray(values)
    return Layout(variables, time_dim, grid, names, dims, dict(zip(dims, tgrid)), coords)


def _listed(value) -> list[str]:
    if not value:
        return []
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


def chunk_steps(ds, lay: Layout, chunk: int | None) -> int:
    """Time steps per chunk: `chunk`, or as many as make about CHUNK_BYTES of input."""
    if chunk is not None:
        return int(chunk)
    step = sum(ds[v].dtype.itemsize * int(np.prod([ds.sizes[d] for d in lay.grid])) for v in lay.variables)
    return max(1, CHUNK_BYTES // max(1, step))


# -- the prediction, lazily ----------------------------------------------------------------------
def predicted(ds, predictor, lay: Layout, steps: int, batch_size: int, history: str):
    """The predictions as a lazy, dask-backed Dataset on the input's coordinates."""
    import xarray as xr

    parts = [ds[v].transpose(lay.time_dim, *lay.grid).variable for v in lay.variables]
    stacked = xr.DataArray(xr.Variable.concat(parts, dim="__channel").transpose(lay.time_dim, "__channel", *lay.grid))
    stacked = stacked.chunk({lay.time_dim: steps, "__channel": -1, **{d: -1 for d in lay.grid}})
    fill = _fill(predictor, len(lay.variables))
    result = xr.apply_ufunc(
        lambda x: _block(x, predictor, fill, batch_size),
        stacked,
        input_core_dims=[["__channel", *lay.grid]],
        output_core_dims=[["__out", *lay.out_dims]],
        exclude_dims=set(lay.grid) - set(lay.out_dims),
        dask="parallelized",
        output_dtypes=[np.float32],
        dask_gufunc_kwargs={"output_sizes": {"__out": len(lay.names), **lay.out_sizes}},
    )
    out = xr.Dataset({name: result.isel(__out=i) for i, name in enumerate(lay.names)})
    dims = {lay.time_dim, *lay.out_dims}
    source = ds[lay.variables[0]].coords
    out = out.assign_coords({k: source[k].variable for k in source if set(source[k].dims) <= dims})
    out = out.assign_coords({k: (k, v) for k, v in lay.coords.items()})
    for i, name in enumerate(lay.names):
        out[name].attrs = _attrs(name, i, ds, predictor)
    old = str(ds.attrs.get("history", "")).strip()
    out.attrs = {**ds.attrs, "history": history + ("\n" + old if old else "")}
    for k in out.coords:  # the input's time units and calendar stay; its storage settings do not
        out[k].encoding = (
            {e: v for e, v in ds[k].encoding.items() if e in ("units", "calendar", "dtype")}
            if k in ds.variables
            else {}
        )
    return _valid_time(out, ds, lay.time_dim, predictor.spec.lead)


def _valid_time(out, ds, time_dim: str, lead: int):
    """A forecast (data.lead) is stamped with its valid time, `lead` steps of the input's own
    frequency after the input's time, which stays as CF's forecast_reference_time. Where the
    frequency cannot be told (irregular times), the input's time, and the comment says so."""
    import xarray as xr

    index = ds.indexes.get(time_dim)
    freq = xr.infer_freq(index) if lead and index is not None and len(index) >= 3 else None
    if not freq:
        return out
    encoding = dict(out[time_dim].encoding)
    reference = xr.Variable(time_dim, index, {"standard_name": "forecast_reference_time"}, encoding)
    out = out.assign_coords({time_dim: index.shift(lead, freq)}).assign_coords(forecast_reference_time=reference)
    out[time_dim].encoding = encoding
    out[time_dim].attrs = dict(ds[time_dim].attrs)
    for name in out.data_vars:
        out[name].attrs["comment"] = (
            out[name]
            .attrs["comment"]
            .replace("after the inputs' time", "after forecast_reference_time, the inputs' time")
        )
    return out


def _fill(predictor, channels: int) -> np.ndarray:
    """What a NaN input element becomes, per channel: the run's data.fill_value, else its mean."""
    spec, value = predictor.spec, predictor.data.get("fill_value")
    if value is not None:
        return np.full(channels, float(value), np.float32)
    mean = spec.mean if spec.mean is not None and len(spec.mean) >= channels else [0.0] * channels
    return np.asarray(mean[:channels] if len(mean) > 1 else mean * channels, np.float32)


def _block(x: np.ndarray, predictor, fill: np.ndarray, batch_size: int) -> np.ndarray:
    """One time chunk (t, channels, *grid) of raw inputs -> (t, outputs, *out_grid)."""
    import torch
    from torch.utils._pytree import tree_leaves

    spec = predictor.spec
    x = x.astype(np.float32, copy=True)
    nan = np.isnan(x)
    if nan.any():  # as in training and inside ember's graphs (old exports lack it there)
        x[nan] = np.broadcast_to(fill.reshape((1, -1) + (1,) * (x.ndim - 2)), x.shape)[nan]
    if spec.mask_channel:
        x = np.concatenate([x, np.broadcast_to(mask_channel(spec, x.shape[2:]), (len(x), 1, *x.shape[2:]))], axis=1)
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out = predictor.run(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])))
            outs.append(next(t for t in tree_leaves(out) if isinstance(t, torch.Tensor)).float().cpu().numpy())
    y = np.concatenate(outs) if outs else np.zeros((0, spec.out_features), np.float32)
    if spec.task == "classification":
        e = np.exp(y - y.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).reshape(len(y), 1, -1).astype(np.float32)
    y = y.reshape(len(y), -1)
    if spec.mask:
        y[:, spec.mask] = np.nan
    return y.reshape(len(y), *(tuple(spec.target_shape) or (1,))).astype(np.float32, copy=False)


def mask_channel(spec, grid: tuple[int, ...]) -> np.ndarray:
    """The run's input mask as one input channel (data.mask_channel=true): 1 at masked points."""
    m = np.zeros(int(np.prod(grid)), np.float32)
    if spec.input_mask:
        m[np.asarray(spec.input_mask) % m.size] = 1.0
    return m.reshape(1, *grid)


def _attrs(name: str, i: int, ds, predictor) -> dict:
    """units, long_name, standard_name of the variable predicted: from the input file where it
    holds that variable (bias correction), else from the run's target file, else the run's units."""
    spec = predictor.spec
    attrs = {}
    source = ds[name].attrs if name in ds.variables else _target_attrs(name, predictor.data)
    attrs.update({k: source[k] for k in KEPT_ATTRS if k in source})
    if "units" not in attrs and spec.target_units and i < len(spec.target_units) and spec.target_units[i]:
        attrs["units"] = spec.target_units[i]
    lead = f", {spec.lead} time steps after the inputs' time" if spec.lead else ""
    attrs["comment"] = f"predicted by ember from {', '.join(spec.input_names or [])}{lead}"
    return attrs


def _target_attrs(name: str, data: dict) -> dict:
    """The attributes of `name` in the run's training target file, if it is still there."""
    import xarray as xr

    where = data.get("target_path") or data.get("path")
    paths = sorted(glob.glob(str(where))) if where and glob.has_magic(str(where)) else [str(where)] if where else []
    if not paths or not Path(paths[0]).exists():
        return {}
    try:
        with xr.open_dataset(paths[0], engine="zarr" if is_zarr(Path(paths[0])) else None, decode_times=False) as t:
            return dict(t[name].attrs) if name in t.variables else {}
    except Exception:  # noqa: BLE001 - the attributes are a courtesy; the prediction stands without them
        return {}


# -- writing -------------------------------------------------------------------------------------
def write_fields(out, output: str | Path, time_dim: str) -> None:
    """`out` to a NetCDF file or Zarr store, chunk by chunk, published whole or not at all."""
    import dask

    path = Path(output)
    tmp = temp_path(path)
    try:
        with dask.config.set(scheduler="synchronous"):  # one chunk at a time; torch has its own threads
            if path.suffix == ".zarr":
                shutil.rmtree(tmp, ignore_errors=True)
                out.to_zarr(tmp, mode="w", zarr_format=2, consolidated=True)  # version 2: what most readers take
                _swap(tmp, path)
            else:
                grid = {v: (1, *out[v].shape[1:]) for v in out.data_vars}
                encoding = {v: {"zlib": True, "complevel": 4, "chunksizes": grid[v]} for v in out.data_vars}
                out.to_netcdf(tmp, unlimited_dims=[time_dim], encoding=encoding)
                publish(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def _swap(tmp: Path, path: Path) -> None:
    """The finished store `tmp` in place of `path` (a store, replaced)."""
    old = path.with_name(f".{path.name}.{os.getpid()}.old")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def predict_fields(
    predictor, input: str | Path, output: str | Path | None, batch_size: int, chunk: int | None, echo
) -> Any:
    """Predict every time step of gridded `input`; write `output` (.nc or .zarr) if given.
    Returns the predictions as an xarray.Dataset: the written file, opened lazily, or (without
    output) a lazy dataset that predicts as it is read."""
    if output is not None:
        if Path(output).suffix not in FIELD_OUTPUTS:
            raise ConfigError(
                f"output={str(output)!r}: predictions of NetCDF or Zarr input are written to a "
                f"{' or '.join(FIELD_OUTPUTS)} file"
            )
        check_output(output, "the predictions", "output=", folder=Path(output).suffix == ".zarr")
    ds = channels(region(open_fields(input), predictor.data), predictor.spec)
    lay = layout(ds, predictor.spec, predictor.data)
    steps = chunk_steps(ds, lay, chunk)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    history = f"{stamp}: ember {ember.__version__} predict run={predictor.source} input={input}"
    out = levels_as_dims(predicted(ds, predictor, lay, steps, batch_size, history), ds)
    if output is None:
        return out
    with output_errors(output, "the predictions", "output="):
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        write_fields(out, output, lay.time_dim)
    n = ds.sizes[lay.time_dim]
    k = -(-n // steps)
    echo(
        f"wrote {n} time steps of {', '.join(lay.names)} to {output} ({k} chunks of {steps} time steps)"
        if k > 1
        else f"wrote {n} time steps of {', '.join(lay.names)} to {output} (in one chunk)"
    )
    return open_fields(output)
