"""What every prior's sampling shares (each family's own `sample()` is in its module:
`ar`, `maskgit`, `rq`): the sampling settings, the MaskGIT mask schedule, top-k /
nucleus filtering, drawing ids, and the helpers for guidance.

- Classifier-free guidance: logits = uncond + scale * (cond - uncond), with
  the "no class" start token (and, for text priors, the all-pad "no caption")
  for the unconditional half.
- Text priors (`dalle`, `muse`) take the prompts' text ids (B, L).

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

    def validate(self, steps_over: int | None = None) -> None:
        """Check the settings; `steps_over`: the items a step-wise prior decodes in
        `steps` (MaskGIT: the tokens), which `steps` may not exceed."""
        if self.temperature <= 0:
            raise ConfigError(f"--temperature must be > 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"--top-k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p must lie in (0, 1], got {self.top_p}")
        if steps_over is not None and not 1 <= self.steps <= steps_over:
            raise ConfigError(f"--steps must lie in [1, {steps_over}] for {steps_over} tokens")
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


def labels_for(model, labels: torch.Tensor | None, n: int, s: SamplingConfig, device):
    """Conditional labels, doubled with "no class" when guidance is on."""
    check_conditions(model, labels is not None, s)
    lab = labels.to(device) if labels is not None else torch.full((n,), -1, device=device)
    if s.cfg_scale != 1.0:
        return torch.cat([lab, torch.full_like(lab, -1)])
    return lab


def guide(logits: torch.Tensor, n: int, s: SamplingConfig) -> torch.Tensor:
    """Guided logits from the doubled batch: uncond + scale * (cond - uncond)."""
    if s.cfg_scale == 1.0:
        return logits
    cond, uncond = logits[:n].float(), logits[n:].float()
    return uncond + s.cfg_scale * (cond - uncond)


def double(x: torch.Tensor, s: SamplingConfig) -> torch.Tensor:
    """`x` twice under guidance (the conditional half, then the unconditional)."""
    return torch.cat([x, x]) if s.cfg_scale != 1.0 else x


def start_tokens(model, labels, n, s: SamplingConfig, device) -> tuple[int, torch.Tensor]:
    """Rows run through the network (doubled under guidance) and their start tokens."""
    lab = labels_for(model, labels, n, s, device)
    start = model.cond(model.cond_index(lab, len(lab), device))[:, None] + model.pos[:, :1]
    return len(lab), start


def text_for(model, text: torch.Tensor | None, n: int, s: SamplingConfig, device):
    """Prompt text ids (all pad: no caption), doubled with "no caption" under guidance."""
    text = model.text_or_null(text, n, device)
    return torch.cat([text, model.null_text(n, device)]) if s.cfg_scale != 1.0 else text


def keep_confident(logp, known, keep_masked: int, step: int, s: SamplingConfig, generator):
    """MaskGIT's choice: the drawn items' log-probabilities plus Gumbel noise annealed to
    zero over the steps; the `keep_masked` least confident unknown items stay masked.
    (B, N) True where an item is still masked."""
    noise_t = s.choice_temperature * (1 - (step + 1) / s.steps)
    u = torch.rand(logp.shape, device=logp.device, generator=generator).clamp_(1e-20, 1 - 1e-7)
    confidence = (logp + noise_t * -torch.log(-torch.log(u))).masked_fill(known, float("inf"))
    return confidence.argsort(dim=1).argsort(dim=1) < keep_masked


def generate(model, n, labels, s: SamplingConfig, generator, device, history=None, text=None):
    """`n` token rows from `model` (its family's `sample()`); `text`: (n, L) prompt ids
    for a text prior (None: no caption); `history` receives the masked counts per step
    of the step-wise priors."""
    model.check_sampling(s)
    if text is not None and not model.cfg.has_text:
        raise ConfigError(f"--prompt: this {model.cfg.kind} prior was trained without captions")
    return model.sample(n, labels, s, generator, device, history=history, text=text)
