"""A convolutional variational autoencoder (Kingma & Welling 2013), trained on the ELBO.

The encoder halves the resolution `depth` times and maps to the mean and log-variance of a
Gaussian posterior over `latent_dim` latents; the decoder mirrors it. The likelihood is a Gaussian
with unit variance on the data as the trainer sees it (standardized per channel), so the loss is

    loss = (0.5 * sum of squared errors + beta * KL(q(z|x) || N(0, I))) / pixels

per sample, the negative ELBO in nats per dimension (without constants) — a scale that does not
change with the image size. The trainer calls `loss(batch)`; `sample(n)` decodes prior draws.
"""

import math
from typing import Annotated

import torch
from torch import nn

from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.models import register_model
from ember.models.layers import activation, crop, norm, pad, pad_amounts, spatial_input
from ember.ranges import AT_LEAST_1, NON_NEGATIVE


class VAE(nn.Module):
    def __init__(
        self,
        in_channels: int,
        size: tuple,
        width: int,
        depth: int,
        latent_dim: int,
        beta: float,
        norm_kind: str,
        act: str,
    ):
        super().__init__()
        self.in_channels, self.size, self.latent_dim, self.beta = in_channels, list(size), latent_dim, beta
        self.pads = pad_amounts(size, 2**depth)
        padded = [s + (-s) % 2**depth for s in size]
        self.bottom = [padded[0] // 2**depth, padded[1] // 2**depth]
        c = width * 2 ** (depth - 1)
        self.c_bottom = c
        layers: list[nn.Module] = []
        c_in = in_channels
        for i in range(depth):
            c_out = width * 2**i
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), norm(norm_kind, c_out, 2), activation(act)]
            c_in = c_out
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        flat = c * self.bottom[0] * self.bottom[1]
        self.to_stats = nn.Linear(flat, 2 * latent_dim)  # mean and log-variance
        self.from_latent = nn.Linear(latent_dim, flat)
        layers = []
        for i in reversed(range(depth)):
            c_out = width * 2 ** (i - 1) if i > 0 else width
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1),
                norm(norm_kind, c_out, 2),
                activation(act),
            ]
            c_in = c_out
        self.decoder = nn.Sequential(*layers, nn.Conv2d(c_in, in_channels, 3, padding=1))

    def encode(self, x):
        stats = self.to_stats(self.encoder(pad(x, self.pads)))
        return stats[:, : self.latent_dim], stats[:, self.latent_dim :]

    def decode(self, z):
        h = self.from_latent(z).reshape(z.shape[0], self.c_bottom, self.bottom[0], self.bottom[1])
        return crop(self.decoder(h), self.size)

    def forward(self, x):
        """The reconstruction from the posterior mean (deterministic: what summaries and exports see)."""
        mean, _ = self.encode(x)
        return self.decode(mean)

    def loss(self, batch, generator: torch.Generator | None = None):
        x = batch[0]
        if generator is None and not self.training:
            # Evaluation draws the same noise every time, so validation losses compare across epochs.
            generator = torch.Generator(x.device).manual_seed(0)
        mean, logvar = self.encode(x)
        logvar = logvar.clamp(-30.0, 20.0)
        eps = torch.randn(mean.shape, generator=generator, device=x.device, dtype=mean.dtype)
        z = mean + torch.exp(0.5 * logvar) * eps  # the reparameterization trick
        recon = self.decode(z)
        pixels = math.prod(x.shape[1:])
        sse = (recon - x).pow(2).flatten(1).sum(1)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        rec_term, kl_term = (0.5 * sse).mean() / pixels, kl.mean() / pixels
        return rec_term + self.beta * kl_term, {"recon": rec_term.detach(), "kl": kl_term.detach()}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images decoded from the prior, in the data's (standardized) units."""
        device = self.from_latent.weight.device
        z = torch.randn(n, self.latent_dim, generator=generator, device=device)
        return self.decode(z)


@register_model("vae", example="digits")
def vae(
    spec: DataSpec,
    *,
    width: Annotated[int, AT_LEAST_1] = 32,
    depth: Annotated[int, AT_LEAST_1] = 2,
    latent_dim: Annotated[int, AT_LEAST_1] = 16,
    beta: Annotated[float, NON_NEGATIVE] = 1.0,
    norm: str = "batch",
    activation: str = "relu",
) -> nn.Module:
    """Convolutional VAE trained on the ELBO; `ember sample` draws images."""
    channels, size = spatial_input(spec, "vae", (2,), "the VAE is convolutional over images")
    if depth < 1 or latent_dim < 1:
        raise ConfigError(f"model.depth={depth} and model.latent_dim={latent_dim} must be at least 1")
    return VAE(channels, size, width, depth, latent_dim, beta, norm, activation)
