"""What the tests build: synthetic images and webdataset shards, small tokenizers, text
tokenizers and token files."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import torch
from PIL import Image


def image_bytes(seed: int, size=(40, 30), fmt="PNG", mode="RGB") -> bytes:
    """A small synthetic photo-like image: smooth gradients plus a coloured square."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.uniform(0, 255, 3)
    img = np.stack([(base[c] + 3 * xx + 2 * yy * (c + 1)) % 256 for c in range(3)], -1)
    x0, y0 = rng.integers(0, max(1, w // 2)), rng.integers(0, max(1, h // 2))
    img[y0 : y0 + h // 3, x0 : x0 + w // 3] = rng.uniform(0, 255, 3)
    pil = Image.fromarray(img.astype(np.uint8), "RGB")
    if mode != "RGB":
        pil = pil.convert(mode)
    buf = io.BytesIO()
    pil.save(buf, format=fmt)
    return buf.getvalue()


def write_shard(path, samples: list[tuple[str, dict[str, bytes]]]) -> str:
    """A webdataset tar: each sample is (key, {ext: bytes})."""
    with tarfile.open(path, "w") as tar:
        for key, parts in samples:
            for ext, data in parts.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(path)


def make_tokenizer(path, codebook_size=64, seed=0, quantizer=None, image_size=16) -> str:
    """A tiny conv VQ tokenizer (f2, 16x16 -> 8x8 tokens), saved to `path`."""
    from vqtool.models import Tokenizer, TokenizerConfig

    torch.manual_seed(seed)
    tok = Tokenizer(
        TokenizerConfig.from_dict(
            {
                "model": {
                    "architecture": "conv",
                    "channels": 8,
                    "channel_mult": [1, 2],
                    "z_channels": 8,
                },
                "quantizer": quantizer
                or {"kind": "vq", "codebook_size": codebook_size, "kmeans_init": False},
                "image_size": image_size,
            }
        )
    )
    tok.save(path)
    return str(path)


def write_text_tokenizer(path, words, added=(), unk=None) -> str:
    """A small word-level Hugging Face tokenizer.json: `words` get ids 0.. in order (`unk`,
    default the first, is the unknown token), then each of `added` one id as a special
    token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk or words[0]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok.add_special_tokens(list(added))
    tok.save(str(path))
    return str(path)


def write_tokens(
    path, tokens, vocab_size, grids, depth=1, name="part-000000", labels=None, captions=None
):
    """A token Parquet file (the encode schema) holding exactly `tokens` (N, T)."""
    from pathlib import Path

    from vqtool.tokens.schema import token_dtype, token_schema
    from vqtool.tokens.writer import TaskWriter

    tokens = np.asarray(tokens)
    n = len(tokens)
    t = sum(h * w for h, w in grids) * depth
    assert tokens.shape == (n, t)
    meta = {
        "vqtool_version": "test",
        "tokenizer": {"file": "none", "sha256": "0" * 64, "config": {}},
        "vocab_size": vocab_size,
        "layout": {
            "levels": len(grids),
            "grids": [list(g) for g in grids],
            "depth": depth,
            "vocab_size": vocab_size,
            "tokens_per_image": t,
        },
        "preprocessing": {"image_size": 16},
        "dtype": token_dtype(vocab_size),
    }
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    writer = TaskWriter(out, name, token_schema(vocab_size, meta))
    np_dtype = np.uint16 if vocab_size <= 65536 else np.uint32
    writer.add(
        tokens.astype(np_dtype),
        {
            "key": [f"{name}-{i}" for i in range(n)],
            "source": ["test"] * n,
            "source_index": list(range(n)),
            "caption": list(captions) if captions is not None else [None] * n,
            "label": list(labels) if labels is not None else [None] * n,
            "width": [16] * n,
            "height": [16] * n,
        },
    )
    writer.commit([], {"config_hash": "test", "shards": []})
    return out
