"""Native aspect ratio: `encode --resize none|smart:MIN:MAX` keeps each image's shape,
records each row's grid, buckets a batch by size without changing a token, and the tools
that read rows (decode, inspect, export) follow each row's grid; priors, which need one
grid, refuse."""

import json
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from support.data import image_bytes, write_shard
from typer.testing import CliRunner

from vqtool.assets import resolve
from vqtool.cli.main import app
from vqtool.data.images import native_pixels
from vqtool.data.policies import smart_size
from vqtool.errors import DecodeError
from vqtool.models import Tokenizer

runner = CliRunner()
SIZES = [(64, 48), (48, 64), (64, 48), (80, 32), (37, 53), (64, 48), (30, 70)]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    samples = [(f"im{i}", {"png": image_bytes(i, size=s)}) for i, s in enumerate(SIZES)]
    shard = write_shard(root / "mixed-000000.tar", samples)
    out = root / "tok"
    result = run("encode", shard, "--out", out, "--resize", "none", "--workers", 0,
                 "--batch-size", 8, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    return root, shard, out


@pytest.mark.slow
def test_emu3_smart_resize_on_many_sizes():
    """Against transformers' port of Emu3's rule where the two agree: the original
    (emu3/tokenizer/image_processing_emu3visionvq.py, which vqtool follows and
    benchmarks/pretrained_parity.py runs beside it) also refuses aspect ratios above 5 and
    sides below the factor, where the port allows 200 and clamps."""
    emu3 = pytest.importorskip("transformers.models.emu3.image_processing_emu3")
    rng = random.Random(0)
    pairs = [(rng.randint(1, 3000), rng.randint(1, 3000)) for _ in range(400)]
    pairs += [(512, 512), (1024, 1024), (8, 8), (7, 100), (100, 501), (100, 500), (2048, 410)]
    checked = refused = 0
    for h, w in pairs:
        if min(h, w) < 8 or max(h, w) / min(h, w) > 5:  # the original's refusals
            with pytest.raises(DecodeError):
                smart_size(h, w, 8, 512 * 512, 1024 * 1024)
            refused += 1
            continue
        want = emu3.smart_resize(h, w, factor=8, min_pixels=512 * 512, max_pixels=1024 * 1024)
        assert smart_size(h, w, 8, 512 * 512, 1024 * 1024) == tuple(want), (h, w)
        checked += 1
    assert checked >= 200 and refused >= 10


def test_none_keeps_each_shape_and_records_each_grid(mixed):
    _, shard, out = mixed
    table = pq.read_table(out / "part-000000.parquet")
    tok = Tokenizer.load(resolve("vqtool:fsq-f4-64"))
    rows = table.to_pylist()
    assert [r["key"] for r in rows] == [f"im{i}" for i in range(len(SIZES))]  # input order
    for r, (w, h) in zip(rows, SIZES):
        pixels = native_pixels(image_bytes(int(r["key"][2:]), size=(w, h)), ("none",), 4).pixels
        alone, grid = tok.encode_grid(pixels[None])  # the image on its own, no bucket
        assert (r["grid_h"], r["grid_w"]) == grid and len(r["tokens"]) == grid[0] * grid[1]
        assert r["tokens"] == alone[0].tolist()
    meta = json.loads((out / "encode.json").read_text())
    assert meta["preprocessing"]["policy"] == "none" and meta["preprocessing"]["image_size"] is None


def test_smart_policy_resizes_to_emu3_sizes(tmp_path):
    samples = [(f"im{i}", {"png": image_bytes(i, size=s)}) for i, s in enumerate(SIZES[:4])]
    shard = write_shard(tmp_path / "s-000000.tar", samples)
    result = run("encode", shard, "--out", tmp_path / "tok", "--resize", "smart:1024:4096",
                 "--workers", 0, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = pq.read_table(tmp_path / "tok" / "part-000000.parquet").to_pylist()
    for r, (w, h) in zip(rows, SIZES):
        sh, sw = smart_size(h, w, 4, 1024, 4096)
        assert (r["grid_h"], r["grid_w"]) == (sh // 4, sw // 4)


def test_decode_and_inspect_follow_each_rows_grid(mixed, tmp_path):
    _, _, out = mixed
    result = run("decode", out, "--out", tmp_path / "png", "--json")
    assert result.exit_code == 0, result.output
    from PIL import Image

    sizes = [Image.open(i["path"]).size for i in json.loads(result.stdout)["images"]]
    rows = pq.read_table(out / "part-000000.parquet").to_pylist()
    assert sizes == [(4 * r["grid_w"], 4 * r["grid_h"]) for r in rows]
    grid = run("decode", out, "--out", tmp_path / "g.png", "--grid")
    assert grid.exit_code == 2 and "--grid needs pictures of one size" in grid.stderr
    report = run("inspect", out, "--json")
    assert report.exit_code == 0, report.output
    grids = json.loads(report.stdout)["grids"]
    assert grids["12x16"] == 3 and sum(grids.values()) == len(SIZES)


def test_tools_that_need_one_grid_refuse_in_one_line(mixed, tmp_path):
    _, _, out = mixed
    prior = run("train", "prior-ar", "--data", out, "--steps", 1, "--out", tmp_path / "r")
    assert prior.exit_code == 2 and "a prior needs one token grid" in prior.stderr
    assert "Traceback" not in prior.output
    bad = run("encode", "vqtool:sample", "--out", tmp_path / "t", "--resize", "smart:9")
    assert bad.exit_code == 2 and "--resize 'smart:9'" in bad.stderr


def test_bucketing_gives_the_tokens_of_one_image_at_a_time():
    tok = Tokenizer.load(resolve("vqtool:fsq-f4-64"))
    x = torch.randint(0, 256, (3, 3, 40, 56), dtype=torch.uint8)
    together, grid = tok.encode_grid(x)
    assert grid == (10, 14)
    apart = torch.cat([tok.encode_grid(x[i : i + 1])[0] for i in range(3)])
    assert torch.equal(together, apart)
    assert np.array_equal(tok.decode(together[:1], grid).shape, (1, 3, 40, 56))


def test_export_writes_each_rows_grid_and_decodes_back(mixed, tmp_path):
    """Emu3's sequence carries the grid as text ("H*W") and ends every grid row with
    <|extra_200|>: with rows of their own grids, each document follows its row's."""
    from support.data import write_text_tokenizer

    from vqtool.lm.exported import ExportSet

    _, _, out = mixed
    rows = pq.read_table(out / "part-000000.parquet").to_pylist()
    numbers = sorted({str(v) for r in rows for v in (r["grid_h"], r["grid_w"])})
    added = ["<|extra_203|>", "<|extra_204|>", "<|image start|>", "<|image end|>",
             "<|image token|>", "<|extra_200|>", "<|extra_201|>"]  # fmt: skip
    visual = [f"<|visual token {i:06d}|>" for i in range(1000)]
    words = ["[UNK]", "*", *numbers]
    text = write_text_tokenizer(tmp_path / "emu3.json", words, added + visual)
    ex = tmp_path / "ex"
    result = run("export", out, "--layout", "emu3", "--set", "caption=none", "--set",
                 "caption_drop=0.0", "--text-tokenizer", text, "--format", "stream",
                 "--out", ex, "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    data = np.memmap(ex / "part-000000.bin", dtype=np.uint16, mode="r")
    offsets = np.load(ex / "part-000000.offsets.npy")
    base, eol = len(words), len(words) + 5  # ids of <|extra_203|> ... in added order
    for r, a, b in zip(rows, offsets, offsets[1:]):
        doc = data[a:b].tolist()
        h, w = r["grid_h"], r["grid_w"]
        res = [words.index(str(h)), 1, words.index(str(w))]
        assert doc[:6] == [base, base + 2, *res, base + 4]  # BOS, image start, "H*W", token
        assert doc.count(eol) == h and len(doc) == 6 + h * (w + 1) + 2
    keys, codes, _, docs = ExportSet.open(ex).select(limit=len(rows))
    assert [c.tolist() for c in codes] == [r["tokens"] for r in rows]
    assert [(d["grid_h"], d["grid_w"]) for d in docs] == [(r["grid_h"], r["grid_w"]) for r in rows]


def test_buckets_fill_across_loader_batches(tmp_path, monkeypatch):
    """Loader batches that mix sizes do not shrink the network's batches: images wait in
    buckets of one size until a bucket is full (or the task ends), rows stay in order."""
    from vqtool.tokens.encode import EncodeConfig, encode

    sizes = [(64, 48), (48, 64)] * 4  # every loader batch of 2 holds both sizes
    samples = [(f"im{i}", {"png": image_bytes(i, size=s)}) for i, s in enumerate(sizes)]
    shard = write_shard(tmp_path / "alt-000000.tar", samples)
    seen = []
    original = Tokenizer.encode_grid

    def counting(self, images):
        seen.append(len(images))
        return original(self, images)

    monkeypatch.setattr(Tokenizer, "encode_grid", counting)
    encode(EncodeConfig(sources=[shard], tokenizer="vqtool:fsq-f4-64", out=str(tmp_path / "t"),
                        batch_size=4, workers=0, resize="none"))  # fmt: skip
    assert seen == [4, 4]  # two full batches, not eight half ones
    rows = pq.read_table(tmp_path / "t" / "part-000000.parquet").to_pylist()
    assert [r["key"] for r in rows] == [f"im{i}" for i in range(8)]
    assert [(r["grid_h"], r["grid_w"]) for r in rows] == [(12, 16), (16, 12)] * 4
