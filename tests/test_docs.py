"""The documentation site builds with `mkdocs build --strict`: a broken link, a missing page or a
docstring mkdocstrings cannot read fails the suite."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_site_builds_strictly_with_the_registry_tables(tmp_path):
    pytest.importorskip("mkdocs", reason="pip install 'ember[docs]' to build the site")
    site = tmp_path / "site"
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    # Every command has its page, and the tables generated from the registries list every entry.
    from ember.data import list_data
    from ember.models import list_models

    commands = [
        "train",
        "eval",
        "tune",
        "export",
        "predict",
        "bench",
        "compress",
        "report",
        "runs",
        "summary",
        "graph",
        "sample",
        "profile",
        "config",
    ]
    assert all((site / "commands" / c / "index.html").is_file() for c in commands)
    data_page, models_page = (site / "data/index.html").read_text(), (site / "models/index.html").read_text()
    assert all(f"<code>{n}</code>" in data_page for n in list_data())
    assert all(f"<code>{n}</code>" in models_page for n in list_models())
    assert "ember.api.fit" in (site / "api/index.html").read_text()
    shutil.rmtree(site)
