"""The token-shard Parquet schema (DESIGN.md, "Token shards").

Columns: `key`, `tokens` (list<uint16>, or list<uint32> above 65,536 codes;
raw codebook indices in the tokenizer's layout order), `source`,
`source_index`, and the passthrough `caption`, `label`, `width`, `height`
(null where the input has none). File metadata: `vqtool` (JSON: versions,
tokenizer config and sha256, vocabulary, layout, preprocessing, dtype) and
`huggingface` (the features, so `datasets` reads exact types).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = 1
UINT16_LIMIT = 1 << 16


def token_dtype(vocab_size: int) -> str:
    """The narrowest unsigned type of a vocabulary's codes: "uint16" up to 65,536 codes,
    else "uint32" (the one rule every token writer follows)."""
    return "uint16" if vocab_size <= UINT16_LIMIT else "uint32"


def token_schema(vocab_size: int, vqtool_meta: dict, grids: bool = False) -> pa.Schema:
    """The schema; `grids`: each row also carries its token grid (`grid_h`, `grid_w`,
    of the first level), for a resize policy that keeps each image's shape."""
    dtype = token_dtype(vocab_size)
    fields = [
        pa.field("key", pa.string(), nullable=False),
        pa.field(
            "tokens", pa.list_(pa.from_numpy_dtype(np.dtype(dtype))), nullable=False
        ),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_index", pa.int32(), nullable=False),
        pa.field("caption", pa.string()),
        pa.field("label", pa.int64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
    ]
    if grids:
        fields += [pa.field("grid_h", pa.int32(), nullable=False),
                   pa.field("grid_w", pa.int32(), nullable=False)]  # fmt: skip
    value = {"dtype": "string", "_type": "Value"}
    features = {
        "key": value,
        "tokens": {"feature": {"dtype": dtype, "_type": "Value"}, "_type": "Sequence"},
        "source": value,
        "source_index": {"dtype": "int32", "_type": "Value"},
        "caption": value,
        "label": {"dtype": "int64", "_type": "Value"},
        "width": {"dtype": "int32", "_type": "Value"},
        "height": {"dtype": "int32", "_type": "Value"},
    }
    if grids:
        features.update(grid_h=features["height"], grid_w=features["height"])
    metadata = {
        b"vqtool": json.dumps({"schema_version": SCHEMA_VERSION, **vqtool_meta}).encode(),
        b"huggingface": json.dumps({"info": {"features": features}}).encode(),
    }
    return pa.schema(fields, metadata=metadata)


def read_vqtool_metadata(schema: pa.Schema) -> dict | None:
    raw = (schema.metadata or {}).get(b"vqtool")
    return json.loads(raw) if raw else None
