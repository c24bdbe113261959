"""Damaged run directories, one kind at a time, for the tests of every command that reads a run."""

import shutil
from pathlib import Path

import torch

# kind -> (file, bytes written over it); best.pt gets another model's weights (see damage()).
DAMAGE = {
    "config_not_yaml": ("config.yaml", b"a: [1, 2\n  b: }"),
    "config_a_list": ("config.yaml", b"- 1\n- 2\n"),
    "config_not_utf8": ("config.yaml", b"model:\n  name: caf\xe9\n"),
    "spec_not_json": ("spec.json", b'{"input'),
    "spec_a_list": ("spec.json", b"[1, 2]"),
    "spec_other_keys": ("spec.json", b'{"shape": [1]}'),
    "best_from_another_model": ("checkpoints/best.pt", None),
}


def damage(run: Path, kind: str, dest: Path) -> tuple[Path, str]:
    """A copy of `run` at `dest` with one file damaged; returns the copy and that file's name."""
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns(".lock"))
    name, data = DAMAGE[kind]
    if data is None:
        torch.save({"model": {"other.weight": torch.zeros(3, 3)}}, dest / name)
    else:
        (dest / name).write_bytes(data)
    return dest, Path(name).name
