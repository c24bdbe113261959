"""Neural operators for fields on regular grids.

`fno`: the Fourier Neural Operator (Li et al. 2020) in 1-D and 2-D. Each layer adds a global
convolution, done as a product with learned weights on the lowest `modes` Fourier modes, to a
pointwise linear map. Because the weights live on Fourier modes, not grid points, a trained FNO
runs on other resolutions of the same domain.

`afno`: the Adaptive Fourier Neural Operator (Guibas et al. 2021) of FourCastNet: a ViT whose
attention is replaced by token mixing in Fourier space, a block-diagonal complex MLP shared by all
modes with soft-thresholding for sparsity. Patches keep the token grid small for large fields.

Complex weights are stored as real tensors with a trailing (real, imaginary) axis, so optimizers,
safetensors and state dicts only ever see real numbers.
"""

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.models import register_model
from ember.models.layers import (
    PointwiseConv,
    activation,
    crop,
    dense_out_channels,
    dense_out_shape,
    pad,
    pad_amounts,
    spatial_input,
)
from ember.ranges import AT_LEAST_1, FRACTION, NON_NEGATIVE, POSITIVE, PROBABILITY, OneOf, Range

# normal: variance 2 / (in + out), the faster start; paper: uniform [0, 1 / (in out)], better
# at the end of the paper's Darcy recipe (see SpectralConv).
SPECTRAL_INITS = ("normal", "paper")


class SpectralConv(nn.Module):
    """Global convolution: multiply the lowest Fourier modes by learned complex weights.

    The weights live on modes, not grid points, so the layer runs on any grid with at least as
    many modes as it keeps (the grid size is read from the input, never stored).
    """

    def __init__(self, c_in: int, c_out: int, modes: list[int], init: str = "normal"):
        super().__init__()
        self.modes = modes
        self.c_out = c_out
        # In 2-D the first axis has positive and negative frequencies (two weight blocks); the
        # last axis of a real FFT only non-negative ones.
        blocks = 1 if len(modes) == 1 else 2
        shape = (blocks, c_in, c_out, *modes, 2)
        if init == "paper":
            # The paper's uniform [0, 1 / (c_in c_out)] per part: the layers start nearly at zero.
            # On Darcy (s=85, 100 epochs of the paper's optimizer) the test relative L2 went from
            # 0.0133 to 0.0103, below the paper's 500-epoch 0.0108 (one run each).
            self.weight = nn.Parameter(torch.rand(shape) / (c_in * c_out))
        else:
            # Complex normal weights of variance 2 / (c_in + c_out) (neuraloperator's choice): on
            # Burgers (s=256, 200 samples, batch 20, one run each) the test relative L2 went from
            # the paper init's 0.27 to 0.16 after 10 epochs and from 0.021 to 0.018 after 30.
            std = (1 / (c_in + c_out)) ** 0.5  # per real and imaginary part
            self.weight = nn.Parameter(std * torch.randn(shape))

    def forward(self, x):
        # Complex arithmetic on (real, imaginary) pairs: ONNX has no complex tensors.
        if len(self.modes) == 1:
            m, size = self.modes[0], x.shape[-1]
            x_ft = torch.view_as_real(torch.fft.rfft(x))
            y = _mix_modes(x_ft[:, :, :m], self.weight[0])
            y = F.pad(y, [0, 0, 0, size // 2 + 1 - m])  # higher modes are zero
            return torch.fft.irfft(torch.view_as_complex(y), n=size)
        m1, m2 = self.modes[0], self.modes[1]
        h, w = x.shape[-2], x.shape[-1]
        # rfft2 and irfft2 one axis at a time, so the first axis's transforms only run on the m2
        # columns that are kept: the same numbers, and the layer's forward and backward took 0.63x
        # the time (Darcy's 96x96 padded grid, width 32, 12 modes, batch 20, two threads).
        x_ft = torch.view_as_real(torch.fft.fft(torch.fft.rfft(x)[..., :m2], dim=-2))
        # Both corners (the lowest positive and negative frequencies of the first axis) in one product.
        corners = torch.cat([x_ft[:, :, :m1], x_ft[:, :, h - m1 :]], dim=2)
        y = _mix_modes(corners, torch.cat([self.weight[0], self.weight[1]], dim=2))
        middle = torch.zeros(x.shape[0], self.c_out, h - 2 * m1, m2, 2, dtype=y.dtype, device=x.device)
        y = torch.fft.ifft(torch.view_as_complex(torch.cat([y[:, :, :m1], middle, y[:, :, m1:]], dim=2)), dim=-2)
        return torch.fft.irfft(F.pad(y, [0, w // 2 + 1 - m2]), n=w)


def _mix_modes(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Per mode, the complex product of the channels x (b, i, *modes, 2) with w (i, o, *modes, 2),
    stored as (real, imaginary) pairs: (b, o, *modes, 2). One real batched matmul over the modes,
    [xr | xi] @ [[wr, wi], [-wi, wr]]: einsum's four products of strided halves took 6x as long
    on CPU (its matmul looped over the modes one by one)."""
    b, i, o = x.shape[0], x.shape[1], w.shape[1]
    modes: list[int] = list(x.shape[2:-1])
    n = 1
    for m in modes:
        n *= m
    xs = x.reshape(b, i, n, 2).permute(2, 0, 3, 1).reshape(n, b, 2 * i)
    wr = w[..., 0].reshape(i, o, n).permute(2, 0, 1)
    wi = w[..., 1].reshape(i, o, n).permute(2, 0, 1)
    block = torch.cat([torch.cat([wr, wi], dim=2), torch.cat([-wi, wr], dim=2)], dim=1)  # (n, 2i, 2o)
    y = torch.bmm(xs, block)  # (n, b, 2o): [real | imaginary]
    return y.reshape(n, b, 2, o).permute(1, 3, 0, 2).reshape([b, o] + modes + [2])


def fft_size(n: int) -> int:
    """The smallest size >= n whose prime factors are all 2, 3, 5 or 7.

    The FFT of other sizes is several times slower: Darcy at s=85 with 1/10 padding is a 94x94
    grid (94 = 2 x 47), and one training step of the paper's FNO took 2.3x as long there as on
    96x96 (20 samples, one thread). Domain padding only needs to be at least its fraction.
    """
    # Written so TorchScript compiles it (the forward calls it): a loop with its condition, no //=.
    rest = 0
    n -= 1
    while rest != 1:
        n += 1
        rest = n
        for p in (2, 3, 5, 7):
            while rest % p == 0:
                rest = rest // p
    return n


def fno_modes(size: tuple, modes: int) -> list[int]:
    """Modes kept per axis on a grid of `size`, or a ConfigError where the grid has too few."""
    # rfft has size // 2 + 1 modes on the last axis; the first axis of a 2-D grid splits its
    # size between positive and negative frequencies.
    limits = [size[0] // 2 + 1] if len(size) == 1 else [size[0] // 2, size[1] // 2 + 1]
    if modes > min(limits):
        raise ConfigError(
            f"model.modes={modes} needs a grid of at least {2 * modes} points per axis, "
            f"but the data's grid is {tuple(size)}; lower model.modes to {max(1, min(limits))} or raise data.resolution"
        )
    return [modes] * len(size)


class FNO(nn.Module):
    """Li et al. (2021): lift to `width` channels, Fourier layers (spectral convolution plus a
    pointwise linear skip, GELU between layers), project to the output. No normalization layers,
    as in the paper: they tie the weights to the training resolution's statistics."""

    operator = True  # trainer.loss=auto trains it on the relative L2 error (ember.train.losses)

    def __init__(
        self,
        in_channels: int,
        dims: int,
        out_channels: int,
        squeeze: bool,
        modes: list[int],
        width: int,
        depth: int,
        act: str,
        grid: bool,
        padding: float,
        spectral_init: str = "normal",
    ):
        super().__init__()
        self.dims, self.squeeze, self.use_grid, self.padding = dims, squeeze, grid, padding
        self.lift = PointwiseConv(in_channels + (dims if grid else 0), width, dims)
        self.spectral = nn.ModuleList([SpectralConv(width, width, modes, spectral_init) for _ in range(depth)])
        self.pointwise = nn.ModuleList([PointwiseConv(width, width, dims) for _ in range(depth)])
        self.act = activation(act)
        self.project = nn.Sequential(
            PointwiseConv(width, 2 * width, dims), activation(act), PointwiseConv(2 * width, out_channels, dims)
        )

    def coordinates(self, x: torch.Tensor) -> torch.Tensor:
        """The grid's coordinates in [0, 1] as extra input channels, as in the paper: they let
        the operator learn position-dependent maps on non-periodic domains. Built from the
        input's size, so the model runs at any resolution."""
        n, size = x.shape[0], x.shape[2:]
        if self.dims == 1:
            return torch.linspace(0, 1, size[0], dtype=x.dtype, device=x.device).reshape(1, 1, -1).expand(n, 1, size[0])
        gy = (
            torch.linspace(0, 1, size[0], dtype=x.dtype, device=x.device)
            .reshape(1, 1, -1, 1)
            .expand(n, 1, size[0], size[1])
        )
        gx = (
            torch.linspace(0, 1, size[1], dtype=x.dtype, device=x.device)
            .reshape(1, 1, 1, -1)
            .expand(n, 1, size[0], size[1])
        )
        return torch.cat([gy, gx], dim=1)

    def forward(self, x):
        size = x.shape[2:]
        if self.use_grid:
            x = torch.cat([x, self.coordinates(x)], dim=1)
        x = self.lift(x)
        # Domain padding (non-periodic problems): zeros after the end of each axis give the FFT's
        # wrap-around somewhere to go; a fraction of the grid, so it scales with the resolution,
        # rounded up to a size with a fast FFT.
        pads: list[int] = []
        for s in size:
            pads = [0, fft_size(s + int(self.padding * s + 0.5)) - s] + pads
        if self.padding > 0:
            x = F.pad(x, pads)
        last = len(self.spectral) - 1
        for i, (spectral, pointwise) in enumerate(zip(self.spectral, self.pointwise)):
            x = spectral(x) + pointwise(x)
            if i < last:
                x = self.act(x)
        if self.padding > 0:
            x = x[:, :, : size[0]] if self.dims == 1 else x[:, :, : size[0], : size[1]]
        x = self.project(x)
        return x[:, 0] if self.squeeze else x


@register_model("fno", example="field1d")
def fno(
    spec: DataSpec,
    *,
    modes: Annotated[int, AT_LEAST_1] = 16,
    width: Annotated[int, AT_LEAST_1] = 64,
    depth: Annotated[int, AT_LEAST_1] = 4,
    activation: str = "gelu",
    grid: bool = True,
    padding: Annotated[float, NON_NEGATIVE] = 0.0,
    spectral_init: Annotated[str, OneOf(SPECTRAL_INITS)] = "normal",
) -> nn.Module:
    """Fourier Neural Operator, 1-D or 2-D: convolutions on low Fourier modes."""
    channels, size = spatial_input(spec, "fno", (1, 2), "the FNO maps fields on grids; use model=mlp for tables")
    if modes < 1 or depth < 1:
        raise ConfigError(f"model.modes={modes} and model.depth={depth} must be at least 1")
    if not 0 <= padding <= 1:
        raise ConfigError(
            f"model.padding={padding} is the fraction of the grid added as zeros for non-periodic problems; "
            "use a value in [0, 1] (0.1 for Darcy, 0 for periodic data)"
        )
    out_channels = dense_out_channels(spec, "fno", size)
    # A regression target without a channel axis, (*grid): one output channel, dropped.
    squeeze = spec.task == "regression" and len(dense_out_shape(spec, size)) == len(size)
    return FNO(
        channels,
        len(size),
        out_channels,
        squeeze,
        fno_modes(size, modes),
        width,
        depth,
        activation,
        grid,
        padding,
        spectral_init,
    )


class AFNOFilter(nn.Module):
    """Token mixing in Fourier space: a block-diagonal complex 2-layer MLP per mode, soft-shrunk."""

    def __init__(self, dim: int, grid: tuple, num_blocks: int, sparsity: float, modes_fraction: float):
        super().__init__()
        self.num_blocks, self.block = num_blocks, dim // num_blocks
        self.sparsity = sparsity
        s = 0.02
        # Index 0 holds the real parts, index 1 the imaginary parts of the complex weights.
        self.w1 = nn.Parameter(s * torch.randn(2, num_blocks, self.block, self.block))
        self.b1 = nn.Parameter(s * torch.randn(2, num_blocks, self.block))
        self.w2 = nn.Parameter(s * torch.randn(2, num_blocks, self.block, self.block))
        self.b2 = nn.Parameter(s * torch.randn(2, num_blocks, self.block))
        # Hard thresholding: only the lowest fraction of modes along each axis is mixed.
        h, wf = grid[0], grid[1] // 2 + 1
        fy = torch.fft.fftfreq(h).abs().unsqueeze(1) * 2  # in [0, 1]
        fx = torch.fft.rfftfreq(grid[1]).unsqueeze(0) * 2
        self.register_buffer(
            "mask", ((fy <= modes_fraction) & (fx <= modes_fraction)).float().reshape(1, h, wf, 1, 1), persistent=False
        )

    def forward(self, x):  # x: (N, H, W, C)
        n, h, w, c = x.shape
        residual = x
        x = torch.fft.rfft2(x.float(), dim=(1, 2), norm="ortho")
        x = x.reshape(n, h, w // 2 + 1, self.num_blocks, self.block)
        xr, xi = x.real, x.imag
        w1, b1, w2, b2 = self.w1, self.b1, self.w2, self.b2
        o1r = F.relu(torch.einsum("...bi,bio->...bo", xr, w1[0]) - torch.einsum("...bi,bio->...bo", xi, w1[1]) + b1[0])
        o1i = F.relu(torch.einsum("...bi,bio->...bo", xi, w1[0]) + torch.einsum("...bi,bio->...bo", xr, w1[1]) + b1[1])
        o2r = torch.einsum("...bi,bio->...bo", o1r, w2[0]) - torch.einsum("...bi,bio->...bo", o1i, w2[1]) + b2[0]
        o2i = torch.einsum("...bi,bio->...bo", o1i, w2[0]) + torch.einsum("...bi,bio->...bo", o1r, w2[1]) + b2[1]
        # Soft-shrinkage zeroes small coefficients: the "sparsity promoting" step of AFNO.
        o2r = F.softshrink(o2r, self.sparsity) * self.mask
        o2i = F.softshrink(o2i, self.sparsity) * self.mask
        x = torch.complex(o2r, o2i).reshape(n, h, w // 2 + 1, c)
        x = torch.fft.irfft2(x, s=(h, w), dim=(1, 2), norm="ortho").type_as(residual)
        return x + residual


class AFNOBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        grid: tuple,
        num_blocks: int,
        sparsity: float,
        modes_fraction: float,
        mlp_ratio: float,
        dropout: float,
    ):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.filter = AFNOFilter(dim, grid, num_blocks, sparsity, modes_fraction)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )

    def forward(self, x):
        x = x + self.filter(self.norm1(x))  # FourCastNet's "double skip"
        return x + self.mlp(self.norm2(x))


class AFNO(nn.Module):
    operator = True  # trainer.loss=auto trains it on the relative L2 error (ember.train.losses)

    def __init__(
        self,
        in_channels: int,
        size: tuple,
        out_channels: int,
        out_shape: tuple,
        patch: int,
        dim: int,
        depth: int,
        num_blocks: int,
        sparsity: float,
        modes_fraction: float,
        mlp_ratio: float,
        dropout: float,
    ):
        super().__init__()
        self.size, self.patch, self.out_channels, self.out_shape = list(size), patch, out_channels, out_shape
        self.pads = pad_amounts(size, patch)
        self.grid = ((size[0] + patch - 1) // patch, (size[1] + patch - 1) // patch)
        self.embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.zeros(1, self.grid[0], self.grid[1], dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(
            *[AFNOBlock(dim, self.grid, num_blocks, sparsity, modes_fraction, mlp_ratio, dropout) for _ in range(depth)]
        )
        # Each token predicts its patch's pixels.
        self.head = nn.Linear(dim, out_channels * patch * patch, bias=False)

    def forward(self, x):
        n = x.shape[0]
        x = self.embed(pad(x, self.pads)).permute(0, 2, 3, 1)  # (N, h, w, dim)
        x = self.blocks(self.drop(x + self.pos))
        h, w, p = self.grid[0], self.grid[1], self.patch
        x = self.head(x).reshape(n, h, w, p, p, self.out_channels)
        x = x.permute(0, 5, 1, 3, 2, 4).reshape(n, self.out_channels, h * p, w * p)
        return crop(x, self.size).reshape(n, *self.out_shape)


@register_model("afno", example="field2d")
def afno(
    spec: DataSpec,
    *,
    patch_size: Annotated[int, AT_LEAST_1] = 4,
    dim: Annotated[int, AT_LEAST_1] = 256,
    depth: Annotated[int, AT_LEAST_1] = 4,
    num_blocks: Annotated[int, AT_LEAST_1] = 8,
    mlp_ratio: Annotated[float, POSITIVE] = 4.0,
    sparsity: Annotated[float, PROBABILITY] = 0.01,
    modes_fraction: Annotated[float, Range(0, 1, low_open=True)] = 1.0,
    dropout: Annotated[float, FRACTION] = 0.0,
) -> nn.Module:
    """Adaptive Fourier Neural Operator (FourCastNet): Fourier token mixing."""
    channels, size = spatial_input(spec, "afno", (2,), "AFNO maps 2-D fields; use model=fno for 1-D fields")
    if dim % num_blocks:
        raise ConfigError(f"model.num_blocks={num_blocks} must divide model.dim={dim}")
    if not 0 < modes_fraction <= 1:
        raise ConfigError(f"model.modes_fraction={modes_fraction} must be in (0, 1]")
    out_channels = dense_out_channels(spec, "afno", size)
    return AFNO(
        channels,
        size,
        out_channels,
        dense_out_shape(spec, size),
        patch_size,
        dim,
        depth,
        num_blocks,
        sparsity,
        modes_fraction,
        mlp_ratio,
        dropout,
    )
