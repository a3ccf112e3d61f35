"""A layout bound to a token dataset and a text tokenizer (`ResolvedLayout.bind`): every
id a number, checked against the others, and recorded. Building documents from token
rows and parsing them back is `lm.codec` (which `ResolvedLayout` inherits); the spec,
its presets and its TOML loading are `lm.layout`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from vqtool.errors import ConfigError, TokenDataError
from vqtool.lm.codec import BuiltBatch, DocumentCodec, ParsedDocument
from vqtool.lm.layout import SPECIALS, LayoutSpec
from vqtool.lm.lookup import read_lookup, vocab_lookup
from vqtool.lm.text import TextTokenizer

__all__ = ["BuiltBatch", "ParsedDocument", "ResolvedLayout"]


@dataclass
class ResolvedLayout(DocumentCodec):
    """A layout bound to a token dataset (vocabulary, grids, depth) and a text tokenizer:
    every id is a number, and documents can be built and parsed."""

    spec: LayoutSpec
    vocab_size: int
    grids: list[tuple[int, int]]
    depth: int
    text: TextTokenizer | None
    specials: dict[str, list[int]] = field(default_factory=dict)
    offset: int | None = None
    lookup: np.ndarray | None = None
    class_base: int | None = None
    resolution_ids: list[int] = field(default_factory=list)
    # a pyramid's schedule by the grid of its last scale ("HxW"), for rows of their own shapes
    schedules: dict[str, list] = field(default_factory=dict)

    @property
    def image_in_text(self) -> bool:
        """Image ids are the text tokenizer's own visual tokens (Emu3: text proper is the
        ids below them; Chameleon: its IMGIMG tokens, wherever they sit)."""
        return self.spec.image_vocab is not None or (
            isinstance(self.spec.image_offset, str) and self.spec.image_offset != "text_vocab"
        )

    @property
    def text_range(self) -> tuple[int, int] | None:
        if self.text is None:
            return None
        if self.spec.image_vocab is not None:
            return 0, self.text.vocab_size  # image tokens among them, by name
        return 0, self.offset if self.image_in_text else self.text.vocab_size

    # -- binding ---------------------------------------------------------------------------
    @classmethod
    def bind(
        cls, spec: LayoutSpec, token_layout: dict, text: TextTokenizer | None
    ) -> ResolvedLayout:
        if spec.needs_text and text is None:
            raise ConfigError(
                f"layout {spec.name} has captions or text tokens; give --text-tokenizer "
                "tokenizer.json"
            )
        grids = [tuple(g) for g in token_layout["grids"]]
        self = cls(spec, int(token_layout["vocab_size"]), grids, int(token_layout["depth"]), text)
        self.schedules = dict(token_layout.get("schedules") or {})
        if spec.image_lookup is not None:
            self.lookup = read_lookup(spec.image_lookup, self.vocab_size)
        elif spec.image_vocab is not None:
            self.lookup = vocab_lookup(text, spec.image_vocab, self.vocab_size)
        elif isinstance(spec.image_offset, int):
            self.offset = spec.image_offset
        elif spec.image_offset == "text_vocab":
            self.offset = text.vocab_size
        else:
            ids = text.ids_of(spec.image_offset)
            if len(ids) != 1:
                raise ConfigError(
                    f"image_offset = {spec.image_offset!r} is not one token of {text.path}"
                )
            self.offset = ids[0]
        if self.offset is not None and self.offset < 0:
            raise ConfigError(f"image_offset {self.offset} is negative")
        if self.text is not None and self.image_in_text and self.offset is not None:
            if self.offset + self.vocab_size > self.text.vocab_size:
                raise ConfigError(
                    f"image_offset = {spec.image_offset!r} is id {self.offset} of "
                    f"{self.text.path}, which has {self.text.vocab_size} ids: "
                    f"{self.vocab_size} codes from there do not fit its visual tokens"
                )
        for key in SPECIALS:
            value = getattr(spec, key)
            if value is not None:
                self.specials[key] = self._ids(key, value)
        if spec.class_offset is not None:
            self.class_base = self._one(spec.class_offset, "class_offset")
        if spec.resolution == "ids":
            h, w = self.grids[-1]
            base = self._one(spec.resolution_offset, "resolution_offset")
            self.resolution_ids = [base + h, base + w]
        elif spec.resolution == "text":
            fields = spec.size_fields(self.grids[-1])
            self.resolution_ids = text.ids_of(spec.resolution_text.format(**fields))
        self._check_ranges()
        self._compile()
        return self

    def regrid(self, grid: tuple[int, int]) -> ResolvedLayout:
        """This layout for one row's own grid (tokens encoded with --resize none|smart):
        the same ids, the grid's rows and resolution (cached per grid)."""
        grid = (int(grid[0]), int(grid[1]))
        cache = self.__dict__.setdefault("_regrids", {})
        if grid not in cache:
            grids = [grid]
            if len(self.grids) != 1:  # a pyramid: the schedule ending at the row's grid
                named = self.schedules.get(f"{grid[0]}x{grid[1]}")
                if named is None:
                    raise TokenDataError(
                        f"a row of grid {grid[0]}x{grid[1]} in a multi-level layout, and no "
                        "schedule recorded for it (encode.json layout.schedules)"
                    )
                grids = [tuple(g) for g in named]
            if self.spec.resolution == "ids":
                raise ConfigError(
                    'resolution = "ids" with per-row grids: the ids would follow each grid '
                    'past the recorded range; use resolution = "text"'
                )
            other = dataclasses.replace(self, grids=grids)
            other.__dict__.pop("_regrids", None)
            if self.spec.resolution == "text":
                other.resolution_ids = self.text.ids_of(
                    self.spec.resolution_text.format(**self.spec.size_fields(grid))
                )
            other._compile()
            cache[grid] = other
        return cache[grid]

    def _ids(self, key: str, value) -> list[int]:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a token id, a token string or a table, got {value}")
        if isinstance(value, int):
            ids = [value]
        elif isinstance(value, list) and value and all(isinstance(v, int) for v in value):
            ids = list(value)
        elif isinstance(value, str) or (isinstance(value, dict) and set(value) == {"text"}):
            text = value if isinstance(value, str) else value["text"]
            if self.text is None:
                raise ConfigError(f"{key} = {value!r} is a text token; give --text-tokenizer")
            ids = self.text.ids_of(text, isinstance(value, dict) and self.spec.text_specials)
            if not ids:
                raise ConfigError(f"{key} = {value!r} encodes to no tokens in {self.text.path}")
            if isinstance(value, str) and len(ids) != 1:  # a special must be one token ...
                pieces = [self.text.tokenizer.id_to_token(i) for i in ids]
                raise ConfigError(
                    f"{key} = {value!r} is not one token of {self.text.path}: it splits into "
                    f"{len(ids)} pieces {pieces[:8]}; use the tokenizer its LM was trained "
                    f"with, or write {key} = {{ text = {value!r} }} to insert its encoding"
                )  # ... unless its encoding is asked for (LWM's "<vision>")
        elif isinstance(value, dict) and set(value) == {"after_image"}:
            k = value["after_image"]
            if isinstance(k, bool) or not isinstance(k, int) or k < 0:
                raise ConfigError(f"{key}.after_image: expected an integer >= 0, got {k!r}")
            ids = [self.image_range[1] + k]
        else:
            raise ConfigError(
                f"{key}: expected a token id, a list of ids, a token string, "
                f'{{text = "..."}} or {{after_image = K}}, got {value!r}'
            )
        if min(ids) < 0:
            raise ConfigError(f"{key}: token id {min(ids)} is negative")
        return ids

    def _one(self, value, key: str) -> int:
        ids = self._ids(key, value)
        if len(ids) != 1:
            raise ConfigError(f"{key} = {value!r} is {len(ids)} tokens; it must be one id")
        return ids[0]

    def _check_ranges(self) -> None:
        lo, hi = self.image_range
        what = f"image ids {lo}..{hi - 1}"

        def clash(a: int, b: int) -> bool:  # [a, b) meets the image ids
            if self.lookup is None:
                return a < hi and lo < b
            return bool(np.any((self.lookup >= a) & (self.lookup < b)))

        text_end = self.text_range[1] if self.text is not None else 0
        if self.text is not None and self.spec.image_vocab is None and clash(0, text_end):
            raise ConfigError(
                f"{what} overlap the text tokenizer's ids 0..{text_end - 1} "
                f"({self.text.path}); set image_offset = {self.text.vocab_size} "
                '(or "text_vocab") so image ids follow the text vocabulary'
            )
        for key, ids in self.specials.items():
            for i in ids:
                if clash(i, i + 1):
                    raise ConfigError(f"{key} id {i} lies inside the {what}; pick another id")
        if self.class_base is not None:
            a = self.class_base
            b = a + self.spec.num_classes + (1 if self.spec.class_drop else 0)
            if clash(a, b):
                raise ConfigError(f"class ids {a}..{b - 1} overlap the {what}")
            if self.text is not None and a < self.text.vocab_size:
                raise ConfigError(
                    f"class ids {a}..{b - 1} overlap the text tokenizer's ids "
                    f"0..{self.text.vocab_size - 1}"
                )
        if self.spec.resolution == "ids":
            for i in self.resolution_ids:
                if clash(i, i + 1):
                    raise ConfigError(f"resolution id {i} lies inside the {what}")

    # -- facts ---------------------------------------------------------------------------
    @property
    def image_range(self) -> tuple[int, int]:
        if self.lookup is None:
            return self.offset, self.offset + self.vocab_size
        return int(self.lookup.min()), int(self.lookup.max()) + 1

    @property
    def tokens_per_image(self) -> int:
        return sum(h * w for h, w in self.grids) * self.depth

    @property
    def fixed_length(self) -> int:
        """Tokens every document has, caption aside."""
        return len(self.head) + len(self.pre) + len(self.block) + len(self.post) + len(self.tail)

    def max_id(self) -> int:
        ids = [self.image_range[1] - 1, *self.resolution_ids]
        ids += [i for v in self.specials.values() for i in v]
        if self.class_base is not None:
            ids.append(self.class_base + self.spec.num_classes)
        if self.text is not None and self.spec.caption != "none":
            ids.append(self.text.vocab_size - 1)
        return max(ids)

    def ranges(self) -> dict:
        """The id ranges this layout uses, for the manifest ([first, last])."""
        lo, hi = self.image_range
        out: dict = {"image": [lo, hi - 1]}
        if self.text is not None:
            out["text"] = [0, self.text_range[1] - 1]
        if self.class_base is not None:
            out["class"] = [self.class_base, self.class_base + self.spec.num_classes - 1]
            if self.spec.class_drop:
                out["null_class"] = self.class_base + self.spec.num_classes
        if self.resolution_ids:
            out["resolution"] = list(self.resolution_ids)
        out["special"] = {k: v for k, v in self.specials.items()}
        return out

    def record(self) -> dict:
        """The layout as exported: the spec and every resolved number."""
        return {
            "spec": self.spec.to_dict(),
            "ids": self.ranges(),
            "image_offset": self.offset,
            "image_lookup_sha256": None
            if self.lookup is None
            else hashlib.sha256(self.lookup.astype("<i8").tobytes()).hexdigest(),
            "tokens_per_image": self.tokens_per_image,
            "grids": [list(g) for g in self.grids],
            "depth": self.depth,
            "vocab_size": self.vocab_size,
            "fixed_tokens": self.fixed_length,
        }  # fmt: skip

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.record(), sort_keys=True).encode()).hexdigest()[:16]
