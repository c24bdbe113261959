""".pt2 archives are checked before torch.export.load: each way a crafted archive runs code under
torch.export.load is refused, ember's own archives still load, and the CLI says so in one line."""

import io
import json
import zipfile

import numpy as np
import pytest
import torch

from ember.deploy.common import ExportError
from ember.deploy.pt2 import _plain_expression, _plain_target, load_program
from ember.errors import UnsafeFileError


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.linear(x).relu()


@pytest.fixture
def pt2(tmp_path):
    """A genuine archive of a small program with a dynamic batch (so it holds a shape expression)."""
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(Tiny(), (torch.randn(2, 4),), dynamic_shapes=({0: batch},), strict=False)
    torch.export.save(program, tmp_path / "model.pt2")
    return tmp_path / "model.pt2"


def _files(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def _write(path, files: dict[str, bytes]):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def _pickled_weight(files, payload):
    config = json.loads(files["model/data/weights/model_weights_config.json"])
    entry = next(iter(config["config"].values()))
    entry["use_pickle"] = True
    files["model/data/weights/model_weights_config.json"] = json.dumps(config).encode()
    buffer = io.BytesIO()
    torch.save(payload.obj, buffer)
    files["model/data/weights/" + entry["path_name"]] = buffer.getvalue()


def _sample_inputs(files, payload):
    buffer = io.BytesIO()
    torch.save(payload.obj, buffer)
    files["model/data/sample_inputs/model.pt"] = buffer.getvalue()


def _opaque_constant(files, payload):
    files["model/data/constants/model_constants_config.json"] = json.dumps(
        {"config": {"c": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True, "tensor_meta": None}}}
    ).encode()
    files["model/data/constants/opaque_obj_0"] = payload.bytes


def _shape_expression(files, payload):
    text = files["model/models/model.json"].decode()
    start = text.index('"expr_str": "') + len('"expr_str": "')
    end = text.index('"', start)
    files["model/models/model.json"] = (
        text[:start] + f"__import__('os').system('touch {payload.marker}')" + text[end:]
    ).encode()


def _native_code(files, payload):
    files["model/data/aotinductor/model/model.so"] = b"\x7fELF"


def _library_target(files, payload):
    text = files["model/models/model.json"].decode()
    files["model/models/model.json"] = text.replace(
        '"target": "torch.ops.aten.linear.default"', '"target": "torch.ops.load_library"', 1
    ).encode()


# (tamper, what the refusal names, whether plain torch.export.load runs the payload of this case)
ATTACKS = {
    "a weight stored as a pickle": (_pickled_weight, "as a pickle", True),
    "sample inputs that are not tensors": (_sample_inputs, "sample_inputs/model.pt, which is not plain tensors", True),
    "an opaque pickled constant": (
        _opaque_constant,
        "(stores c .* as a pickle|opaque_obj_0, which a plain exported model never has)",
        True,
    ),
    "a shape expression that is Python": (_shape_expression, 'holds the shape expression "__import__', True),
    "a native library": (_native_code, "aotinductor/model/model.so, which a plain exported model never has", False),
    "a node calling torch.ops.load_library": (_library_target, "calls 'torch.ops.load_library'", False),
}


@pytest.mark.parametrize("case", ATTACKS)
def test_crafted_archives_are_refused_before_anything_runs(pt2, tmp_path, code_payload, case):
    tamper, names, live = ATTACKS[case]
    files = _files(pt2)
    tamper(files, code_payload)
    crafted = _write(tmp_path / "crafted.pt2", files)
    with pytest.raises(UnsafeFileError, match=f"crafted.pt2 .*{names}.*loading it could run code, so ember refuses it"):
        load_program(crafted)
    assert not code_payload.marker.exists()
    if live:  # the case is a real attack: torch.export.load itself runs the payload
        try:
            torch.export.load(crafted)
        except Exception:  # noqa: BLE001, S110 - the payload ran before torch noticed anything
            pass
        assert code_payload.marker.exists()


def test_genuine_archives_load_also_rewritten(pt2, tmp_path):
    x = torch.randn(5, 4)
    expected = torch.export.load(pt2).module()(x)
    assert torch.equal(load_program(pt2).module()(x), expected)
    rewritten = _write(tmp_path / "rewritten.pt2", _files(pt2))  # another zip writer, same files
    assert torch.equal(load_program(rewritten).module()(x), expected)
    (tmp_path / "not.pt2").write_bytes(b"not a zip")
    with pytest.raises(ExportError, match="not a .pt2 archive"):
        load_program(tmp_path / "not.pt2")


def test_shape_expressions_and_targets():
    assert _plain_expression("Symbol('s77', positive=True, integer=True)")
    assert _plain_expression("Mul(Integer(2), Symbol('s0', integer=True))") and _plain_expression("2*s0 + 1")
    assert _plain_expression("FloorDiv(Symbol('s0', integer=True), Integer(4))") and _plain_expression(
        "Float('1.5', precision=53)"
    )
    for bad in [
        "exec(chr(105))",
        "Max('__import__(\"os\")', 1)",
        "Symbol('a b')",
        "s0.__class__",
        "lambda: 0",
        "Symbol(s0)(1)",
        "x[0]",
    ]:
        assert not _plain_expression(bad), bad
    assert (
        _plain_target("torch.ops.aten.linear.default")
        and _plain_target("_operator.getitem")
        and _plain_target("torch.sym_max")
    )
    for bad in [
        "torch.ops.load_library",
        "torch.os.system",
        "_operator.methodcaller",
        "builtins.eval",
        "torch.ops.aten.__class__.x",
        "#ns:op",
    ]:
        assert not _plain_target(bad), bad


def test_predict_refuses_a_crafted_archive_in_one_line(cnn_run, ember_cli, tmp_path, code_payload):
    from ember.deploy.export import export_run

    exported = export_run(cnn_run, "exported", echo=lambda s: None).path
    files = _files(exported)
    _sample_inputs(files, code_payload)
    crafted = _write(tmp_path / "model.pt2", files)
    (tmp_path / "model.pt2.json").write_bytes(exported.with_name(exported.name + ".json").read_bytes())
    np.save(tmp_path / "x.npy", np.zeros((3, 1, 40), np.float32))
    r = ember_cli("predict", f"run={crafted}", f"input={tmp_path / 'x.npy'}")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "which is not plain tensors" in lines[0], r.stderr
    assert not code_payload.marker.exists()
