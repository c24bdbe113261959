"""A run sets torch's process-wide switches for itself and puts them back."""

import torch

import ember
from ember.train.device import restored_torch_flags, set_torch_flags


def test_the_switches_come_back_after_the_block():
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark, torch.get_num_threads())
    with restored_torch_flags():
        set_torch_flags(torch.device("cpu"), tf32=False, deterministic=True)
        torch.set_num_threads(1)
        assert torch.are_deterministic_algorithms_enabled()
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark, torch.get_num_threads()) == before


def test_fit_leaves_the_process_as_it_found_it(tmp_path):
    torch.backends.cudnn.benchmark = True  # a notebook's own choice
    try:
        x = torch.randn(64, 3)
        ember.fit(torch.nn.Linear(3, 1), (x, x.sum(1, keepdim=True)), max_epochs=1, deterministic=True, run={"root": str(tmp_path)}, progress="none")
        assert not torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = False
