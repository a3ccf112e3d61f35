"""`vqtool export`: token shards -> the files an LM trainer reads.

One task per finished input token file (`part-000007.parquet` becomes
`part-000007.*` here); its rows stream through the layout in batches (memory is
one batch plus one task's document lengths), into the format's files under
temporary names, renamed into place, then `NAME.done.json`. A rerun skips done
tasks and redoes the rest from scratch; the output depends only on the inputs,
the layout (its seed included) and the format, so a killed export rerun gives
byte-identical files. `DIR/export.json` pins the layout, format, dtype, text
tokenizer and token source; another one in the same folder is refused. Tasks
split by `RANK`/`WORLD_SIZE` or `--num-shards/--shard-index` as encode's do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vqtool import __version__, signals
from vqtool.data.remote import Folder, is_url, redact
from vqtool.errors import TokenDataError
from vqtool.export.merge import merge_when_complete
from vqtool.export.task import (
    MANIFEST,
    Committer,
    ReadAhead,
    add_counts,
    plan,
    refresh_manifest,
    run_task,
)
from vqtool.lm.documents import ResolvedLayout
from vqtool.lm.files import Packing, choose_dtype
from vqtool.lm.layout import load_layout
from vqtool.lm.text import TextTokenizer
from vqtool.pretrained.records import recorded_tokenizer
from vqtool.tokens.reader import TokenDataset
from vqtool.tokens.tasks import (
    check_pin,
    claim_task,
    config_hash,
    pin,
    sort_done,
    split_tasks,
    sweep_locks,
)
from vqtool.utils import parse_override


@dataclass
class ExportConfig:
    tokens: list[str]  # encode folders or token Parquet files
    layout: str  # preset name or TOML file
    format: str  # megatron, stream or parquet
    out: str
    sets: list[str] = field(default_factory=list)  # layout overrides, KEY=VALUE (TOML values)
    text_tokenizer: str | None = None  # a Hugging Face tokenizer.json
    pack: int | None = None  # concatenate documents, cut rows of N tokens
    pad_to: int | None = None  # one document per row, padded to N tokens
    dtype: str = "auto"
    batch_rows: int = 8192
    num_shards: int | None = None
    shard_index: int | None = None
    embeddings: str | None = None  # also write the code vectors in LM-id order here ...
    tokenizer: str | None = None  # ... computed with this tokenizer (it must have written them)
    device: str = "cpu"
    # write the data this many times, each epoch with its own draws (caption drop,
    # position, phrase, class drop) keyed by (seed, epoch, sample key), as the originals
    # redraw them every epoch; epoch 0's files keep the plain task names
    epochs: int = 1
    allow_missing_captions: bool = False  # a caption layout over tokens without captions
    allow_split_documents: bool = False  # --pack shorter than a document
    # once every task is exported, join them into files of about this many GB of ids
    # (export/merge.py); None: one file per task
    merge: float | None = None
    # "train=0.99,val=0.01": each split its own export folder OUT/NAME, rows assigned by
    # their key's sha256 (the same rows on every run); one split of them: `part`
    split: str | None = None
    part: tuple[str, float, float, str] | None = None  # (name, from, to, the --split)


@dataclass
class ExportResult:
    out: str
    format: str
    layout: str
    layout_hash: str
    dtype: str
    tasks_total: int
    tasks_mine: int
    tasks_done: int = 0
    tasks_skipped: int = 0
    documents: int = 0
    tokens: int = 0
    rows: int = 0
    pad_tokens: int = 0
    text_tokens: int = 0
    missing_captions: int = 0
    not_exported: list[str] = field(default_factory=list)  # unfinished input tasks
    id_ranges: dict = field(default_factory=dict)
    embeddings: str | None = None
    wall_s: float = 0.0
    tokens_per_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)  # --merge: the joined files
    splits: dict = field(default_factory=dict)  # --split: name -> that folder's result

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _identity(cfg, ds, layout, text, dtype, packing) -> dict:
    record = layout.record()
    return {
        "vqtool_version": __version__,
        "format": cfg.format,
        "dtype": dtype,
        "pack": packing.pack,
        "pad_to": packing.pad_to,
        "layout": record,
        "layout_hash": layout.hash(),
        "text_tokenizer": text.record() if text else None,
        "tokens": {
            "tokenizer_sha256": ds.tokenizer_sha256,
            "tokenizer_path": (ds.meta.get("tokenizer") or {}).get("path"),
            "tokenizer": ds.meta.get("tokenizer"),  # the whole record: decode finds it
            "vocab_size": ds.vocab_size,
            "layout": ds.layout,
            "preprocessing": ds.meta.get("preprocessing"),
        },
        "id_ranges": record["ids"],
        "split": None if cfg.part is None else {
            "name": cfg.part[0], "keys": [cfg.part[1], cfg.part[2]],
            "rule": "sha256(key)[:8] / 2^64 in [from, to)", "of": cfg.part[3],
        },
    }  # fmt: skip


def _config_hash(identity: dict) -> str:
    pinned = {k: identity[k] for k in ("format", "dtype", "pack", "pad_to", "layout_hash")}
    if identity.get("split"):
        pinned["split"] = identity["split"]
    pinned["text"] = (identity["text_tokenizer"] or {}).get("sha256")
    pinned["tokens"] = identity["tokens"]["tokenizer_sha256"]
    return config_hash(pinned)


def _refusal(out: Path, identity: dict):
    """The error for a folder that holds an export with other settings."""

    def refuse(old: dict) -> TokenDataError:
        spec = old.get("layout", {}).get("spec", {})
        return TokenDataError(
            f"{out} holds an export with layout {spec.get('name')} (hash "
            f"{old.get('layout_hash')}), format {old.get('format')}, pack "
            f"{old.get('pack')}, pad_to {old.get('pad_to')}; this run asks for layout "
            f"{identity['layout']['spec']['name']} (hash {identity['layout_hash']}), "
            f"format {identity['format']}, pack {identity['pack']}, pad_to "
            f"{identity['pad_to']} (or other tokens or text tokenizer). Use another --out."
        )

    return refuse


@dataclass
class _Inputs:
    """What an export reads, opened and checked: the tokens, the bound layout, the text
    tokenizer, how rows are packed and the ids' dtype."""

    ds: TokenDataset
    layout: ResolvedLayout
    text: TextTokenizer | None
    packing: Packing
    dtype: str


def _open_inputs(cfg: ExportConfig) -> _Inputs:
    ds = TokenDataset.open(cfg.tokens)
    spec = load_layout(cfg.layout, [parse_override(s)[:2] for s in cfg.sets])
    text = TextTokenizer.open(cfg.text_tokenizer) if cfg.text_tokenizer else None
    layout = ResolvedLayout.bind(spec, {**ds.layout, "vocab_size": ds.vocab_size}, text)
    if cfg.format == "stream" and (cfg.pack or cfg.pad_to):
        raise TokenDataError(
            "--format stream is one token stream already (trainers cut windows from it); "
            "--pack and --pad-to apply to megatron and parquet"
        )
    pad = layout.specials.get("pad")
    if pad is not None and len(pad) != 1:
        raise TokenDataError(f"pad is {len(pad)} tokens; --pad-to needs one pad id")
    packing = Packing(cfg.pack, cfg.pad_to, pad[0] if pad else None)
    dtype = choose_dtype(cfg.format, max(layout.max_id(), packing.pad_id or 0), cfg.dtype)
    _refuse_mismatches(cfg, ds, layout)
    return _Inputs(ds, layout, text, packing, dtype)


def _refuse_mismatches(cfg: ExportConfig, ds: TokenDataset, layout: ResolvedLayout) -> None:
    """Refuse settings that would silently make the wrong documents."""
    spec = layout.spec
    if spec.caption != "none" and not cfg.allow_missing_captions and not ds.has_values("caption"):
        raise TokenDataError(
            f"layout {spec.name} puts a caption in every document, but the token rows carry "
            "none (the caption column is empty): every document would be unconditional. Encode "
            "with --caption-from txt|json:FIELD, or --set caption=none, or pass "
            "--allow-missing-captions"
        )
    if cfg.merge is not None and (cfg.merge <= 0 or cfg.format == "parquet"):
        raise TokenDataError(
            f"--merge {cfg.merge}: give a size in GB > 0, for --format megatron or stream "
            "(Parquet readers take many files already)"
        )
    if cfg.pack and not cfg.allow_split_documents and cfg.pack < layout.fixed_length:
        raise TokenDataError(
            f"--pack {cfg.pack} is shorter than a document ({layout.fixed_length} tokens before "
            "any caption): every image would be split across rows. Raise --pack, or pass "
            "--allow-split-documents"
        )
    if layout.class_base is not None and not ds.has_values("label"):
        raise TokenDataError(
            f"layout {spec.name} starts every document with a class token, but the token rows "
            "carry no labels (the label column is empty); encode labelled data (.cls members, a "
            "label column) or use a layout without class_offset"
        )


def _output_folder(cfg: ExportConfig) -> Path:
    if is_url(cfg.out):
        raise TokenDataError(
            f"--out {redact(cfg.out)}: export writes a local folder (trainers memory-map its "
            "files); export locally, then copy the folder to the store"
        )
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise TokenDataError(f"--out {out}: an existing file, not a folder; name a folder")
    return out


def export(cfg: ExportConfig, callback: Callable[[str, dict], None] | None = None) -> ExportResult:
    """Run (or resume) the export job described by `cfg`."""
    callback = callback or (lambda kind, info: None)
    if cfg.split:
        return _export_splits(cfg, callback)
    t0 = time.perf_counter()
    out = _output_folder(cfg)
    inputs = _open_inputs(cfg)
    ds, layout = inputs.ds, inputs.layout
    if cfg.embeddings and not cfg.tokenizer:  # the tokenizer the tokens name
        near = Path(cfg.tokens[0])
        near = near if near.is_dir() else near.parent
        record = ds.meta.get("tokenizer") or {}
        cfg = dataclasses.replace(cfg, tokenizer=recorded_tokenizer(record, near, cfg.tokens[0]))
    identity = _identity(cfg, ds, layout, inputs.text, inputs.dtype, inputs.packing)
    tasks = plan(ds, cfg.epochs)
    result, todo = _prepare(cfg, out, identity, tasks, ds)
    hashed = _config_hash(identity)
    callback("start", {"tasks": result.tasks_mine, "skipped": result.tasks_skipped})
    names = [t.name for t in tasks]
    pin_folder = functools.partial(pin, Folder(out), MANIFEST, identity, hashed, names,
                                   _refusal(out, identity))  # fmt: skip
    with Committer(result, callback) as committer, ReadAhead(todo, layout, cfg) as reader:
        for i, task in enumerate(todo):
            signals.check()
            claim = contextlib.ExitStack()
            try:
                if not claim.enter_context(claim_task(out, task.name, "export")):
                    claim.close()
                    reader.skip(i)
                    continue
                publish = run_task(task, ds, layout, cfg, out, inputs.dtype, inputs.packing,
                                   hashed, pin_folder, reader.rows(i))  # fmt: skip
            except BaseException:
                claim.close()
                raise
            committer.submit(task.name, publish, claim)
    pin_folder()
    if cfg.merge:
        merge_when_complete(cfg, out, names, inputs.dtype, layout, result)
    refresh_manifest(out)
    if cfg.embeddings:
        from vqtool.export.embeddings import write_embeddings

        result.embeddings = write_embeddings(cfg.embeddings, cfg.tokenizer, ds, layout, cfg.device)
    result.wall_s = time.perf_counter() - t0
    result.tokens_per_s = result.tokens / max(result.wall_s, 1e-9)
    return result


def _prepare(cfg: ExportConfig, out: Path, identity: dict, tasks: list, ds):
    """Sweep what a killed run left, refuse a folder pinned to other settings, take this
    process's share and skip its done tasks: (the result so far, the tasks to write)."""
    hashed = _config_hash(identity)
    out.mkdir(parents=True, exist_ok=True)
    swept = [f"removed {n}, left by a killed run" for n in Folder(out).sweep_stale()]
    sweep_locks(out)
    check_pin(Folder(out), MANIFEST, hashed, [t.name for t in tasks], _refusal(out, identity))
    mine = split_tasks(tasks, cfg.num_shards, cfg.shard_index)
    result = ExportResult(
        out=str(out), format=cfg.format, layout=identity["layout"]["spec"]["name"],
        layout_hash=identity["layout_hash"], dtype=identity["dtype"], tasks_total=len(tasks),
        tasks_mine=len(mine), not_exported=sorted(set(ds.unfinished) | set(ds.missing_tasks)),
        id_ranges=identity["id_ranges"], notes=swept,
    )  # fmt: skip
    if result.not_exported:
        result.notes.append(
            f"{len(result.not_exported)} input task(s) are not finished and were not exported: "
            f"{', '.join(result.not_exported[:5])}"
            + (" ..." if len(result.not_exported) > 5 else "")
            + "; finish the encode, then rerun export to add them"
        )

    def check(task, info: dict) -> None:
        if info.get("config_hash") != hashed or info.get("source_rows") != task.rows:
            raise TokenDataError(
                f"{out / task.name}.done.json was written from other inputs "
                f"({info.get('source')}, {info.get('source_rows')} rows) or settings; this run "
                f"maps {task.name} to {task.path} ({task.rows} rows). Use another --out."
            )

    todo, done, _ = sort_done(Folder(out), mine, check)
    result.tasks_skipped = len(done)
    for info in done:
        add_counts(result, info)
    return result, todo


def parse_split(text: str) -> list[tuple[str, float, float]]:
    """`train=0.99,val=0.01` -> [(name, from, to)] key ranges covering [0, 1)."""
    parts, at = [], 0.0
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, value = item.partition("=")
        try:
            share = float(value)
        except ValueError:
            share = -1.0
        if not name.isidentifier() or not 0 < share <= 1:
            raise TokenDataError(
                f"--split {text}: give NAME=FRACTION pairs, e.g. train=0.99,val=0.01 ({item!r})"
            )
        parts.append((name, at, at + share))
        at += share
    if not parts or abs(at - 1) > 1e-9 or len({p[0] for p in parts}) != len(parts):
        raise TokenDataError(f"--split {text}: the fractions must sum to 1 and names differ")
    return [(n, lo, 1.0 if i == len(parts) - 1 else hi) for i, (n, lo, hi) in enumerate(parts)]


def _export_splits(cfg: ExportConfig, callback) -> ExportResult:
    """Each split a whole export (its own folder, manifest and done markers: exactly once
    each), over the rows whose keys fall in its range."""
    t0 = time.perf_counter()
    results = {}
    for i, part in enumerate(parse_split(cfg.split)):
        sub = dataclasses.replace(cfg, out=str(Path(cfg.out) / part[0]), split=None,
                                  part=(*part, cfg.split),
                                  embeddings=cfg.embeddings if i == 0 else None)  # fmt: skip
        results[part[0]] = export(sub, callback)
    first = next(iter(results.values()))
    total = dataclasses.replace(first, out=cfg.out, notes=[], merged=[], not_exported=[])
    for key in ("tasks_total", "tasks_mine", "tasks_done", "tasks_skipped", "documents",
                "tokens", "rows", "pad_tokens", "text_tokens", "missing_captions"):  # fmt: skip
        setattr(total, key, sum(getattr(r, key) for r in results.values()))
    total.notes = [f"{name}: {n}" for name, r in results.items() for n in r.notes]
    total.splits = {name: {"out": r.out, "documents": r.documents, "tokens": r.tokens,
                           "merged": r.merged} for name, r in results.items()}  # fmt: skip
    total.wall_s = time.perf_counter() - t0
    total.tokens_per_s = total.tokens / max(total.wall_s, 1e-9)
    return total
