"""The default job on an idle machine and beside busy processes: ember's thread policy against
torch's default threads, a hand-written loop and Lightning, side by side.

On a machine shared with other work, torch's intra-op threads wait for each other at every
kernel's barrier whenever one of them is descheduled; trainer.threads=auto (ember.train.threads)
probes and adapts. Each contender trains the default job (cnn1d on MNIST-1D, --epochs epochs) in
a fresh process (threads are process-wide), timed inside it around the training alone:
  ember-auto     ember train, trainer.threads=auto (the default)
  ember-default  ember train, trainer.threads=<all CPUs>: torch's default
  raw            the tutorials' hand-written loop (benchmarks/overhead.py's), torch's default threads
  lightning      Lightning's Trainer (pip install 'ember[bench]'), torch's default threads
under (a) an idle machine and (b) N bounded busy processes that this script starts and stops (N = 1,
and CPUs - 1 if larger). Rounds interleave every contender and condition; medians, and ratios.

    python -P benchmarks/contention.py [--epochs 8] [--rounds 3]   # table; benchmarks/results/contention.json
    python -P benchmarks/contention.py --busy 0 --only ember-auto,ember-default --rounds 10 \
        --out benchmarks/results/contention_idle.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CPUS = len(os.sched_getaffinity(0))

EMBER = (
    "from ember.api import train; import json, sys; r = train(sys.argv[1:]); print('SECONDS', r.summary['wall_time_s'])"
)
LOOP = """
import sys, time
sys.path.append({here!r})  # after site-packages: benchmarks/mnist1d.py must not shadow the package
from overhead import cnn, raw, with_lightning
from ember.api import load_data
d = load_data('mnist1d').train
fn = with_lightning if sys.argv[1] == 'lightning' else raw
start = time.perf_counter()
fn(cnn, d.x, d.y, int(sys.argv[2]), 64)
print('SECONDS', time.perf_counter() - start)
"""


def contenders(epochs: int, root: str) -> dict[str, list[str]]:
    common = [
        f"trainer.max_epochs={epochs}",
        "trainer.progress=none",
        "trainer.tensorboard=false",
        "run.report=false",
        f"run.root={root}",
    ]
    out = {
        "ember-auto": [sys.executable, "-c", EMBER, *common],
        "ember-default": [sys.executable, "-c", EMBER, *common, f"trainer.threads={CPUS}"],
        "raw": [sys.executable, "-c", LOOP.format(here=str(HERE)), "raw", str(epochs)],
    }
    try:
        import lightning  # noqa: F401

        out["lightning"] = [sys.executable, "-c", LOOP.format(here=str(HERE)), "lightning", str(epochs)]
    except ImportError:
        print("lightning is not installed (pip install 'ember[bench]'): its column is skipped", file=sys.stderr)
    return out


def busy(n: int, seconds: float) -> list[subprocess.Popen]:
    """n processes that spin for at most `seconds` (they stop by themselves)."""
    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]


def timed(cmd: list[str]) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # each contender's own choice
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return float(next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("SECONDS")))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--busy", type=int, nargs="*", default=None, help="busy-process counts (default: 0, 1 and CPUs - 1)")
    p.add_argument("--only", default=None, help="comma-separated contenders (default: all)")
    p.add_argument("--out", default=str(HERE / "results" / "contention.json"))
    args = p.parse_args()
    loads = sorted(set(args.busy) if args.busy is not None else {0, 1, max(1, CPUS - 1)})
    times: dict[str, dict[int, list[float]]] = {}
    with tempfile.TemporaryDirectory() as root:
        cmds = contenders(args.epochs, root)
        if args.only:
            cmds = {k: v for k, v in cmds.items() if k in args.only.split(",")}
        for r in range(args.rounds):
            for n in loads:
                for name, cmd in cmds.items():
                    spinners = busy(n, 3600)
                    try:
                        t = timed(cmd)
                    finally:
                        for s in spinners:
                            s.kill()
                            s.wait()
                    times.setdefault(name, {}).setdefault(n, []).append(t)
                    print(f"round {r + 1}, {n} busy: {name} {t:.2f} s", flush=True)
    med = {name: {n: statistics.median(ts) for n, ts in per.items()} for name, per in times.items()}
    print(f"\n{args.epochs} epochs of the default job, median of {args.rounds} rounds, {CPUS} CPUs")
    print(
        f"{'contender':<14}"
        + "".join(f"{f'{n} busy':>10}" for n in loads)
        + "".join(f"{f'{n} busy/idle':>14}" for n in loads if n)
    )
    for name, per in med.items():
        print(
            f"{name:<14}"
            + "".join(f"{per[n]:>9.2f}s" for n in loads)
            + "".join(f"{per[n] / per[0]:>14.2f}" for n in loads if n)
        )
    for n in loads:
        if n and "raw" in med:
            print(
                f"beside {n} busy: raw / ember-auto = {med['raw'][n] / med['ember-auto'][n]:.2f}x; "
                f"ember-default / ember-auto = {med['ember-default'][n] / med['ember-auto'][n]:.2f}x"
            )
    if 0 in loads:
        rounds = [a / b for a, b in zip(times["ember-auto"][0], times["ember-default"][0])]
        print(
            f"idle: ember-auto / ember-default = {med['ember-auto'][0] / med['ember-default'][0]:.3f} (medians); "
            f"median of the rounds' ratios {statistics.median(rounds):.3f}"
        )
    out = Path(args.out)
    out.write_text(
        json.dumps(
            {"epochs": args.epochs, "rounds": args.rounds, "cpus": CPUS, "times_s": times, "median_s": med}, indent=2
        )
        + "\n"
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
