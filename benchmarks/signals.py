"""SIGTERM at task boundaries, many times: how often a scheduler's stop ends an encode
with exit 130 and one line, and the rerun then holds every key once.

    python benchmarks/signals.py [--tries 20] [--workers 2]

Each try encodes 12 one-shard tasks (6 images each) with decode workers, sends SIGTERM
the moment the Kth done marker appears (K cycling over 1..6: right as a task finishes,
the moment that used to lose the signal), checks the exit status, that stderr has
"vqtool: interrupted" and no traceback, reruns the same command and checks the keys.
The test suite does two of these boundaries; this script does as many as asked.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import image_bytes, write_shard  # noqa: E402


def one_try(shards: list[str], out: Path, boundary: int, workers: int) -> str | None:
    """None when the try went as it should, else what went wrong."""
    cmd = [sys.executable, "-m", "vqtool", "encode", *shards, "--out", str(out),
           "--shards-per-task", "1", "--workers", str(workers), "--batch-size", "4"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while len(list(out.glob("*.done.json"))) < boundary and proc.poll() is None:
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGTERM)
    rc = proc.wait(timeout=120)
    err = proc.stderr.read()
    if rc != 130 or "vqtool: interrupted" not in err or "Traceback" in err:
        return f"exit {rc}: {err[-400:]}"
    again = subprocess.run(cmd, capture_output=True, text=True)
    keys = [k for f in sorted(out.glob("*.parquet"))
            for k in pq.read_table(f, columns=["key"]).column("key").to_pylist()]  # fmt: skip
    if again.returncode != 0 or sorted(keys) != sorted(set(keys)) or len(keys) != 72:
        return f"rerun exit {again.returncode}, {len(keys)} rows ({len(set(keys))} keys)"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tries", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vqtool-signals-"))
    shards = [write_shard(work / f"s{s:02d}.tar", [(f"k{s}-{i}", {"png": image_bytes(i)})
                                                   for i in range(6)])
              for s in range(12)]  # fmt: skip
    failures = []
    for t in range(args.tries):
        why = one_try(shards, work / f"try-{t}", 1 + t % 6, args.workers)
        if why:
            failures.append(f"try {t} (boundary {1 + t % 6}): {why}")
    print(f"{args.tries - len(failures)}/{args.tries} tries: exit 130 with one line, and the "
          "rerun holds every key once")  # fmt: skip
    for f in failures:
        print("  " + f)


if __name__ == "__main__":
    main()
