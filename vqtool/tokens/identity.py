"""What an encode folder pins and records: the job's identity (tokenizer record and
config, vocabulary, layout, preprocessing in words, dtype, compute precision), the
configuration hash that ties every file and done marker to it, and the smaller record
each token file carries."""

from __future__ import annotations

import torch

from vqtool import __version__
from vqtool.data.decoding import OWN_RULE, InputRule
from vqtool.models import Tokenizer
from vqtool.pretrained.opener import OpenedTokenizer
from vqtool.tokens.schema import SCHEMA_VERSION, token_dtype
from vqtool.tokens.tasks import config_hash

RESIZE_WORDS = {
    "bicubic": "short side, bicubic",
    "adm": "ADM: BOX halving, bicubic short side",
    "bilinear": "short side, bilinear (torchvision Resize)",
    "taming": "short side, OpenCV INTER_LINEAR (albumentations SmallestMaxSize)",
    "chameleon": "transparency over white (Chameleon's blend), short side, LANCZOS",
    "emu3": "short side, bicubic (transparency dropped)",
    "janus": "long side, bicubic, padded to a square with grey (127)",
    "showo": "short side, bicubic (torchvision Resize; transparency dropped)",
    "var": "short side to 1.125x, LANCZOS (torchvision Resize), centre crop; transparency "
    "dropped",
    "lumina": "ADM: BOX halving, bicubic short side, in the image's mode; then transparency "
    "over white (Chameleon's blend)",
    "infinity": "LANCZOS to cover (other side truncated), centre crop; transparency dropped",
}


POLICY_WORDS = {
    "none": "none: each image as it is; grid = the network's output for its size",
    "smart": "Emu3's smart_resize: sides multiples of the downsampling, area clamped; bicubic",
    "area": "Emu3.5's smart_resize: AREA pixels at the image's aspect, sides rounded to "
    "multiples of FACTOR; bicubic",
    "crops": "Lumina-mGPT's var_center_crop: the listed crop (TARGET^2 pixels in PATCH "
    "multiples) keeping most of the image; ADM resize and centre crop",
    "templates": "Infinity's aspect-ratio templates: the size of the template nearest the "
    "image's height/width at PIXELS; LANCZOS to cover, centre crop",
}


def job_identity(
    tok: Tokenizer,
    opened: OpenedTokenizer,
    image_size: int,
    amp: torch.dtype | None,
    tf32: bool,
    policy: tuple = ("square",),
    rule: InputRule = OWN_RULE,
) -> dict:
    native = policy[0] != "square"
    layout = tok.layout.to_dict()
    schedules = getattr(tok.net, "schedules", None)
    if native and schedules:  # pyramids of the images' own shapes: each row's by its grid
        layout["schedules"] = {f"{h}x{w}": [list(g) for g in s]
                               for (h, w), s in schedules().items()}  # fmt: skip
    return {
        "vqtool_version": __version__,
        "tokenizer": {**opened.record(), "config": tok.config.to_dict()},
        "vocab_size": tok.vocab_size,
        "layout": layout,
        "preprocessing": {
            "image_size": None if native else image_size,
            "policy": ":".join(map(str, policy)),  # square, none, smart:MIN:MAX, area:A:F
            # per row: (grid_h, grid_w), a pyramid's last scale (its schedule: layout.schedules)
            "grids": "per row (grid_h, grid_w)" if native else "fixed",
            "resize": POLICY_WORDS[policy[0]] if native else RESIZE_WORDS[tok.config.resize],
            "crop": "none" if native else "centre",
            "pixel_arithmetic": tok.config.pixel_arithmetic,
            **rule.to_dict(),  # orientation, high_bit_depth
            "mode": "RGB",
            "pixel_range": tok.config.pixel_range,
        },
        "dtype": token_dtype(tok.vocab_size),
        # what else changes tokens joins the folder's pinned configuration
        "compute": {"precision": "bf16" if amp == torch.bfloat16 else "fp32", "tf32": tf32},
    }


def file_record(identity: dict, config_hash: str) -> dict:
    """What each token file records: the folder's record (`encode.json`) without the
    tokenizer's whole configuration (its quantizer kind stays), and the configuration
    hash that ties the file to that record. Small files stay small (issue 23)."""
    tok = dict(identity["tokenizer"])
    config = tok.pop("config", {}) or {}
    tok["quantizer"] = (config.get("quantizer") or {}).get("kind")
    return {**identity, "tokenizer": tok, "config_hash": config_hash}


def pinned_hash(identity: dict) -> str:
    """The hash of what changes tokens: a folder holds one, every marker repeats it."""
    pinned = {k: identity[k] for k in ("vocab_size", "layout", "preprocessing", "dtype", "compute")}
    pinned.update(tokenizer=identity["tokenizer"]["sha256"], schema_version=SCHEMA_VERSION)
    return config_hash(pinned)
