"""model.init (weights from a checkpoint, a weights file or a run) and model.freeze."""

import json

import pytest
import torch
from safetensors.torch import save_file

from ember.config import compose
from ember.data.spec import DataSpec
from ember.errors import CheckpointError, ConfigError
from ember.models import builder_kwargs, count_parameters, create_model
from ember.models.transfer import apply_freeze, apply_init, apply_transfer

TEN = DataSpec(input_shape=(1, 40), task="classification", num_classes=10)
FOUR = DataSpec(input_shape=(1, 40), task="classification", num_classes=4)


def _source(tmp_path, fmt="pt"):
    torch.manual_seed(1)
    model = create_model("cnn1d", TEN, channels=8)
    if fmt == "pt":
        path = tmp_path / "ckpt.pt"
        torch.save({"model": model.state_dict(), "step": 3}, path)
    elif fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file(model.state_dict(), str(path))
    elif fmt == "run":
        path = tmp_path / "run"
        (path / "checkpoints").mkdir(parents=True)
        # What DDP and torch.compile leave in state dict names is stripped.
        torch.save(
            {"model": {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}}, path / "checkpoints" / "best.pt"
        )
    return model, path


@pytest.mark.parametrize("fmt", ["pt", "safetensors", "run"])
def test_init_loads_matching_tensors_and_gives_a_new_head(tmp_path, fmt):
    source, path = _source(tmp_path, fmt)
    torch.manual_seed(2)
    model = create_model("cnn1d", FOUR, channels=8)
    fresh_head = model.head[2].weight.detach().clone()
    report = apply_init(model, path)
    for k, v in model.state_dict().items():
        if not k.startswith("head."):
            assert torch.equal(v, source.state_dict()[k]), k
    assert torch.equal(model.head[2].weight, fresh_head)  # 4 classes: a new head
    assert [k for k, _, _ in report.shape_mismatch] == ["head.2.weight", "head.2.bias"]
    assert (
        "skipped (shape differs, freshly initialized: a new head): head.2.weight (10, 80) -> (4, 80)"
        in report.describe()
    )
    assert not report.unexpected and not report.missing


def test_init_errors(tmp_path):
    model = create_model("cnn1d", TEN, channels=8)
    with pytest.raises(CheckpointError, match="does not exist"):
        apply_init(model, tmp_path / "missing.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="without checkpoints/best.pt"):
        apply_init(model, tmp_path / "empty")
    torch.save({"model": create_model("mlp", TEN, width=4).state_dict()}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="none of its 6 tensors fit this model"):
        apply_init(model, tmp_path / "other.pt")
    torch.save({"steps": torch.tensor(3), "note": "x"}, tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="holds no state dict"):
        apply_init(model, tmp_path / "junk.pt")


def test_freeze_by_prefix():
    model = create_model("cnn1d", TEN, channels=8)
    frozen = apply_freeze(model, ["features"])
    assert frozen and all(n.startswith("features.") for n in frozen)
    assert all(not p.requires_grad for n, p in model.named_parameters() if n.startswith("features."))
    assert count_parameters(model) == 8 * 10 * 10 + 10  # only the head trains: 8 channels x length 10 -> 10 classes
    with pytest.raises(
        ConfigError, match="no parameter starts with 'feature'; the model's top-level parts are: features, head"
    ):
        apply_freeze(create_model("cnn1d", TEN, channels=8), ["feature"])
    with pytest.raises(ConfigError, match="freezes every parameter"):
        apply_freeze(create_model("cnn1d", TEN, channels=8), ["features", "head"])


def test_create_model_takes_the_common_keys(tmp_path):
    _, path = _source(tmp_path)
    lines = []
    model = create_model("cnn1d", FOUR, channels=8)
    apply_transfer(model, init=str(path), freeze=["features.0"], log=lines.append)
    assert lines[0].startswith(f"model.init: loaded 18 of 20 tensors from {path}")
    assert lines[1].startswith("model.freeze: froze 1 tensors (40 parameters) under features.0")
    # Through create_model, as the config passes them; defaults (None, []) change nothing.
    model = create_model("cnn1d", FOUR, channels=8, init=str(path), freeze=["features.0"])
    assert not model.features[0].weight.requires_grad
    assert count_parameters(create_model("cnn1d", FOUR, channels=8, init=None, freeze=[])) == count_parameters(
        create_model("cnn1d", FOUR, channels=8)
    )


def test_config_has_the_common_keys_for_every_model():
    cfg = compose(["model=resnet", "model.init=runs/a", "model.freeze=[stem,stages.0]"])
    assert cfg.model.init == "runs/a" and list(cfg.model.freeze) == ["stem", "stages.0"]
    assert builder_kwargs(cfg.model) == {k: v for k, v in cfg.model.items() if k not in ("name", "init", "freeze")}
    assert compose(["model=poly3"]).model.freeze == []
    with pytest.raises(ConfigError, match="did you mean model.freeze"):
        compose(["model=mlp", "model.frezee=[net]"])


def test_train_from_a_run_with_a_frozen_part(tmp_path, capsys):
    """End to end: a second run starts from the first run's weights with its features frozen."""
    from ember.api import train

    small = [
        "data.num_samples=600",
        "trainer.max_epochs=1",
        "trainer.progress=none",
        "trainer.tensorboard=false",
        f"run.root={tmp_path}",
    ]
    first = train(compose(["model=cnn1d", "model.channels=8", *small]))
    capsys.readouterr()
    second = train(
        compose(["model=cnn1d", "model.channels=8", f"model.init={first.run_dir}", "model.freeze=[features]", *small])
    )
    out = capsys.readouterr().out
    assert "model.init: loaded 20 of 20 tensors" in out and "model.freeze: froze 9 tensors" in out
    summary = json.loads((second.run_dir / "summary.json").read_text())
    assert summary["params"] == 8 * 10 * 10 + 10  # trainable parameters: the head
    torch.testing.assert_close(second.model.features[0].weight.cpu(), first.model.features[0].weight.cpu())
