"""ember_infer, the C library and Fortran module: its CTest suite (built against the installed
package through find_package) passes, the C example agrees with Python on row-major input, and an
error without a status argument stops a Fortran program with the message."""

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from ember.deploy.export import load_artifact

pytestmark = pytest.mark.cpp


def run(*cmd, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


def test_the_ctest_suite_passes_every_model_format_batch_and_kind_against_python(ember_infer):
    done = run("ctest", "--test-dir", ember_infer.tests, "--output-on-failure", "-j", "2")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    summary = re.search(r"(\d+)% tests passed, (\d+) tests failed out of (\d+)", done.stdout)
    assert summary and summary.groups() == ("100", "0", str(ember_infer.ctest_count)), done.stdout[-2000:]


def test_the_c_example_on_row_major_float32_matches_python(ember_infer, tmp_path):
    model = ember_infer.data / "classifier.aoti.pt2"
    x = torch.from_numpy(
        np.fromfile(ember_infer.data / "classifier_b5.x").reshape(5, 1, 40, order="F").astype(np.float32, order="C")
    )
    x.numpy().tofile(tmp_path / "x.f32")  # C order
    done = run(ember_infer.prefix / "bin" / "ember_predict", model, tmp_path / "x.f32", tmp_path / "y.f32", *x.shape)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "output shape: 5 10"
    with torch.no_grad():
        want = load_artifact(model)(x)
    got = torch.from_numpy(np.fromfile(tmp_path / "y.f32", dtype=np.float32).reshape(5, 10))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert [int(line.rsplit(" ", 1)[1]) for line in done.stdout.splitlines()[1:]] == want.argmax(1).tolist()
    # The shape reversed, as a Fortran array of these values would hold it: an error, not wrong classes.
    bad = run(ember_infer.prefix / "bin" / "ember_predict", model, tmp_path / "x.f32", tmp_path / "o.f32", 40, 1, 5)
    assert bad.returncode == 1 and "input of shape (40, 1, 5), but the model takes (batch, 1, 40)" in bad.stderr


def test_without_status_a_failed_load_stops_the_fortran_program_with_the_message(ember_infer, tmp_path):
    (tmp_path / "init.txt").write_text("1 8\n20.0 0.005\n" + " ".join(["1.0"] * 8) + "\n")
    missing = tmp_path / "nowhere.ts"
    done = run(
        ember_infer.tests / "lorenz96" / "lorenz96", "net", missing, tmp_path / "init.txt", tmp_path / "out.bin", 1, 1
    )
    assert done.returncode != 0
    assert f"ember_infer: cannot load {missing}: no such file" in done.stderr and "pass status=" in done.stderr


def test_the_documented_fortran_example_is_the_one_ctest_builds_and_runs():
    root = Path(__file__).resolve().parents[2]
    page = (root / "docs" / "deploy" / "c-fortran.md").read_text()
    shown = re.search(r"```fortran\n(.*?)```", page, re.DOTALL).group(1)
    assert shown == (root / "ember_infer" / "examples" / "classify.f90").read_text()
    assert "add_test(NAME example.classify" in (root / "ember_infer" / "tests" / "CMakeLists.txt").read_text()
