"""Infinity's bitwise multi-scale VAE (FoundationVision/Infinity, `infinity_vae_d16/24/32.pth`):
one image becomes a pyramid of scales, as VAR's, whose positions hold d-bit codes rather
than entries of a codebook (binary spherical quantization, BSQ). Scale k quantizes what the
coarser scales left: the residual feature map is area-downsampled to the scale's size,
L2-normalized per position, and each channel becomes one bit (positive or not), its value
+-1/sqrt(d); the quantized map is upsampled (trilinear) back to the full grid and
subtracted. Decoding sums the same upsampled maps and runs the decoder.

The encoder and decoder are the taming VQGAN without attention (Infinity's `flux_vqgan`,
x * sigmoid(x), GroupNorm 32), the encoder's last conv giving the d channels directly. The
scales follow Infinity's aspect-ratio templates (`vqtool.data.templates`): the schedule is
a function of the latent grid it ends at, 16 pixels a position.

The arithmetic follows Infinity's training path step by step (`BitwiseSelfCorrection.
flip_requant` without its noise, which is what its transformer learns to predict, and
`BSQ.forward` / `indices_to_codes` with `new_quant`): the residual taken as the features
minus the running sum, `z + (zhat - z)` as the quantized value, the memory layouts the
interpolations see. A position's token packs its bits with channel 0 the most significant
(Infinity's `int_label` order, `mask = 2 ** arange(d - 1, -1, -1)`); a row is the scales
coarse first, raster order within a scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vqtool.data.templates import MAX_SCALES, PATCH, SCHEDULES
from vqtool.errors import ConfigError
from vqtool.models.conv import ConvConfig, ConvDecoder, ConvEncoder
from vqtool.quantizers import Quantizer, QuantizerOutput


@dataclass
class InfinityConfig:
    architecture: Literal["infinity"] = "infinity"
    channels: int = 128
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 4, 4, 4])
    num_res_blocks: int = 2
    bits: int = 32  # d: channels of the latent, bits per position (codes 0 .. 2^d - 1)
    norm_groups: int = 32

    def __post_init__(self):
        if not 1 <= self.bits <= 32:
            raise ConfigError(
                f"model.bits {self.bits}: vqtool stores a position's bits packed in uint16 or "
                "uint32 token columns, so 1 to 32 bits (infinity_vae_d64 is not supported)"
            )
        if 2 ** (len(self.channel_mult) - 1) != PATCH:
            raise ConfigError(
                f"model.channel_mult {self.channel_mult}: Infinity's templates are in "
                f"{PATCH}-pixel positions, so five stages (four halvings)"
            )

    @property
    def downsample(self) -> int:
        return PATCH

    @property
    def code_channels(self) -> int:
        return self.bits

    def conv(self) -> ConvConfig:
        """The encoder/decoder: Infinity's flux_vqgan (taming's VQGAN, no attention)."""
        return ConvConfig(
            channels=self.channels, channel_mult=list(self.channel_mult),
            num_res_blocks=self.num_res_blocks, decoder_res_blocks=self.num_res_blocks + 1,
            attention=False, z_channels=self.bits, norm_groups=self.norm_groups,
            swish="x_sigmoid",
        )  # fmt: skip


def schedule_at(grid: tuple[int, int]) -> list[tuple[int, int]]:
    """The scale schedule ending at a latent grid (h, w)."""
    if tuple(grid) not in SCHEDULES:
        squares = sorted(s[0] * PATCH for s in SCHEDULES if s[0] == s[1])
        raise ConfigError(
            f"a latent grid of {grid[0]}x{grid[1]} ({grid[0] * PATCH}x{grid[1] * PATCH} px) is "
            f"not the last scale of an Infinity template; square sizes are "
            f"{', '.join(map(str, squares))} px, other shapes come from --resize templates:PN"
        )
    return SCHEDULES[tuple(grid)]


class BitwiseMultiScale(nn.Module):
    """Encoder, the bitwise pyramid quantizer, decoder. `quantizer` is a BSQ with the most
    significant bit first: the vocabulary (2^d), and each code's +-1/sqrt(d) vector for
    decoding; `quantizers` lists it once per scale, as the token layout has one level per
    scale."""

    pyramid = True  # rows are scales coarse first (decode --scales draws each)

    def __init__(self, c: InfinityConfig, quantizer: Quantizer, out_channels: int = 3):
        super().__init__()
        conv = c.conv()
        self.config = c
        self.encoder, self.decoder = ConvEncoder(conv), ConvDecoder(conv, out_channels)
        self.quantizer = quantizer
        self.factor = PATCH

    @property
    def quantizers(self) -> list[Quantizer]:
        return [self.quantizer] * MAX_SCALES

    def grids(self, image_size: int) -> list[tuple[int, int]]:
        if image_size % PATCH:
            raise ConfigError(f"image size {image_size}: not a multiple of {PATCH} px")
        return list(schedule_at((image_size // PATCH, image_size // PATCH)))

    @staticmethod
    def schedules() -> dict[tuple[int, int], list[tuple[int, int]]]:
        """Every schedule, by the latent grid it ends at (what a folder of rows of their own
        shapes records, so readers need not know Infinity's templates)."""
        return dict(SCHEDULES)

    def grids_at(self, grid: tuple[int, int]) -> list[tuple[int, int]]:
        """The pyramid whose last scale is `grid` (a row of its own shape)."""
        return list(schedule_at(grid))

    def quantize(self, x: torch.Tensor) -> list[QuantizerOutput]:
        """Image -> one QuantizerOutput per scale (codes (B, h, w), their bits' vectors
        (B, d, h, w)), as Infinity's `flip_requant` without noise."""
        d = self.config.bits
        scale = 1.0 / (d**0.5)  # quantize_new's q_scale
        with torch.autocast(device_type=x.device.type, enabled=False):
            features = self.encoder(x.float()).float().unsqueeze(2)  # (B, d, 1, H, W)
            b, _, _, height, width = features.shape
            schedule = self.grids_at((height, width))
            weights = 2 ** torch.arange(d - 1, -1, -1, device=x.device, dtype=torch.long)
            total, outs = 0, []
            zero = features.new_zeros(())
            for si, (h, w) in enumerate(schedule):
                residual = features - total
                if si != len(schedule) - 1:
                    residual = F.interpolate(residual, size=(1, h, w), mode="area").contiguous()
                # BSQ.forward: (b, d, 1, h, w) -> (b, n, 1, d), normalized, signed
                z = residual.permute(0, 2, 3, 4, 1).reshape(b, -1, d).view(b, -1, 1, d)
                z = F.normalize(z, dim=-1)
                one = torch.tensor(1, dtype=z.dtype, device=z.device)
                sign = torch.where(z > 0, one, -one)
                q = z + (scale * sign - z)
                bits = (q > 0).view(b, h, w, d)
                codes = (bits.long() * weights).sum(-1)
                vectors = q.view(b, 1, h, w, d).permute(0, 4, 1, 2, 3)  # (b, d, 1, h, w)
                total = (
                    total
                    + F.interpolate(vectors, size=(1, height, width), mode="trilinear").contiguous()
                )
                outs.append(QuantizerOutput(vectors[:, :, 0], codes, zero))
        return outs

    def decode_levels(
        self, quantized: list[torch.Tensor], final: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Each scale's +-1/sqrt(d) code vectors (B, d, h, w) -> decoder output, as
        Infinity's `decode_from_indices(label_type="bit_label")` without its final clamp;
        the first k scales only (`final`: the pyramid's last grid) -> the picture after
        them."""
        b, d = quantized[0].shape[:2]
        size = tuple(final or quantized[-1].shape[-2:])
        with torch.autocast(device_type=quantized[0].device.type, enabled=False):
            total = 0
            for v in quantized:
                h, w = v.shape[-2:]
                # indices_to_codes: (b, 1, h, w, 1, d) normalized over d, then b d 1 h w
                codes = v.float().permute(0, 2, 3, 1).contiguous().view(b, 1, h, w, 1, d)
                codes = F.normalize(codes, dim=-1).view(b, 1, h, w, d).permute(0, 4, 1, 2, 3)
                total = total + F.interpolate(codes, size=(1, *size), mode="trilinear")
            return self.decoder(total.squeeze(-3))

    @property
    def last_layer(self):
        return self.decoder.last_layer
