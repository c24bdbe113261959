"""Batch augmentations, run by the trainer on training batches on the training device.

Each works on a whole batch at once with per-sample random parameters (no Python loop over
samples), so augmenting costs a few kernel launches per step, on the GPU when there is one.
Geometric ones (flip, crop, roll) move the target too when it is a field on the same grid as
the input (segmentation, gridded forecasting), so input and target stay aligned.

    data.augment=[crop,flip]   data.crop_padding=4   data.noise_std=0.05   data.max_shift=8
"""

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ember.errors import ConfigError


def flip(x: torch.Tensor, y: torch.Tensor, p: float = 0.5):
    """Horizontal flip (the last dimension) of a random half of the batch."""
    mask = torch.rand(len(x), device=x.device) < p
    view = (-1,) + (1,) * (x.ndim - 1)
    x = torch.where(mask.view(view), x.flip(-1), x)
    if _same_grid(x, y, 1):
        y = torch.where(mask.view((-1,) + (1,) * (y.ndim - 1)), y.flip(-1), y)
    return x, y


def crop(x: torch.Tensor, y: torch.Tensor, padding: int = 4):
    """Zero-pad the spatial dimensions by `padding`, then cut a random window of the original size."""
    if x.ndim < 3:
        raise ConfigError(
            "data.augment=crop needs (channels, length) or (channels, height, width) samples, "
            f"got {tuple(x.shape[1:])}; drop crop from data.augment"
        )
    spatial = 2 if x.ndim >= 4 else 1
    offsets = torch.randint(0, 2 * padding + 1, (spatial, len(x)), device=x.device)
    x_out = _windows(F.pad(x, (padding,) * (2 * spatial)), offsets, x.shape[-spatial:])
    if _same_grid(x, y, spatial):
        y = _windows(F.pad(y, (padding,) * (2 * spatial)), offsets, y.shape[-spatial:])
    return x_out, y


def _windows(padded: torch.Tensor, offsets: torch.Tensor, sizes) -> torch.Tensor:
    """For every sample n, the window of `sizes` starting at offsets[:, n] in the last dimensions."""
    n, spatial = padded.shape[0], len(sizes)
    out = padded
    for d, size in enumerate(sizes):
        dim = out.ndim - spatial + d
        idx = offsets[d].view(n, 1) + torch.arange(size, device=out.device).view(1, size)
        shape = [n] + [1] * (out.ndim - 1)
        shape[dim] = size
        # One gather per spatial dimension: each sample reads its own shifted index range.
        idx = idx.view(shape).expand(*out.shape[:dim], size, *out.shape[dim + 1 :])
        out = out.gather(dim, idx)
    return out


def noise(x: torch.Tensor, y: torch.Tensor, std: float = 0.05):
    """Additive Gaussian noise on the (normalized) input."""
    return x + std * torch.randn_like(x), y


def roll(x: torch.Tensor, y: torch.Tensor, max_shift: int = 8):
    """Circular shift of each sample along its last dimension by a random -max_shift..max_shift."""
    n, length = len(x), x.shape[-1]
    shift = torch.randint(-max_shift, max_shift + 1, (n,), device=x.device)
    idx = (torch.arange(length, device=x.device).view(1, length) - shift.view(n, 1)) % length

    def apply(t):
        shape = (n,) + (1,) * (t.ndim - 2) + (length,)
        return t.gather(-1, idx.view(shape).expand(t.shape))

    return apply(x), (apply(y) if _same_grid(x, y, 1) else y)


AUGMENTS = ("flip", "crop", "noise", "roll")


def _same_grid(x: torch.Tensor, y: torch.Tensor, spatial: int) -> bool:
    """Is the target a field on the input's grid (so it must move with the input)?"""
    return (
        y.ndim >= 1 + spatial
        and y.is_floating_point()
        and y.shape[-spatial:] == x.shape[-spatial:]
        and y.ndim == x.ndim
    )


def build_augment(
    names: Sequence[str], crop_padding: int = 4, noise_std: float = 0.05, max_shift: int = 8
) -> Callable | None:
    """augment(x, y) -> (x, y) applying `names` in order; None when there is nothing to apply."""
    names = list(names or [])
    for name in names:
        if name not in AUGMENTS:
            raise ConfigError(
                f"data.augment has {name!r}, which is not an augmentation; choose from: {', '.join(AUGMENTS)}"
            )
    if not names:
        return None
    ops = {
        "flip": flip,
        "crop": lambda x, y: crop(x, y, crop_padding),
        "noise": lambda x, y: noise(x, y, noise_std),
        "roll": lambda x, y: roll(x, y, max_shift),
    }

    def augment(x: torch.Tensor, y: torch.Tensor):
        for name in names:
            x, y = ops[name](x, y)
        return x, y

    augment.names = tuple(names)  # for messages and tests
    return augment
