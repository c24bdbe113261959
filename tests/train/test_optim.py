"""Optimizers and learning-rate schedules: each schedule against its closed form."""

import itertools
import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from train_support import RecordingConsole

from ember.config import compose, typed
from ember.data import Splits, TensorData
from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.track.console import Console
from ember.train.build import build_trainer
from ember.train.optim import build_optimizer, build_scheduler, warmup_for_plateau

LR = 0.1
REGRESSION = DataSpec(input_shape=(3,), task="regression", target_shape=(1,))


def cfg_of(*overrides: str):
    return compose(
        ["model=mlp", "data=linear", "optim=sgd", f"optim.lr={LR}", "optim.momentum=0", "sched=none", *overrides]
    )


def dummy_optimizer(lr: float = LR) -> torch.optim.Optimizer:
    return torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=lr)


def lr_sequence(sched_overrides, total: int, steps_per_epoch: int = 1, n: int | None = None) -> list[float]:
    """lrs[t]: the lr the optimizer uses for step t (after t scheduler steps)."""
    cfg = cfg_of(*sched_overrides)
    opt = dummy_optimizer()
    sched = build_scheduler(cfg.sched, opt, total, steps_per_epoch)
    lrs = []
    for _ in range(total if n is None else n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


# -- optimizers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, cls",
    [
        ("sgd", torch.optim.SGD),
        ("adam", torch.optim.Adam),
        ("adamw", torch.optim.AdamW),
        ("rmsprop", torch.optim.RMSprop),
    ],
)
def test_build_optimizer(name, cls):
    cfg = cfg_of(f"optim={name}", "optim.lr=0.02", "optim.weight_decay=0.001")
    params = [nn.Parameter(torch.zeros(3))]
    opt = build_optimizer(cfg.optim, params)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 0.02 and group["weight_decay"] == 0.001
    assert group["params"][0] is params[0]


def test_sgd_options_are_passed():
    cfg = cfg_of("optim.momentum=0.8", "optim.nesterov=true")
    group = build_optimizer(cfg.optim, [nn.Parameter(torch.zeros(1))]).param_groups[0]
    assert group["momentum"] == 0.8 and group["nesterov"] is True


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_fused_step_by_default_where_torch_has_one(name):
    params = [nn.Parameter(torch.zeros(3))]
    assert build_optimizer(cfg_of(f"optim={name}").optim, params).defaults["fused"] is True
    assert not build_optimizer(cfg_of(f"optim={name}", "optim.fused=false").optim, params).defaults["fused"]
    # Sharded parameters keep torch's default step.
    assert not build_optimizer(cfg_of(f"optim={name}").optim, params, fusable=False).defaults["fused"]


def test_fused_step_matches_the_loop_closely_and_false_is_the_loop_exactly():
    x = torch.randn(64, 8)

    def train(*overrides):
        cfg = cfg_of(*overrides, "optim.lr=0.003", "optim.weight_decay=0.01").optim if overrides else None
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
        opt = (
            build_optimizer(cfg, list(model.parameters()))
            if cfg
            else torch.optim.AdamW(model.parameters(), lr=0.003, weight_decay=0.01)
        )
        for _ in range(50):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    loop = train()  # the hand-written loop's optimizer
    assert torch.equal(train("optim=adamw", "optim.fused=false"), loop)
    fused = train("optim=adamw")
    assert not torch.equal(fused, loop)  # another kernel indeed ran
    torch.testing.assert_close(fused, loop, rtol=1e-5, atol=1e-6)


def test_fused_true_where_no_fused_step_is_a_config_error():
    with pytest.raises(ConfigError, match="rmsprop has no fused step"):
        build_optimizer(cfg_of("optim=rmsprop", "optim.fused=true").optim, [nn.Parameter(torch.zeros(1))])
    with pytest.raises(ConfigError, match="sharded"):
        build_optimizer(cfg_of("optim=adamw", "optim.fused=true").optim, [nn.Parameter(torch.zeros(1))], fusable=False)


def test_unknown_optimizer_is_a_config_error():
    cfg = OmegaConf.create({"name": "lbfgs", "lr": 0.1, "weight_decay": 0.0})
    with pytest.raises(ConfigError, match="lbfgs"):
        build_optimizer(cfg, [nn.Parameter(torch.zeros(1))])


# -- schedules ------------------------------------------------------------------------------------


def test_none_builds_no_scheduler():
    assert build_scheduler(cfg_of("sched=none").sched, dummy_optimizer(), 10, 2) is None


def test_cosine_follows_closed_form():
    total, eta_min = 20, 0.01
    lrs = lr_sequence(["sched=cosine", f"sched.min_lr={eta_min}"], total, n=total + 1)
    expected = [eta_min + (LR - eta_min) * (1 + math.cos(math.pi * t / total)) / 2 for t in range(total + 1)]
    assert lrs == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert lrs[-1] == pytest.approx(eta_min)


def test_step_follows_closed_form():
    steps_per_epoch, step_size, gamma, total = 3, 2, 0.5, 20
    lrs = lr_sequence(["sched=step", f"sched.step_size={step_size}", f"sched.gamma={gamma}"], total, steps_per_epoch)
    expected = [LR * gamma ** (t // (step_size * steps_per_epoch)) for t in range(total)]
    assert lrs == pytest.approx(expected, rel=1e-6)
    assert lrs[5] == pytest.approx(LR) and lrs[6] == pytest.approx(LR * gamma)  # decays on epoch boundaries


def _ramp(t: int, warmup: int, start: float) -> float:
    return LR * (start + (1 - start) * t / warmup)


def test_warmup_then_cosine():
    total, warmup, start, eta_min = 20, 5, 0.1, 0.001
    overrides = [
        "sched=cosine",
        f"sched.warmup_steps={warmup}",
        f"sched.warmup_start_factor={start}",
        f"sched.min_lr={eta_min}",
    ]
    lrs = lr_sequence(overrides, total, n=total + 1)
    main = total - warmup
    expected = [
        _ramp(t, warmup, start)
        if t < warmup
        else eta_min + (LR - eta_min) * (1 + math.cos(math.pi * (t - warmup) / main)) / 2
        for t in range(total + 1)
    ]
    assert lrs == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert lrs[0] == pytest.approx(start * LR)
    assert lrs[warmup] == pytest.approx(LR)
    assert lrs[total] == pytest.approx(eta_min)


def test_warmup_with_no_schedule_ramps_then_holds():
    total, warmup, start = 12, 4, 0.25
    lrs = lr_sequence(["sched=none", f"sched.warmup_steps={warmup}", f"sched.warmup_start_factor={start}"], total)
    expected = [_ramp(t, warmup, start) if t < warmup else LR for t in range(total)]
    assert lrs == pytest.approx(expected, rel=1e-6)


def test_onecycle_peaks_at_max_lr():
    total, pct, max_lr = 40, 0.25, 0.5
    lrs = lr_sequence(["sched=onecycle", f"sched.pct_start={pct}", f"sched.max_lr={max_lr}"], total)
    peak = max(range(total), key=lambda t: lrs[t])
    assert lrs[peak] == pytest.approx(max_lr, rel=1e-6)
    assert abs(peak - pct * total) <= 1
    assert lrs[0] == pytest.approx(max_lr / 25, rel=1e-6)  # torch's default div_factor
    assert lrs[-1] < max_lr / 1000
    assert all(a < b for a, b in itertools.pairwise(lrs[: peak + 1]))  # rises to the peak
    assert all(a > b for a, b in itertools.pairwise(lrs[peak:]))  # then only falls


def test_onecycle_max_lr_defaults_to_optimizer_lr():
    lrs = lr_sequence(["sched=onecycle"], 20)
    assert max(lrs) == pytest.approx(LR, rel=1e-6)


def test_onecycle_rejects_warmup():
    with pytest.raises(ConfigError, match="warmup"):
        build_scheduler(cfg_of("sched=onecycle", "sched.warmup_steps=3").sched, dummy_optimizer(), 10, 2)


def test_plateau_reduces_after_patience_plus_one_bad_steps_directly():
    cfg = cfg_of("sched=plateau", "sched.patience=2", "sched.factor=0.5")
    opt = dummy_optimizer()
    sched = build_scheduler(cfg.sched, opt, 100, 10)
    assert isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
    lrs = []
    for _ in range(8):
        sched.step(1.0)  # never improves after the first
        lrs.append(opt.param_groups[0]["lr"])
    # 1st sets the best; bad validations 1, 2 keep the lr; the 3rd (patience + 1) halves it.
    assert lrs == pytest.approx([LR, LR, LR, LR / 2, LR / 2, LR / 2, LR / 4, LR / 4])


# -- schedules driven by the Trainer ---------------------------------------------------------------


class ConstantOutput(nn.Module):
    """Predicts zeros whatever its weight: gradients are zero and the val loss never changes."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return torch.zeros(len(x), 1) + 0 * self.w


def _data(n: int, seed: int = 0) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return TensorData(x, x.sum(1, keepdim=True) + 1)


def _trainer(tmp_path, model, *overrides, val=True, console=None):
    cfg = cfg_of(
        "data.shuffle=false",
        "trainer.device=cpu",
        "trainer.progress=none",
        "trainer.log_every_n_steps=1",
        f"run.root={tmp_path}",
        *overrides,
    )
    splits = Splits(train=_data(16), val=_data(8, seed=1) if val else None, spec=REGRESSION)
    return build_trainer(typed(cfg), model, splits, console=console or Console("none"))


def test_plateau_through_trainer_reduces_lr_on_constant_val_loss(tmp_path):
    console = RecordingConsole()
    overrides = ["sched=plateau", "sched.patience=1", "sched.factor=0.5", "trainer.max_epochs=6", "data.batch_size=16"]
    trainer = _trainer(tmp_path, ConstantOutput(), *overrides, console=console)
    trainer.fit()

    val = [r["loss"] for r in console.records if r["split"] == "val"]
    assert len(val) == 6 and len(set(val)) == 1  # the metric is constant
    # One step per epoch; epoch e's train record shows the lr after e - 1 validations.
    lrs = [r["lr"] for r in console.records if r["split"] == "train"]
    assert lrs == pytest.approx([LR, LR, LR, LR / 2, LR / 2, LR / 4])
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(LR / 4)


def test_plateau_needs_a_validation_split(tmp_path):
    with pytest.raises(ConfigError, match="plateau"):
        _trainer(tmp_path, ConstantOutput(), "sched=plateau", val=False)


def test_plateau_warmup_ramps_per_step(tmp_path):
    warmup, start = 4, 0.2
    console = RecordingConsole()
    overrides = [
        "sched=plateau",
        f"sched.warmup_steps={warmup}",
        f"sched.warmup_start_factor={start}",
        "trainer.max_epochs=2",
        "data.batch_size=4",
    ]
    trainer = _trainer(tmp_path, ConstantOutput(), *overrides, console=console)
    assert trainer.checkpointer.warmup is not None
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(start * LR)  # the first step's lr
    trainer.fit()
    # The lr logged after k steps: k warmup steps taken, then held at LR.
    lrs = [r["lr"] for r in console.records if r["split"] == "train"]
    expected = [_ramp(min(k, warmup), warmup, start) for k in range(1, 9)]
    assert lrs == pytest.approx(expected, rel=1e-6)


def test_warmup_for_plateau_only_for_plateau():
    assert warmup_for_plateau(cfg_of("sched=cosine", "sched.warmup_steps=3").sched, dummy_optimizer()) is None
    assert warmup_for_plateau(cfg_of("sched=plateau").sched, dummy_optimizer()) is None


def test_trainer_steps_schedule_once_per_optimizer_step(tmp_path):
    # 8 micro-batches of 2, accum 2 -> 4 steps per epoch, 3 epochs -> 12 steps: the cosine is
    # sized from optimizer steps, not micro-batches, and its lr after k steps is the closed form.
    console = RecordingConsole()
    warmup, start = 3, 0.1
    overrides = [
        "sched=cosine",
        f"sched.warmup_steps={warmup}",
        f"sched.warmup_start_factor={start}",
        "trainer.max_epochs=3",
        "data.batch_size=2",
        "trainer.grad_accum=2",
    ]
    trainer = _trainer(tmp_path, nn.Linear(3, 1), *overrides, val=False, console=console)
    assert trainer.total_steps == 12
    trainer.fit()
    lrs = [r["lr"] for r in console.records if r["split"] == "train"]
    main = 12 - warmup
    expected = [
        _ramp(k, warmup, start) if k < warmup else LR * (1 + math.cos(math.pi * (k - warmup) / main)) / 2
        for k in range(1, 13)
    ]
    assert lrs == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
