"""Documents from token rows and back, for a bound layout: the document template
(special ids, the class slot, code slots in document order, end-of-row ids) compiled
once, documents built in batches (vectorized; the caption path too) and parsed back to
their codes, caption and label.

`DocumentCodec` is the half of `lm.documents.ResolvedLayout` that uses the numbers the
binding resolved (`specials`, `offset`/`lookup`, `class_base`, `resolution_ids`,
`grids`, `depth`, `text`, `spec`); it holds no state of its own beyond the template.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vqtool.errors import TokenDataError
from vqtool.lm.layout import sample_uniforms


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


class DocumentCodec:
    """Building and parsing documents; mixed into `ResolvedLayout`."""

    # -- the document template ----------------------------------------------------------------
    def _compile(self) -> None:
        s = self.specials
        self.head = np.asarray(s.get("bos", []), dtype=np.int64)
        pre = ([-2] if self.class_base is not None else []) + s.get("boi", [])
        pre += self.resolution_ids + s.get("image_marker", [])
        self.pre = np.asarray(pre, dtype=np.int64)  # -2: the class slot
        self.boi_at = 1 if self.class_base is not None else 0  # the image block's start in pre
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
                for i, row in enumerate(plane):
                    order += row.reshape(-1).tolist()
                    last = i == len(plane) - 1 and not self.spec.eol_last
                    template += [-1] * row.size + ([] if last else eol)
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
        rand = sample_uniforms(spec.seed, keys, epoch) if spec.draws else None
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
        first_code = len(self.head) + len(self.pre) + (int(self.slots[0]) if len(self.slots) else 0)
        if spec.caption == "none":
            return self._fixed_docs(tokens, pre, dtype, first_code)
        return self._caption_docs(tokens, pre, captions, rand, dtype, first_code)

    def build_per_grid(
        self,
        tokens: list,
        grids: list[tuple[int, int]],
        lists: dict[str, list],
        dtype,
        epoch: int = 0,
        code_dtype=np.uint32,
    ) -> BuiltBatch:
        """Documents of rows with their own grids (tokens encoded with --resize none|smart):
        built per grid (each grid its own rows, resolution and end-of-row tokens), then put
        back in row order. `lists`: the rows' key, caption and label values."""
        groups: dict[tuple, list[int]] = {}
        for i, g in enumerate(grids):
            groups.setdefault(g, []).append(i)
        docs: list = [None] * len(tokens)
        text_tokens = missing = 0
        for grid, idx in groups.items():
            part = self.regrid(grid).build(
                np.asarray([tokens[i] for i in idx], dtype=code_dtype),
                *([lists[c][i] for i in idx] for c in ("key", "caption", "label")),
                dtype,
                epoch,
            )
            starts = np.concatenate([[0], np.cumsum(part.lengths)])
            positions = part.positions
            for j, i in enumerate(idx):
                a, b = starts[j], starts[j + 1]
                where = positions if isinstance(positions, str) else positions[j]
                docs[i] = (part.ids[a:b], None if part.mask is None else part.mask[a:b], where)
            text_tokens += part.text_tokens
            missing += part.missing_captions
        masks = [d[1] for d in docs]
        return BuiltBatch(
            np.concatenate([d[0] for d in docs]),
            np.asarray([len(d[0]) for d in docs], dtype=np.int64),
            [d[2] for d in docs],
            text_tokens,
            missing,
            None if masks[0] is None else np.concatenate(masks),
        )

    def _fixed_docs(self, tokens: np.ndarray, pre: np.ndarray, dtype, first_code: int):
        """Documents without captions: all of one length, built in place."""
        n = len(tokens)
        head, post, tail = (a.astype(dtype) for a in (self.head, self.post, self.tail))
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
        image_at = len(self.head) + self.boi_at if self.spec.loss_start == "boi" else first_code
        mask = self._mask(starts, lengths, starts + first_code, starts + image_at)
        return BuiltBatch(docs.reshape(-1), lengths, "none", 0, 0, mask)

    def _caption_positions(self, captions: list[str | None], rand) -> tuple[list, list, int]:
        """Where each caption goes (before/after/dropped), its text as inserted (template,
        instruction suffix), and how many rows had none."""
        spec, suffixes, prefixes = self.spec, self.spec.caption_suffixes, self.spec.caption_prefixes
        positions, texts, missing = [], [], 0
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
            if caption is not None:
                caption = _clean(spec, caption, rand[i] if rand is not None else None)
            if where == "before" and not caption and spec.empty_caption_template is not None:
                caption = spec.empty_caption_template
            elif where == "before":
                pick = prefixes[min(int(rand[i, 4] * len(prefixes)), len(prefixes) - 1)] if (
                    prefixes) else ""  # fmt: skip
                template = spec.caption_template
                if spec.caption_template_alt_share and rand[i, 6] < spec.caption_template_alt_share:
                    template = spec.caption_template_alt
                caption = _fill(template, pick + caption, spec, self.grids[-1])
            if where == "before" and suffixes:
                caption += suffixes[min(int(rand[i, 3] * len(suffixes)), len(suffixes) - 1)]
            texts.append(caption if where != "dropped" else "")
        return positions, texts, missing

    def _caption_docs(self, tokens, pre, captions, rand, dtype, first_code: int) -> BuiltBatch:
        """Documents with a caption before or after the image (or the null caption): each
        part scattered into one flat array at its computed offset."""
        n, spec = len(tokens), self.spec
        block = self.map_codes(tokens, dtype)
        head, post, tail = (a.astype(dtype) for a in (self.head, self.post, self.tail))
        positions, texts, missing = self._caption_positions(captions, rand)
        encoded = self.text.encode_batch(texts, spec.text_specials)
        null, prefix = self.null.tolist(), self.after_prefix
        caps = [
            null if w == "dropped" else prefix + e if w == "after" else e
            for w, e in zip(positions, encoded)
        ]
        if spec.text_length:  # Show-o's cut: kept to text_length ids, its last id kept
            room = spec.text_length - len(head)
            caps = [c if len(c) <= room else c[: room - 1] + c[-1:] for c in caps]
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
        image_at = body_at + self.boi_at if spec.loss_start == "boi" else codes_at
        answer = np.where(after, body_at + nb + len(prefix), image_at)
        mask = self._mask(starts, lengths, codes_at, answer)
        if spec.text_length:
            out, lengths, mask = self._left_pad(out, lengths, mask, spec.text_length - nh - cap_len)
        return BuiltBatch(out, lengths, positions, total, missing, mask)

    def _left_pad(self, out, lengths, mask, pads):
        """Each document with `pads` pad ids in front (no loss on them)."""
        padded_lengths = lengths + pads
        old = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        new = np.concatenate([[0], np.cumsum(padded_lengths)[:-1]])
        dest = np.repeat(new + pads - old, lengths) + np.arange(len(out))
        padded = np.full(int(padded_lengths.sum()), self.specials["pad"][0], dtype=out.dtype)
        padded[dest] = out
        if mask is not None:
            mask, unpadded = np.zeros(len(padded), dtype=mask.dtype), mask
            mask[dest] = unpadded
        return padded, padded_lengths, mask

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
        if self.spec.text_length:  # the left padding before the text
            doc = doc[int(np.argmax(doc != self.specials["pad"][0])) :]
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


def _clean(spec, caption: str, draw) -> str:
    """A caption as the layout's LM reads it: stripped, on one line, cut to its first
    sentence (each where the layout says so)."""
    if spec.caption_strip:
        caption = caption.strip()
    if spec.caption_one_line:
        caption = caption.replace("\n", " ")
    if spec.caption_first_sentence and draw[5] < spec.caption_first_sentence:
        end = caption.find(".")
        caption = caption[: end + 1].strip() if end != -1 else caption
    return caption


def _fill(template: str, caption: str, spec, grid) -> str:
    """A caption template with the caption and (when the layout knows pixels per code)
    the image's size in pixels filled in."""
    if spec.pixels_per_code:
        fields = spec.size_fields(grid)
        template = template.replace("{width}", str(fields["width"]))
        template = template.replace("{height}", str(fields["height"]))
    return template.replace("{caption}", caption)
