"""Images: a folder of class subfolders (Pillow), and the CIFAR and MNIST distribution files.

    ember train data=imagefolder data.root=photos data.image_size=64 model=mlp
    ember train data=cifar10 data.root=~/data model=mlp         # ~/data/cifar-10-batches-py/...
    ember train data=mnist data.root=~/data model=mlp           # train-images-idx3-ubyte(.gz), ...

Nothing is downloaded: the readers take the files users already have, and when one is missing
the error says which files to put where. Images are decoded once into memory (uint8 -> float
in [0, 1], shape (channels, height, width)) and then train on the in-memory fast path; an image
folder too large for that (data.lazy) is decoded batch by batch in DataLoader workers instead.
"""

import gzip
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import numpy as np
import torch

from ember import safe_pickle
from ember.data import Splits, register_data
from ember.data.checks import existing_path, require
from ember.data.hdf5 import dataset
from ember.data.lazy import LazyDataset
from ember.data.loaders import TensorData, default_workers
from ember.data.spec import DataSpec
from ember.errors import ConfigError, DataError, EmberError
from ember.ranges import AT_LEAST_1, check_choice

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


# -- a folder of images -------------------------------------------------------------------------
@register_data("imagefolder", num_workers=default_workers())  # workers only read a lazy folder
def imagefolder(
    cfg,
    *,
    image_size: Annotated[int, AT_LEAST_1] = 32,
    channels: Annotated[int, AT_LEAST_1] = 3,
    lazy: bool | None = None,
) -> Splits:
    """Images in one subfolder per class (torchvision's ImageFolder layout), resized to image_size.

    lazy: decode batch by batch as training reads them (in data.num_workers DataLoader workers)
    instead of once into memory; null: lazily when the decoded images would take more than a
    quarter of this machine's memory.
    """
    require("PIL", "images", "imagefolder")
    if channels not in (1, 3):
        raise ConfigError(f"data.channels={channels} must be 1 (grayscale) or 3 (RGB)")
    root = existing_path(
        cfg.root or cfg.path,
        "data.root",
        "imagefolder",
        "a folder with one subfolder of images per class",
        directory=True,
    )
    # root/train/<class>/..., root/test/<class>/... are predefined splits.
    parts = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    if "train" not in parts:
        parts = {"train": root}
    classes = _classes(parts["train"])
    found = {name: _files(folder, classes) for name, folder in parts.items()}
    if lazy is None:
        decoded = sum(len(files) for files, _ in found.values()) * channels * image_size**2 * 4
        lazy = decoded > _memory_budget()
    if lazy:
        splits = {
            name: _lazy_split(ImageFolderReader(files, labels, image_size, channels, parts[name]), len(classes))
            for name, (files, labels) in found.items()
        }
    else:
        splits = {name: _decode_split(files, labels, image_size, channels) for name, (files, labels) in found.items()}
    spec = DataSpec(
        input_shape=(channels, image_size, image_size),
        task="classification",
        num_classes=len(classes),
        class_names=classes,
    )
    return Splits(train=splits["train"], val=splits.get("val"), test=splits.get("test"), spec=spec)


def _classes(folder: Path) -> list[str]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        loose = [p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
        hint = f" (it holds {len(loose)} images directly: move them into class folders)" if loose else ""
        raise DataError(
            f"{folder} has no class subfolders{hint}; put the images of each class in {folder}/<class name>/"
        )
    return classes


def _files(folder: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    """The image files of the class folders, class by class, and their class ids."""
    files, labels, empty = [], [], []
    for k, name in enumerate(classes):
        found = sorted(p for p in (folder / name).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not found:
            empty.append(name)
        files += found
        labels += [k] * len(found)
    if not files:
        raise DataError(
            f"{folder} has no images ({', '.join(IMAGE_EXTENSIONS[:4])}, ...) "
            f"in its class folders {', '.join(classes[:5])}; put image files in {folder}/<class name>/"
        )
    if empty:
        raise DataError(
            f"class folder(s) {', '.join(empty)} in {folder} hold no images; add images or remove the empty folders"
        )
    return files, labels


def _decode_split(files: list[Path], labels: list[int], size: int, channels: int) -> TensorData:
    return _images(_decode_many(files, size, channels), np.asarray(labels))


def _lazy_split(reader: "ImageFolderReader", num_classes: int) -> LazyDataset:
    data, _ = dataset(reader, "error", num_classes)  # the scan and label checks of every file-backed source
    return data


def _memory_budget() -> int:
    """Bytes of decoded images kept in memory at most: a quarter of this machine's memory."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows)
        return 4 * 2**30


class ImageFolderReader:
    """Image files read as rows of a LazyDataset (lazy.py): decoded when a batch reads them."""

    task = "classification"
    block_reads = False  # one file per row: neighbouring rows are no cheaper to read together

    def __init__(self, files: list[Path], labels: list[int], size: int, channels: int, folder: Path):
        self.files, self._labels = files, np.asarray(labels, dtype=np.int64)
        self.size, self.channels, self.where = size, channels, str(folder)
        self.input_shape = (channels, size, size)

    def __len__(self) -> int:
        return len(self.files)

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        x = _decode_many(self.files[start:stop], self.size, self.channels).astype(np.float32) / 255
        return x, self._labels[start:stop]

    def labels(self) -> np.ndarray:
        return self._labels

    def close(self) -> None:
        pass  # no handles: each read opens its files


def _decode_many(files: list[Path], size: int, channels: int) -> np.ndarray:
    """uint8 images, shape (n, channels, size, size)."""
    if len(files) > 1:  # Pillow decodes with the GIL released: threads decode in parallel
        with ThreadPoolExecutor(max_workers=4) as pool:
            images = list(pool.map(lambda f: _decode(f, size, channels), files))
    else:
        images = [_decode(f, size, channels) for f in files]
    a = np.stack(images)
    return np.ascontiguousarray(a[:, None] if channels == 1 else a.transpose(0, 3, 1, 2))


def _decode(path: Path, size: int, channels: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except Exception as e:  # noqa: BLE001 - truncated files, unknown formats, files that are not images
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(f"cannot decode {path} as an image ({first}); replace or remove the file") from None


# -- CIFAR ---------------------------------------------------------------------------------------
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@register_data("cifar10", augment=["crop", "flip"])
def cifar10(cfg) -> Splits:
    """CIFAR-10 from the python files in data.root (cifar-10-batches-py); crop+flip augmentation."""
    folder = _find(
        cfg.root,
        "cifar10",
        "cifar-10-batches-py",
        ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"],
        "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html",
    )
    train = [_cifar_batch(folder / f"data_batch_{i}", b"labels", 10) for i in range(1, 6)]
    test = _cifar_batch(folder / "test_batch", b"labels", 10)
    x = np.concatenate([b[0] for b in train])
    y = np.concatenate([b[1] for b in train])
    spec = DataSpec(input_shape=(3, 32, 32), task="classification", num_classes=10, class_names=CIFAR10_CLASSES)
    return Splits(train=_images(x, y), test=_images(*test), spec=spec)


@register_data("cifar100", augment=["crop", "flip"])
def cifar100(cfg, *, labels: str = "fine") -> Splits:
    """CIFAR-100 from the python files in data.root (cifar-100-python); fine (100) or coarse (20) labels."""
    check_choice("data.labels", labels, ("fine", "coarse"))
    folder = _find(cfg.root, "cifar100", "cifar-100-python", ["train", "test"], "cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html")
    k = 100 if labels == "fine" else 20
    key = f"{labels}_labels".encode()
    train, test = _cifar_batch(folder / "train", key, k), _cifar_batch(folder / "test", key, k)
    names = [str(i) for i in range(k)]
    if (folder / "meta").is_file():
        meta = _unpickle(folder / "meta")
        names = [n.decode() for n in meta.get(f"{labels}_label_names".encode(), [])] or names
    spec = DataSpec(input_shape=(3, 32, 32), task="classification", num_classes=k, class_names=names)
    return Splits(train=_images(*train), test=_images(*test), spec=spec)


# What the CIFAR python files hold besides dicts, lists, bytes and numbers: one uint8 ndarray,
# pickled through numpy's reconstruct path (numpy.core before numpy 2, numpy._core after), and
# the bytes of a file Python 3 wrote with protocol 2 (pickled as _codecs.encode(str, "latin1")).
CIFAR_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


def _unpickle(path: Path) -> dict:
    fix = "extract the python version of the archive from https://www.cs.toronto.edu/~kriz/cifar.html again"
    try:
        return safe_pickle.load(path, CIFAR_GLOBALS, kind="CIFAR python batch", fix=fix, encoding="bytes")
    except EmberError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated downloads and files of another kind
        raise DataError(
            f"cannot read {path} as a CIFAR python batch ({type(e).__name__}: {e}); the file may be truncated: "
            "extract the archive again"
        ) from None


def _cifar_batch(path: Path, key: bytes, k: int) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    if not isinstance(d, dict) or b"data" not in d or key not in d:
        raise DataError(
            f"{path} is not a CIFAR batch (no {key.decode()!r} and 'data' entries); "
            "extract the python version of the archive"
        )
    x, y = np.asarray(d[b"data"], dtype=np.uint8), np.asarray(d[key], dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
        raise DataError(
            f"{path} holds data of shape {x.shape} with {len(y)} labels, not N x 3072 images with N labels; "
            "extract the archive again"
        )
    if len(y) and (y.min() < 0 or y.max() >= k):
        raise DataError(
            f"{path} has label {int(y.max() if y.max() >= k else y.min())}, outside 0..{k - 1}; the file is corrupt: "
            "extract the archive again"
        )
    return x.reshape(-1, 3, 32, 32), y


# -- MNIST and Fashion-MNIST -------------------------------------------------------------------------
MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


@register_data("mnist")
def mnist(cfg) -> Splits:
    """MNIST from the IDX files (gz or not) in data.root."""
    return _mnist(cfg.root, "mnist", "MNIST", [str(i) for i in range(10)])


@register_data("fashion_mnist")
def fashion_mnist(cfg) -> Splits:
    """Fashion-MNIST from the IDX files (gz or not) in data.root."""
    return _mnist(cfg.root, "fashion_mnist", "FashionMNIST", FASHION_CLASSES)


def _mnist(root: str | None, source: str, torchvision_name: str, classes: list[str]) -> Splits:
    folder = _find(root, source, f"{torchvision_name}/raw", MNIST_FILES, "the four IDX files of the dataset", gz=True)
    x, y = _idx(folder, MNIST_FILES[0]), _idx(folder, MNIST_FILES[1])
    xt, yt = _idx(folder, MNIST_FILES[2]), _idx(folder, MNIST_FILES[3])
    for images, labels, name in ((x, y, "train"), (xt, yt, "t10k")):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"{folder}: the {name} images ({images.shape}) and labels ({labels.shape}) do not "
                "match; replace the files"
            )
        if len(labels) and labels.max() >= len(classes):
            raise DataError(
                f"{folder}: {name} label {int(labels.max())} is outside 0..{len(classes) - 1}; "
                "the labels file is corrupt"
            )
    spec = DataSpec(input_shape=(1, *x.shape[1:]), task="classification", num_classes=len(classes), class_names=classes)
    return Splits(train=_images(x[:, None], y), test=_images(xt[:, None], yt), spec=spec)


def _idx(folder: Path, name: str) -> np.ndarray:
    """An IDX file (the MNIST format): magic, dimension sizes (big-endian int32), then unsigned bytes."""
    path = folder / name if (folder / name).is_file() else folder / f"{name}.gz"
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path} ({e}); the file may be truncated: download it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(
            f"{path} is not an IDX file of unsigned bytes (bad magic number); replace it with the original file"
        )
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4) if len(raw) >= 4 + 4 * ndim else np.array([-1])
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if dims.min() < 0 or len(raw) != expected:
        raise DataError(
            f"{path} holds {len(raw)} bytes but its header announces {expected}; "
            "the file is truncated or corrupt: download it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(tuple(int(d) for d in dims))


# -- shared ---------------------------------------------------------------------------------------
def _find(root: str | None, source: str, subfolder: str, files: list[str], get: str, gz: bool = False) -> Path:
    """The folder holding `files`: data.root itself or data.root/subfolder. Never downloads."""
    listed = ", ".join(f + (".gz" if gz else "") for f in files)
    if not root:
        raise ConfigError(
            f"data={source} reads {listed} from data.root, which is not set; put them in a folder (get {get}) "
            "and pass data.root=FOLDER (ember downloads nothing)"
        )
    base = existing_path(
        root, "data.root", source, f"a folder holding {listed} (or {subfolder}/ with them)", directory=True
    )
    for folder in (base, base / subfolder):
        if all((folder / f).is_file() or (gz and (folder / f"{f}.gz").is_file()) for f in files):
            return folder
    folder = base / subfolder if (base / subfolder).is_dir() else base
    missing = [f for f in files if not ((folder / f).is_file() or (gz and (folder / f"{f}.gz").is_file()))]
    raise DataError(
        f"data={source} needs {', '.join(m + ('(.gz)' if gz else '') for m in missing)} in {folder} (or in "
        f"{base / subfolder}); get {get}, put the files there, and run again (ember downloads nothing)"
    )


def _images(x: np.ndarray, y: np.ndarray) -> TensorData:
    # np.array copies: the IDX bytes are a read-only buffer, and torch wants writable memory.
    return TensorData(
        torch.from_numpy(np.array(x, dtype=np.float32)).div_(255), torch.from_numpy(np.array(y, dtype=np.int64))
    )
