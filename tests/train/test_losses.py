"""Losses by name: the relative L2 loss of neural operators, in physical units."""

import io
import json

import pytest
import torch
from torch import nn

from ember.api import train
from ember.config import compose
from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.models import create_model
from ember.track.console import Console
from ember.train.losses import RelativeL2Loss, build_loss, resolve_loss


def field_spec(mean=0.0, std=1.0, **extra) -> DataSpec:
    return DataSpec(input_shape=(1, 32), task="regression", target_shape=(1, 32), target_mean=[mean], target_std=[std], **extra)


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
    with pytest.raises(ConfigError, match="trainer.loss=rel_l2 needs a field or vector regression target, not classification"):
        build_loss("rel_l2", classes, nn.Linear(4, 3))
    with pytest.raises(ConfigError, match="not a scalar target"):
        build_loss("rel_l2", DataSpec(input_shape=(4,), task="regression"), nn.Linear(4, 1))


def test_an_fno_run_says_it_trains_on_rel_l2_and_reports_relative_l2(tmp_path):
    out = io.StringIO()
    overrides = ["model=fno", "model.width=8", "model.modes=4", "model.depth=1", "data=burgers", "data.num_samples=40", "data.resolution=32", "trainer.max_epochs=2"]
    cfg = compose([*overrides, "trainer.progress=none", "trainer.tensorboard=false", f"run.root={tmp_path}"])
    result = train(cfg, console=Console("none", stream=out))
    assert "trains this neural operator on the relative L2 error (rel_l2)" in out.getvalue()
    assert "relative_l2" in out.getvalue()  # in the final table
    summary = json.loads((result.run_dir / "summary.json").read_text())
    # The run and its climatology baseline both report it.
    assert result.metrics["test/relative_l2"] > 0 and summary["baselines"]["climatology"]["test/relative_l2"] > 0
    # The loss is the metric: the last validation's loss equals its relative_l2.
    assert result.metrics["val/loss"] == pytest.approx(result.metrics["val/relative_l2"], rel=1e-3)
