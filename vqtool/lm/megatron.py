"""Megatron-Core's indexed dataset index (`.idx`, MMIDIDX version 1): the header, the
dtype code, sequence and document counts, int32 lengths, int64 byte pointers and int64
document indices. `export --format megatron` and `export --merge` write it."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

MEGATRON_HEADER = b"MMIDIDX\x00\x00"
MEGATRON_CODES = {"uint8": 1, "uint16": 8, "int32": 4}  # Megatron-Core's DType enum


def write_megatron_idx(path: Path, seq: np.ndarray, dtype: np.dtype) -> None:
    """A Megatron-Core `.idx` (MMIDIDX version 1) for sequences of lengths `seq` in
    `dtype`, each sequence its own document."""
    pointers = np.concatenate([[0], np.cumsum(seq.astype(np.int64))[:-1]]) * dtype.itemsize
    with open(path, "wb") as f:
        f.write(MEGATRON_HEADER)
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<B", MEGATRON_CODES[dtype.name]))
        f.write(struct.pack("<Q", len(seq)))
        f.write(struct.pack("<Q", len(seq) + 1))
        f.write(seq.astype("<i4").tobytes())
        f.write(pointers.astype("<i8").tobytes())
        f.write(np.arange(len(seq) + 1, dtype="<i8").tobytes())
