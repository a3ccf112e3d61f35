"""A hostile shard of 30+ cases, encoded in one run: every sample ends up either as
exactly one token row or as recorded errors with a stable key and kind; nothing is
lost or duplicated and the run never aborts."""

import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.data import make_tokenizer

from vqtool.data import readers, samples
from vqtool.tokens.encode import EncodeConfig, encode
from vqtool.tokens.reader import TokenDataset


def img(mode="RGB", size=(40, 30), fmt="PNG", **save) -> bytes:
    rng = np.random.default_rng(size[0] * 7 + size[1])
    if mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65535, (size[1], size[0])).astype(np.uint16))
    else:
        rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        im = rgb.convert("RGBA" if mode == "RGBA" else mode)
    buf = io.BytesIO()
    im.save(buf, fmt, **save)
    return buf.getvalue()


def blank(size) -> bytes:
    """Many pixels in few bytes (what a decompression bomb looks like)."""
    buf = io.BytesIO()
    Image.new("L", size).save(buf, "PNG")
    return buf.getvalue()


def rotated_jpeg() -> bytes:
    im = Image.new("RGB", (40, 20), "red")
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 on display
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


def palette_with_transparency() -> bytes:
    im = Image.new("P", (16, 16), 0)
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    buf = io.BytesIO()
    im.save(buf, "PNG", transparency=0)
    return buf.getvalue()


NON_UTF8 = b"\xffname".decode("utf-8", "surrogateescape")
# (member name, bytes or "->target" for a symbolic link or "=>target" for a hard link)
MEMBERS = [
    ("rgb.jpg", img(fmt="JPEG")),
    ("rgb.png", img()),
    ("rgba.png", img("RGBA")),
    ("palette.png", palette_with_transparency()),
    ("grey.jpg", img("L", fmt="JPEG")),
    ("deep.png", img("I;16")),
    ("cmyk.jpg", img("CMYK", fmt="JPEG")),
    ("bilevel.png", img("1")),
    ("grey_alpha.png", img("LA")),
    ("tiny.png", img(size=(1, 1))),
    ("wide.png", img(size=(2000, 10))),
    ("rotated.jpg", rotated_jpeg()),
    ("half.jpg", img(fmt="JPEG", size=(64, 64))[:300]),  # cut short
    ("garbage.jpg", b"this is not an image at all"),
    ("empty.jpg", b""),
    ("bomb.png", blank((4000, 3000))),  # 12 MP, over the run's 10 MP limit
    ("at_limit.png", blank((4000, 2500))),  # exactly 10 MP: allowed
    (f"{NON_UTF8}.jpg", img(fmt="JPEG")),
    ("été photo.jpg", img(fmt="JPEG")),
    ("../traversal.jpg", img(fmt="JPEG")),
    ("/absolute/path.jpg", img(fmt="JPEG")),
    ("sym.jpg", "->rgb.jpg"),
    ("hard.jpg", "=>rgb.png"),
    ("twice.jpg", img(fmt="JPEG")),
    ("twice.jpg", img(fmt="JPEG", size=(41, 30))),  # the same member again
    ("later.jpg", img(fmt="JPEG")),
    ("caption_only.txt", b"a sample with no picture"),
    ("labelled.jpg", img(fmt="JPEG")),
    ("labelled.json", json.dumps({"caption": "from json"}).encode()),
    ("labelled.cls", b"7"),
    ("later.png", img()),  # key "later" again, after other samples
    ("huge.jpg", bytes(300_000)),  # over the run's 200 kB member limit
    ("anim.gif", img("P", fmt="GIF")),
    ("bitmap.bmp", img(fmt="BMP")),
    ("scan.tiff", img(fmt="TIFF")),
    ("photo.webp", img(fmt="WEBP")),
]
ROWS = {
    "rgb",
    "rgba",
    "palette",
    "grey",
    "deep",
    "cmyk",
    "bilevel",
    "grey_alpha",
    "tiny",
    "wide",
    "rotated",
    "at_limit",
    "\\xffname",
    "été photo",
    "../traversal",
    "/absolute/path",
    "twice",
    "later",
    "labelled",
    "anim",
    "bitmap",
    "scan",
    "photo",
}
ERRORS = {"garbage": "undecodable", "empty": "empty", "bomb": "too_many_pixels", "sym": "link",
          "hard": "link", "caption_only": "no_image", "huge": "too_large"}  # fmt: skip


def write_tar(path, members) -> str:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as t:  # fmt: skip
        folder = tarfile.TarInfo("subdir")
        folder.type = tarfile.DIRTYPE
        t.addfile(folder)  # a directory member: not a sample, not an error
        for name, data in members:
            info = tarfile.TarInfo(name)
            if isinstance(data, str):
                info.type = tarfile.SYMTYPE if data.startswith("->") else tarfile.LNKTYPE
                info.linkname = data[2:]
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return str(path)


def test_every_hostile_case_is_a_row_or_a_recorded_error(tmp_path, monkeypatch):
    assert len(MEMBERS) >= 25
    monkeypatch.setattr(readers, "MAX_MEMBER_BYTES", 200_000)
    shard = write_tar(tmp_path / "hostile.tar", MEMBERS)
    full = open(shard, "rb").read()
    cut = tmp_path / "cut.tar"  # a second shard, cut off in the middle of a member
    cut.write_bytes(full[: len(full) // 3])
    tok = make_tokenizer(tmp_path / "tok.safetensors")
    out = tmp_path / "tokens"
    cfg = EncodeConfig([shard, str(cut)], tok, str(out), workers=0, max_pixels=10_000_000)
    result = encode(cfg)  # never raises for bad input
    keys = TokenDataset.open(str(out)).select(None, None, 10**6)[0]
    errors = [json.loads(line) for f in sorted(out.glob("*.errors.jsonl"))
              for line in f.read_text().splitlines()]  # fmt: skip
    hostile_rows = [k for k in keys[: len(ROWS)]]
    assert set(hostile_rows) == ROWS and len(hostile_rows) == len(ROWS)  # once each
    # every row of the hostile shard is accounted for, every bad case recorded with its kind
    kinds = {e["key"]: e["kind"] for e in errors if e["source"].endswith("hostile.tar")}
    for key, kind in ERRORS.items():
        assert kinds.get(key) == kind, (key, kinds.get(key))
    dup = [e for e in errors if e["kind"] == "duplicate_key"]
    assert {e["key"] for e in dup} == {"twice", "later"}
    half = kinds.get("half")  # a cut JPEG: decoded as far as it goes, or recorded
    assert ("half" in keys) != (half == "undecodable")
    # the cut shard: its complete samples are rows, then one truncated_tar error
    cut_errors = [e for e in errors if e["source"].endswith("cut.tar")]
    assert cut_errors[-1]["kind"] == "truncated_tar" and "#" not in cut_errors[-1]["key"]
    # errors are stable JSON: no memory addresses, every kind known
    assert all(e["kind"] in samples.ERROR_KINDS for e in errors)
    assert not any(re.search(r"at 0x[0-9a-fA-F]+", e["reason"]) for e in errors)
    assert result.images == len(keys) and result.errors == len(errors)
    # a rerun resumes: nothing is written twice
    again = encode(cfg)
    assert again.tasks_done == 0 and again.tasks_skipped == result.tasks_done


def test_an_example_reason_is_cut_at_a_word_and_keeps_its_kind():
    from vqtool.report.terminal import _error_example

    reason = "undecodable image: UnidentifiedImageError: cannot identify image file <_io.BytesIO>"
    text = _error_example([{"key": "k", "kind": "undecodable", "reason": reason}])
    assert text.startswith(" (e.g. k: undecodable: undecodable image:")
    assert text.endswith(" ...)") and "identify" in text and "BytesIO" not in text


def test_reruns_remove_temporary_files_of_killed_writers(tmp_path):
    """A writer killed between writing `NAME.<pid>.tmp` and renaming it leaves the file; the
    next encode or export into the folder removes it when that process is gone (a live
    writer's file stays)."""
    import json
    import os
    import subprocess
    import sys

    from typer.testing import CliRunner

    from vqtool.cli.main import app

    runner = CliRunner()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead = int(gone.stdout)
    out = tmp_path / "tok"
    out.mkdir()
    (out / f"encode.json.{dead}.tmp").write_text("{")
    (out / f"part-000000.done.json.{dead}.tmp").write_text("{")
    (out / f"other.json.{os.getpid()}.tmp").write_text("{")  # a live process's
    result = runner.invoke(app, ["encode", "vqtool:sample", "--out", str(out), "--workers", "0",
                                 "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.tmp")) == [f"other.json.{os.getpid()}.tmp"]
    assert "left by a killed run" in result.stderr
    ex = tmp_path / "ex"
    ex.mkdir()
    (ex / f"export.json.{dead}.tmp").write_text("{")
    (tmp_path / "codes.toml").write_text('name = "codes"\nimage_offset = 0\n')
    result = runner.invoke(app, ["export", str(out), "--layout", str(tmp_path / "codes.toml"),
                                 "--format", "stream", "--out", str(ex), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert not list(ex.glob("*.tmp")) and json.loads(result.stdout)["notes"]


def test_a_replaced_shard_is_read_again_and_redo_errors_rereads(tmp_path):
    """Done tasks remember their inputs' size and mtime: a shard replaced after encoding
    (a truncated download fixed, say) is encoded again on the rerun, with a note; tasks
    that recorded errors are read again with --redo-errors. Each key once in the output."""
    import os

    import pyarrow.parquet as pq
    from support.data import image_bytes, write_shard
    from typer.testing import CliRunner

    from vqtool.cli.main import app

    runner = CliRunner()
    good = [(f"k{i}", {"png": image_bytes(i)}) for i in range(3)]
    shard = tmp_path / "s-000000.tar"
    write_shard(shard, [*good, ("bad", {"png": b"not an image"})])
    out = tmp_path / "tok"
    args = ["encode", str(shard), "--out", str(out), "--workers", "0", "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, args)
    assert '"tasks_skipped": 1' in again.stdout  # nothing changed: nothing redone
    redo = runner.invoke(app, [*args, "--redo-errors"])
    assert redo.exit_code == 0 and "sample error(s) recorded" in redo.stderr
    assert pq.read_table(out / "part-000000.parquet").num_rows == 3
    write_shard(shard, [*good, ("bad", {"png": image_bytes(9)})])  # the fixed download
    os.utime(shard, ns=(os.stat(shard).st_atime_ns, os.stat(shard).st_mtime_ns + 10**9))
    fixed = runner.invoke(app, args)
    assert fixed.exit_code == 0 and "input changed since it was encoded" in fixed.stderr
    keys = pq.read_table(out / "part-000000.parquet").column("key").to_pylist()
    assert sorted(keys) == ["bad", "k0", "k1", "k2"]  # each key once
    assert not (out / "part-000000.errors.jsonl").exists()


def test_a_tar_cut_at_a_block_boundary_is_a_truncated_tar_naming_the_sample(tmp_path):
    """A download cut exactly between tar blocks reads as a shorter archive; only the
    missing end-of-archive marker tells: the sample it stopped in is a `truncated_tar`
    error naming it (not "no image member")."""
    from support.data import image_bytes, write_shard

    from vqtool.data.sources import expand_sources, iter_samples

    parts = {"txt": b"a caption", "json": b"{}", "png": image_bytes(0, size=(60, 60))}
    shard = write_shard(tmp_path / "s.tar", [("k0", dict(parts)), ("k1", dict(parts))])
    data = open(shard, "rb").read()
    end = (len(data.rstrip(b"\0")) + 511) // 512 * 512  # where the end-of-archive zeros start
    for cut in range(512, end, 512):
        (tmp_path / "cut.tar").write_bytes(data[:cut])
        samples = list(iter_samples(expand_sources([str(tmp_path / "cut.tar")])[0]))
        errors = [s for s in samples if s.error]
        assert errors and all(s.kind == "truncated_tar" for s in errors), (cut, errors)
        assert errors[-1].key in ("k0", "k1")  # the sample it stopped in is named
    intact = list(iter_samples(expand_sources([shard])[0]))
    assert [s.error for s in intact] == [None, None]


def test_a_shard_that_vanished_after_planning_is_read_once_it_is_back(tmp_path):
    """A shard removed between planning and reading leaves its task unfinished (no file,
    no done marker; the CLI exits 3); once the shard is back, the rerun reads it: no rows
    are lost for good."""
    import pyarrow.parquet as pq
    from support.data import image_bytes, write_shard

    from vqtool.tokens.encode import EncodeConfig, encode

    a = write_shard(tmp_path / "a.tar", [(f"a{i}", {"png": image_bytes(i)}) for i in range(3)])
    b = write_shard(tmp_path / "b.tar", [(f"b{i}", {"png": image_bytes(i)}) for i in range(3)])
    out = tmp_path / "tok"
    cfg = EncodeConfig([a, b], "vqtool:fsq-f4-64", str(out), workers=0, shards_per_task=1)
    moved = tmp_path / "b.away"

    def vanish(kind, info):
        if kind == "start":  # planned, not read yet
            Path(b).rename(moved)

    first = encode(cfg, vanish)
    assert len(first.unfinished) == 1 and "b.tar" in first.unfinished[0]
    assert first.tasks_done == 1 and len(list(out.glob("*.done.json"))) == 1
    moved.rename(b)
    again = encode(cfg)
    assert again.tasks_skipped == 1 and again.tasks_done == 1 and again.unfinished == []
    keys = [k for f in sorted(out.glob("*.parquet"))
            for k in pq.read_table(f, columns=["key"]).column("key").to_pylist()]  # fmt: skip
    assert sorted(keys) == ["a0", "a1", "a2", "b0", "b1", "b2"]


def test_a_task_left_unfinished_exits_3_whatever_strict_says(tmp_path):
    """An input that cannot be read as a whole (here a `pipe:` command that fails) leaves
    its task without a done marker: one line naming it, exit status 3 with or without
    --strict, and the other tasks are done."""
    from support.data import image_bytes, write_shard
    from typer.testing import CliRunner

    from vqtool.cli.main import app

    good = write_shard(tmp_path / "a.tar", [(f"a{i}", {"png": image_bytes(i)}) for i in range(2)])
    out = tmp_path / "tok"
    for extra in ([], ["--strict"]):
        result = CliRunner().invoke(app, ["encode", good, "pipe:exit 7", "--out", str(out),
                                          "--workers", "0", "--shards-per-task", "1", *extra])
        assert result.exit_code == 3, result.output
        assert "1 task(s) left unfinished" in result.stderr and "status 7" in result.stderr
        assert "Traceback" not in result.output
    assert len(list(out.glob("*.done.json"))) == 1


def _children(pid: int) -> list[int]:
    """Every process below `pid` (children, their children...)."""
    import subprocess

    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    kids = [int(p) for p in out.split()]
    return kids + [g for k in kids for g in _children(k)]


def _role(pid: int) -> str:
    """What a process of an encode is: torch names its decode workers `pt_data_worker`; a
    `pipe:` source's command is known by its command line."""
    try:
        comm = open(f"/proc/{pid}/comm").read().strip()
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
    except OSError:
        return "gone"
    if comm == "pt_data_worker":
        return "decode worker"
    return "pipe source" if "slow-source" in cmdline else "other"


def _kill_when_running(forks, out, err, role: str) -> int | None:
    """Wait for the run's first done task, kill one of its processes of `role` (found by
    role, not by list order), and return the run's exit code (None: it ended first)."""
    import os
    import signal
    import time

    pid = forks.running
    deadline, code = time.monotonic() + 120, None
    while not list(out.glob("*.done.json")) and code is None:
        assert time.monotonic() < deadline, err.read_text()
        code = forks.exit_code()
        time.sleep(0.005)
    if code is not None:
        return None
    while True:  # the role's process may start a moment later (a pipe source's command)
        found = [p for p in _children(pid) if _role(p) == role]
        if found or forks.exit_code() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.005)
    if not found:
        return None
    os.kill(found[0], signal.SIGKILL)
    return forks.exit_code(60)


def _keys(out) -> list[str]:
    import pyarrow.parquet as pq

    return sorted(k for f in sorted(out.glob("*.parquet"))
                  for k in pq.read_table(f, columns=["key"]).column("key").to_pylist())  # fmt: skip


@pytest.mark.slow
def test_a_killed_decode_worker_ends_the_run_in_one_line_and_the_rerun_finishes(tmp_path):
    """The out-of-memory killer takes a decode worker (found by its role): one line (no
    traceback), exit 3; the tasks in progress are not written; the rerun finishes with
    every key once."""
    from support.data import image_bytes, write_shard
    from support.processes import Forks

    shards = [write_shard(tmp_path / f"s{s:02d}.tar", [(f"k{s}-{i}", {"png": image_bytes(i)})
                                                       for i in range(6)])
              for s in range(16)]  # fmt: skip
    out, err, forks = tmp_path / "out", tmp_path / "err.txt", Forks.shared()  # `vqtool` runs
    args = ["encode", *shards, "--out", out, "--shards-per-task", "1", "--workers", "2",
            "--batch-size", "2"]  # fmt: skip
    forks.start(args, err)
    code = _kill_when_running(forks, out, err, "decode worker")
    stderr = err.read_text()
    if code is None or code == 0:  # the run had finished its reads first: nothing to check
        pytest.skip("the encode finished before a decode worker was killed")
    assert code == 3, stderr
    assert "a decode worker died" in stderr and "Traceback" not in stderr
    forks.start(args, err)
    assert forks.exit_code(120) == 0, err.read_text()
    assert _keys(out) == sorted(f"k{s}-{i}" for s in range(16) for i in range(6))


@pytest.mark.slow
def test_a_killed_pipe_source_command_leaves_its_task_in_one_line_and_the_rerun_finishes(
    tmp_path,
):
    """A `pipe:` source's command (a child of a decode worker) killed mid-run: its task is
    left unfinished, named in one line, exit 3; the other tasks are done and the rerun
    finishes with every key once."""
    import sys

    from support.data import image_bytes, write_shard
    from support.processes import Forks

    shards = [write_shard(tmp_path / f"s{s:02d}.tar", [(f"k{s}-{i}", {"png": image_bytes(i)})
                                                       for i in range(4)])
              for s in range(6)]  # fmt: skip
    slow = write_shard(tmp_path / "slow-source.tar",
                       [(f"p{i}", {"png": image_bytes(i)}) for i in range(4)])  # fmt: skip
    hold = tmp_path / "hold"
    hold.touch()  # while it exists, the command writes its tar and then waits
    code = (f"import os, sys, time; sys.stdout.buffer.write(open({str(slow)!r}, 'rb').read()); "
            f"sys.stdout.flush(); [time.sleep(0.05) for _ in range(2400) "
            f"if os.path.exists({str(hold)!r})]")  # fmt: skip
    pipe = f'pipe:exec {sys.executable} -c "{code}"'
    out, err, forks = tmp_path / "out", tmp_path / "err.txt", Forks.shared()
    args = ["encode", *shards, pipe, "--out", out, "--shards-per-task", "1", "--workers", "2",
            "--batch-size", "2"]  # fmt: skip
    forks.start(args, err)
    status = _kill_when_running(forks, out, err, "pipe source")
    stderr = err.read_text()
    hold.unlink()
    if status is None:
        pytest.skip("the encode ended before the pipe's command was found")
    assert status == 3, stderr
    assert "1 task(s) left unfinished" in stderr and "status -9" in stderr, stderr
    assert "Traceback" not in stderr
    forks.start(args, err)
    assert forks.exit_code(120) == 0, err.read_text()
    want = [f"k{s}-{i}" for s in range(6) for i in range(4)] + [f"p{i}" for i in range(4)]
    assert _keys(out) == sorted(want)


def test_small_hostile_inputs_are_said_not_passed_over(tmp_path):
    """A broken link in an image folder is a recorded `link` error; a key repeated across
    the shards of a task is a note (both rows kept); one malformed JSON sidecar does not
    make a shard look captionless to --caption-from json:FIELD; an unreachable ftp://
    source is one line."""
    import os

    from support.data import image_bytes, write_shard
    from typer.testing import CliRunner

    from vqtool.cli.main import app

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes(image_bytes(1))
    os.symlink(tmp_path / "gone.png", folder / "b.png")
    r = encode(EncodeConfig([str(folder)], "vqtool:fsq-f4-64", str(tmp_path / "f"), workers=0))
    assert r.images == 1 and r.errors == 1 and r.error_examples[0]["kind"] == "link"

    one = write_shard(tmp_path / "one.tar", [("same", {"png": image_bytes(1)})])
    two = write_shard(tmp_path / "two.tar", [("same", {"png": image_bytes(2)})])
    r = encode(EncodeConfig([one, two], "vqtool:fsq-f4-64", str(tmp_path / "d"), workers=0,
                            shards_per_task=2))  # fmt: skip
    assert r.images == 2 and any("appear in more than one input" in n for n in r.notes)

    sidecars = write_shard(tmp_path / "json.tar", [
        ("j0", {"png": image_bytes(0), "json": b"{not json"}),
        ("j1", {"png": image_bytes(1), "json": json.dumps({"caption": "a cat"}).encode()}),
    ])  # fmt: skip
    r = encode(EncodeConfig([sidecars], "vqtool:fsq-f4-64", str(tmp_path / "j"), workers=0,
                            caption_from="json:caption"))  # fmt: skip
    assert r.images == 2

    ftp = CliRunner().invoke(app, ["encode", "ftp://127.0.0.1:1/x.tar", "--out", "x"])
    assert ftp.exit_code == 2 and "cannot connect" in ftp.stderr
    assert "Traceback" not in ftp.output
