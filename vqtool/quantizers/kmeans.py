"""Nearest-codeword search and k-means (Lloyd), shared by VQ, RQ and the palette.

Distances use the expansion ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2 as one
matrix product per chunk of rows; ||z||^2 is dropped because it does not
change the argmin. Rows are processed in chunks so the (rows, K) distance block
stays under `CHUNK_ELEMENTS`, never an (N, K, D) tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vqtool.errors import ConfigError
from vqtool.runtime import broadcast_

#: largest (rows x codes) distance block held at once (64 MiB in float32)
CHUNK_ELEMENTS = 1 << 24


def nearest(x: torch.Tensor, codebook: torch.Tensor, cosine: bool = False) -> torch.Tensor:
    """Index of the nearest row of `codebook` (K, D) for each row of `x` (M, D).

    With `cosine=True` both sides are assumed L2-normalized and the largest dot
    product wins (the same ordering as the Euclidean distance on the sphere).
    """
    x = x.float()
    codebook = codebook.float()
    k = codebook.shape[0]
    rows = max(1, CHUNK_ELEMENTS // max(k, 1))
    if x.shape[0] <= rows:
        return _nearest_block(x, codebook, cosine)
    return torch.cat([_nearest_block(c, codebook, cosine) for c in x.split(rows)])


def _nearest_block(x: torch.Tensor, codebook: torch.Tensor, cosine: bool) -> torch.Tensor:
    if cosine:
        return (x @ codebook.t()).argmax(dim=1)
    e_sq = codebook.pow(2).sum(dim=1)  # (K,)
    dist = torch.addmm(e_sq, x, codebook.t(), alpha=-2.0)  # (rows, K): ||e||^2 - 2 x.e
    return dist.argmin(dim=1)


@torch.no_grad()
def kmeans_plus_plus(
    x: torch.Tensor, k: int, cosine: bool = False, generator: torch.Generator | None = None
) -> torch.Tensor:
    """k-means++ seeding: each new centre is a row drawn with probability
    proportional to its squared distance from the nearest centre so far."""
    m = x.shape[0]
    first = int(torch.randint(m, (1,), generator=generator))
    centres = [x[first]]
    best = (x - x[first]).pow(2).sum(1)  # (M,) squared distance to the nearest centre
    for _ in range(1, k):
        total = best.sum()
        if total <= 0:  # fewer distinct rows than k: fall back to uniform picks
            i = int(torch.randint(m, (1,), generator=generator))
        else:
            i = int(torch.multinomial((best / total).cpu(), 1, generator=generator))
        centres.append(x[i])
        best = torch.minimum(best, (x - x[i]).pow(2).sum(1))
    out = torch.stack(centres)
    return torch.nn.functional.normalize(out, dim=1) if cosine else out


def weighted_pick(weights: torch.Tensor, n: int) -> torch.Tensor:
    """`n` row indices drawn proportionally to `weights` (uniformly if they are all zero)."""
    weights = weights.float().clamp_min(0).cpu()
    if weights.sum() <= 0:
        weights = torch.ones_like(weights)
    replace = n > int((weights > 0).sum())
    return torch.multinomial(weights, n, replacement=replace)


@torch.no_grad()
def restart_dead_codes(
    unused_steps: torch.Tensor,
    counts: torch.Tensor,
    restart_after: int,
    z: torch.Tensor,
    error: Callable[[], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Count the steps each code went unused (`counts`: this step's uses, summed over
    ranks) and pick replacements for codes unused `restart_after` steps: batch vectors
    `z` drawn in proportion to their quantization error (`error()`, computed only when a
    code is dead; k-means++ style), rank 0's choice for every rank. Returns (dead mask,
    fresh vectors), or None when no code is dead."""
    unused_steps.add_(1)
    unused_steps[counts > 0] = 0
    dead = unused_steps >= restart_after
    n_dead = int(dead.sum())
    if n_dead == 0:
        return None
    unused_steps[dead] = 0
    pick = weighted_pick(error(), n_dead).to(z.device)
    return dead, broadcast_(z[pick].contiguous())


@torch.no_grad()
def kmeans(
    x: torch.Tensor,
    k: int,
    iters: int = 10,
    cosine: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on rows of `x` (M, D). Returns (centroids (k, D), counts (k,)).

    Seeding is k-means++ when M >= k; with fewer rows than centres, rows are
    drawn with replacement plus a little noise. A cluster that empties is
    re-seeded from a row drawn proportionally to its current error.
    """
    x = x.float()
    m = x.shape[0]
    if m == 0:
        raise ValueError("k-means needs at least one vector")
    if m >= k:
        centroids = kmeans_plus_plus(x, k, cosine, generator)
    else:
        idx = torch.randint(m, (k,), generator=generator, device="cpu").to(x.device)
        noise = torch.randn(k, x.shape[1], generator=generator, device="cpu").to(x.device)
        centroids = x[idx] + 1e-3 * x.std().clamp_min(1e-6) * noise
        if cosine:
            centroids = torch.nn.functional.normalize(centroids, dim=1)
    counts = torch.zeros(k, device=x.device)
    for _ in range(iters):
        assign = nearest(x, centroids, cosine)
        counts = torch.bincount(assign, minlength=k).float()
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        empty = counts == 0
        new = sums / counts.clamp_min(1.0).unsqueeze(1)
        if empty.any():
            error = (x - centroids[assign]).pow(2).sum(1)
            new[empty] = x[weighted_pick(error, int(empty.sum())).to(x.device)]
        centroids = torch.nn.functional.normalize(new, dim=1) if cosine else new
    return centroids, counts


#: row blocks for the exact forms: large enough that typical encode batches run as
#: one block, as the originals do (256 MiB of float32 distances)
#: distances held at once by `nearest_exact` (8 MiB of float32): a block of rows small
#: enough to stay in cache (an Emu3 image's 8,140 positions x 32,768 codes took 2.9 s in
#: blocks of 2^26 distances, 0.9 s in blocks of 2^21, one thread)
EXACT_CHUNK_ELEMENTS = 1 << 21
#: rows per block a multiple of this (and at least it): the GEMM then gives each row the
#: values one GEMM over all rows gives (blocks of 1, 2 or 7 rows, or 32 on 2 threads, did
#: not, for 4-dim codes)
EXACT_CHUNK_ROWS = 128


def nearest_exact(x: torch.Tensor, codebook: torch.Tensor, form: str) -> torch.Tensor:
    """Nearest codeword with the arithmetic of a public implementation, so
    near-ties break the same way:

    - "expanded": sum(z^2, 1, keepdim) + sum(e^2, 1) - 2 * einsum("bd,dn->bn", z, e^T)
      (taming-transformers, LlamaGen);
    - "addmm": addmm(sum(z^2, 1, keepdim) + sum(e^T^2, 0, keepdim), z, e^T, alpha=-2)
      (the MaskGIT VQGAN port);
    - "ibq": the code of the largest softmax(einsum(z, e)) (IBQ, Emu3.5's tokenizer:
      the largest dot product; codes whose probabilities round equal go to the lowest
      index, as the original's `max` over the softmax gives them).
    argmin keeps the lowest index on exact ties."""
    x, codebook = x.float(), codebook.float()
    per_block = EXACT_CHUNK_ELEMENTS // max(codebook.shape[0], 1)
    rows = max(EXACT_CHUNK_ROWS, per_block // EXACT_CHUNK_ROWS * EXACT_CHUNK_ROWS)
    out = []
    for block in x.split(rows):
        if form == "ibq":
            logits = torch.einsum("md,nd->mn", block, codebook)
            out.append(torch.nn.functional.softmax(logits, dim=1).max(dim=1)[1])
            continue
        if form == "expanded":
            d = (
                torch.sum(block**2, dim=1, keepdim=True)
                + torch.sum(codebook**2, dim=1)
                - 2 * torch.einsum("bd,dn->bn", block, torch.einsum("nd->dn", codebook))
            )
        elif form == "addmm":
            et = codebook.t()
            d = torch.addmm(
                torch.sum(block**2, dim=1, keepdim=True) + torch.sum(et**2, dim=0, keepdim=True),
                block,
                et,
                alpha=-2,
            )
        else:
            raise ConfigError(f"unknown distance form {form!r}; use 'expanded', 'addmm' or 'ibq'")
        out.append(torch.argmin(d, dim=1))
    return torch.cat(out)
