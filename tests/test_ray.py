"""`vqtool encode --executor ray` on a local Ray cluster started here: actors pull tasks,
and a task whose actor (or node) dies is redone elsewhere; the part files equal a local
run's byte for byte. And the Ray Data building block."""

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import image_bytes, write_shard

from vqtool.tokens.encode import EncodeConfig, encode

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def slow_sources(tmp_path, n=4, delay=1.5):
    """`pipe:` shards that note which process reads them, wait, then stream a tar: the
    reading actor is busy long enough to be killed mid-task."""
    sources = []
    for s in range(n):
        samples = [(f"s{s}-{i}", {"png": image_bytes(s * 10 + i), "cls": str(i).encode()})
                   for i in range(6)]  # fmt: skip
        tar = write_shard(tmp_path / f"shard-{s}.tar", samples)
        marker = tmp_path / f"reader-{s}.pid"
        sources.append(f"pipe:echo $PPID >> {marker}; sleep {delay}; cat {tar}")
    return sources


def part_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("part-*.parquet"))}


def run_in_thread(cfg):
    box = {}

    def target():
        try:
            box["result"] = encode(cfg)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, box


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_killed_actor_task_is_redone_and_the_parts_equal_a_local_run(tmp_path, local_ray):
    sources = slow_sources(tmp_path, delay=1.5)
    local = encode(EncodeConfig(sources=sources, tokenizer="vqtool:fsq-f4-64",
                                out=str(tmp_path / "local"), workers=0))  # fmt: skip
    for marker in tmp_path.glob("reader-*.pid"):
        marker.unlink()
    cfg = EncodeConfig(sources=sources, tokenizer="vqtool:fsq-f4-64", out=str(tmp_path / "ray"),
                       workers=0, executor="ray", ray_actors=2)  # fmt: skip
    thread, box = run_in_thread(cfg)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("reader-*.pid")) and time.monotonic() < deadline:
        time.sleep(0.05)
    marker = sorted(tmp_path.glob("reader-*.pid"))[0]
    time.sleep(0.2)
    os.kill(int(marker.read_text().split()[0]), signal.SIGKILL)  # the actor, mid-task
    thread.join(300)
    assert "error" not in box, box.get("error")
    result = box["result"]
    assert result.ray_retried >= 1 and result.tasks_done == 4 and not result.ray_failed
    assert len(marker.read_text().split()) == 2  # the killed task was read again
    assert result.images == local.images == 24
    assert part_files(tmp_path / "ray") == part_files(tmp_path / "local")


def test_a_removed_node_loses_its_actor_and_the_run_still_completes(tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        sources = slow_sources(tmp_path, n=4, delay=2.0)
        local = encode(EncodeConfig(sources=sources, tokenizer="vqtool:fsq-f4-64",
                                    out=str(tmp_path / "local"), workers=0))  # fmt: skip
        for marker in tmp_path.glob("reader-*.pid"):
            marker.unlink()
        cfg = EncodeConfig(sources=sources, tokenizer="vqtool:fsq-f4-64", workers=0,
                           out=str(tmp_path / "ray"), executor="ray")  # fmt: skip
        thread, box = run_in_thread(cfg)
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("reader-*.pid"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # both actors (one per node) are mid-task
        cluster.remove_node(worker)
        thread.join(300)
        assert "error" not in box, box.get("error")
        result = box["result"]
        assert result.ray_actors == 2 and result.ray_retried >= 1 and result.tasks_done == 4
        assert result.images == local.images
        assert part_files(tmp_path / "ray") == part_files(tmp_path / "local")
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_ray_data_callable_tokenizes_rows_as_encode_does(tmp_path, local_ray):
    from vqtool.tokens.ray_data import VqtoolTokenize

    samples = [(f"k{i}", {"png": image_bytes(i), "txt": f"caption {i}".encode()})
               for i in range(6)]  # fmt: skip
    tar = write_shard(tmp_path / "s.tar", samples)
    encode(EncodeConfig(sources=[tar], tokenizer="vqtool:fsq-f4-64", out=str(tmp_path / "ref"),
                        workers=0))  # fmt: skip
    ref = pq.read_table(tmp_path / "ref" / "part-000000.parquet").to_pydict()
    rows = [{"key": k, "image": parts["png"], "caption": parts["txt"].decode()}
            for k, parts in samples]  # fmt: skip
    rows.append({"key": "broken", "image": b"not an image", "caption": "x"})
    ds = ray.data.from_items(rows).map_batches(
        VqtoolTokenize, fn_constructor_kwargs={"tokenizer": "vqtool:fsq-f4-64"},
        concurrency=1, batch_size=4,
    )  # fmt: skip
    out = {r["key"]: r for r in ds.take_all()}
    for key, tokens, caption in zip(ref["key"], ref["tokens"], ref["caption"]):
        assert np.asarray(out[key]["tokens"]).tolist() == tokens
        assert out[key]["caption"] == caption and out[key]["error"] is None
    assert out["broken"]["error"].startswith("undecodable") and len(out["broken"]["tokens"]) == 0
