"""data=hdf5: lazy, batched reads from HDF5 files the tests write."""

import h5py
import numpy as np
import pytest
import torch
from data_support import cli_train, fit

from ember import load_data
from ember.data import EpochLoader
from ember.data.checks import nan_rows
from ember.data.lazy import LazyDataset
from ember.errors import DataError


def _write(path, n=400, seed=0, channels=2, length=12, **extra):
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=3.0, scale=2.0, size=(n, channels, length)).astype(np.float32)
    y = (x[:, 0, :4].mean(1) > 3.0).astype(np.int64)
    with h5py.File(path, "w") as f:
        f["x"] = x
        f["y"] = y
        f["group/field"] = x[:, :1] * 2
        for k, v in extra.items():
            f[k] = v
    return x, y


def test_hdf5_reads_lazily_in_a_few_contiguous_reads_per_batch(tmp_path):
    x, y = _write(tmp_path / "d.h5")
    splits = load_data("hdf5", path=str(tmp_path / "d.h5"), num_workers=0)
    train = splits.train
    assert (
        isinstance(train, LazyDataset) and splits.spec.task == "classification" and splits.spec.input_shape == (2, 12)
    )
    assert (len(train), len(splits.val), len(splits.test)) == (280, 40, 80)
    # Statistics of the train rows only, per channel, applied as batches are read.
    rows = np.array(splits.indices["train"])
    raw = x[rows]
    assert np.allclose(splits.spec.mean, raw.mean(axis=(0, 2)), atol=1e-4)
    assert np.allclose(splits.spec.std, raw.std(axis=(0, 2), ddof=1), atol=1e-4)
    xb, yb = train[[0, 1, 2]]
    expected = (raw[:3] - raw.mean(axis=(0, 2))[:, None]) / raw.std(axis=(0, 2), ddof=1)[:, None]
    assert torch.allclose(xb, torch.from_numpy(expected).float(), atol=1e-4) and torch.equal(
        yb, torch.from_numpy(y[rows[:3]])
    )

    reads = []
    original = train.reader.read
    train.reader.read = lambda a, b: reads.append((a, b)) or original(a, b)
    loader = EpochLoader(train, batch_size=32, shuffle=True, seed=0, fast=False)
    seen = torch.cat([yb for _, yb in loader])
    assert len(seen) == 280 and len(loader) == 9
    # Block shuffling: a batch of 32 is 4 blocks of 8 neighbouring rows, about 4 reads, not 32.
    assert len(reads) <= 6 * len(loader), len(reads)


def test_several_files_a_nested_target_and_a_test_file(tmp_path):
    (tmp_path / "parts").mkdir()
    x1, _ = _write(tmp_path / "parts/a.h5", n=100, seed=1)
    x2, _ = _write(tmp_path / "parts/b.h5", n=50, seed=2)
    _write(tmp_path / "test.h5", n=30, seed=3)
    splits = load_data(
        "hdf5",
        path=str(tmp_path / "parts/*.h5"),
        target="group/field",
        test_path=str(tmp_path / "test.h5"),
        normalize=False,
        normalize_target=False,
        num_workers=0,
    )
    assert splits.spec.task == "regression" and splits.spec.target_shape == (1, 12)
    assert len(splits.train) + len(splits.val) == 150 and len(splits.test) == 30
    # Rows 95..105 straddle the two files.
    xb, yb = splits.train.read_rows(np.arange(95, 105))
    both = np.concatenate([x1, x2])
    assert torch.allclose(xb, torch.from_numpy(both[95:105])) and torch.allclose(
        yb, torch.from_numpy(both[95:105, :1] * 2)
    )


def test_dataloader_workers_open_their_own_handles(tmp_path):
    _write(tmp_path / "d.h5", n=200)
    splits = load_data("hdf5", path=str(tmp_path / "d.h5"), val_fraction=0, test_fraction=0)
    one = [y for _, y in EpochLoader(splits.train, 16, shuffle=False, num_workers=0)]
    two = [y for _, y in EpochLoader(splits.train, 16, shuffle=False, num_workers=2)]
    assert torch.equal(torch.cat(one), torch.cat(two))


def test_hdf5_nan_and_bad_files(tmp_path):
    x, y = _write(tmp_path / "d.h5")
    bad = x.copy()
    bad[3, 1, 5] = np.nan
    bad[10, 0, 0] = np.inf
    with h5py.File(tmp_path / "nan2.h5", "w") as f:
        f["x"], f["y"] = bad, y
    with pytest.raises(
        DataError,
        match=(
            r"nan2.h5 holds NaN or infinite values \(2 in inputs\); the first is in the inputs at sample 3, index \(1, "
            r"5\); .*data.nan=drop to drop the 2 samples"
        ),
    ):
        load_data("hdf5", path=str(tmp_path / "nan2.h5"), num_workers=0)
    dropped = load_data("hdf5", path=str(tmp_path / "nan2.h5"), nan="drop", num_workers=0)
    rows = [r for k in ("train", "val", "test") for r in dropped.indices[k]]
    assert len(rows) == 398 and 3 not in rows and 10 not in rows
    assert np.isfinite(dropped.spec.mean).all()

    with pytest.raises(
        DataError,
        match=(
            r"no dataset 'labels' in .*d.h5; set data.inputs / data.target to datasets of the file: group/field, x, y"
        ),
    ):
        load_data("hdf5", path=str(tmp_path / "d.h5"), target="labels")
    with h5py.File(tmp_path / "short.h5", "w") as f:
        f["x"], f["y"] = x, y[:-5]
    with pytest.raises(DataError, match="dataset 'x' has 400 samples but 'y' has 395"):
        load_data("hdf5", path=str(tmp_path / "short.h5"))
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"], f["y"] = x[:, :, :6], y
    with pytest.raises(DataError, match="disagree on sample shapes"):
        load_data("hdf5", path=f"{tmp_path / 'd.h5'},{tmp_path / 'other.h5'}")
    data = (tmp_path / "d.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match="cannot read .*cut.h5 as HDF5 .*truncated"):
        load_data("hdf5", path=str(tmp_path / "cut.h5"))
    with pytest.raises(DataError, match="matches no file"):
        load_data("hdf5", path=str(tmp_path / "none/*.h5"))
    with h5py.File(tmp_path / "labels.h5", "w") as f:
        f["x"], f["y"] = x, y + 5 * (y == 1)  # ids 0 and 6
    with pytest.raises(DataError, match="class ids are not contiguous"):
        load_data("hdf5", path=str(tmp_path / "labels.h5"))


def test_fractional_class_ids_absurd_sizes_and_all_nan_are_refused(tmp_path):
    x, y = _write(tmp_path / "d.h5")
    with h5py.File(tmp_path / "frac.h5", "w") as f:
        f["x"], f["y"] = x, y + 0.7  # 0.7 and 1.7 would floor to classes 0 and 1
    with pytest.raises(
        DataError,
        match=(
            r"frac.h5: dataset 'y' holds [01].7 at sample 0, not a class id; with data.task=classification the labels "
            r"must be whole numbers 0..K-1"
        ),
    ):
        load_data("hdf5", path=str(tmp_path / "frac.h5"), task="classification", num_workers=0)
    with h5py.File(tmp_path / "huge.h5", "w") as f:  # declares 10^12 rows, stores none
        f.create_dataset("x", shape=(10**12, 3), dtype="f4", chunks=(1024, 3))
        f.create_dataset("y", shape=(10**12,), dtype="f4", chunks=(1024,))
    with pytest.raises(
        DataError,
        match=(
            r"huge.h5 declares 1,000,000,000,000 samples, whose statistics alone would take .* GB of this machine's .* "
            r"of memory; reduce the number of samples"
        ),
    ):
        load_data("hdf5", path=str(tmp_path / "huge.h5"), num_workers=0)
    with h5py.File(tmp_path / "allnan.h5", "w") as f:
        f["x"], f["y"] = np.full_like(x, np.nan), y
    with pytest.raises(
        DataError,
        match=(
            r"every sample of .*allnan.h5 holds NaN or infinite values .*data.nan=drop would drop "
            r"them all: fix the data$"
        ),
    ):
        load_data("hdf5", path=str(tmp_path / "allnan.h5"), num_workers=0, nan="drop")
    # The in-memory sources' check says the same.
    with pytest.raises(
        DataError, match=r"every sample of x.npy holds NaN .*data.nan=drop would drop them all: fix the data$"
    ):
        nan_rows({"inputs": np.full((3, 2), np.nan)}, "x.npy", "drop")


def test_training_on_hdf5_learns_and_runs_from_the_cli(tmp_path, ember_cli):
    _write(tmp_path / "d.h5", n=600)
    result = fit(
        tmp_path,
        "data=hdf5",
        f"data.path={tmp_path / 'd.h5'}",
        "data.num_workers=0",
        "model=mlp",
        "trainer.max_epochs=8",
        "optim.lr=0.003",
        "sched=none",
    )
    assert result.metrics["test/accuracy"] > 0.8
    r = cli_train(
        ember_cli,
        "data=hdf5",
        f"data.path={tmp_path / 'd.h5'}",
        "data.num_workers=1",
        "model=mlp",
        "trainer.max_epochs=1",
        f"run.root={tmp_path / 'cli'}",
    )
    assert r.returncode == 0, r.stderr
    assert "accuracy" in r.stdout and len(list((tmp_path / "cli").glob("hdf5-mlp/*/splits.json"))) == 1
