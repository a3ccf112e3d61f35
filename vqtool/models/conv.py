"""VQGAN-style convolutional encoder and decoder (Esser et al. 2021).

Channel multipliers set the downsampling: `channel_mult = [1, 2, 2]` gives
f4 (two halvings), `[1, 1, 2, 2, 4]` f16. Optional attention runs at the
lowest resolution, in the middle block."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from vqtool.errors import ConfigError
from vqtool.models.layers import AttnBlock, Downsample, ResBlock, Upsample, group_norm, swish


@dataclass
class ConvConfig:
    architecture: Literal["conv"] = "conv"
    channels: int = 64  # width of the first stage
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2])  # per stage; f = 2^(n-1)
    num_res_blocks: int = 1  # residual blocks per stage
    attention: bool = False  # self-attention in the middle block (lowest resolution)
    z_channels: int = 64  # encoder output = quantizer input channels
    dropout: float = 0.0
    # -- shape of the blocks (the defaults are v0.1's and taming's; the recipes use the lighter
    #    reference-AE form: norm_groups 8, mid_blocks 0, resample_channels, code_kernel 1) --
    norm_groups: int = 32  # GroupNorm groups (fewer when they do not divide the width)
    mid_blocks: int = 2  # residual blocks at the lowest resolution after the last stage
    resample_channels: bool = False  # widths change in the down/up convs (true) or in the
    # first residual block of a stage (false); true keeps full resolution at the first width
    # (and pads the stride-2 convs symmetrically instead of taming's right/bottom pad)
    code_kernel: int = 3  # kernel of the convs into and out of the code channels (1 or 3)
    # -- switches that public VQGAN-family checkpoints need (taming, LlamaGen) --
    attention_levels: list[int] = field(default_factory=list)  # stages (0 = full res) whose
    # every residual block is followed by self-attention
    decoder_res_blocks: int | None = None  # per decoder stage; default num_res_blocks
    # per-stage counts and widths where stages differ (Show-o's MAGVIT-v2), stage 0 = full res
    stage_res_blocks: list[int] | None = None  # encoder blocks per stage (num_res_blocks: all)
    decoder_stage_res_blocks: list[int] | None = None  # decoder blocks per stage
    decoder_channel_mult: list[int] | None = None  # decoder widths per stage (channel_mult)
    embed_dim: int | None = None  # 1x1 quant_conv z_channels -> embed_dim (and back)
    swish: Literal["silu", "x_sigmoid"] = "silu"
    attention_impl: Literal["sdpa", "manual", "fused"] = "sdpa"

    def __post_init__(self):
        n = len(self.channel_mult)
        for key in ("stage_res_blocks", "decoder_stage_res_blocks", "decoder_channel_mult"):
            value = getattr(self, key)
            if value is not None and len(value) != n:
                raise ConfigError(f"model.{key}: {value} has not one entry per stage ({n})")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    def encoder_blocks(self, stage: int) -> int:
        return self.stage_res_blocks[stage] if self.stage_res_blocks else self.num_res_blocks

    def decoder_blocks(self, stage: int) -> int:
        if self.decoder_stage_res_blocks:
            return self.decoder_stage_res_blocks[stage]
        return self.decoder_res_blocks or self.num_res_blocks

    @property
    def code_channels(self) -> int:
        """Channels the quantizer sees."""
        return self.embed_dim or self.z_channels


def _middle(c: ConvConfig, width: int) -> list[nn.Module]:
    """The lowest-resolution blocks: `mid_blocks` residual blocks, with self-attention
    after the first when `attention`."""
    res = [ResBlock(width, width, c.dropout, c.swish, c.norm_groups) for _ in range(c.mid_blocks)]
    attn = [AttnBlock(width, c.attention_impl, c.norm_groups)] if c.attention else []
    return res[:1] + attn + res[1:]


class ConvEncoder(nn.Module):
    def __init__(self, c: ConvConfig, in_channels: int = 3):
        super().__init__()
        self.act = c.swish
        widths = [c.channels * m for m in c.channel_mult]
        g = c.norm_groups
        self.conv_in = nn.Conv2d(in_channels, c.channels, 3, padding=1)
        blocks, prev = [], c.channels
        for i, width in enumerate(widths):
            for _ in range(c.encoder_blocks(i)):
                blocks.append(ResBlock(prev, width, c.dropout, c.swish, g))
                prev = width
                if i in c.attention_levels:
                    blocks.append(AttnBlock(prev, c.attention_impl, g))
            if i < len(widths) - 1:
                nxt = widths[i + 1] if c.resample_channels else prev
                blocks.append(Downsample(prev, nxt, symmetric=c.resample_channels))
                prev = nxt
        blocks += _middle(c, prev)
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = group_norm(prev, g)
        k = c.code_kernel
        self.conv_out = nn.Conv2d(prev, c.z_channels, k, padding=k // 2)
        self.quant_conv = nn.Conv2d(c.z_channels, c.embed_dim, 1) if c.embed_dim else None

    def forward(self, x):  # (B, 3, H, W) -> (B, z, H/f, W/f)
        h = self.conv_out(swish(self.norm_out(self.blocks(self.conv_in(x))), self.act))
        return self.quant_conv(h) if self.quant_conv is not None else h


class ConvDecoder(nn.Module):
    def __init__(self, c: ConvConfig, out_channels: int = 3, in_channels: int | None = None):
        super().__init__()
        self.act = c.swish
        widths = [c.channels * m for m in c.decoder_channel_mult or c.channel_mult]
        prev = widths[-1]
        self.post_quant_conv = (
            nn.Conv2d(c.embed_dim, c.z_channels, 1) if c.embed_dim and not in_channels else None
        )
        g, k = c.norm_groups, c.code_kernel
        self.conv_in = nn.Conv2d(in_channels or c.z_channels, prev, k, padding=k // 2)
        blocks = _middle(c, prev)
        for i in reversed(range(len(widths))):
            for _ in range(c.decoder_blocks(i)):
                blocks.append(ResBlock(prev, widths[i], c.dropout, c.swish, g))
                prev = widths[i]
                if i in c.attention_levels:
                    blocks.append(AttnBlock(prev, c.attention_impl, g))
            if i > 0:
                nxt = widths[i - 1] if c.resample_channels else prev
                blocks.append(Upsample(prev, nxt))
                prev = nxt
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = group_norm(prev, g)
        self.conv_out = nn.Conv2d(prev, out_channels, 3, padding=1)

    def forward(self, z):  # (B, z, h, w) -> (B, out, h*f, w*f)
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        h = self.blocks(self.conv_in(z))
        return self.conv_out(swish(self.norm_out(h), self.act))

    @property
    def last_layer(self) -> nn.Parameter:
        return self.conv_out.weight
