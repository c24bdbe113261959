"""Losses by name: the relative L2 and H1 losses of neural operators, in physical units."""

import io
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from ember.api import train
from ember.config import compose
from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.models import create_model
from ember.track.console import Console
from ember.train.losses import RelativeH1Loss, RelativeL2Loss, build_loss, resolve_loss


def field_spec(mean=0.0, std=1.0, **extra) -> DataSpec:
    return DataSpec(
        input_shape=(1, 32), task="regression", target_shape=(1, 32), target_mean=[mean], target_std=[std], **extra
    )


def test_rel_l2_is_the_mean_relative_error_of_the_physical_values():
    pred_phys, true_phys = torch.randn(4, 1, 32), torch.randn(4, 1, 32) + 3.0
    expected = ((pred_phys - true_phys).flatten(1).norm(dim=1) / true_phys.flatten(1).norm(dim=1)).mean()
    # The same physical values under two standardizations give the same loss: it is taken after
    # multiplying back, not on the standardized numbers (whose norms would differ).
    for mean, std in [(0.0, 1.0), (3.0, 0.5)]:
        loss = RelativeL2Loss(field_spec(mean, std))
        assert torch.allclose(loss((pred_phys - mean) / std, (true_phys - mean) / std), expected, rtol=1e-5)
    plain = RelativeL2Loss(field_spec(0.0, 1.0))((true_phys - 3.0) / 0.5, (true_phys - 3.0) / 0.5)
    assert plain == 0


def test_auto_picks_rel_l2_for_operators_on_fields_and_mse_otherwise():
    spec = field_spec(identity_channels=[0])
    assert resolve_loss("auto", spec, create_model("fno", spec, width=8, modes=4, depth=1)) == "rel_l2"
    # Inside the residual wrapper too (identity_channels makes model.residual=auto wrap it).
    assert resolve_loss("auto", spec, create_model("fno", spec, width=8, modes=4, depth=1, residual="true")) == "rel_l2"
    assert resolve_loss("auto", spec, create_model("mlp", spec)) == "mse"
    # Several variables (kelvin and mm/day would share one norm): MSE on the standardized ones.
    two = DataSpec(input_shape=(2, 32), task="regression", target_shape=(2, 32))
    assert resolve_loss("auto", two, create_model("fno", two, width=8, modes=4, depth=1)) == "mse"
    assert resolve_loss("mse", spec, create_model("fno", spec, width=8, modes=4, depth=1)) == "mse"


def test_rel_l2_on_classification_or_a_scalar_is_a_config_error():
    classes = DataSpec(input_shape=(4,), task="classification", num_classes=3)
    with pytest.raises(
        ConfigError, match="trainer.loss=rel_l2 needs a field or vector regression target, not classification"
    ):
        build_loss("rel_l2", classes, nn.Linear(4, 3))
    with pytest.raises(ConfigError, match="not a scalar target"):
        build_loss("rel_l2", DataSpec(input_shape=(4,), task="regression"), nn.Linear(4, 1))


def small_fno_run(root) -> list[str]:
    """A small FNO on Burgers, quiet, in `root`: what the loss tests train."""
    fno = ["model=fno", "model.width=8", "model.modes=4", "model.depth=1"]
    burgers = ["data=burgers", "data.num_samples=40", "data.resolution=32"]
    return [*fno, *burgers, "trainer.progress=none", "trainer.tensorboard=false", f"run.root={root}"]


def test_an_fno_run_says_it_trains_on_rel_l2_and_reports_relative_l2(tmp_path):
    out = io.StringIO()
    cfg = compose([*small_fno_run(tmp_path), "trainer.max_epochs=2"])
    result = train(cfg, console=Console("none", stream=out))
    assert "trains this neural operator on the relative L2 error (rel_l2)" in out.getvalue()
    assert "relative_l2" in out.getvalue()  # in the final table
    summary = json.loads((result.run_dir / "summary.json").read_text())
    # The run and its climatology baseline both report it.
    assert result.metrics["test/relative_l2"] > 0 and summary["baselines"]["climatology"]["test/relative_l2"] > 0
    # The loss is the metric: the last validation's loss equals its relative_l2.
    assert result.metrics["val/loss"] == pytest.approx(result.metrics["val/relative_l2"], rel=1e-3)


def test_h1_of_sines_matches_the_analytic_sobolev_norms():
    # On [0, 1): the target sin(2 pi x) and the prediction sin(2 pi x) + 0.1 sin(6 pi x). The
    # error's H1 norm squared is 0.01 (1 + (6 pi)^2) / 2, the target's (1 + (2 pi)^2) / 2 (the
    # grid's sums are n times these integrals; the ratio cancels n).
    n = 256
    x = torch.arange(n) / n
    true = torch.sin(2 * math.pi * x).reshape(1, 1, n)
    pred = true + 0.1 * torch.sin(6 * math.pi * x).reshape(1, 1, n)
    expected = math.sqrt(0.01 * (1 + (6 * math.pi) ** 2) / (1 + (2 * math.pi) ** 2))
    # One-sided differences at the two ends cost a little accuracy on a periodic field.
    assert RelativeH1Loss(field_spec())(pred, true).item() == pytest.approx(expected, rel=2e-2)
    # Larger than the relative L2 error (0.1): the derivatives weigh the high mode's error 3 times more.
    assert expected > 2.5 * RelativeL2Loss(field_spec())(pred, true).item()


def test_h1_in_2d_takes_both_axes_and_physical_units():
    spec = DataSpec(
        input_shape=(1, 16, 24), task="regression", target_shape=(1, 16, 24), target_mean=[2.0], target_std=[0.5]
    )
    y, x = torch.meshgrid(torch.arange(16) / 16, torch.arange(24) / 24, indexing="ij")
    true = (2.0 + x + 3 * y).reshape(1, 1, 16, 24)  # gradient (3, 1): exact for differences
    pred = true + 0.5 * y.reshape(1, 1, 16, 24)  # error 0.5 y, gradient (0.5, 0)
    expected = math.sqrt((0.25 * y.square().sum() + 0.25 * 16 * 24) / (true.square().sum() + 10 * 16 * 24))
    loss = RelativeH1Loss(spec)((pred - 2.0) / 0.5, (true - 2.0) / 0.5)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_h1_on_classification_or_a_vector_target_is_a_config_error():
    classes = DataSpec(input_shape=(4,), task="classification", num_classes=3)
    with pytest.raises(
        ConfigError, match="trainer.loss=h1 needs a field target .* not classification; use trainer.loss=auto"
    ):
        build_loss("h1", classes, nn.Linear(4, 3))
    with pytest.raises(ConfigError, match=r"not a target of shape \(3,\); use trainer.loss=rel_l2 or mse"):
        build_loss("h1", DataSpec(input_shape=(4,), task="regression", target_shape=(3,)), nn.Linear(4, 3))


def test_an_fno_trains_on_h1_from_the_command_line(tmp_path):
    cfg = compose([*small_fno_run(tmp_path), "trainer.max_epochs=1", "trainer.loss=h1"])
    result = train(cfg, console=Console("none", stream=io.StringIO()))
    # The loss is the H1 error, not the L2 one the metrics report beside it.
    assert math.isfinite(result.metrics["val/loss"]) and result.metrics["val/loss"] != pytest.approx(
        result.metrics["val/relative_l2"], rel=1e-2
    )


def masked_field(seed=0):
    """A batch of 2-channel fields with land (NaN at fixed points) and a gap, and predictions."""
    g = torch.Generator().manual_seed(seed)
    true, pred = torch.randn(4, 2, 6, 8, generator=g) + 2.0, torch.randn(4, 2, 6, 8, generator=g) + 2.0
    true[:, :, 0, :3] = float("nan")
    true[1, 0, 4, 4] = float("nan")
    return pred, true


@pytest.mark.parametrize("name", ["mse", "l1", "huber"])
def test_elementwise_losses_leave_missing_targets_out_as_numpy_does(name):
    pred, true = masked_field()
    p, t = pred.numpy().astype(np.float64), true.numpy().astype(np.float64)
    valid = np.isfinite(t)
    d = (p - t)[valid]
    expected = {
        "mse": np.mean(d**2),
        "l1": np.mean(np.abs(d)),
        "huber": np.mean(np.where(np.abs(d) < 1, 0.5 * d**2, np.abs(d) - 0.5)),
    }[name]
    loss = build_loss(name, DataSpec(input_shape=(2, 6, 8), task="regression", target_shape=(2, 6, 8)), nn.Identity())
    value = loss(pred.requires_grad_(), true)
    assert math.isfinite(value.item()) and value.item() == pytest.approx(expected, rel=1e-5)
    value.backward()
    assert torch.isfinite(pred.grad).all() and (pred.grad[:, :, 0, :3] == 0).all()  # no gradient from land
    # Where every target is finite it is torch's own loss.
    full = true.nan_to_num(0.5)
    torch_loss = {"mse": nn.functional.mse_loss, "l1": nn.functional.l1_loss, "huber": nn.functional.huber_loss}[name]
    assert loss(pred.detach(), full).item() == pytest.approx(torch_loss(pred.detach(), full).item(), rel=1e-6)


def test_rel_l2_and_h1_leave_missing_targets_out():
    pred, true = masked_field(1)
    spec = DataSpec(
        input_shape=(2, 6, 8), task="regression", target_shape=(2, 6, 8), target_mean=[1.0, -1.0], target_std=[2.0, 0.5]
    )
    mean, std = np.array([1.0, -1.0]).reshape(1, 2, 1, 1), np.array([2.0, 0.5]).reshape(1, 2, 1, 1)
    p, t = pred.numpy() * std + mean, true.numpy() * std + mean
    valid = np.isfinite(t)
    err = np.where(valid, p - t, 0).reshape(4, -1)
    norm = np.where(valid, t, 0).reshape(4, -1)
    expected = np.mean(np.linalg.norm(err, axis=1) / np.linalg.norm(norm, axis=1))
    assert RelativeL2Loss(spec)(pred, true).item() == pytest.approx(expected, rel=1e-5)
    # H1: finite, and blind to whatever the prediction holds on land.
    h1 = RelativeH1Loss(spec)
    other = pred.clone()
    other[:, :, 0, :3] = 100.0
    assert math.isfinite(h1(pred, true).item()) and h1(other, true).item() == pytest.approx(
        h1(pred, true).item(), rel=1e-6
    )
