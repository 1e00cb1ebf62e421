"""The class-conditional U-Net noise predictor: (x_t, t, context) -> epsilon or v. It knows nothing of betas.

Architecture after Ho et al. 2020 (arXiv:2006.11239, app. B) with the refinements of Nichol & Dhariwal 2021
(arXiv:2102.09672): residual blocks whose GroupNorm is modulated by the (time + class) embedding (scale-shift norm),
sinusoidal timestep embeddings, zero-initialised output layers, optional self-attention at low resolution.
CPU-oriented option: `patch_size` 2 folds 2x2 pixels into channels before the first block (pixel-unshuffle, as the
patchify stem of DiT, arXiv:2212.09748) so that no residual block runs at full resolution; the output is unfolded
again. Any image size works natively (28x28 is 28 -> 14 -> 7 -> 4, no padding to 32). `upsample` "subpixel" replaces
the decoder's nearest-resize-then-conv (a 3x3 conv at the high resolution, width kept) by a 3x3 conv at the low
resolution to 4x the next level's width followed by a pixel shuffle (sub-pixel convolution, Shi et al. 2016,
arXiv:1609.05158): the same receptive field for a quarter or less of the FLOPs, and the next level's blocks start at
their own width.

Class context is a vector c over the K classes: a one-hot vector (a class index), any weight vector (a mix of
classes, e.g. "hero + side-facing"), or the zero vector ("no context", used for classifier-free guidance). It is
embedded linearly, so a class index and its one-hot vector give the same output.

Usage: net = UNet(UNetConfig(image_size=28, in_channels=1, num_classes=10)); out = net(x, t, context)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode


UPSAMPLES = ("nearest_conv", "subpixel")


@dataclass
class UNetConfig:
    """Everything needed to rebuild the network. Plain JSON types only (it is saved in config.json)."""

    image_size: int = 28
    in_channels: int = 1
    num_classes: int = 10  # 0 = unconditional model
    base_channels: int = 64
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2])  # width of each level = base * mult
    num_res_blocks: int = 2  # residual blocks per level on the way down (one more on the way up)
    attention_levels: list[int] = field(default_factory=list)  # level indices (0 = first) with self-attention
    attention_heads: int = 4
    patch_size: int = 1  # 1 = first level at full resolution; 2 = pixel-unshuffle stem
    upsample: str = "nearest_conv"  # "nearest_conv" (resize, then conv) or "subpixel" (conv, then pixel shuffle)
    dropout: float = 0.0
    norm_groups: int = 32
    # [w_lo, w_hi]: a guidance-distilled network (Meng et al. 2023, arXiv:2210.03142, sec. 4.1) that takes the
    # guidance scale w as an input and predicts the guided output of its teacher in one pass, for w in this range
    # (diffusion.distill --guidance); None = an ordinary network.
    guidance_range: list[float] | None = None

    def validate(self) -> None:
        def positive(name: str) -> None:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"UNetConfig.{name} must be a positive integer, got {v!r}")

        for name in ("image_size", "in_channels", "base_channels", "num_res_blocks", "attention_heads",
                     "patch_size", "norm_groups"):
            positive(name)
        if not isinstance(self.num_classes, int) or self.num_classes < 0:
            raise ValueError(f"UNetConfig.num_classes must be an integer >= 0, got {self.num_classes!r}")
        if not self.channel_mult or any(not isinstance(m, int) or m < 1 for m in self.channel_mult):
            raise ValueError(f"UNetConfig.channel_mult must be a non-empty list of positive integers, "
                             f"got {self.channel_mult!r}")
        if any(lvl not in range(len(self.channel_mult)) for lvl in self.attention_levels):
            raise ValueError(f"UNetConfig.attention_levels must index levels 0..{len(self.channel_mult) - 1}, "
                             f"got {self.attention_levels!r}")
        if self.upsample not in UPSAMPLES:
            raise ValueError(f"UNetConfig.upsample must be one of {UPSAMPLES}, got {self.upsample!r}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        for m in self.channel_mult:
            width = self.base_channels * m
            if width % self.norm_groups:
                raise ValueError(f"level width {width} is not divisible by norm_groups {self.norm_groups}")
            if width % self.attention_heads and self.attention_levels:
                raise ValueError(f"level width {width} is not divisible by attention_heads {self.attention_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"UNetConfig.dropout must be in [0, 1), got {self.dropout!r}")
        r = self.guidance_range
        if r is not None and not (isinstance(r, (list, tuple)) and len(r) == 2 and self.num_classes > 0
                                  and all(isinstance(w, (int, float)) and not isinstance(w, bool)
                                          and math.isfinite(w) for w in r) and r[0] < r[1]):
            raise ValueError(f"UNetConfig.guidance_range must be two finite numbers [w_lo, w_hi] with w_lo < w_hi, on "
                             f"a class-conditional model (or null), got {r!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (B,) timesteps (Vaswani et al. 2017, sec. 3.5; DDPM app. B) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


GUIDANCE_EMBEDDING_SCALE = 250.0  # w is embedded as a timestep of 250 w: w in [0, 4] spans the timesteps' range


def zero_module(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm-SiLU-Conv, then GroupNorm modulated by the embedding (h * (1 + scale) + shift), SiLU, dropout, Conv;
    plus a (1x1 projected) skip connection. (B, C_in, H, W), (B, E) -> (B, C_out, H, W)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_module(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)  # each (B, C_out, 1, 1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions, pre-norm, residual. (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_module(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W)
        q, k, v = qkv.transpose(-1, -2).unbind(dim=1)  # each (B, heads, H*W, C/heads)
        # softmax(q k^T / sqrt(d)) v written out: at these sizes (49-196 positions) it trains several times faster on
        # CPU under bf16 autocast than F.scaled_dot_product_attention, whose bf16 backward is slow there.
        weights = (q @ k.transpose(-1, -2) * (C // self.heads) ** -0.5).softmax(dim=-1)  # (B, heads, HW, HW)
        h = weights @ v  # (B, heads, H*W, C/heads)
        h = h.transpose(-1, -2).reshape(B, C, H, W)
        return x + self.proj(h)


class Downsample(nn.Module):
    """Strided 3x3 conv, (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour resize to the skip connection's size, then a 3x3 conv. Handles odd sizes (7 <- 4)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class SubpixelUpsample(nn.Module):
    """3x3 conv at the low resolution to 4 * c_out channels, pixel shuffle to twice the size, cropped to the skip
    connection's size (7 <- 4 crops 8 to 7: output rows 2i, 2i+1 come from input row i, the input of the stride-2
    conv that made row i). (B, C_in, h, w) -> (B, C_out, H, W) with H <= 2h."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, 4 * c_out, 3, padding=1)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        return F.pixel_shuffle(self.conv(x), 2)[..., :size[0], :size[1]]


class Level(nn.Module):
    """Residual blocks (each optionally followed by attention) at one resolution."""

    def __init__(self, blocks: list[ResBlock], attentions: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attentions = nn.ModuleList(attentions)


class UNet(nn.Module):
    """(x_t (B, C, H, W), t (B,) long, context (B, K) float or None[, guidance (B,) float]) -> prediction
    (B, C, H, W)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        config.validate()
        self.config = config
        c = config
        widths = [c.base_channels * m for m in c.channel_mult]
        emb_dim = 4 * c.base_channels
        self.emb_dim = emb_dim

        self.time_mlp = nn.Sequential(nn.Linear(c.base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # Context vector (B, K) -> (B, E), linear so mixes of classes embed as mixes; zero vector = no context.
        self.context_embedding = nn.Linear(c.num_classes, emb_dim, bias=False) if c.num_classes > 0 else None
        # Guidance scale w (B,) -> (B, E), added like the class; zero output layer, so a network just grown from an
        # ordinary one predicts exactly what it did, at every w.
        self.guidance_mlp = (nn.Sequential(nn.Linear(c.base_channels, emb_dim), nn.SiLU(),
                                           zero_module(nn.Linear(emb_dim, emb_dim)))
                             if c.guidance_range is not None else None)

        p = c.patch_size
        self.stem = nn.Conv2d(c.in_channels * p * p, widths[0], 3, padding=1)

        def attention(level: int, width: int) -> nn.Module:
            if level not in c.attention_levels:
                return nn.Identity()
            return SelfAttention(width, c.attention_heads, c.norm_groups)

        # Down path: skip widths recorded in the order they are pushed.
        self.down = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        skip_widths = [widths[0]]
        width = widths[0]
        for level, w in enumerate(widths):
            blocks, attns = [], []
            for _ in range(c.num_res_blocks):
                blocks.append(ResBlock(width, w, emb_dim, c.norm_groups, c.dropout))
                attns.append(attention(level, w))
                width = w
                skip_widths.append(width)
            self.down.append(Level(blocks, attns))
            if level < len(widths) - 1:
                self.downsamples.append(Downsample(width))
                skip_widths.append(width)

        mid_attention = SelfAttention(width, c.attention_heads, c.norm_groups) if c.attention_levels else nn.Identity()
        self.mid = Level([ResBlock(width, width, emb_dim, c.norm_groups, c.dropout),
                          ResBlock(width, width, emb_dim, c.norm_groups, c.dropout)], [mid_attention, nn.Identity()])

        # Up path: each block consumes one skip connection.
        self.up = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for level in reversed(range(len(widths))):
            w = widths[level]
            blocks, attns = [], []
            for _ in range(c.num_res_blocks + 1):
                blocks.append(ResBlock(width + skip_widths.pop(), w, emb_dim, c.norm_groups, c.dropout))
                attns.append(attention(level, w))
                width = w
            self.up.append(Level(blocks, attns))
            if level > 0 and c.upsample == "subpixel":  # the next level's width already at the upsampling
                self.upsamples.append(SubpixelUpsample(width, widths[level - 1]))
                width = widths[level - 1]
            elif level > 0:  # width kept; the next level's first block changes it
                self.upsamples.append(Upsample(width))

        self.out_norm = nn.GroupNorm(c.norm_groups, width)
        self.out_conv = zero_module(nn.Conv2d(width, c.in_channels * p * p, 3, padding=1))

    def embed(self, t: Tensor, context: Tensor | None, guidance: Tensor | None = None) -> Tensor:
        """(B,) timesteps, (B, K) context and, for a guidance-distilled network, (B,) guidance scales (None = 1, the
        plain conditional prediction) -> (B, E) embedding fed to every residual block."""
        emb = self.time_mlp(timestep_embedding(t, self.config.base_channels))
        if self.guidance_mlp is not None:
            w = torch.ones(t.shape[0], device=t.device) if guidance is None else guidance
            if w.shape != t.shape:
                raise ValueError(f"guidance must have shape (B,) = ({t.shape[0]},), got {tuple(w.shape)}")
            emb = emb + self.guidance_mlp(timestep_embedding(w * GUIDANCE_EMBEDDING_SCALE, self.config.base_channels))
        elif guidance is not None:
            raise ValueError("this network was not guidance-distilled (no guidance_range): guidance must be None")
        if self.context_embedding is not None:
            if context is None:
                raise ValueError(f"this model is class-conditional ({self.config.num_classes} classes): pass a "
                                 f"(B, {self.config.num_classes}) context (a zero row means 'no class')")
            if context.shape != (t.shape[0], self.config.num_classes):
                raise ValueError(f"context must have shape (B, {self.config.num_classes}) = "
                                 f"({t.shape[0]}, {self.config.num_classes}), got {tuple(context.shape)}")
            emb = emb + self.context_embedding(context.to(emb.dtype))
        elif context is not None:
            raise ValueError("this model is unconditional (num_classes=0): context must be None")
        return emb

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None, guidance: Tensor | None = None) -> Tensor:
        B, C, H, W = x.shape
        c = self.config
        if (C, H, W) != (c.in_channels, c.image_size, c.image_size):
            raise ValueError(f"expected images of shape (B, {c.in_channels}, {c.image_size}, {c.image_size}), "
                             f"got {tuple(x.shape)}")
        emb = self.embed(t, context, guidance)
        h = self.stem(F.pixel_unshuffle(x, c.patch_size) if c.patch_size > 1 else x)  # (B, w0, H/p, W/p)
        skips = [h]
        for level, blocks in enumerate(self.down):
            for block, attn in zip(blocks.blocks, blocks.attentions):
                h = attn(block(h, emb))
                skips.append(h)
            if level < len(self.downsamples):
                h = self.downsamples[level](h)
                skips.append(h)
        h = self.mid.attentions[0](self.mid.blocks[0](h, emb))
        h = self.mid.blocks[1](h, emb)
        for i, blocks in enumerate(self.up):
            for block, attn in zip(blocks.blocks, blocks.attentions):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
            if i < len(self.upsamples):
                h = self.upsamples[i](h, skips[-1].shape[-2:])
        h = self.out_conv(F.silu(self.out_norm(h)))  # (B, C p^2, H/p, W/p)
        return F.pixel_shuffle(h, c.patch_size) if c.patch_size > 1 else h


def forward_flops(config: UNetConfig) -> int:
    """FLOPs of one forward pass over one image (a multiply-add counts 2; convolutions, matmuls and attention, as
    torch.utils.flop_counter counts them), measured on a meta-device network: no weights, no arithmetic, ~0.1 s."""
    with torch.device("meta"), torch.no_grad(), FlopCounterMode(display=False) as counter:
        x = torch.zeros(1, config.in_channels, config.image_size, config.image_size)
        context = torch.zeros(1, config.num_classes) if config.num_classes else None
        UNet(config)(x, torch.zeros(1, dtype=torch.long), context)
    return counter.get_total_flops()
