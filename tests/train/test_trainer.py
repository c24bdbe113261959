"""The training loop: accumulation, clipping, early stopping, max_steps, losses, precision, seeding."""

import copy
import json
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from train_support import RecordingConsole

import ember
from ember.api import train
from ember.config import compose, typed
from ember.data import Splits, TensorData
from ember.data.spec import DataSpec
from ember.track.console import Console
from ember.train.build import build_trainer

REGRESSION = DataSpec(input_shape=(3,), task="regression", target_shape=(1,))


def make_cfg(tmp_path, *overrides: str):
    """Plain SGD (no momentum, no weight decay), no schedule, in-order batches, CPU, silent."""
    base = [
        "model=mlp",
        "data=linear",
        "optim=sgd",
        "optim.momentum=0",
        "optim.weight_decay=0",
        "sched=none",
        "data.shuffle=false",
        "trainer.max_epochs=1",
        "trainer.device=cpu",
        "trainer.progress=none",
        "trainer.tensorboard=false",
        f"run.root={tmp_path}",
    ]
    return compose(base + list(overrides))


def regression_data(n: int, seed: int = 1, scale: float = 1.0) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = (x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3 + 0.1 * torch.randn(n, 1, generator=g)) * scale
    return TensorData(x, y)


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))


def make_trainer(cfg, model, train_data, val=None, test=None, spec=REGRESSION, console=None):
    splits = Splits(train=train_data, val=val, test=test, spec=spec)
    return build_trainer(typed(cfg), model, splits, console=console or Console("none"))


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])


def read_metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


# -- gradient accumulation ------------------------------------------------------------------------


def test_grad_accum_equals_bigger_batch(tmp_path):
    data = regression_data(32)
    init = small_net()

    accum = make_trainer(
        make_cfg(tmp_path, "trainer.grad_accum=4", "data.batch_size=8", "optim.lr=0.1"), copy.deepcopy(init), data
    )
    accum.fit()
    big = make_trainer(
        make_cfg(tmp_path, "trainer.grad_accum=1", "data.batch_size=32", "optim.lr=0.1"), copy.deepcopy(init), data
    )
    big.fit()

    assert accum.state.step == 1 and big.state.step == 1
    assert not torch.allclose(flat(big.model), flat(init), atol=1e-4), "the step must change the weights"
    for a, b in zip(accum.model.parameters(), big.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_grad_accum_short_last_group_matches_manual(tmp_path):
    # 40 samples, batch 8 -> 5 micro-batches; accum 4 -> steps of 4 and then 1 micro-batch.
    data = regression_data(40)
    init = small_net()
    lr = 0.1
    trainer = make_trainer(
        make_cfg(tmp_path, "trainer.grad_accum=4", "data.batch_size=8", f"optim.lr={lr}"), copy.deepcopy(init), data
    )
    trainer.fit()
    assert trainer.state.step == 2
    assert trainer.steps_per_epoch == 2

    manual = copy.deepcopy(init)
    for lo, hi in ((0, 32), (32, 40)):
        manual.zero_grad()
        F.mse_loss(manual(data.x[lo:hi]), data.y[lo:hi]).backward()
        with torch.no_grad():
            for p in manual.parameters():
                p -= lr * p.grad

    for a, b in zip(trainer.model.parameters(), manual.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


# -- gradient clipping ----------------------------------------------------------------------------


def test_grad_clip_bounds_the_update(tmp_path):
    data = regression_data(16, scale=1000.0)  # huge targets -> huge loss and gradient
    init = small_net()
    lr, clip = 10.0, 0.5
    console = RecordingConsole()
    cfg = make_cfg(
        tmp_path, f"trainer.grad_clip={clip}", f"optim.lr={lr}", "data.batch_size=16", "trainer.log_every_n_steps=1"
    )
    trainer = make_trainer(cfg, copy.deepcopy(init), data, console=console)
    trainer.fit()
    assert trainer.state.step == 1

    # The unclipped gradient norm, computed by hand.
    ref = copy.deepcopy(init)
    F.mse_loss(ref(data.x), data.y).backward()
    raw_norm = torch.cat([p.grad.reshape(-1) for p in ref.parameters()]).norm().item()
    assert raw_norm > 100 * clip

    (record,) = console.split("train")
    assert "grad_norm" in record
    assert record["grad_norm"] == pytest.approx(raw_norm, rel=1e-4)

    update = (flat(trainer.model) - flat(init)).norm().item()
    assert update / lr <= clip + 1e-4
    assert update / lr == pytest.approx(clip, rel=1e-3)  # clipped to the bound, not below it
    # Direction: the update is -lr * grad * clip / |grad|.
    expected = flat(init) - lr * torch.cat([p.grad.reshape(-1) for p in ref.parameters()]) * (clip / raw_norm)
    assert torch.allclose(flat(trainer.model), expected, atol=1e-5)


def test_no_grad_norm_logged_without_clipping(tmp_path):
    console = RecordingConsole()
    cfg = make_cfg(tmp_path, "data.batch_size=16", "trainer.log_every_n_steps=1")
    make_trainer(cfg, small_net(), regression_data(16), console=console).fit()
    (record,) = console.split("train")
    assert "grad_norm" not in record


# -- early stopping, max_epochs, max_steps ---------------------------------------------------------


def test_early_stopping_stops_when_val_loss_cannot_improve(tmp_path):
    console = RecordingConsole()
    # lr=0: the weights never change, so the first validation is the best and the next ones tie.
    cfg = make_cfg(
        tmp_path, "optim.lr=0", "trainer.max_epochs=10", "trainer.early_stopping_patience=2", "data.batch_size=16"
    )
    trainer = make_trainer(cfg, small_net(), regression_data(32), val=regression_data(16, seed=2), console=console)
    trainer.fit()

    assert trainer.state.epoch == 3
    assert trainer.state.stop_reason is not None and "early stopping" in trainer.state.stop_reason
    assert trainer.state.best_epoch == 1
    assert len(console.split("val")) == 3


def test_runs_max_epochs_without_early_stopping(tmp_path):
    console = RecordingConsole()
    cfg = make_cfg(tmp_path, "optim.lr=0", "trainer.max_epochs=4", "data.batch_size=16")
    trainer = make_trainer(cfg, small_net(), regression_data(32), val=regression_data(16, seed=2), console=console)
    trainer.fit()

    assert trainer.state.epoch == 4
    assert trainer.state.step == 4 * 2
    assert trainer.state.stop_reason == "max_epochs"
    assert len(console.split("val")) == 4


def test_max_steps_stops_at_exactly_that_many_steps_across_epochs(tmp_path):
    # 40 samples, batch 8: 5 steps per epoch; 7 steps end in the middle of epoch 2.
    cfg = make_cfg(
        tmp_path, "trainer.max_steps=7", "trainer.max_epochs=10", "data.batch_size=8", "sched=cosine", "optim.lr=0.1"
    )
    trainer = make_trainer(cfg, small_net(), regression_data(40))
    optimizer_steps = []
    trainer.optimizer.register_step_post_hook(lambda *args: optimizer_steps.append(1))
    trainer.fit()

    assert trainer.state.step == 7
    assert len(optimizer_steps) == 7
    assert trainer.state.epoch == 2
    assert trainer.state.stop_reason == "max_steps"
    assert trainer.total_steps == 7
    # The schedule is sized by max_steps: cosine reaches its floor exactly at the last step.
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_max_steps_with_grad_accum(tmp_path):
    # 5 micro-batches per epoch, accum 2 -> 3 steps per epoch (2, 2, 1); 4 steps end in epoch 2.
    cfg = make_cfg(
        tmp_path, "trainer.max_steps=4", "trainer.max_epochs=10", "data.batch_size=8", "trainer.grad_accum=2"
    )
    trainer = make_trainer(cfg, small_net(), regression_data(40))
    optimizer_steps = []
    trainer.optimizer.register_step_post_hook(lambda *args: optimizer_steps.append(1))
    trainer.fit()
    assert trainer.steps_per_epoch == 3
    assert trainer.state.step == 4 and len(optimizer_steps) == 4
    assert trainer.state.epoch == 2
    assert trainer.state.stop_reason == "max_steps"


def test_max_steps_in_the_last_epoch_is_the_stop_reason(tmp_path):
    # 2 epochs of 5 steps, max_steps=7: the second epoch is cut short by max_steps.
    cfg = make_cfg(tmp_path, "trainer.max_steps=7", "trainer.max_epochs=2", "data.batch_size=8")
    trainer = make_trainer(cfg, small_net(), regression_data(40))
    trainer.fit()
    assert trainer.state.step == 7
    assert trainer.state.stop_reason == "max_steps"


def test_early_stopping_in_the_last_epoch_is_the_stop_reason(tmp_path):
    cfg = make_cfg(
        tmp_path, "optim.lr=0", "trainer.max_epochs=3", "trainer.early_stopping_patience=2", "data.batch_size=16"
    )
    trainer = make_trainer(cfg, small_net(), regression_data(32), val=regression_data(16, seed=2))
    trainer.fit()
    assert trainer.state.epoch == 3
    assert trainer.state.stop_reason is not None and trainer.state.stop_reason.startswith("early stopping")


def test_max_steps_beyond_the_epochs_is_not_reached(tmp_path):
    cfg = make_cfg(tmp_path, "trainer.max_steps=100", "trainer.max_epochs=2", "data.batch_size=8")
    trainer = make_trainer(cfg, small_net(), regression_data(40))
    trainer.fit()
    assert trainer.state.step == 10
    assert trainer.state.epoch == 2
    assert trainer.state.stop_reason == "max_epochs"


# -- losses ---------------------------------------------------------------------------------------


def blobs(n: int, seed: int = 0, classes: int = 3):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    centers = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])[:classes]
    x = centers[y] + 0.5 * torch.randn(n, 3, generator=g)
    return x, y


class LogSoftmaxNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return F.log_softmax(self.fc(x), dim=1)


def test_nll_loss_with_log_softmax_model_trains(tmp_path):
    torch.manual_seed(0)
    x, y = blobs(60)
    result = ember.fit(
        LogSoftmaxNet(),
        (x, y),
        val=blobs(30, seed=1),
        loss="nll",
        max_epochs=8,
        batch_size=10,
        optim={"name": "sgd", "lr": 0.5, "momentum": 0.0, "weight_decay": 0.0},
        sched={"name": "none"},
        log_every_n_steps=1,
        progress="none",
        tensorboard=False,
        run={"root": str(tmp_path)},
    )
    records = read_metrics(result.run_dir)
    train_losses = [r["loss"] for r in records if r["split"] == "train"]
    assert train_losses[-1] < 0.5 * train_losses[0]
    val_losses = [r["loss"] for r in records if r["split"] == "val"]
    assert val_losses[-1] < val_losses[0]
    assert result.metrics["val/accuracy"] > 0.9
    # The reported loss is the NLL of the model's log-probabilities.
    xv, yv = blobs(30, seed=1)
    with torch.no_grad():
        expected = F.nll_loss(result.model(xv), yv).item()
    assert result.metrics["val/loss"] == pytest.approx(expected, rel=1e-5)


def test_loss_names_select_the_loss_function(tmp_path):
    spec = DataSpec(input_shape=(3,), task="classification", num_classes=3)
    x, y = blobs(12)
    data = TensorData(x, y)
    nll = make_trainer(make_cfg(tmp_path, "trainer.loss=nll"), LogSoftmaxNet(), data, spec=spec)
    assert isinstance(nll.loss_fn, nn.NLLLoss)

    auto = make_trainer(make_cfg(tmp_path), LogSoftmaxNet(), data, spec=spec)
    assert isinstance(auto.loss_fn, nn.CrossEntropyLoss)

    declared = LogSoftmaxNet()
    declared.default_loss = "nll"  # models ending in log_softmax declare it
    assert isinstance(make_trainer(make_cfg(tmp_path), declared, data, spec=spec).loss_fn, nn.NLLLoss)

    assert isinstance(make_trainer(make_cfg(tmp_path), small_net(), regression_data(8)).loss_fn, nn.MSELoss)
    assert isinstance(
        make_trainer(make_cfg(tmp_path, "trainer.loss=huber"), small_net(), regression_data(8)).loss_fn, nn.HuberLoss
    )


class TaskModel(nn.Module):
    """A model with the task protocol: `loss(batch) -> (loss, logs)`."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 1)
        self.loss_calls = 0

    def forward(self, x):
        return self.fc(x)

    def loss(self, batch):
        self.loss_calls += 1
        x, y = batch
        err = (self(x) - y).abs().mean()  # L1: not the default (mse) loss for regression
        return err, {"custom_mae": err.detach(), "calls": float(self.loss_calls)}


def test_task_protocol_trains_through_model_loss(tmp_path):
    torch.manual_seed(0)
    model = TaskModel()
    data = regression_data(32)
    result = ember.fit(
        model,
        (data.x, data.y),
        val=(data.x[:16], data.y[:16]),
        max_epochs=5,
        batch_size=8,
        optim={"name": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0},
        sched={"name": "none"},
        log_every_n_steps=2,
        progress="none",
        tensorboard=False,
        run={"root": str(tmp_path)},
    )
    # 5 epochs x 4 train batches, plus one validation batch per epoch and the final evaluation.
    assert model.loss_calls >= 5 * 4

    records = read_metrics(result.run_dir)
    train = [r for r in records if r["split"] == "train"]
    assert train and all("custom_mae" in r and math.isfinite(r["custom_mae"]) for r in train)
    val = [r for r in records if r["split"] == "val"]
    assert len(val) == 5 and val[-1]["loss"] < 0.8 * val[0]["loss"]
    # The reported loss is the L1 of model.loss, not an mse computed by the trainer.
    with torch.no_grad():
        l1 = (result.model(data.x[:16]) - data.y[:16]).abs().mean().item()
    assert result.metrics["val/loss"] == pytest.approx(l1, rel=1e-5)
    assert val and "mse" not in val[-1]


# -- precision ------------------------------------------------------------------------------------


def _train_losses_with_precision(tmp_path, precision: str) -> list[float]:
    console = RecordingConsole()
    cfg = make_cfg(
        tmp_path,
        f"trainer.precision={precision}",
        "trainer.max_epochs=6",
        "data.batch_size=16",
        "trainer.log_every_n_steps=1",
        "optim.lr=0.05",
    )
    trainer = make_trainer(cfg, small_net(), regression_data(64), console=console)
    trainer.fit()
    losses = [r["loss"] for r in console.split("train")]
    assert all(math.isfinite(v) for v in losses)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # autocast, not a cast
    return losses


def test_bf16_trains_on_cpu(tmp_path):
    losses = _train_losses_with_precision(tmp_path, "bf16")
    assert losses[-1] < 0.5 * losses[0]


def _cpu_fp16_supported() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            out = nn.Linear(2, 2)(torch.ones(1, 2))
        torch.amp.GradScaler("cpu")
        return out.dtype == torch.float16
    except (RuntimeError, TypeError, ValueError):
        return False


@pytest.mark.skipif(not _cpu_fp16_supported(), reason="this torch build has no float16 autocast/GradScaler on CPU")
def test_fp16_trains_on_cpu(tmp_path):
    losses = _train_losses_with_precision(tmp_path, "fp16")
    assert losses[-1] < 0.5 * losses[0]


# -- seeding --------------------------------------------------------------------------------------


def _train_mlp(tmp_path, seed: int) -> dict:
    cfg = compose(
        [
            "model=mlp",
            "data=linear",
            "model.width=16",
            "data.num_samples=64",
            "data.batch_size=16",
            "trainer.max_epochs=2",
            f"trainer.seed={seed}",
            "trainer.device=cpu",
            "trainer.progress=none",
            "trainer.tensorboard=false",
            f"run.root={tmp_path}",
        ]
    )
    return train(cfg).model.state_dict()


def test_same_seed_same_weights_via_train(tmp_path):
    a, b, c = _train_mlp(tmp_path, 3), _train_mlp(tmp_path, 3), _train_mlp(tmp_path, 4)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("source", ["shuffle", "dropout"])
def test_same_seed_same_weights_via_fit(tmp_path, source):
    # The same initial weights each time; the seed drives either the shuffle order of the
    # loader (no dropout) or the dropout masks (no shuffling), and nothing else differs.
    torch.manual_seed(0)
    p = 0.2 if source == "dropout" else 0.0
    init = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Dropout(p), nn.Linear(16, 1))
    data = regression_data(48)

    def run(seed):
        return ember.fit(
            copy.deepcopy(init),
            (data.x, data.y),
            seed=seed,
            max_epochs=2,
            batch_size=8,
            shuffle=source == "shuffle",
            lr=0.01,
            progress="none",
            tensorboard=False,
            run={"root": str(tmp_path)},
        ).model.state_dict()

    a, b, c = run(7), run(7), run(8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_validation_every_n_steps(tmp_path):
    cfg = make_cfg(tmp_path, "trainer.max_epochs=2", "trainer.val_every_n_steps=3", "data.batch_size=8")
    torch.manual_seed(0)
    splits = Splits(train=regression_data(40), val=regression_data(16, seed=2), spec=REGRESSION)
    console = RecordingConsole()
    trainer = build_trainer(typed(cfg), ember.create_model("mlp", REGRESSION, width=8), splits, console)
    trainer.fit()
    # 5 steps per epoch, 10 in all: validations at steps 3, 6, 9 and none at epoch ends.
    assert [r["step"] for r in console.split("val")] == [3, 6, 9]


def test_compile_trains_like_eager(tmp_path):
    """trainer.compile=true goes through torch.compile (inductor on CPU) and gives the eager result."""
    results = []
    for compiled in ("false", "true"):
        cfg = make_cfg(tmp_path, f"trainer.compile={compiled}", "trainer.max_epochs=2", "data.batch_size=8")
        torch.manual_seed(0)
        model = ember.create_model("mlp", REGRESSION, width=8)
        splits = Splits(train=regression_data(40), spec=REGRESSION)
        trainer = build_trainer(typed(cfg), model, splits, Console("none"))
        trainer.fit()
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-5)


def test_a_last_batch_of_one_sample_trains_through_batch_norm(tmp_path):
    """33 samples in batches of 16: the last batch is one sample, which batch norm cannot
    normalize by itself; it uses the running statistics and the layer stays in training mode."""
    cfg = make_cfg(tmp_path, "data.batch_size=16", "trainer.max_epochs=2")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 1))
    trainer = make_trainer(cfg, model, regression_data(33))
    trainer.fit()
    assert trainer.state.step == 6  # 3 batches an epoch, the one-sample batch included
    assert model[1].training and model[1].num_batches_tracked.item() == 4  # statistics from the full batches only
