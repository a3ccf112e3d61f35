"""Encoders, decoders and the `Tokenizer` that wraps them with a quantizer."""

from vqtool.models.tokenizer import CheckpointError, Tokenizer, TokenizerConfig, TokenLayout

__all__ = ["CheckpointError", "TokenLayout", "Tokenizer", "TokenizerConfig"]
