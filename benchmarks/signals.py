"""SIGTERM at task boundaries, many times: how often a scheduler's stop ends an encode
with exit 130 and one line, and the rerun then holds every key once.

    python benchmarks/signals.py [--tries 20] [--workers 2] [--executor ray]

Each try encodes 12 one-shard tasks (6 images each) with decode workers, sends SIGTERM
the moment the Kth done marker appears (K cycling over 1..6: right as a task finishes,
the moment that used to lose the signal), checks the exit status, that stderr has
"vqtool: interrupted" and no traceback, reruns the same command and checks the keys.
With `--executor ray` each run joins a Ray cluster started here (one actor, no
decode workers): the driver gets the signal. tests/test_signals.py does twenty
boundaries locally and four on Ray as forks of one warm process; this script
starts a fresh interpreter for every run.
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
from support.data import image_bytes, write_shard  # noqa: E402


def one_try(shards: list[str], out: Path, boundary: int, extra: list[str]) -> str | None:
    """None when the try went as it should, else what went wrong."""
    cmd = [sys.executable, "-m", "vqtool", "encode", *shards, "--out", str(out),
           "--shards-per-task", "1", "--batch-size", "4", *extra]  # fmt: skip
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
    ap.add_argument("--executor", choices=["local", "ray"], default="local")
    args = ap.parse_args()
    extra, cluster = ["--workers", str(args.workers)], None
    if args.executor == "ray":
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
        extra = ["--executor", "ray", "--ray-address", cluster.address, "--ray-actors", "1",
                 "--workers", "0"]  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="vqtool-signals-"))
    shards = [write_shard(work / f"s{s:02d}.tar", [(f"k{s}-{i}", {"png": image_bytes(i)})
                                                   for i in range(6)])
              for s in range(12)]  # fmt: skip
    failures = []
    for t in range(args.tries):
        why = one_try(shards, work / f"try-{t}", 1 + t % 6, extra)
        if why:
            failures.append(f"try {t} (boundary {1 + t % 6}): {why}")
    if cluster is not None:
        cluster.shutdown()
    print(f"{args.executor}: {args.tries - len(failures)}/{args.tries} tries: exit 130 with one "
          "line, and the rerun holds every key once")  # fmt: skip
    for f in failures:
        print("  " + f)


if __name__ == "__main__":
    main()
