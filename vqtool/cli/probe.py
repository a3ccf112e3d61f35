"""`vqtool probe --prior CKPT --train TOKENS --eval TOKENS`: iGPT's linear probe."""

from __future__ import annotations

from typing import Annotated

from typer import Option, Typer

from vqtool.cli.common import console, print_json, user_errors
from vqtool.cli.options import Device, Json

app = Typer()


# fmt: off
@app.command(
    epilog=(
        "Example: vqtool probe --prior "
        "runs/ar/prior.safetensors --train tokens/ --eval heldout/"
    )
)
def probe(
    prior: Annotated[str, Option("--prior", help="Prior checkpoint (prior.safetensors).")],
    train: Annotated[list[str], Option("--train", help=(
        "Labelled token folders or files to fit the linear classifiers on; repeat the flag, "
        "or quote a pattern ('tokens/*/part-*.parquet', 'part-{000..003}.parquet')."))],
    eval: Annotated[list[str], Option("--eval", help=(
        "Labelled token rows to report top-1 on (folders, files or a quoted pattern)."))],
    target: Annotated[str, Option("--target", help=(
        "label (the label column) or caption (each distinct caption a class)."))] = "label",
    l2: Annotated[float, Option("--l2", min=0, help="L2 penalty of the classifier.")] = 1e-3,
    batch_size: Annotated[int, Option("--batch-size", min=1, help="Rows per forward.")] = 64,
    device: Device = "auto",
    as_json: Json = False,
) -> None:
    """Linear probe on a prior's frozen features, beside the majority and unigram baselines."""
    from vqtool.priors.probe import ProbeConfig
    from vqtool.priors.probe import probe as run_probe
    from vqtool.report.jobs import probe_summary

    cfg = ProbeConfig(prior=prior, train=train, eval=eval, target=target, l2=l2,
                      batch_size=batch_size, device=device)
    with user_errors():
        result = run_probe(cfg)
    if as_json:
        print_json(result.to_dict())
    else:
        console.print(probe_summary(result))
# fmt: on
