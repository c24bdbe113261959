"""Field panels (report/fields.py): north up whatever the latitude order, latitude and longitude
ticks from the grid's coordinates, a colour bar in units, masked points as no data; the sample
maps and the per-grid-point error maps drawn by the same function."""

import base64
import io

import numpy as np
import pytest
from report_browser import CHROMIUM, png_size, render

from ember.report import evaluate, fields
from ember.report.evaluation_panels import evaluation_section
from ember.report.markup import Page

H, W = 6, 12


class Spec:
    """What the report reads of a DataSpec for gridded targets."""

    task = "regression"

    def __init__(self, lat, lon, units=("K",), names=("t2m",)):
        self.lat, self.lon = lat, lon
        self.target_units, self.names = list(units), list(names)
        self.target_shape = (len(names), len(lat), len(lon))

    def target_name(self, c):
        return self.names[c]


def pixels(uri: str) -> np.ndarray:
    Image = pytest.importorskip("PIL.Image")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))


def latitude_field(lat) -> np.ndarray:
    """Warmest in the north: each row's value is its latitude."""
    return np.repeat(np.asarray(lat, dtype=float)[:, None], W, axis=1)


LON = list(np.linspace(0, 330, W))


@pytest.mark.parametrize(
    "lat", [list(np.linspace(-50, 50, H)), list(np.linspace(50, -50, H))], ids=["south-first", "north-first"]
)
def test_panels_are_north_up_with_ticks_and_a_colour_bar(lat):
    spec = Spec(lat, LON)
    panel = fields.field_panel(latitude_field(lat), spec, -50, 50, False, "K")
    img = pixels(panel["png"])
    assert img.shape == (H, W, 3)
    assert tuple(img[0, 0]) == fields.VIRIDIS[-1] and tuple(img[-1, 0]) == fields.VIRIDIS[0]  # north (high) at the top
    labels = [t for _, t in panel["lat"]]
    assert labels == ["30°N", "0°", "30°S"]  # top to bottom
    fracs = [f for f, _ in panel["lat"]]
    assert fracs == sorted(fracs) and 0 < fracs[0] < fracs[-1] < 1
    assert [t for _, t in panel["lon"]] == ["0°", "90°E", "180°", "90°W"]
    assert panel["bar"]["units"] == "K" and (panel["bar"]["lo"], panel["bar"]["hi"]) == (-50, 50)
    assert panel["no_data"] is False


def test_masked_points_are_no_data_not_a_value():
    lat = list(np.linspace(-50, 50, H))
    a = latitude_field(lat)
    a[0, :3] = np.nan  # land in the southernmost row: the image's bottom row after the flip
    panel = fields.field_panel(a, Spec(lat, LON), -50, 50, True)
    img = pixels(panel["png"])
    assert all(tuple(p) == fields.NO_DATA for p in img[-1, :3]) and tuple(img[-1, 3]) != fields.NO_DATA
    assert panel["no_data"] is True
    assert "no data" in fields.field_html(panel, "bias")


def test_sample_maps_and_error_maps_share_the_orientation_and_skip_masked_points():
    lat = list(np.linspace(-50, 50, H))  # south first, as in most CF files
    spec = Spec(lat, LON)
    y = np.stack([latitude_field(lat)[None] + k for k in range(4)]).astype(np.float32)  # (4, 1, H, W)
    y[:, :, 0, :2] = np.nan
    out = y + 0.5
    result = evaluate.regression({"output": out, "target": y, "truncated": False}, spec)
    sample = result["maps"][0]
    img = pixels(sample["true"]["png"]).astype(int).sum(-1)
    assert img[0, 5] > img[1, 5] > img[-2, 5]  # warmest row on top: north up, like the error maps
    assert sample["true"]["lat"] == fields.field_panel(y[0, 0], spec, -50, 53, False)["lat"]
    assert sample["true"]["no_data"] and sample["true"]["bar"]["units"] == "K"
    grid = evaluate.GridErrors()
    import torch

    grid.add("model", torch.from_numpy(out), torch.from_numpy(y))
    maps = evaluate.error_maps(grid.maps(), spec)
    model = maps[0]["predictors"][0]
    # masked points left out
    assert model["mean_bias"] == pytest.approx(0.5) and model["mean_rmse"] == pytest.approx(0.5)
    bias = pixels(model["bias"]["png"])
    assert tuple(bias[-1, 0]) == fields.NO_DATA and tuple(bias[0, 0]) != fields.NO_DATA


def test_a_gridded_report_renders_north_up_with_axes(tmp_path, screenshots):
    lat = list(np.linspace(-42.5, 42.5, 18))
    lon = list(np.linspace(0, 359.17, 432))
    spec = Spec(lat, lon)
    la, lo = np.meshgrid(np.asarray(lat), np.deg2rad(lon), indexing="ij")
    y = (300 - 0.3 * np.abs(la) + 3 * np.sin(3 * lo) + 2 * (la > 20))[None, None].repeat(3, 0).astype(np.float32)
    y[:, :, 2:6, 100:160] = np.nan  # a continent
    grid = evaluate.GridErrors()
    import torch

    pred = torch.from_numpy(y) + 0.2 * torch.sin(torch.arange(432.0) / 20)
    grid.add("model", pred, torch.from_numpy(y))
    ev = evaluate.regression({"output": pred.numpy(), "target": y, "truncated": False, "grid": grid.maps()}, spec)
    p = Page("fields")
    html = p.render("<header></header>", [("evaluation", "Evaluation", evaluation_section(p, {**ev, "split": "test"}))])
    assert "30°N" in html and "30°S" in html and "90°E" in html and "no data" in html and "K</span>" in html
    if not CHROMIUM:
        return
    path = tmp_path / "fields.html"
    path.write_text(html)
    shown = render(path, 1100, 900, screenshot=screenshots / "fields.png")
    assert shown.errors == 0 and shown.width == 1100, shown
    assert png_size(shown.screenshot)[0] == 1100
    phone = render(path, 390, 800)
    assert phone.errors == 0 and phone.body.get("overflow") == "0", phone.body  # the panels fit a phone


def test_a_split_of_large_fields_keeps_few_outputs_but_maps_every_sample(monkeypatch):
    import torch

    from ember.data.loaders import TensorData
    from ember.data.spec import DataSpec

    n, shape = 10, (1, 4, 5)
    spec = DataSpec(
        input_shape=shape,
        task="regression",
        target_shape=shape,
        lat=[-30.0, -10.0, 10.0, 30.0],
        lon=[0.0, 72.0, 144.0, 216.0, 288.0],
    )
    y = torch.arange(float(n)).reshape(n, 1, 1, 1).expand(n, *shape).contiguous()  # sample i is i everywhere
    monkeypatch.setattr(evaluate, "KEPT_VALUES", 3 * 20)  # three samples' values
    monkeypatch.setattr(evaluate, "BATCH_VALUES", 4 * 20)  # batches of four
    ev = evaluate.evaluate(torch.nn.Identity(), TensorData(torch.zeros(n, *shape), y), spec)
    assert ev["output"].shape == (3, *shape) and ev["target"][:, 0, 0, 0].tolist() == [0, 1, 2] and ev["truncated"]
    bias = ev["grid"]["model"]["bias"]  # over all ten samples: 0 - mean(0..9)
    assert bias.shape == shape and np.allclose(bias, -4.5)
