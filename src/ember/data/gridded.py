"""Gridded fields: NetCDF files or Zarr stores through xarray (`pip install 'ember[gridded]'`).

    ember train data=gridded data.path=era5.nc data.variables=[t2m,z500] data.target=precip
    ember train data=gridded data.path=era5.zarr data.variables=[t2m] data.lead=6          # forecast t2m 6 steps ahead
    ember train data=gridded data.path=model.nc data.target_path=obs.nc data.variables=[t2m]   # bias correction

A sample is one time step: the chosen variables become channels on their (lat, lon) grid, the
input shape (variables, *grid). Targets are other variables of the same dataset (`data.target`),
the input variables `data.lead` steps later (forecasting), or variables of a second dataset on
the same times (`data.target_path`: the input is one dataset, the target another, as in bias
correction; times are matched by their coordinate values). Read lazily like HDF5: one handle
per DataLoader worker, batches as contiguous time slices, statistics from one streaming pass.
"""

import warnings
from pathlib import Path
from typing import Annotated

import numpy as np

from ember.data import Splits, register_data
from ember.data.checks import existing_path, require, unknown_name
from ember.data.hdf5 import dataset
from ember.data.lazy import Handles
from ember.data.loaders import default_workers
from ember.data.spec import DataSpec
from ember.errors import ConfigError, DataError
from ember.ranges import NON_NEGATIVE


@register_data("gridded", num_workers=default_workers())
def gridded(
    cfg,
    *,
    variables: tuple[str, ...] = (),
    lead: Annotated[int, NON_NEGATIVE] = 0,
    target_path: str | None = None,
    time_dim: str = "time",
    fill_value: float | None = None,
) -> Splits:
    """NetCDF or Zarr via xarray: variables as channels on their grid, one sample per time step."""
    require("xarray", "gridded", "gridded")
    what = "a NetCDF file or a Zarr store"
    path = existing_path(cfg.path, "data.path", "gridded", what)
    tpath = existing_path(target_path, "data.target_path", "gridded", what) if target_path else None
    if lead < 0:
        raise ConfigError(f"data.lead={lead} must be 0 or more time steps")
    targets = [str(cfg.target)] if isinstance(cfg.target, str) else [str(t) for t in (cfg.target or [])]
    if not targets and not (lead or tpath):
        raise ConfigError("data=gridded needs data.target=VARIABLE(S) to predict, data.lead=N to forecast the input variables N steps ahead, or data.target_path=FILE for paired datasets")
    reader = GriddedReader(path, list(variables), targets, tpath, lead, time_dim, fill_value)
    train, kept = dataset(reader, cfg.nan, 0)
    info = reader.describe()
    reader.close()  # DataLoader workers forked later open their own handles
    spec = DataSpec(input_shape=reader.input_shape, task="regression", target_shape=reader.target_shape, lead=lead, **info)
    splits = Splits(train=train, spec=spec)
    if len(kept) != len(reader):
        splits.indices = {"train": kept.tolist()}
    return splits


def _open(path: str):
    import xarray as xr

    p = Path(path)
    try:
        if p.is_dir() or p.suffix == ".zarr":
            with warnings.catch_warnings():
                # A store without consolidated metadata opens fine, just with more small reads.
                warnings.filterwarnings("ignore", message=".*consolidated metadata", category=RuntimeWarning)
                return xr.open_dataset(path, engine="zarr", cache=False, chunks=None)
        # cache=False: a slice read for one batch must not stay in memory afterwards.
        return xr.open_dataset(path, cache=False)
    except Exception as e:  # noqa: BLE001 - truncated files, unknown formats, missing engines
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(f"cannot open {path} with xarray ({first}); the file may be truncated or not NetCDF/Zarr") from None


class GriddedReader:
    """Time steps of an xarray dataset as (channels, *grid) samples, with their targets."""

    def __init__(self, path: Path, variables: list[str], targets: list[str], target_path: Path | None, lead: int, time_dim: str, fill_value):
        self.paths = {"inputs": str(path), "targets": str(target_path or path)}
        self.time_dim, self.fill_value = time_dim, fill_value
        self.where = str(path) if not target_path else f"{path} and {target_path}"
        self.task = "regression"
        self.nan_hint = ", set data.fill_value=0 to fill masked points (NaN over land or sea),"
        self.handles = Handles(_open)
        ds = self.handles.get(self.paths["inputs"])
        tds = self.handles.get(self.paths["targets"])
        if not variables:
            # Every time-dependent variable that is not a target.
            variables = [str(v) for v in ds.data_vars if time_dim in ds[v].dims and (target_path or str(v) not in targets)]
        self.variables = variables
        self.targets = targets or list(variables)
        self.input_shape = self._grid(ds, self.variables, str(path), "data.variables")
        self.target_shape = self._grid(tds, self.targets, self.paths["targets"], "data.target")
        times_in, times_out = self._align(ds, tds, target_path is not None, lead)
        self.x_times, self.y_times = times_in, times_out
        if len(self.x_times) == 0:
            raise DataError(f"{self.where} has no sample: {ds.sizes[time_dim]} time steps and data.lead={lead}; use a smaller lead or a longer record")

    def _grid(self, ds, names: list[str], path: str, key: str) -> tuple[int, ...]:
        """(channels, *grid) of variables `names`, which must share one grid."""
        present = [str(v) for v in ds.data_vars]
        grids = {}
        for name in names:
            if name not in present:
                raise unknown_name(name, present, "variable", path, f"set {key} to variables of the dataset")
            dims = ds[name].dims
            if self.time_dim not in dims:
                raise DataError(f"variable {name!r} of {path} has no {self.time_dim!r} dimension (dims {dims}); set data.time_dim to the sample dimension")
            grids[name] = tuple((d, ds.sizes[d]) for d in dims if d != self.time_dim)
        if len(set(grids.values())) > 1:
            listed = "; ".join(f"{n} ({', '.join(f'{d}={s}' for d, s in g)})" for n, g in grids.items())
            raise DataError(f"the variables of {key} in {path} lie on different grids: {listed}; choose variables of one grid")
        grid = next(iter(grids.values()))
        return (len(names), *(s for _, s in grid))

    def _align(self, ds, tds, paired: bool, lead: int):
        n_in = ds.sizes[self.time_dim]
        if not paired:
            idx = np.arange(max(0, n_in - lead))
            return idx, idx + lead
        n_out = tds.sizes.get(self.time_dim, 0)
        if self.time_dim in ds.coords and self.time_dim in tds.coords:
            # Paired datasets are matched on their time coordinate, not on position.
            _, a, b = np.intersect1d(ds[self.time_dim].values, tds[self.time_dim].values, return_indices=True)
            if len(a) == 0:
                raise DataError(f"{self.paths['inputs']} and {self.paths['targets']} share no {self.time_dim} value; paired datasets must cover the same times")
            order = np.argsort(a)
            a, b = a[order], b[order]
            keep = b + lead < n_out
            return a[keep], b[keep] + lead
        if n_in != n_out:
            raise DataError(f"{self.paths['inputs']} has {n_in} time steps but {self.paths['targets']} has {n_out}, and no {self.time_dim} coordinate to match them; give both the same times")
        idx = np.arange(max(0, n_in - lead))
        return idx, idx + lead

    def __len__(self) -> int:
        return len(self.x_times)

    def describe(self) -> dict:
        """What the DataSpec records of the fields: names, units, the grid's coordinates, and
        which input channel holds each target's own variable on the same grid."""
        tds = self.handles.get(self.paths["targets"])
        same_grid = self.input_shape[1:] == self.target_shape[1:]
        identity = [self.variables.index(t) for t in self.targets] if same_grid and all(t in self.variables for t in self.targets) else None
        out = {"input_names": list(self.variables), "target_names": list(self.targets), "identity_channels": identity}
        out["target_units"] = [str(tds[t].attrs.get("units", "")) for t in self.targets]
        dims = [d for d in tds[self.targets[0]].dims if d != self.time_dim]
        if len(dims) >= 2:
            for key, dim in (("lat", dims[-2]), ("lon", dims[-1])):
                if dim in tds.coords and np.issubdtype(tds[dim].dtype, np.number) and (key != "lat" or str(dim).lower().startswith("lat")):
                    out[key] = [float(v) for v in tds[dim].values]
        return out

    def fields(self, key: str, names: list[str], times: np.ndarray) -> np.ndarray:
        """Variables `names` of the inputs or targets dataset at time indices `times`, raw: (times, variables, *grid)."""
        ds = self.handles.get(self.paths[key])
        # A contiguous range of times is one slice: one read per variable and chunk.
        sel = slice(int(times[0]), int(times[-1]) + 1) if times[-1] - times[0] == len(times) - 1 else times
        arrays = []
        for name in names:
            var = ds[name].isel({self.time_dim: sel})
            arrays.append(var.transpose(self.time_dim, ...).values)
        out = np.stack(arrays, axis=1)
        if self.fill_value is not None:
            out = np.where(np.isnan(out), self.fill_value, out)
        return out

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        x = self.fields("inputs", self.variables, self.x_times[start:stop])
        y = self.fields("targets", self.targets, self.y_times[start:stop])
        return x, y

    def labels(self):
        return None

    def close(self) -> None:
        self.handles.close()
