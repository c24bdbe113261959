"""Checkpoint files: atomic writes, safe loading, the contents of a real run's checkpoints, RNG state."""

import pickle
import random

import numpy as np
import pytest
import torch

from ember.api import train
from ember.config import compose
from ember.data.spec import DataSpec
from ember.errors import CheckpointError
from ember.files import load_checkpoint, save_checkpoint
from ember.models import create_model
from ember.train import checkpoint


def test_save_atomic_then_load_round_trips(tmp_path):
    obj = {
        "a": torch.randn(3, 4),
        "b": torch.arange(5),
        "nested": {"c": torch.ones(2, dtype=torch.float64)},
        "n": 7,
        "s": "text",
    }
    path = tmp_path / "ck.pt"
    save_checkpoint(obj, path)
    back = load_checkpoint(path)
    assert set(back) == set(obj)
    assert torch.equal(back["a"], obj["a"]) and torch.equal(back["b"], obj["b"])
    assert torch.equal(back["nested"]["c"], obj["nested"]["c"]) and back["nested"]["c"].dtype == torch.float64
    assert back["n"] == 7 and back["s"] == "text"
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary file left behind


def test_save_atomic_overwrites(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint({"v": torch.tensor(1)}, path)
    save_checkpoint({"v": torch.tensor(2)}, path)
    assert load_checkpoint(path)["v"].item() == 2
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_failed_save_keeps_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint({"v": torch.tensor(1)}, path)
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
        save_checkpoint({"v": lambda: None}, path)  # a lambda cannot be pickled
    assert load_checkpoint(path)["v"].item() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_load_missing_file_raises_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path)  # a directory is not a checkpoint


def test_load_garbage_raises_checkpoint_error(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"this is not a checkpoint\x00\x01\x02" * 10)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(path)


def test_load_refuses_arbitrary_objects(tmp_path):
    # weights_only loading: a pickled object of an arbitrary class is not executed or restored.
    path = tmp_path / "obj.pt"
    torch.save({"obj": _Arbitrary()}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


class _Arbitrary:
    pass


# -- a real run's checkpoints ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cfg = compose(
        [
            "model=mlp",
            "data=linear",
            "model.width=8",
            "data.num_samples=60",
            "data.val_fraction=0.2",
            "data.batch_size=16",
            "trainer.max_epochs=2",
            "trainer.device=cpu",
            "trainer.progress=none",
            "trainer.tensorboard=false",
            f"run.root={root}",
        ]
    )
    result = train(cfg)
    return result.run_dir, result


@pytest.mark.parametrize("name", ["last.pt", "best.pt"])
def test_run_checkpoints_load_with_weights_only(run_dir, name):
    path, _ = run_dir
    file = path / "checkpoints" / name
    raw = torch.load(file, map_location="cpu", weights_only=True)
    ck = load_checkpoint(file)
    assert set(raw) == set(ck)
    for key in ("model", "optimizer", "state", "rng", "config", "spec"):
        assert key in ck, key
    assert ck["config"]["model"]["name"] == "mlp" and ck["config"]["trainer"]["max_epochs"] == 2
    assert ck["state"]["step"] > 0 and ck["state"]["epoch"] >= 1
    assert {"torch", "numpy", "python"} <= set(ck["rng"])
    assert len(ck["optimizer"]["param_groups"]) == 1

    # The weights fit a fresh model built from the saved spec and config.
    spec = DataSpec.from_dict(ck["spec"])
    model = create_model("mlp", spec, width=ck["config"]["model"]["width"])
    model.load_state_dict(ck["model"])
    # The directory holds the step checkpoints, last.pt, best.pt, and no half-written temporaries.
    names = {p.name for p in (path / "checkpoints").iterdir()}
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")]
    assert {"last.pt", "best.pt"} <= names and any(n.startswith("step-") for n in names)


def test_last_checkpoint_holds_the_final_state(run_dir):
    path, result = run_dir
    ck = load_checkpoint(path / "checkpoints" / "last.pt")
    assert ck["state"]["epoch"] == 2
    assert ck["state"]["step"] == result.summary["steps"]
    best = load_checkpoint(path / "checkpoints" / "best.pt")
    assert best["state"]["best_epoch"] == result.best_epoch
    # The returned model is the best checkpoint's weights.
    for k, v in result.model.state_dict().items():
        assert torch.equal(v, best["model"][k])


# -- RNG state ------------------------------------------------------------------------------------


def _draw():
    return (
        torch.rand(5),
        np.random.rand(5),
        np.random.randn(3),  # also exercises numpy's cached gaussian
        [random.random() for _ in range(5)],
    )


def _assert_same(a, b):
    assert torch.equal(a[0], b[0])
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    assert a[3] == b[3]


def test_rng_state_restores_all_generators():
    np.random.randn()  # leave a cached gaussian in numpy's state (has_gauss = 1)
    state = checkpoint.rng_state()
    first = _draw()
    checkpoint.set_rng_state(state)
    _assert_same(first, _draw())


def test_rng_state_survives_a_checkpoint_file(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn()
    path = tmp_path / "rng.pt"
    save_checkpoint({"rng": checkpoint.rng_state()}, path)
    first = _draw()
    _draw()  # move every generator on
    checkpoint.set_rng_state(load_checkpoint(path)["rng"])
    _assert_same(first, _draw())


# -- damaged checkpoints: one line naming the file, before any kernel sees them -----------------


def _adamw_state(model: torch.nn.Module, fused: bool = True) -> torch.optim.AdamW:
    opt = torch.optim.AdamW(model.parameters(), fused=fused)
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    return opt


def _wrong_shapes(state: dict) -> dict:
    return {
        **state,
        "state": {
            k: {n: (v if n == "step" else torch.zeros(3)) for n, v in s.items()} for k, s in state["state"].items()
        },
    }


def _one_more_parameter(state: dict) -> dict:
    return {**state, "state": {**state["state"], 99: state["state"][0]}}


def _int_moments(state: dict) -> dict:
    return {
        **state,
        "state": {k: {n: (v if n == "step" else v.long()) for n, v in s.items()} for k, s in state["state"].items()},
    }


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (_wrong_shapes, r"parameter 0: exp_avg has shape \(3,\), the parameter \(8, 4\)"),
        (_one_more_parameter, "state for parameter 99, which the model does not have"),
        (_int_moments, "parameter 0: exp_avg is torch.int64, not a floating-point tensor"),
        (lambda s: {**s, "param_groups": s["param_groups"] * 2}, r"parameter groups of \[4, 4\] parameters"),
        (lambda s: torch.zeros(3), "not an optimizer state"),
    ],
)
def test_an_optimizer_state_that_does_not_fit_the_parameters_is_refused(damage, why):
    """The fused AdamW kernel, handed moments of the wrong shape, corrupted the heap (SIGABRT)."""
    from ember.train.optim import check_optimizer_state

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 1))
    saved = _adamw_state(model).state_dict()
    check_optimizer_state(_adamw_state(model), saved, "last.pt")  # a fitting state passes
    with pytest.raises(CheckpointError, match=f"the optimizer state in 'last.pt' does not fit the model \\({why}"):
        check_optimizer_state(_adamw_state(model), damage(saved), "last.pt")


DAMAGED = {
    "bare_tensor": (lambda ck: torch.zeros(3), "it holds a Tensor, not a checkpoint's mapping"),
    "no_spec": (lambda ck: {k: v for k, v in ck.items() if k != "spec"}, "no spec"),
    "extra_state_key": (
        lambda ck: {**ck, "state": {**ck["state"], "bogus": 1}},
        r"unknown training-state keys \['bogus'\]",
    ),
    "optimizer_shapes": (
        lambda ck: {**ck, "optimizer": _one_more_parameter(ck["optimizer"])},
        "state for parameter 99",
    ),
}


def _damaged_copy(run_dir, dest, kind):
    import shutil

    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns(".lock"))
    for path in (dest / "checkpoints").glob("*.pt"):
        torch.save(DAMAGED[kind][0](torch.load(path, weights_only=True)), path)
    return dest


@pytest.mark.parametrize("kind", DAMAGED)
def test_resume_and_eval_of_a_damaged_checkpoint_are_one_line_naming_it(run_dir, tmp_path, capsys, kind):
    import re

    from ember.cli import main

    run = _damaged_copy(run_dir[0], tmp_path / "run", kind)
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    capsys.readouterr()
    for command in (["train", f"resume={run}", "trainer.max_epochs=3"], ["eval", f"run={run}"]):
        if command[0] == "eval" and kind != "bare_tensor":
            continue  # eval reads the weights only (the spec from spec.json)
        assert main(command) == 2
        out, err = capsys.readouterr()
        assert command[0] == "eval" or kind == "optimizer_shapes" or re.search(DAMAGED[kind][1], out), out
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        # resume warns about each damaged file and ends with "no readable checkpoint"; eval names best.pt
        assert re.search(DAMAGED[kind][1], err) or "no readable checkpoint" in err, err
    after = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after.keys() == before.keys()
    assert {k for k in after if after[k] != before[k]} <= {"summary.json"}, "nothing but the summary rewritten"


# -- a full disk, a deleted run directory, during training ---------------------------------------

TINY = [
    "experiment=linear_regression",
    "trainer.max_epochs=3",
    "trainer.checkpoint_every_n_steps=1",
    "trainer.progress=none",
    "track=[]",
    "run.report=false",
]


def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_previous_one(tmp_path, monkeypatch, capsys):
    import errno
    import os

    import ember.files
    from ember.cli import main

    real, calls = ember.files._torch_save, []

    def full(obj, f):  # the second checkpoint finds the disk full after a few bytes
        calls.append(1)
        if len(calls) > 1:
            f.write(b"half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(obj, f)

    monkeypatch.setattr(ember.files, "_torch_save", full)
    run = tmp_path / "run"
    assert main(["train", *TINY, f"run.dir={run}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write ") and len(err.strip().splitlines()) == 1, err
    assert "step-000000002.pt': the disk is full (" in err and "it needs about 20 kB" in err
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["last.pt", "step-000000001.pt"]  # no temporary left, the first kept and readable
    assert load_checkpoint(run / "checkpoints" / "last.pt")["state"]["step"] == 1


def test_a_run_directory_deleted_while_training_is_one_line(tmp_path, monkeypatch, capsys):
    import shutil

    from ember.cli import main
    from ember.train.checkpoint import CheckpointFiles

    real = CheckpointFiles.save

    def deleted(self, trainer, step):
        shutil.rmtree(self.dir.parent)
        return real(self, trainer, step)

    monkeypatch.setattr(CheckpointFiles, "save", deleted)
    assert main(["train", *TINY, f"run.dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the run directory ") and len(err.strip().splitlines()) == 1, err
    assert "was deleted or unmounted while the run wrote " in err and "start the run again" in err
