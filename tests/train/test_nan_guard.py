"""The NaN/Inf guard: a non-finite loss or gradient stops the run (default) or skips the update."""

import pytest
import torch
from torch import nn

import ember
from ember.errors import NonFiniteError


def _data(n=64, nan_rows=()):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    y = x.sum(1, keepdim=True)
    for r in nan_rows:
        x[r, 0] = float("nan")
    return x, y


def _fit(tmp_path, x, y, **overrides):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    settings = {
        "max_epochs": 2,
        "batch_size": 8,
        "shuffle": False,
        "progress": "none",
        "tensorboard": False,
        "run": {"root": str(tmp_path)},
        "optim": {"name": "sgd", "lr": 0.05},
        "sched": {"name": "none"},
    }
    settings.update(overrides)
    return model, ember.fit(model, (x, y), **settings)


def test_a_nan_sample_stops_the_run_naming_the_step(tmp_path):
    x, y = _data(nan_rows=[20])  # in the third batch of 8
    with pytest.raises(NonFiniteError, match=r"non-finite loss at step 3 \(epoch 1\); no checkpoint was written yet"):
        _fit(tmp_path, x, y)
    (run,) = tmp_path.glob("*/*/summary.json")
    assert '"status": "failed"' in run.read_text()


def test_stop_names_the_last_good_checkpoint(tmp_path):
    x, y = _data(nan_rows=[60])  # last batch of the first epoch
    with pytest.raises(NonFiniteError, match=r"at step 8 .*the last good checkpoint is .*step-000000006\.pt"):
        _fit(tmp_path, x, y, trainer={"checkpoint_every_n_steps": 3})


def test_skip_policy_skips_bad_updates_and_keeps_weights_finite(tmp_path, capsys):
    x, y = _data(nan_rows=[20])
    model, result = _fit(tmp_path, x, y, nan_policy="skip")
    out = capsys.readouterr().out
    assert out.count("update skipped") == 2  # batch 3 of each epoch
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert result.summary["steps"] == 16  # skipped updates still count as steps


def test_skip_policy_gives_up_after_too_many_in_a_row(tmp_path):
    x, y = _data()
    with pytest.raises(NonFiniteError, match="non-finite"):
        _fit(tmp_path, x, y, nan_policy="skip", nan_max_skips=3, optim={"name": "sgd", "lr": 1e30}, max_epochs=20)


def test_exploding_lr_is_caught_as_a_non_finite_gradient_or_loss(tmp_path):
    x, y = _data()
    with pytest.raises(NonFiniteError, match=r"non-finite (loss|gradient norm) at step \d+"):
        _fit(tmp_path, x, y, optim={"name": "sgd", "lr": 1e6}, max_epochs=50)


def test_off_lets_nan_through(tmp_path):
    x, y = _data(nan_rows=[20])
    model, _ = _fit(tmp_path, x, y, nan_policy="off")
    assert not all(torch.isfinite(p).all() for p in model.parameters())


def test_cli_exits_3_on_nan(tmp_path, capsys, monkeypatch):
    from ember.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(
        ["train", "experiment=linear_regression", "optim.lr=1e6", "trainer.max_epochs=50", "trainer.progress=none"]
    )
    err = capsys.readouterr().err
    assert code == 3
    assert err.startswith("error: non-finite") and err.count("\n") == 1


def test_a_long_interval_keeps_losses_bounded_and_traces_a_nan_to_a_span(monkeypatch):
    from ember.train import meter as meter_module

    monkeypatch.setattr(meter_module, "KEEP", 4)
    m = meter_module.IntervalMeter(torch.device("cpu"))
    for step in range(1, 7):
        m.add(torch.tensor(float("nan") if step == 6 else float(step)), 1, step)
    assert len(m.losses) == 3  # steps 1-4 folded into one sum, then 5 and 6
    assert m.first_nonfinite() == 6
    m.reset()
    for step in range(1, 7):
        m.add(torch.tensor(float("nan") if step == 2 else float(step)), 1, step)
    assert m.first_nonfinite() == (1, 4)
    m.reset()
    for step in range(1, 7):
        m.add(torch.tensor(float(step)), 1, step)
    assert m.first_nonfinite() is None and m.record()["loss"] == 3.5


def test_a_nan_in_the_last_update_is_caught_before_its_checkpoint(tmp_path):
    """The last step's loss is finite but its update overflows: no loss shows it, the weights do."""
    x, y = _data()
    with pytest.raises(
        NonFiniteError, match=r"non-finite weights after step 1 \(epoch 1\); no checkpoint was written yet"
    ):
        _fit(tmp_path, x, y, max_steps=1, optim={"name": "sgd", "lr": 1e38, "momentum": 0.0})
    assert not list(tmp_path.glob("*/*/checkpoints/*.pt"))
