"""`inspect` of a checkpoint: architecture, layout, bits per image, codebook
geometry (norms, nearest-neighbour and pairwise distances, near-duplicates) and
the usage counters training stored. Public checkpoints are read through their
family loader and reported the same way."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from vqtool.checkpoints import read_metadata
from vqtool.errors import InspectError
from vqtool.metrics.codes import top_codes
from vqtool.metrics.stats import UsageStats, usage_stats
from vqtool.models.tokenizer import Tokenizer
from vqtool.pretrained.convert import load_foreign
from vqtool.pretrained.opener import refuse_other_size
from vqtool.report.common import usage_warnings
from vqtool.report.prior import inspect_prior

#: a code whose nearest other code is closer than this share of the mean
#: pairwise distance is reported as a near-duplicate
NEAR_DUPLICATE = 0.01
#: pairwise codebook statistics use at most this many codes (a seeded sample above)
PAIRWISE_LIMIT = 16384


@dataclass
class CodebookStats:
    name: str
    codes: int
    dim: int
    norm_min: float
    norm_mean: float
    norm_max: float
    nearest_min: float  # distance from each code to its nearest other code ...
    nearest_median: float
    nearest_max: float
    pairwise_mean: float  # ... and the mean distance between two codes
    near_duplicates: int  # codes closer than NEAR_DUPLICATE x pairwise_mean to another
    duplicate_examples: list[list[int]] = field(default_factory=list)
    sampled: int | None = None  # set when the pairwise figures use a sample of the codes


@dataclass
class CheckpointReport:
    path: str
    format: str
    family: str
    architecture: str
    parameters: int
    vocab_size: int
    code_dim: int | None
    downsample: int | None
    image_size: int | None
    layout: dict
    tokens_per_image: int
    bits_per_image: float
    compression_ratio: float  # raw 8-bit RGB bits / token bits
    codebooks: list[CodebookStats] = field(default_factory=list)
    implicit_codebook: str | None = None  # LFQ/FSQ/BSQ: the fixed grid, in words
    usage: UsageStats | None = None
    usage_top: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)  # vqtool.* metadata besides the config
    warnings: list[str] = field(default_factory=list)
    kind: str = "checkpoint"

    def to_dict(self) -> dict:
        return asdict(self)


def inspect_checkpoint(
    path: Path, top: int = 10, image_size: int | None = None
) -> CheckpointReport:
    """A vqtool tokenizer or prior checkpoint, or a public tokenizer file (at
    `image_size`, default its native size)."""
    meta = read_metadata(path)
    fmt = meta.get("vqtool.format", "")
    if fmt.startswith("prior/"):
        return inspect_prior(path, meta)
    if fmt.startswith("tokenizer/"):
        tok, extras = Tokenizer.load_with_extras(path)
        refuse_other_size(tok, path, image_size)
        return tokenizer_report(tok, path, fmt, meta, extras, top)
    if fmt:
        raise InspectError(f"{path}: unknown vqtool.format {fmt!r}")
    # a public checkpoint: report it as vqtool sees it
    tok, info = load_foreign(path, image_size=image_size)
    report = tokenizer_report(tok, path, f"{info.family} (public)", info.metadata(), {}, top)
    report.warnings += info.notes
    return report


def tokenizer_report(tok, path: Path, fmt: str, meta: dict, extras: dict, top: int):
    """The facts of a loaded `Tokenizer`."""
    cfg = tok.config
    layout = tok.layout
    bits = layout.tokens_per_image * math.log2(layout.vocab_size)
    raw_bits = cfg.image_size * cfg.image_size * 3 * 8
    report = CheckpointReport(
        path=str(path),
        format=fmt,
        family=cfg.quantizer.kind,
        architecture=cfg.model.architecture,
        parameters=sum(p.numel() for p in tok.parameters()),
        vocab_size=layout.vocab_size,
        code_dim=tok.net.quantizers[0].code_dim,
        downsample=getattr(cfg.model, "downsample", None),
        image_size=cfg.image_size,
        layout=layout.to_dict(),
        tokens_per_image=layout.tokens_per_image,
        bits_per_image=bits,
        compression_ratio=raw_bits / bits,
        config=cfg.to_dict(),
        metadata={k: v for k, v in meta.items() if k not in ("vqtool.config", "vqtool.layout")},
    )
    for i, q in enumerate(tok.net.quantizers):
        prefix = f"level {i} " if len(tok.net.quantizers) > 1 else ""
        books = [(n, v.detach()) for n, v in q.code_tables(learned=True).items()]
        if not books:
            report.implicit_codebook = _implicit(q)
        for name, vectors in books:
            report.codebooks.append(codebook_stats(prefix + name, vectors))
    counts = extras.get("usage.counts")
    if counts is not None and counts.numel() == layout.vocab_size:
        report.usage = usage_stats(counts)
        report.usage_top = top_codes(counts, top)
        report.warnings += usage_warnings(report.usage, "training")
    for book in report.codebooks:
        if book.near_duplicates:
            report.warnings.append(
                f"{book.name}: {book.near_duplicates} near-duplicate codes "
                f"(nearest other code < {NEAR_DUPLICATE:.0%} of the mean pairwise distance)"
            )
    return report


def _implicit(q) -> str:
    if q.kind == "fsq":
        levels = [int(v) for v in q.levels.tolist()]
        return f"FSQ grid, levels {levels} ({math.prod(levels):,} codes)"
    return f"{q.kind.upper()} sign grid, {q.code_dim} bits ({q.vocab_size:,} codes)"


def codebook_stats(name: str, vectors: torch.Tensor, seed: int = 0) -> CodebookStats:
    """Norms, nearest-neighbour and mean pairwise distances, near-duplicates.
    Chunked: never more than ~2^24 distances at once."""
    v = vectors.detach().float().cpu()
    k, dim = v.shape
    norms = v.norm(dim=1)
    sampled = None
    if k > PAIRWISE_LIMIT:
        g = torch.Generator().manual_seed(seed)
        index = torch.randperm(k, generator=g)[:PAIRWISE_LIMIT].sort().values
        v, sampled = v[index], PAIRWISE_LIMIT
    else:
        index = torch.arange(k)
    n = len(v)
    nearest = torch.empty(n)
    nearest_idx = torch.empty(n, dtype=torch.long)
    total = 0.0
    rows = max(1, (1 << 24) // n)
    for start in range(0, n, rows):
        d = torch.cdist(v[start : start + rows].double(), v.double())
        total += float(d.sum())
        d[torch.arange(len(d)), torch.arange(start, start + len(d))] = float("inf")
        m, j = d.min(dim=1)
        nearest[start : start + len(d)] = m.float()
        nearest_idx[start : start + len(d)] = j
    mean_pair = total / max(n * (n - 1), 1)
    dup = nearest < NEAR_DUPLICATE * mean_pair if n > 1 else torch.zeros(n, dtype=torch.bool)
    pairs = sorted(
        {tuple(sorted((int(index[i]), int(index[nearest_idx[i]])))) for i in dup.nonzero()[:, 0]}
    )
    return CodebookStats(
        name=name,
        codes=k,
        dim=dim,
        norm_min=float(norms.min()),
        norm_mean=float(norms.mean()),
        norm_max=float(norms.max()),
        nearest_min=float(nearest.min()) if n > 1 else 0.0,
        nearest_median=float(nearest.median()) if n > 1 else 0.0,
        nearest_max=float(nearest.max()) if n > 1 else 0.0,
        pairwise_mean=mean_pair,
        near_duplicates=int(dup.sum()),
        duplicate_examples=[list(p) for p in pairs[:5]],
        sampled=sampled,
    )
