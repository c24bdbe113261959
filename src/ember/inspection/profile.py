"""`ember profile`: a short real run under torch.profiler.

Prints the operators that took the most time and the share of time spent waiting for data, and
writes a Chrome trace (open it in Perfetto or chrome://tracing) into the run directory.
"""

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.profiler import ProfilerActivity, profile, schedule

from ember.config import typed
from ember.data import build_data
from ember.models import builder_kwargs, create_model
from ember.rundir.directory import RunDir, default_run_name
from ember.track.console import Console
from ember.train.build import build_trainer
from ember.train.callbacks import Callbacks
from ember.train.device import restored_torch_flags, seed_everything


def profile_run(cfg: DictConfig, console: Console, warmup: int = 5, steps: int = 10) -> Path:
    cfg = OmegaConf.merge(cfg, {"trainer": {"max_steps": warmup + steps, "progress": "none"}})
    cfg.run.name = default_run_name(cfg) + "-profile"
    seed_everything(cfg.trainer.seed)
    splits = build_data(cfg.data)
    model = create_model(cfg.model.name, splits.spec, **builder_kwargs(cfg.model))
    cuda = torch.cuda.is_available() and cfg.trainer.device in ("auto", "cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    prof = profile(activities=activities, schedule=schedule(wait=0, warmup=warmup, active=steps, repeat=1))
    clock = Callbacks(on_step=lambda step, logged: prof.step())  # the profiler's clock is the optimizer step
    with restored_torch_flags():
        trainer = build_trainer(typed(cfg), model, splits, Console("none"), callbacks=clock)
        run = RunDir.create(cfg, splits.spec)
        with prof:
            trainer.fit(run, run.checkpoints)
    trace = run.path / "trace.json"
    prof.export_chrome_trace(str(trace))
    run.close()
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    console.print(prof.key_averages().table(sort_by=sort, row_limit=15))
    wait = trainer.meter.total_wait / max(trainer.wall_time, 1e-9)
    console.print(
        f"{warmup + steps} steps ({steps} profiled) in {trainer.wall_time:.2f} s; waiting for data {wait:.0%}"
    )
    console.print(f"chrome trace: {trace}")
    return trace
