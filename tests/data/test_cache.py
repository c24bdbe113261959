"""The data cache: a damaged file is said and made again, a cache that cannot be written is skipped."""

import numpy as np
import pytest
import torch

from ember import load_data
from ember.data import cache


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "ember"


def _make():
    return {"a": torch.arange(6.0), "b": torch.ones(6)}


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: len(raw) // 2],  # truncated: a full disk, a copy cut short
        lambda raw: b"",  # an empty file
        lambda raw: b"not a zip archive at all",
    ],
    ids=["truncated", "empty", "garbage"],
)
def test_a_damaged_cache_file_is_said_and_made_again(cache_home, damage):
    cache.cached_arrays("toy", {"n": 6}, _make, keys=("a", "b"))
    (path,) = cache_home.glob("toy-*.pt")
    path.write_bytes(damage(path.read_bytes()))
    arrays, note = cache.cached_arrays("toy", {"n": 6}, _make, keys=("a", "b"))
    assert torch.equal(arrays["a"], torch.arange(6.0))
    assert note.startswith(f"warning: the cached data=toy file {path} was damaged (") and "cached in" in note
    assert "\n" not in note
    again, note = cache.cached_arrays("toy", {"n": 6}, _make, keys=("a", "b"))  # rewritten whole
    assert note.startswith("data=toy read from the cache") and torch.equal(again["b"], torch.ones(6))


def test_a_cache_file_without_the_arrays_is_made_again(cache_home):
    cache.cached_arrays("toy", {"n": 6}, _make, keys=("a", "b"))
    (path,) = cache_home.glob("toy-*.pt")
    torch.save(torch.zeros(3), path)  # a bare tensor, not the dict of arrays
    arrays, note = cache.cached_arrays("toy", {"n": 6}, _make, keys=("a", "b"))
    assert "was damaged (ValueError: it holds Tensor" in note and set(arrays) == {"a", "b"}


def test_an_unwritable_cache_leaves_the_run_its_arrays(cache_home):
    cache_home.parent.mkdir(exist_ok=True)
    cache_home.write_text("a file where the cache folder should be")
    arrays, note = cache.cached_arrays("toy", {"n": 6}, _make, keys=("a", "b"))
    assert torch.equal(arrays["a"], torch.arange(6.0)) and "not cached: cannot write" in note


def test_a_truncated_mnist1d_cache_is_made_again(cache_home):
    first = load_data("mnist1d", num_samples=200)
    assert first.notes == []  # a good cache is not mentioned
    (path,) = cache_home.glob("mnist1d-*.npz")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 200])
    second = load_data("mnist1d", num_samples=200)
    assert any(
        n.startswith(f"warning: the cached data=mnist1d file {path} was damaged (BadZipFile") for n in second.notes
    )
    assert torch.equal(first.train.x, second.train.x)
    with np.load(path) as z:  # written whole again
        assert len(z["x"]) + len(z["x_test"]) == 200
