"""Encoders, decoders and the `Tokenizer` that wraps them with a quantizer."""

from vqtool.errors import CheckpointError
from vqtool.models.tokenizer import Tokenizer, TokenizerConfig, TokenLayout

__all__ = ["CheckpointError", "TokenLayout", "Tokenizer", "TokenizerConfig"]
