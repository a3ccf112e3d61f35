"""Where and how tensors run: the device (`auto`, `cpu`, `cuda`, `cuda:N`, `mps`),
autocast precision, CUDA TF32, CPU threads next to decode workers, and
`torch.distributed` start-up under torchrun."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from vqtool.errors import UserError
from vqtool.utils import DEVICE_NAMES, DEVICE_PATTERN


def pick_device(name: str) -> torch.device:
    """`auto` takes CUDA when present (this process's LOCAL_RANK under torchrun)."""
    if not DEVICE_PATTERN.fullmatch(name):
        raise UserError(f"--device {name!r}: use {DEVICE_NAMES}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"--device {name}: CUDA is not available on this machine; use cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name}: MPS is not available on this machine; use cpu or auto")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` (None: plain fp32); `auto` is bf16 on CUDA."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def set_tf32(on: bool) -> None:
    """CUDA TF32 for matmuls and cuDNN convolutions (no effect on CPU)."""
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def set_cpu_threads(threads: int, busy_workers: int) -> int:
    """Set torch's CPU threads: `threads`, or (0) `OMP_NUM_THREADS` when set, else the
    usable cores less the workers decoding beside the model. Returns the number set."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    auto = int(env) if env.isdigit() and int(env) > 0 else max(1, usable_cores() - busy_workers)
    n = threads or auto
    torch.set_num_threads(n)
    return n


def init_distributed(device: torch.device) -> None:
    """Join the process group torchrun describes (nccl on CUDA, gloo on CPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)


# --------------------------------------------------------------------------- distributed


def dist_active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if dist_active() else 1


def rank() -> int:
    return dist.get_rank() if dist_active() else 0


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over ranks in place (no-op without torch.distributed)."""
    if dist_active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite `tensor` with rank `src`'s copy (no-op without torch.distributed)."""
    if dist_active():
        dist.broadcast(tensor, src=src)
    return tensor
