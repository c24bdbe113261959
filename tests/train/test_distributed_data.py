"""File-backed (HDF5) data on two processes through the real torchrun: each rank reads its share.

The sampler's guarantees (equal batch counts, the ranks' union, resume) are tested without
processes in tests/data/test_loaders.py; these tests check that a real 2-rank job on an HDF5 file
runs to the end and splits every global batch between the ranks.
"""

import json
import subprocess
import sys

import h5py
import numpy as np
import torch
from test_distributed import _env, _torchrun, _weights

ARGS = [
    "model=mlp",
    "model.width=32",
    "sched=none",
    "optim=sgd",
    "optim.lr=0.05",
    "trainer.progress=none",
    "trainer.tensorboard=false",
]


def _write(path, n=400):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2, 12)).astype(np.float32)
    y = (x[:, 0, :4].mean(1) > 0).astype(np.int64)
    with h5py.File(path, "w") as f:
        f["x"], f["y"] = x, y
    return ["data=hdf5", f"data.path={path}"]


def test_two_ranks_train_on_an_hdf5_file_to_the_end(tmp_path):
    # 280 training rows (400 less the carved val and test) in global batches of 2 x 16 = 32:
    # 9 per epoch, the last padded by wrapping; a DataLoader worker per rank reads the file.
    data = _write(tmp_path / "d.h5")
    r = _torchrun(
        2,
        [*ARGS, *data, "data.num_workers=1", "data.batch_size=16", "trainer.max_epochs=3", f"run.dir={tmp_path / 'r'}"],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 processes, global batch 16 x 2 x 1 = 32" in r.stdout
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs"] == 3 and summary["steps"] == 27
    val = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines() if '"val"' in line]
    assert [v["step"] for v in val] == [9, 18, 27] and val[-1]["loss"] < val[0]["loss"]


def test_two_ranks_of_batch_b_on_hdf5_equal_one_process_of_batch_2b(tmp_path):
    # Unshuffled, the block order is the file order for any batch size, so the 2-rank run must
    # take exactly one process's batches of 32: 320 training rows, 10 global batches, no padding.
    data = _write(tmp_path / "d.h5")
    common = [
        *ARGS,
        *data,
        "data.shuffle=false",
        "data.num_workers=0",
        "data.test_fraction=0.1",
        "trainer.max_epochs=2",
    ]
    one = subprocess.run(
        [sys.executable, "-m", "ember", "train", *common, "data.batch_size=32", f"run.dir={tmp_path / 'one'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = _torchrun(2, [*common, "data.batch_size=16", f"run.dir={tmp_path / 'two'}"], tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["steps"] == 20
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
