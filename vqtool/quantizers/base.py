"""The one quantizer interface every family implements (DESIGN.md, "Quantizer interface").

A subclass works on flat float32 vectors `(M, C)` and never sees image shapes,
dtypes or autocast: `Quantizer.forward` flattens `(B, C, H, W)` or `(B, N, C)`
input, turns autocast off, runs the family's `quantize_flat` in float32 and
puts the result back in the caller's shape and dtype.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


@dataclass
class QuantizerOutput:
    """What every quantizer returns.

    quantized: same shape and dtype as the input, straight-through gradients.
    codes:     int64, `(B, H, W)` or `(B, N)`, with a trailing depth axis when depth > 1.
    loss:      the quantizer's own auxiliary loss, already weighted (scalar).
    metrics:   detached floats for logging (perplexity, used share, error...).
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class FlatResult:
    """`quantize_flat`'s result: quantized `(M, C)`, codes `(M,)` or `(M, D)`, and
    `counts`, the batch's code histogram `(vocab_size,)`, from which `forward`
    adds the `perplexity` and `used` metrics."""

    quantized: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor
    counts: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round with straight-through gradients."""
    return x + (x.round() - x).detach()


def straight_through(z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Forward value `q`, gradient of the identity with respect to `z`."""
    return z + (q - z).detach()


def code_counts(codes: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Histogram `(vocab_size,)` of a tensor of codes."""
    return torch.bincount(codes.reshape(-1), minlength=vocab_size)


def code_perplexity(counts: torch.Tensor) -> tuple[float, float]:
    """(perplexity, share of the vocabulary used) from one batch's code histogram.

    On the CPU this runs in NumPy: a handful of torch ops on a small histogram
    would cost more than the quantization itself for cheap quantizers (FSQ).
    """
    if counts.device.type == "cpu":
        c = counts.numpy()
        p = c[c > 0] / max(int(c.sum()), 1)
        return float(np.exp(-(p * np.log(p)).sum())), float(np.count_nonzero(c) / c.size)
    p = counts[counts > 0].double() / counts.sum().clamp_min(1)
    stats = torch.stack([(-(p * p.log()).sum()).exp(), (counts > 0).double().mean()])
    perplexity, used = stats.tolist()  # one device sync
    return perplexity, used


class Quantizer(nn.Module, abc.ABC):
    """Base class: shape, dtype and autocast handling around `quantize_flat`."""

    #: name used in recipes (`[quantizer] kind = "vq"`)
    kind: str = ""

    def __init__(self, dim: int, code_dim: int, vocab_size: int, depth: int = 1):
        super().__init__()
        self.dim = dim  # channels of the encoder output this quantizer reads
        self.code_dim = code_dim  # dimension of the space where lookup/rounding happens
        self.vocab_size = vocab_size  # distinct values one code can take
        self.depth = depth  # codes per spatial position

    # -- to implement ---------------------------------------------------------
    @abc.abstractmethod
    def quantize_flat(self, z: torch.Tensor) -> FlatResult:
        """Quantize `(M, dim)` float32 vectors."""

    @abc.abstractmethod
    def lookup_flat(self, codes: torch.Tensor) -> torch.Tensor:
        """`(M,)` or `(M, depth)` int64 codes -> `(M, dim)` float32 embeddings."""

    @abc.abstractmethod
    def config_dict(self) -> dict:
        """JSON-able config that rebuilds this quantizer with `build_quantizer`."""

    def anneal(self, step: int) -> None:
        """Hook the training loop calls each step (temperature schedules); default none."""

    @torch.no_grad()
    def code_tables(self, learned: bool = False) -> dict[str, torch.Tensor]:
        """The quantizer's vectors per code, by table name ("" for the only one).

        `learned=False`: what the decoder sees for each code (`lookup_flat` of every code:
        a learned entry after any output projection, or an implicit grid point), one
        table per codebook (`export --embeddings`). `learned=True`: the tables a learned
        quantizer stores and searches, as they are ({} for an implicit grid; `inspect`'s
        codebook statistics)."""
        if learned:
            return {}
        if self.vocab_size > 1 << 24:
            raise ValueError(
                f"{self.vocab_size:,} codes: one vector per code would not fit in memory "
                "(packed bits, each bit +-s: the table is implicit)"
            )
        if self.depth != 1:
            raise ValueError(f"a {type(self).__name__} of depth {self.depth} has no code tables")
        device = next(iter(self.buffers()), next(iter(self.parameters()), torch.empty(0))).device
        return {"": self.lookup_flat(torch.arange(self.vocab_size, device=device))}

    # -- shared machinery -----------------------------------------------------
    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        flat, restore, grid = self._flatten(z)
        with torch.autocast(device_type=flat.device.type, enabled=False):
            result = self.quantize_flat(flat.float())
        perplexity, used = code_perplexity(result.counts)
        metrics = {"perplexity": perplexity, "used": used}
        if result.metrics:
            names = list(result.metrics)
            values = torch.stack([result.metrics[n].detach().float() for n in names]).tolist()
            metrics.update(zip(names, values))
        codes = result.codes.long().reshape(*grid, *result.codes.shape[1:])
        return QuantizerOutput(restore(result.quantized).to(z.dtype), codes, result.loss, metrics)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes -> the embeddings the decoder sees (the exact path `forward` uses).

        `(B, H, W[, D])` gives `(B, dim, H, W)`; `(B, N[, D])` gives `(B, N, dim)`.
        """
        spatial = codes.ndim - (1 if self.depth > 1 else 0)
        if spatial not in (2, 3):
            raise ValueError(
                f"codes of shape {tuple(codes.shape)} fit neither (B, H, W) nor (B, N)"
                + (f" with a trailing depth of {self.depth}" if self.depth > 1 else "")
            )
        grid = codes.shape[:spatial]
        flat = codes.reshape(-1, self.depth) if self.depth > 1 else codes.reshape(-1)
        with torch.autocast(device_type=codes.device.type, enabled=False):
            emb = self.lookup_flat(flat.long())
        emb = emb.reshape(*grid, self.dim)
        return emb.permute(0, 3, 1, 2).contiguous() if spatial == 3 else emb

    def _flatten(self, z: torch.Tensor):
        if z.ndim == 4:  # (B, C, H, W)
            b, c, h, w = z.shape
            self._check_dim(c, z)
            flat = z.permute(0, 2, 3, 1).reshape(-1, c)  # (B*H*W, C)

            def restore(q):
                return q.reshape(b, h, w, c).permute(0, 3, 1, 2)  # (B, C, H, W)

            return flat, restore, (b, h, w)
        if z.ndim == 3:  # (B, N, C)
            b, n, c = z.shape
            self._check_dim(c, z)
            return z.reshape(-1, c), (lambda q: q.reshape(b, n, c)), (b, n)
        raise ValueError(f"quantizer input must be (B, C, H, W) or (B, N, C), got {tuple(z.shape)}")

    def _check_dim(self, c: int, z: torch.Tensor) -> None:
        if c != self.dim:
            raise ValueError(
                f"{type(self).__name__} expects {self.dim} channels, got input {tuple(z.shape)}; "
                f"set the quantizer's dim to {c} or change the encoder's output channels"
            )
