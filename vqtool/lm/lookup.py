"""Image-code -> LM-id tables a layout can name instead of an offset: a `.npy` array
(`image_lookup`), or the text tokenizer's own image tokens by name (`image_vocab`,
Chameleon's `IMGIMG` tokens). Both are checked one-to-one and complete."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vqtool.errors import ConfigError
from vqtool.lm.text import TextTokenizer


def vocab_lookup(text: TextTokenizer, prefix: str, vocab_size: int) -> np.ndarray:
    """Code -> id of the text tokenizer's token named prefix + the code's digits as the
    letters A-J + one closing character (Chameleon's vocab.py `img2bpe`)."""
    digits = str.maketrans("ABCDEFGHIJ", "0123456789")
    table = np.full(vocab_size, -1, dtype=np.int64)
    for name, tid in text.tokenizer.get_vocab(with_added_tokens=True).items():
        if name.startswith(prefix) and len(name) > len(prefix) + 1:
            code = name[len(prefix) : -1].translate(digits)
            if code.isdigit() and int(code) < vocab_size:
                table[int(code)] = tid
    missing = int((table < 0).sum())
    if missing:
        raise ConfigError(
            f"image_vocab = {prefix!r}: {text.path} names {vocab_size - missing} of the "
            f"{vocab_size} codes' tokens ({prefix}...); is it the tokenizer of an LM for this "
            "image tokenizer?"
        )
    return table


def read_lookup(path: str, vocab_size: int) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"image_lookup {path}: no such file (a .npy array of LM ids per code)")
    try:
        table = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"image_lookup {path}: not a .npy array ({exc})") from exc
    if table.ndim != 1 or table.dtype.kind not in "iu" or len(table) != vocab_size:
        raise ConfigError(
            f"image_lookup {path}: expected {vocab_size} integer LM ids (one per code), got "
            f"shape {table.shape} of {table.dtype}"
        )
    table = table.astype(np.int64)
    if table.min() < 0:
        raise ConfigError(f"image_lookup {path}: LM id {int(table.min())} is negative")
    if len(np.unique(table)) != len(table):
        raise ConfigError(f"image_lookup {path}: two codes share an LM id; the map must be 1:1")
    return table
