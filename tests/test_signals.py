"""A scheduler's SIGTERM right as a task finishes, twenty times in a row, locally and on a
Ray cluster: every run stops with one line and exit 130, the next run resumes, and the
last one leaves every key exactly once with nothing claimed or half written.

Twenty real `vqtool` processes would cost a minute of imports, so each run here is a
fork of one process that imported vqtool and torch once (`Forks`): the same `main()`,
signal handlers and decode workers as `python -m vqtool`, without the start-up.
`benchmarks/signals.py` does the same with fresh interpreters."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.data import image_bytes, make_tokenizer, write_shard
from support.processes import Forks


def done_markers(out: Path) -> int:
    return len(list(out.glob("*.done.json"))) if out.exists() else 0


KEYS = sorted(f"k{s}-{i}" for s in range(80) for i in range(2))


def encode_args(tmp_path) -> list[str]:
    """An encode of 80 one-shard tasks of 2 images each, with a tiny tokenizer."""
    shards = [write_shard(tmp_path / f"s{s:03d}.tar", [(f"k{s}-{i}", {"png": image_bytes(i)})
                                                        for i in range(2)])
              for s in range(80)]  # fmt: skip
    return ["encode", *shards, "--out", str(tmp_path / "out"), "--shards-per-task", "1",
            "--batch-size", "4", "--tokenizer", make_tokenizer(tmp_path / "tok.safetensors")]


def stop_at_boundaries(forks: Forks, args: list[str], out: Path, tries: int) -> list[str]:
    """`tries` runs of one encode, each stopped by SIGTERM the moment its 1st, 2nd or 3rd
    task is marked done. Returns what went wrong: nothing."""
    wrong = []
    for t in range(tries):
        target, err = done_markers(out) + 1 + t % 3, out.parent / f"err-{t}.txt"
        pid = forks.start(args, err)
        deadline, code = time.monotonic() + 120, None
        while done_markers(out) < target and code is None and time.monotonic() < deadline:
            code = forks.exit_code()
            time.sleep(0.001)
        if code is None:
            os.kill(pid, signal.SIGTERM)
            code = forks.exit_code(60)
        said = err.read_text()
        if code != 130 or "vqtool: interrupted" not in said or "Traceback" in said:
            wrong.append(f"try {t}: exit {code}: {said[-600:]}")
    return wrong


def keys_and_leftovers(out: Path) -> tuple[list[str], list[str]]:
    """Every key written, in file order, and any temporary, lock or claim file left."""
    keys = [k for f in sorted(out.glob("*.parquet"))
            for k in pq.read_table(f, columns=["key"]).column("key").to_pylist()]  # fmt: skip
    return keys, [p.name for p in out.iterdir() if p.suffix in (".tmp", ".lock", ".claim")]


@pytest.mark.slow
def test_sigterm_at_twenty_task_boundaries_stops_each_run_with_130(tmp_path):
    args, forks = encode_args(tmp_path) + ["--workers", "2"], Forks.shared()
    assert stop_at_boundaries(forks, args, tmp_path / "out", tries=20) == []
    forks.start(args, tmp_path / "err-last.txt")
    assert forks.exit_code(300) == 0, (tmp_path / "err-last.txt").read_text()
    keys, left = keys_and_leftovers(tmp_path / "out")
    assert sorted(keys) == KEYS and left == []


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray cluster of its own (a head with a client server) for runs to join. Its
    environment has GRPC_ENABLE_FORK_SUPPORT=false, as README advises for a head that
    serves `ray://` (ray-project/ray#63202)."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster
    from support.processes import free_port

    port, saved = free_port(), os.environ.get("GRPC_ENABLE_FORK_SUPPORT")
    os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
    try:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2,
                                                                "ray_client_server_port": port})
    finally:
        if saved is None:
            os.environ.pop("GRPC_ENABLE_FORK_SUPPORT")
        else:
            os.environ["GRPC_ENABLE_FORK_SUPPORT"] = saved
    cluster.client_address = f"ray://127.0.0.1:{port}"
    yield cluster
    cluster.shutdown()


def actors() -> list[int]:
    found = subprocess.run(["pgrep", "-f", "ray::EncodeActor"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


@pytest.mark.slow
def test_sigterm_at_task_boundaries_on_ray_then_a_ray_client_run_loses_its_actor(
    tmp_path, ray_cluster
):
    """The same on a Ray cluster, four runs (each a Ray job of its own, ~5 s of actor
    start-up; `benchmarks/signals.py --executor ray` does twenty): the driver stops with
    one line and 130, not Ray's stack dump, and its actors go with it. The last run joins
    through `ray://` with `--json` and loses its actor (SIGKILL) mid-run: the task is
    redone, stdout parses as the JSON result alone, every key once."""
    args = encode_args(tmp_path) + ["--workers", "0", "--ray-actors", "1", "--executor", "ray"]
    forks, out = Forks.shared(), tmp_path / "out"
    wrong = stop_at_boundaries(forks, args + ["--ray-address", ray_cluster.address], out, 4)
    assert wrong == []
    deadline = time.monotonic() + 30
    while actors() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert actors() == [], "a stopped driver's actors outlived it"
    done = done_markers(out)
    forks.start(args + ["--ray-address", ray_cluster.client_address, "--json"],
                tmp_path / "err-last.txt", tmp_path / "last.json")  # fmt: skip
    while done_markers(out) == done and time.monotonic() < deadline + 120:
        time.sleep(0.01)
    for pid in actors():
        os.kill(pid, signal.SIGKILL)
    assert forks.exit_code(300) == 0, (tmp_path / "err-last.txt").read_text()[-3000:]
    summary = json.loads((tmp_path / "last.json").read_text())
    assert summary["ray_retried"] >= 1 and summary["unfinished"] == []
    keys, left = keys_and_leftovers(out)
    assert sorted(keys) == KEYS and left == []
