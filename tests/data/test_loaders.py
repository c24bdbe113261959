"""The block-shuffled batch sampler of file-backed data (the EpochLoader is tested in test_sources)."""

import pytest
import torch
from torch.utils.data import Dataset

from ember.data.loaders import BlockBatchSampler, EpochLoader, TensorData, default_workers


def test_block_batches_cover_every_index_once_in_few_contiguous_runs():
    sampler = BlockBatchSampler(1000, 64, shuffle=True, seed=3)
    epochs = []
    for _ in range(2):
        batches = list(sampler)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(1000)) and len(batches) == len(sampler) == 16
        for b in batches[:-1]:
            runs = 1 + sum(1 for a, c in zip(sorted(b), sorted(b)[1:]) if c != a + 1)
            assert len(b) == 64 and runs <= 5  # 4 blocks of 16, one more at an edge
        epochs.append(flat)
    assert epochs[0] != epochs[1]  # a new order every epoch
    sampler.set_epoch(0)
    assert [i for b in sampler for i in b] == epochs[0]  # and the same order for the same (seed, epoch)
    assert [i for b in BlockBatchSampler(10, 4, shuffle=False) for i in b] == list(range(10))
    assert default_workers() >= 0


def _rank_batches(n, batch_size, world, epoch=0, start=0, seed=3):
    ranks = []
    for rank in range(world):
        sampler = BlockBatchSampler(n, batch_size, shuffle=True, seed=seed, rank=rank, world=world)
        sampler.set_epoch(epoch, start)
        ranks.append([b.tolist() for b in sampler.batches()])
    return ranks


@pytest.mark.parametrize("n, world", [(1000, 2), (1000, 3), (1024, 2), (50, 4)])
def test_ranks_share_an_epoch_like_one_process_of_the_global_batch(n, world):
    ranks = _rank_batches(n, 16, world, epoch=2)
    # Every rank the same number of full batches: none waits for the others at the epoch's end.
    assert {len(batches) for batches in ranks} == {-(-n // (16 * world))}
    assert {len(b) for batches in ranks for b in batches} == {16}
    # Global batch b, the ranks' batches b in rank order, is batch b of one process with the
    # global batch size and reads_per_batch * world: the same blocks, index for index.
    one = BlockBatchSampler(n, 16 * world, shuffle=True, seed=3, reads_per_batch=4 * world)
    one.set_epoch(2)
    together = [[i for batches in ranks for i in batches[b]] for b in range(len(ranks[0]))]
    flat, ref = [i for g in together for i in g], [i for g in one.batches() for i in g.tolist()]
    assert flat[:n] == ref
    # Every index once; the padding wraps around to the start of the order.
    assert sorted(flat[:n]) == list(range(n)) and flat[n:] == (ref * 4)[: len(flat) - n]
    assert len(flat) - n < 16 * world


def test_a_rank_resumed_mid_epoch_gets_the_tail_of_its_full_epoch():
    for rank, full in enumerate(_rank_batches(1000, 16, 2, epoch=5)):
        assert _rank_batches(1000, 16, 2, epoch=5, start=20)[rank] == full[20:]
        assert _rank_batches(1000, 16, 2, epoch=5, start=len(full))[rank] == []
    assert _rank_batches(1000, 16, 2, epoch=5) != _rank_batches(1000, 16, 2, epoch=6)


class _WorkerSeeds(Dataset):
    """A file-backed-like dataset whose 'batch' is the torch seed of the worker reading it."""

    reads_batches = True

    def __len__(self):
        return 40

    def __getitem__(self, index):
        return torch.tensor([torch.initial_seed()])


def test_worker_seeds_follow_the_epoch_and_the_rank():
    def seed(epoch, rank):
        loader = EpochLoader(_WorkerSeeds(), 10, shuffle=True, seed=0, num_workers=1, rank=rank, world=2)
        loader.set_epoch(epoch, start=1)
        return int(next(iter(loader)))

    assert seed(3, 0) == seed(3, 0)  # a resumed run's workers get the seeds they had
    assert len({seed(3, 0), seed(4, 0), seed(3, 1)}) == 3


@pytest.mark.parametrize("n,world", [(100, 2), (101, 3), (64, 4)])
def test_evaluation_shares_cover_every_sample_once_without_padding(n, world):
    data = TensorData(torch.arange(n).float().unsqueeze(1), torch.arange(n))
    loaders = [EpochLoader(data, 8, False, rank=r, world=world, evaluation=True) for r in range(world)]
    assert all(ld.sharded for ld in loaders)
    seen = torch.cat([y for ld in loaders for _, y in ld])
    assert sorted(seen.tolist()) == list(range(n))  # each sample exactly once: sums add up
    lengths = [len(ld) for ld in loaders]
    assert max(lengths) - min(lengths) <= 1 and max(lengths) == loaders[0].sampler.most


def test_a_split_smaller_than_the_ranks_is_evaluated_whole_by_each():
    data = TensorData(torch.zeros(10, 1), torch.arange(10))
    ld = EpochLoader(data, 8, False, rank=1, world=4, evaluation=True)
    assert not ld.sharded and torch.cat([y for _, y in ld]).tolist() == list(range(10))


def _iterate_and_keep_workers():
    import torch
    from torch.utils.data import TensorDataset

    from ember.data.loaders import EpochLoader

    loader = EpochLoader(TensorDataset(torch.randn(64, 3), torch.randn(64)), 8, True, num_workers=2, fast=False)
    loader.set_epoch(0)
    batches = iter(loader)
    next(batches)
    global _KEPT
    _KEPT = [loader, batches]  # still alive at exit, as a trainer held in a reference cycle is


def test_a_multiprocessing_child_with_loader_workers_exits():
    """Loader workers ignore SIGTERM (a batch system's signal to the group is the main process's to
    act on), so multiprocessing's exit hook, which SIGTERMs and joins them, waited for ever in a
    `tune.jobs` worker unless ember stopped them first."""
    import multiprocessing

    child = multiprocessing.get_context("spawn").Process(target=_iterate_and_keep_workers)
    child.start()
    child.join(60)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive and child.exitcode == 0


def test_stopped_workers_are_gone_and_the_next_epoch_starts_new_ones():
    from multiprocessing import active_children

    from torch.utils.data import TensorDataset

    data = TensorDataset(torch.arange(40.0).reshape(20, 2), torch.arange(20.0))
    loader = EpochLoader(data, 5, True, seed=1, num_workers=2, fast=False)
    loader.set_epoch(0)
    first = [x.tolist() for x, _ in loader]
    workers = active_children()
    assert len(workers) == 2  # persistent: kept between epochs
    loader.stop_workers()
    assert not any(w.is_alive() for w in workers) and not active_children()
    loader.set_epoch(0)
    assert [x.tolist() for x, _ in loader] == first  # new workers, the same batches
    loader.stop_workers()
    once = EpochLoader(data, 5, False, num_workers=2, fast=False, evaluation=True, persistent=False)
    assert len(list(once)) == 4 and not active_children()  # a one-time loader keeps none
