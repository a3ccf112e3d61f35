"""Encoder + quantizer(s) + decoder, one class per token structure.

Every architecture exposes the same small interface the `Tokenizer` uses:
`quantize(x) -> [QuantizerOutput per level]` (coarse level first),
`decode_levels([quantized per level]) -> decoder output`, `quantizers`
(one per level), `grids(image_size)` and `last_layer` (for the adaptive GAN
weight; None when nothing is trained)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vqtool.models.conv import ConvConfig, ConvDecoder, ConvEncoder
from vqtool.models.cosmos import CosmosConfig
from vqtool.models.cosmos_net import CosmosDecoder, CosmosEncoder
from vqtool.models.dvae import DVAEConfig, DVAEDecoder, DVAEEncoder
from vqtool.models.emu3 import Emu3Config, Emu3Decoder, Emu3Encoder
from vqtool.models.infinity import BitwiseMultiScale, InfinityConfig
from vqtool.models.layers import Downsample, ResBlock, Upsample
from vqtool.models.magvit2 import MAGVIT2Config, MAGVIT2Decoder, MAGVIT2Encoder
from vqtool.models.maskgit_vqgan import MaskGITDecoder, MaskGITEncoder, MaskGITVQGANConfig
from vqtool.models.movq import MoVQConfig, MoVQDecoder, MoVQEncoder
from vqtool.models.var import MultiScale, VarConfig
from vqtool.models.vit import ViTConfig, ViTDecoder, ViTEncoder
from vqtool.quantizers import Quantizer, QuantizerOutput, build_quantizer


class SingleLevel(nn.Module):
    """z = E(x); q = Q(z); x_hat = D(q): VQ-VAE, VQGAN, ViT-VQGAN, RQ-VAE, dVAE, LFQ, FSQ, BSQ."""

    def __init__(self, encoder: nn.Module, quantizer: Quantizer, decoder: nn.Module, factor: int):
        super().__init__()
        self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder
        self.factor = factor

    @property
    def quantizers(self) -> list[Quantizer]:
        return [self.quantizer]

    def grids(self, image_size: int) -> list[tuple[int, int]]:
        return [(image_size // self.factor,) * 2]

    def quantize(self, x: torch.Tensor) -> list[QuantizerOutput]:
        return [self.quantizer(self.encoder(x))]

    def decode_levels(self, quantized: list[torch.Tensor]) -> torch.Tensor:
        return self.decoder(quantized[0])

    @property
    def last_layer(self):
        return getattr(self.decoder, "last_layer", None)


@dataclass
class HierarchicalConfig:
    architecture: Literal["hierarchical"] = "hierarchical"
    channels: int = 64
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2])  # bottom level: f4
    num_res_blocks: int = 1
    z_channels: int = 64
    norm_groups: int = 32  # as ConvConfig
    mid_blocks: int = 2
    resample_channels: bool = False
    code_kernel: int = 3

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    def conv(self) -> ConvConfig:
        return ConvConfig(
            channels=self.channels,
            channel_mult=self.channel_mult,
            num_res_blocks=self.num_res_blocks,
            z_channels=self.z_channels,
            norm_groups=self.norm_groups,
            mid_blocks=self.mid_blocks,
            resample_channels=self.resample_channels,
            code_kernel=self.code_kernel,
        )


class TwoLevel(nn.Module):
    """VQ-VAE-2 / HQ-VAE: a top code map at half the bottom resolution; the
    bottom is quantized from the bottom features concatenated with the
    decoded top, and the decoder sees both levels."""

    def __init__(self, c: HierarchicalConfig, quantizer_config, out_channels: int):
        super().__init__()
        z = c.z_channels
        self.factor = c.downsample
        self.encoder = ConvEncoder(c.conv())
        g = c.norm_groups
        self.to_top = nn.Sequential(Downsample(z), ResBlock(z, z, groups=g))
        self.top = build_quantizer(z, quantizer_config)
        self.top_up = nn.Sequential(ResBlock(z, z, groups=g), Upsample(z))
        self.to_bottom = nn.Conv2d(2 * z, z, 1)
        self.bottom = build_quantizer(z, quantizer_config)
        self.top_to_decoder = Upsample(z)
        self.decoder = ConvDecoder(c.conv(), out_channels, in_channels=2 * z)

    @property
    def quantizers(self) -> list[Quantizer]:
        return [self.top, self.bottom]

    def grids(self, image_size: int) -> list[tuple[int, int]]:
        bottom = image_size // self.factor
        return [(bottom // 2,) * 2, (bottom,) * 2]

    def quantize(self, x: torch.Tensor) -> list[QuantizerOutput]:
        h = self.encoder(x)  # (B, z, H, W)
        top = self.top(self.to_top(h))  # (B, z, H/2, W/2)
        bottom = self.bottom(self.to_bottom(torch.cat([h, self.top_up(top.quantized)], 1)))
        return [top, bottom]

    def decode_levels(self, quantized: list[torch.Tensor]) -> torch.Tensor:
        top, bottom = quantized
        return self.decoder(torch.cat([bottom, self.top_to_decoder(top)], 1))

    @property
    def last_layer(self):
        return self.decoder.last_layer


@dataclass
class PaletteModelConfig:
    architecture: Literal["palette"] = "palette"
    downsample: int = 2  # average-pool factor before the palette lookup (iGPT: 224 -> 32, 48...)


class PaletteCoder(nn.Module):
    """iGPT: no network. Area-downsample the image, one palette colour per pixel."""

    def __init__(self, c: PaletteModelConfig, quantizer: Quantizer):
        super().__init__()
        self.factor = c.downsample
        self.quantizer = quantizer

    quantizers = SingleLevel.quantizers
    grids = SingleLevel.grids

    def quantize(self, x):
        return [self.quantizer(F.avg_pool2d(x, self.factor) if self.factor > 1 else x)]

    def decode_levels(self, quantized):
        return F.interpolate(quantized[0], scale_factor=self.factor, mode="nearest")

    last_layer = None


MODEL_CONFIGS = {
    "conv": ConvConfig,
    "vit": ViTConfig,
    "dvae": DVAEConfig,
    "hierarchical": HierarchicalConfig,
    "palette": PaletteModelConfig,
    "magvit2": MAGVIT2Config,
    "maskgit_vqgan": MaskGITVQGANConfig,
    "emu3": Emu3Config,
    "movq": MoVQConfig,
    "cosmos": CosmosConfig,
    "var": VarConfig,
    "infinity": InfinityConfig,
}


#: single-level conv families: config type -> (encoder, decoder)
CONV_FAMILIES = {
    ConvConfig: (ConvEncoder, ConvDecoder),
    MAGVIT2Config: (MAGVIT2Encoder, MAGVIT2Decoder),
    MaskGITVQGANConfig: (MaskGITEncoder, MaskGITDecoder),
    Emu3Config: (Emu3Encoder, Emu3Decoder),
    MoVQConfig: (MoVQEncoder, MoVQDecoder),
    CosmosConfig: (CosmosEncoder, CosmosDecoder),
}


def build_autoencoder(model, quantizer_config, image_size: int, out_channels: int) -> nn.Module:
    """The network for a typed model config and quantizer config."""
    if isinstance(model, ViTConfig):
        q = build_quantizer(model.z_channels, quantizer_config)
        enc, dec = ViTEncoder(model, image_size), ViTDecoder(model, image_size, out_channels)
        return SingleLevel(enc, q, dec, model.downsample)
    if isinstance(model, DVAEConfig):
        q = build_quantizer(model.z_channels, quantizer_config)
        return SingleLevel(
            DVAEEncoder(model), q, DVAEDecoder(model, out_channels), model.downsample
        )
    for config_type, (encoder, decoder) in CONV_FAMILIES.items():
        if isinstance(model, config_type):
            q = build_quantizer(model.code_channels, quantizer_config)
            return SingleLevel(encoder(model), q, decoder(model, out_channels), model.downsample)
    if isinstance(model, HierarchicalConfig):
        return TwoLevel(model, quantizer_config, out_channels)
    if isinstance(model, VarConfig):  # a pyramid of scales from one codebook
        return MultiScale(model, build_quantizer(model.z_channels, quantizer_config), out_channels)
    if isinstance(model, InfinityConfig):  # a pyramid of scales of d-bit codes
        q = build_quantizer(model.bits, quantizer_config)
        return BitwiseMultiScale(model, q, out_channels)
    if isinstance(model, PaletteModelConfig):
        return PaletteCoder(model, build_quantizer(3, quantizer_config))
    raise TypeError(f"unknown model config {type(model).__name__}")
