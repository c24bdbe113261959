"""`ember models`, `ember summary`, `ember graph` and `ember sample`."""

import shutil

import numpy as np
import pytest
import torch

from ember.config import compose
from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.inspection.graph import autograd_dot
from ember.inspection.model_summary import summarize
from ember.inspection.sample import sample_run, to_grid
from ember.models import create_model

SIGNAL = DataSpec(input_shape=(1, 40), task="classification", num_classes=10)


def test_summary_counts_layers_parameters_flops_and_memory():
    model = create_model("mlp", SIGNAL, width=32, depth=2)
    s = summarize(model, SIGNAL, batch_size=64)
    assert s.total_params == s.trainable_params == 40 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10
    # Two FLOPs per multiply-add of the three matrix products, per sample.
    assert s.flops_per_sample == 2 * (40 * 32 + 32 * 32 + 32 * 10)
    assert [(r.name, r.kind, r.output_shape) for r in s.rows[:3]] == [
        ("net", "Sequential", "10"),
        ("net.0", "Flatten", "40"),
        ("net.1", "Linear", "32"),
    ]
    # Leaf outputs per sample: flatten 40, linear 32, relu 32, linear 32, relu 32, linear 10.
    assert s.activation_bytes_per_sample == 4 * (40 + 32 * 4 + 10)
    frozen = create_model("mlp", SIGNAL, width=32, depth=2, freeze=["net.1"])
    assert summarize(frozen, SIGNAL).trainable_params == s.total_params - (40 * 32 + 32)


def test_summary_shows_parameters_owned_by_the_model():
    model = create_model(
        "vit", DataSpec(input_shape=(3, 16, 16), task="classification", num_classes=10), dim=16, depth=1, heads=2
    )
    rows = {
        r.name: r
        for r in summarize(model, DataSpec(input_shape=(3, 16, 16), task="classification", num_classes=10)).rows
    }
    assert rows["pos"].kind == "Parameter" and rows["pos"].params == 64 * 16  # 2x2 patches of 16x16: 64 tokens
    assert rows["blocks.0"].output_shape == "64x16"


def test_autograd_graph_names_parameters():
    model = create_model("mlp", SIGNAL, width=8, depth=1)
    dot, ops = autograd_dot(model, SIGNAL)
    assert dot.startswith("digraph autograd {") and dot.rstrip().endswith("}")
    for name in ("net.1.weight", "net.1.bias", "net.3.weight"):
        assert f'"{name}\\n' in dot
    assert "AddmmBackward0" in dot and "output\\n2x10" in dot and ops >= 3
    # Generative models: the graph of their loss.
    vae = create_model(
        "vae", DataSpec(input_shape=(1, 8, 8), task="classification", num_classes=10), width=4, latent_dim=2
    )
    dot, _ = autograd_dot(vae, DataSpec(input_shape=(1, 8, 8), task="classification", num_classes=10))
    assert "to_stats.weight" in dot and "output\\nscalar" in dot


def test_grid_tiles_samples_with_padding():
    grid = to_grid(torch.randn(5, 3, 4, 4), min_tile=8)
    assert grid.shape == (2 + 2 * (8 + 2), 2 + 3 * (8 + 2), 3) and grid.dtype == np.uint8


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    from ember.api import train

    root = tmp_path_factory.mktemp("runs")
    cfg = compose(
        [
            "model=vae",
            "model.width=8",
            "model.latent_dim=4",
            "data=digits",
            "trainer.max_epochs=1",
            "trainer.progress=none",
            "trainer.tensorboard=false",
            f"run.root={root}",
        ]
    )
    return train(cfg).run_dir


def test_sample_writes_a_png_grid(vae_run, tmp_path):
    path = sample_run(vae_run, n=6, out=tmp_path / "s.png", seed=1)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (w, h) == (2 + 3 * (64 + 2), 2 + 2 * (64 + 2))  # 8x8 digits enlarged to 64x64 tiles, 3 columns
    with pytest.raises(ConfigError, match="n=0 must be at least 1"):
        sample_run(vae_run, n=0)


def test_sample_refuses_a_classifier_run(tmp_path):
    from ember.api import train

    cfg = compose(
        [
            "model=linear",
            "data.num_samples=300",
            "trainer.max_epochs=1",
            "trainer.progress=none",
            "trainer.tensorboard=false",
            f"run.root={tmp_path}",
        ]
    )
    run = train(cfg).run_dir
    with pytest.raises(
        ConfigError,
        match="model linear does not generate samples; ember sample works for runs of model=vae or model=diffusion",
    ):
        sample_run(run)


def test_cli_models_summary_graph_sample(ember_cli, vae_run, tmp_path):
    r = ember_cli("models")
    assert r.returncode == 0, r.stderr
    for name in ("resnet", "vit", "fno", "afno", "unet", "vae", "diffusion", "mnist_net", "vgg3", "simple_cnn"):
        assert f"│ {name} " in r.stdout
    assert "11,173,962" in r.stdout and "1,199,882" in r.stdout  # resnet18 on CIFAR, the MNIST Net

    r = ember_cli("summary", "model=mlp", "data.num_samples=300", "data.batch_size=32", "depth=1")
    assert r.returncode == 0, r.stderr
    assert "parameters: 78,858 (78,858 trainable)" in r.stdout
    assert "FLOPs per sample: 157 KFLOP forward" in r.stdout and "for a batch of 32" in r.stdout

    r = ember_cli("sample", f"run={vae_run}", "n=4", f"out={tmp_path / 'grid.png'}")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"
    r = ember_cli("sample", "n=4")
    assert (
        r.returncode == 2
        and r.stderr.strip()
        == "error: ember sample needs the run to sample from: ember sample run=runs/<name>/<time> n=16"
    )

    r = ember_cli("summary", "model=unet", "data.num_samples=300")
    assert (
        r.returncode == 2
        and "model unet takes (channels, height, width) inputs, but the data has shape (1, 40)" in r.stderr
    )


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed (apt-get install graphviz)")
def test_cli_graph_renders_svg_and_png(ember_cli, tmp_path):
    r = ember_cli("graph", "model=cnn1d", "data.num_samples=300", f"out={tmp_path / 'g'}")
    assert r.returncode == 0, r.stderr
    assert "cnn1d: 14 operations in one forward pass" in r.stdout
    assert (tmp_path / "g.svg").read_text().lstrip().startswith("<?xml")
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
    assert "CNN1d(" in (tmp_path / "g.modules.txt").read_text()
