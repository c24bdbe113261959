"""Helpers for the data tests: a quiet short training run, and the CLI's bad-input contract.

A plain module, not a conftest.py: tests/test_cli.py imports names from `conftest`, which a
second conftest.py module would shadow.
"""

from pathlib import Path

QUIET = ["trainer.progress=none", "trainer.tensorboard=false"]


def fit(tmp_path: Path, *overrides: str):
    """ember.api.train on a composed config, writing under tmp_path, printing nothing."""
    from ember.api import train
    from ember.config import compose
    from ember.track.console import Console

    cfg = compose([*overrides, *QUIET, f"run.root={tmp_path / 'runs'}"])
    return train(cfg, console=Console("none"))


def cli_train(ember_cli, *args: str):
    return ember_cli("train", *args, *QUIET)


def cli_error(ember_cli, tmp_path: Path, *args: str, match: str) -> str:
    """`ember train ARGS` must fail with one `error:` line (exit 2) and create no run directory."""
    r = cli_train(ember_cli, *args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert match in lines[0], lines[0]
    assert not (tmp_path / "runs").exists(), "a failed data build must not create a run directory"
    return lines[0]


def run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("runs/*/*/config.yaml"))
