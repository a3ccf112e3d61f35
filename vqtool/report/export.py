"""`inspect` of an LM export folder: documents, tokens, the id ranges the layout uses,
the share of image, text, special, class and padding ids (counted by streaming every
finished file), and how full the rows are when packed or padded."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vqtool.lm.exported import ExportSet

CHUNK = 1 << 22  # ids per counting step


@dataclass
class ExportReport:
    path: str
    format: str
    layout: str
    layout_source: str
    layout_hash: str
    dtype: str
    files: int
    documents: int
    tokens: int  # document tokens (padding excluded)
    stream_tokens: int  # every id in the files (padding included)
    rows: int
    pack: int | None
    pad_to: int | None
    id_ranges: dict
    shares: dict  # kind -> share of stream tokens
    row_fill: float | None  # packed or padded: document tokens / row capacity
    split_documents: int | None  # packed: documents cut across two rows
    mean_document: float
    text_tokenizer: str | None
    token_source: str | None
    unfinished: list[str] = field(default_factory=list)
    bytes_on_disk: int = 0
    kind: str = "LM export"

    def to_dict(self) -> dict:
        return asdict(self)


def inspect_export(path: str, text_tokenizer: str | None = None) -> ExportReport:
    es = ExportSet.open(path, text_tokenizer)
    m, layout = es.manifest, es.layout
    special = np.asarray(sorted({i for v in layout.specials.values() for i in v}), np.int64)
    pad = set(layout.specials.get("pad", [])) if m.get("pad_to") else set()
    counts = dict.fromkeys(("image", "text", "special", "class", "resolution", "padding"), 0)
    lo, hi = layout.image_range
    text_end = layout.text_range[1] if layout.text_range else 0
    documents = tokens = stream_tokens = rows = split = 0
    disk = 0
    for f in es.files:
        info = _marker(es.folder, f.name)
        documents += info["documents"]
        tokens += info["tokens"]
        rows += info["rows"]
        disk += sum(info["files"].values())
        stream = f.stream()
        stream_tokens += len(stream)
        index = f.index()
        starts = index.column("start").to_numpy()
        lengths = index.column("length").to_numpy()
        for a in range(0, len(stream), CHUNK):
            ids = np.asarray(stream[a : a + CHUNK]).astype(np.int64)
            is_pad = np.isin(ids, list(pad)) if pad else np.zeros(len(ids), bool)
            if pad:  # padding ids past each document's end only
                is_pad &= _past_documents(starts, lengths, a, len(ids))
            is_special = np.isin(ids, special) & ~is_pad
            is_image = (ids >= lo) & (ids < hi) & ~is_special & ~is_pad
            is_class = np.zeros(len(ids), bool)
            if layout.class_base is not None:
                top = layout.class_base + layout.spec.num_classes + 1
                is_class = (ids >= layout.class_base) & (ids < top) & ~is_special & ~is_image
            rest = ~(is_pad | is_special | is_image | is_class)
            counts["padding"] += int(is_pad.sum())
            counts["special"] += int(is_special.sum())
            counts["image"] += int(is_image.sum())
            counts["class"] += int(is_class.sum())
            counts["text"] += int((rest & (ids < text_end)).sum())
            counts["resolution"] += int((rest & (ids >= text_end)).sum())
        if m.get("pack"):
            ends = starts + lengths - 1
            split += int(np.sum(starts // m["pack"] != ends // m["pack"]))
    if layout.spec.resolution == "text":  # the resolution digits are text ids
        counts["resolution"] = documents * len(layout.resolution_ids)
        counts["text"] -= counts["resolution"]
    shares = {k: v / max(stream_tokens, 1) for k, v in counts.items() if v}
    capacity = rows * (m.get("pack") or m.get("pad_to") or 0)
    return ExportReport(
        path=str(path), format=m["format"], layout=layout.spec.name,
        layout_source=layout.spec.source, layout_hash=m["layout_hash"], dtype=m["dtype"],
        files=len(es.files), documents=documents, tokens=tokens, stream_tokens=stream_tokens,
        rows=rows, pack=m.get("pack"), pad_to=m.get("pad_to"), id_ranges=m["id_ranges"],
        shares=shares, row_fill=tokens / capacity if capacity else None,
        split_documents=split if m.get("pack") else None,
        mean_document=tokens / max(documents, 1),
        text_tokenizer=(m.get("text_tokenizer") or {}).get("path"),
        token_source=m["tokens"].get("tokenizer_path"), unfinished=es.unfinished,
        bytes_on_disk=disk,
    )  # fmt: skip


def _marker(folder: Path, name: str) -> dict:
    return json.loads((folder / f"{name}.done.json").read_text())


def _past_documents(doc_start, length, start: int, n: int) -> np.ndarray:
    """For padded files: True where stream position start+i lies after its document."""
    pos = np.arange(start, start + n)
    row = np.searchsorted(doc_start, pos, side="right") - 1
    return pos >= doc_start[row] + length[row]
