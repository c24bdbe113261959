"""Every command, fed bad values, keeps the one-line contract: exit 2, one `error:` line on stderr,
no traceback, nothing written (no run directory, no half-made output).

A fresh process costs 2-7 s on a shared 2-core machine, most of it importing torch, so each
command's first case runs as `python -m ember`, as a user would, and the other cases of every
command run one after another in one process through `ember.cli.main`, which is all that
`python -m ember` calls; a failure lists every case that broke."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ember.api import train
from ember.config import compose

RUN = "{run}"  # replaced by the path of a small trained run

CASES = {
    "train": [
        (["optim.lr=-1"], "optim.lr=-1.0 is out of range: it must be >= 0"),
        (["optim.lr=nan"], "optim.lr=nan is out of range"),
        (["optim.betas=[0.9,1.2]"], "optim.betas=[0.9, 1.2] is out of range: each item must be in [0, 1)"),
        (["optim=sgd", "optim.momentum=1.5"], "optim.momentum=1.5 is out of range"),
        (["optim.eps=0"], "optim.eps=0.0 is out of range"),
        (["optim.weight_decay=-0.1"], "optim.weight_decay=-0.1 is out of range"),
        (["model.dropout=1.0"], "model.dropout=1.0 is out of range: it must be in [0, 1)"),
        (["trainer.label_smoothing=-0.1"], "trainer.label_smoothing=-0.1 is out of range"),
        (["sched=onecycle", "sched.pct_start=1"], "sched.pct_start=1.0 is out of range: it must be in (0, 1)"),
        (["sched.warmup_steps=-1"], "sched.warmup_steps=-1 is out of range"),
        (["model=mlp", "model.depth=-1"], "model.depth=-1 is out of range: it must be >= 0"),
        (["model=mlp", "model.width=0"], "model.width=0 is out of range: it must be >= 1"),
        (["data.num_samples=0"], "data.num_samples=0 is out of range"),
        (["trainer.max_epochs=0"], "trainer.max_epochs=0 is out of range"),
        (["trainer.max_steps=-2"], "trainer.max_steps=-2 is out of range: it must be >= -1"),
        (["data.batch_size=0"], "data.batch_size=0 is out of range"),
        (["data.val_fraction=0.5", "data.test_fraction=0.5"], "leave no training data"),
        (["trainer.grad_clip=-1"], "trainer.grad_clip=-1.0 is out of range"),
        (["--config", "latin1.yaml"], "is not UTF-8 text (byte 0xe9"),
        (["model=mlp", "data=csv", "data.path=one_class.csv", "data.target=y"], "one class only"),
        (
            ["model=mlp", "data=csv", "data.path=table.csv", "data.target=y", "data.features=[a,y]"],
            "is both the target and a feature",
        ),
        (["model=mlp", "data=numpy", "data.path=empty.npz"], "the inputs hold no samples"),
        (["model=mlp", "data=numpy", "data.path=text.npz"], "the inputs are of dtype <U1 (text)"),
    ],
    "eval": [
        ([f"run={RUN}", "data.batch_size=0"], "data.batch_size=0 is out of range"),
        ([f"run={RUN}", "rollout=0"], "rollout='0' must be a whole number of steps"),
    ],
    "tune": [
        (["tune.trials=0"], "tune.trials=0 is out of range"),
        (["optim.lr=-1"], "optim.lr=-1.0 is out of range"),
    ],
    "export": [
        ([f"run={RUN}", "format=torchscript", "atol=-1"], "atol=-1.0 is out of range: it must be >= 0"),
        ([f"run={RUN}", "format=torchscript", "samples=0"], "samples=0 is out of range"),
        ([f"run={RUN}", "format=torchscript", "out=a_file/model.pt"], "'a_file' is a file, not a folder"),
        (
            [f"run={RUN}", "format=torchscript", "out=a_folder"],
            "cannot write the torchscript export to 'a_folder': it is a folder",
        ),
    ],
    "predict": [
        ([f"run={RUN}", "input=inputs.npy", "batch_size=0"], "batch_size=0 is out of range"),
        ([f"run={RUN}", "input=inputs.npy", "output=a_file/p.csv"], "'a_file' is a file, not a folder"),
    ],
    "bench": [
        ([f"run={RUN}", "iters=0"], "iters=0 is out of range"),
        ([f"run={RUN}", "batch_sizes=0,8"], "batch_sizes=[0, 8] is out of range"),
        ([f"run={RUN}", "seconds=-1"], "seconds=-1.0 is out of range"),
        ([f"run={RUN}", "out=a_folder"], "cannot write the benchmark to 'a_folder': it is a folder"),
    ],
    "compress": [
        ([f"run={RUN}", "method=prune", "sparsity=1.5"], "sparsity=1.5 is out of range"),
        ([f"run={RUN}", "method=prune", "epochs=0"], "epochs=0 is out of range"),
        (
            [f"run={RUN}", "method=dynamic_int8", "out=a_file"],
            "cannot write the compressed run to 'a_file': it is a file",
        ),
    ],
    "report": [
        ([RUN, "-o", "a_folder"], "cannot write the report to 'a_folder': it is a folder"),
        ([RUN, "-o", "a_file/report.html"], "'a_file' is a file, not a folder"),
        (["nowhere"], "'nowhere' does not exist"),
    ],
    "runs": [
        (["a_file"], "'a_file' is not a directory"),
        (["--sort", "bogus", "a_folder"], "--sort 'bogus'"),
    ],
    "summary": [
        (["depth=-1"], "depth=-1 is out of range"),
        (["model=mlp", "model.width=0"], "model.width=0 is out of range"),
    ],
    "graph": [
        (["model=mlp", "model.width=0"], "model.width=0 is out of range"),
        (["model=mlp", "out=a_file/graph"], "'a_file' is a file, not a folder"),
    ],
    "sample": [
        ([f"run={RUN}", "n=0"], "n=0 is out of range"),
        ([f"run={RUN}", "seed=-1"], "seed=-1 is out of range"),
    ],
    "profile": [
        (["--steps", "0"], "--steps=0 is out of range"),
        (["--steps", "abc"], "invalid int value: 'abc'"),
        (["optim.lr=-1"], "optim.lr=-1.0 is out of range"),
    ],
    "config": [
        (["sched.pct_start=2"], "sched.pct_start=2.0 is out of range"),
        (["--config", "latin1.yaml"], "is not UTF-8 text"),
    ],
}


@pytest.fixture(scope="module")

def small_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    cfg = compose(
        [
            "model=mlp",
            "model.width=8",
            "data=spirals",
            "data.num_samples=200",
            "trainer.max_epochs=1",
            "trainer.progress=none",
            "track=[]",
            "run.report=false",
            f"run.dir={root / 'run'}",
        ]
    )
    train(cfg)
    return root / "run"


def write_bad_inputs(folder: Path) -> None:
    """The files the cases name: bad data, a non-UTF-8 config, a file and a folder in the way."""
    rows = "".join(f"{i},{i % 3},{i % 2}\n" for i in range(40))
    (folder / "table.csv").write_text("a,b,y\n" + rows)
    (folder / "one_class.csv").write_text("a,b,y\n" + "".join(f"{i},{i % 3},1\n" for i in range(40)))
    np.savez(folder / "empty.npz", x=np.zeros((0, 3), np.float32), y=np.zeros(0, np.int64))
    np.savez(folder / "text.npz", x=np.array([["a", "b"]] * 20), y=np.arange(20) % 2)
    np.save(folder / "inputs.npy", np.zeros((4, 2), np.float32))
    (folder / "latin1.yaml").write_bytes("run:\n  name: café\n".encode("latin-1"))
    (folder / "a_file").write_text("in the way")
    (folder / "a_folder").mkdir()


def tree(*folders: Path) -> set[str]:
    return {str(p) for folder in folders for p in folder.rglob("*")}


# Runs each argv through ember.cli.main in this one process; per case: exit code, stderr, and the
# files that appeared or vanished under the folders given.
DRIVER = """
import contextlib, io, json, pathlib, sys, traceback
from ember.cli import main
cases, folders = json.loads(sys.argv[1]), [pathlib.Path(f) for f in json.loads(sys.argv[2])]
tree = lambda: {str(p) for f in folders for p in f.rglob("*")}
results = []
for argv in cases:
    before, err = tree(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
        except BaseException:
            traceback.print_exc()
            code = 1
    results.append({"code": code, "stderr": err.getvalue(), "changed": sorted(tree() ^ before)})
print(json.dumps(results))
"""


def contract_broken(code: int, stderr: str, expected: str, changed) -> str | None:
    """What breaks the contract, or None."""
    lines = stderr.splitlines()
    if code != 2 or len(lines) != 1 or not lines[0].startswith("error: ") or "Traceback" in stderr:
        return f"exit {code}, stderr {stderr[-300:]!r}"
    if expected not in lines[0]:
        return f"expected {expected!r} in {lines[0]!r}"
    if changed:
        return f"wrote or removed {changed[:3]}"
    return None


def argv(command: str, args: list[str], run: Path) -> list[str]:
    return [command, *(a.replace(RUN, str(run)) for a in args)]


@pytest.mark.parametrize("command", list(CASES))
def test_each_command_keeps_the_contract_in_a_process_of_its_own(ember_cli, tmp_path, small_run, command):
    write_bad_inputs(tmp_path)
    (args, expected), folders = CASES[command][0], [tmp_path, small_run.parent]
    before = tree(*folders)
    r = ember_cli(*argv(command, args, small_run))
    broken = contract_broken(r.returncode, r.stderr, expected, sorted(tree(*folders) ^ before))
    assert broken is None, f"ember {command} {' '.join(args)}: {broken}"


def test_every_bad_value_of_every_command_keeps_the_contract(tmp_path, small_run):
    write_bad_inputs(tmp_path)
    cases = [
        (argv(command, args, small_run), expected) for command, table in CASES.items() for args, expected in table[1:]
    ]
    folders = json.dumps([str(tmp_path), str(small_run.parent)])
    p = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps([a for a, _ in cases]), folders],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    results = json.loads(p.stdout.splitlines()[-1])
    assert len(results) == len(cases) > 40
    failures = [
        f"ember {' '.join(a)}: {why}"
        for (a, expected), res in zip(cases, results)
        if (why := contract_broken(res["code"], res["stderr"], expected, res["changed"]))
    ]
    assert not failures, "\n".join(failures)
