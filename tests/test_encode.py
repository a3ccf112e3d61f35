"""`vqtool encode`: the main job. Resumable, never mixed, never loses a sample."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.data import image_bytes, make_tokenizer, write_shard
from typer.testing import CliRunner

from vqtool.cli.main import app
from vqtool.models import Tokenizer
from vqtool.tokens.encode import EncodeConfig, EncodeError, encode

runner = CliRunner()


@pytest.fixture
def tokenizer(tmp_path):
    return make_tokenizer(tmp_path / "tok.safetensors")


def all_rows(out):
    rows = []
    for f in sorted(out.glob("*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return rows


def test_encode_writes_the_documented_schema(image_shards, tokenizer, tmp_path):
    out = tmp_path / "tokens"
    result = encode(EncodeConfig(image_shards, tokenizer, str(out), batch_size=5, workers=0,
                                 shards_per_task=1))  # fmt: skip
    assert (result.tasks_done, result.images, result.errors) == (3, 24, 0)
    assert result.tokens == 24 * 64 and 0 < result.used_share <= 1
    table = pq.read_table(out / "part-000000.parquet")
    assert table.schema.field("tokens").type.value_type == "uint16"
    row = table.to_pylist()[0]
    assert row["key"] == "sample0000" and row["caption"] == "caption 0"
    assert (row["width"], row["height"]) == (40, 30) and row["source_index"] == 0
    assert row["source"].endswith("shard-00.tar") and len(row["tokens"]) == 64
    meta = json.loads(table.schema.metadata[b"vqtool"])
    assert meta["vocab_size"] == 64 and meta["dtype"] == "uint16"
    assert meta["layout"]["grids"] == [[8, 8]] and meta["preprocessing"]["image_size"] == 16
    assert len(meta["tokenizer"]["sha256"]) == 64
    assert json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]["tokens"]
    # the tokens are the tokenizer's own
    tok = Tokenizer.load(tokenizer)
    assert all(0 <= t < 64 for t in row["tokens"])
    assert tok.layout.tokens_per_image == len(row["tokens"])


def test_large_vocabularies_use_uint32(image_shards, tmp_path):
    big = make_tokenizer(tmp_path / "big.safetensors", codebook_size=70000)
    encode(EncodeConfig(image_shards[:1], big, str(tmp_path / "t"), workers=0))
    schema = pq.read_schema(tmp_path / "t" / "part-000000.parquet")
    assert schema.field("tokens").type.value_type == "uint32"


def test_rerun_skips_done_tasks(image_shards, tokenizer, tmp_path):
    cfg = EncodeConfig(image_shards, tokenizer, str(tmp_path / "t"), workers=0, shards_per_task=1)
    encode(cfg)
    again = encode(cfg)
    assert (again.tasks_done, again.tasks_skipped, again.images) == (0, 3, 0)


def test_interrupted_run_resumes_with_every_sample_exactly_once(image_shards, tokenizer, tmp_path):
    out = tmp_path / "t"
    cfg = EncodeConfig(
        image_shards, tokenizer, str(out), batch_size=3, workers=0, shards_per_task=1
    )
    seen = {"tasks": 0}

    def kill_mid_second_task(kind, info):
        if kind == "task":
            seen["tasks"] += 1
        if kind == "batch" and seen["tasks"] == 1:
            raise KeyboardInterrupt  # as if the job were killed mid-task

    with pytest.raises(KeyboardInterrupt):
        encode(cfg, kill_mid_second_task)
    assert (out / "part-000000.done.json").exists()
    assert not (out / "part-000001.done.json").exists()
    assert not list(out.glob("*.tmp")), "a partial file never stays behind"
    (out / "part-000002.parquet.999999999.tmp").write_bytes(b"left by a hard kill")
    result = encode(cfg)
    assert (result.tasks_skipped, result.tasks_done) == (1, 2)
    keys = [r["key"] for r in all_rows(out)]
    assert sorted(keys) == [f"sample{n:04d}" for n in range(24)]
    assert not list(out.glob("*.tmp"))


def test_another_tokenizer_in_the_same_folder_is_refused(image_shards, tokenizer, tmp_path):
    out = str(tmp_path / "t")
    encode(EncodeConfig(image_shards[:1], tokenizer, out, workers=0))
    other = make_tokenizer(tmp_path / "other.safetensors", seed=1)
    with pytest.raises(EncodeError, match="another tokenizer, preprocessing or precision"):
        encode(EncodeConfig(image_shards[:1], other, out, workers=0))
    with pytest.raises(EncodeError, match="other inputs"):
        encode(EncodeConfig(image_shards[1:2], tokenizer, out, workers=0))
    # precision changes tokens, so it is pinned too (fp32 folder, bf16 run)
    with pytest.raises(EncodeError, match="fp32.*this run uses.*bf16"):
        encode(EncodeConfig(image_shards[:1], tokenizer, out, workers=0, precision="bf16"))
    with pytest.raises(EncodeError, match="--precision 'fp16'"):
        encode(EncodeConfig(image_shards[:1], tokenizer, out, workers=0, precision="fp16"))


def test_an_input_listed_twice_or_by_another_path_is_read_once(image_shards, tokenizer, tmp_path):
    link = tmp_path / "same.tar"
    link.symlink_to(image_shards[0])
    again = str(Path(image_shards[0]).parent / ".." / Path(image_shards[0]).parent.name
                / Path(image_shards[0]).name)  # fmt: skip
    r = encode(EncodeConfig([image_shards[0], str(link), again, image_shards[0]], tokenizer,
                            str(tmp_path / "t"), workers=0))  # fmt: skip
    once = encode(EncodeConfig(image_shards[:1], tokenizer, str(tmp_path / "u"), workers=0))
    assert r.images == once.images and r.tasks_total == 1
    assert sum("read once" in n for n in r.notes) == 3


def test_out_must_be_a_folder_and_a_task_is_written_by_one_process(
    image_shards, tokenizer, tmp_path
):
    import fcntl

    existing = tmp_path / "README.md"
    existing.write_text("not a folder")
    with pytest.raises(EncodeError, match="an existing file, not a folder"):
        encode(EncodeConfig(image_shards[:1], tokenizer, str(existing), workers=0))
    out = tmp_path / "t"
    out.mkdir()
    with open(out / "part-000000.lock", "a+") as held:  # another live encode holds the task
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(EncodeError, match="another vqtool encode is writing part-000000"):
            encode(EncodeConfig(image_shards[:1], tokenizer, str(out), workers=0))
    r = encode(EncodeConfig(image_shards[:1], tokenizer, str(out), workers=0))  # released
    assert r.tasks_done == 1 and not (out / "part-000000.lock").exists()


def test_bad_inputs_are_recorded_never_fatal(tokenizer, tmp_path):
    shard = write_shard(
        tmp_path / "bad.tar",
        [
            ("ok", {"jpg": image_bytes(1, fmt="JPEG")}),
            ("zero", {"jpg": b""}),
            ("truncated", {"jpg": image_bytes(2, size=(64, 64), fmt="JPEG")[:300]}),
            ("notimage", {"txt": b"no picture here"}),
            ("cmyk", {"jpg": image_bytes(3, fmt="JPEG", mode="CMYK")}),
            ("grey16", {"tif": image_bytes(4, fmt="TIFF", mode="I;16")}),
            ("tiny", {"png": image_bytes(5, size=(1, 1))}),
            ("palette", {"png": image_bytes(6, mode="P")}),
        ],
    )
    out = tmp_path / "t"
    result = runner.invoke(
        app,
        ["encode", shard, "--tokenizer", tokenizer, "--out", str(out), "--workers", "0", "--json"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["images"] == 5 and data["errors"] == 3
    errors = [json.loads(x) for x in (out / "part-000000.errors.jsonl").read_text().splitlines()]
    reasons = {e["key"]: e["reason"] for e in errors}
    assert set(reasons) == {"zero", "truncated", "notimage"}
    assert "empty file" in reasons["zero"] and "no image member" in reasons["notimage"]
    good = {r["key"] for r in all_rows(out)}
    assert good == {"ok", "cmyk", "grey16", "tiny", "palette"}
    strict = runner.invoke(
        app,
        [
            "encode",
            shard,
            "--tokenizer",
            tokenizer,
            "--out",
            str(tmp_path / "t2"),
            "--workers",
            "0",
            "--strict",
        ],
    )
    assert strict.exit_code == 1 and "3 samples failed" in strict.output


def test_decompression_bombs_are_refused(tokenizer, tmp_path):
    shard = write_shard(tmp_path / "b.tar", [("bomb", {"png": image_bytes(0, size=(64, 64))})])
    cfg = EncodeConfig([shard], tokenizer, str(tmp_path / "t"), workers=0, max_pixels=1000)
    result = encode(cfg)
    assert result.errors == 1 and "pixel limit" in result.error_examples[0]["reason"]


def test_rank_split_gives_disjoint_outputs_covering_the_input(image_shards, tokenizer, tmp_path):
    out = tmp_path / "t"
    args = [
        "encode",
        *image_shards,
        "--tokenizer",
        tokenizer,
        "--out",
        str(out),
        "--workers",
        "0",
        "--shards-per-task",
        "1",
        "--json",
    ]
    r0 = runner.invoke(app, args, env={"RANK": "0", "WORLD_SIZE": "2"})
    r1 = runner.invoke(app, args, env={"RANK": "1", "WORLD_SIZE": "2"})
    assert r0.exit_code == 0 and r1.exit_code == 0, r0.output + r1.output
    assert json.loads(r0.stdout)["tasks_done"] == 2 and json.loads(r1.stdout)["tasks_done"] == 1
    keys = [r["key"] for r in all_rows(out)]
    assert sorted(keys) == [f"sample{n:04d}" for n in range(24)]  # disjoint, complete


def test_slurm_style_split(image_shards, tokenizer, tmp_path):
    cfg = EncodeConfig(
        image_shards,
        tokenizer,
        str(tmp_path / "t"),
        workers=0,
        num_shards=3,
        shard_index=2,
        shards_per_task=1,
    )
    assert encode(cfg).tasks_done == 1
    assert [p.name for p in (tmp_path / "t").glob("*.done.json")] == ["part-000002.done.json"]


def test_clear_errors_for_missing_things(image_shards, tokenizer, tmp_path):
    r = runner.invoke(
        app,
        [
            "encode",
            image_shards[0],
            "--tokenizer",
            "nope.safetensors",
            "--out",
            str(tmp_path / "t"),
        ],
    )
    assert r.exit_code == 2 and "no such checkpoint" in r.output and "Traceback" not in r.output
    r = runner.invoke(
        app, ["encode", "missing.tar", "--tokenizer", tokenizer, "--out", str(tmp_path)]
    )
    assert r.exit_code == 2 and "missing.tar: no such file" in r.output


def test_paths_from_stdin(image_shards, tokenizer, tmp_path):
    r = runner.invoke(
        app,
        [
            "encode",
            "-",
            "--tokenizer",
            tokenizer,
            "--out",
            str(tmp_path / "t"),
            "--workers",
            "0",
            "--json",
        ],
        input="\n".join(image_shards) + "\n",
    )
    assert r.exit_code == 0 and json.loads(r.stdout)["images"] == 24


def test_output_reads_in_other_tools(image_shards, tokenizer, tmp_path):
    out = tmp_path / "t"
    encode(EncodeConfig(image_shards, tokenizer, str(out), workers=0))
    files = sorted(str(p) for p in out.glob("*.parquet"))
    expected = pq.read_table(files[0]).to_pylist()
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset(
        "parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf")
    )
    assert len(ds) == 24 and ds.features["tokens"].feature.dtype == "uint16"
    assert ds[0]["tokens"] == expected[0]["tokens"]
    try:
        import polars as pl

        assert pl.read_parquet(files[0])["tokens"].to_list()[0] == expected[0]["tokens"]
    except ImportError:
        pass
    try:
        import duckdb

        n = duckdb.sql(f"select count(*) from read_parquet({files!r})").fetchall()[0][0]
        assert n == 24
    except ImportError:
        pass


def test_works_out_of_the_box_on_the_bundled_sample(tmp_path):
    from vqtool.assets import BUNDLED

    assert all(p.is_file() for p in BUNDLED.values()), "bundled assets are part of the package"
    r = runner.invoke(app, ["encode", "vqtool:sample", "--out", str(tmp_path / "t"), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["images"] == 16 and data["errors"] == 0 and data["vocab_size"] == 1000
    rows = all_rows(tmp_path / "t")
    assert rows[0]["caption"] and len(rows[0]["tokens"]) == 256


@pytest.mark.slow
def test_the_same_bytes_whatever_the_workers_and_batch_size(image_shards, tokenizer, tmp_path):
    """Rows are written in input order (shard, then member) whatever the number of decode
    workers (which read shards side by side, or split one shard between them) and the
    batch size: a re-encode gives byte-identical files, errors included."""
    bad = write_shard(tmp_path / "bad.tar", [("b0", {"png": b"not an image"}),
                                             ("b1", {"png": image_bytes(99)})])  # fmt: skip
    sources = [*image_shards, bad]

    def files(workers: int, batch: int, per_task: int, inputs=sources) -> dict[str, bytes]:
        out = tmp_path / f"w{workers}-b{batch}-t{per_task}-{len(inputs)}"
        r = encode(EncodeConfig(inputs, tokenizer, str(out), batch_size=batch, workers=workers,
                                shards_per_task=per_task))  # fmt: skip
        assert r.errors == (bad in inputs)
        return {p.name: p.read_bytes() for p in sorted(out.glob("part-*"))
                if p.suffix in (".parquet", ".jsonl")}  # fmt: skip

    for per_task in (1, 3):
        first = files(0, 4, per_task)
        assert files(1, 5, per_task) == first
        assert files(2, 3, per_task) == first
    # fewer shards than workers: each worker reads every other member of the one shard
    assert files(2, 3, 1, image_shards[:1]) == files(0, 4, 1, image_shards[:1])
    keys = pq.read_table(tmp_path / "w2-b3-t1-1" / "part-000000.parquet").column("key")
    assert keys.to_pylist() == [f"sample{n:04d}" for n in range(8)]


def test_tasks_are_sized_by_images_and_reruns_keep_the_plan(image_shards, tokenizer, tmp_path):
    """By default a task takes as many shards as hold about --task-images images (counted
    in the first shard's headers); encode.json records the choice, a rerun keeps it, and
    a conflicting --shards-per-task is refused rather than planning other tasks."""
    out = tmp_path / "t"
    r = encode(EncodeConfig(image_shards, tokenizer, str(out), workers=0, task_images=16))
    assert (r.tasks_total, r.images) == (2, 24)  # 8 images per shard: 2 shards per task
    assert any("2 shards per task" in n and "holds 8 images" in n for n in r.notes)
    assert json.loads((out / "encode.json").read_text())["shards_per_task"] == 2
    again = encode(EncodeConfig(image_shards, tokenizer, str(out), workers=0, task_images=100))
    assert (again.tasks_total, again.tasks_skipped) == (2, 2)
    with pytest.raises(EncodeError, match="holds tasks of 2 shard"):
        encode(EncodeConfig(image_shards, tokenizer, str(out), workers=0, shards_per_task=1))
    whole = encode(EncodeConfig(image_shards, tokenizer, str(tmp_path / "u"), workers=0))
    assert whole.tasks_total == 1  # the default, 5,000 images, takes all three shards
