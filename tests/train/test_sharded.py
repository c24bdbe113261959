"""trainer.strategy=fsdp checkpoints (torch.distributed.checkpoint directories) in one process:
bit-exact resume, incomplete directories ignored, and a strategy mismatch named on resume.
The multi-process cases (2 ranks, resharding to 1 and back) are in test_distributed.py."""

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from ember.errors import CheckpointError, UnsafeFileError
from ember.train.checkpoint import CheckpointFiles
from ember.train.distributed import Dist
from ember.train.sharded import ShardedCheckpointFiles, load_weights

ARGS = [
    "model=mlp",
    "model.width=32",
    "data.num_samples=1000",
    "trainer.progress=none",
    "trainer.tensorboard=false",
    "sched=none",
    "trainer.deterministic=true",
    "trainer.strategy=fsdp",
    "data.val_fraction=0",
]


def _train(*args, cwd):
    r = subprocess.run(
        [sys.executable, "-m", "ember", "train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_fsdp_run_stopped_and_resumed_equals_an_uninterrupted_one(tmp_path):
    _train(*ARGS, "trainer.max_steps=30", f"run.dir={tmp_path / 'whole'}", cwd=tmp_path)
    _train(
        *ARGS,
        "trainer.max_steps=13",
        "trainer.checkpoint_every_n_steps=5",
        f"run.dir={tmp_path / 'part'}",
        cwd=tmp_path,
    )
    ckpts = tmp_path / "part" / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("step-*.dcp")) == [
        "step-000000005.dcp",
        "step-000000010.dcp",
        "step-000000013.dcp",
    ]
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
    from ember.rundir.loading import load_run

    _train(*ARGS, "trainer.max_steps=5", f"run.dir={tmp_path / 'r'}", cwd=tmp_path)
    model, _, _ = load_run(tmp_path / "r", "last")
    final = load_file(Path(tmp_path / "r" / "model.safetensors"))
    assert all(torch.equal(v, final[k]) for k, v in model.state_dict().items())


def _model_and_optimizer(seed):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randn(8, 3)).sum().backward()
    optimizer.step()
    return SimpleNamespace(model=model, optimizer=optimizer)


def _save_dcp(trainer, path, tamper=None):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(trainer.model, trainer.optimizer)
    if tamper:
        tamper(optim_state)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=path, no_dist=True)


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_a_genuine_dcp_checkpoint_loads_through_the_safe_reader(tmp_path):
    saved, fresh = _model_and_optimizer(0), _model_and_optimizer(1)
    _save_dcp(saved, tmp_path / "step.dcp")
    load_weights(fresh, tmp_path / "step.dcp")
    assert all(
        torch.equal(a, b)
        for a, b in zip(saved.model.state_dict().values(), fresh.model.state_dict().values(), strict=True)
    )
    assert fresh.optimizer.param_groups[0]["lr"] == 0.01
    exp_avg = [fresh.optimizer.state[p]["exp_avg"] for p in fresh.model.parameters()]
    assert all(
        torch.equal(a, saved.optimizer.state[p]["exp_avg"])
        for a, p in zip(exp_avg, saved.model.parameters(), strict=True)
    )


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_dcp_files_that_would_run_code_are_refused_unread(tmp_path, code_payload):
    # .metadata: DCP's reader would pickle.load it.
    _save_dcp(_model_and_optimizer(0), tmp_path / "a.dcp")
    (tmp_path / "a.dcp" / ".metadata").write_bytes(code_payload.bytes)
    with pytest.raises(
        UnsafeFileError,
        match=r"a.dcp/.metadata names posix.system, .* delete .*a.dcp to resume from the checkpoint before it",
    ):
        load_weights(_model_and_optimizer(1), tmp_path / "a.dcp")
    # A non-tensor value (the optimizer's lr) in the shards: DCP's planner would torch.load it with weights_only=False.
    _save_dcp(
        _model_and_optimizer(0), tmp_path / "b.dcp", tamper=lambda s: s["param_groups"][0].update(lr=code_payload.obj)
    )
    with pytest.raises(
        UnsafeFileError, match=r"b.dcp holds optimizer.param_groups.0.lr as a pickle that names more than plain data"
    ):
        load_weights(_model_and_optimizer(1), tmp_path / "b.dcp")
    (tmp_path / "c.dcp").mkdir()
    (tmp_path / "c.dcp" / ".metadata").write_bytes(b"\x80\x04truncated")
    with pytest.raises(CheckpointError, match=r"cannot read .*c.dcp/.metadata \(UnpicklingError"):
        load_weights(_model_and_optimizer(1), tmp_path / "c.dcp")
    assert not code_payload.marker.exists()


def test_resume_refuses_a_crafted_dcp_metadata_in_one_line(tmp_path, ember_cli, code_payload):
    _train(
        *ARGS, "trainer.max_steps=10", "trainer.checkpoint_every_n_steps=5", f"run.dir={tmp_path / 'r'}", cwd=tmp_path
    )
    (tmp_path / "r" / "checkpoints" / "step-000000010.dcp" / ".metadata").write_bytes(code_payload.bytes)
    r = ember_cli("train", f"resume={tmp_path / 'r'}", "trainer.max_steps=20")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "names posix.system" in lines[0], r.stderr
    assert not code_payload.marker.exists()
