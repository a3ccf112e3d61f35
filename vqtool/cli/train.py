"""`vqtool train RECIPE --data SRC --out RUN`: train a tokenizer or a prior from a
TOML recipe (its `task` says which)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer import Argument, Option

from vqtool.cli.common import console, err_console, print_json, user_errors
from vqtool.cli.options import (
    Json,
    LogEvery,
    Quiet,
    RecipeDevice,
    Threads,
    TrainPrecision,
    with_stdin,
)

app = typer.Typer()
DATA = ("Training data: for a tokenizer, images (tar shards with brace expansion, pipe:CMD, "
        "folders, Parquet, - for paths on stdin); for a prior, token shards (an encode folder or "
        "token Parquet files). Repeatable.")  # fmt: skip
EVAL = "Held-out images (PSNR/SSIM/usage) or token shards (bits/token). Repeatable."
SET = "Override a recipe key, e.g. --set quantizer.codebook_size=4096. Repeatable."


# Over 60 lines only by its typed options: typer reads each from the signature, and the
# body stays the thin parse-call-render of every command.
# fmt: off
@app.command(epilog="Example: vqtool train fsq --data vqtool:sample --out runs/fsq --steps 20")
def train(
    recipe: Annotated[str, Argument(help="A TOML recipe file, or a shipped recipe's name "
                                    "(vqtool recipes lists them).")],
    data: Annotated[list[str], Option("--data", help=DATA)],
    out: Annotated[Path, Option("--out", help="Run folder: checkpoint, state, metrics.jsonl.")],
    eval_data: Annotated[list[str] | None, Option("--eval-data", help=EVAL)] = None,
    set_: Annotated[list[str] | None, Option("--set", metavar="KEY=VALUE", help=SET)] = None,
    resume: Annotated[bool, Option("--resume", help="Continue the run in --out.")] = False,
    steps: Annotated[int | None, Option("--steps", min=1, help="Sets train.steps.")] = None,
    device: RecipeDevice = None,
    precision: Annotated[TrainPrecision | None, Option(
        "--precision", help="Sets train.precision (auto: bf16 on CUDA, fp32 on CPU).")] = None,
    threads: Threads = None,
    log_every: LogEvery = 30.0,
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Train a tokenizer (RUN/tokenizer.safetensors) or a prior (RUN/prior.safetensors)."""
    from vqtool.cli import preflight

    with user_errors():  # before torch loads: a mistyped path or recipe is answered at once
        preflight.recipe(recipe)
        preflight.sources([d for d in data + (eval_data or []) if d != "-"])
    from vqtool.priors.recipe import load_recipe
    from vqtool.priors.task import train_prior
    from vqtool.report.jobs import JobProgress, train_summary
    from vqtool.training import train_tokenizer

    given = {"train.steps": steps, "train.device": device, "train.threads": threads,
             "train.precision": precision.value if precision else None}
    with user_errors():
        r = load_recipe(recipe, set_, {k: v for k, v in given.items() if v is not None})
        progress = JobProgress("train", "steps", console, err_console,
                           not (as_json or quiet), log_every)

        caching: list[int] = []

        def on_event(event) -> None:
            if event.kind == "start":
                progress.start(event.total, event.step)
            elif event.kind == "log":
                progress.update(event.step, event.text)
            elif event.kind == "checkpoint":
                progress.update(event.step, milestone=True)
            elif event.kind == "eval":
                progress.note(f"eval @ {event.step}: {event.text}")
            elif event.kind == "caching":  # reading the training photos into memory
                m = event.metrics
                text = f"caching photos: {m['photos']:,} ({m['mib']:.0f} MiB)"
                if m["done"]:
                    progress.note(f"{text}, done; training starts")
                else:  # the first line at once, then every --log-every seconds
                    progress.update(text=text, milestone=not caching)
                    caching.append(m["photos"])

        run = train_prior if r.task == "prior" else train_tokenizer
        with progress:
            result = run(r, with_stdin(data), out, eval_data, resume, on_event)
    if as_json:
        print_json(result.to_dict())
    elif not quiet:
        console.print(train_summary(result, Path(recipe).name))
# fmt: on
