"""Callbacks given when the trainer is built: what the loop calls, when, and with what."""

import dataclasses

import pytest
import torch
from torch import nn

from ember.config import compose, typed
from ember.data import Splits, TensorData
from ember.data.spec import DataSpec
from ember.track.console import Console
from ember.train.build import build_trainer
from ember.train.callbacks import Callbacks

SPEC = DataSpec(input_shape=(3,), task="regression", target_shape=(1,))


def data(n: int, seed: int) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return TensorData(x, x @ torch.tensor([[1.0], [-2.0], [0.5]]))


def trainer_with(tmp_path, callbacks: Callbacks, *overrides: str):
    base = ["data=linear", "optim=sgd", "sched=none", "data.shuffle=false", "data.batch_size=16", "trainer.device=cpu"]
    cfg = compose([*base, "trainer.progress=none", "trainer.log_every_n_steps=2", f"run.root={tmp_path}", *overrides])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    splits = Splits(train=data(64, 1), val=data(32, 2), test=data(32, 3), spec=SPEC)
    return build_trainer(typed(cfg), model, splits, Console("none"), callbacks=callbacks)


def test_each_callback_is_called_when_its_event_happens(tmp_path):
    steps, validations, ends = [], [], []
    callbacks = Callbacks(
        on_step=lambda step, logged: steps.append((step, dict(logged))),
        on_validation=lambda epoch, metrics: validations.append((epoch, dict(metrics))),
        on_fit_end=ends.append,
    )
    trainer = trainer_with(tmp_path, callbacks, "trainer.max_epochs=2")
    final = trainer.fit()
    assert [s for s, _ in steps] == list(range(1, 9))  # 64 samples / 16 a batch, two epochs
    # The train record comes with the steps that log one (every 2nd), and nothing is read otherwise.
    assert [bool(logged) for _, logged in steps] == [False, True] * 4
    assert steps[1][1]["step"] == 2 and steps[1][1]["loss"] > 0
    assert [e for e, _ in validations] == [1, 2] and "loss" in validations[0][1]
    assert ends == [final] and "test/loss" in final


def test_an_exception_from_a_callback_ends_the_run(tmp_path):
    class Stop(Exception):
        pass

    def prune(epoch, metrics):
        raise Stop(f"pruned at epoch {epoch}")

    ended = []
    trainer = trainer_with(tmp_path, Callbacks(on_validation=prune, on_fit_end=ended.append), "trainer.max_epochs=3")
    with pytest.raises(Stop, match="pruned at epoch 1"):
        trainer.fit()
    assert trainer.state.step == 4 and ended == []  # the first epoch's four steps, no final test


def test_callbacks_are_fixed_once_given():
    callbacks = Callbacks(on_step=print)
    with pytest.raises(dataclasses.FrozenInstanceError):
        callbacks.on_step = None  # a trainer's callbacks are what its builder was given
    assert Callbacks().on_step is None and Callbacks().on_validation is None and Callbacks().on_fit_end is None
