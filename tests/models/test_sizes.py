"""create_model refuses, in one line naming what to reduce, a model whose weights cannot fit."""

import pytest
import torch

from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.models import MODELS, create_model

SIGNAL = DataSpec(input_shape=(1, 40), task="classification", num_classes=10)


def test_a_width_no_memory_holds_is_refused_before_allocating():
    with pytest.raises(
        ConfigError,
        match=(
            r"model=mlp is too large for data of input shape \(1, 40\): its weights would take 36,000.* GB, "
            r"more than this machine's .*; reduce model.width=3000000"
        ),
    ):
        create_model("mlp", SIGNAL, width=3_000_000)


def test_an_absurd_input_shape_is_refused():
    """spec.json shapes of 1e5 x 1e5: an allocation traceback in eval, export and predict before."""
    spec = DataSpec(input_shape=(100_000, 100_000), task="classification", num_classes=10)
    with pytest.raises(
        ConfigError,
        match=r"input shape \(100000, 100000\): its weights would take .*reduce model.width=16 or the data's size",
    ):
        create_model("mlp", spec, width=16, depth=1)


def test_an_allocation_that_fails_is_one_line_too(monkeypatch):
    """Where the size cannot be counted beforehand, the allocator's error is translated."""
    monkeypatch.setattr("ember.models._meta_size", lambda *a: None)
    with pytest.raises(
        ConfigError, match=r"model=mlp is too large .*allocating its weights failed .*reduce model.width=3000000"
    ):
        create_model("mlp", SIGNAL, width=3_000_000)


def test_counting_on_the_meta_device_draws_no_random_numbers():
    """Seeded runs build the same weights as before the size check existed."""
    torch.manual_seed(0)
    checked = create_model("mlp", SIGNAL, width=8)
    torch.manual_seed(0)
    plain = MODELS.get("mlp")(SIGNAL, width=8)
    assert all(
        torch.equal(a, b) for a, b in zip(checked.state_dict().values(), plain.state_dict().values(), strict=True)
    )


def test_train_with_an_absurd_width_is_one_line_and_writes_no_run(tmp_path, capsys):
    from ember.cli import main

    assert (
        main(
            [
                "train",
                "model=mlp",
                "model.width=3000000",
                "trainer.progress=none",
                "track=[]",
                f"run.root={tmp_path / 'runs'}",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: model=mlp is too large") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("config.yaml"))
