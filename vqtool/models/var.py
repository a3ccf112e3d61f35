"""VAR's multi-scale residual VQ-VAE (Tian et al. 2024, "Visual Autoregressive Modeling"):
one image becomes a pyramid of token maps, 1x1, 2x2, ... up to the full grid, all from one
shared codebook. Scale k quantizes what the coarser scales left: the residual feature map
is area-downsampled to the scale's size, each position takes its nearest code, the codes'
vectors are upsampled (bicubic) back to the full grid, passed through a shared
quant-residual conv `phi` (x * (1 - r) + conv(x) * r, one of a few convs chosen by the
scale's position in the pyramid) and subtracted. Decoding sums the same upsampled,
phi-mixed maps and runs the decoder.

The encoder and decoder are the taming/latent-diffusion VQGAN of VAR's `basic_vae.py`
(vqtool's `conv` model with attention at the lowest stage and in the middle, its q, k, v in
one `qkv` conv), with 3x3 quant convs around the quantizer. The arithmetic follows VAR's
`models/quant.py` step by step (the distance `sum z^2 + sum e^2 - 2 z e^T` by addmm, the
memory layouts the interpolations and convs see), so tokens and decodes are VAR's own.

The token row is the pyramid flattened coarse scale first, raster order within a scale:
`TokenLayout(grids=[(1, 1), (2, 2), ..., (16, 16)])`, 680 tokens at 256 px.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vqtool.errors import ConfigError
from vqtool.models.conv import ConvConfig, ConvDecoder, ConvEncoder
from vqtool.quantizers import Quantizer, QuantizerOutput

#: VAR's scale schedules (patch_nums) by image size: VAR-d16..d30 at 256 px, VAR-d36 at 512
PATCH_NUMS = {
    256: [1, 2, 3, 4, 5, 6, 8, 10, 13, 16],
    512: [1, 2, 3, 4, 6, 9, 13, 18, 24, 32],
}


@dataclass
class VarConfig:
    architecture: Literal["var"] = "var"
    channels: int = 160
    channel_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4])
    num_res_blocks: int = 2
    z_channels: int = 32
    patch_nums: list[int] = field(default_factory=lambda: list(PATCH_NUMS[256]))
    quant_resi: float = 0.5  # phi(x) = x * (1 - r) + conv(x) * r
    phi_convs: int = 4  # shared quant-residual convs (VAR's share_quant_resi)
    norm_groups: int = 32

    def __post_init__(self):
        if sorted(self.patch_nums) != list(self.patch_nums) or len(self.patch_nums) < 2:
            raise ConfigError(
                f"model.patch_nums {self.patch_nums}: at least two scales, smallest first"
            )

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def code_channels(self) -> int:
        return self.z_channels

    def conv(self) -> ConvConfig:
        """The encoder/decoder: VAR's basic_vae (taming's VQGAN, fused qkv attention)."""
        last = len(self.channel_mult) - 1
        return ConvConfig(
            channels=self.channels, channel_mult=list(self.channel_mult),
            num_res_blocks=self.num_res_blocks, decoder_res_blocks=self.num_res_blocks + 1,
            attention=True, attention_levels=[last], z_channels=self.z_channels,
            norm_groups=self.norm_groups, swish="silu", attention_impl="fused",
        )  # fmt: skip


class Phi(nn.Conv2d):
    """VAR's quant-residual conv: x * (1 - r) + conv(x) * r."""

    def __init__(self, channels: int, ratio: float):
        super().__init__(channels, channels, 3, padding=1)
        self.ratio = abs(ratio)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.mul(1 - self.ratio) + super().forward(h).mul_(self.ratio)


class MultiScale(nn.Module):
    """Encoder, quant conv, the pyramid quantizer (one codebook: `quantizer`, a plain VQ
    whose `embed` holds the codes; `phi` the quant-residual convs), post-quant conv,
    decoder. `quantizers` lists the shared quantizer once per scale, as the token layout
    has one level per scale."""

    pyramid = True  # rows are scales coarse first (decode --scales draws each)

    def __init__(self, c: VarConfig, quantizer: Quantizer, out_channels: int = 3):
        super().__init__()
        conv = c.conv()
        self.config = c
        self.encoder, self.decoder = ConvEncoder(conv), ConvDecoder(conv, out_channels)
        z = c.z_channels
        self.quant_conv = nn.Conv2d(z, z, 3, padding=1)
        self.post_quant_conv = nn.Conv2d(z, z, 3, padding=1)
        self.quantizer = quantizer
        self.phi = nn.ModuleList([Phi(z, c.quant_resi) for _ in range(c.phi_convs)])
        k, n = c.phi_convs, len(c.patch_nums)
        # VAR's PhiPartiallyShared: the conv whose tick is nearest the scale's position
        ticks = np.linspace(1 / 3 / k, 1 - 1 / 3 / k, k) if k == 4 else np.linspace(
            1 / 2 / k, 1 - 1 / 2 / k, k)  # fmt: skip
        self.phi_of = [int(np.argmin(np.abs(ticks - si / (n - 1)))) for si in range(n)]
        self.factor = c.downsample

    @property
    def quantizers(self) -> list[Quantizer]:
        return [self.quantizer] * len(self.config.patch_nums)

    def grids(self, image_size: int) -> list[tuple[int, int]]:
        if image_size // self.factor != self.config.patch_nums[-1]:
            raise ConfigError(
                f"image size {image_size}: this pyramid ends at {self.config.patch_nums[-1]}x"
                f"{self.config.patch_nums[-1]} codes, i.e. "
                f"{self.config.patch_nums[-1] * self.factor} px"
            )
        return [(p, p) for p in self.config.patch_nums]

    def _nearest(self, z: torch.Tensor) -> torch.Tensor:
        """VAR's nearest code: argmin of sum(z^2) + sum(e^2) - 2 z e^T (addmm)."""
        e = self.quantizer.embed
        d = torch.sum(z.square(), dim=1, keepdim=True) + torch.sum(e.square(), dim=1)
        d.addmm_(z, e.T, alpha=-2, beta=1)
        return torch.argmin(d, dim=1)

    def quantize(self, x: torch.Tensor) -> list[QuantizerOutput]:
        """Image -> one QuantizerOutput per scale (codes (B, p, p), the codes' vectors),
        as VAR's `img_to_idxBl` / `f_to_idxBl_or_fhat`."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            f = self.quant_conv(self.encoder(x.float()))
            b, c, h, w = f.shape
            rest, outs = f.detach().clone(), []
            last = len(self.config.patch_nums) - 1
            zero = f.new_zeros(())
            for si, p in enumerate(self.config.patch_nums):
                small = F.interpolate(rest, size=(p, p), mode="area") if si != last else rest
                idx = self._nearest(small.permute(0, 2, 3, 1).reshape(-1, c))
                codes = idx.view(b, p, p)
                vectors = F.embedding(codes, self.quantizer.embed).permute(0, 3, 1, 2)
                up = (
                    F.interpolate(vectors, size=(h, w), mode="bicubic").contiguous()
                    if si != last else vectors.contiguous()
                )  # fmt: skip
                rest.sub_(self.phi[self.phi_of[si]](up))
                outs.append(QuantizerOutput(vectors, codes, zero))
        return outs

    def train_forward(self, x: torch.Tensor):
        """Training: (decoder output, one QuantizerOutput per scale), as VAR's
        `VectorQuantizer2.forward` in training: each scale's nearest codes on the residual
        (no gradient), f_hat the sum of the phi-mixed upsampled code vectors (gradients to
        the codebook and the phi convs), the loss the mean over scales of
        beta * |sg(f_hat) - f|^2 + |f_hat - sg(f)|^2, and the decoder fed
        sg(f_hat) - sg(f) + f (straight-through to the encoder). Unlike VAR, codes unused
        for the quantizer's `restart_after` steps restart from this step's residuals."""
        f = self.quant_conv(self.encoder(x)).float()
        b, c, h, w = f.shape
        plain = f.detach()
        rest, f_hat = plain.clone(), torch.zeros_like(plain)
        last, beta = len(self.config.patch_nums) - 1, self.quantizer.config.beta
        loss, outs, seen = f.new_zeros(()), [], []
        for si, p in enumerate(self.config.patch_nums):
            small = F.interpolate(rest, size=(p, p), mode="area") if si != last else rest
            with torch.no_grad():
                flat = small.permute(0, 2, 3, 1).reshape(-1, c)
                codes = self._nearest(flat).view(b, p, p)
                seen.append((flat, codes.reshape(-1)))
            vectors = F.embedding(codes, self.quantizer.embed).permute(0, 3, 1, 2)
            up = F.interpolate(vectors, size=(h, w), mode="bicubic") if si != last else vectors
            mixed = self.phi[self.phi_of[si]](up.contiguous())
            f_hat = f_hat + mixed
            rest = rest - mixed.detach()
            loss = loss + beta * F.mse_loss(f_hat.detach(), f) + F.mse_loss(f_hat, plain)
            used = codes.unique().numel() / self.quantizer.vocab_size
            outs.append(QuantizerOutput(vectors, codes, f.new_zeros(()), {"used": used}))
        outs[0].loss = loss / len(self.config.patch_nums)
        restart = getattr(self.quantizer, "restart_unused", None)
        if restart is not None:  # codes unused for `restart_after` steps: batch residuals
            restart(torch.cat([z for z, _ in seen]), torch.cat([k for _, k in seen]))
        output = self.decoder(self.post_quant_conv((f_hat.detach() - plain) + f))
        return output, outs

    def decode_levels(
        self, quantized: list[torch.Tensor], final: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Each scale's code vectors (B, C, p, p) -> decoder output, as VAR's
        `idxBl_to_img(same_shape=True, last_one=True)` without its final clamp; the first
        k scales only -> the picture after them (VAR's `embed_to_img(last_one=False)`);
        `final`: the pyramid's last grid, which VAR's fixed schedule already knows."""
        b, c = quantized[0].shape[:2]
        size = self.config.patch_nums[-1]
        last = len(self.config.patch_nums) - 1  # fewer scales: the picture after them
        with torch.autocast(device_type=quantized[0].device.type, enabled=False):
            f_hat = quantized[0].new_zeros(b, c, size, size, dtype=torch.float32)
            for si, h in enumerate(quantized):
                # VAR's embedding(idx_Bl).transpose(1, 2).view(B, C, p, p), strides included
                # (they choose the interpolation's output layout and so the phi conv's path)
                p = h.shape[-1]
                h = h.float().permute(0, 2, 3, 1).reshape(b, p * p, c).transpose(1, 2)
                h = h.view(b, c, p, p)
                if si < last:
                    h = F.interpolate(h, size=(size, size), mode="bicubic")
                f_hat.add_(self.phi[self.phi_of[si]](h))
            return self.decoder(self.post_quant_conv(f_hat))

    @property
    def last_layer(self):
        return self.decoder.last_layer
