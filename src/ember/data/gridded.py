"""Gridded fields: NetCDF files or Zarr stores through xarray (`pip install 'ember[gridded]'`).

    ember train data=gridded data.path=era5.nc data.variables=[t2m,z500] data.target=precip
    ember train data=gridded data.path=era5.zarr data.variables=[t2m] data.lead=6          # forecast t2m 6 steps ahead
    ember train data=gridded data.path=model.nc data.target_path=obs.nc data.variables=[t2m]   # bias correction
    ember train data=gridded data.path='sst/*.nc' data.lead=1 data.time=1982-01-01:2015-12-31 data.lat=-30:30

A sample is one time step: the chosen variables become channels on their (lat, lon) grid, the
input shape (channels, *grid); a variable with a vertical axis (level, plev, depth, ...) gives one
channel per level (`t@500`, `t@850`; `data.level=[500,850]` picks levels). Targets are other
variables of the same dataset (`data.target`), the input variables `data.lead` steps later
(forecasting), or variables of a second dataset on the same times (`data.target_path`: the input
is one dataset, the target another, as in bias correction; times are matched by their coordinate
values in one calendar). Files follow CF conventions (cf.py): many files read as one dataset,
time and region subsets before any read, bounds variables skipped.

Masks by default: a NaN (or decoded _FillValue) is a missing value, not a bad sample. Points
missing at every time (land in a sea-surface field) are `spec.mask` / `spec.input_mask`; missing
values leave the statistics, the loss and every metric, and a missing input is the channel's
standardized mean (0); `data.mask_channel=true` adds the input mask as one more input channel
(1 where masked). Read lazily like HDF5: one handle per DataLoader worker, batches as contiguous
time slices, statistics from one streaming pass.
"""

from dataclasses import dataclass, replace
from typing import Annotated, Any

import numpy as np

from ember.data import Splits, register_data
from ember.data.cf import (
    Subset,
    axis_dim,
    axis_values,
    calendar,
    default_variables,
    expand,
    horizontal,
    open_fields,
    time_index,
)
from ember.data.checks import plural, require, unknown_name
from ember.data.hdf5 import dataset
from ember.data.lazy import Handles, physical_memory
from ember.data.loaders import default_workers
from ember.data.spec import DataSpec
from ember.errors import ConfigError, DataError
from ember.ranges import NON_NEGATIVE


@register_data("gridded", num_workers=default_workers())
def gridded(
    cfg,
    *,
    path: Any = None,
    variables: tuple[str, ...] = (),
    lead: Annotated[int, NON_NEGATIVE] = 0,
    target_path: Any = None,
    test_path: Any = None,
    time_dim: str = "time",
    time: str | None = None,
    lat: str | None = None,
    lon: str | None = None,
    level: tuple[float, ...] = (),
    fill_value: float | None = None,
    mask_channel: bool = False,
) -> Splits:
    """NetCDF or Zarr via xarray (one file or many): variables as channels on their grid, one sample per time step."""
    require("xarray", "gridded", "gridded")
    if lead < 0:
        raise ConfigError(f"data.lead={lead} must be 0 or more time steps")
    targets = [str(cfg.target)] if isinstance(cfg.target, str) else [str(t) for t in (cfg.target or [])]
    if not targets and not (lead or target_path):
        raise ConfigError(
            "data=gridded needs data.target=VARIABLE(S) to predict, data.lead=N to forecast the input variables N "
            "steps ahead, or data.target_path=FILE for paired datasets"
        )
    subset = Subset(time_dim=time_dim, time=time, lat=lat, lon=lon, level=tuple(float(v) for v in level))
    files = Files(
        expand(_plain(path), "data.path"), expand(_plain(target_path), "data.target_path") if target_path else None
    )
    opts = Options(files, [str(v) for v in variables], targets, lead, subset, fill_value)
    reader = GriddedReader(opts)
    train, kept = dataset(reader, cfg.nan, 0)
    notes = masks(reader, train.scan(), mask_channel, paired=target_path is not None)
    spec = reader.spec()
    splits = Splits(train=train, spec=spec, notes=reader.notes + notes, gap=lead + 1)
    times = reader.times()
    if times is not None:
        splits.times = {"train": times[kept]}
    if len(kept) != len(reader):
        splits.indices = {"train": kept.tolist()}
    if test_path:
        _add_test(
            splits,
            reader,
            replace(opts, files=replace(files, inputs=expand(_plain(test_path), "data.test_path"))),
            cfg.nan,
        )
    reader.close()  # DataLoader workers forked later open their own handles
    return splits


def _plain(value):
    """A config list (OmegaConf's ListConfig) as a plain list; anything else as it is."""
    return [str(v) for v in value] if hasattr(value, "__len__") and not isinstance(value, str) else value


def _add_test(splits: Splits, train_reader: "GriddedReader", opts: "Options", nan: str) -> None:
    """The test split from data.test_path, with the train files' variables and the train mask."""
    reader = GriddedReader(replace(opts, variables=train_reader.variables, targets=train_reader.targets))
    if (reader.input_shape, reader.target_shape) != (train_reader.base_shape, train_reader.target_shape):
        raise DataError(
            f"data.test_path samples have shape {reader.input_shape} -> {reader.target_shape}, "
            f"the train files' {train_reader.base_shape} -> {train_reader.target_shape}; they must be on the same grid"
        )
    splits.test, kept = dataset(reader, nan, 0)
    if train_reader.mask_field is not None:
        reader.set_mask_channel(train_reader.mask_field)
    times = reader.times()
    if splits.times is not None and times is not None:
        splits.times["test"] = times[kept]
    reader.close()


@dataclass(frozen=True)
class Files:
    inputs: tuple[str, ...]
    targets: tuple[str, ...] | None = None  # data.target_path: a second dataset


@dataclass(frozen=True)
class Options:
    files: Files
    variables: list[str]
    targets: list[str]
    lead: int
    subset: Subset
    fill_value: float | None


def _open(key):
    paths, subset = key
    return open_fields(paths, subset)


@dataclass(frozen=True)
class Layout:
    """How variables become channels: each variable's vertical dimension (or None) and levels."""

    names: list[str]
    vertical: list[str | None]
    levels: list[int]
    grid: tuple[tuple[str, int], ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return (sum(self.levels), *(s for _, s in self.grid))

    def channel_names(self, ds) -> list[str]:
        out = []
        for name, z, n in zip(self.names, self.vertical, self.levels, strict=True):
            if z is None:
                out.append(name)
            else:
                values = ds[z].values if z in ds.coords else range(n)
                out += [f"{name}@{v:g}" if isinstance(v, (int, float, np.number)) else f"{name}@{v}" for v in values]
        return out


class GriddedReader:
    """Time steps of an xarray dataset as (channels, *grid) samples, with their targets."""

    masked = True  # NaN is a missing value (lazy.py): masks, not bad samples

    def __init__(self, opts: Options):
        self.opts, self.time_dim, self.fill_value = opts, opts.subset.time_dim, opts.fill_value
        paired = opts.files.targets is not None
        # Levels are picked in a target dataset of its own only where it has a vertical axis.
        target_subset = replace(opts.subset, strict_level=False) if paired else opts.subset
        self.keys = {
            "inputs": (opts.files.inputs, opts.subset),
            "targets": (opts.files.targets or opts.files.inputs, target_subset),
        }
        self.where = (
            _where(opts.files.inputs) if not paired else f"{_where(opts.files.inputs)} and {_where(opts.files.targets)}"
        )
        self.task = "regression"
        self.nan_hint = " (NaN at points or times are masks already)"
        self.handles = Handles(_open)
        self.notes: list[str] = []
        ds, tds = self.dataset("inputs"), self.dataset("targets")
        variables = opts.variables or self._defaults(ds, [] if paired else opts.targets)
        self.variables, self.targets = variables, opts.targets or list(variables)
        self.x_layout = self._layout(ds, self.variables, _where(opts.files.inputs), "data.variables")
        self.y_layout = self._layout(tds, self.targets, _where(self.keys["targets"][0]), "data.target")
        self.base_shape = self.input_shape = self.x_layout.shape
        self.target_shape = self.y_layout.shape
        self.x_times, self.y_times = self._align(ds, tds, paired, opts.lead)
        self.mask_field: np.ndarray | None = None
        self.extra_channels = 0
        self.spec_masks: tuple = (None, None)  # (spec.mask, spec.input_mask), set by masks()
        if len(self.x_times) == 0:
            raise DataError(
                f"{self.where} has no sample: {ds.sizes.get(self.time_dim, 0)} time steps and data.lead={opts.lead}; "
                "use a smaller lead or a longer period"
            )

    def dataset(self, key: str):
        return self.handles.get(self.keys[key])

    def _defaults(self, ds, exclude: list[str]) -> list[str]:
        """CF data variables (cf.default_variables), the skipped ones said in one note."""
        if self.time_dim not in ds.dims:
            raise DataError(
                f"{_where(self.opts.files.inputs)} has no {self.time_dim!r} dimension (dimensions: "
                f"{', '.join(map(str, ds.dims))}); set data.time_dim to the dimension that numbers the samples"
            )
        names, skipped = default_variables(ds, self.time_dim, exclude)
        if not names:
            raise DataError(
                f"{_where(self.opts.files.inputs)} has no variable on {self.time_dim!r} and a grid to use as "
                "input; set data.variables"
            )
        if skipped:
            listed = ", ".join(f"{n} ({why})" for n, why in list(skipped.items())[:12]) + (
                ", ..." if len(skipped) > 12 else ""
            )
            self.notes.append(f"data.variables not given: using {', '.join(names)}; skipped {listed}")
        return names

    def _layout(self, ds, names: list[str], where: str, key: str) -> Layout:
        """The channels of variables `names`, which must share one horizontal grid."""
        present = [str(v) for v in ds.data_vars]
        grids, vertical, levels = {}, [], []
        for name in names:
            if name not in present:
                raise unknown_name(name, present, "variable", where, f"set {key} to variables of the dataset")
            dims = ds[name].dims
            if self.time_dim not in dims:
                raise DataError(
                    f"variable {name!r} of {where} has no {self.time_dim!r} dimension (dims {dims}); "
                    "set data.time_dim to the sample dimension"
                )
            z = axis_dim(ds, dims, "level")
            vertical.append(z)
            levels.append(int(ds.sizes[z]) if z else 1)
            grids[name] = horizontal(ds, name, self.time_dim)
            empty = [d for d, s in grids[name] if s == 0] + ([z] if z and levels[-1] == 0 else [])
            if empty:
                raise DataError(
                    f"variable {name!r} of {where} has an empty {empty[0]!r} dimension (size 0): "
                    "no grid point to learn from; check the file, or widen data.lat/data.lon/data.level"
                )
        if len(set(grids.values())) > 1:
            listed = "; ".join(f"{n} ({', '.join(f'{d}={s}' for d, s in g)})" for n, g in grids.items())
            raise DataError(
                f"the variables of {key} in {where} lie on different grids: {listed}; choose variables of one grid"
            )
        return Layout(names, vertical, levels, next(iter(grids.values())))

    def _align(self, ds, tds, paired: bool, lead: int):
        n_in = ds.sizes.get(self.time_dim, 0)
        steps = max(n_in, tds.sizes.get(self.time_dim, 0))
        # Index arrays and the scan's statistics take ~100 bytes a step: a header may declare 10^12.
        if steps * 100 > physical_memory() // 4:
            raise DataError(
                f"{self.where} declares {steps:,} time steps, more than this machine's memory can index; "
                "reduce the period (data.time=START:END) or split the file"
            )
        if not paired:
            idx = np.arange(max(0, n_in - lead))
            return idx, idx + lead
        n_out = tds.sizes.get(self.time_dim, 0)
        if self.time_dim in ds.indexes and self.time_dim in tds.indexes:
            _check_calendars(ds, tds, self.time_dim, self.opts.files)
            # Paired datasets are matched on their time coordinate, not on position.
            _, a, b = np.intersect1d(
                np.asarray(ds.indexes[self.time_dim]), np.asarray(tds.indexes[self.time_dim]), return_indices=True
            )
            if len(a) == 0:
                raise DataError(
                    f"{_where(self.opts.files.inputs)} and {_where(self.opts.files.targets)} share no {self.time_dim} "
                    "value; paired datasets must cover the same times"
                )
            order = np.argsort(a)
            a, b = a[order], b[order]
            keep = b + lead < n_out
            return a[keep], b[keep] + lead
        if n_in != n_out:
            raise DataError(
                f"{_where(self.opts.files.inputs)} has {n_in} time steps but {_where(self.opts.files.targets)} has "
                f"{n_out}, and no {self.time_dim} coordinate to match them; give both the same times"
            )
        idx = np.arange(max(0, n_in - lead))
        return idx, idx + lead

    def __len__(self) -> int:
        return len(self.x_times)

    def times(self):
        """The valid time of each sample's target, or None where the targets have no time coordinate."""
        index = time_index(self.dataset("targets"), self.time_dim)
        return None if index is None else index[self.y_times]

    def spec(self) -> DataSpec:
        """The DataSpec of these fields: names, units, the grid's coordinates, calendar, masks."""
        ds, tds = self.dataset("inputs"), self.dataset("targets")
        x_names, y_names = self.x_layout.channel_names(ds), self.y_layout.channel_names(tds)
        same_grid = self.base_shape[1:] == self.target_shape[1:]
        identity = [x_names.index(t) for t in y_names] if same_grid and all(t in x_names for t in y_names) else None
        units = [
            str(tds[n].attrs.get("units", ""))
            for n, k in zip(self.y_layout.names, self.y_layout.levels, strict=True)
            for _ in range(k)
        ]
        cal, time_units = calendar(tds, self.time_dim)
        dims = [d for d, _ in self.y_layout.grid]
        lat, lon = (axis_values(tds, axis_dim(tds, dims, w), w) for w in ("lat", "lon"))
        names = x_names + (["mask"] if self.extra_channels else [])
        spec = DataSpec(
            input_shape=self.input_shape,
            task="regression",
            target_shape=self.target_shape,
            lead=self.opts.lead,
            input_names=names,
            target_names=y_names,
            target_units=units,
            identity_channels=identity,
            calendar=cal,
            time_units=time_units,
            mask_channel=bool(self.extra_channels),
        )
        if len(dims) >= 2 and lat is not None and len(lat) == self.target_shape[-2]:
            spec.lat = [float(v) for v in lat]
        if len(dims) >= 1 and lon is not None and len(lon) == self.target_shape[-1]:
            spec.lon = [float(v) for v in lon]
        spec.mask, spec.input_mask = self.spec_masks
        return spec

    def set_mask_channel(self, field: np.ndarray) -> None:
        """Append `field` (1, *grid) to every input sample read from now on (data.mask_channel)."""
        self.mask_field = field.astype(np.float32)
        self.extra_channels = 1
        self.input_shape = (self.base_shape[0] + 1, *self.base_shape[1:])

    def fields(self, key: str, layout: Layout, times: np.ndarray) -> np.ndarray:
        """Variables of the inputs or targets dataset at time indices `times`, raw: (times, channels, *grid)."""
        ds = self.dataset(key)
        # A contiguous range of times is one slice: one read per variable and chunk.
        sel = slice(int(times[0]), int(times[-1]) + 1) if times[-1] - times[0] == len(times) - 1 else times
        grid = [d for d, _ in layout.grid]
        arrays = []
        for name, z, n in zip(layout.names, layout.vertical, layout.levels, strict=True):
            var = ds[name].isel({self.time_dim: sel}).transpose(self.time_dim, *([z] if z else []), *grid)
            # One thread per read: DataLoader workers are the parallelism, dask's pool would oversubscribe.
            values = np.asarray(var.compute(scheduler="synchronous").values)
            arrays.append(values.reshape(len(values), n, *values.shape[1 + (z is not None) :]))
        out = np.concatenate(arrays, axis=1)
        if self.fill_value is not None:
            out = np.where(np.isnan(out), self.fill_value, out)
        return out

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        x = self.fields("inputs", self.x_layout, self.x_times[start:stop])
        y = self.fields("targets", self.y_layout, self.y_times[start:stop])
        if self.mask_field is not None:
            x = np.concatenate(
                [x, np.broadcast_to(self.mask_field, (len(x), *self.mask_field.shape)).astype(x.dtype)], axis=1
            )
        return x, y

    def labels(self):
        return None

    def close(self) -> None:
        self.handles.close()


def _where(paths: tuple[str, ...]) -> str:
    return paths[0] if len(paths) == 1 else f"{paths[0]} (and {len(paths) - 1} more files)"


def _check_calendars(ds, tds, time_dim: str, files: Files) -> None:
    """Paired datasets must count time alike: a 360-day model year has no 31 March to match."""
    a, b = calendar(ds, time_dim)[0], calendar(tds, time_dim)[0]
    same = {"standard", "gregorian", "proleptic_gregorian"}
    if a != b and not ({a, b} <= same):
        raise DataError(
            f"{_where(files.inputs)} uses the {a} calendar and {_where(files.targets)} the {b} calendar, "
            f"so their times cannot be matched; convert one first, e.g. xarray's ds.convert_calendar({a!r}, "
            "align_on='year'), and save it"
        )


def masks(reader: GriddedReader, s, mask_channel: bool, paired: bool) -> list[str]:
    """Record the masks the scan found (spec.mask, spec.input_mask), append the mask channel where
    asked, refuse input and target files whose masks differ; the notes saying how many points."""
    x_missing, y_missing = s.missing, s.target_missing
    if paired and reader.base_shape[1:] == reader.target_shape[1:]:
        xp, yp = (m.reshape(len(m), -1).all(axis=0) for m in (x_missing, y_missing))
        if (xp != yp).any():
            first = int(np.flatnonzero(xp != yp)[0])
            raise DataError(
                f"the masks of {_where(reader.opts.files.inputs)} and {_where(reader.opts.files.targets)} differ: "
                f"{int((xp & ~yp).sum())} grid points are NaN at every time in the inputs only and "
                f"{int((yp & ~xp).sum())} in the targets only (the first at flat index {first}); "
                "mask both files alike (e.g. xarray's ds.where(obs.notnull())) or regrid them"
            )
    reader.spec_masks = (np.flatnonzero(y_missing).tolist() or None, np.flatnonzero(x_missing).tolist() or None)
    notes = []
    points = int(np.prod(reader.target_shape[1:]))
    rows = len(s.target_counts)
    gaps = int(y_missing.size * rows - s.target_counts.sum()) - int(y_missing.sum()) * rows
    # Per variable: land in an SST field is masked while t2m beside it is not.
    names = reader.y_layout.channel_names(reader.dataset("targets"))
    per = [
        f"{name} {int(m.sum())}"
        for name, m in zip(names, y_missing.reshape(len(y_missing), -1), strict=True)
        if m.any()
    ]
    if per or int(x_missing.sum()):
        named = ", ".join(per) if per else "none"
        notes.append(
            f"masks: grid points NaN at every time, of {points} per variable: {named} in the targets, "
            f"{int(x_missing.sum())} input values: out of the statistics, the loss and the metrics; "
            "inputs hold the channel mean there"
            + (" and data.mask_channel=true adds the mask as a channel" if mask_channel else "")
        )
    if gaps > 0:
        notes.append(
            f"{plural(gaps, 'target value')} missing at some times only (gaps): left out of the loss and the metrics"
        )
    if mask_channel:
        reader.set_mask_channel(x_missing.reshape(len(x_missing), -1).any(axis=0).reshape(1, *reader.base_shape[1:]))
    return notes
