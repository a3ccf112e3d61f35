"""`vqtool encode SRC... --tokenizer CKPT --out DIR`: images -> Parquet token shards."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer
from rich.markup import escape
from typer import Argument, Option

from vqtool.cli.common import console, err_console, print_json, stdout_for_json, user_errors
from vqtool.cli.options import (
    DEFAULT,
    Device,
    ImageSize,
    Json,
    LogEvery,
    Precision,
    Quiet,
    Tf32,
    Threads,
    Tokenizer,
    with_stdin,
)

app = typer.Typer()
#: exit status of a run that left tasks without a done marker (README, "Exit status")
UNFINISHED = 3
SOURCES = ("Tar shards (brace expansion, pipe:CMD), image folders, Parquet files, vqtool:sample "
           "(the bundled shard), or - for paths on stdin.")  # fmt: skip
PRECISION = "auto (bf16 on CUDA, fp32 on CPU), fp32, or bf16 (the network under bf16 autocast)."


class Orientation(str, Enum):
    exif = "exif"
    stored = "stored"


class HighBitDepth(str, Enum):
    scale = "scale"
    clip = "clip"


class Decoder(str, Enum):
    pil = "pil"
    draft = "draft"


class Executor(str, Enum):
    local = "local"
    ray = "ray"


# Over 60 lines only by its typed options: typer reads each from the signature, and the
# body stays the thin parse-call-render of every command.
# fmt: off
@app.command(epilog="Example: vqtool encode vqtool:sample --out tokens/")
def encode(
    sources: Annotated[list[str], Argument(help=SOURCES)],
    out: Annotated[str, Option("--out", help="Output folder for the token shards.")],
    tokenizer: Tokenizer = DEFAULT,
    batch_size: Annotated[int, Option("--batch-size", min=1, help="Images per forward.")] = 64,
    workers: Annotated[int, Option("--workers", min=0, help="Decode processes.")] = 2,
    device: Device = "auto",
    precision: Annotated[Precision, Option("--precision", help=PRECISION)] = Precision.auto,
    task_images: Annotated[int, Option("--task-images", min=1, help=(
        "Images per task (output file), about: as many input shards as hold this many "
        "(counted in the first shard's headers)."))] = 5000,
    shards_per_task: Annotated[int | None, Option("--shards-per-task", min=1, help=(
        "Input shards per output file instead (1: one file per shard)."))] = None,
    num_shards: Annotated[int | None, Option("--num-shards", min=1,
                                             help="Split the tasks K ways (Slurm)...")] = None,
    shard_index: Annotated[int | None, Option("--shard-index", min=0,
                                              help="...and run part I (0-based).")] = None,
    max_pixels: Annotated[int | None, Option("--max-pixels", min=1, show_default="268435456 = 2^28",
        help="Refuse larger images (decompression bombs).")] = None,
    image_size: ImageSize = None,
    resize: Annotated[str | None, Option(
        "--resize", show_default=("the tokenizer's own: square; Emu3: "
                                  "smart:262144:1048576:518400; Emu3.5: area:518400:16"),
        help=("square (resize and centre-crop to the tokenizer's size), none (each image as it "
              "is), smart:MIN_PIXELS:MAX_PIXELS\\[:AREA] (Emu3's rule) or area:AREA\\[:FACTOR] "
              "(Emu3.5's); all but square keep each image's aspect ratio and record each row's "
              "grid."))] = None,
    orientation: Annotated[Orientation | None, Option("--orientation", show_default=(
        "the tokenizer's family: stored for public tokenizers, exif for vqtool's own"), help=(
        "exif (turn photos upright by their EXIF orientation) or stored (pixels as stored, "
        "as the public tokenizers' originals read them)."))] = None,
    high_bit_depth: Annotated[HighBitDepth | None, Option("--high-bit-depth", show_default=(
        "the tokenizer's family: clip for public tokenizers, scale for vqtool's own"), help=(
        "16-bit and float greyscale: scale (by its range to 8 bits) or clip (values above "
        "255 become 255, as the originals' convert('RGB'))."))] = None,
    decode: Annotated[Decoder | None, Option("--decode", show_default=(
        "the tokenizer's family: draft for vqtool's own, pil for public tokenizers"), help=(
        "pil (decode in full, then resize: the public tokenizers' originals) or draft (a JPEG "
        "at least twice the size reduced in libjpeg's DCT first; faster, tokens differ a "
        "little from pil's)."))] = None,
    tf32: Tf32 = False,
    threads: Threads = None,
    caption_from: Annotated[str, Option("--caption-from", help=(
        "Where captions are: auto (a .txt member, else the .json caption), txt, or "
        "json:FIELD (e.g. json:category; a Parquet source's column FIELD)."))] = "auto",
    retries: Annotated[int, Option("--retries", min=0, help=(
        "URLs: retries (with backoff) after a transient read or write failure."))] = 3,
    executor: Annotated[Executor, Option("--executor", help=(
        "local (this process; torchrun/Slurm split the tasks) or ray (actors pull tasks)."
    ))] = Executor.local,
    ray_address: Annotated[str | None, Option("--ray-address", help=(
        "A running Ray cluster (auto, ray://HOST:10001); default: start a local one."))] = None,
    ray_actors: Annotated[int | None, Option("--ray-actors", min=1, help=(
        "Actors (default: one per GPU, else CPUs / --ray-cpus-per-actor)."))] = None,
    ray_cpus_per_actor: Annotated[float, Option("--ray-cpus-per-actor", min=0.1, help=(
        "CPUs each actor reserves on a cluster without GPUs."))] = 1.0,
    redo_errors: Annotated[bool, Option("--redo-errors", help=(
        "Encode again the finished tasks that recorded sample errors (a task whose input "
        "file changed since is always encoded again)."))] = False,
    create_bucket: Annotated[bool, Option("--create-bucket", help=(
        "--out in an object-store bucket that does not exist: create it (else refused, "
        "as a typo)."))] = False,
    single_writer: Annotated[bool, Option("--single-writer", help=(
        "This run is the only writer into an object-store --out: no task claims (for stores "
        "without conditional writes, which are refused otherwise)."))] = False,
    claim_lease: Annotated[float, Option("--claim-lease", min=1, metavar="SECONDS", help=(
        "Object-store --out: how long a task's claim holds unless its run renews it (a "
        "crashed run's tasks are taken over after this)."))] = 600.0,
    strict: Annotated[bool, Option("--strict", help=(
        "Exit 1 if any sample failed (a task left unfinished always exits 3)."))] = False,
    log_every: LogEvery = 30.0,
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Tokenize images into resumable, compressed Parquet token shards."""
    from vqtool.cli import preflight

    with user_errors():  # before torch loads: a mistyped path is answered at once
        preflight.sources([s for s in sources if s != "-"])
        preflight.checkpoint(tokenizer)
    from vqtool.report.jobs import JobProgress, encode_summary, follow_encode
    from vqtool.tokens.encode import EncodeConfig
    from vqtool.tokens.encode import encode as run_encode

    cfg = EncodeConfig(sources=with_stdin(sources), tokenizer=tokenizer, out=out,
                       batch_size=batch_size, workers=workers, device=device,
                       precision=precision.value, shards_per_task=shards_per_task,
                       task_images=task_images, threads=threads or 0,
                       num_shards=num_shards, shard_index=shard_index, image_size=image_size,
                       resize=resize, max_pixels=max_pixels, tf32=tf32, retries=retries,
                       orientation=orientation.value if orientation else None,
                       high_bit_depth=high_bit_depth.value if high_bit_depth else None,
                       decode=decode.value if decode else None, caption_from=caption_from,
                       executor=executor.value, ray_address=ray_address, ray_actors=ray_actors,
                       ray_cpus_per_actor=ray_cpus_per_actor, redo_errors=redo_errors,
                       create_bucket=create_bucket, single_writer=single_writer,
                       claim_lease_s=claim_lease)
    progress = JobProgress("encode", "tasks", console, err_console,
                           not (as_json or quiet), log_every)
    with user_errors(), stdout_for_json(as_json), progress:
        result = run_encode(cfg, follow_encode(progress))
    for note in [] if quiet else result.notes:
        err_console.print(f"vqtool: {escape(note)}", highlight=False, soft_wrap=True)
    if as_json:
        print_json(result.to_dict())
    elif not quiet:
        console.print(encode_summary(result))
    if result.unfinished:  # whatever --strict says: a rerun must finish them
        err_console.print(f"vqtool: {len(result.unfinished)} task(s) left unfinished ("
                          f"{'; '.join(result.unfinished[:3])}); rerun the same command to "
                          "finish them", highlight=False, soft_wrap=True)  # fmt: skip
        raise typer.Exit(UNFINISHED)
    if strict and result.errors:
        err_console.print(f"vqtool: {result.errors} samples failed (--strict); see "
                          f"{result.out}/*.errors.jsonl", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
# fmt: on
