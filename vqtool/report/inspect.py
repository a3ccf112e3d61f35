"""The facts behind `vqtool inspect PATH`, as typed reports (rendering is in
`report.terminal`, JSON is `report.to_dict()`).

PATH is recognised by what it is: a `.safetensors` checkpoint (tokenizer or
prior), a token dataset (an encode folder or token Parquet files) or image
shards (anything `encode` reads). Token datasets are streamed batch by batch,
so memory stays bounded by the vocabulary, not by the dataset.
"""

from __future__ import annotations

import json
import math
from array import array
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from vqtool.assets import resolve
from vqtool.data.images import MAX_PIXELS, DecodeError, decode_with_size
from vqtool.data.sources import expand_sources, iter_samples
from vqtool.metrics.usage import UsageStats, usage_stats
from vqtool.tokens.reader import TokenDataError, TokenDataset
from vqtool.tokens.schema import read_vqtool_metadata

#: a code whose nearest other code is closer than this share of the mean
#: pairwise distance is reported as a near-duplicate
NEAR_DUPLICATE = 0.01
#: per-position usage needs a (tokens per image x vocabulary) counter table
POSITION_COUNTERS_LIMIT = 1 << 25
#: pairwise codebook statistics use at most this many codes (a seeded sample above)
PAIRWISE_LIMIT = 16384
#: thresholds for warnings
LOW_USAGE = 0.5
MANY_DEAD = 0.1


class InspectError(ValueError):
    """A PATH that `inspect` cannot read; the message says what was expected."""


# ----------------------------------------------------------------------------- reports


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


@dataclass
class GroupUsage:
    name: str  # "level 0 (8x8)", "depth 2", ...
    stats: UsageStats


@dataclass
class PositionMap:
    level: int
    grid: list[int]  # (h, w)
    entropy_bits: list[list[float]]  # per position, averaged over depth


@dataclass
class TokenDatasetReport:
    path: str
    files: int
    rows: int
    tokens_per_image: int
    tokens: int
    bytes_on_disk: int
    bytes_per_token: float
    done_tasks: int
    unfinished_tasks: list[str]
    missing_tasks: list[str]
    errors: int
    error_examples: list[dict]
    usage: UsageStats
    top_codes: list[dict]  # code, count, share
    frequency_curve: list[float]  # share of tokens per rank bucket, most frequent first
    top_share: dict  # share of tokens held by the most frequent 1%, 10%, 50% of codes
    levels: list[GroupUsage]
    depths: list[GroupUsage]
    positions: list[PositionMap]
    positions_note: str | None
    metadata: dict
    warnings: list[str] = field(default_factory=list)
    kind: str = "tokens"

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("frequency_curve")
        out["frequency_curve"] = [round(v, 8) for v in self.frequency_curve]
        return out


@dataclass
class ImageShardsReport:
    path: str
    shards: int
    samples: int
    decodable: int
    undecodable: int
    undecodable_examples: list[dict]
    formats: dict[str, int]
    width: dict  # min, mean, max
    height: dict
    short_side_histogram: dict[str, int]
    with_caption: int
    with_label: int
    warnings: list[str] = field(default_factory=list)
    kind: str = "images"

    def to_dict(self) -> dict:
        return asdict(self)


Report = CheckpointReport | TokenDatasetReport | ImageShardsReport


# ----------------------------------------------------------------------------- dispatch


def inspect_path(path: str, top: int = 10, curve_points: int = 60) -> Report:
    """Report on a checkpoint, a token dataset or image shards, by what PATH is."""
    resolved = resolve(path)
    p = Path(resolved)
    if p.is_file() and p.suffix == ".safetensors":
        return inspect_checkpoint(p, top)
    if p.is_file() and p.suffix == ".parquet" and _is_token_file(p):
        return inspect_tokens(TokenDataset.open(p), str(p), top, curve_points)
    if p.is_dir() and ((p / "encode.json").exists() or _has_token_files(p)):
        return inspect_tokens(TokenDataset.open(p), str(p), top, curve_points)
    if p.is_file() and p.suffix in (".pt", ".pth", ".ckpt", ".bin"):
        raise InspectError(
            f"{path}: a foreign checkpoint; vqtool checkpoints are .safetensors files "
            "(public tokenizers are converted with `vqtool convert`)"
        )
    return inspect_images([resolved], path)


def _is_token_file(path: Path) -> bool:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception:
        return False
    return read_vqtool_metadata(schema) is not None and "tokens" in schema.names


def _has_token_files(folder: Path) -> bool:
    return any(_is_token_file(f) for f in sorted(folder.glob("*.parquet"))[:1])


# ----------------------------------------------------------------------------- checkpoints


def inspect_checkpoint(path: Path, top: int = 10) -> CheckpointReport:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise InspectError(f"{path}: not a safetensors file ({exc})") from exc
    fmt = meta.get("vqtool.format", "")
    if fmt.startswith("prior/"):
        from vqtool.priors.checkpoint import inspect_prior

        return inspect_prior(path, meta)
    if not fmt.startswith("tokenizer/"):
        raise InspectError(
            f"{path}: not a vqtool checkpoint (vqtool.format is {fmt or 'missing'}); "
            "convert public tokenizers with `vqtool convert`"
        )
    from vqtool.models.tokenizer import Tokenizer

    tok, extras = Tokenizer.load_with_extras(path)
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
        books = learned_codebooks(q)
        if not books:
            report.implicit_codebook = _implicit(q)
        for name, vectors in books:
            report.codebooks.append(codebook_stats(prefix + name, vectors))
    counts = extras.get("usage.counts")
    if counts is not None and counts.numel() == layout.vocab_size:
        report.usage = usage_stats(counts)
        report.usage_top = _top_codes(counts, top)
        report.warnings += usage_warnings(report.usage, "training")
    for book in report.codebooks:
        if book.near_duplicates:
            report.warnings.append(
                f"{book.name}: {book.near_duplicates} near-duplicate codes "
                f"(nearest other code < {NEAR_DUPLICATE:.0%} of the mean pairwise distance)"
            )
    return report


def learned_codebooks(q) -> list[tuple[str, torch.Tensor]]:
    """The codeword tables of a quantizer, as used for lookup; [] for implicit grids."""
    if hasattr(q, "levels") and isinstance(q.levels, torch.nn.ModuleList):  # residual
        if len(q.levels) == 1:
            return [("codebook (shared by all depths)", q.levels[0].codebook().detach())]
        return [(f"codebook depth {d}", vq.codebook().detach()) for d, vq in enumerate(q.levels)]
    if hasattr(q, "codebook") and callable(q.codebook):
        return [("codebook", q.codebook().detach())]
    if isinstance(getattr(q, "embed", None), torch.Tensor):
        return [("codebook", q.embed.detach())]
    if isinstance(getattr(q, "palette", None), torch.Tensor):
        return [("palette", q.palette.detach())]
    return []


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


def usage_warnings(stats: UsageStats, what: str) -> list[str]:
    out = []
    if stats.used_share < LOW_USAGE:
        out.append(f"only {stats.used_share:.1%} of the codes are used ({what})")
    if stats.vocab_size and stats.dead / stats.vocab_size > MANY_DEAD:
        out.append(f"{stats.dead:,} dead codes ({stats.dead / stats.vocab_size:.1%}, {what})")
    return out


def _top_codes(counts: torch.Tensor, top: int) -> list[dict]:
    counts = counts.reshape(-1).long()
    total = max(int(counts.sum()), 1)
    values, codes = counts.topk(min(top, counts.numel()))
    return [
        {"code": int(c), "count": int(n), "share": int(n) / total}
        for c, n in zip(codes.tolist(), values.tolist())
        if n > 0
    ]


# ----------------------------------------------------------------------------- token datasets


def inspect_tokens(
    ds: TokenDataset, path: str, top: int = 10, curve_points: int = 60, batch_rows: int = 4096
) -> TokenDatasetReport:
    k, t = ds.vocab_size, ds.tokens_per_image
    layout = ds.layout
    grids = [tuple(g) for g in layout["grids"]]
    depth = int(layout["depth"])
    spans, start = [], 0
    for h, w in grids:
        spans.append((start, start + h * w * depth))
        start += h * w * depth
    if start != t:
        raise TokenDataError(f"{path}: layout {layout} does not add up to {t} tokens per image")

    counts = torch.zeros(k, dtype=torch.long)
    level_counts = [torch.zeros(k, dtype=torch.long) for _ in grids]
    depth_counts = [torch.zeros(k, dtype=torch.long) for _ in range(depth)] if depth > 1 else []
    track_positions = t * k <= POSITION_COUNTERS_LIMIT
    pos_counts = torch.zeros(t * k, dtype=torch.int32) if track_positions else None
    offsets = torch.arange(t, dtype=torch.long) * k
    rows = 0
    for _, tokens, _ in ds.iter_batches(batch_rows):
        x = torch.from_numpy(tokens.astype(np.int64, copy=False))
        if x.numel() and int(x.max()) >= k:
            raise TokenDataError(f"{path}: token {int(x.max())} is outside the vocabulary of {k}")
        rows += len(x)
        counts += torch.bincount(x.reshape(-1), minlength=k)
        for lc, (a, b) in zip(level_counts, spans):
            lc += torch.bincount(x[:, a:b].reshape(-1), minlength=k)
        for d, dc in enumerate(depth_counts):
            dc += torch.bincount(x[:, d::depth].reshape(-1), minlength=k)
        if pos_counts is not None:
            idx = (x + offsets).reshape(-1)
            pos_counts.index_put_((idx,), torch.ones(1, dtype=torch.int32), accumulate=True)

    stats = usage_stats(counts)
    levels = [
        GroupUsage(f"level {i} ({h}x{w})", usage_stats(c))
        for i, ((h, w), c) in enumerate(zip(grids, level_counts))
    ]
    depths = [GroupUsage(f"depth {d}", usage_stats(c)) for d, c in enumerate(depth_counts)]
    positions: list[PositionMap] = []
    note = None
    if pos_counts is not None and rows:
        entropy = _row_entropy(pos_counts.view(t, k))
        for i, ((h, w), (a, b)) in enumerate(zip(grids, spans)):
            grid = entropy[a:b].view(h, w, depth).mean(dim=2)
            positions.append(
                PositionMap(i, [h, w], [[round(float(v), 4) for v in row] for row in grid])
            )
    elif pos_counts is None:
        note = (
            f"per-position usage skipped: it needs {t:,} x {k:,} counters, above the limit of "
            f"{POSITION_COUNTERS_LIMIT:,}"
        )
    errors = list(ds.error_records())
    total_tokens = rows * t
    report = TokenDatasetReport(
        path=path,
        files=len(ds.files),
        rows=rows,
        tokens_per_image=t,
        tokens=total_tokens,
        bytes_on_disk=ds.bytes,
        bytes_per_token=ds.bytes / total_tokens if total_tokens else 0.0,
        done_tasks=len(ds.done_tasks) if ds.folder else len(ds.files),
        unfinished_tasks=ds.unfinished,
        missing_tasks=ds.missing_tasks,
        errors=len(errors),
        error_examples=errors[:5],
        usage=stats,
        top_codes=_top_codes(counts, top),
        frequency_curve=frequency_curve(counts, curve_points),
        top_share=_top_share(counts),
        levels=levels if len(levels) > 1 else [],
        depths=depths,
        positions=positions,
        positions_note=note,
        metadata=_dataset_metadata(ds.meta),
    )
    report.warnings += usage_warnings(stats, "over the whole dataset")
    if ds.unfinished:
        report.warnings.append(
            f"{len(ds.unfinished)} unfinished task(s) ({', '.join(ds.unfinished[:3])}); "
            "rerun the same encode command to finish them"
        )
    if ds.missing_tasks:
        report.warnings.append(
            f"{len(ds.missing_tasks)} planned task(s) not written yet "
            f"({', '.join(ds.missing_tasks[:3])})"
        )
    return report


def _row_entropy(table: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Entropy in bits of each row of a (T, K) count table."""
    out = torch.zeros(table.shape[0], dtype=torch.float64)
    for a in range(0, table.shape[0], chunk):
        c = table[a : a + chunk].double()
        total = c.sum(dim=1, keepdim=True).clamp_min(1)
        p = c / total
        out[a : a + chunk] = -(p * torch.log2(p.clamp_min(1e-300))).sum(dim=1)
    return out


def frequency_curve(counts: torch.Tensor, points: int) -> list[float]:
    """Codes sorted by frequency, cut into `points` equal rank buckets; each
    value is the mean share of tokens per code in its bucket."""
    c = counts.double().sort(descending=True).values
    total = float(c.sum()) or 1.0
    points = max(1, min(points, len(c)))
    edges = np.linspace(0, len(c), points + 1).round().astype(int)
    return [float(c[a:b].mean()) / total for a, b in zip(edges[:-1], edges[1:])]


def _top_share(counts: torch.Tensor) -> dict:
    c = counts.double().sort(descending=True).values
    total = float(c.sum()) or 1.0
    cum = c.cumsum(0) / total
    out = {}
    for share in (0.01, 0.1, 0.5):
        n = max(1, round(share * len(c)))
        out[f"top_{share:.0%}_codes"] = float(cum[n - 1])
    return out


def _dataset_metadata(meta: dict) -> dict:
    tok = meta.get("tokenizer", {})
    return {
        "schema_version": meta.get("schema_version"),
        "vqtool_version": meta.get("vqtool_version"),
        "tokenizer_file": tok.get("file"),
        "tokenizer_sha256": tok.get("sha256"),
        "tokenizer_family": tok.get("config", {}).get("quantizer", {}).get("kind"),
        "vocab_size": meta.get("vocab_size"),
        "layout": meta.get("layout"),
        "preprocessing": meta.get("preprocessing"),
        "dtype": meta.get("dtype"),
    }


# ----------------------------------------------------------------------------- image shards

SHORT_SIDE_BUCKETS = [(0, 64), (64, 128), (128, 256), (256, 512), (512, 1024), (1024, None)]


def inspect_images(
    sources: list[str], path: str, max_pixels: int = MAX_PIXELS
) -> ImageShardsReport:
    shards = expand_sources(sources)
    formats: Counter = Counter()
    sizes_w, sizes_h = array("i"), array("i")  # 8 bytes per image
    hist = Counter()
    bad: list[dict] = []
    samples = captions = labels = 0
    for shard in shards:
        for s in iter_samples(shard):
            samples += 1
            captions += s.caption is not None
            labels += s.label is not None
            if s.error:
                bad.append({"key": s.key, "source": s.source, "reason": s.error})
                continue
            try:
                img, (w, h) = decode_with_size(s.data, 64, max_pixels)
            except DecodeError as exc:
                bad.append({"key": s.key, "source": s.source, "reason": str(exc)})
                continue
            formats[_format_of(s.data, s.ext)] += 1
            sizes_w.append(w)
            sizes_h.append(h)
            short = min(w, h)
            for lo, hi in SHORT_SIDE_BUCKETS:
                if short >= lo and (hi is None or short < hi):
                    hist[_bucket_name(lo, hi)] += 1
    report = ImageShardsReport(
        path=path,
        shards=len(shards),
        samples=samples,
        decodable=len(sizes_w),
        undecodable=len(bad),
        undecodable_examples=bad[:5],
        formats=dict(formats.most_common()),
        width=_spread(sizes_w),
        height=_spread(sizes_h),
        short_side_histogram={
            _bucket_name(lo, hi): hist.get(_bucket_name(lo, hi), 0) for lo, hi in SHORT_SIDE_BUCKETS
        },
        with_caption=captions,
        with_label=labels,
    )
    if samples == 0:
        report.warnings.append("no samples found")
    elif bad:
        report.warnings.append(f"{len(bad)} of {samples} samples cannot be decoded")
    return report


def _format_of(data: bytes, ext: str) -> str:
    from io import BytesIO

    from PIL import Image

    try:
        return Image.open(BytesIO(data)).format or ext.upper()
    except Exception:
        return ext.upper() or "?"


def _bucket_name(lo: int, hi: int | None) -> str:
    return f">={lo}" if hi is None else f"{lo}-{hi - 1}"


def _spread(values) -> dict:
    if not len(values):
        return {"min": None, "median": None, "max": None}
    a = np.asarray(values)
    return {"min": int(a.min()), "median": float(np.median(a)), "max": int(a.max())}


def dumps(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=1, default=str)
