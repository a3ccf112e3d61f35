"""MoVQGAN (Zheng et al. 2022; SBER-MoVQGAN 67M / 102M / 270M, the tokenizer of
Lumina-mGPT 2.0 and Kandinsky), built as its public checkpoints need it.

- the encoder is taming's VQGAN encoder with its 1x1 quant conv (vqtool's `conv`
  encoder with taming's switches);
- the codebook (16,384 x 4) is searched with taming's `|z|^2 + |e|^2 - 2 z.e`;
- the decoder is taming's, except that every GroupNorm is a *spatial* norm whose scale
  and shift are 1x1 convolutions of the code vectors (nearest-resized to the feature
  map): the codes reach every stage, not only the first conv.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from vqtool.models.conv import ConvConfig, ConvEncoder
from vqtool.models.emu3 import build_spatial_decoder, run_spatial_decoder


@dataclass
class MoVQConfig:
    architecture: Literal["movq"] = "movq"
    channels: int = 256
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 4])
    num_res_blocks: int = 2
    attention_levels: list[int] = field(default_factory=lambda: [3])  # 32 px of 256: f8's last
    z_channels: int = 4
    embed_dim: int = 4

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def code_channels(self) -> int:
        return self.embed_dim

    def encoder_config(self) -> ConvConfig:
        return ConvConfig(
            channels=self.channels,
            channel_mult=self.channel_mult,
            num_res_blocks=self.num_res_blocks,
            attention=True,
            z_channels=self.z_channels,
            attention_levels=self.attention_levels,
            embed_dim=self.embed_dim,
            swish="x_sigmoid",
            attention_impl="manual",
        )


class MoVQEncoder(ConvEncoder):
    def __init__(self, c: MoVQConfig):
        super().__init__(c.encoder_config())


class MoVQDecoder(nn.Module):
    """Names as the original's `decoder.*` (post_quant_conv added), so weights map 1:1."""

    def __init__(self, c: MoVQConfig, out_channels: int = 3):
        super().__init__()
        self.post_quant_conv = nn.Conv2d(c.embed_dim, c.z_channels, 1)
        build_spatial_decoder(self, c, out_channels, taming_scale=True)

    def forward(self, quant):  # (B, embed, h, w) code vectors -> (B, 3, h*f, w*f)
        return run_spatial_decoder(self, self.post_quant_conv(quant), quant)

    @property
    def last_layer(self) -> nn.Parameter:
        return self.conv_out.weight
