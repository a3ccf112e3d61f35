"""The prior checkpoint: `RUN/prior.safetensors` with `vqtool.format = prior/1`,
the prior's config, and the tokenizer it models (sha256, layout, the token
metadata), so a prior is never paired with the wrong tokenizer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from vqtool import __version__
from vqtool.atomic import replacing
from vqtool.models.weights import check_weights, read_checkpoint
from vqtool.priors.models import PriorConfig, build_prior
from vqtool.utils import config_from_dict

FORMAT = "prior/1"


def save_prior(model, path: str | Path, tokens_meta: dict, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tok = tokens_meta.get("tokenizer", {})
    meta = {
        "vqtool.format": FORMAT,
        "vqtool.config": json.dumps(model.cfg.to_dict()),
        "vqtool.version": __version__,
        "vqtool.tokenizer.sha256": tok.get("sha256") or "",
        "vqtool.tokens": json.dumps(
            {k: tokens_meta.get(k) for k in ("vocab_size", "layout", "preprocessing", "dtype")}
            | {"tokenizer": tok}
        ),
        **(metadata or {}),
    }
    path = Path(path)
    with replacing(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


@dataclass
class LoadedPrior:
    model: torch.nn.Module
    config: PriorConfig
    tokenizer_sha256: str
    tokens_meta: dict
    metadata: dict


def load_prior(path: str | Path, device="cpu") -> LoadedPrior:
    path = Path(path)
    meta, tensors = read_checkpoint(path, FORMAT, "prior")
    cfg = config_from_dict(PriorConfig, json.loads(meta["vqtool.config"]), "prior.")
    model = build_prior(cfg)
    check_weights(model, tensors, path)
    return LoadedPrior(
        model.to(device).eval(),
        cfg,
        meta.get("vqtool.tokenizer.sha256", ""),
        json.loads(meta.get("vqtool.tokens", "{}")),
        meta,
    )
