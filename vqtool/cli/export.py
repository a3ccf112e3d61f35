"""`vqtool export TOKENS... --layout L --format F --out DIR`: token shards -> LM documents."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from rich.markup import escape
from typer import Argument, Option, Typer

from vqtool.assets import layout_names
from vqtool.cli.common import console, err_console, print_json, user_errors
from vqtool.cli.options import Device, Json, LogEvery, Quiet

app = Typer()


class Format(str, Enum):
    megatron = "megatron"  # Megatron-Core .bin/.idx
    stream = "stream"  # flat ids + document offsets (.npy)
    parquet = "parquet"  # input_ids rows (HF datasets)


# Over 60 lines only by its typed options: typer reads each from the signature, and the
# body stays the thin parse-call-render of every command.
# fmt: off
@app.command(
    epilog=(
        "Example: vqtool export tokens/ --layout liquid "
        "--text-tokenizer tokenizer.json --format megatron --out lm/"
    )
)
def export(
    tokens: Annotated[list[str], Argument(help="Encode folders or token Parquet files.")],
    layout: Annotated[str, Option("--layout", help=(
        f"A shipped preset ({', '.join(layout_names())}) or a layout TOML file."))],
    format: Annotated[Format, Option("--format", help=(
        "megatron (.bin/.idx), stream (flat ids + offsets .npy) or parquet (input_ids)."))],
    out: Annotated[str, Option("--out", help="Output folder.")],
    sets: Annotated[list[str] | None, Option("--set", metavar="KEY=VALUE", help=(
        "Override a layout key, KEY=VALUE (TOML value), e.g. --set caption_drop=0.1."))] = None,
    text_tokenizer: Annotated[str | None, Option("--text-tokenizer", help=(
        "A Hugging Face tokenizer.json for captions and text tokens (never downloaded)."))] = None,
    pack: Annotated[int | None, Option("--pack", min=1, help=(
        "Concatenate documents and cut rows of N tokens (boundaries kept)."))] = None,
    pad_to: Annotated[int | None, Option("--pad-to", min=1, help=(
        "One document per row, padded with the layout's pad id to N tokens."))] = None,
    allow_missing_captions: Annotated[bool, Option("--allow-missing-captions", help=(
        "Export a caption layout over tokens without captions (all unconditional)."))] = False,
    allow_split_documents: Annotated[bool, Option("--allow-split-documents", help=(
        "Admit documents longer than --pack (each is cut across rows). --pack fills every "
        "row, so documents always continue from one row into the next."))] = False,
    split: Annotated[str | None, Option("--split", metavar="NAME=FRACTION,...", help=(
        "Split the rows by a hash of their keys into OUT/NAME folders, e.g. "
        "train=0.99,val=0.01 (the same rows on every run)."))] = None,
    merge: Annotated[float | None, Option("--merge", metavar="GB", help=(
        "Once every task is exported, join the files into ones of about GB gigabytes of ids "
        "each (one Megatron prefix or one stream file for a small dataset)."))] = None,
    epochs: Annotated[int, Option("--epochs", min=1, help=(
        "Write the data N times, each epoch with fresh draws (drops, caption position, "
        "phrase) keyed by (seed, epoch, key): reproducible and resumable."))] = 1,
    dtype: Annotated[str, Option("--dtype", help=(
        "auto (uint16 when every id fits, else int32/uint32), uint16, int32 or uint32."))] = "auto",
    embeddings: Annotated[str | None, Option("--embeddings", help=(
        "Also write the code vectors in LM-id order to this .safetensors (needs --tokenizer)."
    ))] = None,
    tokenizer: Annotated[str | None, Option("--tokenizer", help=(
        "The tokenizer that wrote the tokens, for --embeddings."))] = None,
    num_shards: Annotated[int | None, Option("--num-shards", min=1,
                                             help="Split the tasks K ways (Slurm)...")] = None,
    shard_index: Annotated[int | None, Option("--shard-index", min=0,
                                              help="...and run part I (0-based).")] = None,
    device: Device = "cpu",
    log_every: LogEvery = 30.0,
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Turn token shards into the files LM trainers read, in a published layout."""
    from vqtool.cli import preflight

    with user_errors():  # before torch loads: a mistyped path is answered at once
        preflight.token_inputs(tokens)
        preflight.checkpoint(tokenizer)
    from vqtool.export.job import ExportConfig
    from vqtool.export.job import export as run_export
    from vqtool.report.jobs import JobProgress, export_summary, follow_tasks

    cfg = ExportConfig(tokens=tokens, layout=layout, format=format.value, out=out,
                       sets=sets or [], text_tokenizer=text_tokenizer, pack=pack, pad_to=pad_to,
                       dtype=dtype, embeddings=embeddings, tokenizer=tokenizer,
                       num_shards=num_shards, shard_index=shard_index, device=device,
                       epochs=epochs, allow_missing_captions=allow_missing_captions,
                       allow_split_documents=allow_split_documents, merge=merge,
                       split=split)
    progress = JobProgress("export", "tasks", console, err_console,
                           not (as_json or quiet), log_every)
    with user_errors(), progress:
        result = run_export(cfg, follow_tasks(progress, "documents"))
    for note in [] if quiet else result.notes:
        err_console.print(f"vqtool: {escape(note)}", highlight=False, soft_wrap=True)
    if as_json:
        print_json(result.to_dict())
    elif not quiet:
        console.print(export_summary(result))
# fmt: on
