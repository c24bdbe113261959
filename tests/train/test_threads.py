"""The thread policy: the budget arithmetic, and the probe's and the watch's decisions on a fake clock."""

import pytest
import torch

from ember.errors import ConfigError
from ember.train import threads
from ember.train.threads import ThreadPolicy, budget, cgroup_cpus


def test_budget_shares_the_usable_cpus_among_embers_processes():
    assert budget({}, affinity=8) == 8
    assert budget({}, affinity=8, quota=2.5) == 3  # a cgroup quota of 2.5 CPUs
    assert budget({"LOCAL_WORLD_SIZE": "2"}, affinity=8) == 4  # torchrun's local ranks
    assert budget({"LOCAL_WORLD_SIZE": "2", "EMBER_CPU_SHARE": "2"}, affinity=8) == 2  # and tune.jobs workers
    assert budget({}, affinity=8, loader_workers=3) == 5  # DataLoader workers run beside the loop
    assert budget({"EMBER_CPU_SHARE": "4"}, affinity=2, loader_workers=1) == 1  # never below one


def test_cgroup_quota_is_read_from_cpu_max(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpus(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpus(tmp_path) is None
    assert cgroup_cpus(tmp_path / "none") is None


class FakeClock:
    def __init__(self):
        self.now, self.step_s = 0.0, {}

    def advance(self, threads: int) -> float:
        self.now += self.step_s[threads]
        return self.now


def _policy(monkeypatch, step_s: dict, cpus: int = 4):
    monkeypatch.setattr(threads, "budget", lambda env, quota=None, loader_workers=0: cpus)
    clock, applied = FakeClock(), []
    clock.step_s = dict(step_s)
    policy = ThreadPolicy("auto", torch.device("cpu"), env={}, clock=lambda: clock.now, set_threads=applied.append)
    return policy, clock, applied


def _run(policy, clock, steps: int) -> None:
    for _ in range(steps):
        clock.advance(policy_threads(policy))
        policy.step()


def policy_threads(policy) -> int:
    return policy.probing[0] if policy.probing else policy.threads


def test_the_probe_keeps_the_fastest_count(monkeypatch):
    policy, clock, applied = _policy(monkeypatch, {4: 0.010, 2: 0.006, 1: 0.008})
    assert policy.candidates == [4, 2, 1]
    _run(policy, clock, 3 * (threads.PROBE_STEPS + 1) + 1)
    assert policy.threads == 2 and applied[-1] == 2 and "fastest on the probe" in policy.why
    assert policy.probe_ms == {4: pytest.approx(10.0), 2: pytest.approx(6.0), 1: pytest.approx(8.0)}


def test_slow_steps_drop_to_one_thread_and_a_later_probe_raises_them_again(monkeypatch):
    policy, clock, applied = _policy(monkeypatch, {4: 0.005, 2: 0.007, 1: 0.009})
    _run(policy, clock, 3 * (threads.PROBE_STEPS + 1) + 1)
    assert policy.threads == 4
    _run(policy, clock, threads.WINDOW + 1)  # an idle window: nothing changes
    assert policy.threads == 4
    clock.step_s[4] = 0.200  # another process took a core: 4 threads wait at every barrier
    _run(policy, clock, threads.WINDOW + 1)
    assert policy.threads == 1 and "the CPU is shared" in policy.why
    clock.step_s[4] = 0.005  # the machine frees up: the re-probe finds 4 threads fastest again
    _run(policy, clock, threads.WINDOW * threads.REPROBE_WINDOWS + 3 * (threads.PROBE_STEPS + 1) + 2)
    assert policy.threads == 4
    assert [c["threads"] for c in policy.summary()["changes"]] == [4, 1, 4]


def test_the_users_setting_wins_and_cuda_keeps_torchs_default(monkeypatch):
    applied = []
    fixed = ThreadPolicy("3", torch.device("cpu"), env={}, set_threads=applied.append)
    assert fixed.threads == 3 and applied == [3] and not fixed.active
    omp = ThreadPolicy("auto", torch.device("cpu"), env={"OMP_NUM_THREADS": "1"}, set_threads=applied.append)
    assert not omp.active and "OMP_NUM_THREADS=1" in omp.why and applied == [3]
    gpu = ThreadPolicy("auto", torch.device("cuda"), env={}, set_threads=applied.append)
    assert not gpu.active and not gpu.timed and applied == [3]
    with pytest.raises(ConfigError, match="trainer.threads='many' must be auto or a number"):
        ThreadPolicy("many", torch.device("cpu"), env={})


def test_dataloader_workers_take_their_share_of_the_budget(tmp_path):
    import json
    import os

    from ember.api import train
    from ember.config import compose

    cfg = compose(
        [
            "data.num_samples=300",
            "data.fast_path=false",
            "data.num_workers=1",
            "trainer.max_epochs=1",
            "trainer.progress=none",
            f"run.root={tmp_path}",
        ]
    )
    summary = json.loads((train(cfg).run_dir / "summary.json").read_text())
    assert summary["threads"]["budget"] == max(1, len(os.sched_getaffinity(0)) - 1)
    assert "OMP_NUM_THREADS=1" in summary["threads"]["why"]  # the suite's setting wins over auto


def test_a_deterministic_run_fixes_its_count_and_resumes_with_the_recorded_one(monkeypatch):
    monkeypatch.setattr(threads, "budget", lambda env, quota=None, loader_workers=0: 4)
    applied = []
    policy = ThreadPolicy("auto", torch.device("cpu"), env={}, set_threads=applied.append, deterministic=True)
    # Not from timings: no probe, no watch, whatever the steps take.
    assert policy.threads == 4 and applied == [4] and not policy.active and not policy.probing
    assert "trainer.deterministic" in policy.why
    for _ in range(threads.WINDOW * 3):
        policy.step()
    assert applied == [4]
    # The checkpoint recorded 2 (another machine, another OMP_NUM_THREADS): the resume takes 2.
    assert "keeps the 2 thread(s)" in policy.resume(2)
    assert policy.threads == 2 and applied[-1] == 2
    assert policy.resume(2) is None and policy.resume(None) is None  # the same count; an older checkpoint
    # a damaged one
    assert "'many'" in policy.resume("many") and "10000000" in policy.resume(10**7) and policy.threads == 2
    # An explicit trainer.threads=N wins, with a warning that the weights will differ.
    user = ThreadPolicy("3", torch.device("cpu"), env={}, set_threads=applied.append, deterministic=True)
    assert user.resume(2).startswith("warning: trainer.threads=3") and user.threads == 3
    # Without trainer.deterministic the checkpoint's count is not imposed.
    free = ThreadPolicy("auto", torch.device("cpu"), env={}, set_threads=applied.append)
    assert free.resume(1) is None and free.threads == 4
