"""data=imagefolder / cifar10 / cifar100 / mnist / fashion_mnist on small files the tests write."""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
from data_support import cli_error, cli_train
from PIL import Image

from ember import load_data
from ember.errors import ConfigError, DataError


def _photos(root, per_class=6, size=20):
    """Red and blue images (with some noise) in class folders."""
    rng = np.random.default_rng(0)
    for name, channel in (("blue", 2), ("red", 0)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            a = rng.integers(0, 60, size=(size, size + 4, 3), dtype=np.uint8)
            a[..., channel] = 200
            Image.fromarray(a).save(root / name / f"{i}.png")


def test_imagefolder_decodes_and_resizes(tmp_path):
    _photos(tmp_path / "photos")
    splits = load_data(
        "imagefolder", root=str(tmp_path / "photos"), image_size=8, normalize=False, val_fraction=0, test_fraction=0
    )
    assert splits.spec.class_names == ["blue", "red"] and splits.spec.input_shape == (3, 8, 8)
    x, y = splits.train.x, splits.train.y
    assert x.shape == (12, 3, 8, 8) and 0 <= x.min() and x.max() <= 1
    assert (x[y == 1, 0].mean() > 0.7) and (x[y == 0, 2].mean() > 0.7)  # red in channel 0, blue in 2
    gray = load_data("imagefolder", root=str(tmp_path / "photos"), image_size=8, channels=1)
    assert gray.spec.input_shape == (1, 8, 8)


def test_imagefolder_with_train_and_test_folders_and_bad_folders(tmp_path):
    _photos(tmp_path / "ds/train")
    _photos(tmp_path / "ds/test", per_class=2)
    splits = load_data("imagefolder", root=str(tmp_path / "ds"), image_size=8)
    assert len(splits.test) == 4 and len(splits.train) + len(splits.val) == 12

    (tmp_path / "empty/cats").mkdir(parents=True)
    with pytest.raises(
        DataError, match=r"empty has no images \(.png, .jpg, .jpeg, .bmp, ...\) in its class folders cats"
    ):
        load_data("imagefolder", root=str(tmp_path / "empty"))
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "flat/a.png")
    with pytest.raises(DataError, match=r"flat has no class subfolders \(it holds 1 images directly"):
        load_data("imagefolder", root=str(tmp_path / "flat"))
    (tmp_path / "photos/red").mkdir(parents=True)
    (tmp_path / "photos/red/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match="cannot decode .*broken.png as an image"):
        load_data("imagefolder", root=str(tmp_path / "photos"))
    with pytest.raises(DataError, match="data.root='nowhere' does not exist"):
        load_data("imagefolder", root="nowhere")


def _cifar(root, k=10, per_batch=8, fine=True):
    rng = np.random.default_rng(0)

    def batch(n):
        labels = (np.arange(n) % k).tolist()
        data = rng.integers(0, 255, size=(n, 3072), dtype=np.uint8)
        key = b"fine_labels" if k == 100 else b"labels"
        d = {b"data": data, key: labels}
        if k == 100:
            d[b"coarse_labels"] = [label // 5 for label in labels]
        return d

    if k == 10:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            with open(folder / name, "wb") as f:
                pickle.dump(batch(per_batch), f)
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        for name, n in (("train", 200), ("test", 100)):
            with open(folder / name, "wb") as f:
                pickle.dump(batch(n), f)
        with open(folder / "meta", "wb") as f:
            pickle.dump(
                {
                    b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                    b"coarse_label_names": [f"s{i}".encode() for i in range(20)],
                },
                f,
            )
    return folder


def test_cifar10_and_cifar100_from_python_batches(tmp_path):
    folder = _cifar(tmp_path)
    splits = load_data("cifar10", root=str(tmp_path), val_fraction=0)
    assert len(splits.train) == 40 and len(splits.test) == 8 and splits.spec.class_names[0] == "airplane"
    assert splits.train.x.shape == (40, 3, 32, 32) and splits.augment.names == ("crop", "flip")  # per-source default
    assert load_data("cifar10", root=str(folder), augment=[]).augment is None  # the folder itself works too
    _cifar(tmp_path / "c100", k=100)
    fine = load_data("cifar100", root=str(tmp_path / "c100"), val_fraction=0)
    assert fine.spec.num_classes == 100 and fine.spec.class_names[99] == "c99"
    coarse = load_data("cifar100", root=str(tmp_path / "c100"), labels="coarse", val_fraction=0)
    assert coarse.spec.num_classes == 20 and int(coarse.train.y.max()) == 19

    with open(folder / "data_batch_3", "wb") as f:
        f.write(pickle.dumps(batch := {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})[:20])
    with pytest.raises(DataError, match="cannot read .*data_batch_3 as a CIFAR python batch .*truncated"):
        load_data("cifar10", root=str(tmp_path))
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({**batch, b"labels": [0, 12]}, f)
    with pytest.raises(DataError, match="data_batch_3 has label 12, outside 0..9"):
        load_data("cifar10", root=str(tmp_path))
    (folder / "test_batch").unlink()
    with pytest.raises(
        DataError,
        match=(
            r"data=cifar10 needs test_batch in .*cifar-10-batches-py .*cifar-10-python.tar.gz.*ember downloads nothing"
        ),
    ):
        load_data("cifar10", root=str(tmp_path))
    with pytest.raises(
        ConfigError, match="data=cifar10 reads data_batch_1, .*test_batch from data.root, which is not set"
    ):
        load_data("cifar10")


def _idx(path, array, gz):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def _mnist(folder, gz, n=60, n_test=20):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y = np.arange(n) % 10
    x = rng.integers(0, 30, size=(n, 28, 28))
    x[np.arange(n), 2 + 2 * y, :] = 255  # the class is the row of a bright line: learnable
    yt = np.arange(n_test) % 10
    xt = rng.integers(0, 30, size=(n_test, 28, 28))
    xt[np.arange(n_test), 2 + 2 * yt, :] = 255
    for name, a in (
        ("train-images-idx3-ubyte", x),
        ("train-labels-idx1-ubyte", y),
        ("t10k-images-idx3-ubyte", xt),
        ("t10k-labels-idx1-ubyte", yt),
    ):
        _idx(folder / name, a, gz)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_files_gz_or_not(tmp_path, gz):
    _mnist(tmp_path, gz)
    splits = load_data("mnist", root=str(tmp_path), normalize=False)
    assert (
        splits.spec.input_shape == (1, 28, 28) and len(splits.test) == 20 and len(splits.train) + len(splits.val) == 60
    )
    assert splits.test.x[0, 0, 2].min() == 1.0  # the bright line of class 0
    # torchvision's layout, root/FashionMNIST/raw/, is found too.
    _mnist(tmp_path / "FashionMNIST/raw", gz)
    assert load_data("fashion_mnist", root=str(tmp_path)).spec.class_names[-1] == "Ankle boot"


def test_mnist_bad_files(tmp_path):
    _mnist(tmp_path, gz=False)
    raw = (tmp_path / "t10k-images-idx3-ubyte").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw[:-100])
    with pytest.raises(
        DataError,
        match="t10k-images-idx3-ubyte holds 15596 bytes but its header announces 15696; the file is truncated",
    ):
        load_data("mnist", root=str(tmp_path))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x03 nonsense")
    with pytest.raises(DataError, match="not an IDX file of unsigned bytes"):
        load_data("mnist", root=str(tmp_path))
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DataError, match=r"data=mnist needs t10k-images-idx3-ubyte\(.gz\) in"):
        load_data("mnist", root=str(tmp_path))


def test_cli_trains_on_mnist_files_and_says_which_cifar_files_are_missing(ember_cli, tmp_path):
    _mnist(tmp_path / "data", gz=True, n=200)
    r = cli_train(
        ember_cli,
        "data=mnist",
        f"data.root={tmp_path / 'data'}",
        "model=mlp",
        "model.width=64",
        "trainer.max_epochs=3",
        "optim.lr=0.01",
        "data.batch_size=16",
    )
    assert r.returncode == 0, r.stderr
    assert "accuracy" in r.stdout
    import shutil

    shutil.rmtree(tmp_path / "runs")
    cli_error(
        ember_cli,
        tmp_path,
        "data=cifar10",
        f"data.root={tmp_path / 'data'}",
        "model=mlp",
        match="data=cifar10 needs data_batch_1, data_batch_2, data_batch_3, data_batch_4, data_batch_5, test_batch in",
    )


def test_training_on_an_image_folder_learns(tmp_path):
    from data_support import fit

    _photos(tmp_path / "photos", per_class=20)
    result = fit(
        tmp_path,
        "data=imagefolder",
        f"data.root={tmp_path / 'photos'}",
        "data.image_size=8",
        "data.augment=[flip,crop]",
        "data.crop_padding=1",
        "model=mlp",
        "trainer.max_epochs=5",
        "optim.lr=0.01",
        "sched=none",
    )
    assert result.metrics["test/accuracy"] >= 0.75
    assert torch.isfinite(torch.tensor(result.metrics["test/loss"]))


def test_a_lazy_image_folder_reads_the_images_memory_holds(tmp_path):
    from ember.data.lazy import LazyDataset

    _photos(tmp_path / "photos")
    common = dict(root=str(tmp_path / "photos"), image_size=8, val_fraction=0, test_fraction=0)
    eager, lazy = load_data("imagefolder", lazy=False, **common), load_data("imagefolder", lazy=True, **common)
    assert isinstance(lazy.train, LazyDataset) and isinstance(eager.train.x, torch.Tensor)
    x, y = lazy.train[list(range(len(lazy.train)))]
    # The same normalized images and labels (the carved split may order them differently).
    key = lambda a: torch.argsort(a.flatten(1).sum(1))  # noqa: E731
    torch.testing.assert_close(x[key(x)], eager.train.x[key(eager.train.x)], atol=1e-5, rtol=1e-5)
    assert torch.equal(y[key(x)], eager.train.y[key(eager.train.x)])
    assert lazy.spec.mean == pytest.approx(eager.spec.mean, abs=1e-6) and lazy.spec.std == pytest.approx(
        eager.spec.std, abs=1e-5
    )


def test_image_folders_too_large_for_memory_are_read_lazily(tmp_path, monkeypatch):
    from ember.data import images
    from ember.data.lazy import LazyDataset
    from ember.data.loaders import EpochLoader

    _photos(tmp_path / "photos")
    monkeypatch.setattr(images, "_memory_budget", lambda: 12 * 3 * 8 * 8 * 4 - 1)  # one byte short
    splits = load_data("imagefolder", root=str(tmp_path / "photos"), image_size=8, val_fraction=0, test_fraction=0)
    assert isinstance(splits.train, LazyDataset)
    # Files lie class by class: blocks of neighbours (as HDF5 rows are read) would make batches of
    # few classes, so a lazy image folder is shuffled sample by sample.
    loader = EpochLoader(splits.train, 8, shuffle=True, num_workers=0)
    assert loader.sampler.block == 1
    assert sorted(torch.cat([y for _, y in loader]).tolist()) == [0] * 6 + [1] * 6
    monkeypatch.setattr(images, "_memory_budget", lambda: 12 * 3 * 8 * 8 * 4)  # fits exactly
    assert isinstance(load_data("imagefolder", root=str(tmp_path / "photos"), image_size=8).train.x, torch.Tensor)


def test_training_on_a_lazy_image_folder_in_a_worker_learns(tmp_path):
    from data_support import fit

    _photos(tmp_path / "photos", per_class=20)
    result = fit(
        tmp_path,
        "data=imagefolder",
        f"data.root={tmp_path / 'photos'}",
        "data.image_size=8",
        "data.lazy=true",
        "data.num_workers=1",
        "model=mlp",
        "trainer.max_epochs=5",
        "optim.lr=0.01",
        "sched=none",
    )
    assert result.metrics["test/accuracy"] >= 0.75


def test_a_cifar_batch_that_would_run_code_is_refused_unread(ember_cli, tmp_path, code_payload):
    folder = _cifar(tmp_path / "data")
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({b"data": code_payload.obj, b"labels": [0]}, f)
    line = cli_error(
        ember_cli,
        tmp_path,
        "data=cifar10",
        f"data.root={tmp_path / 'data'}",
        "model=mlp",
        match="data_batch_1 names posix.system",
    )
    assert "refuses it; extract the python version of the archive" in line
    assert not code_payload.marker.exists()
    # The same file through plain pickle would have run the command: the test's payload is live.
    with open(folder / "data_batch_1", "rb") as f:
        pickle.load(f)
    assert code_payload.marker.exists()


def test_cifar_batches_of_older_pickles_and_numpys_still_load(tmp_path):
    # Protocol 2 (bytes as _codecs.encode) and numpy.core (numpy < 2): the globals such files name.
    folder = _cifar(tmp_path)
    for name in ["data_batch_1", "test_batch"]:
        raw = pickle.dumps(pickle.loads((folder / name).read_bytes()), protocol=2)
        (folder / name).write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    splits = load_data("cifar10", root=str(tmp_path), val_fraction=0)
    assert len(splits.train) == 40 and len(splits.test) == 8
