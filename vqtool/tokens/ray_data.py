"""A building block for Ray Data pipelines: tokenize rows of image bytes with a vqtool
tokenizer, preprocessed exactly as `vqtool encode` does.

    ds = ray.data.read_parquet("s3://bucket/images/")
    ds = ds.map_batches(VqtoolTokenize, fn_constructor_kwargs={"tokenizer": "tok.safetensors"},
                        num_gpus=1, concurrency=8, batch_size=256)
    ds.write_parquet("s3://bucket/tokens/")

Each output row has `key`, `tokens` (the codes in the tokenizer's layout order, as
`list<uint16>`, or `list<uint32>` above 65,536 codes, as token shards store them),
`error` (None, or "KIND: reason" for an image that could not be decoded, whose
`tokens` are empty: recorded, never dropped, and the block still writes) and every
other input column; blocks come back as Arrow tables. Exactly-once
here is Ray Data's and its writer's business (a retried block is written again),
not vqtool's done markers.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from vqtool.data.decoding import MAX_PIXELS, family_rule
from vqtool.data.images import encode_pixels
from vqtool.errors import DecodeError
from vqtool.pretrained.opener import open_tokenizer
from vqtool.runtime import autocast_dtype, pick_device
from vqtool.tokens.schema import token_dtype


class VqtoolTokenize:
    def __init__(
        self,
        tokenizer: str,
        device: str = "auto",
        precision: str = "auto",
        image_column: str = "image",
        image_size: int | None = None,
        max_pixels: int = MAX_PIXELS,
        orientation: str | None = None,
        high_bit_depth: str | None = None,
    ):
        self.device = pick_device(device)
        self.tok = open_tokenizer(tokenizer, self.device, image_size).tokenizer
        self.amp = autocast_dtype(precision, self.device)
        self.image_column, self.max_pixels = image_column, max_pixels
        self.dtype = np.dtype(token_dtype(self.tok.vocab_size))
        # as `vqtool encode --orientation/--high-bit-depth`; None: the family's own rule
        self.rule = family_rule(self.tok.config.resize, orientation, high_bit_depth)

    def __call__(self, batch: dict) -> dict:
        images = batch[self.image_column]
        size, resize = self.tok.config.image_size, self.tok.config.resize
        pixels, good, errors = [], [], [None] * len(images)
        for i, data in enumerate(images):
            if isinstance(data, dict):  # an HF `Image` feature: {"bytes": ..., "path": ...}
                data = data.get("bytes")
            try:
                pixels.append(
                    encode_pixels(bytes(data or b""), size, resize, self.max_pixels, self.rule)[0]
                )
                good.append(i)
            except DecodeError as exc:
                errors[i] = f"{exc.kind}: {exc}"
        tokens = [np.empty(0, dtype=self.dtype)] * len(images)
        if pixels:
            x = torch.stack(pixels).to(self.device)
            amp = self.amp
            with torch.autocast(self.device.type, dtype=amp or torch.float32,
                                enabled=amp is not None):  # fmt: skip
                codes = self.tok.encode(x).cpu().numpy().astype(self.dtype)
            for i, row in zip(good, codes):
                tokens[i] = row
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
        values = np.concatenate(tokens) if tokens else np.empty(0, self.dtype)
        columns = {k: _column(v) for k, v in batch.items() if k != self.image_column}
        columns["tokens"] = pa.ListArray.from_arrays(offsets, pa.array(values))
        columns["error"] = pa.array(errors, pa.string())
        return pa.table(columns)


def _column(values) -> pa.Array:
    """An input column as arrow (numpy columns of objects as Python values)."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        return pa.array(values)
    return pa.array(list(values))
