"""`vqtool encode --executor ray` on a local Ray cluster started here: actors pull tasks,
and a task whose actor (or node) dies is redone elsewhere; the part files equal a local
run's byte for byte. And the Ray Data building block."""

import os
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.data import image_bytes, write_shard

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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_readme_ray_data_example_tokenizes_rows_as_encode_does(tmp_path, local_ray):
    """The README's Ray Data example, run as written (a local Parquet folder for the
    bucket, the bundled tokenizer, no GPU), with an undecodable image in the batch:
    tokens equal encode's, the broken row is written with its error and empty tokens,
    and `tokens` is `list<uint16>` as in token shards."""
    import re
    import textwrap

    import pyarrow as pa
    from test_readme import README

    samples = [(f"k{i}", {"png": image_bytes(i), "txt": f"caption {i}".encode()})
               for i in range(6)]  # fmt: skip
    tar = write_shard(tmp_path / "s.tar", samples)
    encode(EncodeConfig(sources=[tar], tokenizer="vqtool:fsq-f4-64", out=str(tmp_path / "ref"),
                        workers=0))  # fmt: skip
    ref = pq.read_table(tmp_path / "ref" / "part-000000.parquet").to_pydict()
    rows = [{"key": k, "image": parts["png"], "caption": parts["txt"].decode()}
            for k, parts in samples]  # fmt: skip
    rows.insert(2, {"key": "broken", "image": b"not an image", "caption": "x"})
    (tmp_path / "images").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "images" / "part-0.parquet")
    block = re.search(r"```py\n( *import ray\n *from vqtool.tokens.ray_data import .*?)```",
                      README.read_text(), flags=re.S).group(1)  # fmt: skip
    code = textwrap.dedent(block)
    code = (code.replace("s3://bucket/images/", str(tmp_path / "images"))
                .replace("s3://bucket/tokens/", str(tmp_path / "tokens"))
                .replace('"tok.safetensors"', '"vqtool:fsq-f4-64"')
                .replace("num_gpus=1", "num_gpus=0").replace("concurrency=8", "concurrency=1")
                .replace("batch_size=256", "batch_size=4"))  # fmt: skip
    exec(compile(code, "README.md", "exec"), {})
    written = pq.read_table(tmp_path / "tokens")
    assert written.schema.field("tokens").type == pa.list_(pa.uint16())
    out = {r["key"]: r for r in written.to_pylist()}
    for key, tokens, caption in zip(ref["key"], ref["tokens"], ref["caption"]):
        assert out[key]["tokens"] == tokens
        assert out[key]["caption"] == caption and out[key]["error"] is None
    assert out["broken"]["error"].startswith("undecodable") and out["broken"]["tokens"] == []


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1"])
def test_a_wrong_ray_address_is_refused_in_one_line(tmp_path, address):
    """Nothing listens at the address: one line naming it and what to do, exit 2, within
    the connect timeout (not Ray's minutes of retries)."""
    from typer.testing import CliRunner

    from vqtool.cli.main import app

    shard = write_shard(tmp_path / "a.tar", [("a0", {"png": image_bytes(0)})])
    t0 = time.monotonic()
    result = CliRunner().invoke(app, ["encode", shard, "--out", str(tmp_path / "out"),
                                      "--executor", "ray", "--ray-address", address])
    assert result.exit_code == 2, result.output
    assert f"--ray-address {address}: nothing answers at 127.0.0.1:1" in result.stderr
    assert "ray start --head" in result.stderr and "Traceback" not in result.output
    assert time.monotonic() - t0 < 30


def test_a_ray_client_session_that_dies_at_birth_is_tried_once_more():
    """Ray's client server sometimes loses the session process it forks for a new client
    (ray-project/ray#63202): one more try, then one line saying what avoids it."""
    from vqtool.errors import UserError
    from vqtool.tokens import ray_executor

    class FlakyRay:
        def __init__(self, failures):
            self.failures, self.inits, self.shutdowns = failures, 0, 0

        def init(self, **kwargs):
            self.inits += 1
            if self.inits <= self.failures:
                raise ConnectionAbortedError("Initialization failure from server:\nTraceback")

        def shutdown(self):
            self.shutdowns += 1

    once = FlakyRay(failures=1)
    ray_executor._init(once, "ray://head:10001")
    assert (once.inits, once.shutdowns) == (2, 1)
    with pytest.raises(UserError) as refused:
        ray_executor._init(FlakyRay(failures=2), "ray://head:10001")
    said = str(refused.value)
    assert said.startswith("--ray-address ray://head:10001: Initialization failure from server")
    assert "GRPC_ENABLE_FORK_SUPPORT=false" in said and "\n" not in said
