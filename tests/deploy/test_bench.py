"""ember bench: a table and bench.json per backend and batch size (timings are not asserted)."""

import json

from ember.cli import main
from ember.deploy.bench import bench_run


def test_run_backends_and_json(cnn_run, capsys):
    report = bench_run(cnn_run, batch_sizes=(1, 4), backends=("eager", "torchscript", "onnxruntime"), iters=3, warmup=1)
    rows = {(r["backend"], r["batch"]) for r in report["results"]}
    assert rows == {(b, n) for b in ("eager", "torchscript", "onnxruntime") for n in (1, 4)} and report["skipped"] == {}
    for r in report["results"]:
        assert r["iters"] == 3 and 0 < r["p50_ms"] <= r["p95_ms"] and r["samples_per_s"] > 0 and r["vs_eager"] > 0
    assert json.loads((cnn_run / "bench.json").read_text())["results"] == report["results"]
    out = capsys.readouterr().out
    assert "p50 ms" in out and "samples/s" in out and "onnxruntime" in out and f"wrote {cnn_run / 'bench.json'}" in out


def test_untrained_model_from_config_through_the_cli(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert (
        main(
            [
                "bench",
                "model=mlp",
                "data=digits",
                "model.width=32",
                "backends=eager",
                "batch_sizes=2",
                "iters=2",
                "warmup=0",
                f"out={out}",
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["model"] == "mlp on digits (untrained)" and [r["batch"] for r in report["results"]] == [2]
    capsys.readouterr()
    assert main(["bench", "model=mlp", "backends=eager,tensorrt"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "error: unknown backend 'tensorrt'; choose from: eager, compile, torchscript, onnxruntime, aoti"
    )
