"""Carved splits (stratified, seeded, recorded) and normalization, in memory and from files."""

import h5py
import numpy as np
import pytest
import torch

from ember import load_data
from ember.config import compose
from ember.data import Splits, build_data
from ember.data.loaders import TensorData
from ember.data.spec import DataSpec
from ember.data.splits import _order, carve, normalize
from ember.errors import ConfigError, DataError


def _splits(y, test=None):
    x = torch.arange(len(y), dtype=torch.float32).unsqueeze(1)
    spec = DataSpec(input_shape=(1,), task="classification", num_classes=int(y.max()) + 1)
    return Splits(train=TensorData(x, y), test=test, spec=spec)


def test_stratified_order_keeps_every_prefix_in_proportion():
    y = torch.cat([torch.zeros(900), torch.ones(90), torch.full((10,), 2)]).long()[torch.randperm(1000)]
    order = _order(1000, y, seed=0)
    assert sorted(order.tolist()) == list(range(1000))
    for m in (100, 200, 500):
        counts = torch.bincount(y[order[:m]], minlength=3)
        assert torch.allclose(counts.float(), torch.tensor([0.9, 0.09, 0.01]) * m, atol=1.01)
    assert not torch.equal(order, _order(1000, y, seed=1))


def test_carve_test_then_validation_disjoint_and_recorded():
    y = torch.arange(100) % 4
    out = carve(_splits(y), test_fraction=0.2, val_fraction=0.1, seed=0, stratify=True)
    assert (len(out.train), len(out.val), len(out.test)) == (70, 10, 20)
    for name in ("train", "val", "test"):
        data, rows = getattr(out, name), out.indices[name]
        assert data.x[:, 0].long().tolist() == rows  # the recorded rows are the samples held
    assert torch.bincount(out.test.y).tolist() == [5, 5, 5, 5]
    assert set(out.indices["train"]).isdisjoint(out.indices["test"] + out.indices["val"])
    # A predefined test split is kept; only validation is carved, and test is not recorded.
    fixed = _splits(y, test=TensorData(torch.zeros(5, 1), torch.zeros(5).long()))
    out = carve(fixed, test_fraction=0.2, val_fraction=0.1, seed=0, stratify=False)
    assert len(out.test) == 5 and set(out.indices) == {"train", "val"}


def test_split_mistakes_and_empty_splits():
    y = torch.arange(10) % 2
    with pytest.raises(ConfigError, match="data.test_fraction=0.01 leaves no test sample out of 10"):
        carve(_splits(y), test_fraction=0.01, val_fraction=0.1, seed=0, stratify=True)
    with pytest.raises(ConfigError, match="leave no train sample out of 10"):
        carve(_splits(y), test_fraction=0.5, val_fraction=0.5, seed=0, stratify=True)
    with pytest.raises(ConfigError, match="data.split='holdout' is not a valid choice; choose one of: train, val, test"):
        compose(["data.split=holdout"])


def test_an_empty_predefined_split_is_an_error(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 2)), y=np.arange(20) % 2, x_test=np.zeros((0, 2)), y_test=np.zeros(0, dtype=np.int64))
    with pytest.raises(DataError, match="the test split of data=numpy is empty"):
        load_data("numpy", path=str(tmp_path / "d.npz"))


def test_the_same_config_gives_the_same_splits_and_the_training_seed_does_not_move_them(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).normal(size=(50, 3)), y=np.arange(50) % 2)
    base = ["data=numpy", f"data.path={tmp_path / 'd.npz'}"]
    a = build_data(compose(base + ["trainer.seed=1"]).data)
    b = build_data(compose(base + ["trainer.seed=2"]).data)
    c = build_data(compose(base + ["data.split_seed=3"]).data)
    assert a.indices == b.indices and a.indices != c.indices


def test_file_backed_normalization_matches_the_in_memory_path(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(loc=[[5.0], [-2.0]], scale=[[3.0], [0.5]], size=(300, 2, 10)).astype(np.float32)
    y = (x[:, 0, 0] > 5).astype(np.int64)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["x"], f["y"] = x, y
    mem = load_data("numpy", path=str(tmp_path / "d.npz"))
    lazy = load_data("hdf5", path=str(tmp_path / "d.h5"), num_workers=0)
    assert mem.indices == lazy.indices  # same labels, same stratified carve
    assert np.allclose(mem.spec.mean, lazy.spec.mean, atol=1e-5) and np.allclose(mem.spec.std, lazy.spec.std, atol=1e-5)
    xb, _ = lazy.test[list(range(len(lazy.test)))]
    assert torch.allclose(xb, mem.test.x, atol=1e-5)


def test_normalize_can_take_a_runs_statistics_for_data_on_another_grid():
    x, y = torch.randn(40, 2, 16) * 3 + 1, torch.randn(40, 1, 16) * 5 - 2
    spec = DataSpec(input_shape=(2, 16), task="regression", target_shape=(1, 16))
    run = DataSpec(input_shape=(2, 8), task="regression", target_shape=(1, 8), mean=[1.0, 2.0], std=[3.0, 4.0], target_mean=[-2.0], target_std=[5.0])
    splits = normalize(Splits(train=TensorData(x, y), spec=spec), stats_from=run)
    assert splits.spec.mean == [1.0, 2.0] and splits.spec.target_std == [5.0] and splits.spec.input_shape == (2, 16)
    assert torch.allclose(splits.train.x[:, 1], (x[:, 1] - 2.0) / 4.0) and torch.allclose(splits.train.y, (y + 2.0) / 5.0)
    # Statistics for another number of channels do not apply: the data's own are computed.
    other = DataSpec(input_shape=(3, 8), task="regression", target_shape=(1, 8), mean=[0.0] * 3, std=[1.0] * 3)
    own = normalize(Splits(train=TensorData(x, y), spec=spec), stats_from=other)
    assert own.spec.mean != [0.0, 0.0] and abs(own.train.x[:, 0].mean()) < 1e-5
