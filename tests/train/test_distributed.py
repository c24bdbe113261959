"""Several processes on CPU with gloo, started by the real torchrun: equivalence, agreement, resume."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

COMMON = [
    "model=mlp",
    "model.width=32",
    "data.num_samples=2000",
    "trainer.progress=none",
    "trainer.tensorboard=false",
    "sched=none",
    "optim=sgd",
    "optim.lr=0.05",
]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _torchrun(
    nproc: int, args: list[str], cwd: Path, extra: list[str] = (), script: str | None = None
) -> subprocess.CompletedProcess:
    target = [script] if script else ["-m", "ember", "train"]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        *extra,
        *target,
        *args,
    ]
    for _ in range(3):
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=_env(), timeout=300)
        # Gloo's TCP mesh setup on a loaded 2-core machine now and then refuses a connection
        # before training starts (seen in ~1 of 20 launches); that launch is retried, the test's
        # claims are not loosened.
        if GLOO_FLAKE not in r.stderr:
            return r
    return r


GLOO_FLAKE = "Gloo connectFullMesh failed"


def _weights(run: Path) -> dict:
    return load_file(run / "model.safetensors")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_of_batch_b_equal_one_process_of_batch_2b(tmp_path, strategy):
    # 1440 training samples: 45 global batches of 32 per epoch; 50 steps cross an epoch boundary.
    steps = ["trainer.max_steps=50", "trainer.max_epochs=5", f"trainer.strategy={strategy}"]
    one = subprocess.run(
        [sys.executable, "-m", "ember", "train", *COMMON, *steps, "data.batch_size=32", f"run.dir={tmp_path / 'one'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert one.returncode == 0, one.stderr
    two = _torchrun(2, [*COMMON, *steps, "data.batch_size=16", f"run.dir={tmp_path / 'two'}"], tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    if strategy == "fsdp":  # each rank wrote its own shard of every step checkpoint
        newest = sorted((tmp_path / "two" / "checkpoints").glob("step-*.dcp"))[-1]
        assert newest.name == "step-000000050.dcp"
        assert sorted(p.name for p in newest.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert "2 processes, global batch 16 x 2 x 1 = 32" in two.stdout
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    # Each rank evaluated half of the validation and test splits; the combined metrics are the
    # whole splits' (torchmetrics' sync and a summed loss), as the one process measured them.
    one_m = json.loads((tmp_path / "one" / "summary.json").read_text())["metrics"]
    two_m = json.loads((tmp_path / "two" / "summary.json").read_text())["metrics"]
    assert one_m.keys() == two_m.keys() and any(k.startswith("test/") for k in one_m)
    for k in one_m:
        assert two_m[k] == pytest.approx(one_m[k], rel=1e-4, abs=1e-6), k
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["steps"] == 50 and summary["status"] == "finished"
    # torchrun's two local ranks share the CPUs: each rank's thread budget is half of them.
    assert summary["threads"]["budget"] == max(1, len(os.sched_getaffinity(0)) // 2)
    # Only rank 0 wrote: one record per logged step, none twice.
    steps_logged = [
        json.loads(line)["step"]
        for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
        if '"train"' in line
    ]
    assert steps_logged == sorted(set(steps_logged))


def test_trainer_devices_launches_torchrun_itself(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ember",
            "train",
            *COMMON,
            "trainer.devices=2",
            "trainer.max_epochs=1",
            f"run.dir={tmp_path / 'r'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 processes, global batch 64 x 2 x 1 = 128" in r.stdout
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "finished"


def test_early_stopping_ends_both_ranks(tmp_path):
    r = _torchrun(
        2,
        [
            *COMMON,
            "optim.lr=0",
            "trainer.max_epochs=50",
            "trainer.early_stopping_patience=2",
            f"run.dir={tmp_path / 'r'}",
        ],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["stop_reason"].startswith("early stopping")


NAN_ON_RANK_1 = '''
import os, sys, torch, ember
from torch import nn
rank = int(os.environ["RANK"])
g = torch.Generator().manual_seed(0)
x, y = torch.randn(256, 4, generator=g), torch.randn(256, 1, generator=g)
torch.manual_seed(0)
model = nn.Linear(4, 1)
if rank == 1:  # only this rank's data goes bad: its loss is NaN, rank 0's is not
    x[:] = float("nan")
try:
    ember.fit(model, (x, y), max_epochs=5, batch_size=8, shuffle=False, progress="none", tensorboard=False,
              run={"root": sys.argv[1]})
except ember.EmberError as e:
    print(f"rank {rank}: {e}", file=sys.stderr)
    sys.exit(e.exit_code)
'''


def test_a_nan_on_one_rank_ends_both(tmp_path):
    script = tmp_path / "nan_on_one_rank.py"
    script.write_text(NAN_ON_RANK_1)
    start = time.monotonic()
    r = _torchrun(2, [str(tmp_path / "runs")], tmp_path, script=str(script))
    assert r.returncode != 0
    assert time.monotonic() - start < 120  # no rank hangs waiting for the other
    assert "rank 0: non-finite loss or gradient norm (on some rank) at step 1" in r.stderr
    assert "rank 1: non-finite" in r.stderr


STALL_ON_RANK_1 = '''
import os, sys, time, torch, ember
from torch import nn
rank = int(os.environ["RANK"])


class Stalls(nn.Linear):
    calls = 0

    def forward(self, x):
        self.calls += 1
        if rank == 1 and self.calls == 5:
            time.sleep(10)  # a hung rank, for twice the others' trainer.dist_timeout
        return super().forward(x)


g = torch.Generator().manual_seed(0)
x, y = torch.randn(256, 4, generator=g), torch.randn(256, 1, generator=g)
try:
    ember.fit(Stalls(4, 1), (x, y), max_epochs=5, batch_size=8, dist_timeout=5, progress="none", tensorboard=False,
              run={"root": sys.argv[1]})
except ember.EmberError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(e.exit_code)
'''


def test_a_hung_rank_is_a_one_line_error_naming_the_waiting_rank(tmp_path):
    script = tmp_path / "stall_on_rank_1.py"
    script.write_text(STALL_ON_RANK_1)
    r = _torchrun(2, [str(tmp_path / "runs")], tmp_path, script=str(script))
    assert r.returncode != 0
    lines = [
        line
        for line in r.stderr.splitlines()
        if line.startswith("error: rank 0: a collective with the other ranks failed")
    ]
    # Rank 0 gave up after its own 5 s timeout, while rank 1 was still asleep (not because it died).
    assert len(lines) == 1 and "timed out" in lines[0].lower() and "trainer.dist_timeout" in lines[0]
    assert "Traceback" not in r.stderr.split("error: rank 0")[0]  # rank 0 printed no traceback


def test_elastic_restart_after_a_killed_rank_resumes_to_the_same_weights(tmp_path):
    args = [
        *COMMON,
        "trainer.max_epochs=4",
        "trainer.deterministic=true",
        "trainer.checkpoint_every_n_steps=5",
        "data.batch_size=16",
    ]
    ref = _torchrun(2, [*args, f"run.dir={tmp_path / 'ref'}"], tmp_path)
    assert ref.returncode == 0, ref.stderr[-3000:]

    run = tmp_path / "killed"
    # Restarts beyond the one the kill causes absorb gloo's occasional refused connection at a
    # first launch (above); a restarted round no longer fails that way (distributed.init).
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "--max-restarts=3",
        "-m",
        "ember",
        "train",
        *args,
        f"run.dir={run}",
    ]
    agent = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    # Wait for a few checkpoints, then kill one worker (a child of the torchrun agent) outright.
    while not list((run / "checkpoints").glob("step-00000002*.pt")) and agent.poll() is None:
        time.sleep(0.01)
    workers = subprocess.run(["pgrep", "-P", str(agent.pid)], capture_output=True, text=True).stdout.split()
    assert workers, "no worker processes found"
    os.kill(int(workers[-1]), signal.SIGKILL)
    out, err = agent.communicate(timeout=300)
    assert agent.returncode == 0, err[-3000:]
    assert "resuming" in out
    a, b = _weights(tmp_path / "ref"), _weights(run)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_fsdp_checkpoint_resumes_on_another_number_of_processes(tmp_path):
    # No validation split: the final weights are the last ones, not the best checkpoint's.
    # bf16: FSDP gathers bf16 parameters but keeps (and saves) fp32 ones.
    args = [
        *COMMON,
        "trainer.strategy=fsdp",
        "trainer.precision=bf16",
        "data.val_fraction=0",
        "optim=adamw",
        "optim.lr=0.01",
        "trainer.max_epochs=5",
        "trainer.checkpoint_every_n_steps=10",
    ]
    two = _torchrun(2, [*args, "trainer.max_steps=20", f"run.dir={tmp_path / 'two'}"], tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    # On one process, the 2-rank shards load into the whole model: nothing left to train, so
    # the final weights are exactly what the two ranks saved.
    shutil.copytree(tmp_path / "two", tmp_path / "one")
    same = subprocess.run(
        [sys.executable, "-m", "ember", "train", f"resume={tmp_path / 'one'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert same.returncode == 0, same.stderr[-3000:]
    assert "from step-000000020.dcp" in same.stdout
    a, b = _weights(tmp_path / "two"), _weights(tmp_path / "one")
    assert all(a[k].dtype == torch.float32 and torch.equal(a[k], b[k]) for k in a)
    # And training goes on from there on one process, and back on two.
    more = subprocess.run(
        [sys.executable, "-m", "ember", "train", f"resume={tmp_path / 'one'}", "trainer.max_steps=30"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert more.returncode == 0, more.stderr[-3000:]
    back = _torchrun(2, [f"resume={tmp_path / 'one'}", "trainer.max_steps=40"], tmp_path)
    assert back.returncode == 0, back.stderr[-3000:]
    assert "from step-000000030.dcp:" in back.stdout and "step 30\n" in back.stdout
    summary = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 40


def test_batchnorm_statistics_are_rank_0s_under_ddp_and_fsdp(tmp_path):
    # cnn1d has BatchNorm, whose running statistics each rank updates from its own batches.
    # Evaluation (split between the ranks) uses rank 0's, the ones saved, so the metrics logged
    # during training are those of the checkpoint: re-evaluated at the end it gives the same
    # val/loss. Both strategies train the same model, buffers included.
    args = [
        "model=cnn1d",
        "data.num_samples=1000",
        "data.eval_batch_size=32",
        "trainer.max_epochs=2",
        "trainer.progress=none",
        "trainer.tensorboard=false",
        "run.report=false",
    ]
    for strategy in ("ddp", "fsdp"):
        r = _torchrun(2, [*args, f"trainer.strategy={strategy}", f"run.dir={tmp_path / strategy}"], tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        logged = [
            json.loads(line)
            for line in (tmp_path / strategy / "metrics.jsonl").read_text().splitlines()
            if '"val"' in line
        ]
        final = json.loads((tmp_path / strategy / "summary.json").read_text())["metrics"]
        assert final["val/loss"] == pytest.approx(min(rec["loss"] for rec in logged), rel=1e-6)
    a, b = _weights(tmp_path / "ddp"), _weights(tmp_path / "fsdp")
    assert any("running_mean" in k for k in a)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k
