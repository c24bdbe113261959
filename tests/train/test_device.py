"""A run sets torch's process-wide switches for itself and puts them back; on CPU it has glibc's
malloc keep freed memory, for the rest of the process."""

import os
import platform
import subprocess
import sys

import pytest
import torch

import ember
from ember.train.device import keep_freed_memory, restored_torch_flags, set_torch_flags


def test_the_switches_come_back_after_the_block():
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark, torch.get_num_threads())
    with restored_torch_flags():
        set_torch_flags(torch.device("cpu"), tf32=False, deterministic=True)
        torch.set_num_threads(1)
        assert torch.are_deterministic_algorithms_enabled()
    assert (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.benchmark,
        torch.get_num_threads(),
    ) == before


def test_fit_leaves_the_process_as_it_found_it(tmp_path):
    torch.backends.cudnn.benchmark = True  # a notebook's own choice
    try:
        x = torch.randn(64, 3)
        ember.fit(
            torch.nn.Linear(3, 1),
            (x, x.sum(1, keepdim=True)),
            max_epochs=1,
            deterministic=True,
            run={"root": str(tmp_path)},
            progress="none",
        )
        assert not torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = False


PAGE_FAULTS = """
import resource, sys, torch, ember
def faults():  # minor page faults of making and freeing a 40 MB tensor, summed over the last 4 of 24 times
    counts = []
    for _ in range(24):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(10_000_000)
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return sum(counts[-4:])
print(faults())
x = torch.randn(64, 3)
data = (x, x.sum(1, keepdim=True))
if sys.argv[2] == "dataset":  # not held in memory as tensors, as a file-backed source
    data = torch.utils.data.TensorDataset(*data)
ember.fit(torch.nn.Linear(3, 1), data, max_epochs=1, run={"root": sys.argv[1]}, progress="none")
print(faults())
"""


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_a_cpu_run_on_tensors_keeps_freed_memory_and_one_on_a_dataset_does_not(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES" and not k.startswith("MALLOC_")}
    faults = {}
    for data in ("tensors", "dataset"):
        out = subprocess.run(
            [sys.executable, "-c", PAGE_FAULTS, str(tmp_path / data), data],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        lines = out.stdout.split("\n")
        faults[data] = int(lines[0]), int(lines[-2])  # the run prints its own lines between
    before, after = faults["tensors"]
    assert before > 4 * 5000  # each time 40 MB of fresh 4 KiB pages, zeroed by the kernel
    # Kept, the first few blocks may still be fresh pages: torch's 64-byte aligned requests ask
    # for a little more than a freed block holds until freed neighbours merge (by the 9th time here).
    assert after < 100
    # Data not held as tensors (a Dataset, files) leaves glibc's default: freed memory goes back.
    assert faults["dataset"][1] > 4 * 5000


def test_a_users_own_malloc_settings_win():
    assert not keep_freed_memory({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"})
    assert not keep_freed_memory({"MALLOC_ARENA_MAX": "2"})
