"""Speed instrumentation: throughput, step time, data wait, memory, FLOPs/MFU; the profiler; fast paths."""

import json

import pytest
import torch
from torch import nn

import ember
from ember.api import train
from ember.config import compose, typed
from ember.errors import ConfigError
from ember.train.device import resolve_precision
from ember.train.flops import count_step_flops, cpu_peak_flops


def _fit(tmp_path, **overrides):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = (x[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
    settings = {
        "max_epochs": 2,
        "batch_size": 32,
        "progress": "none",
        "tensorboard": False,
        "log_every_n_steps": 4,
        "run": {"root": str(tmp_path)},
    }
    result = ember.fit(model, (x, y), **{**settings, **overrides})
    return model, result


def test_every_interval_reports_throughput_step_time_data_wait_memory_and_mfu(tmp_path):
    _, result = _fit(tmp_path)
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert train
    for r in train:
        assert r["samples_per_s"] > 0 and r["step_ms"] > 0 and r["peak_mem_mb"] > 0
        assert 0 <= r["data_wait"] <= 1
        assert 0 < r["mfu"] < 1
    summary = result.summary
    # Linear(8,16) + Linear(16,2) on 32 samples: forward 2*32*(8*16+16*2) FLOPs, backward twice that
    # except the first layer's input gradient (2*32*8*16 fewer).
    forward = 2 * 32 * (8 * 16 + 16 * 2)
    assert summary["flops_per_step"] == 3 * forward - 2 * 32 * 8 * 16
    assert set(summary["time"]) == {"total_s", "data_wait_s", "eval_s"}


def test_counting_flops_changes_nothing_in_the_training(tmp_path):
    """Counting runs a forward/backward on a copy under a forked RNG: the weights come out the same."""
    a, _ = _fit(tmp_path, measure_flops=True)
    b, _ = _fit(tmp_path, measure_flops=False)
    for p, q in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(p, q)


def test_step_flops_of_a_linear_layer():
    layer = nn.Linear(10, 4, bias=False)
    x, y = torch.randn(6, 10), torch.randn(6, 4)
    flops = count_step_flops(layer, lambda m, x, y: ((m(x) - y) ** 2).mean(), x, y)
    assert flops == 2 * 6 * 10 * 4 * 2  # forward matmul, and the weight gradient's (no input gradient)
    assert layer.weight.grad is None  # counted on a copy


def test_cpu_peak_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = cpu_peak_flops()
    assert first > 1e8
    assert (tmp_path / "ember" / "peak_flops.json").exists()
    assert cpu_peak_flops() == first


def test_data_wait_hint_when_the_loop_waits(tmp_path, capsys):
    _fit(tmp_path, fast_path=False, num_workers=0, batch_size=1, max_epochs=1)
    out = capsys.readouterr().out
    assert "time:" in out and "waiting for data" in out


def test_precision_auto_is_fp32_on_cpu_and_cuda_paths_refuse_cpu():
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ConfigError, match="trainer.cuda_graphs=true needs a CUDA device"):
        train(
            compose(["data.num_samples=500", "trainer.cuda_graphs=true", "trainer.device=cpu", "trainer.progress=none"])
        )


def test_profile_writes_a_chrome_trace_and_prints_top_operators(tmp_path, capsys, monkeypatch):
    from ember.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["profile", "--steps", "3", "--warmup", "1", "data.num_samples=500", "trainer.tensorboard=false"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Self CPU" in out and "aten::" in out and "waiting for data" in out
    (trace,) = tmp_path.glob("runs/*-profile/*/trace.json")
    events = json.loads(trace.read_text())["traceEvents"]
    assert any(e.get("name", "").startswith("aten::") for e in events)


def test_time_report_hints_only_when_data_wait_dominates():
    from ember.api import _time_report

    data = typed(compose(["data.num_workers=0"])).data
    assert "hint" not in _time_report({"total_s": 10, "data_wait_s": 1, "eval_s": 1}, data)
    line = _time_report({"total_s": 10, "data_wait_s": 6, "eval_s": 1}, data)
    assert line.startswith("time: 10.0 s, of which waiting for data 60%, validation 10%")
    assert "raise data.num_workers (now 0)" in line
    slow = typed(compose(["data.fast_path=false"])).data
    assert "set data.fast_path=true" in _time_report({"total_s": 10, "data_wait_s": 6, "eval_s": 0}, slow)


def test_fast_preset_composes_and_trains_a_tiny_run_to_completion(tmp_path):
    cfg = compose(
        [
            "trainer=fast",
            "data.num_samples=600",
            "trainer.max_epochs=2",
            "trainer.progress=none",
            "trainer.tensorboard=false",
            "run.report=false",
            f"run.root={tmp_path}",
        ]
    )
    assert cfg.data.batch_size == 128 and cfg.optim.lr == 0.006 and cfg.sched.name == "onecycle"
    assert (
        cfg.trainer.label_smoothing == 0.1
        and not cfg.trainer.measure_flops
        and cfg.trainer.checkpoint_every_n_epochs == 10
    )
    assert compose(["trainer=fast"]).trainer.max_epochs == 60
    result = train(cfg)
    assert result.summary["status"] == "finished" and result.summary["epochs"] == 2
    assert result.summary["flops_per_step"] is None  # measure_flops=false: nothing counted
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records and all("mfu" not in r for r in records)
    assert (result.run_dir / "checkpoints" / "last.pt").exists()  # the last epoch still checkpoints
    assert 0 <= result.metrics["test/accuracy"] <= 1


def test_fast_path_trains_the_same_weights_as_the_dataloader_path(tmp_path):
    a, _ = _fit(tmp_path, fast_path=True, shuffle=True)
    b, _ = _fit(tmp_path, fast_path=False, shuffle=True)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("fused", [True, False])
def test_ember_trains_the_weights_of_a_hand_written_loop(tmp_path, fused):
    """benchmarks/overhead.py's parity check: the same batches in the same order, with the same
    optimizer kernel, give the same weights, bit for bit, so ember's loop adds bookkeeping, not
    arithmetic. fused=True is ember's default step; optim.fused=false is the tutorials' loop."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(100, 8, generator=g), torch.randint(0, 3, (100,), generator=g)

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

    raw = net()
    opt = torch.optim.AdamW(raw.parameters(), lr=3e-3, weight_decay=0.01, fused=fused)
    for _ in range(2):
        for i in range(0, 100, 32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(raw(x[i : i + 32]), y[i : i + 32]).backward()
            opt.step()
    model = net()
    ember.fit(
        model,
        (x, y),
        max_epochs=2,
        batch_size=32,
        shuffle=False,
        progress="none",
        tensorboard=False,
        sched={"name": "none"},
        optim={"name": "adamw", "lr": 3e-3, "weight_decay": 0.01, "fused": fused},
        run={"root": str(tmp_path), "report": False},
    )
    assert all(torch.equal(p, q) for p, q in zip(raw.state_dict().values(), model.state_dict().values()))


def _host_reads_during_fit(tmp_path, monkeypatch, epochs: int) -> int:
    """Calls that read a tensor's value on the host (a sync on an accelerator) while fitting."""
    reads = 0
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original):
            nonlocal reads
            reads += 1
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counted)
    # No validation split, logging and checkpoints only at the end: what is left is the loop.
    _fit(
        tmp_path,
        max_epochs=epochs,
        log_every_n_steps=10_000,
        checkpoint_every_n_epochs=100,
        val_fraction=0.0,
        test_fraction=0.0,
        measure_flops=False,
    )
    monkeypatch.undo()
    return reads


def test_the_loop_reads_no_tensor_on_the_host_per_step(tmp_path, monkeypatch):
    """Under the default nan_policy=stop the loss is checked when the interval is read, not per step:
    2 epochs and 8 epochs (16 and 64 steps) make the same number of host reads."""
    assert _host_reads_during_fit(tmp_path / "a", monkeypatch, 2) == _host_reads_during_fit(
        tmp_path / "b", monkeypatch, 8
    )
