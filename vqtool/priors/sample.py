"""`vqtool sample`: a prior's new token rows, decoded to pictures by the
tokenizer it was trained on (refused otherwise), optionally also written as a
token shard."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vqtool import __version__
from vqtool.atomic import sweep
from vqtool.data.pictures import make_grid, save_png
from vqtool.errors import CheckpointError, ConfigError
from vqtool.pretrained.opener import open_tokenizer
from vqtool.pretrained.records import recorded_tokenizer
from vqtool.priors.checkpoint import load_prior
from vqtool.priors.sampling import SamplingConfig, check_conditions, generate
from vqtool.priors.text import CaptionEncoder, TextConfig
from vqtool.runtime import pick_device
from vqtool.tokens.decode import check_layout
from vqtool.tokens.schema import token_dtype, token_schema
from vqtool.tokens.writer import TaskWriter


@dataclass
class SampleConfig:
    prior: str
    tokenizer: str | None  # None: the one the prior's tokens recorded
    n: int
    out: str  # a .png grid, or a folder of one PNG per sample
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    label: int | None = None
    seed: int = 0
    tokens_out: str | None = None  # also write the rows as a token Parquet file
    device: str = "auto"
    batch_size: int = 16
    prompt: str | None = None  # text priors: one caption for every image ...
    prompts_file: str | None = None  # ... or a file of captions, image i gets line i
    text_tokenizer: str | None = None  # default: the tokenizer.json recorded at training


@dataclass
class SampleResult:
    out: str
    files: list[str]
    tokens_out: str | None
    n: int
    kind: str
    tokens_per_image: int
    seconds: float  # generation only (decoding to pixels excluded)
    tokens_per_s: float
    device: str
    seed: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _open(cfg: SampleConfig, device):
    """(cfg with its tokenizer named, the prior, the tokenizer): the tokenizer given, else
    the one the prior's tokens recorded; refused when another wrote those tokens."""
    loaded = load_prior(cfg.prior, device)
    if cfg.tokenizer is None:  # the tokenizer of the tokens the prior was trained on
        record = loaded.tokens_meta.get("tokenizer", {})
        found = recorded_tokenizer(record, Path(cfg.prior).parent, f"prior {cfg.prior}'s data")
        cfg = dataclasses.replace(cfg, tokenizer=found)
    opened = open_tokenizer(cfg.tokenizer, device)
    other = opened.other_writer(loaded.tokens_meta.get("tokenizer", {}),
                                f"prior {cfg.prior} was trained on tokens")  # fmt: skip
    if other:
        raise CheckpointError(f"{other}. Use the tokenizer the training tokens were encoded with.")
    check_layout(loaded.tokens_meta, opened.tokenizer.layout, f"prior {cfg.prior}", cfg.tokenizer)
    pc = loaded.config
    if cfg.label is not None and not 0 <= cfg.label < max(pc.num_classes, 1):
        raise ConfigError(
            f"--label {cfg.label}: this prior has "
            + (f"classes 0..{pc.num_classes - 1}" if pc.num_classes else "no classes")
        )
    return cfg, loaded, opened.tokenizer


def _generate(cfg: SampleConfig, loaded, captions, device, callback) -> torch.Tensor:
    """`cfg.n` token rows in batches (prompts, when given, cycle over the rows)."""
    model = loaded.model
    encoder = _caption_encoder(cfg, loaded) if loaded.config.has_text else None
    if captions is not None and encoder is None:
        raise ConfigError(
            f"--prompt: prior {cfg.prior} ({loaded.config.kind}) was trained without captions"
        )
    check_conditions(model, cfg.label is not None, cfg.sampling)  # before any progress
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    rows: list[torch.Tensor] = []
    callback(0, cfg.n)
    for a in range(0, cfg.n, cfg.batch_size):
        n = min(cfg.batch_size, cfg.n - a)
        labels = torch.full((n,), cfg.label, device=device) if cfg.label is not None else None
        text = None
        if captions is not None:
            text = encoder([captions[(a + i) % len(captions)] for i in range(n)]).to(device)
        rows.append(generate(model, n, labels, cfg.sampling, generator, device, text=text))
        callback(a + n, cfg.n)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return torch.cat(rows)


def sample(cfg: SampleConfig, callback: Callable[[int, int], None] | None = None) -> SampleResult:
    """Generate `cfg.n` token grids and decode them; `callback(done, total)` after each
    batch of grids."""
    callback = callback or (lambda done, total: None)
    if cfg.n < 1:
        raise ConfigError(f"-n must be >= 1, got {cfg.n}")
    device = pick_device(cfg.device)
    cfg, loaded, tok = _open(cfg, device)
    captions = _prompts(cfg)
    t0 = time.perf_counter()
    tokens = _generate(cfg, loaded, captions, device, callback)
    seconds = time.perf_counter() - t0
    pictures = torch.cat(
        [tok.decode(tokens[a : a + cfg.batch_size]).cpu() for a in range(0, cfg.n, cfg.batch_size)]
    )
    out = Path(cfg.out)
    sweep(out.parent if out.suffix.lower() == ".png" else out)  # what a killed sample left
    if out.suffix.lower() == ".png":
        files = [str(save_png(make_grid(list(pictures)), out))]
    else:
        files = [str(save_png(p, out / f"sample-{i:04d}.png")) for i, p in enumerate(pictures)]
    tokens_out = None
    if cfg.tokens_out:
        rows_captions = [captions[i % len(captions)] for i in range(cfg.n)] if captions else None
        tokens_out = str(_write_tokens(cfg, loaded, tokens.cpu().numpy(), rows_captions))
    pc = loaded.config
    return SampleResult(
        out=str(out),
        files=files,
        tokens_out=tokens_out,
        n=cfg.n,
        kind=pc.kind,
        tokens_per_image=pc.tokens_per_image,
        seconds=seconds,
        tokens_per_s=tokens.numel() / max(seconds, 1e-9),
        device=str(device),
        seed=cfg.seed,
    )


def _prompts(cfg: SampleConfig) -> list[str] | None:
    if cfg.prompt is not None and cfg.prompts_file is not None:
        raise ConfigError("give --prompt or --prompts, not both")
    if cfg.prompt is not None:
        return [cfg.prompt]
    if cfg.prompts_file is None:
        return None
    path = Path(cfg.prompts_file)
    if not path.is_file():
        raise ConfigError(f"--prompts {path}: no such file (one caption per line)")
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if not lines:
        raise ConfigError(f"--prompts {path}: the file holds no captions (one per line)")
    return lines


def _caption_encoder(cfg: SampleConfig, loaded) -> CaptionEncoder:
    """The text tokenizer the prior was trained with (sha256 checked)."""
    record = json.loads(loaded.metadata.get("vqtool.text", "{}"))
    if not record:
        raise CheckpointError(f"prior {cfg.prior}: no text tokenizer recorded")
    text_cfg = TextConfig(tokenizer=record["path"], max_length=record["max_length"],
                          truncation=record.get("truncation", True))  # fmt: skip
    path = cfg.text_tokenizer or record["path"]
    if not Path(path).is_file():
        raise CheckpointError(
            f"prior {cfg.prior} was trained with text tokenizer {record['path']}, which is not "
            "there; give it with --text-tokenizer"
        )
    named_by = "--text-tokenizer" if cfg.text_tokenizer else "the prior's recorded text tokenizer"
    encoder = CaptionEncoder(text_cfg, path, named_by)
    if encoder.text.sha256 != record["sha256"]:
        raise CheckpointError(
            f"--text-tokenizer {path} (sha256 {encoder.text.sha256[:12]}...) is not the text "
            f"tokenizer prior {cfg.prior} was trained with ({record['sha256'][:12]}...)"
        )
    return encoder


def _write_tokens(
    cfg: SampleConfig, loaded, tokens: np.ndarray, captions: list[str] | None = None
) -> Path:
    path = Path(cfg.tokens_out)
    if path.suffix != ".parquet":
        raise ConfigError(f"--tokens-out {path}: give a .parquet file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    vocab = loaded.config.vocab_size
    s = cfg.sampling
    meta = {
        **loaded.tokens_meta,
        "vqtool_version": __version__,
        "sampled": {
            "prior": Path(cfg.prior).name,
            "prior_kind": loaded.config.kind,
            "seed": cfg.seed,
            "temperature": s.temperature,
            "top_k": s.top_k,
            "top_p": s.top_p,
            "cfg_scale": s.cfg_scale,
            "steps": s.steps if loaded.model.uses_steps else None,
            "label": cfg.label,
        },
    }
    writer = TaskWriter(path.parent, path.stem, token_schema(vocab, meta))
    n = len(tokens)
    dtype = np.dtype(token_dtype(vocab))
    size = (loaded.tokens_meta.get("preprocessing") or {}).get("image_size")
    writer.add(
        tokens.astype(dtype),
        {
            "key": [f"sample-{i:06d}" for i in range(n)],
            "source": [f"vqtool sample {Path(cfg.prior).name}"] * n,
            "source_index": list(range(n)),
            "caption": captions or [None] * n,
            "label": [cfg.label] * n,
            "width": [size] * n,
            "height": [size] * n,
        },
    )
    writer.commit([], {"config_hash": "sampled", "shards": []})
    return path
