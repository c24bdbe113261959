"""The Python API: ember.fit on the user's own model and data, load_run, evaluate_run."""

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import ember
import ember.api
from ember.cli import main
from ember.errors import ConfigError, DataError


def _blobs(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 4, generator=g) * 0.5 + torch.nn.functional.one_hot(y, 4).float() * 3
    return x, y


def test_fit_trains_a_user_model_on_tensors(tmp_path):
    x, y = _blobs()
    xv, yv = _blobs(100, seed=1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    result = ember.fit(
        model, (x, y), val=(xv, yv), test=(xv, yv), max_epochs=5, lr=0.01, progress="none", run={"root": str(tmp_path)}
    )
    assert result.metrics["test/accuracy"] > 0.9
    assert result.run_dir.parent.name == "custom-Sequential"
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["metrics"]["test/accuracy"] == result.metrics["test/accuracy"]
    assert result.model is model


def test_fit_resumes_a_run_where_it_stopped(tmp_path):
    """resume= continues the run in its own directory from its last checkpoint; with a constant
    learning rate, 2 epochs then 2 more end on the weights of 4 epochs in one go."""
    x, y = _blobs()

    def fit(epochs, **extra):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
        common = {"lr": 0.01, "sched": {"name": "none"}, "progress": "none", "run": {"root": str(tmp_path)}}
        return ember.fit(model, (x, y), max_epochs=epochs, **common, **extra)

    straight = fit(4, resume=None)  # None: a new run, as without the key
    first = fit(2)
    resumed = fit(4, resume=str(first.run_dir))
    assert resumed.run_dir == first.run_dir and resumed.summary["epochs"] == 4
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="no unfinished run"):  # auto: only runs that did not finish
        fit(4, resume="auto")
    with pytest.raises(ember.EmberError, match="not a run directory"):
        fit(4, resume=str(tmp_path / "nothing-here"))


def test_training_types_its_config_once(tmp_path, typings):
    """From the overrides to the report, training reads one typed config (ember.config.typed):
    the one composing built to check the values, or one built from a DictConfig given to train."""
    common = [
        "model=mlp",
        "model.width=8",
        "data=sine",
        "data.num_samples=200",
        "trainer.progress=none",
        "trainer.tensorboard=false",
        f"run.root={tmp_path}",
    ]
    first = ember.train_config([*common, "trainer.max_epochs=1"])
    assert len(typings) == 1 and (first.run_dir / "report.html").is_file()
    cfg = ember.api.compose([*common, "trainer.max_epochs=2", f"resume={first.run_dir}"])
    typings.clear()
    assert ember.api.train(cfg).summary["epochs"] == 2
    assert len(typings) == 1
    typings.clear()
    x, y = _blobs(100)
    ember.fit(nn.Linear(4, 3), (x, y), max_epochs=1, progress="none", run={"root": str(tmp_path)})
    assert len(typings) == 1
    typings.clear()
    # `ember train` in this process: compose_for_resume's pair is passed on, not typed again
    assert main(["train", *common, "trainer.max_epochs=1"]) == 0
    assert len(typings) == 1


def test_resume_tolerates_the_last_bits_of_the_data_statistics_not_a_change(tmp_path):
    """The inputs' mean and std are sums whose last bits depend on the thread count: a run resumed
    on another number of threads must go on; other statistics are other data and must not."""
    from ember.data import Splits
    from ember.data.loaders import TensorData
    from ember.data.spec import DataSpec

    x, y = _blobs()

    def fit(epochs, std, **extra):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
        spec = DataSpec(input_shape=(4,), task="classification", num_classes=3, mean=[0.7] * 4, std=std)
        return ember.fit(
            model,
            Splits(train=TensorData(x, y), spec=spec),
            max_epochs=epochs,
            progress="none",
            run={"root": str(tmp_path)},
            **extra,
        )

    std = [1.9, 2.1, 1.7, 1.8]
    first = fit(1, std)
    with pytest.raises(ember.EmberError, match="the data's std now differ from the checkpoint"):
        fit(2, [2 * s for s in std], resume=str(first.run_dir))
    resumed = fit(2, [s * (1 + 1e-12) for s in std], resume=str(first.run_dir))
    assert resumed.run_dir == first.run_dir and resumed.summary["epochs"] == 2


def test_fit_takes_datasets_numpy_and_regression(tmp_path):
    x = np.random.default_rng(0).normal(size=(200, 2))
    y = (x @ np.array([[1.5], [-2.0]])).astype(np.float32)
    model = nn.Linear(2, 1)
    result = ember.fit(
        model,
        (x, y),
        trainer={"max_epochs": 30, "progress": "none"},
        optim={"name": "sgd", "lr": 0.1},
        run={"root": str(tmp_path)},
    )
    assert torch.allclose(model.weight.detach(), torch.tensor([[1.5, -2.0]]), atol=0.05)
    assert "test/mse" not in result.metrics  # no test split given
    ds = TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y))
    ember.fit(nn.Linear(2, 1), ds, max_epochs=1, progress="none", run={"root": str(tmp_path)})


def test_fit_rejects_unknown_or_ambiguous_keys_and_bad_data(tmp_path):
    x, y = _blobs(20)
    with pytest.raises(ConfigError, match="fit\\(\\) argument 'max_epoch' is not a key of any group"):
        ember.fit(nn.Linear(4, 3), (x, y), max_epoch=3)
    with pytest.raises(ConfigError, match="'name' is in data and optim and sched"):
        ember.fit(nn.Linear(4, 3), (x, y), name="sgd")
    with pytest.raises(DataError, match="x has 20 samples but y has 19"):
        ember.fit(nn.Linear(4, 3), (x, y[:-1]))
    with pytest.raises(DataError, match="must be a Dataset or an \\(X, y\\) pair"):
        ember.fit(nn.Linear(4, 3), "data.csv")
    with pytest.raises(DataError, match="the train inputs hold no value \\(shape \\(0,\\) per sample\\)"):
        ember.fit(nn.Linear(0, 3), (x[:, :0], y))  # zero features trained on nothing before
    assert not (tmp_path / "runs").exists()


def test_train_load_run_and_evaluate_run_agree(tmp_path):
    cfg = ember.api.compose(
        ["data.num_samples=1000", "trainer.max_epochs=2", "trainer.progress=none", f"run.root={tmp_path}"]
    )
    result = ember.api.train(cfg)
    model, saved_cfg, spec = ember.load_run(result.run_dir)
    assert saved_cfg.model.name == "cnn1d" and spec.num_classes == 10
    for a, b in zip(model.state_dict().values(), result.model.state_dict().values()):
        assert torch.equal(a, b)  # the best checkpoint is what training ended with
    metrics = ember.evaluate_run(result.run_dir)
    assert metrics["test/accuracy"] == pytest.approx(result.metrics["test/accuracy"])


def test_custom_model_runs_cannot_be_rebuilt_by_name(tmp_path):
    x, y = _blobs(50)
    result = ember.fit(nn.Linear(4, 3), (x, y), max_epochs=1, progress="none", run={"root": str(tmp_path)})
    with pytest.raises(ConfigError, match="trained a custom model"):
        ember.load_run(result.run_dir)


def test_existing_run_dir_is_not_overwritten(tmp_path):
    x, y = _blobs(50)
    target = tmp_path / "myrun"
    ember.fit(nn.Linear(4, 3), (x, y), max_epochs=1, progress="none", run={"dir": str(target)})
    with pytest.raises(ConfigError, match="already holds a run"):
        ember.fit(nn.Linear(4, 3), (x, y), max_epochs=1, progress="none", run={"dir": str(target)})


def test_a_run_written_before_target_scaling_still_evaluates_exports_and_resumes(tmp_path):
    import yaml

    from ember.deploy.export import export_run

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", (280 + 5 * x[:, :1] + x[:, 1:2] ** 2).astype(np.float32))
    common = [
        "data=numpy",
        f"data.path={tmp_path / 'x.npy'}",
        f"data.target={tmp_path / 'y.npy'}",
        "model=mlp",
        "trainer.progress=none",
        f"run.root={tmp_path / 'runs'}",
    ]
    result = ember.api.train(
        ember.api.compose([*common, "trainer.max_epochs=2", "data.normalize_target=false", "model.residual=false"])
    )
    run = result.run_dir
    # What an older ember wrote: no target statistics, no residual or normalize_target keys.
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    del cfg["data"]["normalize_target"], cfg["model"]["residual"]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    spec = json.loads((run / "spec.json").read_text())
    for key in (
        "target_mean",
        "target_std",
        "target_names",
        "identity_channels",
        "lead",
        "lat",
        "lon",
        "input_names",
        "target_units",
    ):
        spec.pop(key, None)
    (run / "spec.json").write_text(json.dumps(spec))
    assert ember.evaluate_run(run, console=None)["test/rmse"] == pytest.approx(result.metrics["test/rmse"], rel=1e-5)
    export_run(run, "torchscript", echo=lambda s: None)  # its parity check compares outputs
    cfg, conf = ember.api.compose_for_resume([f"resume={run}", "trainer.max_epochs=3", "trainer.progress=none"])
    resumed = ember.api.train(cfg, conf=conf)
    assert resumed.run_dir == run and resumed.summary["epochs"] == 3


def test_an_fno_trained_on_one_grid_is_evaluated_on_a_finer_one(tmp_path):
    """Zero-shot super-resolution: `ember eval run=DIR data.resolution=128` of a run at 32 points."""
    from ember.config import compose
    from ember.track.console import Console

    overrides = [
        "model=fno",
        "model.width=8",
        "model.modes=6",
        "model.depth=2",
        "data=burgers",
        "data.num_samples=100",
        "data.resolution=32",
        "trainer.max_epochs=8",
    ]
    cfg = compose([*overrides, "trainer.progress=none", "trainer.tensorboard=false", f"run.root={tmp_path}"])
    result = ember.api.train(cfg, console=Console("none"))
    coarse = ember.evaluate_run(result.run_dir, [], console=Console("none"))
    fine = ember.evaluate_run(result.run_dir, ["data.resolution=128"], console=Console("none"))
    assert coarse["test/relative_l2"] == pytest.approx(result.metrics["test/relative_l2"], rel=1e-4)
    # Other samples (the generator draws per resolution), the same operator: errors of one size.
    assert 0 < fine["test/relative_l2"] < 2 * coarse["test/relative_l2"] + 0.05, (coarse, fine)


def test_fit_takes_the_splits_of_load_data_with_their_statistics(tmp_path):
    splits = ember.load_data("burgers", num_samples=60, resolution=32)
    model = ember.create_model("fno", splits.spec, width=8, modes=4, depth=1)
    result = ember.fit(model, splits, max_epochs=1, loss="rel_l2", progress="none", run={"root": str(tmp_path)})
    spec = json.loads((result.run_dir / "spec.json").read_text())
    # The data's own statistics reach the run (not re-inferred without them from the tensors).
    assert spec["target_std"] == pytest.approx(splits.spec.target_std) and "test/relative_l2" in result.metrics
    assert "val/relative_l2" in result.metrics  # load_data carved a validation split
    with pytest.raises(ConfigError, match="takes the val and test splits from `splits`"):
        ember.fit(model, splits, test=splits.test)
