"""ember's overhead over a hand-written PyTorch loop, side by side in one process.

The same model, data, optimizer and seed trained four ways:
  raw        the tutorials' loop: DataLoader(TensorDataset, shuffle=True), zero_grad/backward/step
  ember-dl   ember.fit forced onto a DataLoader (data.fast_path=false): the same data path as raw
  ember      ember.fit with its defaults (in-memory batches by indexing)
  lightning  Lightning's Trainer, logger/checkpointing/progress bar off (pip install 'ember[bench]')
Each is timed over whole runs (median of --repeats), divided by the epochs. ember's time includes
everything it does besides the loop: composing the config, the run directory, metrics, the final
checkpoint. A parity check trains raw and ember in the same order (no shuffling) and compares the
final weights with torch.equal.

    python benchmarks/overhead.py            # prints a table, writes benchmarks/results/overhead.json
"""

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.data import load_data


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 10))


def cnn():
    from ember.data.spec import DataSpec

    return ember.create_model("cnn1d", DataSpec(input_shape=(1, 40), task="classification", num_classes=10), dropout=0.0)


CASES = {"tiny-mlp": mlp, "cnn1d": cnn}


def raw(make_model, x, y, epochs, batch_size, shuffle=True):
    torch.manual_seed(0)
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle)
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
    return model


def with_ember(make_model, x, y, epochs, batch_size, root, fast_path=True, shuffle=True):
    torch.manual_seed(0)
    model = make_model()
    ember.fit(
        model,
        (x, y),
        max_epochs=epochs,
        batch_size=batch_size,
        fast_path=fast_path,
        shuffle=shuffle,
        progress="none",
        tensorboard=False,
        checkpoint_every_n_epochs=epochs,
        optim={"name": "adamw", "lr": 3e-3, "weight_decay": 0.01},
        sched={"name": "none"},
        run={"root": root, "report": False},  # no HTML report, as Lightning runs without its logger
    )
    return model


def with_lightning(make_model, x, y, epochs, batch_size):
    import lightning as L

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = make_model()

        def training_step(self, batch, i):
            xb, yb = batch
            return F.cross_entropy(self.model(xb), yb)

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=3e-3, weight_decay=0.01)

    torch.manual_seed(0)
    module = Module()
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True))
    return module.model


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "overhead.json"))
    args = parser.parse_args()

    splits = load_data("mnist1d")  # 3600 train samples of length 40
    x, y = splits.train.x, splits.train.y
    try:
        import lightning  # noqa: F401

        has_lightning = True
    except ImportError:
        has_lightning = False
        print("lightning is not installed (pip install 'ember[bench]'): its column is skipped", file=sys.stderr)

    results = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__, "epochs": args.epochs, "cases": {}}
    with tempfile.TemporaryDirectory() as root:
        for name, make in CASES.items():
            e = args.epochs
            row = {
                "raw": timed(lambda: raw(make, x, y, e, args.batch_size), args.repeats) / e,
                "ember-dl": timed(lambda: with_ember(make, x, y, e, args.batch_size, root, fast_path=False), args.repeats) / e,
                "ember": timed(lambda: with_ember(make, x, y, e, args.batch_size, root), args.repeats) / e,
            }
            if has_lightning:
                row["lightning"] = timed(lambda: with_lightning(make, x, y, e, args.batch_size), args.repeats) / e
            # Parity: the same batches in the same order give the same weights, bit for bit.
            a = raw(make, x, y, 2, args.batch_size, shuffle=False)
            b = with_ember(make, x, y, 2, args.batch_size, root, shuffle=False)
            row["weights_equal"] = all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
            results["cases"][name] = row

    print(f"time per epoch (s), median of {args.repeats} runs of {args.epochs} epochs; ratios against raw; torch {torch.__version__}, {torch.get_num_threads()} threads")
    head = f"{'case':<10} {'raw':>8} {'ember-dl':>9} {'ember':>8} {'lightning':>10}  {'ember-dl/raw':>12} {'ember/raw':>10} {'lightning/raw':>14}  weights equal"
    print(head)
    for name, r in results["cases"].items():
        lt = r.get("lightning")
        print(
            f"{name:<10} {r['raw']:>8.4f} {r['ember-dl']:>9.4f} {r['ember']:>8.4f} {lt if lt is not None else float('nan'):>10.4f}  "
            f"{r['ember-dl'] / r['raw']:>12.3f} {r['ember'] / r['raw']:>10.3f} {(lt / r['raw']) if lt else float('nan'):>14.3f}  {r['weights_equal']}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
