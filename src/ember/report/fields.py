"""Maps of gridded fields in the report: one drawing function for every panel (a sample's target,
prediction and error; the mean bias and RMSE per grid point of the model and the baselines).

A panel is a PNG drawn north up (rows flipped where the latitude coordinate runs south to north,
as it does in most CF files), with latitude and longitude tick labels from the grid's own
coordinates, a colour bar in the variable's units, and masked points (NaN: land in an SST field,
contract C1) in a grey that no colour map here uses, named "no data" beside the bar.
"""

import base64
import html
import math

import numpy as np

from ember.files import png_bytes

VIRIDIS = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]
DIVERGING = [(33, 102, 172), (146, 197, 222), (247, 247, 247), (244, 165, 130), (178, 24, 43)]
NO_DATA = (150, 150, 150)  # darker than the diverging map's white middle, unlike any viridis colour


def colormap(v: np.ndarray, anchors: list[tuple]) -> np.ndarray:
    """Values in [0, 1] to RGB along `anchors`; NaN to the no-data grey."""
    nan = ~np.isfinite(v)
    v = np.clip(np.where(nan, 0.0, v), 0, 1)
    pos = np.linspace(0, 1, len(anchors))
    rgb = np.stack([np.interp(v, pos, [a[c] for a in anchors]) for c in range(3)], axis=-1)
    rgb[nan] = NO_DATA
    return rgb.round().astype(np.uint8)


def png_data_uri(img: np.ndarray) -> str:
    """A (H, W) grey or (H, W, 3) RGB uint8 array as a data: URI holding a PNG."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(img)).decode("ascii")


def _r(v: float) -> float:
    return float(f"{float(v):.5g}")


def grid_coords(spec, shape: tuple) -> tuple[list | None, list | None]:
    """The spec's latitudes and longitudes where they match the field's (H, W), else None."""
    lat, lon = getattr(spec, "lat", None), getattr(spec, "lon", None)
    lat = list(lat) if lat is not None and len(lat) == shape[-2] else None
    lon = list(lon) if lon is not None and len(lon) == shape[-1] else None
    return lat, lon


def north_up(a: np.ndarray, lat: list | None) -> tuple[np.ndarray, list | None]:
    """The field and its latitudes with the northernmost row first (an image's top row)."""
    if lat is not None and len(lat) > 1 and lat[0] < lat[-1]:
        return a[..., ::-1, :], lat[::-1]
    return a, lat


def nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """Ticks at 1, 2, 5 x 10^k (or 15, 30, 45, 60, 90 degrees for wide spans) within [lo, hi]."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    steps = [m * mag for m in (1, 2, 5, 10)] + ([15, 30, 45, 60, 90] if raw > 10 else [])
    step = min(s for s in steps if s >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _degrees(v: float, axis: str) -> str:
    if axis == "lon":
        v = (v + 180) % 360 - 180  # 0..360 grids read as east and west of Greenwich
    hemi = (
        ""
        if abs(v) < 1e-9 or (axis == "lon" and abs(abs(v) - 180) < 1e-9)
        else ("N" if v > 0 else "S")
        if axis == "lat"
        else ("E" if v > 0 else "W")
    )
    return f"{abs(v):g}°{hemi}"


def coord_ticks(values: list | None, axis: str, n: int = 4) -> list[list]:
    """[fraction along the image (pixel centres), label] for a monotonic coordinate as drawn."""
    if not values or len(values) < 2:
        return []
    c = np.asarray(values, dtype=float)
    idx = np.arange(len(c), dtype=float)
    if c[0] > c[-1]:
        c, idx = c[::-1], idx[::-1]
    if not np.all(np.diff(c) > 0):
        return []  # not monotonic: no honest axis
    out = []
    for t in nice_ticks(float(c[0]), float(c[-1]), n):
        frac = (float(np.interp(t, c, idx)) + 0.5) / len(values)
        out.append([round(frac, 4), _degrees(t, axis)])
    return sorted(out)  # in drawing order: top to bottom, left to right


def _aspect(lat: list | None, lon: list | None, shape: tuple) -> float:
    """Width over height of the drawn map: the grid's extent in degrees (an equirectangular map,
    so an 18 x 432 band of 7 x 0.83 degree cells is drawn 1:3, not 1:24), else one square per cell."""
    if lat and lon and len(lat) > 1 and len(lon) > 1:
        dlat, dlon = (
            abs(lat[-1] - lat[0]) * len(lat) / (len(lat) - 1),
            abs(lon[-1] - lon[0]) * len(lon) / (len(lon) - 1),
        )
        if dlat > 0 and dlon > 0:
            return round(min(max(dlon / dlat, 0.2), 30.0), 4)
    return round(shape[-1] / shape[-2], 4)


def field_panel(a: np.ndarray, spec, lo: float, hi: float, diverging: bool, units: str = "") -> dict:
    """One (H, W) field in physical units as a panel: the PNG north up on the colour scale
    [lo, hi], the axes' ticks, the colour bar. Every map of the report is drawn by this function."""
    a = np.asarray(a, dtype=np.float64)
    lat, lon = grid_coords(spec, a.shape)
    a, lat = north_up(a, lat)
    anchors = DIVERGING if diverging else VIRIDIS
    scaled = (a - lo) / (hi - lo) if hi > lo else np.full_like(a, 0.5)
    return {
        "png": png_data_uri(colormap(scaled, anchors)),
        "shape": list(a.shape),
        "aspect": _aspect(lat, lon, a.shape),
        "lat": coord_ticks(lat, "lat"),
        "lon": coord_ticks(lon, "lon"),
        "bar": {
            "lo": _r(lo),
            "hi": _r(hi),
            "colors": [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in anchors],
            "units": units,
        },
        "no_data": bool((~np.isfinite(a)).any()),
    }


def field_html(panel: dict, caption: str) -> str:
    """A panel as HTML: latitude ticks left, longitude ticks below, the colour bar under the map."""
    def e(v) -> str:
        return html.escape(str(v), quote=True)

    lat = "".join(f'<span style="top:{100 * f:.2f}%">{e(t)}</span>' for f, t in panel["lat"])
    lon = "".join(f'<span style="left:{100 * f:.2f}%">{e(t)}</span>' for f, t in panel["lon"])
    bar = panel["bar"]
    ramp = ", ".join(e(c) for c in bar["colors"])
    lo, mid, hi = (f"{v:.4g}" for v in (bar["lo"], (bar["lo"] + bar["hi"]) / 2, bar["hi"]))
    units = f" {e(bar['units'])}" if bar.get("units") else ""
    nodata = '<span class="nodata"><i></i>no data</span>' if panel.get("no_data") else ""
    aspect = float(panel["aspect"])
    return (
        f'<figure class="field"><div class="fmap"><div class="lat">{lat}</div>'
        f'<img class="px" alt="{e(caption)}" src="{e(panel["png"])}" style="aspect-ratio:{aspect:.4g}">'
        f'<div></div><div class="lon">{lon}</div></div>'
        f'<div class="cbar"><div class="ramp" style="background:linear-gradient(to right, {ramp})"></div>'
        f'<div class="cbl"><span>{lo}</span><span>{mid}</span><span>{hi}{units}</span></div>{nodata}</div>'
        f"<figcaption>{e(caption)}</figcaption></figure>"
    )
