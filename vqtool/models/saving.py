"""Decoder output to uint8 pixels the way each family's original saves its images
(`TokenizerConfig.to_uint8`). The decoders give bit-identical floats; the originals then
round or truncate, clamp before or after scaling, in float32, and a saved picture differs
by 1 in a fifth to a half of its values when that step is not theirs. Every mode works in
float32 in the original's order of operations."""

from __future__ import annotations

from collections.abc import Callable

import torch

ToUint8 = Callable[[torch.Tensor], torch.Tensor]


def _truncate(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.uint8)  # toward zero, as numpy's astype(uint8) on values in [0, 255]


def round_unit(unit: torch.Tensor) -> torch.Tensor:
    """Mode "round", on pixels already in [0, 1] (`Tokenizer.to_unit`: clamp((x + 1) / 2,
    0, 1) for a [-1, 1] network): * 255 + 0.5, truncated. vqtool's own tokenizers, and
    NVIDIA Cosmos' tensor2numpy, which computes the same."""
    return _truncate(unit * 255 + 0.5)


#: output (float, the network's range) -> uint8, by mode ("round": `round_unit`)
TO_UINT8: dict[str, ToUint8] = {
    # taming's scripts/make_samples.py save_image (its reconstructions) and Emu3.5's
    # decode_image: ((x + 1) * 127.5) clipped to [0, 255], truncated
    "taming": lambda x: _truncate(((x + 1.0) * 127.5).clamp(0, 255)),
    # Chameleon's _pil_from_chw_tensor and Open-MAGVIT2's reconstruct.py custom_to_pil:
    # (clamp(x, -1, 1) + 1) / 2, then 255 * x truncated
    "chameleon": lambda x: _truncate(((x.clamp(-1, 1) + 1) / 2) * 255),
    # Janus' generation_inference.py: clip((x + 1) / 2 * 255, 0, 255) into a uint8 array;
    # Emu3's image processor postprocess and Show-o's inference scripts compute the same
    "janus": lambda x: _truncate(((x + 1) / 2 * 255).clamp(0, 255)),
    # LlamaGen's reconstruction scripts: clamp(127.5 * x + 128, 0, 255) to uint8
    "llamagen": lambda x: _truncate((127.5 * x + 128.0).clamp(0, 255)),
    # Lumina-mGPT 2.0's show_images: ((x + 1) * 127.5).round() (half to even), clamped
    "lumina": lambda x: ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8),
    # open-muse's MaskGIT pipeline (output in [0, 1]): 2x - 1, clipped to [-1, 1], back to
    # [0, 1], 255 * x truncated
    "muse": lambda x: _truncate((((2.0 * x - 1.0).clamp(-1, 1) + 1.0) / 2.0) * 255),
}


def saved_pixels(tok, output: torch.Tensor) -> torch.Tensor:
    """A `Tokenizer`'s raw decoder output -> uint8, converted as its original saves its
    images (`tok.config.to_uint8`)."""
    if tok.config.to_uint8 == "round":
        return round_unit(tok.to_unit(output))
    return TO_UINT8[tok.config.to_uint8](output.float())
