"""trainer.strategy: its names, and the blocks FSDP shards one by one."""

import pytest
from torch import nn

from ember.errors import ConfigError
from ember.train import strategy
from ember.train.distributed import Dist


def test_auto_is_ddp_and_unknown_names_list_the_known_ones():
    assert strategy.resolve("auto") == "ddp"
    assert strategy.resolve("fsdp") == "fsdp"
    with pytest.raises(ConfigError, match="choose one of: auto, ddp, fsdp"):
        strategy.resolve("deepspeed")


def test_shard_units_are_the_outermost_blocks_with_trainable_parameters():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(4, 8)
            self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(8, 8), nn.ReLU()) for _ in range(3)])
            self.head = nn.Sequential(nn.ReLU(), nn.Linear(8, 2))

    net = Net()
    units = strategy.shard_units(net)
    # The three blocks (not the Linear inside each), and the head's Linear (the ReLU holds nothing).
    assert units == [*net.blocks, net.head[1]]


def test_one_process_runs_the_plain_model():
    model = nn.Linear(2, 2)
    assert strategy.wrap(model, model, "fsdp", Dist(), device=None) is model
    assert strategy.no_sync("fsdp", model, model, Dist()) is None and not strategy.is_sharded(model)
