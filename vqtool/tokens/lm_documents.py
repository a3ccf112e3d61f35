"""A layout bound to a token dataset and a text tokenizer (`ResolvedLayout.bind`): every
id a number, documents built from token rows in batches (vectorized; the caption path
too) and parsed back to their codes, caption and label. The spec itself, its presets
and its TOML loading are in `lm_layout`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from vqtool.errors import ConfigError, TokenDataError
from vqtool.tokens.lm_layout import SPECIALS, LayoutSpec, sample_uniforms
from vqtool.tokens.lm_lookup import read_lookup, vocab_lookup
from vqtool.tokens.text import TextTokenizer


@dataclass
class ParsedDocument:
    codes: np.ndarray  # (T,) in the token row's order
    caption_ids: list[int] | None  # None: no caption (or a dropped one)
    position: str  # "before", "after", "none" or "dropped"
    label: int | None  # None: no class token, or the null class


@dataclass
class BuiltBatch:
    ids: np.ndarray  # flat int64 ids of every document, one after another
    lengths: np.ndarray  # int64 tokens per document
    positions: list[str] | str  # caption position per document (a str: all the same)
    text_tokens: int  # caption and null-caption tokens in this batch
    missing_captions: int  # rows without a caption in a caption layout
    mask: np.ndarray | None = None  # uint8 per id: 1 where the loss is computed (loss != all)


@dataclass
class ResolvedLayout:
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
            h, w = self.grids[-1]
            self.resolution_ids = text.ids_of(spec.resolution_text.format(h=h, w=w))
        self._check_ranges()
        self._compile()
        return self

    def regrid(self, grid: tuple[int, int]) -> ResolvedLayout:
        """This layout for one row's own grid (tokens encoded with --resize none|smart):
        the same ids, the grid's rows and resolution (cached per grid)."""
        grid = (int(grid[0]), int(grid[1]))
        cache = self.__dict__.setdefault("_regrids", {})
        if grid not in cache:
            if len(self.grids) != 1:
                raise TokenDataError("per-row grids need a single-level tokenizer")
            if self.spec.resolution == "ids":
                raise ConfigError(
                    'resolution = "ids" with per-row grids: the ids would follow each grid '
                    'past the recorded range; use resolution = "text"'
                )
            other = dataclasses.replace(self, grids=[grid])
            other.__dict__.pop("_regrids", None)
            if self.spec.resolution == "text":
                other.resolution_ids = self.text.ids_of(
                    self.spec.resolution_text.format(h=grid[0], w=grid[1])
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
            ids = self.text.ids_of(text)
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

    # -- the document template ----------------------------------------------------------------
    def _compile(self) -> None:
        s = self.specials
        self.head = np.asarray(s.get("bos", []), dtype=np.int64)
        pre = ([-2] if self.class_base is not None else []) + s.get("boi", [])
        pre += self.resolution_ids + s.get("image_marker", [])
        self.pre = np.asarray(pre, dtype=np.int64)  # -2: the class slot
        self.post = np.asarray(s.get("eof", []) + s.get("eoi", []), dtype=np.int64)
        self.tail = np.asarray(s.get("eos", []), dtype=np.int64)
        # the image block: code slots (-1) in document order, eol after each grid row
        eol = s.get("eol", [])
        template: list[int] = []
        order: list[int] = []  # the token-row index each code slot takes
        start, depth = 0, self.depth
        for h, w in self.grids:
            idx = np.arange(h * w * depth).reshape(h, w, depth) + start
            planes = [idx] if self.spec.depth_order == "interleaved" or depth == 1 else [
                idx[:, :, d : d + 1] for d in range(depth)
            ]  # fmt: skip
            for plane in planes:
                for row in plane:
                    order += row.reshape(-1).tolist()
                    template += [-1] * row.size + eol
            start += h * w * depth
        self.block = np.asarray(template, dtype=np.int64)
        self.slots = np.flatnonzero(self.block == -1)
        self.order = np.asarray(order, dtype=np.int64)
        self.identity_order = bool(np.array_equal(self.order, np.arange(len(self.order))))
        self.null = np.asarray(s.get("null_caption", []), dtype=np.int64)
        prefix = self.spec.caption_after_prefix
        self.after_prefix = self.text.ids_of(prefix) if prefix else []
        if self.lookup is not None:
            self.inverse = np.full(self.image_range[1], -1, dtype=np.int64)
            self.inverse[self.lookup] = np.arange(self.vocab_size)

    def map_codes(self, tokens: np.ndarray, dtype, out: np.ndarray | None = None) -> np.ndarray:
        """(B, T) codes -> (B, len(block)) image blocks of LM ids in `dtype` (written into
        `out` when given: one pass over the codes)."""
        direct = len(self.block) == tokens.shape[1] and self.identity_order
        if self.lookup is not None:
            mapped = np.take(self.lookup.astype(dtype), tokens, out=out if direct else None)
        else:
            mapped = np.add(tokens, self.offset, dtype=dtype, out=out if direct else None)
        if direct:
            return mapped
        if out is None:
            out = np.empty((len(tokens), len(self.block)), dtype=dtype)
        out[:] = self.block.astype(dtype)
        out[:, self.slots] = mapped[:, self.order]
        return out

    def build(
        self,
        tokens: np.ndarray,
        keys: list[str],
        captions: list[str | None],
        labels: list[int | None],
        dtype=np.int64,
        epoch: int = 0,
    ) -> BuiltBatch:
        """Documents for a batch of token rows, in `dtype` (the caller checked it holds
        every id this layout can produce); `epoch` keys the per-sample draws."""
        spec, n = self.spec, len(tokens)
        block = None if spec.caption == "none" else self.map_codes(tokens, dtype)
        draws = spec.caption == "random" or bool(
            spec.caption_drop or spec.class_drop or spec.caption_suffixes
        )
        rand = sample_uniforms(spec.seed, keys, epoch) if draws else None
        pre = np.broadcast_to(self.pre.astype(dtype), (n, len(self.pre))).copy()
        if self.class_base is not None:
            cls = np.empty(n, dtype=np.int64)
            for i, (key, label) in enumerate(zip(keys, labels)):
                if spec.class_drop and rand[i, 2] < spec.class_drop:
                    cls[i] = spec.num_classes
                elif label is None or not 0 <= label < spec.num_classes:
                    raise TokenDataError(
                        f"sample {key}: label {label} is not a class in [0, {spec.num_classes}); "
                        "the class token needs a label per sample, and num_classes above them"
                    )
                else:
                    cls[i] = label
            pre[:, 0] = cls + self.class_base
        head, post, tail = (a.astype(dtype) for a in (self.head, self.post, self.tail))
        first_code = len(self.head) + len(self.pre) + (int(self.slots[0]) if len(self.slots) else 0)
        if spec.caption == "none":  # fixed-length documents, built in place
            parts = [len(head), pre.shape[1], len(self.block), len(post), len(tail)]
            docs = np.empty((n, sum(parts)), dtype=dtype)
            at = np.cumsum([0, *parts])
            docs[:, at[0] : at[1]] = head
            docs[:, at[1] : at[2]] = pre
            self.map_codes(tokens, dtype, out=docs[:, at[2] : at[3]])
            docs[:, at[3] : at[4]] = post
            docs[:, at[4] : at[5]] = tail
            lengths = np.full(n, docs.shape[1], dtype=np.int64)
            starts = np.arange(n, dtype=np.int64) * docs.shape[1]
            mask = self._mask(starts, lengths, starts + first_code, starts + first_code)
            return BuiltBatch(docs.reshape(-1), lengths, "none", 0, 0, mask)
        positions, texts, missing = [], [], 0
        suffixes = spec.caption_suffixes
        for i, caption in enumerate(captions):
            if spec.caption == "random":
                where = "before" if rand[i, 0] < spec.caption_before_share else "after"
            else:
                where = spec.caption
            if caption is None or (
                where == "before" and spec.caption_drop and rand[i, 1] < spec.caption_drop
            ):
                missing += caption is None
                where = "dropped"
            positions.append(where)
            if where == "before":
                caption = spec.caption_template.replace("{caption}", caption)
            if where == "before" and suffixes:
                caption += suffixes[min(int(rand[i, 3] * len(suffixes)), len(suffixes) - 1)]
            texts.append(caption if where != "dropped" else "")
        encoded = self.text.encode_batch(texts)
        null, prefix = self.null.tolist(), self.after_prefix
        caps = [
            null if w == "dropped" else prefix + e if w == "after" else e
            for w, e in zip(positions, encoded)
        ]
        null_first = spec.caption in ("before", "random")
        first = np.asarray([(w == "before") or (w == "dropped" and null_first) for w in positions])
        cap_len = np.fromiter(map(len, caps), dtype=np.int64, count=n)
        body = np.concatenate([pre, block, np.broadcast_to(post, (n, len(post)))], axis=1)
        nh, nb, nt = len(head), body.shape[1], len(tail)
        lengths = nh + cap_len + nb + nt
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        out = np.empty(int(lengths.sum()), dtype=dtype)
        body_at = starts + nh + np.where(first, cap_len, 0)
        out[(body_at[:, None] + np.arange(nb)).reshape(-1)] = body.reshape(-1)
        if nh:
            out[(starts[:, None] + np.arange(nh)).reshape(-1)] = np.tile(head, n)
        if nt:
            out[(starts + lengths - nt)[:, None] + np.arange(nt)] = tail
        total = int(cap_len.sum())
        if total:
            cap_at = np.where(first, starts + nh, body_at + nb)
            within = np.arange(total) - np.repeat(np.cumsum(cap_len) - cap_len, cap_len)
            flat = np.fromiter((t for c in caps for t in c), dtype=np.int64, count=total)
            out[np.repeat(cap_at, cap_len) + within] = flat
        after = np.asarray([w == "after" for w in positions])
        codes_at = body_at + first_code - nh
        answer = np.where(after, body_at + nb + len(prefix), codes_at)
        mask = self._mask(starts, lengths, codes_at, answer)
        return BuiltBatch(out, lengths, positions, total, missing, mask)

    def _mask(self, starts, lengths, codes_at, answer_at) -> np.ndarray | None:
        """The loss mask of a batch (None for loss = "all"): "image" marks each document's
        code slots (from `codes_at`, the index of its first code), "answer" everything from
        `answer_at` to the document's end."""
        loss = self.spec.loss
        if loss == "all":
            return None
        total = int(lengths.sum())
        mask = np.zeros(total, dtype=np.uint8)
        if loss == "image":
            at = codes_at[:, None] + (self.slots - self.slots[0])[None, :]
            mask[at.reshape(-1)] = 1
            return mask
        edges = np.zeros(total + 1, dtype=np.int64)  # +1 where the answer starts, -1 at the end
        np.add.at(edges, answer_at, 1)
        np.add.at(edges, starts + lengths, -1)
        return np.cumsum(edges[:-1]).astype(np.uint8)

    # -- back from a document -----------------------------------------------------------------
    def parse(self, doc: np.ndarray, where: str = "document") -> ParsedDocument:
        """The codes, caption ids and label of one document this layout built."""
        doc = np.asarray(doc, dtype=np.int64)
        fixed = self.fixed_length
        extra = len(doc) - fixed
        if extra < 0 or (self.spec.caption == "none" and extra):
            raise TokenDataError(
                f"{where}: {len(doc)} tokens, but layout {self.spec.name} makes documents of "
                f"{fixed} tokens{' plus a caption' if self.spec.caption != 'none' else ''}"
            )
        candidates = ["none"] if self.spec.caption == "none" else ["before", "after"]
        for at in candidates:
            got = self._match(doc, at, extra)
            if got is not None:
                return got
        raise TokenDataError(
            f"{where} does not follow layout {self.spec.name}: its special, class or image "
            "ids are not where the layout puts them (exported with another layout?)"
        )

    def _match(self, doc: np.ndarray, at: str, extra: int) -> ParsedDocument | None:
        nh, np_, nb, npo = len(self.head), len(self.pre), len(self.block), len(self.post)
        cap_start = nh if at == "before" else nh + np_ + nb + npo
        body = nh + (extra if at == "before" else 0)
        if not np.array_equal(doc[:nh], self.head) or not np.array_equal(
            doc[len(doc) - len(self.tail) :], self.tail
        ):
            return None
        pre = doc[body : body + np_]
        fixed = self.pre >= 0
        if not np.array_equal(pre[fixed], self.pre[fixed]):
            return None
        label = None
        if self.class_base is not None:
            label = int(pre[0]) - self.class_base
            top = self.spec.num_classes + (1 if self.spec.class_drop else 0)
            if not 0 <= label < top:
                return None
            label = None if label == self.spec.num_classes else label
        block = doc[body + np_ : body + np_ + nb]
        if not np.array_equal(block[self.block >= 0], self.block[self.block >= 0]):
            return None
        if not np.array_equal(doc[body + np_ + nb : body + np_ + nb + npo], self.post):
            return None
        ids = block[self.slots]
        lo, hi = self.image_range
        if len(ids) and (ids.min() < lo or ids.max() >= hi):
            return None
        codes_in_order = ids - self.offset if self.lookup is None else self.inverse[ids]
        if np.any(codes_in_order < 0):
            return None
        codes = np.empty(self.tokens_per_image, dtype=np.int64)
        codes[self.order] = codes_in_order
        caption = doc[cap_start : cap_start + extra].tolist()
        prefix = self.after_prefix
        if at == "after" and prefix and caption != self.null.tolist():
            if caption[: len(prefix)] != prefix:
                return None
            caption = caption[len(prefix) :]
        position = at
        if (
            at != "none"
            and caption == self.null.tolist()
            and (self.spec.caption_drop or not caption)
        ):
            position, caption = "dropped", None
        return ParsedDocument(codes, caption if at != "none" else None, position, label)
