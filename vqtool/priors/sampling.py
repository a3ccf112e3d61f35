"""Generating token rows from a prior.

- Autoregressive (and RQ): one token (one position) at a time, with a KV cache
  by default (`use_cache=False` recomputes the prefix every step, for checks
  and benchmarks).
- MaskGIT: T parallel steps. Each step predicts every masked position,
  samples a token for each, scores it by its log-probability plus Gumbel
  noise whose temperature anneals linearly to zero, keeps the most confident
  and re-masks the rest so that exactly `mask_schedule(T, steps)[s]` positions
  stay masked after step s (cosine schedule, at least one new token a step).
- Classifier-free guidance: logits = uncond + scale * (cond - uncond), with
  the "no class" start token (and, for text priors, the all-pad "no caption")
  for the unconditional half.
- Text priors (`dalle`, `muse`) take the prompts' text ids (B, L): DALL-E's
  prefix is run once into the KV cache, then the image tokens follow.

All randomness comes from the `generator` passed in, so a seed gives the same
rows twice on the same device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vqtool.errors import ConfigError


@dataclass
class SamplingConfig:
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    cfg_scale: float = 1.0  # 1 = plain conditional sampling
    steps: int = 8  # MaskGIT decoding steps (contextual RQ: draft steps)
    revise_rounds: int = 2  # contextual RQ: rounds of revising after the draft ...
    revise_groups: int = 4  # ... each re-masking and resampling the positions group by group
    choice_temperature: float = 4.5  # MaskGIT confidence noise at step 0 (annealed to 0)
    use_cache: bool = True  # AR / RQ: KV cache

    def validate(self, kind: str, tokens: int) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"--temperature must be > 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"--top-k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p must lie in (0, 1], got {self.top_p}")
        if kind == "maskgit" and not 1 <= self.steps <= tokens:
            raise ConfigError(f"--steps must lie in [1, {tokens}] for {tokens} tokens")
        if self.revise_rounds < 0 or self.revise_groups < 1:
            raise ConfigError("--revise-rounds must be >= 0 and --revise-groups >= 1")


def mask_schedule(total: int, steps: int) -> list[int]:
    """Positions still masked after each of `steps` MaskGIT steps:
    floor(total * cos(pi/2 * (s+1)/steps)), forced to drop by at least one
    per step; the last entry is 0."""
    if not 1 <= steps <= total:
        raise ConfigError(f"MaskGIT steps must lie in [1, {total}], got {steps}")
    counts, prev = [], total
    for s in range(steps):
        n = math.floor(total * math.cos(math.pi / 2 * (s + 1) / steps) + 1e-9)
        n = max(0, min(n, prev - 1))
        counts.append(n)
        prev = n
    counts[-1] = 0
    return counts


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Set logits outside the top-k / nucleus to -inf (last dimension)."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs > top_p  # keep the smallest set reaching top_p
        drop[..., 0] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def sample_from(
    logits: torch.Tensor, s: SamplingConfig, generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., V) logits -> sampled ids and their log-probabilities under the
    filtered, tempered distribution."""
    logp = F.log_softmax(filter_logits(logits.float() / s.temperature, s.top_k, s.top_p), dim=-1)
    flat = logp.reshape(-1, logp.shape[-1])
    ids = torch.multinomial(flat.exp(), 1, generator=generator).squeeze(1)
    chosen = flat.gather(1, ids[:, None]).squeeze(1)
    return ids.reshape(logits.shape[:-1]), chosen.reshape(logits.shape[:-1])


def check_conditions(model, has_labels: bool, s: SamplingConfig) -> None:
    """Refuse a label for an unconditional prior and guidance without a condition (before
    any work or progress output)."""
    if has_labels and model.classes == 0:
        raise ConfigError("--label: this prior is unconditional (trained without labels)")
    if s.cfg_scale != 1.0 and model.classes == 0 and not model.cfg.has_text:
        raise ConfigError("--cfg-scale needs a class- or text-conditional prior")


def _labels_for(model, labels: torch.Tensor | None, n: int, s: SamplingConfig, device):
    """Conditional labels, doubled with "no class" when guidance is on."""
    check_conditions(model, labels is not None, s)
    lab = labels.to(device) if labels is not None else torch.full((n,), -1, device=device)
    if s.cfg_scale != 1.0:
        return torch.cat([lab, torch.full_like(lab, -1)])
    return lab


def _guide(logits: torch.Tensor, n: int, s: SamplingConfig) -> torch.Tensor:
    if s.cfg_scale == 1.0:
        return logits
    cond, uncond = logits[:n].float(), logits[n:].float()
    return uncond + s.cfg_scale * (cond - uncond)


def _double(x: torch.Tensor, s: SamplingConfig) -> torch.Tensor:
    return torch.cat([x, x]) if s.cfg_scale != 1.0 else x


def _start(model, labels, n, s: SamplingConfig, device) -> tuple[int, torch.Tensor]:
    """Rows run through the network (doubled under guidance) and their start tokens."""
    lab = _labels_for(model, labels, n, s, device)
    start = model.cond(model.cond_index(lab, len(lab), device))[:, None] + model.pos[:, :1]
    return len(lab), start


@torch.no_grad()
def sample_ar(model, n, labels, s: SamplingConfig, generator, device) -> torch.Tensor:
    t = model.cfg.tokens_per_image
    m, start = _start(model, labels, n, s, device)
    out = torch.zeros(n, t, dtype=torch.long, device=device)
    if s.use_cache:
        cache = model.net.new_cache(m, t, start)
        h = model.net(start, causal=True, cache=cache)
    for i in range(t):
        if not s.use_cache:
            x = torch.cat([start, model.embed(_double(out[:, :i], s), 1)], dim=1)
            h = model.net(x, causal=True)
        ids, _ = sample_from(_guide(model.head(h[:, -1]), n, s), s, generator)
        out[:, i] = ids
        if s.use_cache and i + 1 < t:
            h = model.net(model.embed(_double(ids[:, None], s), i + 1), causal=True, cache=cache)
    return out


@torch.no_grad()
def sample_rq(model, n, labels, s: SamplingConfig, generator, device) -> torch.Tensor:
    positions, depth = model.positions, model.depth
    m, start = _start(model, labels, n, s, device)
    codes = torch.zeros(n, positions, depth, dtype=torch.long, device=device)
    if s.use_cache:
        cache = model.spatial.new_cache(m, positions, start)
        h = model.spatial(start, causal=True, cache=cache)
    for i in range(positions):
        if not s.use_cache:
            x = torch.cat([start, model.spatial_input(_double(codes[:, :i], s), 1)], dim=1)
            h = model.spatial(x, causal=True)
        context = h[:, -1]
        for d in range(depth):
            logits = model.depth_logits(context, _double(codes[:, i, :d], s))[:, -1]
            codes[:, i, d], _ = sample_from(_guide(logits, n, s), s, generator)
        if s.use_cache and i + 1 < positions:
            x = model.spatial_input(_double(codes[:, i : i + 1], s), i + 1)
            h = model.spatial(x, causal=True, cache=cache)
    return codes.reshape(n, positions * depth)


def _text_for(model, text: torch.Tensor | None, n: int, s: SamplingConfig, device):
    """Prompt text ids (all pad: no caption), doubled with "no caption" under guidance."""
    text = model.text_or_null(text, n, device)
    return torch.cat([text, model.null_text(n, device)]) if s.cfg_scale != 1.0 else text


@torch.no_grad()
def sample_text_ar(model, n, labels, text, s: SamplingConfig, generator, device):
    """DALL-E: the caption prefix into the cache at once, then image tokens one by one."""
    t, length = model.cfg.tokens_per_image, model.text_len
    lab = _labels_for(model, labels, n, s, device)
    prefix = model.prefix(_text_for(model, text, n, s, device), lab)
    out = torch.zeros(n, t, dtype=torch.long, device=device)
    cache = model.net.new_cache(len(prefix), length + t, prefix) if s.use_cache else None
    h = model.net(prefix, causal=True, cache=cache)
    for i in range(t):
        if cache is None and i:
            x = torch.cat([prefix, model.embed(_double(out[:, :i], s), length + 1)], dim=1)
            h = model.net(x, causal=True)
        ids, _ = sample_from(_guide(model.head(h[:, -1]), n, s), s, generator)
        out[:, i] = ids
        if cache is not None and i + 1 < t:
            x = model.embed(_double(ids[:, None], s), length + 1 + i)
            h = model.net(x, causal=True, cache=cache)
    return out


@torch.no_grad()
def sample_maskgit(
    model, n, labels, s: SamplingConfig, generator, device, history: list | None = None, text=None
) -> torch.Tensor:
    t = model.cfg.tokens_per_image
    schedule = mask_schedule(t, s.steps)
    lab = _labels_for(model, labels, n, s, device)
    cond = (_text_for(model, text, n, s, device),) if model.cfg.has_text else ()
    tokens = torch.full((n, t), model.mask_id, dtype=torch.long, device=device)
    for step, keep_masked in enumerate(schedule):
        logits = _guide(model(_double(tokens, s), lab, *cond), n, s)
        ids, logp = sample_from(logits, s, generator)
        unknown = tokens == model.mask_id
        ids = torch.where(unknown, ids, tokens)
        noise_t = s.choice_temperature * (1 - (step + 1) / s.steps)
        u = torch.rand(logp.shape, device=device, generator=generator).clamp_(1e-20, 1 - 1e-7)
        confidence = logp + noise_t * -torch.log(-torch.log(u))
        confidence = confidence.masked_fill(~unknown, float("inf"))
        ranks = confidence.argsort(dim=1).argsort(dim=1)
        tokens = torch.where(ranks < keep_masked, model.mask_id, ids)
        if history is not None:
            history.append((tokens == model.mask_id).sum(dim=1).tolist())
    return tokens


def _depth_sample(model, context, n, s: SamplingConfig, generator) -> tuple:
    """D codes per context row (doubled under guidance), autoregressively over depth:
    (codes (M, D), summed log-probabilities (M,))."""
    m = context.shape[0] // (2 if s.cfg_scale != 1.0 else 1)
    codes = torch.zeros(m, model.depth, dtype=torch.long, device=context.device)
    logp = torch.zeros(m, device=context.device)
    for d in range(model.depth):
        logits = model.depth_logits(context, _double(codes[:, :d], s))[:, -1]
        codes[:, d], lp = sample_from(_guide(logits, m, s), s, generator)
        logp += lp
    return codes, logp


@torch.no_grad()
def sample_contextual_rq(model, n, labels, s: SamplingConfig, generator, device, history=None):
    """Draft: positions decoded MaskGIT-style in `s.steps` parallel steps (each unknown
    position's D codes drawn by the depth transformer, the most confident kept); revise:
    `s.revise_rounds` times, positions split at random into `s.revise_groups` groups, each
    group re-masked and drawn again given all the others."""
    positions, depth = model.positions, model.depth
    lab = _labels_for(model, labels, n, s, device)
    codes = torch.zeros(n, positions, depth, dtype=torch.long, device=device)
    known = torch.zeros(n, positions, dtype=torch.bool, device=device)
    for step, keep_masked in enumerate(mask_schedule(positions, min(s.steps, positions))):
        ctx = model.context(_double(codes, s), _double(~known, s), lab)
        ctx = ctx.reshape(-1, ctx.shape[-1]) if s.cfg_scale == 1.0 else torch.cat(
            [ctx[:n].reshape(-1, ctx.shape[-1]), ctx[n:].reshape(-1, ctx.shape[-1])]
        )  # fmt: skip
        drawn, logp = _depth_sample(model, ctx, n, s, generator)
        drawn, logp = drawn.reshape(n, positions, depth), logp.reshape(n, positions)
        noise_t = s.choice_temperature * (1 - (step + 1) / s.steps)
        u = torch.rand(logp.shape, device=device, generator=generator).clamp_(1e-20, 1 - 1e-7)
        confidence = (logp + noise_t * -torch.log(-torch.log(u))).masked_fill(known, float("inf"))
        ranks = confidence.argsort(dim=1).argsort(dim=1)
        newly = ~known & (ranks >= keep_masked)
        codes = torch.where(newly[..., None], drawn, codes)
        known = known | newly
        if history is not None:
            history.append((~known).sum(dim=1).tolist())
    for _ in range(s.revise_rounds):
        order = torch.rand(n, positions, device=device, generator=generator).argsort(dim=1)
        for g in range(s.revise_groups):
            chosen = torch.zeros(n, positions, dtype=torch.bool, device=device)
            chosen.scatter_(1, order[:, g :: s.revise_groups], True)
            ctx = model.context(_double(codes, s), _double(chosen, s), lab)
            flat = ctx.reshape(-1, ctx.shape[-1]) if s.cfg_scale == 1.0 else torch.cat(
                [ctx[:n].reshape(-1, ctx.shape[-1]), ctx[n:].reshape(-1, ctx.shape[-1])]
            )  # fmt: skip
            drawn, _ = _depth_sample(model, flat, n, s, generator)
            codes = torch.where(chosen[..., None], drawn.reshape(n, positions, depth), codes)
    return codes.reshape(n, positions * depth)


def generate(model, n, labels, s: SamplingConfig, generator, device, history=None, text=None):
    """`n` token rows; `text`: (n, L) prompt ids for a text prior (None: no caption)."""
    kind = model.cfg.kind
    s.validate("maskgit" if kind == "muse" else kind, model.cfg.tokens_per_image)
    if text is not None and not model.cfg.has_text:
        raise ConfigError(f"--prompt: this {kind} prior was trained without captions")
    if kind in ("maskgit", "muse"):
        return sample_maskgit(model, n, labels, s, generator, device, history, text)
    if kind == "dalle":
        return sample_text_ar(model, n, labels, text, s, generator, device)
    if kind == "contextual_rq":
        return sample_contextual_rq(model, n, labels, s, generator, device, history)
    if kind == "rq":
        return sample_rq(model, n, labels, s, generator, device)
    return sample_ar(model, n, labels, s, generator, device)
