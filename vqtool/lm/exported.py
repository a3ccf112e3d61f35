"""Reading an export folder back: its manifest, its finished files (those with a done
marker), the layout bound again and checked against the recorded hash, and documents
picked by key or by range and parsed back to codes and captions."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vqtool.errors import TokenDataError
from vqtool.lm.documents import ResolvedLayout
from vqtool.lm.layout import LayoutSpec
from vqtool.lm.text import TextTokenizer
from vqtool.utils import config_from_dict


def _loose(text: str) -> str:
    """A regex for `text` whatever whitespace a tokenizer's decode puts between pieces."""
    return r"\s*".join(re.escape(c) for c in text if not c.isspace())


def _pattern(text: str) -> str:
    """`_loose(text)` with a template's {width} / {height} matching any number."""
    parts = re.split(r"\{(?:width|height)\}", text)
    return r"\s*\d+\s*".join(_loose(p) for p in parts)


def _strip_template(caption: str, template: str, strict: bool = False) -> str | None:
    """The caption inside its chat template's text, as decoded (`strict`: None when the
    text before {caption} is not there)."""
    pre, post = template.split("{caption}", 1)
    if pre.strip():
        caption, found = re.subn(rf"^\s*{_pattern(pre)}\s*", "", caption, count=1)
        if strict and not found:
            return None
    if post.strip():
        caption = re.sub(rf"\s*{_pattern(post)}\s*$", "", caption, count=1)
    return caption


@dataclass
class ExportedFile:
    folder: Path
    name: str
    fmt: str
    dtype: str

    def index(self) -> pa.Table:
        return pq.read_table(self.folder / f"{self.name}.docs.parquet")

    def stream(self) -> np.ndarray:
        """The file's whole token stream (a memory map for .bin files)."""
        if self.fmt in ("megatron", "stream"):
            path = self.folder / f"{self.name}.bin"
            if path.stat().st_size == 0:
                return np.empty(0, dtype=self.dtype)
            return np.memmap(path, dtype=self.dtype, mode="r")
        col = pq.read_table(self.folder / f"{self.name}.parquet", columns=["input_ids"])
        values = col.column("input_ids").combine_chunks().flatten()
        return values.to_numpy(zero_copy_only=False)


EXPORT_MANIFEST = "export.json"


def is_export(path: str | Path) -> bool:
    return (Path(path) / EXPORT_MANIFEST).is_file()


@dataclass
class ExportSet:
    """A finished export folder, read back: its manifest, its finished files (those with a
    done marker) and the layout bound again, checked against the recorded hash."""

    folder: Path
    manifest: dict
    files: list[ExportedFile]
    layout: object  # ResolvedLayout
    unfinished: list[str]

    @classmethod
    def open(cls, folder: str | Path, text_tokenizer: str | None = None) -> ExportSet:
        folder = Path(folder)
        manifest = json.loads((folder / EXPORT_MANIFEST).read_text())
        spec = config_from_dict(LayoutSpec, manifest["layout"]["spec"])
        text = None
        recorded = manifest.get("text_tokenizer")
        if recorded:
            path = text_tokenizer or recorded["path"]
            if not Path(path).is_file():
                raise TokenDataError(
                    f"{folder} was exported with text tokenizer {recorded['path']}, which is not "
                    "there; give it with --text-tokenizer"
                )
            text = TextTokenizer.open(path)
            if text.sha256 != recorded["sha256"]:
                raise TokenDataError(
                    f"--text-tokenizer {path} (sha256 {text.sha256[:12]}...) is not the one "
                    f"{folder} was exported with ({recorded['sha256'][:12]}...)"
                )
        tokens = manifest["tokens"]
        layout = ResolvedLayout.bind(spec, {**tokens["layout"], "vocab_size": tokens["vocab_size"]},
                                     text)  # fmt: skip
        if layout.hash() != manifest["layout_hash"]:
            raise TokenDataError(
                f"{folder}: the layout binds to other ids now (hash {layout.hash()}, recorded "
                f"{manifest['layout_hash']}); was a lookup table or tokenizer file changed?"
            )
        files, unfinished = [], []
        for name in manifest.get("merged") or manifest.get("tasks") or []:
            if (folder / f"{name}.done.json").exists():
                files.append(ExportedFile(folder, name, manifest["format"], manifest["dtype"]))
            else:
                unfinished.append(name)
        if not files:
            raise TokenDataError(f"{folder}: no finished export files (no *.done.json yet)")
        return cls(folder, manifest, files, layout, unfinished)

    def documents(self):
        """(file, index table) for every finished file, in task order."""
        for f in self.files:
            yield f, f.index()

    def _by_key(self, keys: list[str]) -> list[tuple[ExportedFile, dict, np.ndarray]]:
        wanted = dict.fromkeys(keys)
        for f, index in self.documents():
            col = index.column("key").to_pylist()
            stream = None
            for i, k in enumerate(col):
                if k in wanted and wanted[k] is None:
                    stream = f.stream() if stream is None else stream
                    row = index.slice(i, 1).to_pylist()[0]
                    wanted[k] = (f, row, np.asarray(
                        stream[row["start"] : row["start"] + row["length"]]))  # fmt: skip
        absent = [k for k, v in wanted.items() if v is None]
        if absent:
            raise TokenDataError(f"key(s) not in the export: {', '.join(absent[:5])}")
        return list(wanted.values())

    def _by_range(self, start: int, stop: int) -> list[tuple[ExportedFile, dict, np.ndarray]]:
        if start < 0 or stop <= start:
            raise TokenDataError(f"document range {start}:{stop} is empty; give A:B, A < B")
        picked, seen = [], 0
        for f, index in self.documents():
            n = index.num_rows
            lo, hi = max(start - seen, 0), min(stop - seen, n)
            if lo < hi:
                stream = f.stream()
                for row in index.slice(lo, hi - lo).to_pylist():
                    ids = np.asarray(stream[row["start"] : row["start"] + row["length"]])
                    picked.append((f, row, ids))
            seen += n
            if seen >= stop:
                break
        if not picked:
            raise TokenDataError(f"document {start} is past the end ({seen} documents)")
        return picked

    def _caption(self, doc) -> str | None:
        """A parsed document's caption text, without the template or instruction phrase
        the export added around it."""
        text, spec = self.layout.text, self.layout.spec
        ids = doc.caption_ids
        caption = text.decode(ids, spec.text_specials) if ids is not None and text else None
        for suffix in spec.caption_suffixes if doc.position == "before" else ():
            if caption is not None and caption.endswith(suffix.strip()):
                caption = caption[: len(caption) - len(suffix.strip())].rstrip()
                break  # the instruction phrase added at export is not the caption
        empty = spec.empty_caption_template
        if caption is not None and empty is not None and re.fullmatch(rf"\s*{_loose(empty)}\s*",
                                                                      caption):
            return ""  # an empty caption's own template
        if caption is not None and doc.position == "before":  # the template's text
            alt = spec.caption_template_alt or "{caption}"  # tried first when it has a head
            head = alt.split("{caption}")[0].strip()
            found = _strip_template(caption, alt, strict=True) if head else None
            if found is None:
                found = _strip_template(caption, spec.caption_template)
            caption = found
            for prefix in spec.caption_prefixes:  # the phrase the export put in front
                if prefix.strip() and caption.startswith(prefix.strip()):
                    caption = caption[len(prefix.strip()) :].lstrip()
                    break
        return caption

    def select(
        self,
        keys: list[str] | None = None,
        rows: tuple[int, int] | None = None,
        limit: int | None = None,
    ) -> tuple[list[str], np.ndarray, list[str | None], list[dict]]:
        """Documents by key, by global document range [a, b) or the first N, parsed back to
        (keys, codes (N, T), caption texts, index rows)."""
        if keys is not None:
            picked = self._by_key(keys)
        else:
            picked = self._by_range(*(rows if rows is not None else (0, limit or 16)))
        codes, captions, rows_out = [], [], []
        for f, row, ids in picked:
            grid = (row.get("grid_h"), row.get("grid_w"))
            layout = self.layout if grid[0] is None else self.layout.regrid(grid)
            doc = layout.parse(ids, f"{f.name} document {row['key']}")
            codes.append(doc.codes)
            captions.append(self._caption(doc))
            rows_out.append({**row, "label": doc.label, "position": doc.position})
        if len({len(c) for c in codes}) > 1:  # rows of their own grids: one array each
            return [r["key"] for r in rows_out], codes, captions, rows_out
        return [r["key"] for r in rows_out], np.stack(codes), captions, rows_out
