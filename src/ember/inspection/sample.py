"""`ember sample run=DIR n=16`: draw samples from a trained generative model (vae, diffusion) and
write them as one PNG grid.

Samples come out in the units the model was trained in (inputs standardized with the train
split's statistics); they are mapped back with the run's spec.json, then to 0..255 over the range
of the whole grid, so the images are comparable with each other. Small images are enlarged by an
integer factor (nearest neighbour) so an 8x8 digit is visible.
"""

import math
from pathlib import Path

import numpy as np
import torch

from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.files import check_output, output_errors, png_bytes, write_atomic
from ember.options import parse_options
from ember.ranges import AT_LEAST_1, SEED, Ranged
from ember.rundir.loading import load_run


def to_grid(images: torch.Tensor, spec: DataSpec | None = None, pad: int = 2, min_tile: int = 64) -> np.ndarray:
    """(N, C, H, W) samples -> one uint8 grid image, gray for one channel, RGB for three."""
    x = images.detach().float().cpu()
    if spec is not None and spec.mean is not None and spec.std is not None and len(spec.mean) == x.shape[1]:
        x = x * torch.tensor(spec.std).reshape(1, -1, 1, 1) + torch.tensor(spec.mean).reshape(1, -1, 1, 1)
    if x.shape[1] not in (1, 3):
        x = x[:, :1]  # fields with other channel counts: show the first
    lo, hi = torch.quantile(x.flatten(), torch.tensor([0.005, 0.995])).tolist()
    x = ((x - lo) / max(hi - lo, 1e-8)).clamp(0, 1)
    n, c, h, w = x.shape
    scale = max(1, min_tile // max(h, w))
    x = x.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    h, w = h * scale, w * scale
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.ones(c, rows * (h + pad) + pad, cols * (w + pad) + pad)
    for i in range(n):
        r, col = divmod(i, cols)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = x[i]
    pixels = (grid * 255).round().to(torch.uint8).numpy()
    return pixels[0] if c == 1 else pixels.transpose(1, 2, 0)


def sample_run(run_dir: str | Path, n: int = 16, out: str | Path | None = None, seed: int = 0) -> Path:
    """Draw n samples from the best checkpoint of a run and write them as a PNG grid."""
    if n < 1:
        raise ConfigError(f"n={n} must be at least 1")
    model, cfg, spec = load_run(run_dir)
    if not callable(getattr(model, "sample", None)):
        raise ConfigError(
            f"model {cfg.model.name} does not generate samples; "
            "ember sample works for runs of model=vae or model=diffusion"
        )
    model.eval()
    samples = model.sample(n, generator=torch.Generator().manual_seed(seed))
    if samples.ndim != 4:
        raise ConfigError(
            f"model {cfg.model.name} samples of shape {tuple(samples.shape[1:])} are not images; "
            "ember sample writes 2-D samples"
        )
    path = check_output(Path(out) if out else Path(run_dir) / "samples.png", "the samples", "out=")
    with output_errors(path, "the samples", "out="):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, png_bytes(to_grid(samples, spec)))
    return path


def sample_command(overrides: list[str]) -> int:
    """ember sample run=DIR [n=16] [seed=0] [out=PATH]."""
    options, _ = parse_options(
        "sample", overrides, {"run": None, "n": Ranged(16, AT_LEAST_1), "seed": Ranged(0, SEED), "out": None}
    )
    if not options["run"]:
        raise ConfigError("ember sample needs the run to sample from: ember sample run=runs/<name>/<time> n=16")
    path = sample_run(options["run"], n=options["n"], out=options["out"], seed=options["seed"])
    print(f"wrote {path}")
    return 0
