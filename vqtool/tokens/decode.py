"""Token rows back to pictures (`vqtool decode`), for a visual check.

Rows come from token Parquet (by key, by row range or the first N) or from
one JSON list on stdin; they are decoded with the tokenizer and written as
one PNG per row or a single grid. `compare` puts each decoded image beside
its source (found by key in the original shards, preprocessed the way encode
did) and measures PSNR. Tokens whose vocabulary or layout do not fit the
tokenizer are refused.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vqtool.assets import DEFAULT_TOKENIZER
from vqtool.atomic import sweep
from vqtool.data.decoding import InputRule
from vqtool.data.images import encode_pixels, native_pixels
from vqtool.data.pictures import make_grid, safe_name, save_png, side_by_side
from vqtool.data.policies import parse_policy
from vqtool.data.remote import is_url, redact
from vqtool.data.sources import expand_sources, iter_samples
from vqtool.errors import CheckpointError, DecodeError, TokenDataError
from vqtool.lm.exported import ExportSet, is_export
from vqtool.metrics.image import psnr
from vqtool.models.saving import saved_pixels
from vqtool.models.tokenizer import TokenLayout
from vqtool.pretrained.opener import is_vqtool_file, open_tokenizer
from vqtool.pretrained.records import recorded_tokenizer
from vqtool.runtime import pick_device
from vqtool.tokens.reader import TokenDataset

DEFAULT_LIMIT = 16


@dataclass
class DecodeConfig:
    tokens: str  # token Parquet file or encode folder; "-" = JSON on stdin (stdin_text)
    tokenizer: str | None  # checkpoint path or bundled name; None: the one recorded
    out: str  # a .png file (one row, or --grid) or a folder (one PNG per row)
    keys: list[str] | None = None
    rows: tuple[int, int] | None = None  # [a, b) global row range
    limit: int | None = None  # first N rows (default DEFAULT_LIMIT when nothing is chosen)
    grid: bool = False
    scales: bool = False  # pyramid tokens: the picture after each scale, side by side
    compare: list[str] | None = None  # source shards to find the original images in
    device: str = "auto"
    stdin_text: str | None = None
    image_size: int | None = None  # a public tokenizer file's input size (default: recorded)
    force: bool = False  # decode tokens written by another tokenizer anyway (with a warning)
    text_tokenizer: str | None = None  # an export's caption tokenizer (default: as recorded)


@dataclass
class DecodedImage:
    key: str
    path: str
    psnr: float | None = None
    caption: str | None = None  # an export document's caption text
    label: int | None = None  # an export document's class


@dataclass
class DecodeResult:
    out: str
    tokenizer: str
    images: list[DecodedImage]
    grid: bool
    mean_psnr: float | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "out": self.out,
            "tokenizer": self.tokenizer,
            "grid": self.grid,
            "images": [i.__dict__ for i in self.images],
            "mean_psnr": self.mean_psnr,
            "warnings": self.warnings,
            "notes": self.notes,
        }


@dataclass
class _Recorded:
    """An export's record of its token source, in the shape of `TokenDataset` facts."""

    meta: dict

    @property
    def tokenizer_sha256(self) -> str | None:
        return self.meta["tokenizer"]["sha256"]


def check_layout(tokens_meta: dict, layout: TokenLayout, what: str, tokenizer: str) -> None:
    """Refuse token rows recorded with another vocabulary or layout, naming both."""
    theirs = tokens_meta.get("layout") or {}
    vocab = tokens_meta.get("vocab_size", theirs.get("vocab_size"))
    grids = [list(g) for g in theirs.get("grids", [])]
    depth = theirs.get("depth")
    mine = [list(g) for g in layout.grids]
    if vocab != layout.vocab_size or grids != mine or depth != layout.depth:
        raise TokenDataError(
            f"{what} hold tokens with vocabulary {vocab} and layout grids {grids} depth {depth}; "
            f"tokenizer {tokenizer} has vocabulary {layout.vocab_size} and layout grids {mine} "
            f"depth {layout.depth}. Decode with the tokenizer the tokens were encoded with."
        )


def parse_json_tokens(text: str, layout: TokenLayout) -> np.ndarray:
    """One JSON list of tokens (or a list of such lists) -> (N, T) array."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TokenDataError(f"stdin: not JSON ({exc}); give a list of token ids") from exc
    if isinstance(data, list) and data and all(isinstance(v, int) for v in data):
        data = [data]
    if not (isinstance(data, list) and data and all(isinstance(r, list) for r in data)):
        raise TokenDataError("stdin: expected a JSON list of token ids, or a list of such lists")
    for r in data:
        if len(r) != layout.tokens_per_image or not all(isinstance(v, int) for v in r):
            raise TokenDataError(
                f"stdin: a row of {len(r)} values does not fit the tokenizer's layout "
                f"({layout.tokens_per_image} integer tokens per image)"
            )
    rows = np.asarray(data, dtype=np.int64)
    if rows.min() < 0 or rows.max() >= layout.vocab_size:
        bad = int(rows.max()) if rows.max() >= layout.vocab_size else int(rows.min())
        raise TokenDataError(
            f"stdin: token {bad} is outside the tokenizer's vocabulary of {layout.vocab_size}"
        )
    return rows


def find_sources(
    sources: list[str],
    keys: list[str],
    size: int,
    resize: str = "bicubic",
    policy: tuple = ("square",),
    factor: int = 1,
    rule: InputRule | None = None,
    draft: bool | None = None,
) -> dict[str, torch.Tensor]:
    """Source images by key, resized and cropped to `size` the way encode preprocesses
    (under the folder's input rule; None: the family's own)."""
    wanted = set(keys)
    found: dict[str, torch.Tensor] = {}
    for shard in expand_sources(sources):
        for sample in iter_samples(shard):
            if sample.key in wanted and sample.key not in found and not sample.error:
                try:
                    found[sample.key] = (
                        encode_pixels(sample.data, size, resize, rule=rule, draft=draft)[0]
                        if policy[0] == "square"
                        else native_pixels(sample.data, policy, factor, resize, rule=rule)[0]
                    )  # fmt: skip
                except DecodeError:
                    continue
            if len(found) == len(wanted):
                return found
    absent = sorted(wanted - set(found))
    raise TokenDataError(
        f"--compare: key(s) {', '.join(absent[:5])} not found (or not decodable) in "
        f"{', '.join(sources)}"
    )


@dataclass
class _Chosen:
    """The rows to decode: keys, tokens (N, T) or rows of their own lengths, their grids
    (None: the tokenizer's), and an export's captions and document index rows."""

    keys: list[str]
    tokens: object
    grids: list | None = None
    captions: list | None = None
    docs: list | None = None


def _open_tokens(cfg: DecodeConfig):
    """(the export, the token dataset or its record in an export) the rows come from."""
    if is_export(cfg.tokens):
        export = ExportSet.open(cfg.tokens, cfg.text_tokenizer)
        t = export.manifest["tokens"]
        ds = _Recorded({"layout": t["layout"], "vocab_size": t["vocab_size"],
                        "tokenizer": t.get("tokenizer") or {
                            "sha256": t["tokenizer_sha256"], "path": t.get("tokenizer_path")},
                        "preprocessing": t.get("preprocessing") or {}})  # fmt: skip
        return export, ds
    return None, None if cfg.tokens == "-" else TokenDataset.open(cfg.tokens)


def _open_decoder(cfg: DecodeConfig, ds, device):
    """(cfg with its tokenizer named, the opened tokenizer): the one given, else the one
    the tokens recorded; a public file runs at the size the tokens were encoded at."""
    if cfg.tokenizer is None:  # the tokenizer the tokens name
        if ds is None:
            cfg = dataclasses.replace(cfg, tokenizer=DEFAULT_TOKENIZER)
        else:
            near = Path(cfg.tokens) if Path(cfg.tokens).is_dir() else Path(cfg.tokens).parent
            found = recorded_tokenizer(ds.meta.get("tokenizer") or {}, near, cfg.tokens)
            cfg = dataclasses.replace(cfg, tokenizer=found)
    size = cfg.image_size
    if size is None and ds is not None and not is_vqtool_file(cfg.tokenizer):
        size = (ds.meta.get("preprocessing") or {}).get("image_size")
    opened = open_tokenizer(cfg.tokenizer, device, size)
    opened.tokenizer.refuse_encoder_only()  # before reading any tokens
    return cfg, opened


def _choose(cfg: DecodeConfig, ds, export, opened, warnings: list[str]) -> _Chosen:
    """The rows asked for (by key, range or the first N), checked against the tokenizer."""
    layout = opened.tokenizer.layout
    if cfg.tokens == "-":
        tokens = parse_json_tokens(cfg.stdin_text or "", layout)
        return _Chosen([f"stdin-{i}" for i in range(len(tokens))], tokens)
    check_layout(ds.meta, layout, cfg.tokens, cfg.tokenizer)
    message = opened.other_writer(ds.meta.get("tokenizer", {}), "the tokens were")
    if message:
        if not cfg.force:
            raise CheckpointError(
                f"{message}: pass that file as --tokenizer (or --force to decode with this "
                "one anyway; the layout fits but the pictures may be meaningless)"
            )
        warnings.append(f"{message}; the layout fits but the pictures may be meaningless")
    chosen = any(x is not None for x in (cfg.keys, cfg.rows, cfg.limit))
    limit = None if cfg.keys or cfg.rows else (cfg.limit if chosen else DEFAULT_LIMIT)
    if export is not None:
        keys, tokens, captions, docs = export.select(cfg.keys, cfg.rows, limit)
        grids = None
        if docs and docs[0].get("grid_h") is not None:  # rows of their own grids
            grids = [(d["grid_h"], d["grid_w"]) for d in docs]
        return _Chosen(keys, tokens, grids, captions, docs)
    if getattr(ds, "native", False):
        return _Chosen(*ds.select_native(cfg.keys, cfg.rows, limit))
    return _Chosen(*ds.select(cfg.keys, cfg.rows, limit))


def _pictures(tok, rows: _Chosen, cfg: DecodeConfig, device) -> list[torch.Tensor]:
    """Decoded uint8 pictures, converted as the tokenizer's original saves its images, one
    row at a time: a row's picture does not depend on the rows decoded beside it (on a
    CPU with 2 threads, decoding 4 Janus, Open-MAGVIT2 or MaskGIT rows together changed
    80-99% of the output floats in their last bits against one at a time)."""
    if rows.grids is not None and cfg.grid and len(set(rows.grids)) > 1:
        raise TokenDataError(
            "--grid needs pictures of one size, and these rows have grids "
            f"{sorted(set(rows.grids))[:3]}...; leave --grid out for one PNG per row"
        )
    grids = rows.grids if rows.grids is not None else [None] * len(rows.tokens)
    pictures: list[torch.Tensor] = []
    for row, grid in zip(rows.tokens, grids):
        chunk = torch.from_numpy(np.asarray(row).astype(np.int64)).to(device)[None]
        if cfg.scales:
            pictures.append(side_by_side(scale_pictures(tok, chunk, grid)))
        else:
            pictures.append(tok.decode_uint8(chunk, grid)[0].cpu())
    return pictures


@torch.inference_mode()
def scale_pictures(tok, tokens: torch.Tensor, grid=None) -> list[torch.Tensor]:
    """One pyramid row (1, T) (`grid`: its last scale, for a row of its own shape) -> the
    uint8 picture after each scale, coarse first (VAR's `idxBl_to_img(same_shape=True,
    last_one=False)`, Infinity's `decode_from_indices` of the first scales), converted as
    decode converts."""
    if not getattr(tok.net, "pyramid", False):
        raise TokenDataError(
            "--scales needs pyramid tokens (a multi-scale tokenizer such as VAR's or "
            "Infinity's); this tokenizer's rows are one grid"
        )
    scales = len((tok.layout_at(grid) if grid is not None else tok.layout).grids)
    return [saved_pixels(tok, tok.decode_output(tokens, grid, levels=k))[0].cpu()
            for k in range(1, scales + 1)]  # fmt: skip


def _write_pictures(cfg: DecodeConfig, images: list[DecodedImage], pictures: list) -> Path:
    """One PNG per row in a folder, one PNG, or a grid; an export row's caption beside it."""
    out = Path(cfg.out)
    sweep(out.parent if out.suffix.lower() == ".png" else out)  # what a killed decode left
    if cfg.grid:
        target = out if out.suffix.lower() == ".png" else out / "grid.png"
        save_png(make_grid(pictures), target)
        for img in images:
            img.path = str(target)
    elif out.suffix.lower() == ".png":
        if len(pictures) != 1:
            raise TokenDataError(
                f"--out {out} is one PNG but {len(pictures)} rows were chosen; give a folder "
                "for one PNG per row, or --grid"
            )
        images[0].path = str(save_png(pictures[0], out))
    else:
        used: set[str] = set()
        for img, pic in zip(images, pictures):
            name = safe_name(img.key)
            while name in used:
                name += "_"
            used.add(name)
            img.path = str(save_png(pic, out / f"{name}.png"))
    for img in images:
        if img.caption is not None and not cfg.grid:
            Path(img.path).with_suffix(".txt").write_text(img.caption + "\n")
    return out


def decode(cfg: DecodeConfig) -> DecodeResult:
    if sum(x is not None for x in (cfg.keys, cfg.rows, cfg.limit)) > 1:
        raise TokenDataError("give one of --keys, --rows and --limit")
    if is_url(cfg.out):
        raise TokenDataError(f"--out {redact(cfg.out)}: decode writes PNGs to a local path")
    device = pick_device(cfg.device)
    export, ds = _open_tokens(cfg)
    cfg, opened = _open_decoder(cfg, ds, device)
    tok = opened.tokenizer
    warnings: list[str] = []
    if cfg.scales and cfg.compare:
        raise TokenDataError("--scales and --compare: choose one (a row is a strip of scales)")
    rows = _choose(cfg, ds, export, opened, warnings)
    sources = None
    if cfg.compare:
        pre = (ds.meta.get("preprocessing") or {}) if ds is not None else {}
        policy = parse_policy(pre.get("policy", "square"))
        # the folder's recorded rule; else (an earlier folder) the family's
        rule = InputRule(pre["orientation"], pre.get("high_bit_depth", "scale")) if (
            "orientation" in pre) else None  # fmt: skip
        draft = {"pil": False, "draft": True}.get(pre.get("decode"))  # recorded if not default
        sources = find_sources(cfg.compare, rows.keys, tok.config.image_size, tok.config.resize,
                               policy, getattr(tok.net, "factor", 1), rule, draft)  # fmt: skip
    pictures = _pictures(tok, rows, cfg, device)
    images = [DecodedImage(k, "") for k in rows.keys]
    if export is not None:
        for img, caption, doc in zip(images, rows.captions, rows.docs):
            img.caption, img.label = caption, doc["label"]
    if sources is not None:
        for img, pic in zip(images, pictures):
            ref = sources[img.key].float().unsqueeze(0) / 255
            img.psnr = float(psnr(pic.float().unsqueeze(0) / 255, ref))  # the saved picture
        pictures = [side_by_side([sources[k], p]) for k, p in zip(rows.keys, pictures)]
    out = _write_pictures(cfg, images, pictures)
    scores = [i.psnr for i in images if i.psnr is not None]
    return DecodeResult(
        out=str(out),
        tokenizer=cfg.tokenizer,
        images=images,
        grid=cfg.grid,
        mean_psnr=sum(scores) / len(scores) if scores else None,
        warnings=warnings,
        notes=list(opened.notes),
    )
