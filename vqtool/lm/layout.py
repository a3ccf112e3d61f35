"""LM document layouts: how one token row (and its caption or label) becomes one
language-model document, and back.

A layout is a TOML file (or a shipped preset, `vqtool/layouts/NAME.toml`) that
maps one-to-one onto `LayoutSpec`; unknown keys and bad values fail naming the
key. Every document follows one template; parts a layout leaves unset vanish:

    bos  [caption]  class  boi  resolution  image_marker  IMAGE  eof  eoi  [caption]  eos

IMAGE is the codes in the token row's order (levels coarse first, raster, depth
innermost, or depth-major per level), each mapped to an LM id by `image_offset`
or a lookup table, with `eol` after every grid row of every level (or only between
rows, `eol_last = false`). The caption
sits before or after the image (or either, per sample, seeded by the sample
key); a dropped caption is replaced by `null_caption` (or nothing).

A special token is an integer id, a list of ids, a string (the text
tokenizer's id for it, or its encoding when it is not one token), or
`{after_image = K}`: the K-th id after the image range (LWM's end-of-frame and
end-of-vision ids live there). Image ids may not collide with text, class,
resolution or special ids: a clash is refused naming both ranges.

This module is the spec (what a user writes) and its presets; binding it to
numbers and building and parsing documents is `lm.documents.ResolvedLayout`.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from vqtool.assets import LAYOUTS
from vqtool.errors import ConfigError
from vqtool.utils import config_from_dict, did_you_mean, shipped_tomls

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_DIR = LAYOUTS
SPECIALS = ("bos", "boi", "image_marker", "eol", "eof", "eoi", "eos", "null_caption", "pad")
Special = int | str | dict | list[int] | None


@dataclass
class LayoutSpec:
    name: str = "custom"
    source: str = ""  # the project and file this layout follows
    # image code -> LM id: code + image_offset (an integer, "text_vocab" = the text
    # tokenizer's size, or a token string whose id is the offset) or a lookup table
    image_offset: int | str = 0
    image_lookup: str | None = None  # .npy int array: the LM id of each code
    # or the text tokenizer's own image tokens, by name: code c is the token named this
    # prefix + c's digits written A-J + one closing character (Chameleon's "IMGIMG...Z")
    image_vocab: str | None = None
    depth_order: Literal["interleaved", "depth_major"] = "interleaved"
    caption: Literal["none", "before", "after", "random"] = "none"
    caption_before_share: float = 0.5  # "random": share of samples with the caption first
    caption_drop: float = 0.0  # probability of a null caption before the image (guidance)
    # a caption before the image is this text with {caption} filled in, tokenized as one
    # text (a chat template: Janus' "<|User|>: {caption}\n\n<|Assistant|>:")
    caption_template: str = "{caption}"
    # a second template, used for this share of the samples (drawn per sample): Lumina-mGPT
    # 2.0 names the image's size in 90% of its prompts and not in the other 10%
    caption_template_alt: str | None = None
    caption_template_alt_share: float = 0.0
    # the text for a caption that is empty (after caption_strip) instead of the template
    # (Janus' chat template writes "<|User|>:" for an empty message, no separator)
    empty_caption_template: str | None = None
    caption_strip: bool = False  # strip a caption's surrounding whitespace first (Janus)
    # newlines inside a caption become spaces (SimpleAR's extract_token.py writes its label
    # files so)
    caption_one_line: bool = False
    # probability of keeping only a caption's first sentence (up to and with its first ".";
    # SimpleAR's sample_short: random.choice([first sentence, whole caption]))
    caption_first_sentence: float = 0.0
    # texts put in front of a caption placed before the image, one drawn per sample and
    # tokenized with the caption as one text (SimpleAR's PROMPTS_GEN: "A photorealistic
    # depiction of " ...)
    caption_prefixes: list[str] = field(default_factory=list)
    # texts appended to a caption placed before the image, one drawn per sample and
    # tokenized with the caption as one string (Liquid's T2I instruction phrases)
    caption_suffixes: list[str] = field(default_factory=list)
    # text between the image and a caption placed after it, tokenized on its own and not
    # trained under loss = "answer" (Liquid's "The caption of this image is:")
    caption_after_prefix: str = ""
    # which tokens a trainer computes its loss on (written beside the ids as a loss mask):
    # "all" (no mask written), "image" (the image codes only: Emu3, LlamaGen), "answer"
    # (what follows the condition: the image and after when the caption comes first or is
    # absent, the caption and after when it follows the image: Liquid, LWM)
    loss: Literal["all", "image", "answer"] = "all"
    # where an "answer" loss after a caption (or none) starts: at the first code, or at the
    # image block's opening tokens (boi and on: LWM trains its <vision> tags)
    loss_start: Literal["codes", "boi"] = "codes"
    # encode captions and { text = ... } specials with the tokenizer's own special tokens
    # (its BOS when it adds one: LWM's tokenizer.encode of each text, with LLaMA's tokenizer)
    text_specials: bool = False
    # the text before the image (bos and the caption) left-padded with `pad` to this many
    # ids, or cut to it keeping its last id (Show-o's max_seq_length + 1); 0: as it is
    text_length: int = 0
    resolution: Literal["none", "ids", "text"] = "none"  # the grid's height and width
    # "text": formatted, then tokenized; {h} {w} the code grid, {height} {width} pixels,
    # {h_token} {w_token} resolution_base + pixels // resolution_unit (Lumina-mGPT 2.0's
    # "<reserved{h_token:05d}>": 8800 + the number of 32-px patches)
    resolution_text: str = "{h}*{w}"
    pixels_per_code: int = 0  # image pixels per code (the tokenizer's f): {width}, {height}
    resolution_unit: int = 1  # pixels per {h_token} / {w_token} step
    resolution_base: int = 0
    resolution_offset: Special = None  # "ids": tokens resolution_offset + h, + w
    class_offset: Special = None  # a class token class_offset + label from the `label` column
    num_classes: int = 0
    class_drop: float = 0.0  # probability of the null class (class_offset + num_classes)
    seed: int = 0  # seeds the per-sample caption position and drops
    bos: Special = None
    boi: Special = None
    image_marker: Special = None  # between the resolution and the codes (Emu3's image token)
    eol: Special = None  # after every grid row ...
    eol_last: bool = True  # ... the last one included (false: only between rows: Emu3.5)
    eof: Special = None  # after the image (end of frame)
    eoi: Special = None
    eos: Special = None
    null_caption: Special = None
    pad: Special = None  # for --pad-to

    def __post_init__(self):
        for key in ("caption_before_share", "caption_drop", "class_drop", "caption_first_sentence",
                    "caption_template_alt_share"):  # fmt: skip
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"{key}: {getattr(self, key)} is not a probability in [0, 1]")
        if self.class_drop and (self.class_offset is None or self.num_classes < 1):
            raise ConfigError("class_drop needs class_offset and num_classes (the null class)")
        if self.class_offset is not None and self.num_classes < 1:
            raise ConfigError("class_offset needs num_classes (labels must be in [0, num_classes))")
        if self.resolution == "ids" and self.resolution_offset is None:
            raise ConfigError('resolution = "ids" needs resolution_offset')
        if sum([self.image_lookup is not None, self.image_vocab is not None,
                self.image_offset != 0]) > 1:  # fmt: skip
            raise ConfigError("give one of image_offset, image_lookup and image_vocab")
        if self.text_length and (self.pad is None or self.caption != "before"):
            raise ConfigError("text_length needs pad and caption = \"before\"")
        for key in ("caption_template", "caption_template_alt"):
            if "{caption}" not in (getattr(self, key) or "{caption}"):
                raise ConfigError(f"{key} {getattr(self, key)!r} has no {{caption}}")
        if self.caption_template_alt_share and self.caption_template_alt is None:
            raise ConfigError("caption_template_alt_share needs caption_template_alt")
        uses_pixels = ("{width}", "{height}", "{h_token", "{w_token")
        texts = (self.caption_template, self.caption_template_alt or "", self.resolution_text)
        if not self.pixels_per_code and any(f in t for t in texts for f in uses_pixels):
            raise ConfigError(
                "{width}, {height}, {h_token} and {w_token} need pixels_per_code (the "
                "tokenizer's pixels per code, e.g. 8 for an f8 tokenizer)"
            )
        if self.resolution_unit < 1 or self.pixels_per_code < 0:
            raise ConfigError("resolution_unit must be >= 1 and pixels_per_code >= 0")
        if self.caption == "none" and (self.caption_drop or self.null_caption is not None):
            raise ConfigError('caption_drop and null_caption need caption other than "none"')
        if self.caption == "none" and (
            self.caption_suffixes or self.caption_after_prefix or self.caption_prefixes
        ):
            raise ConfigError(
                "caption_suffixes, caption_prefixes and caption_after_prefix need caption "
                'other than "none"'
            )

    @property
    def draws(self) -> bool:
        """Whether documents depend on per-sample draws (seeded by the sample's key)."""
        return self.caption == "random" or bool(
            self.caption_drop
            or self.class_drop
            or self.caption_suffixes
            or self.caption_prefixes
            or self.caption_first_sentence
            or self.caption_template_alt_share
        )

    def size_fields(self, grid: tuple[int, int]) -> dict[str, int]:
        """The fields a template or resolution text may name, for one code grid."""
        h, w = int(grid[0]), int(grid[1])
        height, width = h * self.pixels_per_code, w * self.pixels_per_code
        base, unit = self.resolution_base, self.resolution_unit
        return {"h": h, "w": w, "height": height, "width": width,
                "h_token": base + height // unit, "w_token": base + width // unit}  # fmt: skip

    @property
    def needs_text(self) -> bool:
        strings = [getattr(self, k) for k in (*SPECIALS, "class_offset", "resolution_offset")]
        return (
            self.caption != "none"
            or bool(self.caption_suffixes or self.caption_after_prefix or self.caption_prefixes)
            or self.resolution == "text"
            or isinstance(self.image_offset, str)
            or self.image_vocab is not None
            or any(isinstance(v, str) for v in strings)
        )

    def to_dict(self) -> dict:
        return asdict(self)


def list_layouts() -> list[tuple[str, str]]:
    """(name, first comment line) of every shipped preset."""
    return shipped_tomls(PRESET_DIR)


def load_layout(name: str, overrides: list[tuple[list[str], object]] | None = None) -> LayoutSpec:
    """A preset name or a TOML file, with (dotted key, value) overrides applied."""
    path = Path(name)
    if not path.is_file():
        preset = PRESET_DIR / f"{name}.toml"
        if not preset.is_file():
            names = [n for n, _ in list_layouts()]
            raise ConfigError(
                f"--layout {name}: no such file or preset{did_you_mean(name, names)}; presets: "
                f"{', '.join(names)}"
            )
        path = preset
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    for keys, value in overrides or []:
        if len(keys) != 1:
            raise ConfigError(f"--set {'.'.join(keys)}: layout keys are not nested")
        data[keys[0]] = value
    return config_from_dict(LayoutSpec, data)


def sample_uniforms(seed: int, keys: list[str], epoch: int = 0) -> np.ndarray:
    """Seven uniforms in [0, 1) per sample key and epoch, the same wherever and whenever
    the key is exported (caption position, caption drop, class drop, caption suffix,
    caption prefix, first sentence, template); each epoch draws afresh (epoch 0 keeps the
    keying of single-epoch exports)."""
    out = np.empty((len(keys), 7))
    for i, key in enumerate(keys):
        name = f"{seed}\0{key}" if not epoch else f"{seed}\0{epoch}\0{key}"
        digest = hashlib.blake2b(name.encode(), digest_size=12).digest()
        out[i, :3] = np.frombuffer(digest, dtype="<u4") / 2.0**32
        more = hashlib.blake2b(f"{name}\0suffix".encode(), digest_size=4).digest()
        out[i, 3] = np.frombuffer(more, dtype="<u4")[0] / 2.0**32
        later = hashlib.blake2b(f"{name}\0prefix".encode(), digest_size=12).digest()
        out[i, 4:] = np.frombuffer(later, dtype="<u4") / 2.0**32
    return out
