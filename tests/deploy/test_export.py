"""ember export: every format runs back through its own runtime and matches the eager model."""

import json

import pytest
import torch
from torch import nn

from ember.cli import main
from ember.data.spec import DataSpec
from ember.deploy import ExportError, Normalized
from ember.deploy.common import held_out_batch
from ember.deploy.export import RUNNERS, export_model, export_run, load_artifact
from ember.rundir.loading import load_run


def _quiet(_):
    pass


@pytest.mark.parametrize("fmt", ["torchscript", "exported", "safetensors"])
def test_formats_match_the_eager_model_on_raw_inputs(cnn_run, fmt):
    result = export_run(cnn_run, fmt, echo=_quiet)
    assert result.path.is_file() and result.max_abs_error <= 1e-5
    meta = json.loads(result.meta_path.read_text())
    assert meta["inputs"] == [{"name": "input", "shape": ["batch", 1, 40], "dtype": "float32"}]
    assert meta["outputs"] == [{"name": "logits", "shape": ["batch", 10], "dtype": "float32"}]
    assert meta["parity"]["batch_sizes"] == [64, 1]
    # The artifact takes raw inputs: the run's standardization is inside it.
    model, cfg, spec = load_run(cnn_run)
    model.eval()
    raw, _ = held_out_batch(cfg, spec, 5)
    mean, std = torch.tensor(spec.mean).reshape(-1, 1), torch.tensor(spec.std).reshape(-1, 1)
    assert abs(spec.mean[0]) > 1e-4 or abs(spec.std[0] - 1) > 1e-3  # so folding is actually tested
    with torch.no_grad():
        want = model((raw - mean) / std)
        got = load_artifact(result.path)(raw)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert not [p for p in result.path.parent.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_onnx_has_a_dynamic_batch_and_matches(onnx_export):
    import onnxruntime as ort

    assert onnx_export.max_abs_error <= 1e-4
    session = ort.InferenceSession(str(onnx_export.path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.shape[1:], out.name) == ("input", [1, 40], "logits")
    assert isinstance(inp.shape[0], str)  # symbolic: any batch size
    assert session.run(None, {"input": torch.randn(3, 1, 40).numpy()})[0].shape == (3, 10)


def test_fixed_batch(cnn_run, tmp_path):
    result = export_run(cnn_run, "torchscript", out=tmp_path / "b4.ts", batch=4, echo=_quiet)
    meta = json.loads(result.meta_path.read_text())
    assert meta["inputs"][0]["shape"] == [4, 1, 40] and meta["parity"]["batch_sizes"] == [4]


def test_failed_parity_leaves_no_artifact(cnn_run, tmp_path, monkeypatch):
    def off_by_a_bit(path, wrapper, model_config):
        run = load_artifact(path, "torchscript")
        return lambda x: run(x) + 1e-2

    monkeypatch.setitem(RUNNERS, "torchscript", off_by_a_bit)
    out = tmp_path / "export" / "model.ts"
    with pytest.raises(
        ExportError,
        match=r"parity check failed: .* differs from the eager model by up to 0\.01.*no artifact was written",
    ):
        export_run(cnn_run, "torchscript", out=out, echo=_quiet)
    assert list(out.parent.iterdir()) == []


class DataDependent(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # a branch on a value: torch.export cannot trace it, TorchScript can script it
            return x * 2
        return x


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(40, 8), DataDependent())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.body(x))


@pytest.mark.parametrize(
    ("fmt", "title", "name"), [("exported", "torch.export", "model.pt2"), ("aoti", "AOTInductor", "model.aoti.pt2")]
)
def test_unexportable_layer_is_named_with_the_formats_that_work(tmp_path, fmt, title, name):
    spec = DataSpec(input_shape=(1, 40), task="classification", num_classes=3)
    with pytest.raises(
        ExportError,
        match=(
            rf"cannot export to {title}: layer 'body.2' \(DataDependent\) fails: .*formats that work for this model: "
            r"torchscript, safetensors$"
        ),
    ):
        export_model(Normalized(Net(), spec), fmt, tmp_path / name, torch.randn(8, 1, 40), spec=spec)
    assert list(tmp_path.iterdir()) == []


def test_missing_onnx_names_the_extra(cnn_run, tmp_path, monkeypatch):
    import importlib

    real = importlib.import_module

    def no_onnxscript(name, *args):
        if name == "onnxscript":
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr("ember.deploy.common.importlib.import_module", no_onnxscript)
    with pytest.raises(
        ExportError,
        match=r"format=onnx needs the onnxscript package, which is not installed; pip install 'ember\[export\]'",
    ):
        export_run(cnn_run, "onnx", out=tmp_path / "m.onnx", echo=_quiet)


def test_torchscript_deprecation_is_said_once_in_embers_words_and_no_torch_warning_leaks(cnn_run, tmp_path, recwarn):
    import warnings

    warnings.simplefilter("always")  # a torch.jit DeprecationWarning would show in recwarn
    lines = []
    result = export_run(cnn_run, "torchscript", out=tmp_path / "m.ts", echo=lines.append)
    load_artifact(result.path)(torch.zeros(2, 1, 40))
    notes = [line for line in lines if "deprecated" in line]
    assert len(notes) == 1 and "FTorch" in notes[0] and "format=aoti" in notes[0]
    assert not [w for w in recwarn if "deprecated" in str(w.message)], [str(w.message) for w in recwarn]
    # The other formats do not mention it.
    lines.clear()
    export_run(cnn_run, "exported", out=tmp_path / "m.pt2", echo=lines.append)
    assert lines and not [line for line in lines if "TorchScript" in line]


def test_cli(cnn_run, tmp_path, capsys):
    assert main(["export", f"run={cnn_run}", "format=torchscript", f"out={tmp_path / 'm.ts'}"]) == 0
    out = capsys.readouterr().out
    assert "parity on 64 samples of the test split: max abs error" in out and (tmp_path / "m.ts.json").is_file()
    assert main(["export", f"run={cnn_run}", "format=onx"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: unknown export format 'onx'; did you mean onnx? choose one of: torchscript, onnx, "
        "exported, aoti, safetensors"
    )
    assert main(["export", f"run={cnn_run}", "formt=onnx"]) == 2
    assert "did you mean format=?" in capsys.readouterr().err
    assert main(["export", f"run={tmp_path}", "format=onnx"]) == 2
    assert "is not a run directory" in capsys.readouterr().err
