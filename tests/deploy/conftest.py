"""Tiny trained runs shared by the export tests (trained once per session, a second each)."""

import pytest


@pytest.fixture(scope="session", autouse=True)
def _export_record(tmp_path_factory):
    """ember export records the hash of each TorchScript/AOTInductor file it writes in the user's
    data folder (deploy/trust.py): the tests keep theirs in a folder of their own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))
        yield


def _train(root, *overrides):
    from ember.api import train
    from ember.config import compose

    cfg = compose([*overrides, "trainer.max_epochs=1", "trainer.progress=none", f"run.root={root}"])
    return train(cfg).run_dir


@pytest.fixture(scope="session")
def cnn_run(tmp_path_factory):
    """cnn1d on 500 MNIST-1D samples: a conv net with batch norm, inputs (1, 40), 10 classes."""
    return _train(tmp_path_factory.mktemp("runs"), "model=cnn1d", "data=mnist1d", "data.num_samples=500")


@pytest.fixture(scope="session")
def mlp_run(tmp_path_factory):
    """mlp on scikit-learn's digits: linear layers (what int8 quantization acts on)."""
    return _train(tmp_path_factory.mktemp("runs"), "model=mlp", "data=digits", "model.width=64")


@pytest.fixture(scope="session")
def onnx_export(cnn_run):
    from ember.deploy.export import export_run

    return export_run(cnn_run, "onnx", echo=lambda s: None)


@pytest.fixture(scope="session")
def sst_run(tmp_path_factory):
    """mlp on a 360-day monthly sea-surface temperature with land NaN, forecasting one month ahead:
    the gridded run (spec.mask, input_mask, calendar) that NetCDF predict reads."""
    from tests.deploy.test_fields import write_sst

    root = tmp_path_factory.mktemp("sst")
    path = write_sst(root / "sst.nc", nt=40)
    return _train(
        root / "runs",
        "data=gridded",
        f"data.path={path}",
        "data.variables=[sst]",
        "data.lead=1",
        "model=mlp",
        "model.width=16",
    ), path
