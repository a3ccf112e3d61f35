"""`vqtool export --embeddings FILE`: the tokenizer's code vectors in LM-id order, so a
trainer can initialise the new image rows of its embedding table.

The vectors are what the decoder sees for each code (`lookup_flat`: the learned
codebook entry after any output projection, or the implicit grid point of
FSQ/LFQ/BSQ). `ids[i]` is the LM id of row i. A residual quantizer with one
codebook per depth gives one table per depth, a hierarchical tokenizer one per
level (`embeddings.level1`, `embeddings.level0.depth2`, ...), all indexed by the
same `ids`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from vqtool.atomic import replacing
from vqtool.errors import CheckpointError
from vqtool.lm.documents import ResolvedLayout
from vqtool.pretrained.opener import open_tokenizer
from vqtool.runtime import pick_device
from vqtool.tokens.reader import TokenDataset


@torch.inference_mode()
def code_tables(tokenizer) -> dict[str, torch.Tensor]:
    """name -> (vocab_size, dim) float32 vectors, one table per level (and per depth when
    the depths have their own codebooks)."""
    quantizers = tokenizer.net.quantizers
    tables: dict[str, torch.Tensor] = {}
    for i, q in enumerate(quantizers):
        name = "embeddings" if len(quantizers) == 1 else f"embeddings.level{i}"
        try:
            per_code = q.code_tables()
        except ValueError as exc:
            raise CheckpointError(f"level {i}: {exc}") from None
        for part, vectors in per_code.items():
            tables[f"{name}.{part}" if part else name] = vectors.float().cpu()
    return tables


def write_embeddings(
    path: str, tokenizer: str, ds: TokenDataset, layout: ResolvedLayout, device: str = "cpu"
) -> str:
    from safetensors.torch import save_file

    opened = open_tokenizer(tokenizer, pick_device(device), None)
    other = opened.other_writer(ds.meta.get("tokenizer", {}), "the tokens were")
    if other:
        raise CheckpointError(f"{other}; give that tokenizer for --embeddings")
    tables = code_tables(opened.tokenizer)
    codes = np.arange(ds.vocab_size)
    ids = layout.lookup[codes] if layout.lookup is not None else codes + layout.offset
    tensors = {k: v.contiguous() for k, v in tables.items()}
    tensors["ids"] = torch.from_numpy(ids.astype(np.int64))
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "vqtool.format": "embeddings/1",
        "vqtool.layout_hash": layout.hash(),
        "vqtool.tokenizer_sha256": opened.sha256,
        "vqtool.tables": json.dumps(sorted(tables)),
    }
    with replacing(target) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return str(target)
