import time

import torch

from ember.train.meter import IntervalMeter

CPU = torch.device("cpu")


def _steps(meter: IntervalMeter, clock: list, losses, seconds_each: float) -> None:
    for loss in losses:
        meter.add(torch.tensor(float(loss)), samples=4, label=loss)
        meter.steps += 1
        clock[0] += seconds_each


def test_a_resumed_interval_logs_the_whole_loss_but_times_only_its_own_steps(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    before = IntervalMeter(CPU)
    _steps(before, clock, range(6), seconds_each=1.0)  # then the process is stopped
    clock[0] = 1000.0  # and a new one starts later
    resumed = IntervalMeter(CPU)
    resumed.load_state_dict(before.state_dict())
    _steps(resumed, clock, range(6, 10), seconds_each=0.5)
    record = resumed.record()
    assert record["loss"] == sum(range(10)) / 10  # what an uninterrupted interval logs
    assert record["step_ms"] == 500.0  # 4 steps in 2 s, not 2 s over all 10 steps
    assert record["samples_per_s"] == 8
