"""Every: when logging, validation and checkpoints are due."""

from ember.train.cadence import Every


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_steps_and_epochs():
    every = Every(steps=3, epochs=2)
    assert [s for s in range(1, 10) if every.at_step(s)] == [3, 6, 9]
    assert [e for e in range(1, 7) if every.at_epoch_end(e)] == [2, 4, 6]


def test_zero_means_never():
    every = Every()
    assert not any(every.at_step(s) for s in range(1, 100))
    assert not any(every.at_epoch_end(e) for e in range(1, 10))


def test_minutes_count_from_the_last_run():
    clock = Clock()
    every = Every(minutes=1.5, clock=clock)
    clock.now = 89.0
    assert not every.at_step(7)
    clock.now = 90.0
    assert every.at_step(7)
    every.ran()
    clock.now = 100.0
    assert not every.at_step(8)
