import os
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

# The suite runs on 2 cores in 2 pytest workers (pytest -n 2), each starting training processes of
# its own: one thread per process keeps torch's thread pools from oversubscribing the cores, which
# slows everything several times over. Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def ember_cli(tmp_path):
    """Run `python -m ember ...` in a fresh process from tmp_path, as a user would."""

    def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, "COLUMNS": "120"}
        return subprocess.run(
            [sys.executable, "-m", "ember", *args],
            cwd=cwd or tmp_path,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )

    return run


@pytest.fixture
def code_payload(tmp_path):
    """An object whose plain unpickling runs a shell command that creates `marker`.

    The security tests hide it in each pickle-based format ember reads and assert `marker` never
    appears: .obj (to embed with pickle or torch.save), .bytes (pickled alone), .marker."""
    marker = tmp_path / "pwned"

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    return SimpleNamespace(obj=RunsCode(), bytes=pickle.dumps(RunsCode()), marker=marker)


@pytest.fixture
def typings(monkeypatch):
    """The configs typed from now on (each top-level OmegaConf.to_object, what ember.config.typed
    calls; OmegaConf calls it again for every dataclass nested inside, and those are not counted)."""
    from omegaconf import OmegaConf

    typed, depth, to_object = [], [0], OmegaConf.to_object

    def counted(cfg):
        if depth[0] == 0:
            typed.append(cfg)
        depth[0] += 1
        try:
            return to_object(cfg)
        finally:
            depth[0] -= 1

    monkeypatch.setattr(OmegaConf, "to_object", counted)
    return typed


# Tests that run only when selected with -m NAME, and why.
OPT_IN = {
    # torch.compile of every registered model: inductor compiles C++ on CPU, ~5 s a model.
    "compile": "torch.compile over the whole registry is opt-in: pytest tests/models -m compile",
}


def pytest_configure(config):
    for name, reason in OPT_IN.items():
        config.addinivalue_line("markers", f"{name}: {reason}")


def pytest_collection_modifyitems(config, items):
    selected = config.option.markexpr or ""
    for name, reason in OPT_IN.items():
        if name in selected:
            continue
        for item in items:
            if name in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


# Takes the lock on a directory in another process, says so, and holds it until stdin closes.
HOLDER = (
    "import sys; from ember.files import lock_dir; lock_dir(sys.argv[1]); print('held', flush=True); sys.stdin.read()"
)


@pytest.fixture
def hold_lock():
    """hold_lock(directory) -> the process that now holds the directory's run lock."""
    procs = []

    def start(directory: Path) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(directory)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
