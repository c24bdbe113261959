"""`ember eval` (ember.inspection.evaluation): a run's best checkpoint scored again from its
directory, as the final test scored it, on this machine."""

import io
import shutil

import pytest
import torch

from ember.api import train
from ember.config import compose
from ember.inspection.evaluation import evaluate_run
from ember.track.console import Console


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    overrides = ["data=sine", "data.num_samples=200", "model=mlp", "model.width=8", "trainer.max_epochs=2"]
    cfg = compose([*overrides, "trainer.progress=none", "trainer.tensorboard=false", f"run.root={root}"])
    return train(cfg, console=Console("none", stream=io.StringIO()))


def test_eval_types_its_config_once_and_scores_as_the_final_test(regression_run, typings):
    out = io.StringIO()
    metrics = evaluate_run(regression_run.run_dir, console=Console("lines", stream=out))
    assert len(typings) == 1
    assert metrics["test/rmse"] == pytest.approx(regression_run.metrics["test/rmse"], rel=1e-5)
    # The run's own data: its baselines are the run's, not fitted again.
    assert "fitted on" not in out.getvalue()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with CUDA runs the trained device")
def test_a_gpu_run_is_evaluated_on_a_machine_without_one(regression_run, tmp_path):
    run = tmp_path / "gpu"
    shutil.copytree(regression_run.run_dir, run)
    config = run / "config.yaml"
    assert "  device: auto\n" in config.read_text()
    config.write_text(config.read_text().replace("  device: auto\n", "  device: cuda\n"))
    out = io.StringIO()
    metrics = evaluate_run(run, console=Console("lines", stream=out))
    assert "note: trainer.device=cuda is not available here" in out.getvalue()
    assert metrics["test/rmse"] == pytest.approx(regression_run.metrics["test/rmse"], rel=1e-5)
