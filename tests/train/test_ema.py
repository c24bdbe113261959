"""trainer.ema: the moving average of the weights is what validation, best.pt and the test use."""

import pytest
import torch
from torch import nn

import ember
from ember.config import compose, typed
from ember.data import Splits, TensorData
from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.files import load_checkpoint
from ember.track.console import Console
from ember.train.build import build_trainer
from ember.train.callbacks import Callbacks

SPEC = DataSpec(input_shape=(3,), task="regression", target_shape=(1,))


def data(n: int, seed: int) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return TensorData(x, x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(n, 1, generator=g))


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))


def trainer_for(tmp_path, *overrides, model=None, val=True, callbacks=None):
    cfg = compose(
        [
            "data=linear",
            "optim=sgd",
            "optim.lr=0.1",
            "sched=none",
            "data.shuffle=false",
            "data.batch_size=16",
            "trainer.device=cpu",
            "trainer.progress=none",
            f"run.root={tmp_path}",
            *overrides,
        ]
    )
    splits = Splits(train=data(64, 1), val=data(32, 2) if val else None, spec=SPEC)
    return build_trainer(typed(cfg), model or net(), splits, Console("none"), callbacks=callbacks)


def params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_the_average_follows_the_ema_recursion_step_by_step(tmp_path):
    seen, model = [], net()
    after_step = Callbacks(on_step=lambda step, logged: seen.append(params(model)))
    # trainer.max_steps=30: the cap holds from n=26
    trainer = trainer_for(
        tmp_path,
        "trainer.ema=0.75",
        "trainer.max_steps=30",
        "trainer.max_epochs=10",
        model=model,
        val=False,
        callbacks=after_step,
    )
    trainer.fit()
    expected = seen[0]  # the first update copies the weights
    for n, weights in enumerate(seen[1:], start=1):
        d = min(0.75, (1 + n) / (10 + n))  # the warmup: early averages forget faster
        expected = [d * e + (1 - d) * w for e, w in zip(expected, weights)]
    for got, want in zip(trainer.ema.module.parameters(), expected):
        assert torch.allclose(got, want, atol=1e-6)
    # Without a validation split the run ends on the average: that is what it returns and saves.
    assert all(torch.equal(a, b) for a, b in zip(trainer.model.parameters(), trainer.ema.module.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(trainer.model.parameters(), seen[-1]))


def test_best_checkpoint_holds_the_average_and_step_checkpoints_the_training_weights(tmp_path):
    result = ember.fit(
        net(), data(64, 1), val=data(32, 2), max_epochs=2, lr=0.1, batch_size=16, ema=0.5, run={"root": str(tmp_path)}
    )
    best = load_checkpoint(result.run_dir / "checkpoints" / "best.pt")
    last = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")
    averaged = {k.removeprefix("module."): v for k, v in last["ema"].items() if k.startswith("module.")}
    assert best["state"]["best_epoch"] == 2  # the average improved each epoch, so best.pt is the last one
    assert all(torch.equal(best["model"][k], averaged[k]) for k in best["model"])
    assert not all(torch.equal(last["model"][k], averaged[k]) for k in last["model"])
    assert result.summary["tested_weights"] == "exponential moving average, decay 0.5"
    assert all(torch.equal(result.model.state_dict()[k], best["model"][k]) for k in best["model"])


def test_validation_scores_the_average_not_the_training_weights(tmp_path):
    trainer = trainer_for(tmp_path, "trainer.ema=0.9", "trainer.max_epochs=1")
    trainer.fit()
    raw = trainer_for(tmp_path, "trainer.max_epochs=1")
    raw.model.load_state_dict(trainer.ema.module.state_dict())
    assert trainer.evaluate(trainer.val_loader) == pytest.approx(raw.evaluate(raw.val_loader))


def test_diffusion_averages_its_weights_by_default_and_other_models_do_not(tmp_path):
    diffusion = ember.create_model(
        "diffusion", DataSpec(input_shape=(1, 8, 8), task="classification", num_classes=10), width=8, depth=1
    )
    assert trainer_for(tmp_path, model=diffusion).ema_decay == 0.999
    assert trainer_for(tmp_path).ema is None
    assert trainer_for(tmp_path, "trainer.ema=0", model=diffusion).ema is None


def test_an_ema_decay_of_one_is_refused():
    with pytest.raises(ConfigError, match="trainer.ema"):
        compose(["trainer.ema=1.0"])


def test_a_run_without_validation_is_loaded_with_the_average_it_tested_and_saved(tmp_path):
    """No validation, no best.pt: load_run (and ember eval, export, report through it) reads
    last.pt, whose "model" is the training weights kept for resume; the run's weights are the
    average it tested and wrote to model.safetensors."""
    from safetensors.torch import load_file

    from ember.api import train

    cfg = compose(
        [
            "experiment=linear_regression",
            "trainer.ema=0.9",
            "trainer.max_epochs=3",
            "trainer.progress=none",
            "track=[]",
            f"run.root={tmp_path}",
        ]
    )
    run = train(cfg, console=Console("none")).run_dir
    assert not (run / "checkpoints" / "best.pt").exists()
    saved = load_file(run / "model.safetensors")
    model, _, _ = ember.load_run(run)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    last = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    assert not all(torch.equal(last[k], saved[k]) for k in saved)
