"""`vqtool sample --prior CKPT --tokenizer CKPT -n N --out PATH`: new images from a prior."""

from __future__ import annotations

from typing import Annotated

import typer
from typer import Option

from vqtool.cli.common import console, err_console, print_json, user_errors
from vqtool.cli.options import Device, Json, LogEvery, Quiet, RecordedTokenizer

app = typer.Typer()


# Over 60 lines only by its typed options: typer reads each from the signature, and the
# body stays the thin parse-call-render of every command.
# fmt: off
@app.command(
    epilog=(
        "Example: vqtool sample --prior "
        "runs/ar/prior.safetensors -n 16 --out samples.png"
    )
)
def sample(
    prior: Annotated[str, Option("--prior", help="Prior checkpoint (prior.safetensors).")],
    out: Annotated[str, Option(
        "--out", help="A .png for one grid, or a folder for one PNG each.")],
    tokenizer: RecordedTokenizer = None,
    n: Annotated[int, Option("-n", "--num", min=1, help="How many images.")] = 16,
    steps: Annotated[int, Option("--steps", min=1, help=(
        "MaskGIT/Muse decoding steps; contextual RQ: draft steps."))] = 8,
    revise_rounds: Annotated[int, Option("--revise-rounds", min=0, help=(
        "Contextual RQ: rounds of revision after the draft."))] = 2,
    revise_groups: Annotated[int, Option("--revise-groups", min=1, help=(
        "Contextual RQ: groups of positions re-masked one after another per round."))] = 4,
    temperature: Annotated[float, Option("--temperature", help="Softmax temperature.")] = 1.0,
    top_k: Annotated[int | None, Option("--top-k", min=1,
                                        help="Sample among the k likeliest codes.")] = None,
    top_p: Annotated[float | None, Option("--top-p",
                                          help="Nucleus: likeliest codes up to mass p.")] = None,
    cfg_scale: Annotated[float, Option(
        "--cfg-scale", help="Classifier-free guidance (1 = off).")] = 1.0,
    label: Annotated[int | None, Option("--label", help="Class to generate.")] = None,
    prompt: Annotated[str | None, Option("--prompt", help=(
        "Caption for a text prior (dalle, muse): every image gets it."))] = None,
    prompts: Annotated[str | None, Option("--prompts", help=(
        "A file of captions, one per line: image i gets line i (cycling)."))] = None,
    text_tokenizer: Annotated[str | None, Option("--text-tokenizer", help=(
        "The prior's tokenizer.json, if it moved since training."))] = None,
    seed: Annotated[int, Option("--seed", help="Same seed, same images.")] = 0,
    tokens_out: Annotated[str | None, Option(
        "--tokens-out", help="Also write the tokens (.parquet).")] = None,
    no_cache: Annotated[bool, Option(
        "--no-cache", help="AR/RQ: recompute the prefix (no KV cache).")] = False,
    batch_size: Annotated[int, Option("--batch-size", min=1, help="Images per batch.")] = 16,
    device: Device = "auto",
    log_every: LogEvery = 30.0,
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Generate token grids with a prior and decode them to images."""
    from vqtool.priors.sample import SampleConfig
    from vqtool.priors.sample import sample as run_sample
    from vqtool.priors.sampling import SamplingConfig
    from vqtool.report.jobs import JobProgress, sample_summary

    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p,
                              cfg_scale=cfg_scale, steps=steps, use_cache=not no_cache,
                              revise_rounds=revise_rounds, revise_groups=revise_groups)
    cfg = SampleConfig(prior=prior, tokenizer=tokenizer, n=n, out=out, sampling=sampling,
                       label=label, seed=seed, tokens_out=tokens_out, device=device,
                       batch_size=batch_size, prompt=prompt, prompts_file=prompts,
                       text_tokenizer=text_tokenizer)
    progress = JobProgress("sample", "images", console, err_console,
                           not (as_json or quiet), log_every)
    def on_batch(done: int, total: int) -> None:
        if done == 0:  # the prior and tokenizer are loaded: generation starts
            progress.start(total)
        else:
            progress.update(done)

    with user_errors(), progress:
        result = run_sample(cfg, on_batch)
    if as_json:
        print_json(result.to_dict())
    elif not quiet:
        console.print(sample_summary(result))
# fmt: on
