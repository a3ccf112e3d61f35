"""Public pretrained tokenizers: safe loading, family detection, conversion."""
