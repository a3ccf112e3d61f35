"""`export --merge GB`: the finished per-task files joined into few large ones.

Megatron users otherwise blend hundreds of prefixes (and `BlendedDataset` wants
`torch.distributed` even for one process); nanoGPT-style readers want one `train.bin`.
Once every task is exported, consecutive tasks are grouped until a group's ids reach
the target size; each group becomes `merged-NNNNNN` (`.bin`, `.idx` or `.offsets.npy`,
the loss mask, the document index), written to temporary names, made durable, renamed,
then marked by `merged-NNNNNN.done.json`. Only then are its tasks' own files removed
(their done markers stay, noting the group), so a run killed at any point and rerun
ends with every document exactly once: a group without its marker is rebuilt from its
tasks' files, which are still there.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vqtool.atomic import commit, temporary
from vqtool.errors import EncodeError, TokenDataError
from vqtool.lm.files import DOCS_SCHEMA, file_names
from vqtool.lm.megatron import MEGATRON_HEADER, write_megatron_idx
from vqtool.tokens.tasks import claim_task
from vqtool.tokens.writer import atomic_write_text

PREFIX = "merged"


def plan_groups(out: Path, tasks: list[str], fmt: str, target_bytes: int) -> list[list[str]]:
    """Consecutive tasks, each group's ids file reaching `target_bytes` (the last group
    takes what is left); sizes from the tasks' done markers, so every rank plans alike."""
    groups: list[list[str]] = [[]]
    size = 0
    main = file_names(fmt, "x", False)[0][1:]  # ".bin"
    for name in tasks:
        info = json.loads((out / f"{name}.done.json").read_text())
        if groups[-1] and size >= target_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += int((info.get("files") or {}).get(name + main, 0))
    return [g for g in groups if g]


def merge(out: Path, tasks: list[str], fmt: str, dtype: str, mask: bool,
          target_gb: float) -> list[str]:  # fmt: skip
    """Merge the finished tasks of `out` (all of them: call once every task is done) into
    groups of about `target_gb` GB; returns the group names, in order."""
    if fmt == "parquet":
        raise TokenDataError("--merge joins .bin files (megatron, stream); Parquet readers "
                             "take many files already: drop --merge")  # fmt: skip
    groups = plan_groups(out, tasks, fmt, int(target_gb * 2**30))
    names = []
    for i, group in enumerate(groups):
        name = f"{PREFIX}-{i:06d}"
        names.append(name)
        marker = out / f"{name}.done.json"
        if not marker.exists():
            facts = _merge_group(out, name, group, fmt, np.dtype(dtype), mask)
            infos = [json.loads((out / f"{t}.done.json").read_text()) for t in group]
            for key in ("tokens", "rows", "pad_tokens", "text_tokens"):
                facts[key] = sum(int(i.get(key) or 0) for i in infos)
            atomic_write_text(marker, json.dumps({"tasks": group, **facts}, indent=1))
        for task in group:  # the group is durable: its tasks' own files go
            _retire(out, task, name, fmt, mask)
    return names


def _merge_group(out: Path, name: str, group: list[str], fmt: str, dtype: np.dtype,
                 mask: bool) -> dict:  # fmt: skip
    finals = [out / n for n in file_names(fmt, name, mask)]
    tmps = [temporary(p) for p in finals]
    try:
        sizes, mask_sizes, tokens, docs = [], [], 0, []
        with open(tmps[0], "wb") as ids, open(tmps[2], "wb") if mask else _Null() as masks:
            for task in group:
                parts = [out / n for n in file_names(fmt, task, mask)]
                with open(parts[0], "rb") as src:
                    shutil.copyfileobj(src, ids, 1 << 24)
                if mask:
                    with open(parts[2], "rb") as src:
                        shutil.copyfileobj(src, masks, 1 << 24)
                if fmt == "megatron":
                    sizes.append(_idx_sizes(parts[1]))
                    if mask:
                        mask_sizes.append(_idx_sizes(parts[3]))
                index = pq.read_table(parts[-1], schema=DOCS_SCHEMA)
                starts = pa.compute.add(index.column("start"), tokens)
                docs.append(index.set_column(index.schema.get_field_index("start"), "start",
                                             starts))  # fmt: skip
                tokens += parts[0].stat().st_size // dtype.itemsize
        if fmt == "megatron":
            write_megatron_idx(tmps[1], np.concatenate(sizes), dtype)
            if mask:
                write_megatron_idx(tmps[3], np.concatenate(mask_sizes), np.dtype(np.uint8))
        else:  # stream: document starts, one past the last
            index = pa.concat_tables(docs)
            starts = np.concatenate([index.column("start").to_numpy(), [tokens]]).astype(np.int64)
            with open(tmps[1], "wb") as f:
                np.save(f, starts)
        table = pa.concat_tables(docs)
        pq.write_table(table, tmps[-1], compression="zstd", write_statistics=False,
                       use_dictionary=["source", "caption"])  # fmt: skip
        facts = {"documents": table.num_rows, "stream_tokens": tokens,
                 "files": {f.name: t.stat().st_size for t, f in zip(tmps, finals)}}  # fmt: skip
        for tmp, final in zip(tmps, finals):
            commit(tmp, final, sync=True)
        return facts
    except BaseException:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        raise


def _retire(out: Path, task: str, group: str, fmt: str, mask: bool) -> None:
    marker = out / f"{task}.done.json"
    info = json.loads(marker.read_text())
    if info.get("merged_into") != group:
        atomic_write_text(marker, json.dumps({**info, "merged_into": group}, indent=1))
    for n in file_names(fmt, task, mask):
        (out / n).unlink(missing_ok=True)


def _idx_sizes(path: Path) -> np.ndarray:
    """The sequence lengths of a Megatron .idx file (its pointers and documents follow
    from them when the files are joined)."""
    raw = path.read_bytes()
    head = len(MEGATRON_HEADER) + 8 + 1
    (count,) = struct.unpack("<Q", raw[head : head + 8])
    start = head + 16
    return np.frombuffer(raw[start : start + 4 * count], dtype="<i4")


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def merge_when_complete(cfg, out: Path, tasks: list[str], dtype: str, layout, result) -> None:
    """--merge: join the tasks' files once all of them are exported (by any rank)."""
    left = [t for t in tasks if not (out / f"{t}.done.json").exists()]
    if left:
        result.notes.append(f"--merge waits for {len(left)} unfinished task(s) (other ranks "
                            "or a failed run); rerun when they are done")  # fmt: skip
        return
    try:
        with claim_task(out, "merge", "export"):  # one rank merges; the others go on
            mask = layout.spec.loss != "all"
            result.merged = merge(out, tasks, cfg.format, dtype, mask, cfg.merge)
    except EncodeError:
        result.notes.append("--merge: another process is merging this folder right now")
