"""ember compress: int8 and pruned runs are new run directories the other commands can use."""

import json

import numpy as np
import pytest
import torch

from ember.deploy.common import load_model
from ember.deploy.compress import compress_run, magnitude_masks
from ember.deploy.predict import predict
from ember.errors import ConfigError
from ember.rundir.loading import load_run


def test_dynamic_int8(mlp_run, tmp_path, capsys):
    out = compress_run(mlp_run, "dynamic_int8", out=tmp_path / "int8")
    table = capsys.readouterr().out
    assert "before" in table and "size (MB)" in table and "test/accuracy" in table
    summary = json.loads((out / "summary.json").read_text())
    assert summary["compression"]["method"] == "dynamic_int8"
    trained = json.loads((mlp_run / "summary.json").read_text())["metrics"]
    assert abs(summary["metrics"]["test/accuracy"] - trained["test/accuracy"]) < 0.05
    # Scored by the evaluator training's test used: the same metrics, and for the float model the same values.
    assert set(summary["metrics"]) == {k for k in trained if k.startswith("test/")}
    row = next(line for line in table.splitlines() if "test/accuracy" in line)
    assert f"{trained['test/accuracy']:.4g}" in row.split()
    model, _, _, _ = load_model(out)
    assert any(type(m).__module__.startswith("torch.ao.nn.quantized.dynamic") for m in model.modules())
    # Its deployable TorchScript export was written, and predict runs the int8 model.
    assert (out / "export" / "model.ts").is_file()
    x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32) * 16
    np.save(tmp_path / "x.npy", x)
    a = predict(out, tmp_path / "x.npy", echo=lambda s: None)
    b = predict(out / "export" / "model.ts", tmp_path / "x.npy", echo=lambda s: None)
    np.testing.assert_allclose(a.values, b.values, atol=1e-5)
    with pytest.raises(ConfigError, match="already quantized to int8"):
        compress_run(out, "dynamic_int8")


def test_prune_keeps_pruned_weights_at_zero_through_finetuning(cnn_run, tmp_path, capsys):
    out = compress_run(cnn_run, "prune", sparsity=0.5, epochs=1, out=tmp_path / "pruned", overrides=["optim.lr=0.0005"])
    assert "nonzero weights" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["compression"]["achieved_sparsity"] == pytest.approx(
        0.5, abs=0.01
    )
    pruned, _, _ = load_run(out)  # an ordinary run directory
    original, _, _ = load_run(cnn_run)
    masks = magnitude_masks(original, 0.5)
    params = dict(pruned.named_parameters())
    for name, keep in masks.items():
        assert torch.all(params[name][~keep] == 0), name
    # it did train
    assert any(bool((params[n][k] != dict(original.named_parameters())[n][k]).any()) for n, k in masks.items())


def test_bad_options(cnn_run):
    with pytest.raises(ConfigError, match=r"needs method=, one of: dynamic_int8, prune"):
        compress_run(cnn_run, "int4")
    with pytest.raises(ConfigError, match=r"sparsity=1.5 must be between 0 and 1"):
        compress_run(cnn_run, "prune", sparsity=1.5)
