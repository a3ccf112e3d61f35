"""`vqtool encode SRC... --tokenizer CKPT --out DIR`: images -> Parquet token shards."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from vqtool.assets import DEFAULT_TOKENIZER
from vqtool.cli.common import console, err_console, print_json, user_errors

app = typer.Typer()


@app.command()
def encode(
    sources: Annotated[
        list[str],
        typer.Argument(
            help="Tar shards (brace expansion, pipe:CMD), image folders, Parquet files, "
            "vqtool:sample (the bundled shard), or - for paths on stdin."
        ),
    ],
    out: Annotated[str, typer.Option("--out", help="Output folder for the token shards.")],
    tokenizer: Annotated[
        str,
        typer.Option("--tokenizer", help="Tokenizer checkpoint (.safetensors) or a bundled name."),
    ] = DEFAULT_TOKENIZER,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 64,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Decode processes.")] = 2,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="auto, fp32, bf16.")] = "auto",
    shards_per_task: Annotated[
        int, typer.Option("--shards-per-task", min=1, help="Input shards per output file.")
    ] = 1,
    num_shards: Annotated[
        int | None, typer.Option("--num-shards", help="Split the tasks K ways (Slurm arrays)...")
    ] = None,
    shard_index: Annotated[
        int | None, typer.Option("--shard-index", help="...and run part I (0-based).")
    ] = None,
    max_pixels: Annotated[
        int | None,
        typer.Option(
            "--max-pixels",
            min=1,
            help="Refuse larger images (decompression bombs). [default: 268435456 = 2^28]",
        ),
    ] = None,
    image_size: Annotated[
        int | None,
        typer.Option(
            "--image-size",
            min=1,
            help="Input size for a public tokenizer file (default: its native size); "
            "a vqtool tokenizer runs at its training size.",
        ),
    ] = None,
    tf32: Annotated[
        str, typer.Option("--tf32", help="on|off: CUDA TF32 (off reproduces fp32 tokens).")
    ] = "off",
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 if any sample failed.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Tokenize images into resumable, compressed Parquet token shards."""
    from vqtool.tokens.encode import EncodeConfig
    from vqtool.tokens.encode import encode as run_encode

    sources = sources or []
    entries = [s for s in sources if s != "-"]
    if "-" in sources:
        entries += [line.strip() for line in sys.stdin if line.strip()]
    cfg = EncodeConfig(
        entries,
        tokenizer,
        out,
        batch_size,
        workers,
        device,
        precision,
        shards_per_task,
        num_shards,
        shard_index,
        image_size=image_size,
        max_pixels=max_pixels,
        tf32=_on_off(tf32),
    )
    show = console.is_terminal and not as_json
    progress = Progress(
        TextColumn("[bold]encode"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("tasks | {task.fields[images]} images, {task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not show,
    )
    state = {"images": 0, "t": None}
    bar = progress.add_task("encode", total=None, images=0, rate="")

    def on_event(kind: str, info: dict) -> None:
        if kind == "start":
            state["t"] = time.perf_counter()
            progress.update(bar, total=info["tasks"], completed=info["skipped"])
        elif kind == "batch":
            state["images"] += info["images"]
            rate = state["images"] / max(time.perf_counter() - state["t"], 1e-9)
            progress.update(bar, images=f"{state['images']:,}", rate=f"{rate:.1f}/s")
        elif kind == "task":
            progress.advance(bar)

    with user_errors(), progress:
        result = run_encode(cfg, on_event)
    if result.tokenizer_family:
        err_console.print(
            f"vqtool: --tokenizer {tokenizer}: detected a {result.tokenizer_family} checkpoint",
            highlight=False,
            soft_wrap=True,
        )
    if as_json:
        print_json(result.to_dict())
    else:
        _summary(result)
    if strict and result.errors:
        err_console.print(
            f"vqtool: {result.errors} samples failed (--strict); see {result.out}/*.errors.jsonl",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)


def _on_off(value: str) -> bool:
    if value not in ("on", "off"):
        raise typer.BadParameter(f"--tf32 {value!r}: use on or off")
    return value == "on"


def _summary(r) -> None:
    table = Table(title=f"encoded -> {r.out}", show_header=False)
    table.add_row(
        "tasks",
        f"{r.tasks_done} written, {r.tasks_skipped} already done, "
        f"{r.tasks_mine} of {r.tasks_total} are this process's",
    )
    table.add_row("images", f"{r.images:,} ({r.images_per_s:.1f}/s on {r.device})")
    table.add_row("tokens", f"{r.tokens:,} (vocabulary {r.vocab_size:,})")
    errors = f"{r.errors}"
    if r.error_examples:
        e = r.error_examples[0]
        errors += f" (e.g. {e['key']}: {e['reason']}; all in *.errors.jsonl)"
    table.add_row("errors", errors)
    if r.tokens:
        table.add_row("on disk", f"{r.bytes_on_disk:,} bytes, {r.bytes_per_token:.3f} bytes/token")
        table.add_row("codes used", f"{r.used_share:.1%} of the vocabulary")
    table.add_row("wall time", f"{r.wall_s:.1f} s")
    console.print(table)
