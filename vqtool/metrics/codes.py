"""Code histograms that scale to any vocabulary, and the bit statistics of bitwise codes.
NumPy only (`inspect` of a token folder imports no torch).

- `Histogram`: counts per code; dense up to `DENSE_LIMIT` codes, above it (Infinity's 2^24
  and 2^32 bitwise vocabularies) the codes seen and their counts, taking no new codes
  once `DISTINCT_LIMIT` are held (`saturated`: `used` is then a lower bound).
- `BitBalance`: for codes that are d packed bits (LFQ, BSQ, Infinity): the share of ones
  per bit and the correlation between bits, from running sums (d + d^2 counters).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from vqtool.metrics.stats import UsageStats, usage_stats

DENSE_LIMIT = 1 << 24  # codes above which only the codes seen are counted
DISTINCT_LIMIT = 1 << 23  # distinct codes a sparse histogram holds (~128 MB)


def _listed(counts: np.ndarray, index: np.ndarray, codes: np.ndarray | None) -> list[dict]:
    total = max(int(counts.sum()), 1)
    return [{"code": int(codes[i] if codes is not None else i), "count": int(counts[i]),
             "share": int(counts[i]) / total} for i in index.tolist()]  # fmt: skip


def top_codes(counts, n: int, codes: np.ndarray | None = None) -> list[dict]:
    """The `n` most used codes of a histogram (a NumPy array or a CPU tensor; `codes`: the
    code of each count, for sparse counts), most used first; on equal counts the lower
    code first."""
    counts = np.asarray(counts, dtype=np.int64).reshape(-1)
    order = np.argsort(-counts, kind="stable")[: min(n, counts.size)]
    return _listed(counts, order[counts[order] > 0], codes)


def bottom_codes(counts, n: int, codes: np.ndarray | None = None) -> list[dict]:
    """The `n` least used codes among those used at least once (dead codes are counted
    apart), rarest first; on equal counts the lower code first."""
    counts = np.asarray(counts, dtype=np.int64).reshape(-1)
    used = np.flatnonzero(counts > 0)
    return _listed(counts, used[np.argsort(counts[used], kind="stable")[:n]], codes)


class Histogram:
    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.sparse = vocab_size > DENSE_LIMIT
        self.counts = np.zeros(0 if self.sparse else vocab_size, dtype=np.int64)
        self.codes = np.zeros(0, dtype=np.int64)  # sparse: the codes of `counts`, sorted
        self.saturated = False

    def add(self, x: np.ndarray) -> None:
        """Count int64 codes (any shape, values in [0, vocab_size))."""
        x = x.reshape(-1)
        if not self.sparse:
            self.counts += np.bincount(x, minlength=self.vocab_size)
            return
        values, n = np.unique(x, return_counts=True)
        if self.saturated:  # only the codes already held are counted
            at = np.searchsorted(self.codes, values).clip(0, len(self.codes) - 1)
            held = self.codes[at] == values
            np.add.at(self.counts, at[held], n[held])
            return
        merged, where = np.unique(np.concatenate([self.codes, values]), return_inverse=True)
        counts = np.zeros(len(merged), dtype=np.int64)
        np.add.at(counts, where, np.concatenate([self.counts, n]))
        self.codes, self.counts = merged, counts
        self.saturated = len(merged) >= DISTINCT_LIMIT

    def stats(self) -> UsageStats:
        return usage_stats(self.counts, self.vocab_size if self.sparse else None)

    def top(self, n: int) -> list[dict]:
        return top_codes(self.counts, n, self.codes if self.sparse else None)

    def bottom(self, n: int) -> list[dict]:
        return bottom_codes(self.counts, n, self.codes if self.sparse else None)

    def _descending(self) -> np.ndarray:
        return np.sort(self.counts.astype(np.float64))[::-1]

    def curve(self, points: int) -> list[float]:
        """Codes sorted by frequency (the unseen ones last), cut into `points` equal rank
        buckets; each value is the mean share of tokens per code in its bucket."""
        c = self._descending()
        total = float(c.sum()) or 1.0
        k = self.vocab_size
        points = max(1, min(points, k))
        edges = np.linspace(0, k, points + 1).round().astype(np.int64)
        cum = np.concatenate([[0.0], np.cumsum(c)])
        at = np.minimum(edges, len(c))
        return [float(cum[b] - cum[a]) / max(int(e1 - e0), 1) / total
                for a, b, e0, e1 in zip(at[:-1], at[1:], edges[:-1], edges[1:])]  # fmt: skip

    def top_share(self) -> dict:
        """Share of the tokens the most used 1%, 10% and 50% of the codes hold."""
        c = self._descending()
        cum = c.cumsum() / (float(c.sum()) or 1.0)
        out = {}
        for share in (0.01, 0.1, 0.5):
            n = max(1, round(share * self.vocab_size))
            out[f"top_{share:.0%}_codes"] = float(cum[min(n, len(c)) - 1]) if len(c) else 0.0
        return out


@dataclass
class BitStats:
    bits: int
    ones: list[float]  # share of positions whose bit i is set (bit i: weight 2^i)
    balance_min: float  # the most lopsided bit's min(share of ones, share of zeros)
    correlation_max: float  # the largest |Pearson correlation| between two bits
    correlation_mean: float  # the mean |correlation| over all pairs of bits
    most_correlated: list[int]  # the pair of bits with the largest |correlation|

    def to_dict(self) -> dict:
        return asdict(self)


class BitBalance:
    """Running sums of d-bit codes' bits and their pairwise products."""

    def __init__(self, bits: int, chunk: int = 1 << 18):
        self.bits, self.chunk = bits, chunk
        self.n = 0
        self.ones = np.zeros(bits, dtype=np.int64)
        self.both = np.zeros((bits, bits), dtype=np.int64)

    def add(self, x: np.ndarray) -> None:
        x = x.reshape(-1).astype(np.uint64)
        shifts = np.arange(self.bits, dtype=np.uint64)
        for a in range(0, len(x), self.chunk):
            b = ((x[a : a + self.chunk, None] >> shifts) & np.uint64(1)).astype(np.float32)
            self.n += len(b)
            self.ones += b.sum(0).astype(np.int64)
            self.both += (b.T @ b).round().astype(np.int64)  # exact below 2^24 per chunk

    def stats(self) -> BitStats:
        n = max(self.n, 1)
        p = self.ones / n
        cov = self.both / n - np.outer(p, p)
        sd = np.sqrt(np.maximum(p * (1 - p), 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = np.where(np.outer(sd, sd) > 0, cov / np.outer(sd, sd), 0.0)
        pairs = np.abs(corr[np.triu_indices(self.bits, 1)]) if self.bits > 1 else np.zeros(1)
        i, j = np.unravel_index(np.argmax(np.abs(np.triu(corr, 1))), corr.shape)
        return BitStats(
            bits=self.bits,
            ones=[round(float(v), 6) for v in p],
            balance_min=float(np.minimum(p, 1 - p).min()) if self.n else 0.0,
            correlation_max=float(pairs.max()),
            correlation_mean=float(pairs.mean()),
            most_correlated=[int(i), int(j)],
        )
