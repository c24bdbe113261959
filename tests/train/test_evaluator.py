"""The evaluator (built without an optimizer) and the checkpointer (which never sees the trainer)."""

import pytest
import torch
from test_trainer import REGRESSION, make_cfg, make_trainer, regression_data, small_net

from ember.config import typed
from ember.data import Splits
from ember.files import load_checkpoint
from ember.train.build import build_evaluator


def test_an_evaluator_built_without_an_optimizer_scores_as_the_trainers_validation(tmp_path):
    cfg = make_cfg(tmp_path, "trainer.max_epochs=2")
    trainer = make_trainer(cfg, small_net(), regression_data(64), val=regression_data(32, seed=2))
    trainer.fit()
    splits = Splits(train=regression_data(64), val=regression_data(32, seed=2), test=None, spec=REGRESSION)
    model = small_net(seed=5)
    model.load_state_dict(trainer.model.state_dict())
    evaluator, loaders = build_evaluator(typed(cfg), model, splits)
    assert not hasattr(evaluator, "optimizer") and loaders[2] is None
    got = evaluator.evaluate(loaders[1], "val")
    assert set(got) == {"loss", *trainer.evaluator.metrics.keys()}
    assert got == pytest.approx(trainer.evaluate(trainer.val_loader), rel=1e-6)


def test_the_checkpointer_saves_and_restores_a_run_without_the_trainer(tmp_path):
    trainer = make_trainer(make_cfg(tmp_path, "trainer.max_epochs=1"), small_net(), regression_data(48))
    trainer.fit()
    ck = trainer.checkpointer
    ck.save(tmp_path / "ckpt.pt")
    saved = load_checkpoint(tmp_path / "ckpt.pt")
    assert saved["state"]["step"] == trainer.state.step > 0 and saved["total_steps"] == trainer.total_steps
    fresh = make_trainer(make_cfg(tmp_path, "trainer.max_epochs=1"), small_net(seed=3), regression_data(48))
    assert fresh.state.step == 0
    fresh.checkpointer.load(tmp_path / "ckpt.pt")
    assert fresh.state.step == trainer.state.step  # the trainer reads the counters the checkpointer restored
    assert all(torch.equal(a, b) for a, b in zip(fresh.model.parameters(), trainer.model.parameters(), strict=True))
    assert fresh.optimizer.state_dict()["state"].keys() == trainer.optimizer.state_dict()["state"].keys()
