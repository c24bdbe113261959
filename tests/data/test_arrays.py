"""data=numpy: .npy pairs and .npz files the tests write."""

import numpy as np
import pytest
import torch

from ember import load_data
from ember.errors import DataError


def _arrays(n=100, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3, 16)).astype(np.float32)
    return x, (x[:, 0].mean(1) > 0).astype(np.int64)


def test_npy_pair_is_classification_for_integer_labels(tmp_path):
    x, y = _arrays()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y[:, None])  # a column of labels is fine too
    splits = load_data("numpy", path=str(tmp_path / "x.npy"), target=str(tmp_path / "y.npy"))
    assert splits.spec.task == "classification" and splits.spec.num_classes == 2 and splits.spec.input_shape == (3, 16)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (70, 10, 20)
    assert len(splits.spec.mean) == 3  # normalized per channel


def test_npz_with_named_and_predefined_splits(tmp_path):
    x, y = _arrays()
    xt, _ = _arrays(30, seed=1)
    np.savez(tmp_path / "d.npz", inputs=x, field=x[:, :1] * 2, inputs_test=xt, field_test=xt[:, :1] * 2)
    splits = load_data(
        "numpy", path=str(tmp_path / "d.npz"), inputs="inputs", target="field", normalize=False, normalize_target=False
    )
    assert splits.spec.task == "regression" and splits.spec.target_shape == (1, 16)
    assert len(splits.test) == 30 and torch.equal(splits.test.y, torch.from_numpy(xt[:, :1] * 2))
    assert splits.indices == {"train": splits.indices["train"], "val": splits.indices["val"]}  # test is fixed
    np.savez(tmp_path / "plain.npz", x=x, y=y)
    assert load_data("numpy", path=str(tmp_path / "plain.npz")).spec.num_classes == 2


def test_numpy_bad_inputs(tmp_path):
    x, y = _arrays()
    np.savez(tmp_path / "d.npz", x=x, labels=y)
    with pytest.raises(
        DataError, match=r"no array 'y' in .*d.npz; set data.inputs / data.target to arrays of the file: x, labels"
    ):
        load_data("numpy", path=str(tmp_path / "d.npz"))
    np.savez(tmp_path / "short.npz", x=x, y=y[:90])
    with pytest.raises(DataError, match="100 input samples but 90 targets"):
        load_data("numpy", path=str(tmp_path / "short.npz"))
    bad = x.copy()
    bad[7, 2, 3] = np.nan
    np.savez(tmp_path / "nan.npz", x=bad, y=y)
    with pytest.raises(
        DataError,
        match=(
            r"holds NaN or infinite values \(1 in inputs\); the first is in inputs at sample 7, index \(2, 3\); "
            r"fix the data or set data.nan=drop"
        ),
    ):
        load_data("numpy", path=str(tmp_path / "nan.npz"))
    dropped = load_data("numpy", path=str(tmp_path / "nan.npz"), nan="drop", val_fraction=0, test_fraction=0)
    assert len(dropped.train) == 99 and 7 not in dropped.indices["train"]
    np.save(tmp_path / "x.npy", x)
    raw = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[:1000])
    np.save(tmp_path / "y.npy", y)
    with pytest.raises(DataError, match="cannot read .*cut.npy as a NumPy .npy file"):
        load_data("numpy", path=str(tmp_path / "cut.npy"), target=str(tmp_path / "y.npy"))
    with pytest.raises(DataError, match="needs data.target=FILE.npy"):
        load_data("numpy", path=str(tmp_path / "x.npy"))
    np.save(tmp_path / "y3.npy", y * 3)  # 0 and 3: classes 1 and 2 have no sample
    with pytest.raises(DataError, match="class ids are not contiguous"):
        load_data("numpy", path=str(tmp_path / "x.npy"), target=str(tmp_path / "y3.npy"))
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="cannot read .*broken.npz as a NumPy .npz file"):
        load_data("numpy", path=str(tmp_path / "broken.npz"))


def test_numpy_empty_text_and_one_class_arrays_are_one_line_errors(tmp_path):
    x, y = _arrays()
    cases = {
        "empty": ({"x": x[:0], "y": y[:0]}, r"the inputs hold no samples \(shape \(0, 3, 16\)\)"),
        "text_inputs": (
            {"x": np.array([["a", "b"]] * 20), "y": np.arange(20) % 2},
            r"the inputs are of dtype <U1 \(text\); save numbers",
        ),
        "text_targets": (
            {"x": x, "y": np.where(y == 1, "cat", "dog")},
            r"the targets are of dtype <U3 \(text\); save numbers",
        ),
        "objects_in_val": (
            {"x": x, "y": y, "x_val": x[:4], "y_val": np.array([b"1.5", b"2", b"3", b"4"])},
            r"val arrays\): the targets are of dtype \|S3",
        ),
        "one_class": (
            {"x": x, "y": np.ones_like(y)},
            r"every sample has the label 1, one class only; a classifier needs at least two classes",
        ),
    }
    for name, (arrays, message) in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(DataError, match=message) as info:
            load_data("numpy", path=str(tmp_path / f"{name}.npz"))
        assert "\n" not in str(info.value), name
