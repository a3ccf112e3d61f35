"""Entropy terms of binary (sign) quantizers: LFQ (MAGVIT-v2, arXiv:2310.05737)
and BSQ (Zhao et al. 2024, arXiv:2406.07548).

A vector with d binary channels has 2^d possible codes. With soft assignment
p(c | z) proportional to exp(-||z - c||^2 / tau), the distance splits over
channels, so p(c | z) is a product of per-bit Bernoullis with logit
`l_i = 4 z_i / tau` (for codes in {-1, +1}). This module works from those
per-bit logits `(N, d)`:

* per-sample entropy  H[p(c | z)] = sum_i H_b(sigmoid(l_i)), O(N d) exactly;
* codebook entropy    H[mean_n p(c | z_n)] does not factorize over bits, but
  p(c | z_n) does factorize into its low and high halves, so the batch-mean
  distribution over all 2^d codes is one matrix product of two (N, 2^(d/2))
  tables: exact, O(N 2^d) multiply-adds, and O(N 2^(d/2) + 2^d) memory (4 MiB
  of tables for d = 18 at N = 2048). Optionally (`group_bits`) the bits are
  split into groups and the entropies of the groups' marginals are summed, the
  cheaper grouped factorization of BSQ; that sum equals the joint entropy when
  the groups are independent and is otherwise an upper bound of it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def index_to_bits(index: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes -> `(..., bits)` booleans, least significant bit first (channel 0 = bit 0)."""
    shifts = torch.arange(bits, device=index.device)
    return (index.unsqueeze(-1) >> shifts) & 1 == 1


def bits_to_index(bits: torch.Tensor) -> torch.Tensor:
    """`(..., bits)` booleans -> int64 codes, channel i carrying weight 2^i."""
    weights = 1 << torch.arange(bits.shape[-1], device=bits.device, dtype=torch.long)
    return (bits.long() * weights).sum(-1)


def binary_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Elementwise entropy (nats) of Bernoulli(sigmoid(logits)), stable for large |logits|."""
    p = torch.sigmoid(logits)
    return p * F.softplus(-logits) + (1 - p) * F.softplus(logits)


def per_sample_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of H[p(c | z_n)] for per-bit logits `(N, d)`, in nats."""
    return binary_entropy(logits).sum(-1).mean()


def code_probs(logits: torch.Tensor) -> torch.Tensor:
    """Exact p(c | z_n) for every code c of g bits: `(N, g)` logits -> `(N, 2^g)`."""
    n, g = logits.shape
    bits = index_to_bits(torch.arange(1 << g, device=logits.device), g).to(logits.dtype)
    log_p1 = F.logsigmoid(logits)
    log_p0 = F.logsigmoid(-logits)
    # log p(c | n) = sum_i log p_i(0) + sum_i bit_ci (log p_i(1) - log p_i(0))
    return torch.addmm(log_p0.sum(-1, keepdim=True), log_p1 - log_p0, bits.t()).exp()


def code_marginal(logits: torch.Tensor) -> torch.Tensor:
    """Exact mean_n p(c | z_n) over all 2^d codes (LSB-first index order), differentiable.

    p(c | z_n) = p(low bits | z_n) p(high bits | z_n), so the batch mean over n
    is one matrix product of the two halves' tables: `(2^hi, N) @ (N, 2^lo)`.
    Memory is O(N 2^(d/2) + 2^d), never N x 2^d.
    """
    n, d = logits.shape
    lo = d // 2
    p_lo = code_probs(logits[:, :lo])  # (N, 2^lo): channels 0..lo-1 are the low bits
    p_hi = code_probs(logits[:, lo:])  # (N, 2^(d-lo))
    joint = p_hi.t() @ p_lo / n  # (2^hi, 2^lo); index = hi * 2^lo + lo
    return joint.reshape(-1)


def codebook_entropy(logits: torch.Tensor, group_bits: int = 0) -> torch.Tensor:
    """Entropy (nats) of the batch-mean code distribution for per-bit logits `(N, d)`.

    Exact when `group_bits` is 0 or >= d; otherwise the sum over groups of at
    most `group_bits` consecutive bits of each group's marginal entropy.
    """
    d = logits.shape[-1]
    groups = 1 if group_bits <= 0 else math.ceil(d / group_bits)
    total = logits.new_zeros(())
    for part in logits.chunk(groups, dim=-1):
        probs = code_marginal(part)
        total = total - (probs * torch.log(probs.clamp_min(1e-30))).sum()
    return total
