"""The quantizer zoo: one module per family behind one interface (`Quantizer`).

    from vqtool.quantizers import FSQ, FSQConfig
    fsq = FSQ(dim=4, config=FSQConfig(levels=[8, 5, 5, 5]))
    out = fsq(torch.randn(2, 4, 16, 16))   # QuantizerOutput(quantized, codes, loss, metrics)

Recipes build them from plain tables with `build_quantizer(dim, {"kind": "vq", ...})`.
"""

from __future__ import annotations

from dataclasses import is_dataclass
from typing import Any

from vqtool.errors import ConfigError
from vqtool.quantizers.base import Quantizer, QuantizerOutput, round_ste, straight_through
from vqtool.quantizers.bsq import BSQ, BSQConfig
from vqtool.quantizers.fsq import FSQ, FSQConfig
from vqtool.quantizers.gumbel import GumbelConfig, GumbelQuantizer
from vqtool.quantizers.lfq import LFQ, LFQConfig
from vqtool.quantizers.palette import PaletteConfig, PaletteQuantizer
from vqtool.quantizers.residual import ResidualQuantizer, RQConfig
from vqtool.quantizers.vq import VectorQuantizer, VQConfig
from vqtool.utils import config_from_dict

#: recipe `kind` -> (config dataclass, quantizer class)
QUANTIZERS: dict[str, tuple[type, type[Quantizer]]] = {
    "vq": (VQConfig, VectorQuantizer),
    "gumbel": (GumbelConfig, GumbelQuantizer),
    "rq": (RQConfig, ResidualQuantizer),
    "lfq": (LFQConfig, LFQ),
    "fsq": (FSQConfig, FSQ),
    "bsq": (BSQConfig, BSQ),
    "palette": (PaletteConfig, PaletteQuantizer),
}


def quantizer_config(data: dict[str, Any], prefix: str = "quantizer."):
    """A `[quantizer]` table -> its typed config; unknown kinds and keys name the key."""
    kind = data.get("kind", "vq")
    if kind not in QUANTIZERS:
        raise ConfigError(f"{prefix}kind: {kind!r} is not one of {', '.join(QUANTIZERS)}")
    return config_from_dict(QUANTIZERS[kind][0], {**data, "kind": kind}, prefix)


def build_quantizer(dim: int, config: Any) -> Quantizer:
    """Build a quantizer reading `dim` channels from a config dataclass or a plain dict."""
    if not is_dataclass(config):
        config = quantizer_config(dict(config))
    return QUANTIZERS[config.kind][1](dim, config)


__all__ = [
    "BSQ",
    "BSQConfig",
    "FSQ",
    "FSQConfig",
    "GumbelConfig",
    "GumbelQuantizer",
    "LFQ",
    "LFQConfig",
    "PaletteConfig",
    "PaletteQuantizer",
    "QUANTIZERS",
    "Quantizer",
    "QuantizerOutput",
    "RQConfig",
    "ResidualQuantizer",
    "VQConfig",
    "VectorQuantizer",
    "build_quantizer",
    "quantizer_config",
    "round_ste",
    "straight_through",
]
