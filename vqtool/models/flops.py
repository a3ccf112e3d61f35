"""FLOPs of a tokenizer's encoder on one image, counted (not estimated): the network is
rebuilt on the meta device (no memory, no arithmetic) and run under
`torch.utils.flop_counter.FlopCounterMode`, which counts matmuls, convolutions and
attention as 2 x multiply-adds. The quantizer is left out: its nearest-code search is a
few per cent of an encoder at most (LlamaGen VQ-16 at 256 px: 67 MFLOP of 138 GFLOP)."""

from __future__ import annotations

import functools
import json

import torch

from vqtool.models.autoencoders import build_autoencoder


@functools.lru_cache(maxsize=64)
def _counted(config_json: str, height: int, width: int) -> float | None:
    from torch.utils.flop_counter import FlopCounterMode

    from vqtool.models.tokenizer import TokenizerConfig

    config = TokenizerConfig.from_dict(json.loads(config_json))
    try:
        with torch.device("meta"):
            net = build_autoencoder(config.model, config.quantizer, config.image_size, 3)
            x = torch.empty(1, 3, height, width)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            h = net.encoder(x)
            if getattr(net, "quant_conv", None) is not None:  # VAR's, outside its encoder
                net.quant_conv(h)
        return float(counter.get_total_flops())
    except Exception:  # a module the meta device cannot run: the figure is unknown
        return None


def encoder_flops(config, height: int, width: int) -> float | None:
    """FLOPs of the encoder of a tokenizer with `config` on one height x width image (None
    when it cannot be counted); cached per configuration and size."""
    return _counted(json.dumps(config.to_dict(), sort_keys=True), height, width)
