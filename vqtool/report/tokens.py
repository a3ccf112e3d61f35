"""`inspect` of a token dataset, streamed batch by batch: usage over the whole
dataset, frequency curve, top codes, per-level / per-depth usage, per-position
entropy, tasks, errors and bytes per token; for codes that are packed bits (LFQ, BSQ,
Infinity) the share of ones per bit and the correlation between bits. NumPy only:
`inspect` of a token folder imports no torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from vqtool.errors import TokenDataError
from vqtool.metrics.codes import BitBalance, BitStats, Histogram
from vqtool.metrics.stats import UsageStats
from vqtool.report.common import usage_warnings
from vqtool.tokens.reader import TokenDataset

#: per-position usage needs a (tokens per image x vocabulary) counter table
POSITION_COUNTERS_LIMIT = 1 << 25
LOPSIDED_BIT = 0.02  # a bit set (or clear) in fewer than this share of positions is flagged


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
    grids: dict[str, int] | None = None  # rows per grid ("HxW"), for rows of their own grids
    bottom_codes: list[dict] = field(default_factory=list)  # the rarest of the used codes
    bits: BitStats | None = None  # codes of packed bits: per-bit balance, bit correlation
    bits_per_level: list[BitStats] = field(default_factory=list)  # a pyramid's, per scale
    roofline: dict | None = None  # the last encode run against its limits (roofline.json)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("frequency_curve")
        out["frequency_curve"] = [round(v, 8) for v in self.frequency_curve]
        return out


@dataclass
class _Counts:
    """Code counts over a token dataset: overall, per level, per depth, per position, and
    the bits' balance where codes are packed bits."""

    rows: int
    counts: Histogram
    levels: list[Histogram]
    depths: list[Histogram]
    positions: np.ndarray | None  # (T * K) counters, None when over the limit
    bits: BitBalance | None = None
    level_bits: list[BitBalance] = field(default_factory=list)


def code_bits(meta: dict) -> int | None:
    """Bits per code when a folder's codes are packed sign bits (an LFQ or BSQ quantizer,
    Infinity's among them), else None."""
    tok = meta.get("tokenizer") or {}
    kind = tok.get("quantizer") or (tok.get("config") or {}).get("quantizer", {}).get("kind")
    k = int(meta.get("vocab_size") or 0)
    return k.bit_length() - 1 if kind in ("lfq", "bsq") and k and k & (k - 1) == 0 else None


def _count(ds: TokenDataset, path: str, spans: list, depth: int, batch_rows: int) -> _Counts:
    k, t = ds.vocab_size, ds.tokens_per_image
    bits = code_bits(ds.meta)
    pos_limit = t * k <= POSITION_COUNTERS_LIMIT
    c = _Counts(0, Histogram(k), [Histogram(k) for _ in spans],
                [Histogram(k) for _ in range(depth)] if depth > 1 else [],
                np.zeros(t * k, dtype=np.int32) if pos_limit else None,
                BitBalance(bits) if bits else None,
                [BitBalance(bits) for _ in spans] if bits and len(spans) > 1 else [])  # fmt: skip
    offsets = np.arange(t, dtype=np.int64) * k
    for _, tokens, _ in ds.iter_batches(batch_rows):
        x = tokens.astype(np.int64, copy=False)
        if x.size and int(x.max()) >= k:
            raise TokenDataError(f"{path}: token {int(x.max())} is outside the vocabulary of {k}")
        c.rows += len(x)
        c.counts.add(x)
        for lc, (a, b) in zip(c.levels, spans):
            lc.add(x[:, a:b])
        for d, dc in enumerate(c.depths):
            dc.add(x[:, d::depth])
        if c.positions is not None:
            np.add.at(c.positions, (x + offsets).reshape(-1), 1)
        if c.bits is not None:
            c.bits.add(x)
        for lb, (a, b) in zip(c.level_bits, spans):
            lb.add(x[:, a:b])
    return c


def _position_maps(c: _Counts, grids, spans, depth: int, t: int, k: int):
    """(per-position entropy maps, or the note saying why there are none)."""
    if c.positions is None:
        return [], (
            f"per-position usage skipped: it needs {t:,} x {k:,} counters, above the limit of "
            f"{POSITION_COUNTERS_LIMIT:,}"
        )
    maps: list[PositionMap] = []
    if c.rows:
        entropy = _row_entropy(c.positions.reshape(t, k))
        for i, ((h, w), (a, b)) in enumerate(zip(grids, spans)):
            grid = entropy[a:b].reshape(h, w, depth).mean(axis=2)
            maps.append(PositionMap(i, [h, w], [[round(float(v), 4) for v in row] for row in grid]))
    return maps, None


def _task_warnings(ds: TokenDataset) -> list[str]:
    out = []
    if ds.unfinished:
        out.append(
            f"{len(ds.unfinished)} unfinished task(s) ({', '.join(ds.unfinished[:3])}); "
            "rerun the same encode command to finish them"
        )
    if ds.missing_tasks:
        out.append(
            f"{len(ds.missing_tasks)} planned task(s) not written yet "
            f"({', '.join(ds.missing_tasks[:3])})"
        )
    return out


def inspect_tokens(
    ds: TokenDataset, path: str, top: int = 10, curve_points: int = 60, batch_rows: int = 4096
) -> TokenDatasetReport:
    if ds.native:
        return _inspect_native(ds, path, top, curve_points, batch_rows)
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
    c = _count(ds, path, spans, depth, batch_rows)
    stats = c.counts.stats()
    levels = [
        GroupUsage(f"level {i} ({h}x{w})", lc.stats())
        for i, ((h, w), lc) in enumerate(zip(grids, c.levels))
    ]
    positions, note = _position_maps(c, grids, spans, depth, t, k)
    errors = list(ds.error_records())
    total_tokens = c.rows * t
    report = TokenDatasetReport(
        path=path,
        files=len(ds.files),
        rows=c.rows,
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
        top_codes=c.counts.top(top),
        bottom_codes=c.counts.bottom(top),
        frequency_curve=c.counts.curve(curve_points),
        top_share=c.counts.top_share(),
        levels=levels if len(levels) > 1 else [],
        depths=[GroupUsage(f"depth {d}", dc.stats()) for d, dc in enumerate(c.depths)],
        positions=positions,
        positions_note=note,
        metadata=_dataset_metadata(ds.meta),
        bits=c.bits.stats() if c.bits else None,
        bits_per_level=[lb.stats() for lb in c.level_bits],
        roofline=ds.roofline,
    )
    report.warnings += _usage_warnings(c.counts, stats, report.bits) + _task_warnings(ds)
    return report


def _usage_warnings(counts: Histogram, stats: UsageStats, bits: BitStats | None) -> list[str]:
    """Codes used too little; for a vocabulary counted sparsely (2^24 codes and more) the
    share of codes used says nothing, and the bits speak instead."""
    out = []
    if counts.saturated:
        out.append(
            f"more than {len(counts.codes):,} distinct codes: usage counts the codes first "
            "seen, so 'used' is a lower bound"
        )
    if not counts.sparse:
        out += usage_warnings(stats, "over the whole dataset")
    if bits and bits.balance_min < LOPSIDED_BIT:
        worst = int(np.argmin(np.minimum(bits.ones, 1 - np.asarray(bits.ones))))
        out.append(
            f"bit {worst} is set in {bits.ones[worst]:.1%} of the positions (a bit that "
            "hardly changes carries little information)"
        )
    return out


def _inspect_native(ds, path: str, top: int, curve_points: int, batch_rows: int):
    """Rows of their own grids: usage over all tokens and the histogram of grids."""
    k = ds.vocab_size
    counts = Histogram(k)
    bits = code_bits(ds.meta)
    balance = BitBalance(bits) if bits else None
    # a pyramid of each image's own shape: its scales by the schedule its grid names
    schedules = ds.layout.get("schedules") or {}
    scales: list[tuple[Histogram, BitBalance | None]] = []
    grids: dict[str, int] = {}
    rows = tokens = 0
    for f in ds.files:
        for batch in f.open().iter_batches(batch_size=batch_rows,
                                           columns=["tokens", "grid_h", "grid_w"]):  # fmt: skip
            values = batch.column("tokens").values.to_numpy(zero_copy_only=False)
            x = values.astype(np.int64)
            if x.size and int(x.max()) >= k:
                raise TokenDataError(f"{path}: token {int(x.max())} is outside the vocabulary")
            counts.add(x)
            if balance is not None:
                balance.add(x)
            rows, tokens = rows + batch.num_rows, tokens + len(values)
            offsets = batch.column("tokens").offsets.to_numpy()
            shapes = zip(batch.column("grid_h").to_pylist(), batch.column("grid_w").to_pylist())
            for i, (h, w) in enumerate(shapes):
                grids[f"{h}x{w}"] = grids.get(f"{h}x{w}", 0) + 1
                if f"{h}x{w}" in schedules:
                    _per_scale(x[offsets[i] : offsets[i + 1]], schedules[f"{h}x{w}"], scales, k,
                               bits)  # fmt: skip
    stats = counts.stats()
    errors = list(ds.error_records())
    report = TokenDatasetReport(
        path=path, files=len(ds.files), rows=rows, tokens_per_image=round(tokens / max(rows, 1)),
        tokens=tokens, bytes_on_disk=ds.bytes, bytes_per_token=ds.bytes / max(tokens, 1),
        done_tasks=len(ds.done_tasks) if ds.folder else len(ds.files),
        unfinished_tasks=ds.unfinished, missing_tasks=ds.missing_tasks, errors=len(errors),
        error_examples=errors[:5], usage=stats, top_codes=counts.top(top),
        bottom_codes=counts.bottom(top), frequency_curve=counts.curve(curve_points),
        top_share=counts.top_share(), bits=balance.stats() if balance else None,
        roofline=ds.roofline,
        levels=[GroupUsage(f"scale {i}", h.stats()) for i, (h, _) in enumerate(scales)],
        bits_per_level=[b.stats() for _, b in scales if b is not None],
        depths=[], positions=[],
        positions_note="per-position usage skipped: each row has its own grid",
        metadata=_dataset_metadata(ds.meta),
        grids=dict(sorted(grids.items(), key=lambda kv: -kv[1])),
    )  # fmt: skip
    report.warnings += _usage_warnings(counts, stats, report.bits) + _task_warnings(ds)
    return report


def _per_scale(row: np.ndarray, schedule: list, scales: list, k: int, bits: int | None):
    """Count one pyramid row's codes scale by scale (scale i: the i-th of its schedule,
    whatever its size in this row's template)."""
    start = 0
    for i, (h, w) in enumerate(schedule):
        if i == len(scales):
            scales.append((Histogram(k), BitBalance(bits) if bits else None))
        part = row[start : start + h * w]
        scales[i][0].add(part)
        if scales[i][1] is not None:
            scales[i][1].add(part)
        start += h * w


def _row_entropy(table: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Entropy in bits of each row of a (T, K) count table."""
    out = np.zeros(table.shape[0], dtype=np.float64)
    for a in range(0, table.shape[0], chunk):
        c = table[a : a + chunk].astype(np.float64)
        total = np.maximum(c.sum(axis=1, keepdims=True), 1)
        p = c / total
        out[a : a + chunk] = -(p * np.log2(np.maximum(p, 1e-300))).sum(axis=1)
    return out


def _dataset_metadata(meta: dict) -> dict:
    tok = meta.get("tokenizer", {})
    return {
        "schema_version": meta.get("schema_version"),
        "vqtool_version": meta.get("vqtool_version"),
        "tokenizer_file": tok.get("file"),
        "tokenizer_sha256": tok.get("sha256"),
        "tokenizer_family": tok.get("quantizer")
        or (tok.get("config") or {}).get("quantizer", {}).get("kind"),
        "vocab_size": meta.get("vocab_size"),
        "layout": meta.get("layout"),
        "preprocessing": meta.get("preprocessing"),
        "dtype": meta.get("dtype"),
    }
