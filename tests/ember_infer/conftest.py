"""ember_infer (the C library and Fortran module): built, installed and its CTest suite configured
once per test session, shared by the pytest workers: the first builds under a file lock, another
waits and reuses it. The build keeps both cores busy (the C++ compile beside the two AOTInductor
exports), so a worker waiting meanwhile costs little. (xdist_group would pin the tests to one
worker, but --dist loadgroup did not group them with pytest 9.2 and xdist 3.8 here.)"""

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

SOURCE = Path(__file__).resolve().parents[2] / "ember_infer"
MODELS = {  # name -> the overrides of a tiny run
    "classifier": ["model=cnn1d", "data=mnist1d", "data.num_samples=500", "model.channels=16"],
    "field": [
        "model=unet",
        "data=darcy",
        "data.num_samples=32",
        "data.resolution=16",
        "data.cache=false",
        "model.width=8",
    ],
}
BATCHES = (1, 5)
TOOLS = ("cmake", "c++", "cc", "gfortran")


@dataclass
class Built:
    prefix: Path  # where ember_infer is installed
    tests: Path  # the CTest build of ember_infer/tests against that installation
    data: Path  # the exports and cases
    runs: dict  # model name -> run directory

    # ember_infer/tests/CMakeLists.txt: per model, one test per format (every batch size, real32
    # and real64), one of the Fortran module's errors, one of the C library's; and the docs' example.
    ctest_count: int = 4 * len(MODELS) + 1


def missing_tools() -> list[str]:
    return [t for t in TOOLS if not shutil.which(t)]


def cmake(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["cmake", *args], cwd=cwd, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"cmake {' '.join(args)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done.stdout


def build(root: Path) -> Built:
    """Build and install ember_infer, export the two models, write the cases, build the tests."""
    from ember.api import train
    from ember.config import compose

    prefix, data = root / "install", root / "data"
    data.mkdir(parents=True)
    generator = [] if not shutil.which("ninja") else ["-G", "Ninja"]
    cmake(
        "-S",
        str(SOURCE),
        "-B",
        str(root / "build"),
        *generator,
        f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
        "-DCMAKE_BUILD_TYPE=Release",
        f"-DCMAKE_INSTALL_PREFIX={prefix}",
    )
    # The C++ build (one core) runs while Python trains and exports (the other).
    compiling = subprocess.Popen(
        ["cmake", "--build", str(root / "build")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        runs = {}
        for name, overrides in MODELS.items():
            cfg = compose([*overrides, "trainer.max_epochs=1", "trainer.progress=none", f"run.root={root / 'runs'}"])
            runs[name] = train(cfg).run_dir
            write_cases(runs[name], name, data)
    finally:
        log, _ = compiling.communicate(timeout=900)
    if compiling.returncode != 0:
        raise RuntimeError(f"building ember_infer failed:\n{log[-4000:]}")
    cmake("--install", str(root / "build"))
    (data / "garbage.aoti.pt2").write_bytes(b"not a model" * 100)
    shutil.copy(data / "classifier.aoti.pt2.json", data / "garbage.aoti.pt2.json")
    tests = root / "tests"
    cmake(
        "-S",
        str(SOURCE / "tests"),
        "-B",
        str(tests),
        *generator,
        f"-DCMAKE_PREFIX_PATH={prefix}",
        f"-DEMBER_TEST_DATA={data}",
        f"-DEMBER_TEST_BATCHES={';'.join(map(str, BATCHES))}",
    )
    cmake("--build", str(tests), "--parallel", "2")
    return Built(prefix, tests, data, runs)


def write_cases(run_dir: Path, name: str, data: Path) -> None:
    """<name>.ts and <name>.aoti.pt2, and per batch size the input and the eager model's output."""
    from ember.deploy.common import held_out_batch
    from ember.deploy.export import export_run
    from ember.rundir.loading import load_run
    from ember.scoring.units import Normalized

    def quiet(message: str) -> None:  # the export's progress lines would clutter the test log
        pass

    for fmt, suffix in (("torchscript", "ts"), ("aoti", "aoti.pt2")):
        result = export_run(run_dir, fmt, out=data / f"{name}.{suffix}", echo=quiet)
    meta = json.loads(result.meta_path.read_text())
    model, cfg, spec = load_run(run_dir, "best")
    eager = Normalized(model.eval(), spec).eval()
    x, _ = held_out_batch(cfg, spec, max(BATCHES))
    for b in BATCHES:
        with torch.no_grad():
            y = eager(x[:b])
        case = data / f"{name}_b{b}"
        # Fortran order: the Fortran array x(n1, ..., nk) is the tensor of shape (n1, ..., nk).
        np.asarray(x[:b].numpy(), np.float64).ravel(order="F").tofile(case.with_suffix(".x"))
        np.asarray(y.numpy(), np.float64).ravel(order="F").tofile(case.with_suffix(".y"))
        lines = [f"{t.ndim} {' '.join(map(str, t.shape))}" for t in (x[:b], y)]
        case.with_suffix(".txt").write_text(
            "\n".join([*lines, f"{meta['parity']['atol']} {meta['parity']['rtol']}"]) + "\n"
        )


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "cpp: builds ember_infer (C++, Fortran) against the torch wheel's libtorch with CMake (~1 min on 2 cores); "
        "deselect with -m 'not cpp'",
    )


@pytest.fixture(scope="session")
def ember_infer(tmp_path_factory) -> Built:
    if missing_tools():
        # .ci/run installs them: under CI a missing compiler is a failure, not a silent skip.
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            f"ember_infer needs {', '.join(missing_tools())} (apt-get install cmake g++ gfortran)"
        )
    from filelock import FileLock

    # Under xdist every worker's base temp sits in the session's own directory: build there once.
    shared = os.environ.get("PYTEST_XDIST_WORKER") is not None
    root = tmp_path_factory.getbasetemp().parent if shared else tmp_path_factory.mktemp("session")
    with FileLock(str(root / "ember_infer.lock")):
        marker = root / "ember_infer" / "built.json"
        if not marker.is_file():
            shutil.rmtree(root / "ember_infer", ignore_errors=True)
            try:
                built = build(root / "ember_infer")
            except RuntimeError as e:
                if "nlohmann_json" in str(e):  # the one library CMake finds on top of the compilers
                    pytest.skip("ember_infer needs the nlohmann-json headers (apt-get install nlohmann-json3-dev)")
                raise
            marker.write_text(json.dumps({"runs": {k: str(v) for k, v in built.runs.items()}}))
    runs = {k: Path(v) for k, v in json.loads(marker.read_text())["runs"].items()}
    base = root / "ember_infer"
    return Built(base / "install", base / "tests", base / "data", runs)
