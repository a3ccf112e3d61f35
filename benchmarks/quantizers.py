"""Time one training step (forward, backward, codebook update) of each quantizer.

    python benchmarks/quantizers.py [--tokens 2048] [--steps 5] [--rows vq-8192,lfq-2^16]

For each configuration it prints tokens/s (median step over at least
`--steps` steps and one second, after two warm-up steps) and the peak memory
the steps add (the resident-set high-water mark over the warm-up and timed
steps minus the resident set before them, from Linux /proc; inputs and model
are allocated before). Each row runs in its own
process so peaks do not mix. When
`vector-quantize-pytorch` is importable (`pip install -e '.[bench]'`), the
same configurations run through it in the same invocation, side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

# row id -> (label, input dim, our [quantizer] table, reference constructor as a string)
ROWS: dict[str, tuple[str, int, dict, str]] = {
    "vq-8192": (
        "VQ K=8192 D=256, EMA",
        256,
        {"kind": "vq", "codebook_size": 8192, "ema_decay": 0.99, "kmeans_init": False},
        "VectorQuantize(dim=256, codebook_size=8192, decay=0.99, commitment_weight=0.25)",
    ),
    "vq-16384-cos": (
        "VQ K=16384 D=256->8, cosine",
        256,
        {"kind": "vq", "codebook_size": 16384, "code_dim": 8, "cosine": True, "kmeans_init": False},
        "VectorQuantize(dim=256, codebook_size=16384, codebook_dim=8, use_cosine_sim=True,"
        " decay=0.99, commitment_weight=0.25)",
    ),
    "rq-1024x4": (
        "RQ K=1024 D=256, depth 4",
        256,
        {"kind": "rq", "codebook_size": 1024, "depth": 4, "kmeans_init": False},
        "ResidualVQ(dim=256, num_quantizers=4, codebook_size=1024, decay=0.99,"
        " commitment_weight=0.25)",
    ),
    "lfq-14": (
        "LFQ 2^14, entropy penalty",
        14,
        {"kind": "lfq", "codebook_size": 1 << 14},
        "LFQ(dim=14, codebook_size=2**14, entropy_loss_weight=0.1, diversity_gamma=1.0)",
    ),
    "lfq-16": (
        "LFQ 2^16, entropy penalty",
        16,
        {"kind": "lfq", "codebook_size": 1 << 16},
        "LFQ(dim=16, codebook_size=2**16, entropy_loss_weight=0.1, diversity_gamma=1.0)",
    ),
    "lfq-18": (
        "LFQ 2^18, entropy penalty",
        18,
        {"kind": "lfq", "codebook_size": 1 << 18},
        "LFQ(dim=18, codebook_size=2**18, entropy_loss_weight=0.1, diversity_gamma=1.0)",
    ),
    "fsq-8555": (
        "FSQ [8,5,5,5]",
        4,
        {"kind": "fsq", "levels": [8, 5, 5, 5]},
        "FSQ(levels=[8, 5, 5, 5])",
    ),
}


def _status_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5" resets VmHWM to the current RSS
        f.write("5")


def run_row(name: str, impl: str, tokens: int, steps: int) -> dict:
    """Runs in a child process: build one quantizer, time `steps` training steps."""
    import torch

    _, dim, table, ref = ROWS[name]
    torch.manual_seed(0)
    if impl == "vqtool":
        from vqtool.quantizers import build_quantizer

        q = build_quantizer(dim, table)

        def step(z):
            out = q(z)
            return out.quantized, out.loss
    else:
        import vector_quantize_pytorch as vqp

        q = eval(ref, vars(vqp))  # the constructor string above, nothing else

        def step(z):
            out = q(z)  # (quantized, indices[, aux loss(es)])
            return out[0], (out[2].sum() if len(out) > 2 else z.new_zeros(()))

    q.train()
    z = torch.randn(1, tokens, dim)
    z.requires_grad_(True)
    times: list[float] = []
    base = _status_mib("VmRSS")
    _reset_peak()
    i = 0
    # two warm-up steps, then at least `steps` timed steps and at least one second of them
    while i < 2 or len(times) < steps or (sum(times) < 1.0 and len(times) < 2000):
        start = time.perf_counter()
        quantized, aux = step(z)
        (quantized.square().mean() + aux).backward()
        z.grad = None
        if i >= 2:
            times.append(time.perf_counter() - start)
        i += 1
    peak = _status_mib("VmHWM")
    return {"tokens_per_s": tokens / statistics.median(times), "peak_mib": max(peak - base, 0.0)}


def _child(name: str, impl: str, tokens: int, steps: int) -> dict | None:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        name,
        "--impl",
        impl,
        "--tokens",
        str(tokens),
        "--steps",
        str(steps),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": tail[:80]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument(
        "--rows", default=",".join(ROWS), help=f"comma-separated: {', '.join(ROWS)}"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--impl", default="vqtool", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_row(args.child, args.impl, args.tokens, args.steps)))
        return

    import torch

    try:
        import vector_quantize_pytorch as vqp

        ref_version = getattr(vqp, "__version__", None) or _dist_version("vector-quantize-pytorch")
    except ImportError:
        ref_version = None
    print(
        f"# one training step at N={args.tokens} tokens, median over >= {args.steps} steps "
        "and >= 1 s"
    )
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"reference: vector-quantize-pytorch {ref_version or 'not installed'}"
    )
    columns = ["configuration", "vqtool tokens/s", "vqtool peak MiB"]
    columns += ["reference tokens/s", "reference peak MiB"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * 5)
    for name in [r.strip() for r in args.rows.split(",") if r.strip()]:
        if name not in ROWS:
            raise SystemExit(f"unknown row {name!r}; rows: {', '.join(ROWS)}")
        ours = _child(name, "vqtool", args.tokens, args.steps)
        ref = _child(name, "reference", args.tokens, args.steps) if ref_version else None
        print(f"| {ROWS[name][0]} | {_fmt(ours)} | {_fmt(ref)} |", flush=True)


def _fmt(result: dict | None) -> str:
    if result is None:
        return "- | -"
    if "error" in result:
        return f"failed: {result['error']} | -"
    return f"{result['tokens_per_s']:,.0f} | {result['peak_mib']:,.0f}"


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
