"""Encoders, decoders and the `Tokenizer` that wraps them with a quantizer."""

from vqtool.models.tokenizer import CheckpointError, TokenizerConfig, TokenLayout, Tokenizer

__all__ = ["CheckpointError", "TokenLayout", "Tokenizer", "TokenizerConfig"]
