"""trainer.strategy=fsdp checkpoints (torch.distributed.checkpoint directories) in one process:
bit-exact resume, incomplete directories ignored, and a strategy mismatch named on resume.
The multi-process cases (2 ranks, resharding to 1 and back) are in test_distributed.py."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ember.errors import CheckpointError
from ember.train.checkpoint import CheckpointFiles
from ember.train.distributed import Dist
from ember.train.sharded import ShardedCheckpointFiles

ARGS = ["model=mlp", "model.width=32", "data.num_samples=1000", "trainer.progress=none", "trainer.tensorboard=false", "sched=none", "trainer.deterministic=true", "trainer.strategy=fsdp", "data.val_fraction=0"]


def _train(*args, cwd):
    r = subprocess.run([sys.executable, "-m", "ember", "train", *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_fsdp_run_stopped_and_resumed_equals_an_uninterrupted_one(tmp_path):
    _train(*ARGS, "trainer.max_steps=30", f"run.dir={tmp_path / 'whole'}", cwd=tmp_path)
    _train(*ARGS, "trainer.max_steps=13", "trainer.checkpoint_every_n_steps=5", f"run.dir={tmp_path / 'part'}", cwd=tmp_path)
    ckpts = tmp_path / "part" / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("step-*.dcp")) == ["step-000000005.dcp", "step-000000010.dcp", "step-000000013.dcp"]
    assert (ckpts / "last.pt").is_file()  # the whole final model, for eval and export
    # A save killed before it finished leaves a directory without trainer.pt: never resumed from.
    shutil.copytree(ckpts / "step-000000013.dcp", ckpts / "step-000000020.dcp")
    (ckpts / "step-000000020.dcp" / "trainer.pt").unlink()
    r = _train(f"resume={tmp_path / 'part'}", "trainer.max_steps=30", cwd=tmp_path)
    assert "from step-000000013.dcp" in r.stdout
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "part" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_each_checkpoint_format_names_the_strategy_that_reads_it(tmp_path):
    (tmp_path / "step-000000005.dcp").mkdir()
    (tmp_path / "step-000000005.dcp" / "trainer.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="resume with trainer.strategy=fsdp"):
        CheckpointFiles(tmp_path, 3).newest_good(warn=lambda m: None)
    other = tmp_path / "ddp"
    other.mkdir()
    (other / "step-000000005.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="resume with trainer.strategy=ddp"):
        ShardedCheckpointFiles(other, 3, Dist()).newest_good(warn=lambda m: None)


def test_an_unreadable_trainer_state_falls_back_to_the_previous_checkpoint(tmp_path):
    for step in (5, 10):
        d = tmp_path / f"step-{step:09d}.dcp"
        d.mkdir()
        torch.save({"step": step}, d / "trainer.pt")
    (tmp_path / "step-000000010.dcp" / "trainer.pt").write_bytes(b"not a checkpoint")
    warnings = []
    ckpt, path = ShardedCheckpointFiles(tmp_path, 3, Dist()).newest_good(warn=warnings.append)
    assert path.name == "step-000000005.dcp" and ckpt["step"] == 5 and ckpt["sharded"] == str(path)
    assert len(warnings) == 1 and "step-000000010.dcp" in warnings[0]


def test_every_run_directory_reader_gets_the_whole_model(tmp_path):
    from ember.api import load_run

    _train(*ARGS, "trainer.max_steps=5", f"run.dir={tmp_path / 'r'}", cwd=tmp_path)
    model, _, _ = load_run(tmp_path / "r", "last")
    final = load_file(Path(tmp_path / "r" / "model.safetensors"))
    assert all(torch.equal(v, final[k]) for k, v in model.state_dict().items())
