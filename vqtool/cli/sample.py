"""`vqtool sample --prior CKPT --tokenizer CKPT -n N --out PATH`: new images from a prior."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from vqtool.assets import DEFAULT_TOKENIZER
from vqtool.cli.common import console, print_json, user_errors

app = typer.Typer()


@app.command()
def sample(
    prior: Annotated[str, typer.Option("--prior", help="Prior checkpoint (prior.safetensors).")],
    out: Annotated[
        str, typer.Option("--out", help="A .png for one grid, or a folder for one PNG each.")
    ],
    tokenizer: Annotated[
        str, typer.Option("--tokenizer", help="The tokenizer the prior's tokens came from.")
    ] = DEFAULT_TOKENIZER,
    n: Annotated[int, typer.Option("-n", "--num", min=1, help="How many images.")] = 16,
    steps: Annotated[int, typer.Option("--steps", min=1, help="MaskGIT decoding steps.")] = 8,
    temperature: Annotated[float, typer.Option("--temperature")] = 1.0,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1)] = None,
    top_p: Annotated[float | None, typer.Option("--top-p")] = None,
    cfg_scale: Annotated[
        float, typer.Option("--cfg-scale", help="Classifier-free guidance (1 = off).")
    ] = 1.0,
    label: Annotated[int | None, typer.Option("--label", help="Class to generate.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same images.")] = 0,
    tokens_out: Annotated[
        str | None, typer.Option("--tokens-out", help="Also write the tokens (.parquet).")
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="AR/RQ: recompute the prefix (no KV cache).")
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 16,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda ...")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Generate token grids with a prior and decode them to images."""
    from vqtool.priors.sample import SampleConfig
    from vqtool.priors.sample import sample as run_sample
    from vqtool.priors.sampling import SamplingConfig

    cfg = SampleConfig(
        prior=prior,
        tokenizer=tokenizer,
        n=n,
        out=out,
        sampling=SamplingConfig(
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            cfg_scale=cfg_scale,
            steps=steps,
            use_cache=not no_cache,
        ),
        label=label,
        seed=seed,
        tokens_out=tokens_out,
        device=device,
        batch_size=batch_size,
    )
    with user_errors():
        result = run_sample(cfg)
    if as_json:
        print_json(result.to_dict())
        return
    table = Table(title=f"sampled {result.n} image(s)", show_header=False, title_justify="left")
    table.add_row("prior", f"{result.kind}, {result.tokens_per_image} tokens per image")
    table.add_row("images", result.files[0] if len(result.files) == 1 else f"{result.out}/")
    if result.tokens_out:
        table.add_row("tokens", result.tokens_out)
    table.add_row(
        "speed", f"{result.tokens_per_s:,.0f} tokens/s ({result.seconds:.2f} s on {result.device})"
    )
    table.add_row("seed", str(result.seed))
    console.print(table)
