"""The main job: images -> resumable, compressed Parquet token shards.

Input shards are grouped into tasks (fixed lists of shards, `shards_per_task`
each, or as many as hold about `task_images` images); this process takes the
tasks of its rank (`RANK`/`WORLD_SIZE`, or `num_shards`/`shard_index` for Slurm
arrays). One DataLoader streams the images of all of them through decode
workers that live for the whole run (decode, EXIF, RGB, resize and crop to the
tokenizer's resolution); batches are tokenized under `inference_mode`, and a
task's rows are written, in input order, when its last shard ends. A task is
done when its `NAME.done.json` exists; reruns skip done tasks and redo the
rest from scratch. `DIR/encode.json` pins the tokenizer and preprocessing:
another tokenizer or preprocessing in the same folder is refused.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

from vqtool.data import Shard, expand_sources
from vqtool.data.inputs import count_images, input_stamp
from vqtool.data.remote import Folder
from vqtool.data.sources import shards_without_captions
from vqtool.errors import EncodeError
from vqtool.metrics.roofline import Roofline, roofline
from vqtool.models.flops import encoder_flops
from vqtool.tokens.encode_config import EXECUTORS, EncodeConfig, EncodeResult
from vqtool.tokens.encode_job import Task, make_job
from vqtool.tokens.reader import ROOFLINE
from vqtool.tokens.tasks import (  # noqa: F401
    check_pin,
    claim_task,
    pin,
    sort_done,
    split_tasks,
    sweep_locks,
)

MANIFEST = "encode.json"


def unique_shards(shards: list[Shard]) -> tuple[list[Shard], list[str]]:
    """Each input once: a local shard listed twice, or reached by another path (a
    symbolic link, `..`), is dropped with a note."""
    kept: list[Shard] = []
    first: dict[str, str] = {}
    notes = []
    for shard in shards:
        local = shard.kind != "pipe" and not shard.remote
        ident = os.path.realpath(shard.path) if local else shard.path
        if ident in first:
            notes.append(f"{shard.name}: the same input as {first[ident]}; read once")
            continue
        first[ident] = shard.name
        kept.append(shard)
    return kept, notes


def shards_per_task(cfg: EncodeConfig, shards: list[Shard], out: Folder) -> tuple[int, str]:
    """How many input shards each task (output file) takes, and a note on how it was
    chosen: `--shards-per-task`, else what the folder's first run chose (so reruns plan the
    same tasks), else as many as hold about `--task-images` images, counted in the first
    shard's headers (one task per shard when they cannot be counted)."""
    recorded = None
    if out.exists(MANIFEST):
        recorded = json.loads(out.read_text(MANIFEST)).get("shards_per_task")
    if cfg.shards_per_task is not None:
        if recorded is not None and recorded != cfg.shards_per_task:
            raise EncodeError(
                f"{out} holds tasks of {recorded} shard(s) each; rerun with --shards-per-task "
                f"{recorded} (or without it), or write to another --out"
            )
        return cfg.shards_per_task, ""
    if recorded is not None:
        return recorded, ""
    if cfg.task_images < 1:
        raise EncodeError(f"--task-images must be >= 1, got {cfg.task_images}")
    count = count_images(shards[0]) if shards else None
    if not count:
        return 1, ""
    per_task = max(1, min(len(shards), round(cfg.task_images / count)))
    if per_task == 1:
        return 1, ""
    return per_task, (f"{per_task} shards per task: {shards[0].name} holds {count} images, "
                      f"--task-images {cfg.task_images}")  # fmt: skip


def plan_tasks(shards: list[Shard], per_task: int) -> list[Task]:
    if per_task < 1:
        raise EncodeError(f"--shards-per-task must be >= 1, got {per_task}")
    groups = [shards[i : i + per_task] for i in range(0, len(shards), per_task)]
    return [Task(f"part-{i:06d}", g) for i, g in enumerate(groups)]


def my_tasks(tasks: list[Task], cfg: EncodeConfig) -> list[Task]:
    return split_tasks(tasks, cfg.num_shards, cfg.shard_index)


def input_stamps(shards: list[Shard]) -> list[dict | None]:
    """Each input's content stamp (`vqtool.data.inputs.input_stamp`)."""
    return [input_stamp(shard) for shard in shards]


def _redo_reason(info: dict, task: Task, redo_errors: bool) -> str | None:
    """Why a done task must be encoded again: an input changed since (size or mtime), an
    input that was missing when it was read is there now, or it recorded errors and
    --redo-errors asks for them."""
    recorded = info.get("inputs")
    if recorded is not None:
        now = input_stamps(task.shards)
        changed = [s.name for s, a, b in zip(task.shards, recorded, now) if a and b and a != b]
        if changed:
            return f"input changed since it was encoded ({', '.join(changed[:3])})"
        local = [s.kind != "pipe" and not s.remote for s in task.shards]
        back = [s.name for s, a, b, here in zip(task.shards, recorded, now, local)
                if here and a is None and b]  # fmt: skip
        if back:
            return f"input missing when it was read is there now ({', '.join(back[:3])})"
    if redo_errors and info.get("errors"):
        return f"{info['errors']} sample error(s) recorded (--redo-errors)"
    return None


def _part_problem(out: Folder, name: str, info: dict) -> str | None:
    """Why a done marker cannot be trusted: its token file is missing or of another size
    than the marker records (a marker that outlived its part, e.g. two runs into one
    prefix, or a part removed by hand). The task is then encoded again."""
    part = out.stamp(f"{name}.parquet")
    if part is None:
        return "its token file is missing"
    recorded = (info.get("part") or {}).get("size", info.get("bytes"))
    if recorded is not None and part["size"] != recorded:
        return f"its token file holds {part['size']:,} bytes, the marker says {recorded:,}"
    return None


def _refusal(identity: dict, out: Folder):
    """The error for a folder that holds tokens of another configuration."""

    def refuse(old: dict) -> EncodeError:
        was, now = old.get("compute", {}), identity["compute"]
        before, rule = old.get("preprocessing", {}), identity["preprocessing"]
        same_tokenizer = old.get("tokenizer", {}).get("sha256") == identity["tokenizer"]["sha256"]
        other = [f"--{k.replace('_', '-')} {before[k]}" for k in ("orientation", "high_bit_depth")
                 if k in before and before[k] != rule[k]]  # fmt: skip
        if other and same_tokenizer:
            return EncodeError(
                f"{out} holds tokens made under another input rule ({', '.join(other)}; this "
                f"run: --orientation {rule['orientation']} --high-bit-depth "
                f"{rule['high_bit_depth']}); rerun with {' '.join(other)}, or use another --out"
            )
        if same_tokenizer and before.get("decode") != rule.get("decode"):
            own = "draft" if identity["tokenizer"]["config"]["resize"] == "bicubic" else "pil"
            was_d, now_d = before.get("decode", own), rule.get("decode", own)
            return EncodeError(
                f"{out} holds tokens decoded another way (--decode {was_d}; this run: "
                f"--decode {now_d}); rerun with the same --decode, or use another --out"
            )
        unrecorded = "" if "orientation" in before else (
            " (written by an earlier vqtool, which did not record its input rule)")  # fmt: skip
        return EncodeError(
            f"{out} holds tokens made with another tokenizer, preprocessing or precision "
            f"(tokenizer sha256 {old.get('tokenizer', {}).get('sha256', '?')[:12]}..., "
            f"image size {before.get('image_size')}, "
            f"{was.get('precision', 'unrecorded precision')}){unrecorded}; this run uses "
            f"{identity['tokenizer']['sha256'][:12]}..., image size "
            f"{rule['image_size']}, {now['precision']}. "
            "Use another --out."
        )

    return refuse


def _sort_tasks(cfg: EncodeConfig, job, tasks: list[Task]) -> tuple[list, list, int, list]:
    """Pin the folder (or refuse it), take this process's share, skip its done tasks:
    (mine, to do, skipped, notes on tasks encoded again)."""
    out, names = job.out, [t.name for t in tasks]
    refuse = _refusal(job.identity, out)
    if not check_pin(out, MANIFEST, job.config_hash, names, refuse):
        pin(out, MANIFEST, job.identity, job.config_hash, names, refuse)
    mine = my_tasks(tasks, cfg)

    def check(task: Task, info: dict) -> str | None:
        names = [s.name for s in task.shards]
        if info.get("config_hash") != job.config_hash or info.get("shards") != names:
            raise EncodeError(
                f"{out}/{task.name}.done.json was written for other inputs ({info.get('shards')}) "
                f"or another configuration; this run maps {task.name} to {names}. Use another "
                "--out."
            )
        return _part_problem(out, task.name, info) or _redo_reason(info, task, cfg.redo_errors)

    todo, done, redo = sort_done(out, mine, check)
    return mine, todo, len(done), [f"{note}; encoded again" for note in redo]


def rule_notes(r: EncodeResult) -> list[str]:
    """One line per kind of photo the input rule met in this run: how many, what the
    rule did with them, and the flag that does the other thing."""
    rule, notes = r.input_rule, []
    if r.exif_oriented:
        upright = rule.get("orientation") == "exif"
        notes.append(
            f"{r.exif_oriented:,} photo(s) carried an EXIF orientation: "
            + ("turned upright (--orientation stored keeps them as stored)" if upright else
               "kept as stored, as the tokenizer's original reads them (--orientation exif "
               "turns them upright)")
        )  # fmt: skip
    if r.high_bit_depth:
        scaled = rule.get("high_bit_depth") == "scale"
        notes.append(
            f"{r.high_bit_depth:,} image(s) had more than 8 bits per value: "
            + ("scaled to 8 bits by their range (--high-bit-depth clip clips them)" if scaled
               else "clipped at 255, as the tokenizer's original reads them "
               "(--high-bit-depth scale scales them)")
        )  # fmt: skip
    return notes


def run_roofline(cfg: EncodeConfig, job) -> Roofline:
    """This run against its ceilings: the encoder's FLOPs averaged over the sizes the
    network saw, the device's GEMM peak at the run's precision, the decode workers' rate."""
    seen = sum(job.shapes.values())
    counted = {s: encoder_flops(job.tok.config, *s) for s in job.shapes}
    known = all(v is not None for v in counted.values()) and seen
    flops = sum(counted[s] * n for s, n in job.shapes.items()) / seen if known else None
    return roofline(flops, job.device, job.amp, job.decode_s, job.decoded, cfg.workers,
                    job.result.images_per_s)  # fmt: skip


def encode(cfg: EncodeConfig, callback: Callable[[str, dict], None] | None = None) -> EncodeResult:
    """Run (or resume) the encode job described by `cfg`: here, or on a Ray cluster
    (`executor="ray"`) over the same task list and the same task function."""
    callback = callback or (lambda kind, info: None)
    t0 = time.perf_counter()
    if cfg.executor not in EXECUTORS:
        raise EncodeError(f"--executor {cfg.executor!r}: use {' or '.join(EXECUTORS)}")
    expanded = expand_sources(cfg.sources, retries=cfg.retries, caption_from=cfg.caption_from)
    shards, dropped = unique_shards(expanded)
    lacking = shards_without_captions(shards)
    if lacking:
        raise EncodeError(
            f"--caption-from {cfg.caption_from}: {len(lacking)} shard(s) have no such caption "
            f"(first sample checked): {', '.join(lacking[:3])}"
            + (" ..." if len(lacking) > 3 else "")
            + "; name where their captions are (txt, json:FIELD) or leave --caption-from auto"
        )
    if cfg.executor == "ray":  # the driver plans on its CPU; actors encode where they run
        from vqtool.tokens.ray_executor import compute_device, run_on_ray

        compute = compute_device(cfg)
        job = make_job(cfg, callback, device="cpu", compute=compute)
    else:
        job = make_job(cfg, callback)
    job.identity["captions"] = cfg.caption_from  # recorded in encode.json, not pinned
    out = job.out
    out.make(cfg.create_bucket)
    if out.remote and not cfg.single_writer and not out.conditional_writes():
        raise EncodeError(
            f"--out {out}: this store does not refuse a second conditional create "
            "(If-None-Match), so two runs writing into one prefix could overwrite each "
            "other's files unnoticed; pass --single-writer if this run is the only writer"
        )
    result_notes = [f"removed {n}, left by a killed run" for n in out.sweep_stale()]
    sweep_locks(out)
    per_task, why = shards_per_task(cfg, shards, out)
    tasks = plan_tasks(shards, per_task)
    job.identity["shards_per_task"] = per_task  # recorded in encode.json, reused by reruns
    mine, todo, skipped, redo = _sort_tasks(cfg, job, tasks)
    result = job.result
    result.tasks_total, result.tasks_mine, result.tasks_skipped = len(tasks), len(mine), skipped
    result.notes += dropped + result_notes + redo + ([why] if why else [])
    callback("start", {"tasks": len(mine), "skipped": skipped})
    if cfg.executor == "ray":
        run_on_ray(cfg, job, todo, compute)
    else:
        job.run_tasks(todo)
    return _summed_up(cfg, job, time.perf_counter() - t0)


def _summed_up(cfg: EncodeConfig, job, wall_s: float) -> EncodeResult:
    """The run's result completed: notes, rates, usage, and its roofline (written to the
    folder for `inspect`)."""
    result = job.result
    result.notes += rule_notes(result)
    result.wall_s = wall_s
    result.images_per_s = result.images / max(result.wall_s, 1e-9)
    if result.images and cfg.executor == "local":
        result.roofline = run_roofline(cfg, job).to_dict()
        job.out.write_text(ROOFLINE, json.dumps(result.roofline, indent=1))
    if result.tokens:
        result.bytes_per_token = result.bytes_on_disk / result.tokens
        result.used_share = job.usage.stats().used_share
        if job.usage.saturated:
            held = len(job.usage.histogram.codes)
            result.notes.append(
                f"more than {held:,} distinct codes of {job.tok.vocab_size:,}: 'codes used' "
                "counts the codes first seen (a lower bound)"
            )
    return result
