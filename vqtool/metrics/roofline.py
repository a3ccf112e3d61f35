"""The limits an encode run is measured against, in the run's own summary:

- compute: the encoder's FLOPs per image (counted, `vqtool.models.flops`) against the
  device's peak, measured by a short GEMM probe at the run's precision (cached per process)
  and, for a GPU, its datasheet's dense figure by name;
- decode: the images per second the decode workers reach, from the run's own timings (each
  image's decode and resize, timed where it happens) times the workers decoding at once.

The run's images per second is then given as a share of each ceiling."""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass

import torch

#: dense (no sparsity) peak TFLOP/s by GPU name: (bf16/fp16 tensor cores, fp32 without TF32)
DATASHEET = {
    "H200": (989.0, 67.0),
    "H100 SXM": (989.0, 67.0),
    "H100 80GB HBM3": (989.0, 67.0),
    "H100 NVL": (835.0, 60.0),
    "H100 PCIe": (756.0, 51.0),
    "H100": (756.0, 51.0),
    "GH200": (989.0, 67.0),
    "B200": (2250.0, 80.0),
    "A100": (312.0, 19.5),
    "A10G": (70.0, 31.2),
    "A10": (125.0, 31.2),
    "L40S": (362.0, 91.6),
    "L4": (121.0, 30.3),
    "V100": (125.0, 15.7),
    "RTX 4090": (165.0, 82.6),
    "RTX 3090": (71.0, 35.6),
}


def datasheet_peak(name: str, dtype: torch.dtype | None) -> float | None:
    """A GPU's datasheet dense peak FLOP/s at `dtype` (None: fp32), by its name."""
    for key, (half, single) in DATASHEET.items():  # most specific names first
        if key in name:
            return (half if dtype in (torch.bfloat16, torch.float16) else single) * 1e12
    return None


@functools.lru_cache(maxsize=8)
def gemm_peak(device: str, dtype_name: str, threads: int) -> float:
    """FLOP/s of a square matmul on `device` at `dtype_name`, best of a few (about 30 ms
    on a CPU core; a GPU's is warmed up first); cached per device, dtype and threads."""
    dev = torch.device(device)
    dtype = getattr(torch, dtype_name)
    n = 4096 if dev.type == "cuda" else 512
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    best = float("inf")
    for i in range(6 if dev.type == "cuda" else 4):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        torch.mm(a, b)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i:  # the first is a warm-up
            best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


@dataclass
class Roofline:
    flops_per_image: float | None  # encoder FLOPs, averaged over the images' sizes
    device_peak: float  # FLOP/s of the GEMM probe at the run's precision
    device_peak_source: str  # what the probe ran ("cpu fp32, 2 threads, 512^2 GEMM")
    datasheet_peak: float | None  # a GPU's datasheet dense figure (None: not known / CPU)
    compute_ceiling: float | None  # images/s at the probe's peak (None: FLOPs unknown)
    decode_ceiling: float | None  # images/s the decode workers reach (None: none timed)
    decode_workers: int  # processes decoding at once (1: the main process)
    images_per_s: float  # the run's
    share_of_compute: float | None  # images_per_s / compute_ceiling
    share_of_decode: float | None  # images_per_s / decode_ceiling

    def to_dict(self) -> dict:
        return asdict(self)


def roofline(
    flops: float | None,
    device: torch.device,
    dtype: torch.dtype | None,
    decode_s: float,
    decoded: int,
    workers: int,
    images_per_s: float,
) -> Roofline:
    """The ceilings of a run: its encoder FLOPs per image, its device and precision, the
    seconds its `decoded` images took to decode and resize in all, its decode workers."""
    name = str(dtype or torch.float32).replace("torch.", "")
    threads = torch.get_num_threads() if device.type == "cpu" else 0
    peak = gemm_peak(str(device), name, threads)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    where = (
        f"{device.type} {name}, {threads} thread(s), 512^2 GEMM"
        if device.type == "cpu"
        else f"{gpu} {name}, 4096^2 GEMM"
    )
    sheet = datasheet_peak(gpu, dtype) if gpu else None
    compute = peak / flops if flops else None
    n = max(1, workers)
    decode = n * decoded / decode_s if decode_s > 0 and decoded else None
    return Roofline(
        flops_per_image=flops, device_peak=peak, device_peak_source=where, datasheet_peak=sheet,
        compute_ceiling=compute, decode_ceiling=decode, decode_workers=n,
        images_per_s=images_per_s,
        share_of_compute=images_per_s / compute if compute else None,
        share_of_decode=images_per_s / decode if decode else None,
    )  # fmt: skip
