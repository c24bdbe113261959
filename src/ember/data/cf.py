"""CF conventions for gridded files: which files, which variables, which axes, which times.

- Files: one NetCDF file or Zarr store, a glob, a comma-separated or Python list, or a folder of
  NetCDF files (one per year or per variable, as CMIP and ERA5 deliver them), opened as one
  dataset: `xarray.open_mfdataset` (dask, lazy) for several files. xarray decodes everything
  (scale_factor, add_offset, _FillValue to NaN, times in their calendar, cftime where numpy's
  datetimes cannot hold them), and nothing here reads around it.
- Subsets before any read: `data.time=START:END` (strings in the file's calendar, xarray's `sel`),
  `data.lat=S:N`, `data.lon=W:E` (on 1-D coordinates, in either order of the file's axis;
  longitudes in either convention, 0..360 or -180..180, a region across the file's seam joined),
  `data.level=[500,850]` on the vertical axis.
- Axes: latitude and longitude by name (lat/latitude/nav_lat/y, lon/longitude/nav_lon/x) or by
  their CF attributes (standard_name, axis, units); the vertical axis (level, plev, lev, depth,
  ...) likewise, its levels becoming channels.
- Default variables: those on the time dimension and the grid; bounds (time_bnds, lat_bnds: named
  by a `bounds` attribute or on a bnds/nv dimension) and auxiliary variables are skipped.
"""

import glob
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ember.errors import ConfigError, DataError

AXES = {
    "lat": {
        "names": ("lat", "latitude", "nav_lat", "y", "rlat"),
        "standard_names": ("latitude", "grid_latitude"),
        "axis": "Y",
        "units": ("degrees_north", "degree_north", "degree_N", "degrees_N"),
    },
    "lon": {
        "names": ("lon", "longitude", "nav_lon", "x", "rlon"),
        "standard_names": ("longitude", "grid_longitude"),
        "axis": "X",
        "units": ("degrees_east", "degree_east", "degree_E", "degrees_E"),
    },
    "level": {
        "names": (
            "level",
            "lev",
            "plev",
            "depth",
            "isobaricinhpa",
            "pressure",
            "pressure_level",
            "height",
            "deptht",
            "olevel",
        ),
        "standard_names": ("air_pressure", "depth", "height", "model_level_number", "altitude"),
        "axis": "Z",
        "units": (),
    },
}
BOUNDS_DIMS = ("bnds", "nv", "bounds", "nbnd", "nb2", "vertices", "nvertex")
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf", ".h5", ".hdf5")


@dataclass(frozen=True)
class Subset:
    """What to select from a dataset right after opening it: times, a region, vertical levels."""

    time_dim: str = "time"
    time: str | None = None
    lat: str | None = None
    lon: str | None = None
    level: tuple[float, ...] = ()
    strict_level: bool = True  # False: a dataset without a vertical axis is left as it is


def expand(value, key: str) -> tuple[str, ...]:
    """The files of `data.path`-like values: a file, a Zarr store, a folder of NetCDF files, a
    glob, a comma-separated string or a list of any of these; sorted within a glob or folder."""
    if value is None or value == "" or (isinstance(value, (list, tuple)) and not value):
        raise ConfigError(
            f"data=gridded needs {key}=...: a NetCDF file, a Zarr store, "
            "a folder of NetCDF files or a glob like 'era5/*.nc'"
        )
    parts = (
        [str(v) for v in value]
        if isinstance(value, (list, tuple))
        else [p.strip() for p in str(value).split(",") if p.strip()]
    )
    found: list[str] = []
    for part in parts:
        part = os.path.expanduser(part)
        if glob.has_magic(part):
            matches = sorted(glob.glob(part))
            if not matches:
                raise DataError(
                    f"{key}={part!r} matches no file (looked in {Path(part).absolute().parent}); "
                    f"{key} must name NetCDF files or Zarr stores"
                )
            found += matches
        elif not Path(part).exists():
            raise DataError(
                f"{key}={part!r} does not exist (looked in {Path(part).absolute().parent}); "
                f"{key} must be a NetCDF file, a Zarr store, a folder of NetCDF files or a glob"
            )
        elif Path(part).is_dir() and not is_zarr(Path(part)):
            inside = sorted(str(f) for f in Path(part).iterdir() if f.suffix.lower() in NETCDF_SUFFIXES)
            if not inside:
                raise DataError(
                    f"{key}={part!r} is a folder with no NetCDF file (.nc) in it and not a Zarr store; "
                    f"point {key} at the files"
                )
            found += inside
        else:
            found.append(part)
    return tuple(found)


def is_zarr(p: Path) -> bool:
    return p.suffix == ".zarr" or any((p / name).exists() for name in ("zarr.json", ".zgroup", ".zarray", ".zmetadata"))


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def netcdf_engine(paths) -> str | None:
    """h5netcdf where every file is NetCDF-4 (HDF5) and it is installed, else xarray's own choice.
    netCDF4's library keeps a chunk cache of up to 64 MiB per variable of every open file, so a
    pass over 11 yearly files of two variables held 1.4 GB; h5netcdf's HDF5 cache is 1 MiB."""
    import importlib.util

    return "h5netcdf" if all(_is_hdf5(p) for p in paths) and importlib.util.find_spec("h5netcdf") else None


def _is_hdf5(path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == HDF5_SIGNATURE
    except OSError:
        return False


def open_fields(paths: tuple[str, ...], subset: Subset):
    """The files as one lazily read dataset, subset in time, region and level."""
    ds = _open_any(paths)
    return select(ds, subset, paths[0] if len(paths) == 1 else f"{paths[0]} (and {len(paths) - 1} more files)")


def _open_any(paths: tuple[str, ...]):
    import xarray as xr

    # decode_coords="all": bounds and grid-mapping variables become coordinates, as CF means them.
    try:
        with warnings.catch_warnings():
            # A store without consolidated metadata opens fine, just with more small reads.
            warnings.filterwarnings("ignore", message=".*consolidated metadata", category=RuntimeWarning)
            if len(paths) == 1 and is_zarr(Path(paths[0])):
                _quiet_zarr_orphans()
                return xr.open_dataset(paths[0], engine="zarr", cache=False, chunks=None, decode_coords="all")
            if len(paths) == 1:
                # cache=False: a slice read for one batch must not stay in memory afterwards.
                return xr.open_dataset(paths[0], engine=netcdf_engine(paths), cache=False, decode_coords="all")
            # Minimal concatenation: only variables on the joining dimension are concatenated, the
            # others (a land mask, bounds of lat) are taken from the first file.
            return xr.open_mfdataset(
                list(paths),
                engine=netcdf_engine(paths),
                combine="by_coords",
                data_vars="minimal",
                coords="minimal",
                compat="override",
                join="outer",
                decode_coords="all",
                chunks={},
                parallel=False,
            )
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated files, unknown formats, missing engines, files that do not combine
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        what = paths[0] if len(paths) == 1 else f"the {len(paths)} files of {paths[0]}, ..."
        fix = (
            "the file may be truncated or not NetCDF/Zarr"
            if len(paths) == 1
            else (
                "the files must be pieces of one dataset (the same variables and grid, one piece per period, "
                "or one variable per file)"
            )
        )
        raise DataError(f"cannot open {what} with xarray ({first}); {fix}") from None


class _ZarrOrphans(logging.Filter):
    """zarr reads a store's arrays in concurrent tasks; when they fail alike (an unknown codec),
    the first error reaches ember, which says it on one line, and asyncio logs each other task at
    exit with its traceback ("Task exception was never retrieved", or "Task was destroyed but it
    is pending!" for those still waiting). Those records of zarr's tasks are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "never retrieved" not in message and "destroyed but it is pending" not in message:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        return not ((exc is not None and type(exc).__module__.startswith("zarr")) or "zarr" in message)


def _quiet_zarr_orphans() -> None:
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _ZarrOrphans) for f in logger.filters):
        logger.addFilter(_ZarrOrphans())


def axis_dim(ds, dims, which: str) -> str | None:
    """The dimension among `dims` that is the latitude, longitude or vertical axis, or None."""
    spec = AXES[which]
    for d in dims:
        if str(d).lower() in spec["names"]:
            return d
    for name in list(ds.coords) + list(dims):
        c = ds[name] if name in ds.variables else None
        if c is None or not _is_axis(c, spec) or not c.dims:
            continue
        if c.ndim == 1 and c.dims[0] in dims:
            return c.dims[0]
        if c.ndim == 2 and which in ("lat", "lon") and all(d in dims for d in c.dims):
            # A curvilinear grid (nav_lat(y, x)): rows run along y, columns along x.
            return c.dims[0] if which == "lat" else c.dims[1]
    return None


def _is_axis(c, spec: dict) -> bool:
    a = c.attrs
    return (
        str(a.get("standard_name", "")) in spec["standard_names"]
        or str(a.get("axis", "")).upper() == spec["axis"]
        or str(a.get("units", "")) in spec["units"]
        or str(c.name).lower() in spec["names"]
        or (spec["axis"] == "Z" and "positive" in a)
    )


def axis_values(ds, dim: str | None, which: str) -> np.ndarray | None:
    """1-D coordinate values of a latitude or longitude axis: the dimension's own coordinate, or
    the rows (columns) of a 2-D one whose every row (column) holds one value; else None."""
    if dim is None:
        return None
    if dim in ds.coords and ds[dim].ndim == 1 and np.issubdtype(ds[dim].dtype, np.number):
        return np.asarray(ds[dim].values, dtype=float)
    for name in ds.coords:
        c = ds[name]
        if c.ndim == 2 and dim in c.dims and _is_axis(c, AXES[which]):
            v = np.asarray(c.transpose(dim, ...).values, dtype=float)
            if np.allclose(v, v[:, :1]):
                return v[:, 0]
    return None


def default_variables(ds, time_dim: str, exclude: list[str]) -> tuple[list[str], dict[str, str]]:
    """CF data variables: on the time dimension and a latitude/longitude grid, not bounds, not
    auxiliary; of several grids the one most variables share. Returns (names, {skipped: why})."""
    bounds = {str(ds[v].attrs["bounds"]) for v in ds.variables if "bounds" in ds[v].attrs}
    auxiliary = {c for v in ds.variables for c in str(ds[v].attrs.get("coordinates", "")).split()}
    chosen, skipped = [], {}
    for name in map(str, ds.data_vars):
        dims = ds[name].dims
        if name in exclude:
            continue
        if name in bounds or any(str(d).lower() in BOUNDS_DIMS for d in dims):
            skipped[name] = "bounds"
        elif name in auxiliary:
            skipped[name] = "auxiliary"
        elif time_dim not in dims:
            skipped[name] = f"no {time_dim}"
        elif not np.issubdtype(ds[name].dtype, np.number) or len(dims) < 2:
            skipped[name] = "not a field"
        else:
            chosen.append(name)
    grids = {n: horizontal(ds, n, time_dim) for n in chosen}
    if len(set(grids.values())) > 1:
        counts: dict = {}
        for g in grids.values():
            counts[g] = counts.get(g, 0) + 1
        best = max(counts, key=lambda g: (counts[g], sum(s for _, s in g)))
        for n, g in grids.items():
            if g != best:
                skipped[n] = "another grid"
        chosen = [n for n in chosen if grids[n] == best]
    return chosen, skipped


def horizontal(ds, name: str, time_dim: str) -> tuple[tuple[str, int], ...]:
    """The (dimension, size) pairs of a variable's grid: its dimensions but time and the vertical."""
    dims = ds[name].dims
    z = axis_dim(ds, dims, "level")
    return tuple((str(d), int(ds.sizes[d])) for d in dims if d not in (time_dim, z))


def time_index(ds, time_dim: str):
    """The time coordinate as a pandas.DatetimeIndex or xarray.CFTimeIndex, or None."""
    if time_dim not in ds.indexes:
        return None
    import pandas as pd
    import xarray as xr

    index = ds.indexes[time_dim]
    return index if isinstance(index, (pd.DatetimeIndex, xr.CFTimeIndex)) else None


def calendar(ds, time_dim: str) -> tuple[str | None, str | None]:
    """(calendar, units) of the time coordinate, as the file declares them (CF's default: standard)."""
    if time_dim not in ds.variables:
        return None, None
    enc = ds[time_dim].encoding
    index = time_index(ds, time_dim)
    cal = enc.get("calendar") or getattr(index, "calendar", None) or ("standard" if index is not None else None)
    return (str(cal) if cal else None), (str(enc["units"]) if "units" in enc else None)


def select(ds, subset: Subset, where: str):
    """The dataset's times, region and levels named by `subset`, as a lazy view."""
    if subset.time:
        ds = _select_time(ds, subset, where)
    for which in ("lat", "lon"):
        text = getattr(subset, which)
        if text:
            ds = _select_range(ds, which, text, where)
    if subset.level:
        ds = _select_levels(ds, subset.level, where, subset.strict_level)
    return ds


def parse_range(text: str, key: str) -> tuple[str, str]:
    start, sep, end = str(text).partition(":")
    if not sep or not start.strip() or not end.strip():
        raise ConfigError(
            f"{key}={text!r} is not a range START:END; write e.g. "
            f"{key}={'1979-01-01:2018-12-31' if key == 'data.time' else '-30:30'}"
        )
    return start.strip(), end.strip()


def _select_time(ds, subset: Subset, where: str):
    start, end = parse_range(subset.time, "data.time")
    if subset.time_dim not in ds.indexes:
        raise DataError(
            f"data.time={subset.time} needs a {subset.time_dim!r} coordinate, and {where} has none; "
            "leave data.time out or set data.time_dim"
        )
    index = ds.indexes[subset.time_dim]
    try:
        out = ds.sel({subset.time_dim: slice(start, end)})
    except (KeyError, ValueError, TypeError) as e:
        raise DataError(
            f"data.time={subset.time}: {e}; write dates as YYYY-MM-DD in the file's calendar "
            f"({calendar(ds, subset.time_dim)[0]})"
        ) from None
    if out.sizes[subset.time_dim] == 0:
        period = f"{_date(index[0])} to {_date(index[-1])}" if len(index) else "no time step"
        raise DataError(f"data.time={subset.time} is outside {where}, which covers {period}; choose a period within it")
    return out


def _date(t) -> str:
    return t.isoformat()[:10] if hasattr(t, "isoformat") else str(t)[:10]


def _select_range(ds, which: str, text: str, where: str):
    key = f"data.{which}"
    lo, hi = (_number(v, key, text) for v in parse_range(text, key))
    dims = {d for v in ds.data_vars for d in ds[v].dims}
    dim = axis_dim(ds, sorted(dims, key=str), which)
    if dim is None or dim not in ds.indexes:
        raise DataError(f"{key}={text} needs a 1-D {which} coordinate, and {where} has none; leave {key} out")
    values = np.asarray(ds.indexes[dim], dtype=float)
    lo, hi = min(lo, hi), max(lo, hi)
    # xarray's slice follows the axis's order: a latitude running north to south needs (hi, lo).
    descending = len(values) > 1 and values[0] > values[-1]
    if which == "lon" and not descending:
        out = _select_lon(ds, dim, values, lo, hi)
    else:
        out = ds.sel({dim: slice(hi, lo) if descending else slice(lo, hi)})
    if out.sizes[dim] == 0:
        raise DataError(
            f"{key}={text} holds no point of {where}, whose {dim} runs from {values.min():g} to {values.max():g}; "
            "choose a range within it"
        )
    return out


def _select_lon(ds, dim: str, values: np.ndarray, lo: float, hi: float):
    """Longitudes lo..hi in either convention, on a file in the other (data.lon=-10:30 on ERA5's
    0..360, or 170:190 on a -180..180 grid): the bounds are taken into the file's convention and a
    range that crosses its seam is read as two pieces, joined with continuous longitudes (350 as
    -10) so that the region is one increasing grid."""
    import xarray as xr

    east = values.size and values.max() > 180  # 0..360; else -180..180
    lo, hi = ((v + 360 if v < 0 else v) if east else (v - 360 if v > 180 else v) for v in (lo, hi))
    if lo <= hi:
        return ds.sel({dim: slice(lo, hi)})
    west, rest = ds.sel({dim: slice(lo, None)}), ds.sel({dim: slice(None, hi)})
    if east:
        west = west.assign_coords({dim: west[dim] - 360})
    else:
        rest = rest.assign_coords({dim: rest[dim] + 360})
    return xr.concat([west, rest], dim=dim, data_vars="minimal", coords="minimal", compat="override")


def _number(v: str, key: str, text: str) -> float:
    try:
        return float(v)
    except ValueError:
        raise ConfigError(f"{key}={text!r} must be two numbers START:END in degrees, e.g. {key}=-30:30") from None


def _select_levels(ds, levels: tuple[float, ...], where: str, strict: bool):
    dims = {d for v in ds.data_vars for d in ds[v].dims}
    dim = axis_dim(ds, sorted(dims, key=str), "level")
    if dim is None and not strict:
        return ds
    if dim is None:
        raise DataError(
            f"data.level={list(levels)} needs a vertical dimension (level, plev, lev, depth, ...), "
            f"and {where} has none; leave data.level out"
        )
    if dim not in ds.indexes:
        return ds.isel({dim: [int(v) for v in levels]})
    have = np.asarray(ds.indexes[dim], dtype=float)
    missing = [v for v in levels if not np.isclose(have, float(v)).any()]
    if missing:
        listed = ", ".join(f"{v:g}" for v in have[:30])
        raise DataError(f"data.level has {missing[0]:g}, which is no {dim} of {where}; choose among: {listed}")
    return ds.isel({dim: [int(np.flatnonzero(np.isclose(have, float(v)))[0]) for v in levels]})
