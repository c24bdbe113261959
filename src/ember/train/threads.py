"""How many threads torch's CPU kernels use: a policy that does not collapse on a shared machine.

torch's intra-op pool takes every core it sees, and its threads meet at a barrier in every
kernel: when another process takes one core, one thread is descheduled and all the others wait for
it. Measured on a 2-core machine, the default job trained 10.7x slower beside one busy process,
and steps swung between 3 ms and 340 ms within one run.

`trainer.threads=auto` (the default):
- starts from the CPUs this process may use (its affinity mask and the cgroup CPU quota), shared
  among ember's own processes (torchrun's local ranks, `tune.jobs` workers through
  EMBER_CPU_SHARE) and less the DataLoader workers, which run beside the loop;
- probes the candidates (all of that budget, one, half) for a few steps each at the start and
  keeps the fastest;
- watches the step time: when a window's median step is several times the best one seen, the CPU
  has been taken by someone else, so it drops to one thread; and it probes again later, so the
  threads come back when the machine frees up.
A user's OMP_NUM_THREADS or `trainer.threads=N` wins. On CUDA the CPU only feeds the GPU: torch's
default stays. What was chosen and why is in the run's output and summary.json.

`trainer.deterministic=true` on the CPU: the count splits every kernel's reductions, so it changes
the floating-point result. It is fixed to the budget (not to timings, which differ between runs),
recorded in every checkpoint, and a resumed run takes the recorded count: a run resumed with
another count (a probe that timed differently) ended with other weights.
"""

import math
import os
import statistics
import time
from pathlib import Path

import torch

from ember.errors import ConfigError

PROBE_STEPS = 4  # timed steps per candidate (after one untimed step that absorbs the switch)
WINDOW = 20  # steps whose median step time is compared with the best
SLOW = 3.0  # a window this many times slower than the best: the CPU is shared
REPROBE_WINDOWS = 15  # after a drop, windows until the candidates are probed again


def cgroup_cpus(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The cgroup v2 CPU quota in CPUs ('max' or no file: none)."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def budget(
    env: dict | None = None, affinity: int | None = None, quota: float | None = None, loader_workers: int = 0
) -> int:
    """Threads for this process's kernels: usable CPUs / ember's processes on them - loader workers."""
    env = os.environ if env is None else env
    cpus = (
        affinity
        if affinity is not None
        else len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else (os.cpu_count() or 1)
    )
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    share = int(env.get("LOCAL_WORLD_SIZE", 1)) * int(env.get("EMBER_CPU_SHARE", 1))
    return max(1, cpus // max(1, share) - loader_workers)


class ThreadPolicy:
    """Chooses and adapts the intra-op thread count; `step()` after every optimizer step."""

    def __init__(
        self,
        setting,
        device: torch.device,
        loader_workers: int = 0,
        env: dict | None = None,
        clock=time.perf_counter,
        set_threads=torch.set_num_threads,
        deterministic: bool = False,
    ):
        env = os.environ if env is None else env
        self.clock, self.set_threads = clock, set_threads
        self.budget = budget(env, quota=cgroup_cpus(), loader_workers=loader_workers)
        self.changes: list[dict] = []
        self.probe_ms: dict[int, float] = {}
        self.times: list[float] = []  # step times of the current window or probe
        self.steps_ms: list[float] = []  # every window's median, for the end-of-run report
        self.best = math.inf
        self.last = None
        self.probing: list[int] = []
        self.windows_since_drop = None
        self.skip = 0
        self.active = False  # adapting the count; steps are timed on the CPU either way
        self.timed = device.type == "cpu"
        self.user_set = str(setting) != "auto"
        self.deterministic = deterministic and self.timed
        if str(setting) != "auto":
            if not str(setting).isdigit() or int(setting) < 1:
                raise ConfigError(f"trainer.threads={setting!r} must be auto or a number of threads of 1 or more")
            self._interop(int(setting))
            self._fix(int(setting), f"trainer.threads={setting}")
        elif env.get("OMP_NUM_THREADS"):
            self.threads, self.why = (
                torch.get_num_threads(),
                f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']} set by the user",
            )
        elif device.type != "cpu":
            self.threads, self.why = (
                torch.get_num_threads(),
                f"torch's default on {device.type}: the CPU only feeds the device",
            )
        elif self.deterministic:
            self._interop(self.budget)
            self._fix(self.budget, f"trainer.deterministic: fixed at the {self.budget} CPU(s) this process may use")
        else:
            self._interop(self.budget)
            self.candidates = sorted({self.budget, 1, max(1, self.budget // 2)}, reverse=True)
            self.active = len(self.candidates) > 1
            self._fix(self.budget, f"the {self.budget} CPU(s) this process may use")
            if self.active:
                self._start_probe()

    @staticmethod
    def _interop(n: int) -> None:
        """Inter-op threads follow the same budget; torch takes that setting once per process,
        before any parallel work, so a second trainer in the process keeps the first one's."""
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:
            pass

    def _fix(self, n: int, why: str) -> None:
        self.threads, self.why = max(1, n), why
        self.set_threads(self.threads)

    def _start_probe(self) -> None:
        self.probing, self.probe_ms, self.times, self.skip = list(self.candidates), {}, [], 1
        self.set_threads(self.probing[0])

    def step(self) -> None:
        if not self.timed:
            return
        now = self.clock()
        if self.last is not None:
            if self.skip:
                self.skip -= 1
            else:
                self.times.append(now - self.last)
        self.last = now
        if self.probing:
            self._probe_step()
        elif len(self.times) >= WINDOW:
            self._watch()

    def spread(self) -> float:
        """The slowest window's median step over the fastest's: ~1 on an idle machine."""
        return max(self.steps_ms) / min(self.steps_ms) if len(self.steps_ms) > 1 and min(self.steps_ms) > 0 else 1.0

    def _probe_step(self) -> None:
        if len(self.times) < PROBE_STEPS:
            return
        self.probe_ms[self.probing.pop(0)] = 1000 * statistics.median(self.times)
        self.times, self.skip = [], 1
        if self.probing:
            self.set_threads(self.probing[0])
            return
        best = min(self.probe_ms, key=self.probe_ms.get)
        self._change(
            best, "fastest on the probe (" + ", ".join(f"{n}: {ms:.3g} ms" for n, ms in self.probe_ms.items()) + ")"
        )
        self.best, self.windows_since_drop = self.probe_ms[best] / 1000, None

    def _watch(self) -> None:
        median = statistics.median(self.times)
        self.steps_ms.append(1000 * median)
        self.times = []
        if not self.active:
            return
        if median > SLOW * self.best and self.threads > 1:
            self._change(1, f"steps turned {median / self.best:.1f}x slower than the best: the CPU is shared")
            self.windows_since_drop = 0
            return
        self.best = min(self.best, median)
        if self.windows_since_drop is not None:
            self.windows_since_drop += 1
            if self.windows_since_drop >= REPROBE_WINDOWS:  # the machine may have freed up
                self._start_probe()

    def _change(self, n: int, why: str) -> None:
        if n != self.threads or not self.changes:
            self.changes.append({"threads": n, "why": why})
        self._fix(n, why)
        self.skip = 1

    def resume(self, recorded: int | None) -> str | None:
        """A deterministic run continues with the count its checkpoint recorded (its reductions
        must split the same way); returns a note when that differs from this process's choice.
        An explicit trainer.threads=N still wins, with a warning."""
        if not self.deterministic or recorded is None or recorded == self.threads:
            return None
        if type(recorded) is not int or not 1 <= recorded <= 4096:  # a checkpoint is a file anyone may have edited
            return (
                f"warning: the checkpoint records {recorded!r} as its thread count, which is not one; "
                f"keeping {self.threads}"
            )
        if self.user_set:
            return (
                f"warning: trainer.threads={self.threads} but the checkpoint was trained with {recorded} thread(s): "
                "this deterministic run will not end as an uninterrupted one would"
            )
        self._fix(
            recorded,
            f"trainer.deterministic: the {recorded} thread(s) the run started with (recorded in its checkpoint)",
        )
        return f"note: trainer.deterministic: the resumed run keeps the {recorded} thread(s) it started with"

    def summary(self) -> dict:
        return {
            "threads": self.threads,
            "why": self.why,
            "budget": self.budget,
            "probe_ms": {str(k): round(v, 3) for k, v in self.probe_ms.items()},
            "changes": self.changes,
            "step_spread": round(self.spread(), 2),
        }

    def line(self) -> str:
        return f"threads: {self.threads} ({self.why})"
