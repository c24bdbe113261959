"""The block-shuffled batch sampler of file-backed data (the EpochLoader is tested in test_sources)."""

from ember.data.loaders import BlockBatchSampler, default_workers


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
