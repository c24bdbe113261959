import os
from pathlib import Path

import pytest

from ember.api import train
from ember.config import compose
from ember.track.console import Console

TINY = ["data.num_samples=500", "trainer.max_epochs=2", "trainer.progress=none", "track=[]"]


def tiny_run(root: Path, *overrides: str) -> Path:
    """A finished run in seconds: MNIST-1D, 500 samples, 2 epochs; report.html written at the end."""
    return train(compose([*TINY, f"run.root={root}", *overrides]), console=Console("none")).run_dir


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def classification_runs(runs_root) -> list[Path]:
    """Two runs that differ in the learning rate and log every 2 steps, for curves worth drawing."""
    return [tiny_run(runs_root, "trainer.log_every_n_steps=2", f"optim.lr={lr}") for lr in (0.003, 0.01)]


@pytest.fixture(scope="session")
def regression_run(runs_root) -> Path:
    return tiny_run(
        runs_root,
        "experiment=linear_regression",
        "trainer.max_epochs=60",
        "trainer.log_every_n_steps=5",
        "data.num_samples=500",
    )


@pytest.fixture
def screenshots(tmp_path) -> Path:
    """Where the tests leave their screenshots: EMBER_SCREENSHOTS, or the test's tmp_path."""
    out = Path(os.environ.get("EMBER_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out
