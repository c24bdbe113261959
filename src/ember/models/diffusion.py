"""A diffusion model in the EDM design (Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models").

EDM separates what the network learns from how the noise is handled:
- preconditioning: the denoiser is D(x; s) = c_skip(s) x + c_out(s) F(c_in(s) x; c_noise(s)), with
  the coefficients chosen so F's input and training target have unit variance at every noise level s;
- training: ln s ~ N(p_mean, p_std^2), loss weight (s^2 + sd^2) / (s sd)^2, which makes the loss
  about 1 at initialization at every noise level (sd = sigma_data, the data's standard deviation:
  1 for ember's standardized inputs);
- sampling: Heun's second-order method on the probability-flow ODE over `steps` noise levels
  spaced by s_i = (s_max^(1/rho) + i/(steps-1) (s_min^(1/rho) - s_max^(1/rho)))^rho.

F is a small U-Net whose residual blocks are modulated by an embedding of the noise level.
"""

import itertools
import math
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.models import register_model
from ember.models.layers import crop, norm, pad, pad_amounts, spatial_input
from ember.ranges import AT_LEAST_1, FRACTION, POSITIVE


class NoiseEmbedding(nn.Module):
    """Sinusoidal embedding of c_noise, then an MLP (the DDPM++ choice)."""

    def __init__(self, dim: int):
        super().__init__()
        half = dim // 2
        self.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(half) / half), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * half, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, c_noise):
        angles = c_noise.reshape(-1, 1) * self.freqs * 1000.0  # c_noise spans about [-1.5, 1.1]
        return self.mlp(torch.cat([torch.cos(angles), torch.sin(angles)], dim=1))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice; the noise embedding scales and shifts the features in between."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = norm("group", c_in, 2)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = norm("group", c_out, 2)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as its skip connection
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        h = self.conv2(self.dropout(h))
        return (h + self.skip(x)) / math.sqrt(2)


class DenoiserUNet(nn.Module):
    """F(x, c_noise): a U-Net with one noise-conditioned residual block per level each way."""

    def __init__(self, channels: int, width: int, depth: int, dropout: float):
        super().__init__()
        emb_dim = 4 * width
        self.embed = NoiseEmbedding(emb_dim)
        self.inc = nn.Conv2d(channels, width, 3, padding=1)
        widths = [width * min(2**i, 4) for i in range(depth + 1)]
        self.down = nn.ModuleList([ResBlock(widths[i], widths[i + 1], emb_dim, dropout) for i in range(depth)])
        self.downsample = nn.ModuleList(
            [nn.Conv2d(widths[i + 1], widths[i + 1], 3, stride=2, padding=1) for i in range(depth)]
        )
        self.mid = ResBlock(widths[depth], widths[depth], emb_dim, dropout)
        self.up = nn.ModuleList(
            [ResBlock(widths[i + 1] * 2, widths[i], emb_dim, dropout) for i in reversed(range(depth))]
        )
        self.out_norm = norm("group", width, 2)
        self.out = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # F starts at 0, so D starts as c_skip * x
        nn.init.zeros_(self.out.bias)

    def forward(self, x, c_noise):
        emb = self.embed(c_noise)
        x = self.inc(x)
        skips: list[torch.Tensor] = []
        for block, downsample in zip(self.down, self.downsample):
            x = block(x, emb)
            skips.append(x)
            x = downsample(x)
        x = self.mid(x, emb)
        for i, block in enumerate(self.up):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = block(torch.cat([x, skips[len(skips) - 1 - i]], dim=1), emb)
        return self.out(F.silu(self.out_norm(x)))


class EDM(nn.Module):
    # EDM (Karras et al. 2022) and every serious implementation sample from an exponential moving
    # average of the weights: trainer.ema=null takes this decay.
    ema_decay = 0.999

    def __init__(
        self,
        channels: int,
        size: tuple,
        width: int,
        depth: int,
        dropout: float,
        sigma_data: float,
        p_mean: float,
        p_std: float,
        sigma_min: float,
        sigma_max: float,
        rho: float,
        steps: int,
    ):
        super().__init__()
        self.shape = (channels, *size)
        self.size = list(size)
        self.pads = pad_amounts(size, 2**depth)
        self.net = DenoiserUNet(channels, width, depth, dropout)
        self.sigma_data, self.p_mean, self.p_std = sigma_data, p_mean, p_std
        self.sigma_min, self.sigma_max, self.rho, self.steps = sigma_min, sigma_max, rho, steps

    def forward(self, x, sigma: torch.Tensor | None = None):
        """D(x; sigma): the denoised estimate of x at noise level sigma (default sigma_data)."""
        if sigma is None:
            sigma = torch.full((x.shape[0],), self.sigma_data, device=x.device, dtype=x.dtype)
        s = sigma.to(x.dtype).reshape(-1, 1, 1, 1)
        sd = self.sigma_data
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        c_in = 1 / (s**2 + sd**2).sqrt()
        c_noise = s.log().flatten() / 4
        f = crop(self.net(pad(c_in * x, self.pads), c_noise), self.size)
        return c_skip * x + c_out * f

    def loss(self, batch, generator: torch.Generator | None = None):
        y = batch[0]
        if generator is None and not self.training:
            # Evaluation draws the same noise levels and noise every time: comparable val losses.
            generator = torch.Generator(y.device).manual_seed(0)
        n = y.shape[0]
        rnd = torch.randn(n, generator=generator, device=y.device, dtype=y.dtype)
        sigma = (rnd * self.p_std + self.p_mean).exp()
        weight = (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2
        noise = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype) * sigma.reshape(-1, 1, 1, 1)
        denoised = self(y + noise, sigma)
        per_sample = (denoised - y).pow(2).flatten(1).mean(1)
        return (weight * per_sample).mean(), {}

    def noise_levels(self, steps: int) -> torch.Tensor:
        i = torch.arange(steps, dtype=torch.float64)
        a, b = self.sigma_max ** (1 / self.rho), self.sigma_min ** (1 / self.rho)
        t = (a + i / max(steps - 1, 1) * (b - a)) ** self.rho
        return torch.cat([t, torch.zeros(1, dtype=torch.float64)])

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, steps: int | None = None) -> torch.Tensor:
        """n samples by Heun's method (2 * steps - 1 network evaluations), in the data's units."""
        device = self.net.inc.weight.device
        t = self.noise_levels(steps or self.steps).tolist()
        x = torch.randn(n, *self.shape, generator=generator, device=device) * t[0]
        for t_cur, t_next in itertools.pairwise(t):
            d = (x - self(x, torch.full((n,), t_cur, device=device))) / t_cur
            x_next = x + (t_next - t_cur) * d
            if t_next > 0:  # Heun's correction, skipped on the last step to sigma 0
                d_next = (x_next - self(x_next, torch.full((n,), t_next, device=device))) / t_next
                x_next = x + (t_next - t_cur) * (0.5 * d + 0.5 * d_next)
            x = x_next
        return x


@register_model("diffusion", example="digits")
def diffusion(
    spec: DataSpec,
    *,
    width: Annotated[int, AT_LEAST_1] = 32,
    depth: Annotated[int, AT_LEAST_1] = 2,
    dropout: Annotated[float, FRACTION] = 0.0,
    sigma_data: Annotated[float, POSITIVE] = 1.0,
    p_mean: float = -1.2,
    p_std: Annotated[float, POSITIVE] = 1.2,
    sigma_min: Annotated[float, POSITIVE] = 0.002,
    sigma_max: Annotated[float, POSITIVE] = 80.0,
    rho: Annotated[float, POSITIVE] = 7.0,
    steps: Annotated[int, AT_LEAST_1] = 18,
) -> nn.Module:
    """EDM diffusion model: preconditioned U-Net denoiser, Heun sampler."""
    channels, size = spatial_input(spec, "diffusion", (2,), "the denoiser is a 2-D U-Net over images or fields")
    if depth < 1 or steps < 1:
        raise ConfigError(f"model.depth={depth} and model.steps={steps} must be at least 1")
    if sigma_data <= 0 or not 0 < sigma_min < sigma_max:
        raise ConfigError("model.sigma_data must be positive and 0 < model.sigma_min < model.sigma_max")
    return EDM(channels, size, width, depth, dropout, sigma_data, p_mean, p_std, sigma_min, sigma_max, rho, steps)
