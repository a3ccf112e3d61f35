"""`inspect` on a prior checkpoint: what it models and its held-out figures."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vqtool.priors.checkpoint import load_prior


@dataclass
class PriorReport:
    path: str
    format: str
    prior_kind: str
    parameters: int
    vocab_size: int
    tokens_per_image: int
    depth: int
    num_classes: int
    layers: int
    width: int
    tokenizer_sha256: str
    tokens: dict
    eval: dict | None
    config: dict = field(default_factory=dict)
    text: dict | None = None  # text priors: the caption tokenizer (path, sha256, max_length)
    warnings: list[str] = field(default_factory=list)
    kind: str = "prior"

    def to_dict(self) -> dict:
        return asdict(self)


def inspect_prior(path: Path, meta: dict) -> PriorReport:
    loaded = load_prior(path)
    c = loaded.config
    return PriorReport(
        path=str(path),
        format=meta.get("vqtool.format", ""),
        prior_kind=c.kind,
        parameters=sum(p.numel() for p in loaded.model.parameters()),
        vocab_size=c.vocab_size,
        tokens_per_image=c.tokens_per_image,
        depth=c.depth,
        num_classes=c.num_classes,
        layers=c.layers,
        width=c.width,
        tokenizer_sha256=loaded.tokenizer_sha256,
        tokens=loaded.tokens_meta,
        eval=json.loads(meta["vqtool.eval"]) if meta.get("vqtool.eval") else None,
        config=c.to_dict(),
        text=json.loads(meta["vqtool.text"]) if meta.get("vqtool.text") else None,
    )
