"""Two CPU processes on gloo, fed different data, keep identical codebooks."""

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from support.processes import free_port

from vqtool.quantizers import build_quantizer

TABLES = {
    "vq-ema": {"kind": "vq", "codebook_size": 64, "restart_after": 2},
    "vq-loss": {"kind": "vq", "codebook_size": 64, "ema_decay": None, "restart_after": 2},
    "rq": {"kind": "rq", "codebook_size": 32, "depth": 3, "restart_after": 2},
    "palette": {"kind": "palette", "num_colors": 16},
}


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        torch.manual_seed(0)  # same initial weights on every rank, as DDP would give
        quantizers = {
            name: build_quantizer(3 if t["kind"] == "palette" else 8, t)
            for name, t in TABLES.items()
        }
        torch.manual_seed(100 + rank)  # different data (and RNG) per rank
        for _ in range(5):
            for q in quantizers.values():
                scale = 1.0 + rank  # the ranks see differently scaled data
                q(scale * torch.randn(4, q.dim, 6, 6))
        for name, q in quantizers.items():
            for key, tensor in q.state_dict().items():
                np.save(f"{out_dir}/{rank}-{name}-{key}.npy", tensor.float().numpy())
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_codebooks_stay_identical_across_ranks(tmp_path):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    files = sorted(p.name[2:] for p in tmp_path.glob("0-*.npy"))
    assert any("embed" in f for f in files) and any("palette" in f for f in files)
    for name in files:
        a, b = np.load(tmp_path / f"0-{name}"), np.load(tmp_path / f"1-{name}")
        np.testing.assert_array_equal(a, b, err_msg=name)
    # and the codebooks did move away from their common initialisation
    torch.manual_seed(0)
    fresh = build_quantizer(8, TABLES["vq-ema"]).embed.numpy()
    assert not np.allclose(np.load(tmp_path / "0-vq-ema-embed.npy"), fresh)
