"""Pre-norm transformer block (GPT-2 / ViT style): the one implementation the ViT
tokenizer (`Block`) and every prior family (`Transformer`: AR and DALL-E, MaskGIT and
Muse, RQ and contextual RQ) use.

Attention runs through `torch.nn.functional.scaled_dot_product_attention`
(`attention="sdpa"`, the default) or an explicit softmax(QK^T/sqrt(d))V
(`"manual"`, for checking and for backends without fused kernels). A
`KVCache` makes causal decoding incremental: each new token attends to the
cached keys and values instead of recomputing the whole prefix.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vqtool.errors import ConfigError

ATTENTION = ("sdpa", "manual")


class KVCache:
    """Keys and values of the tokens seen so far, per layer, preallocated."""

    def __init__(self, layers: int, batch: int, heads: int, length: int, head_dim: int, like):
        shape = (batch, heads, length, head_dim)
        self.k = [like.new_zeros(shape) for _ in range(layers)]
        self.v = [like.new_zeros(shape) for _ in range(layers)]
        self.length = 0  # tokens cached (the same for every layer after a full forward)
        self.capacity = length

    def reset(self) -> None:
        self.length = 0


def attend(q, k, v, mask: torch.Tensor | None, causal: bool, kind: str) -> torch.Tensor:
    """q (B, h, Nq, d), k/v (B, h, Nk, d); mask: bool (Nq, Nk), True = may attend."""
    if kind == "sdpa":
        if mask is not None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if mask is None and causal:
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, attention: str = "sdpa"):
        super().__init__()
        if width % heads:
            raise ConfigError(f"width {width} is not divisible by heads {heads}")
        if attention not in ATTENTION:
            raise ConfigError(f"attention {attention!r} is not one of {', '.join(ATTENTION)}")
        self.heads = heads
        self.attention = attention
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x, causal: bool = False, cache: KVCache | None = None, layer: int = 0):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        mask = causal if isinstance(causal, torch.Tensor) else None  # (N, N) bool: may see
        causal = mask is None and causal
        if cache is not None:
            start = cache.length
            if start + n > cache.capacity:
                raise ValueError(f"KV cache of {cache.capacity} tokens is full")
            cache.k[layer][:, :, start : start + n] = k
            cache.v[layer][:, :, start : start + n] = v
            k, v = cache.k[layer][:, :, : start + n], cache.v[layer][:, :, : start + n]
            if causal and n > 1:  # queries at start..start+n-1 see keys up to themselves
                rows = torch.arange(start, start + n, device=x.device)[:, None]
                mask = torch.arange(start + n, device=x.device)[None, :] <= rows
            causal = causal and n > 1 and mask is None
        out = attend(q, k, v, mask, causal, self.attention)  # (B, heads, N, c/heads)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(
        self,
        width: int,
        heads: int,
        mlp_ratio: float = 4.0,
        attention: str = "sdpa",
        dropout: float = 0.0,
    ):
        super().__init__()
        self.drop = nn.Dropout(dropout)  # on both residual branches (training only)
        self.ln_1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads, attention)
        self.ln_2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x, causal: bool = False, cache: KVCache | None = None, layer: int = 0):
        x = x + self.drop(self.attn(self.ln_1(x), causal, cache, layer))
        x = x + self.drop(self.mlp(self.ln_2(x)))
        return x


class Transformer(nn.Module):
    """A stack of `Block`s with a final LayerNorm; `cache` makes it incremental."""

    def __init__(
        self,
        width: int,
        layers: int,
        heads: int,
        mlp_ratio: float = 4.0,
        attention: str = "sdpa",
        dropout: float = 0.0,
    ):
        super().__init__()
        self.width, self.heads = width, heads
        self.blocks = nn.ModuleList(
            Block(width, heads, mlp_ratio, attention, dropout) for _ in range(layers)
        )
        self.ln_f = nn.LayerNorm(width)

    def new_cache(self, batch: int, length: int, like: torch.Tensor) -> KVCache:
        return KVCache(len(self.blocks), batch, self.heads, length, self.width // self.heads, like)

    def forward(
        self, x, causal: bool = False, cache: KVCache | None = None, hidden: list | None = None
    ) -> torch.Tensor:
        """`hidden`: a list that receives every block's output (for linear probes)."""
        for i, block in enumerate(self.blocks):
            x = block(x, causal, cache, i)
            if hidden is not None:
                hidden.append(x)
        if cache is not None:
            cache.length += x.shape[1]
        return self.ln_f(x)
