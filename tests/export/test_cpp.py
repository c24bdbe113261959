"""examples/cpp: a C/C++ program runs a TorchScript export through the torch wheel's libtorch
and gets the same outputs as Python. Builds with CMake (about 25 s on 2 cores): marked `cpp`."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from ember.export.common import held_out_batch
from ember.export.export import export_run, load_artifact

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cpp"

pytestmark = [
    pytest.mark.cpp,
    pytest.mark.skipif(not (shutil.which("cmake") and shutil.which("c++") and shutil.which("cc")), reason="needs cmake and a C/C++ compiler"),
]


def test_cpp_program_matches_python(cnn_run, tmp_path):
    from ember.api import load_run

    artifact = export_run(cnn_run, "torchscript", out=tmp_path / "model.ts", echo=lambda s: None).path
    build = tmp_path / "build"
    configure = ["cmake", "-S", str(EXAMPLE), "-B", str(build), f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}", "-DCMAKE_BUILD_TYPE=Release"]
    for cmd in (configure, ["cmake", "--build", str(build), "--parallel", "2"]):
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    _, cfg, spec = load_run(cnn_run)
    x, _ = held_out_batch(cfg, spec, 5)
    x.numpy().astype(np.float32).tofile(tmp_path / "input.f32")
    done = subprocess.run([str(build / "ember_predict"), str(artifact), str(tmp_path / "input.f32"), str(tmp_path / "output.f32"), *map(str, x.shape)], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "output shape: 5 10"

    from_cpp = torch.from_numpy(np.fromfile(tmp_path / "output.f32", dtype=np.float32).reshape(5, 10))
    with torch.no_grad():
        from_python = load_artifact(artifact)(x)
    torch.testing.assert_close(from_cpp, from_python, atol=1e-5, rtol=1e-5)
    classes = [int(line.rsplit(" ", 1)[1]) for line in done.stdout.splitlines()[1:]]
    assert classes == from_python.argmax(1).tolist()

    # A failure is a message, not a crash: a wrong input shape.
    (tmp_path / "bad.f32").write_bytes(np.zeros(7, np.float32).tobytes())
    bad = subprocess.run([str(build / "ember_predict"), str(artifact), str(tmp_path / "bad.f32"), str(tmp_path / "o.f32"), "1", "7"], check=False, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ")
