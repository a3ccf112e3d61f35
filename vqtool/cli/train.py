"""`vqtool train RECIPE --data SRC --out RUN`: train a tokenizer or a prior from a
TOML recipe (its `task` says which)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from vqtool.cli.common import console, print_json, user_errors

app = typer.Typer()


@app.command()
def train(
    recipe: Annotated[Path, typer.Argument(help="TOML recipe (see recipes/).")],
    data: Annotated[
        list[str],
        typer.Option(
            "--data",
            help="Training data: for a tokenizer, images (tar shards with brace expansion, "
            "pipe:CMD, folders, Parquet, - for paths on stdin); for a prior, token shards "
            "(an encode folder or token Parquet files). Repeatable.",
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Run folder: checkpoint, state, metrics.jsonl.")
    ],
    eval_data: Annotated[
        list[str] | None,
        typer.Option(
            "--eval-data",
            help="Held-out images (PSNR/SSIM/usage) or token shards (bits/token). Repeatable.",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a recipe key, e.g. --set quantizer.codebook_size=4096. Repeatable.",
        ),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")] = False,
    steps: Annotated[
        int | None, typer.Option("--steps", help="Same as --set train.steps=N.")
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:1 ...")
    ] = None,
    precision: Annotated[
        str | None, typer.Option("--precision", help="auto, fp32, bf16, fp16.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train a tokenizer (RUN/tokenizer.safetensors) or a prior (RUN/prior.safetensors)."""
    from vqtool.training import load_recipe, train_tokenizer

    overrides = list(set_ or [])
    overrides += [f"train.steps={steps}"] if steps is not None else []
    overrides += [f'train.device="{device}"'] if device else []
    overrides += [f'train.precision="{precision}"'] if precision else []
    with user_errors():
        r = load_recipe(recipe, overrides)
        sources = [s for s in data if s != "-"]
        if "-" in data:  # paths on standard input, one per line
            sources += [line.strip() for line in sys.stdin if line.strip()]
        show = console.is_terminal and not as_json
        progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=console,
            disable=not show,
        )
        task = progress.add_task("train", total=r.train.steps, info="")

        def on_event(event):
            if event.kind == "start":
                progress.update(task, completed=event.step)
            elif event.kind == "log":
                m = event.metrics
                if r.task == "prior":
                    info = (
                        f"loss {m['loss']:.3f} {m['bits_per_token']:.2f} bits/token "
                        f"{m['images_per_s']:.1f} rows/s"
                    )
                else:
                    info = (
                        f"loss {m['loss']:.3f} psnr {m['psnr']:.1f} codes: batch "
                        f"{m['used']:.0%} effective {m['effective_share']:.0%} "
                        f"{m['images_per_s']:.1f} img/s"
                    )
                progress.update(task, completed=event.step, info=info)
            elif event.kind == "eval" and show:
                progress.console.print(f"eval @ {event.step}: {_eval_line(event.metrics)}")

        with progress:
            if r.task == "prior":
                from vqtool.priors.task import train_prior

                result = train_prior(r, sources, out, eval_data, resume, on_event)
            else:
                result = train_tokenizer(r, sources, out, eval_data, resume, on_event)
    if as_json:
        print_json(result.to_dict())
        return
    table = Table(title=f"trained {recipe.name}", show_header=False)
    table.add_row("checkpoint", result.checkpoint)
    table.add_row("steps", f"{result.start_step} -> {result.steps}")
    table.add_row(
        "token rows" if result.kind == "prior" else "images",
        f"{result.images:,} ({result.images / max(result.wall_s, 1e-9):.1f}/s on {result.device})",
    )
    table.add_row(
        "skipped samples",
        f"{result.skipped}"
        + (
            f" (e.g. {result.skip_examples[0][0]}: {result.skip_examples[0][1]})"
            if result.skip_examples
            else ""
        ),
    )
    if result.kind == "prior":
        table.add_row(
            "last train loss",
            f"{result.train.get('loss', float('nan')):.4f} "
            f"({result.train.get('bits_per_token', float('nan')):.3f} bits/token)",
        )
    else:
        table.add_row(
            "last train loss / PSNR",
            f"{result.train.get('loss', float('nan')):.4f} / "
            f"{result.train.get('psnr', float('nan')):.2f} dB",
        )
    if result.eval:
        table.add_row("eval", _eval_line(result.eval))
    table.add_row("wall time", f"{result.wall_s:.1f} s")
    console.print(table)


def _eval_line(m: dict) -> str:
    if "bits_per_token" in m:
        return (
            f"{m['bits_per_token']:.3f} bits/token held out, unigram entropy "
            f"{m['unigram_bits']:.3f}, log2(vocab) {m['max_bits']:.3f} ({m['rows']} rows)"
        )
    return (
        f"PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}, codes used {m['used_share']:.1%}, "
        f"perplexity {m['perplexity']:.0f} ({m['images']} images)"
    )
