"""End-to-end: the `ember` command in fresh processes, as a user runs it."""

import json
import subprocess
import sys

import pytest
import torch

# Small MNIST-1D for tests that do not measure accuracy: generation and training take a second.
SMALL = ["data.num_samples=1000", "trainer.max_epochs=2", "trainer.progress=none"]


def _run_dirs(root):
    return sorted(p.parent for p in root.glob("runs/*/*/config.yaml"))


def test_train_writes_a_complete_run_directory_and_eval_reads_it(ember_cli, tmp_path):
    r = ember_cli("train", *SMALL)
    assert r.returncode == 0, r.stderr
    assert "test" in r.stdout and "accuracy" in r.stdout  # the final table
    (run,) = _run_dirs(tmp_path)
    assert run.parent.name == "mnist1d-cnn1d"
    for name in [
        "config.yaml",
        "spec.json",
        "metrics.jsonl",
        "summary.json",
        "model.safetensors",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ]:
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*")), "no TensorBoard event file"

    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert 0.0 <= summary["metrics"]["test/accuracy"] <= 1.0
    assert summary["params"] > 0 and summary["best_epoch"] in (1, 2) and summary["wall_time_s"] > 0
    assert set(summary["versions"]) == {"ember", "torch", "python"}

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in records} == {"train", "val"}
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == sorted(set(train_steps)), "duplicate or unordered steps"
    assert all({"loss", "lr", "samples_per_s", "epoch"} <= set(r) for r in records if r["split"] == "train")

    ckpt = torch.load(run / "checkpoints/best.pt", weights_only=True)
    assert {"model", "optimizer", "state", "rng", "config", "spec"} <= set(ckpt)

    r = ember_cli("eval", f"run={run}")
    assert r.returncode == 0, r.stderr
    assert "accuracy" in r.stdout
    # The best checkpoint evaluated again gives the test accuracy the run reported.
    shown = f"{summary['metrics']['test/accuracy']:.4g}"
    assert shown in r.stdout

    r = ember_cli("eval", f"run={run}", "data.split=val")
    assert r.returncode == 0 and "val" in r.stdout


@pytest.mark.parametrize(
    "args, expected",
    [
        (["train", "trainer.max_epoch=3"], "error: unknown key 'trainer.max_epoch'; did you mean trainer.max_epochs?"),
        (["train", "model=resnet9000"], "error: unknown model 'resnet9000'; choose one of: "),
        (["train", "trainer.max_epochs=abc"], "error: trainer.max_epochs='abc' has the wrong type; expected int"),
        (["train", "--config", "missing.yaml"], "error: config file 'missing.yaml' does not exist"),
        (["eval"], "error: ember eval needs the run to evaluate"),
        (["eval", "run=nowhere"], "error: 'nowhere' is not a run directory"),
        # The neural operators' bad inputs (issue 16): an operator's loss on classes, a grid
        # too coarse for the FNO's modes or for Darcy's solver.
        (
            ["train", "trainer.loss=rel_l2"],
            "error: trainer.loss=rel_l2 needs a field or vector regression target, not classification",
        ),
        (
            ["train", "trainer.loss=h1"],
            (
                "error: trainer.loss=h1 needs a field target (channels, "
                "*grid) to take derivatives along, not classification"
            ),
        ),
        (
            ["train", "model=fno", "data=burgers", "data.resolution=16", "data.num_samples=20", "data.cache=false"],
            "error: model.modes=16 needs a grid of at least 32 points per axis",
        ),
        (
            ["train", "data=darcy", "data.resolution=8"],
            "error: data.resolution=8 is too coarse for data=darcy; use at least 16",
        ),
    ],
)
def test_mistakes_exit_2_with_one_line_and_create_nothing(ember_cli, tmp_path, args, expected):
    r = ember_cli(*args)
    assert r.returncode == 2
    assert r.stderr.startswith(expected), r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()


def test_config_prints_the_composed_config_with_file_and_overrides(ember_cli, tmp_path):
    (tmp_path / "my.yaml").write_text("model: mlp\noptim:\n  lr: 0.05\n")
    r = ember_cli("config", "--config", "my.yaml", "model.width=32")
    assert r.returncode == 0, r.stderr
    assert "name: mlp" in r.stdout and "width: 32" in r.stdout and "lr: 0.05" in r.stdout


def test_help_lists_commands_and_group_options(ember_cli):
    for args in (["--help"], ["train", "--help"]):
        r = ember_cli(*args)
        assert r.returncode == 0
        for text in [
            "train",
            "eval",
            "config",
            "model ",
            "cnn1d",
            "mlp",
            "experiment",
            "linear_regression",
            "onecycle",
        ]:
            assert text in r.stdout, (args, text)


def test_models_lists_the_registry(ember_cli):
    r = ember_cli("models")
    assert r.returncode == 0
    for name in ["ann", "cnn1d", "mlp", "poly3"]:
        assert name in r.stdout


def test_linear_regression_experiment_matches_the_tutorial(ember_cli, tmp_path):
    r = ember_cli("train", "experiment=linear_regression")
    assert r.returncode == 0, r.stderr
    loss_lines = [line for line in r.stdout.splitlines() if line.startswith("epoch") and "loss" in line]
    assert [line.split()[1] for line in loss_lines] == [f"{e}/1000" for e in range(100, 1001, 100)]
    (run,) = _run_dirs(tmp_path)
    assert run.parent.name == "linear_regression"
    mse = json.loads((run / "summary.json").read_text())["metrics"]["test/mse"]
    assert mse < 0.1  # noise variance is 0.01; the tutorial ends near 0.1 after 1000 epochs


def test_poly_sine_experiment_prints_the_fitted_polynomial(ember_cli):
    r = ember_cli("train", "experiment=poly_sine")
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip().splitlines()[-1]
    assert line.startswith("Result: y = ") and "x^3" in line
    # sin(x) ~ x - x^3/6 on [-pi, pi]: the fitted odd terms have those signs.
    assert " + " in line.split("x ")[0] and "- " in line.split("x^2")[1]


def test_default_train_reaches_the_paper_cnn_accuracy(ember_cli, tmp_path):
    """`ember train` with no arguments: MNIST-1D, 1-D CNN, at least 94% test accuracy."""
    r = ember_cli("train")
    assert r.returncode == 0, r.stderr
    (run,) = _run_dirs(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["metrics"]["test/accuracy"] >= 0.94


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["trainer.monitor=val/acc"],
            (
                "error: trainer.monitor='val/acc' is not a validation metric of this run; choose one of: "
                "val/loss, val/accuracy"
            ),
        ),
        (
            ["data.val_fraction=0", "trainer.early_stopping_patience=2"],
            "error: trainer.early_stopping_patience needs a validation split",
        ),
        (["model=poly3"], "error: model poly3 takes one scalar input per sample"),
        (["resume=runs/x"], "error: 'runs/x' is not a run directory (no config.yaml); pass resume=runs/<name>/<time>"),
    ],
)
def test_setup_mistakes_found_after_composition_also_create_nothing(ember_cli, tmp_path, args, expected):
    r = ember_cli("train", "data.num_samples=500", *args)
    assert r.returncode == 2
    assert r.stderr.startswith(expected), r.stderr
    assert not (tmp_path / "runs").exists()


def test_a_config_mistake_is_reported_before_the_heavy_imports(tmp_path):
    """A typo's one-line error should come fast: torchmetrics (and the scipy.signal it loads, ~1 s)
    is imported when a run builds its metrics, not to check a config."""
    code = (
        "import sys; from ember.cli import main; rc = main(['train', 'trainer.max_epoch=3']); print(rc, "
        "'torchmetrics' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["2", "False"], r.stdout + r.stderr
    assert "unknown key 'trainer.max_epoch'" in r.stderr
