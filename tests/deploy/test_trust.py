"""TorchScript and AOTInductor files are programs: predict loads this user's own ember exports
(by the hash ember recorded), and others only with trust=true. Damaged exports, empty inputs and
killed exports are one line or cleaned up, never a traceback or litter."""

import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from ember.cli import main
from ember.deploy import trust
from ember.deploy.common import work_dir
from ember.deploy.export import export_run
from ember.deploy.predict import predict
from ember.errors import DataError, EmberError, UnsafeFileError


@pytest.fixture
def record(tmp_path, monkeypatch):
    """This user's record of exports, kept in the test's own folder."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return tmp_path / "data" / "ember" / "exports.sha256"


@pytest.fixture
def x_npy(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(3, 1, 40)).astype(np.float32))
    return tmp_path / "x.npy"


class Reads(nn.Module):
    """What a crafted file can do: read a local file (torch.from_file) into its outputs."""

    def forward(self, x):
        return (
            x.reshape(x.shape[0], -1)[:, :10] * 0 + torch.from_file("/etc/hostname", size=1, dtype=torch.uint8).float()
        )


def _foreign(tmp_path, own):
    """A crafted program beside a copy of an ember description, its hash made to match."""
    path = tmp_path / "crafted" / "model.ts"
    path.parent.mkdir()
    with warnings.catch_warnings():  # torch.jit's deprecation note
        warnings.simplefilter("ignore")
        torch.jit.script(Reads()).save(str(path))
    meta = json.loads(own.meta_path.read_text())
    meta["sha256"] = trust.sha256(path)
    (tmp_path / "crafted" / "model.ts.json").write_text(json.dumps(meta))
    return path


def test_own_export_loads_a_crafted_one_needs_trust(cnn_run, tmp_path, record, x_npy):
    lines = []
    own = export_run(cnn_run, "torchscript", out=tmp_path / "own" / "model.ts", echo=lines.append)
    assert record.read_text().split()[0] == json.loads(own.meta_path.read_text())["sha256"] == trust.sha256(own.path)
    got = predict(own.path, x_npy, echo=lines.append)
    assert got.values.shape == (3, 10)
    assert any(
        "is a TorchScript program and loading it runs its code; accepted as ember's own export" in line
        for line in lines
    )

    crafted = _foreign(tmp_path, own)
    with pytest.raises(
        UnsafeFileError,
        match=(
            r"model.ts is a TorchScript program and loading it would run its code; its hash is not among the exports "
            r"ember recorded for you .*pass trust=true only if you trust its source.*\.safetensors or \.onnx"
        ),
    ):
        predict(crafted, x_npy)
    lines.clear()
    assert predict(crafted, x_npy, trust=True, echo=lines.append).values.shape == (3, 10)
    assert any("trust=true: running it as given" in line for line in lines)

    shutil.copy(crafted, own.path)  # the own export's file swapped after export
    with pytest.raises(
        UnsafeFileError,
        match=r"its sha256 differs from the one its description recorded at export: the file changed since",
    ):
        predict(own.path, x_npy)


def test_the_cli_refuses_in_one_line_and_takes_trust(cnn_run, tmp_path, record, x_npy, capsys):
    own = export_run(cnn_run, "torchscript", out=tmp_path / "own" / "model.ts", echo=lambda s: None)
    crafted = _foreign(tmp_path, own)
    assert main(["predict", f"run={crafted}", f"input={x_npy}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "trust=true" in err
    assert main(["predict", f"run={crafted}", f"input={x_npy}", "trust=true"]) == 0
    assert "loading it runs its code" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["not json", "no spec", "bad spec", "corrupt file"])
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_damaged_exports_are_one_line(cnn_run, tmp_path, record, x_npy, fmt, damage, capsys):
    result = export_run(
        cnn_run, fmt, out=tmp_path / f"m.{'ts' if fmt == 'torchscript' else 'onnx'}", echo=lambda s: None
    )
    meta = json.loads(result.meta_path.read_text())
    if damage == "not json":
        result.meta_path.write_text("{'spec': ")
    elif damage == "no spec":
        result.meta_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "spec"}))
    elif damage == "bad spec":
        result.meta_path.write_text(
            json.dumps(meta | {"spec": {"input_shape": [1, 40], "task": "regression", "colour": 1}})
        )
    else:
        result.path.write_bytes(result.path.read_bytes()[:200])
    with pytest.raises(EmberError) as e:
        predict(result.path, x_npy, trust=True, echo=lambda s: None)  # trust: the file's damage, not its origin
    assert "\n" not in str(e.value) and ("export the run again" in str(e.value))
    assert main(["predict", f"run={result.path}", f"input={x_npy}", "trust=true"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_zero_samples_is_one_line(cnn_run, tmp_path, capsys):
    np.save(tmp_path / "empty.npy", np.zeros((0, 1, 40), np.float32))
    with pytest.raises(DataError, match=r"empty.npy holds no samples \(array shape \(0, 1, 40\)\); pass at least one"):
        predict(cnn_run, tmp_path / "empty.npy")
    assert main(["predict", f"run={cnn_run}", f"input={tmp_path / 'empty.npy'}"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_a_killed_exports_work_folder_is_removed_by_the_next_export(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True, text=True
    ).stdout.strip()
    stale = tmp_path / f".model.onnx.{dead}.abc123.export"
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"half")
    mine = work_dir(tmp_path / "model.onnx")
    assert not stale.exists() and mine.is_dir() and mine.name.startswith(f".model.onnx.{os.getpid()}.")
    other = work_dir(tmp_path / "model.onnx")  # this process's own folders stay: they may be in use
    assert mine.is_dir() and other.is_dir()


def test_an_aoti_package_from_elsewhere_is_refused_before_loading(cnn_run, tmp_path, record, x_npy):
    """The check comes before AOTInductor's loader sees the file (which would run its library)."""
    own = export_run(cnn_run, "safetensors", out=tmp_path / "m.safetensors", echo=lambda s: None)
    path = tmp_path / "model.aoti.pt2"
    path.write_bytes(b"PK not a package")
    (tmp_path / "model.aoti.pt2.json").write_text(own.meta_path.read_text())
    with pytest.raises(
        UnsafeFileError, match=r"model.aoti.pt2 is an AOTInductor program and loading it would run its code"
    ):
        predict(path, x_npy)
