import os
import subprocess
import sys
from pathlib import Path

import pytest

@pytest.fixture
def ember_cli(tmp_path):
    """Run `python -m ember ...` in a fresh process from tmp_path, as a user would."""

    def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, "COLUMNS": "120"}
        return subprocess.run([sys.executable, "-m", "ember", *args], cwd=cwd or tmp_path, capture_output=True, text=True, env=env, timeout=300)

    return run
