"""Object stores: encode from `s3://` shards to an `s3://` folder against a real HTTP S3
endpoint (moto's server, started here), exactly once across a kill, retries, and no
credential in any output."""

import http.client
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from support.data import image_bytes, make_tokenizer, write_shard
from support.processes import Forks
from typer.testing import CliRunner

from vqtool.cli.main import app

moto_server = pytest.importorskip("moto.server")
s3fs = pytest.importorskip("s3fs")

SECRET = "s3cr3t-key-that-must-never-be-written"


class FlakyProxy(http.server.ThreadingHTTPServer):
    """Forwards to the S3 endpoint; answers 503 to the first `fail` GETs of `target`."""

    def __init__(self, upstream: tuple[str, int], target: str, fail: int):
        self.upstream, self.target, self.fail, self.refused = upstream, target, fail, 0
        self.drop_headers: set[str] = set()  # request headers not forwarded (lower case)
        self.gets = 0  # GET requests of `target` forwarded
        super().__init__(("127.0.0.1", 0), _Forward)


class _Forward(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the S3 client expects

    def log_message(self, *args):
        pass

    def _forward(self):
        srv = self.server
        if self.command == "GET" and srv.target in self.path and srv.refused < srv.fail:
            srv.refused += 1
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
        srv.gets += self.command == "GET" and srv.target in self.path
        conn = http.client.HTTPConnection(*srv.upstream)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in srv.drop_headers}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        length = resp.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(data)))  # HEAD: the object's size
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward


@pytest.fixture
def s3(monkeypatch, tmp_path):
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    reset = http.client.HTTPConnection(host, port)  # moto keeps one store per process
    reset.request("POST", "/moto-api/reset")
    reset.getresponse().read()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}",
           "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard"}  # fmt: skip
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s3fs.S3FileSystem.clear_instance_cache()  # cached clients keep an old endpoint
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir("bucket")
    shards = []
    for s in range(4):
        samples = [
            (f"s{s}-{i:03d}", {"jpg": image_bytes(s * 100 + i, size=(200, 150), fmt="JPEG"),
                               "txt": f"caption {i}".encode()})
            for i in range(12)
        ]  # fmt: skip
        local = write_shard(tmp_path / f"shard-{s:03d}.tar", samples)
        fs.put_file(local, f"bucket/shards/shard-{s:03d}.tar")
        shards.append(local)
    yield {"fs": fs, "host": host, "port": port, "shards": shards}
    server.stop()


def rows_by_key(ds_path) -> dict:
    from vqtool.tokens.reader import TokenDataset

    ds = TokenDataset.open(ds_path)
    out = {}
    for keys, tokens, _ in ds.iter_batches():
        for k, t in zip(keys, tokens):
            assert k not in out, f"duplicate key {k}"
            out[k] = t.tolist()
    return out


@pytest.mark.slow
def test_encode_s3_to_s3_survives_a_kill_and_matches_a_local_run(s3, tmp_path):
    local = CliRunner().invoke(app, ["encode", *s3["shards"], "--out", str(tmp_path / "local"),
                                     "--workers", "0", "-q"])  # fmt: skip
    assert local.exit_code == 0, local.output
    cmd = [sys.executable, "-m", "vqtool", "encode", "s3://bucket/shards/shard-{000..003}.tar",
           "--out", "s3://bucket/tokens", "--workers", "0", "--batch-size", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    fs = s3["fs"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        fs.invalidate_cache()
        if fs.exists("bucket/tokens") and fs.glob("bucket/tokens/*.done.json"):
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    first = proc.communicate()[0]
    fs.invalidate_cache()
    assert 1 <= len(fs.glob("bucket/tokens/*.done.json")) < 4  # it really stopped part-way
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    assert rows_by_key("s3://bucket/tokens") == rows_by_key(tmp_path / "local")
    # inspect and decode read the object-store folder as a local one
    report = CliRunner().invoke(app, ["inspect", "s3://bucket/tokens", "--json"])
    assert report.exit_code == 0, report.output
    assert json.loads(report.output)["rows"] == 48
    # no credential anywhere: not in the objects, not in what the runs printed
    fs.invalidate_cache()
    for path in fs.find("bucket/tokens"):
        assert SECRET.encode() not in fs.cat_file(path), path
    assert SECRET not in first + again.stdout + again.stderr + report.output


@pytest.mark.slow
def test_transient_failures_are_retried_and_permanent_ones_recorded(s3, tmp_path, monkeypatch):
    proxy = FlakyProxy((s3["host"], s3["port"]), "/bucket/shards/shard-001.tar", fail=2)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.server_address[1]}")
    s3fs.S3FileSystem.clear_instance_cache()
    out = tmp_path / "retried"
    result = CliRunner().invoke(app, ["encode", "s3://bucket/shards/*.tar", "--out", str(out),
                                      "--workers", "0", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert proxy.refused == 2 and json.loads(result.stdout)["images"] == 48, result.output
    proxy.fail, proxy.refused = 10**6, 0  # now the shard never answers
    result = CliRunner().invoke(app, ["encode", "s3://bucket/shards/*.tar", "--retries", "1",
                                      "--out", str(tmp_path / "failed"), "--workers", "0",
                                      "--json"])  # fmt: skip
    assert result.exit_code == 3, result.output  # a task left unfinished: the rerun does it
    assert proxy.refused == 2  # --retries 1: two GETs in all (the clients' own retries off)
    summary = json.loads(result.stdout)
    assert summary["images"] == 36 and summary["tasks_done"] == 0  # the four shards: one task
    [left] = summary["unfinished"]
    assert "s3://bucket/shards/shard-001.tar" in left and "failed 2 times" in left
    proxy.fail = 0  # the store answers again: the rerun writes the task, every row once
    result = CliRunner().invoke(app, ["encode", "s3://bucket/shards/*.tar", "--out",
                                      str(tmp_path / "failed"), "--workers", "0", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["images"] == 48, result.output
    proxy.shutdown()


@pytest.mark.slow
def test_a_remote_shard_is_downloaded_once_whatever_the_number_of_workers(s3, tmp_path,
                                                                          monkeypatch):
    """One shard, 0, 2 or 4 decode workers: one GET of the object, not one per worker
    (the task size is given, so the shard is not read to count its images first)."""
    proxy = FlakyProxy((s3["host"], s3["port"]), "/bucket/shards/shard-002.tar", fail=0)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.server_address[1]}")
    s3fs.S3FileSystem.clear_instance_cache()
    for workers in (0, 2, 4):
        proxy.gets = 0
        result = CliRunner().invoke(app, ["encode", "s3://bucket/shards/shard-002.tar", "--out",
                                          str(tmp_path / f"once-{workers}"), "--json",
                                          "--workers", str(workers), "--shards-per-task", "1"])
        assert result.exit_code == 0 and json.loads(result.stdout)["images"] == 12, result.output
        assert proxy.gets == 1, workers
    proxy.shutdown()


def test_urls_are_recorded_without_credentials():
    from vqtool.data.remote import redact

    url = "https://user:pa55@host.example/data/x.tar?X-Amz-Signature=abc&X-Amz-Credential=k"
    assert redact(url) == "https://host.example/data/x.tar"
    assert redact("s3://bucket/a/b.tar") == "s3://bucket/a/b.tar"


@pytest.mark.slow
def test_image_prefixes_and_parquet_objects_read_as_local_ones(s3, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs = s3["fs"]
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(5):
        (folder / f"img{i}.png").write_bytes(image_bytes(i))
        (folder / f"img{i}.txt").write_text(f"caption {i}")
    fs.put(str(folder), "bucket/images", recursive=True)
    table = pa.table({"key": [f"p{i}" for i in range(4)],
                      "image": [image_bytes(10 + i) for i in range(4)]})  # fmt: skip
    pq.write_table(table, tmp_path / "rows.parquet")
    fs.put_file(str(tmp_path / "rows.parquet"), "bucket/rows.parquet")
    runner = CliRunner()
    for local, url in ((folder, "s3://bucket/images"), (tmp_path / "rows.parquet",
                                                         "s3://bucket/rows.parquet")):  # fmt: skip
        a = runner.invoke(app, ["encode", str(local), "--out", str(tmp_path / "a" / local.name),
                                "--workers", "0", "-q"])  # fmt: skip
        b = runner.invoke(app, ["encode", url, "--out", str(tmp_path / "b" / local.name),
                                "--workers", "0", "-q"])  # fmt: skip
        assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
        ours, theirs = rows_by_key(tmp_path / "a" / local.name), rows_by_key(
            tmp_path / "b" / local.name)  # fmt: skip
        assert ours == theirs and len(ours) in (4, 5)
    captions = pq.read_table(tmp_path / "b" / "images" / "part-000000.parquet")["caption"]
    assert sorted(captions.to_pylist()) == [f"caption {i}" for i in range(5)]


@pytest.mark.slow
def test_a_replaced_object_is_encoded_again_by_its_etag(s3, tmp_path):
    """Done markers record each object's size and ETag: an object replaced after encoding
    (same size, new content) is read again on the rerun, with a note; unchanged ones are
    skipped without a byte read."""
    from support.data import write_shard

    fs = s3["fs"]
    args = ["encode", "s3://bucket/shards/shard-{000..001}.tar", "--out", str(tmp_path / "tok"),
            "--workers", "0", "--shards-per-task", "1", "--json"]  # fmt: skip
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    before = rows_by_key(tmp_path / "tok")
    done = json.loads((tmp_path / "tok" / "part-000001.done.json").read_text())
    assert all(stamp and stamp["etag"] for stamp in done["inputs"])
    samples = [(f"s1-{i:03d}", {"jpg": image_bytes(500 + i, size=(200, 150), fmt="JPEG")})
               for i in range(12)]  # fmt: skip
    fs.put_file(write_shard(tmp_path / "new.tar", samples), "bucket/shards/shard-001.tar")
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["tasks_skipped"] == 1
    assert "part-000001: input changed since it was encoded" in again.stderr
    after = rows_by_key(tmp_path / "tok")
    assert after.keys() == before.keys()  # each key once
    assert all(after[k] == before[k] for k in after if k.startswith("s0-"))
    assert all(after[k] != before[k] for k in after if k.startswith("s1-"))  # the new pictures


@pytest.mark.slow
def test_a_mistyped_bucket_is_refused_unless_create_bucket(s3, tmp_path):
    """`--out s3://bukcet/...`: one line naming the bucket, exit 2, nothing created;
    `--create-bucket` creates it and writes there."""
    fs = s3["fs"]
    args = ["encode", s3["shards"][0], "--out", "s3://bukcet/tokens", "--workers", "0", "-q"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "bucket 'bukcet' does not exist" in refused.stderr
    assert "--create-bucket" in refused.stderr and "Traceback" not in refused.output
    fs.invalidate_cache()
    assert not fs.exists("bukcet")
    made = CliRunner().invoke(app, [*args, "--create-bucket"])
    assert made.exit_code == 0, made.output
    fs.invalidate_cache()
    assert fs.glob("bukcet/tokens/*.done.json")


@pytest.mark.slow
def test_two_runs_into_one_prefix_claim_tasks_and_never_lose_rows(s3, tmp_path):
    """On an object store each task is claimed with a conditional create and a lease:
    a task another live run holds is skipped (exit 3, named), one whose owner crashed
    (lease run out) is taken over; a done marker whose part is gone is encoded again;
    `encode.json` is pinned conditionally, so another precision is refused. Every key
    ends up once."""
    import time as clock

    fs, shards = s3["fs"], "s3://bucket/shards/shard-{000..003}.tar"
    base = ["encode", shards, "--out", "s3://bucket/claimed", "--workers", "0",
            "--shards-per-task", "1", "--json"]  # fmt: skip
    live = {"owner": "other-host:7:live", "expires": clock.time() + 600}
    dead = {"owner": "crashed-host:9:dead", "expires": clock.time() - 1}
    fs.pipe_file("bucket/claimed/part-000001.claim", json.dumps(live).encode())
    fs.pipe_file("bucket/claimed/part-000002.claim", json.dumps(dead).encode())
    first = CliRunner().invoke(app, base)
    assert first.exit_code == 3, first.output
    summary = json.loads(first.stdout)
    assert summary["tasks_done"] == 3  # 000002 taken over from the crashed owner
    assert summary["unfinished"] == ["part-000001: claimed by another live run "
                                     "(other-host:7:live)"]  # fmt: skip
    fs.invalidate_cache()
    assert fs.glob("bucket/claimed/*.claim") == ["bucket/claimed/part-000001.claim"]
    # the other run finishes (its claim goes); a part is lost behind its done marker
    fs.rm_file("bucket/claimed/part-000001.claim")
    fs.rm_file("bucket/claimed/part-000003.parquet")
    again = CliRunner().invoke(app, base)
    assert again.exit_code == 0, again.output
    assert "part-000003: its token file is missing; encoded again" in again.stderr
    assert json.loads(again.stdout)["tasks_done"] == 2
    assert len(rows_by_key("s3://bucket/claimed")) == 48
    mixed = CliRunner().invoke(app, [*base, "--precision", "bf16"])
    assert mixed.exit_code == 2 and "another tokenizer, preprocessing or precision" in mixed.stderr


@pytest.mark.slow
def test_claims_need_a_store_that_refuses_a_second_create(s3, tmp_path, monkeypatch):
    """A store that overwrites on `If-None-Match: *` (the proxy drops the header) cannot
    hold claims: refused at start in one line unless --single-writer."""
    proxy = FlakyProxy((s3["host"], s3["port"]), "-", fail=0)
    proxy.drop_headers = {"if-none-match"}
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.server_address[1]}")
    s3fs.S3FileSystem.clear_instance_cache()
    args = ["encode", s3["shards"][0], "--out", "s3://bucket/plain", "--workers", "0", "-q"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "--single-writer" in refused.stderr, refused.output
    alone = CliRunner().invoke(app, [*args, "--single-writer"])
    assert alone.exit_code == 0, alone.output
    proxy.shutdown()


@pytest.mark.slow
def test_a_claim_is_renewed_while_held_and_lost_when_another_run_takes_it(s3):
    """The owner renews its lease (If-Match on its own version); when another run has
    replaced the claim, the renewal fails and the claim reports `lost` (its task is then
    not marked done); released, the claim object goes."""
    import time as clock

    from vqtool.data.remote import Folder
    from vqtool.tokens.tasks import claim_task

    fs, out = s3["fs"], Folder("s3://bucket/leases")
    # a lease long enough that a loaded machine still renews it in time (every 1 s)
    with claim_task(out, "part-000000", lease_s=3) as held:
        assert held and not held.lost
        first = json.loads(fs.cat_file("bucket/leases/part-000000.claim"))
        deadline = clock.monotonic() + 5
        renewed = first
        while renewed["expires"] == first["expires"] and clock.monotonic() < deadline:
            clock.sleep(0.1)  # past a third of the lease: renewed
            fs.invalidate_cache()
            renewed = json.loads(fs.cat_file("bucket/leases/part-000000.claim"))
        assert renewed["owner"] == first["owner"] and renewed["expires"] > first["expires"]
        with claim_task(out, "part-000000", lease_s=3) as other:  # a live claim: skipped
            assert not other and other.by == first["owner"]
        fs.pipe_file("bucket/leases/part-000000.claim", b'{"owner": "thief", "expires": 0}')
        deadline = clock.monotonic() + 5
        while not held.lost and clock.monotonic() < deadline:
            clock.sleep(0.05)
        assert held.lost
    fs.invalidate_cache()
    assert fs.exists("bucket/leases/part-000000.claim")  # the thief's, not removed by us
    fs.rm_file("bucket/leases/part-000000.claim")
    with claim_task(out, "part-000000", lease_s=60) as held:
        assert held
    fs.invalidate_cache()
    assert not fs.exists("bucket/leases/part-000000.claim")


@pytest.mark.slow
def test_a_claim_taken_right_after_its_renewal_is_seen_lost(s3):
    """Another run replaces the claim between the owner's renewal and its next one: the
    owner keeps the version its own write made (the store's answer), so the next renewal
    fails and the claim is lost, never renewed over the other run's."""
    import time as clock

    from vqtool.data.remote import Folder
    from vqtool.tokens.tasks import claim_task

    fs, out = s3["fs"], Folder("s3://bucket/race")
    real = out.replace_text_if

    def renew_then_thief(name, text, version):
        written = real(name, text, version)
        fs.pipe_file("bucket/race/part-000000.claim", b'{"owner": "thief", "expires": 9e9}')
        return written

    out.replace_text_if = renew_then_thief
    with claim_task(out, "part-000000", lease_s=1.5) as held:
        deadline = clock.monotonic() + 10
        while not held.lost and clock.monotonic() < deadline:
            clock.sleep(0.05)
        assert held.lost
    fs.invalidate_cache()
    assert json.loads(fs.cat_file("bucket/race/part-000000.claim"))["owner"] == "thief"


def test_https_style_shards_are_read_from_a_server_that_lists_no_folders(tmp_path):
    """A web server that answers files but refuses folder listings (most CDNs): shards
    given by URL (brace-expanded) are read; a missing one is one line."""
    import functools

    from support.data import image_bytes, write_shard

    served = tmp_path / "www"
    served.mkdir()
    for s in range(2):
        write_shard(served / f"shard-{s}.tar", [(f"w{s}-{i}", {"png": image_bytes(i)})
                                                for i in range(3)])  # fmt: skip

    class NoListing(http.server.SimpleHTTPRequestHandler):
        def list_directory(self, path):
            self.send_error(403, "no listings here")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(NoListing, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    out = tmp_path / "web"
    result = CliRunner().invoke(app, ["encode", base + "/shard-{0..1}.tar", "--out", str(out),
                                      "--workers", "0", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"] == 6
    missing = CliRunner().invoke(app, ["encode", base + "/shard-9.tar", "--out", str(out)])
    assert missing.exit_code == 2 and "shard-9.tar: no such file" in missing.stderr
    server.shutdown()


# patches the S3 client's writes in a run: the first write of an object named like PATTERN
# happens, then the process is killed (a crash right after that write point)
KILLED_AFTER = """
import fnmatch, os, signal
import s3fs
def killing(real):
    def patched(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        target = str(args[1] if real.__name__ == "put_file" else args[0])
        if fnmatch.fnmatch(target.rsplit("/", 1)[-1], PATTERN):
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    return patched
for name in ("pipe_file", "put_file"):
    setattr(s3fs.S3FileSystem, name, killing(getattr(s3fs.S3FileSystem, name)))
"""


@pytest.mark.slow
def test_runs_killed_at_each_object_store_write_point_leave_every_key_once(s3, tmp_path):
    """Encodes into one prefix on a real S3 endpoint: the first is killed right after one
    of its write points (the pin, a claim, a part, a done marker), a second runs at once,
    a third after the dead run's claims expired: every key once, no done marker without
    its part. (One prefix per point; each run a fork of one warm process, `Forks`.)"""
    points = {"pin": "encode.json", "claim": "*.claim", "part": "*.parquet",
              "marker": "*.done.json"}  # fmt: skip
    lease = 4

    tokenizer = make_tokenizer(tmp_path / "tok.safetensors")  # tiny: the runs, not the model

    def argv(point: str) -> list[str]:
        return ["encode", "s3://bucket/shards/shard-{000..001}.tar", "--out",
                f"s3://bucket/k-{point}", "--workers", "0", "--shards-per-task", "1",
                "--claim-lease", str(lease), "--tokenizer", tokenizer, "-q"]  # fmt: skip

    forks, err = Forks.shared(), tmp_path / "err.txt"
    for p, pattern in points.items():
        forks.start(argv(p), err, prelude=f"PATTERN = {pattern!r}\n" + KILLED_AFTER)
        assert forks.exit_code(300) == -signal.SIGKILL, (p, err.read_text())
        forks.start(argv(p), err)  # at once: the dead run's claims are still live
        code, said = forks.exit_code(300), err.read_text()
        assert code in (0, 3), (p, said)  # 3: a dead run's claim had not expired
        assert code == 0 or "claimed by another live run" in said, (p, said)
    time.sleep(lease + 0.5)
    fs = s3["fs"]
    for p in points:
        forks.start(argv(p), err)
        assert forks.exit_code(300) == 0, (p, err.read_text())
        fs.invalidate_cache()
        markers = fs.glob(f"bucket/k-{p}/*.done.json")
        assert len(markers) == 2, p
        for marker in markers:
            assert fs.exists(marker.replace(".done.json", ".parquet")), marker
        assert len(rows_by_key(f"s3://bucket/k-{p}")) == 24, p
