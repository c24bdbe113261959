import pytest
import torch

from ember.api import load_data
from ember.config import compose
from ember.data import build_data, list_data
from ember.data.loaders import EpochLoader, TensorData
from ember.errors import ConfigError


def test_mnist1d_is_generated_locally_with_the_package_defaults():
    splits = build_data(compose().data)
    # 4000 train / 1000 test from make_dataset; validation carved from train (10%).
    assert (len(splits.train), len(splits.val), len(splits.test)) == (3600, 400, 1000)
    assert splits.train.x.shape[1:] == (1, 40) and splits.train.y.dtype == torch.long
    assert splits.spec.task == "classification" and splits.spec.num_classes == 10
    assert set(splits.test.y.tolist()) == set(range(10))


def test_the_typed_data_group_builds_the_same_splits_as_its_dictconfig_node():
    from ember.config import compose_typed

    cfg, conf = compose_typed(["data.num_samples=1000", "data.split_by=random", "data.augment=[noise]"])
    a, b = build_data(cfg.data), build_data(conf.data)  # a saved run's node; what training passes
    for split in ("train", "val", "test"):
        assert torch.equal(a.get(split).x, b.get(split).x) and torch.equal(a.get(split).y, b.get(split).y)
    assert a.spec == b.spec and a.indices == b.indices and b.augment is not None


def test_normalization_uses_train_statistics_only():
    splits = build_data(compose(["data.num_samples=1000"]).data)
    x = splits.train.x
    assert torch.allclose(x.mean(), torch.tensor(0.0), atol=1e-5)
    assert torch.allclose(x.std(), torch.tensor(1.0), atol=1e-3)
    assert len(splits.spec.mean) == 1 and len(splits.spec.std) == 1
    raw = build_data(compose(["data.num_samples=1000", "data.normalize=false"]).data)
    # The same affine map is applied to every split, with the train split's statistics.
    m, s = splits.spec.mean[0], splits.spec.std[0]
    assert torch.allclose((raw.test.x - m) / s, splits.test.x, atol=1e-5)
    assert not torch.allclose(splits.test.x.mean(), torch.tensor(0.0), atol=1e-7)


def test_validation_split_is_fixed_and_disjoint():
    a = build_data(compose(["data.num_samples=1000", "trainer.seed=1"]).data)
    b = build_data(compose(["data.num_samples=1000", "trainer.seed=2"]).data)
    assert torch.equal(a.val.x, b.val.x)  # does not move with the training seed
    c = build_data(compose(["data.num_samples=1000", "data.split_seed=1"]).data)
    assert not torch.equal(a.val.x, c.val.x)  # data.split_seed moves it
    rows = {tuple(r.tolist()) for r in a.train.x.flatten(1)}
    assert not any(tuple(r.tolist()) in rows for r in a.val.x.flatten(1))
    assert build_data(compose(["data.num_samples=1000", "data.val_fraction=0"]).data).val is None
    with pytest.raises(ConfigError, match="val_fraction"):
        build_data(compose(["data.num_samples=1000", "data.val_fraction=1.0"]).data)


def test_tutorial_sources():
    lin = load_data("linear")
    assert len(lin.train) == 100 and lin.val is None and lin.spec.task == "regression"
    # y = 3x + 2 + 0.1 noise: a least-squares line recovers the coefficients.
    x, y = lin.train.x[:, 0], lin.train.y[:, 0]
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    assert abs(slope - 3) < 0.05 and abs((y.mean() - slope * x.mean()) - 2) < 0.05
    sine = load_data("sine", num_samples=200)
    assert torch.allclose(sine.train.y, torch.sin(sine.train.x))
    assert sine.train.x.min() == -torch.pi and sine.spec.mean is None  # not normalized
    assert {
        "linear",
        "mnist1d",
        "sine",
        "csv",
        "parquet",
        "numpy",
        "hdf5",
        "gridded",
        "imagefolder",
        "cifar10",
        "cifar100",
        "mnist",
        "fashion_mnist",
        "audio",
        "digits",
        "wine",
        "breast_cancer",
        "diabetes",
        "spirals",
        "lorenz96",
        "burgers",
        "darcy",
    } == set(list_data())


def test_epoch_loader_visits_every_sample_once_per_epoch_in_a_new_order():
    data = TensorData(torch.arange(10).float().unsqueeze(1), torch.arange(10))
    loader = EpochLoader(data, batch_size=3, shuffle=True, seed=0)
    assert len(loader) == 4

    def epoch(e, start=0):
        loader.set_epoch(e, start)
        return torch.cat([y for _, y in loader])

    epochs = [epoch(0), epoch(1)]
    for e in epochs:
        assert sorted(e.tolist()) == list(range(10))
    assert not torch.equal(epochs[0], epochs[1])
    # The order is a function of (seed, epoch): the same epoch again, or from its second batch.
    assert torch.equal(epoch(1), epochs[1]) and torch.equal(epoch(1, start=1), epochs[1][3:])
    ordered = EpochLoader(data, 4, shuffle=False)
    ordered.set_epoch(0)
    assert torch.cat([y for _, y in ordered]).tolist() == list(range(10))


def test_fast_path_and_dataloader_path_give_the_same_batches():
    data = TensorData(torch.randn(50, 3), torch.arange(50))
    fast, slow = EpochLoader(data, 8, shuffle=True, seed=5), EpochLoader(data, 8, shuffle=True, seed=5, fast=False)
    assert fast.fast and not slow.fast
    for e in range(2):
        fast.set_epoch(e, 2)
        slow.set_epoch(e, 2)
        for (xa, ya), (xb, yb) in zip(fast, slow, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_tensor_data_checks_lengths():
    with pytest.raises(ValueError, match="x has 3 samples but y has 2"):
        TensorData(torch.zeros(3, 1), torch.zeros(2))
