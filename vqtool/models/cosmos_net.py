"""The Cosmos encoder and decoder as vqtool runs them: an image in, FSQ inputs out (and
back), through the 2D network (DI) or the causal 3D one on a one-frame video (DV), in the
config's compute dtype with autocast off (the original runs plain bf16)."""

from __future__ import annotations

import torch
from torch import nn

from vqtool.models.cosmos import CosmosConfig, Decoder2d, Encoder2d
from vqtool.models.cosmos3d import CausalConv3d, DecoderFactorized, EncoderFactorized


class CosmosEncoder(nn.Module):
    """(B, 3, H, W) float pixels -> (B, embed_dim, H/f, W/f) FSQ inputs, in compute_dtype
    (a video tokenizer sees each image as a one-frame video)."""

    def __init__(self, c: CosmosConfig):
        super().__init__()
        self.video = c.dims == 3
        self.encoder = EncoderFactorized(c) if self.video else Encoder2d(c)
        self.quant_conv = (
            CausalConv3d(c.z_channels, c.embed_dim, kernel_size=1, padding=0)
            if self.video
            else nn.Conv2d(c.z_channels, c.embed_dim, 1)
        )
        self.to(c.dtype)

    def forward(self, x):
        with torch.autocast(x.device.type, enabled=False):  # the dtype is the weights'
            return self._run(x.to(next(self.parameters()).dtype))

    def _run(self, x):
        if self.video:
            return self.quant_conv(self.encoder(x.unsqueeze(2))).squeeze(2)
        return self.quant_conv(self.encoder(x))


class CosmosDecoder(nn.Module):
    """(B, embed_dim, h, w) FSQ code vectors -> (B, 3, h*f, w*f). The codes enter in the
    original's layout: its `indices_to_codes` leaves the code channel innermost in memory
    (a permuted view), and the convolutions then run channels-last."""

    def __init__(self, c: CosmosConfig, out_channels: int = 3):
        super().__init__()
        self.video = c.dims == 3
        self.post_quant_conv = (
            CausalConv3d(c.embed_dim, c.z_channels, kernel_size=1, padding=0)
            if self.video
            else nn.Conv2d(c.embed_dim, c.z_channels, 1)
        )
        video_decoder = DecoderFactorized(c, out_channels) if self.video else None
        self.decoder = video_decoder or Decoder2d(c, out_channels)
        self.to(c.dtype)

    def forward(self, quant):
        with torch.autocast(quant.device.type, enabled=False):
            return self._run(quant.permute(0, 2, 3, 1).contiguous())

    def _run(self, codes):
        codes = codes.to(next(self.parameters()).dtype)
        if self.video:
            out = self.decoder(self.post_quant_conv(codes.unsqueeze(1).permute(0, 4, 1, 2, 3)))
            return out[:, :, 0]
        return self.decoder(self.post_quant_conv(codes.permute(0, 3, 1, 2)))

    @property
    def last_layer(self):
        return None
