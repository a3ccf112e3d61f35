"""The prior checkpoint: `RUN/prior.safetensors` with `vqtool.format = prior/1`,
the prior's config, and the tokenizer it models (sha256, layout, the token
metadata), so a prior is never paired with the wrong tokenizer."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from rich.console import Group, RenderableType

from vqtool import __version__
from vqtool.models.tokenizer import check_weights, read_checkpoint
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
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


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


# ----------------------------------------------------------------------------- inspect


@dataclass
class PriorReport:
    path: str
    format: str
    prior_kind: str
    parameters: int
    vocab_size: int
    tokens_per_image: int
    depth: int
    num_classes: int
    layers: int
    width: int
    tokenizer_sha256: str
    tokens: dict
    eval: dict | None
    config: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    kind: str = "prior"

    def to_dict(self) -> dict:
        return asdict(self)


def inspect_prior(path: Path, meta: dict) -> PriorReport:
    loaded = load_prior(path)
    c = loaded.config
    return PriorReport(
        path=str(path),
        format=meta.get("vqtool.format", ""),
        prior_kind=c.kind,
        parameters=sum(p.numel() for p in loaded.model.parameters()),
        vocab_size=c.vocab_size,
        tokens_per_image=c.tokens_per_image,
        depth=c.depth,
        num_classes=c.num_classes,
        layers=c.layers,
        width=c.width,
        tokenizer_sha256=loaded.tokenizer_sha256,
        tokens=loaded.tokens_meta,
        eval=json.loads(meta["vqtool.eval"]) if meta.get("vqtool.eval") else None,
        config=c.to_dict(),
    )


def render_prior(r: PriorReport) -> RenderableType:
    from vqtool.report.terminal import facts_table

    grids = " + ".join(f"{h}x{w}" for h, w in (r.tokens.get("layout") or {}).get("grids", []))
    rows = [
        ("file", r.path),
        ("format", r.format),
        ("prior", f"{r.prior_kind}, {r.layers} layers x {r.width} wide"),
        ("parameters", f"{r.parameters:,}"),
        ("vocabulary", f"{r.vocab_size:,} (log2 = {math.log2(max(r.vocab_size, 1)):.2f} bits)"),
        ("tokens/image", f"{r.tokens_per_image:,} ({grids}, depth {r.depth})"),
        ("classes", str(r.num_classes) if r.num_classes else "unconditional"),
        ("tokenizer", f"sha256 {r.tokenizer_sha256[:12]}..."),
    ]
    if r.eval:
        e = r.eval
        rows.append(
            (
                "held-out",
                f"{e['bits_per_token']:.3f} bits/token vs unigram {e['unigram_bits']:.3f}, "
                f"log2 V {e['max_bits']:.3f} ({e['rows']} rows)",
            )
        )
    return Group(facts_table("prior checkpoint", rows))
