"""format=aoti: an AOTInductor package (compiled with the system's C++ compiler), checked against
the eager model like every export, and usable by predict and bench."""

import json

import numpy as np
import pytest
import torch

from ember.deploy.bench import bench_run
from ember.deploy.export import export_run, format_of, load_artifact
from ember.deploy.predict import predict


def test_aoti_package_matches_eager_with_a_dynamic_batch_and_serves_predict_and_bench(mlp_run, tmp_path):
    result = export_run(mlp_run, "aoti", out=tmp_path / "digits.aoti.pt2", echo=lambda s: None)
    assert result.path.name == "digits.aoti.pt2" and format_of(result.path) == "aoti"
    meta = json.loads(result.meta_path.read_text())
    assert (
        meta["format"] == "aoti"
        and meta["inputs"][0]["shape"][0] == "batch"
        and meta["parity"]["max_abs_error"] <= 1e-4
    )
    run = load_artifact(result.path)
    x = torch.randn(5, 64)
    assert run(x).shape == (5, 10) and run(x[:1]).shape == (1, 10)  # any batch, not only the traced one
    np.save(tmp_path / "x.npy", x.numpy())
    from_run = predict(mlp_run, tmp_path / "x.npy", echo=lambda s: None)
    from_package = predict(result.path, tmp_path / "x.npy", echo=lambda s: None)
    np.testing.assert_allclose(from_package.values, from_run.values, atol=1e-4)
    report = bench_run(
        mlp_run,
        [],
        batch_sizes=(1,),
        backends=("eager", "aoti"),
        iters=5,
        warmup=1,
        seconds=0.1,
        out=tmp_path / "bench.json",
    )
    assert {r["backend"] for r in report["results"]} == {"eager", "aoti"}


@pytest.mark.parametrize("name", ["model.pt2", "model.aoti.pt2"])
def test_the_package_suffix_tells_aoti_from_torch_export(name, tmp_path):
    assert format_of(tmp_path / name) == ("aoti" if name.endswith(".aoti.pt2") else "exported")
