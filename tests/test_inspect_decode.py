"""`vqtool inspect` and `vqtool decode`: codebook health and tokens back to pictures."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from support.data import image_bytes, make_tokenizer, write_shard, write_tokens
from typer.testing import CliRunner

from vqtool.cli.main import app
from vqtool.data.decoding import decode_image
from vqtool.data.images import center_crop
from vqtool.data.sources import expand_sources, iter_samples
from vqtool.metrics.image import psnr
from vqtool.models import Tokenizer
from vqtool.report.checkpoint import codebook_stats
from vqtool.tokens.reader import TokenDataset

runner = CliRunner()
WIDE = {"COLUMNS": "80"}


def inspect_json(path, *extra) -> dict:
    result = runner.invoke(app, ["inspect", str(path), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def known_tokens(tmp_path):
    """10 images of 2x2 tokens over a 16-code vocabulary. Position 0 is always
    code 0; positions 1-3 cycle through codes 1..5. Whole dataset: code 0 x10,
    codes 1..5 x6 each -> 6 used, 10 dead."""
    rows = [[0, 1 + (3 * i) % 5, 1 + (3 * i + 1) % 5, 1 + (3 * i + 2) % 5] for i in range(10)]
    return write_tokens(tmp_path / "tokens", rows, 16, [(2, 2)]), np.array(rows)


def test_inspect_token_dataset_gives_exact_usage(known_tokens):
    folder, rows = known_tokens
    counts = np.bincount(rows.ravel(), minlength=16)
    p = counts[counts > 0] / counts.sum()
    entropy = float(-(p * np.log2(p)).sum())

    report = inspect_json(folder)

    u = report["usage"]
    assert (u["used"], u["dead"], u["tokens"]) == (6, 10, 40)
    assert u["used_share"] == pytest.approx(6 / 16)
    assert u["entropy_bits"] == pytest.approx(entropy)
    assert u["perplexity"] == pytest.approx(2**entropy)
    assert u["max_entropy_bits"] == pytest.approx(4.0)
    assert report["top_codes"][0] == {"code": 0, "count": 10, "share": 0.25}
    assert report["rows"] == 10 and report["tokens_per_image"] == 4
    assert report["bytes_per_token"] == pytest.approx(report["bytes_on_disk"] / 40)
    # position 0 always holds code 0: zero entropy there; others cycle over 5 codes
    grid = report["positions"][0]["entropy_bits"]
    assert grid[0][0] == 0.0
    pos1 = np.bincount(rows[:, 1], minlength=16)
    q = pos1[pos1 > 0] / 10
    assert grid[0][1] == pytest.approx(float(-(q * np.log2(q)).sum()), abs=1e-4)
    assert any("dead codes" in w for w in report["warnings"])
    assert any("only 37.5% of the codes are used" in w for w in report["warnings"])


def test_inspect_json_schema_is_stable(known_tokens):
    report = inspect_json(known_tokens[0])
    assert report["kind"] == "tokens"
    for key in (
        "files rows tokens_per_image tokens bytes_on_disk bytes_per_token done_tasks "
        "unfinished_tasks missing_tasks errors error_examples usage top_codes frequency_curve "
        "top_share levels depths positions metadata warnings"
    ).split():
        assert key in report, key
    assert set(report["usage"]) == set(
        "vocab_size tokens used used_share dead entropy_bits max_entropy_bits perplexity".split()
    )
    assert report["metadata"]["vocab_size"] == 16
    assert report["metadata"]["layout"]["grids"] == [[2, 2]]
    curve = report["frequency_curve"]
    assert curve == sorted(curve, reverse=True) and curve[-1] == 0.0


def test_inspect_renders_in_80_columns_with_warnings(known_tokens):
    result = runner.invoke(app, ["inspect", str(known_tokens[0])], env=WIDE)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    text = result.stdout
    assert "6 of 16 (37.5%)" in text
    assert "warning:" in text and "10 dead codes" in text
    assert "per-position entropy" in text and "rank 1" in text


def test_inspect_levels_and_depths_of_hierarchical_residual_tokens(tmp_path):
    # two levels (1x1 then 2x2), depth 2: T = (1 + 4) * 2 = 10 tokens per image
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 8, size=(20, 10))
    rows[:, 0::2] = rng.integers(0, 4, size=(20, 5))  # depth 0 uses codes 0..3 only
    report = inspect_json(write_tokens(tmp_path / "t", rows, 8, [(1, 1), (2, 2)], depth=2))
    assert [g["name"] for g in report["levels"]] == ["level 0 (1x1)", "level 1 (2x2)"]
    assert [g["name"] for g in report["depths"]] == ["depth 0", "depth 1"]
    assert report["depths"][0]["stats"]["used"] == len(np.unique(rows[:, 0::2]))
    assert report["depths"][1]["stats"]["used"] == len(np.unique(rows[:, 1::2]))
    assert report["levels"][1]["stats"]["tokens"] == 20 * 8
    assert [p["grid"] for p in report["positions"]] == [[1, 1], [2, 2]]


def test_inspect_reports_unfinished_and_missing_tasks(tmp_path, known_tokens):
    folder, rows = known_tokens
    write_tokens(folder, rows, 16, [(2, 2)], name="part-000001")
    (folder / "part-000001.done.json").unlink()  # killed between rename and marker
    (folder / "encode.json").write_text(
        json.dumps({"tasks": ["part-000000", "part-000001", "part-000002"]})
    )
    report = inspect_json(folder)
    assert report["rows"] == 10  # the unfinished file is not counted
    assert report["unfinished_tasks"] == ["part-000001"]
    assert report["missing_tasks"] == ["part-000002"]


def test_inspect_plot_writes_a_png(known_tokens, tmp_path):
    out = tmp_path / "usage.png"
    result = runner.invoke(app, ["inspect", str(known_tokens[0]), "--plot", str(out)])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (900, 480)


def test_inspect_checkpoint_codebook_facts(tmp_path):
    path = make_tokenizer(tmp_path / "vq.safetensors", codebook_size=32)
    tok = Tokenizer.load(path)
    q = tok.net.quantizers[0]
    q.embed.data[5] = q.embed.data[4]  # two identical codes
    counts = torch.zeros(32, dtype=torch.long)
    counts[:4] = torch.tensor([40, 30, 20, 10])
    tok.save(path, extra_tensors={"usage.counts": counts})

    r = inspect_json(path)
    assert r["kind"] == "checkpoint" and r["family"] == "vq"
    assert r["vocab_size"] == 32 and r["downsample"] == 2 and r["image_size"] == 16
    assert r["tokens_per_image"] == 64
    assert r["bits_per_image"] == pytest.approx(64 * 5)
    assert r["compression_ratio"] == pytest.approx(16 * 16 * 24 / (64 * 5))
    assert r["parameters"] == sum(p.numel() for p in tok.parameters())
    book = r["codebooks"][0]
    assert book["codes"] == 32 and book["near_duplicates"] == 2
    assert book["duplicate_examples"] == [[4, 5]]
    assert r["usage"]["used"] == 4 and r["usage"]["dead"] == 28
    assert any("near-duplicate" in w for w in r["warnings"])
    text = runner.invoke(app, ["inspect", path], env=WIDE).stdout
    assert max(len(line) for line in text.splitlines()) <= 80 and "codebooks" in text


def test_codebook_stats_match_brute_force():
    v = torch.randn(50, 3)
    s = codebook_stats("c", v)
    d = torch.cdist(v.double(), v.double())
    off = d[~torch.eye(50, dtype=torch.bool)]
    assert s.pairwise_mean == pytest.approx(float(off.mean()))
    nn = (d + torch.eye(50, dtype=torch.float64) * 1e9).min(1).values
    assert s.nearest_min == pytest.approx(float(nn.min()), rel=1e-5)
    assert s.norm_max == pytest.approx(float(v.norm(dim=1).max()), rel=1e-6)


def test_inspect_fsq_checkpoint_names_its_implicit_grid():
    r = inspect_json("vqtool:fsq-f4-64")
    assert r["implicit_codebook"] == "FSQ grid, levels [8, 5, 5, 5] (1,000 codes)"
    assert r["usage"]["tokens"] > 0  # the bundled checkpoint carries its training counts


def test_inspect_image_shards(tmp_path):
    shard = write_shard(
        tmp_path / "s.tar",
        [
            ("a", {"jpg": image_bytes(0, (40, 30), "JPEG"), "txt": b"hi"}),
            ("b", {"png": image_bytes(1, (300, 200))}),
            ("c", {"jpg": b"not an image"}),
        ],
    )
    r = inspect_json(shard)
    assert r["kind"] == "images"
    assert (r["samples"], r["decodable"], r["undecodable"]) == (3, 2, 1)
    assert r["formats"] == {"JPEG": 1, "PNG": 1}
    assert r["width"] == {"min": 40, "median": 170.0, "max": 300}
    assert r["short_side_histogram"]["0-63"] == 1 and r["short_side_histogram"]["128-255"] == 1
    assert r["with_caption"] == 1 and r["undecodable_examples"][0]["key"] == "c"
    bad = runner.invoke(app, ["inspect", shard, "--plot", str(tmp_path / "x.png")])
    assert bad.exit_code == 2 and "needs a token dataset" in bad.stderr


def test_inspect_refuses_unknown_paths_in_one_line(tmp_path):
    result = runner.invoke(app, ["inspect", str(tmp_path / "nothing.tar")])
    assert result.exit_code == 2 and "no such file" in result.stderr
    (tmp_path / "w.pt").write_bytes(b"x")
    result = runner.invoke(app, ["inspect", str(tmp_path / "w.pt")])
    assert result.exit_code == 2 and "not a readable PyTorch checkpoint" in result.stderr


# ----------------------------------------------------------------------------- decode


def test_encode_then_decode_round_trip_on_the_sample(sample_tokens, tmp_path):
    out = tmp_path / "pictures"
    result = runner.invoke(
        app,
        ["decode", str(sample_tokens), "--out", str(out), "--limit", "4", "--json",
         "--compare", "vqtool:sample"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    assert len(r["images"]) == 4
    # the decoded pictures equal the tokenizer's reconstruction of the same preprocessed images
    tok = Tokenizer.load("vqtool/assets/tokenizer-fsq-f4-64.safetensors")
    wanted = {i["key"]: i for i in r["images"]}
    sources = {}
    for s in iter_samples(expand_sources(["vqtool/assets/sample-000000.tar"])[0]):
        if s.key in wanted:
            sources[s.key] = center_crop(decode_image(s.data, 64), 64)
    keys = list(wanted)
    images = torch.stack([sources[k] for k in keys])
    expected = psnr(tok.reconstruct(images), images.float() / 255)
    for k, e in zip(keys, expected):
        assert wanted[k]["psnr"] == pytest.approx(float(e), abs=0.05)
        pair = Image.open(wanted[k]["path"])
        assert pair.size == (64 * 2 + 2, 64)  # source | decoded
    assert r["mean_psnr"] > 15


def test_decode_by_keys_rows_grid_and_stdin(sample_tokens, tmp_path):
    ds = TokenDataset.open(sample_tokens)
    keys, tokens = ds.select(rows=(2, 5))
    assert len(keys) == 3
    by_key = runner.invoke(
        app, ["decode", str(sample_tokens), "--keys", f"{keys[2]},{keys[0]}", "--out",
              str(tmp_path / "k"), "--json"],
    )  # fmt: skip
    assert by_key.exit_code == 0, by_key.output
    assert [i["key"] for i in json.loads(by_key.stdout)["images"]] == [keys[2], keys[0]]

    grid = tmp_path / "grid.png"
    result = runner.invoke(app, ["decode", str(sample_tokens), "--rows", "2:5", "--grid",
                                 "--out", str(grid)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert Image.open(grid).size == (2 * 64 + 2, 2 * 64 + 2)  # 3 images in a 2x2 grid

    single = tmp_path / "one.png"
    result = runner.invoke(
        app, ["decode", "-", "--out", str(single)], input=json.dumps(tokens[1].tolist())
    )
    assert result.exit_code == 0, result.output
    from_file = Image.open(tmp_path / "k" / f"{keys[0]}.png")
    tok = Tokenizer.load("vqtool/assets/tokenizer-fsq-f4-64.safetensors")
    expected = tok.decode(torch.from_numpy(tokens[1:2].astype(np.int64)))[0]
    got = torch.from_numpy(np.array(Image.open(single))).permute(2, 0, 1).float() / 255
    assert (got - expected).abs().max() <= 1 / 255 + 1e-6
    assert from_file.size == (64, 64)


def test_decode_refuses_tokens_of_another_tokenizer(sample_tokens, tmp_path):
    other = make_tokenizer(tmp_path / "other.safetensors", codebook_size=64)
    result = runner.invoke(
        app, ["decode", str(sample_tokens), "--tokenizer", other, "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 2
    msg = result.stderr
    assert "vocabulary 1000" in msg and "vocabulary 64" in msg
    assert "[[16, 16]]" in msg and "[[8, 8]]" in msg
    assert "Traceback" not in result.output


def test_decode_bad_requests_are_one_line_errors(sample_tokens, tmp_path):
    cases = [
        (["--keys", "nope"], "not in the token files"),
        (["--rows", "5"], "A:B"),
        (["--rows", "100:200"], "past the end"),
        (["--limit", "2", "--rows", "0:1"], "one of --keys"),
    ]
    for extra, msg in cases:
        result = runner.invoke(
            app, ["decode", str(sample_tokens), "--out", str(tmp_path / "o"), *extra]
        )
        assert result.exit_code == 2, (extra, result.output)
        assert msg in result.output, (extra, result.output)
    result = runner.invoke(app, ["decode", "-", "--out", str(tmp_path / "s.png")], input="[1, 2")
    assert result.exit_code == 2 and "not JSON" in result.stderr
    many = runner.invoke(app, ["decode", str(sample_tokens), "--out", str(tmp_path / "a.png")])
    assert many.exit_code == 2 and "--grid" in many.stderr


def test_entropy_of_uniform_codes_is_log2_vocab(tmp_path):
    rows = np.arange(64).reshape(16, 4) % 16
    r = inspect_json(write_tokens(tmp_path / "u", rows, 16, [(2, 2)]))
    assert r["usage"]["entropy_bits"] == pytest.approx(math.log2(16))
    assert r["usage"]["dead"] == 0 and r["warnings"] == []


def test_decode_refuses_another_tokenizer_of_the_same_layout_unless_forced(sample_tokens, tmp_path):
    other = tmp_path / "retrained.safetensors"
    tok = Tokenizer.load("vqtool/assets/tokenizer-fsq-f4-64.safetensors")
    tok.save(other, {"vqtool.note": "same layout, another file"})
    args = ["decode", str(sample_tokens), "--tokenizer", str(other), "--limit", "1"]
    refused = runner.invoke(app, [*args, "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2
    # the error names the tokenizer the tokens were written with, as it was given
    assert "encoded with tokenizer vqtool:fsq-f4-64" in refused.stderr
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "x"), "--json", "--force"])
    assert result.exit_code == 0, result.output
    assert "pictures may be meaningless" in json.loads(result.stdout)["warnings"][0]


@pytest.mark.slow
def test_decode_and_embeddings_use_the_recorded_tokenizer_from_anywhere(tmp_path, monkeypatch):
    """Tokens name the tokenizer that wrote them (its path as given, its absolute path,
    sha256): decode and export --embeddings use it without --tokenizer, from another working
    directory too, and say in one line which file is missing when it is gone."""
    import shutil

    from test_pretrained import random_state_dict

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    torch.save(random_state_dict("maskgit_vqgan"), work / "maskgit.bin")
    args = ["--image-size", "32", "--out", "tokens", "--workers", "0"]
    result = runner.invoke(app, ["encode", "vqtool:sample", "--tokenizer", "maskgit.bin", *args])
    assert result.exit_code == 0, result.output
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # "maskgit.bin" as recorded is not here
    decoded = runner.invoke(app, ["decode", str(work / "tokens"), "--out", "one.png",
                                  "--limit", "1"])  # fmt: skip
    assert decoded.exit_code == 0, decoded.output
    assert "detected a maskgit checkpoint" in decoded.stderr
    (elsewhere / "codes.toml").write_text('name = "codes"\nimage_offset = 0\n')
    exported = runner.invoke(app, ["export", str(work / "tokens"), "--layout", "codes.toml",
                                   "--format", "stream", "--out", "lm",
                                   "--embeddings", "codes.safetensors"])  # fmt: skip
    assert exported.exit_code == 0, exported.output
    assert (elsewhere / "codes.safetensors").is_file()
    moved = tmp_path / "moved"
    shutil.move(str(work), str(moved))  # the tokenizer travels beside the tokens
    decoded = runner.invoke(app, ["decode", str(moved / "tokens"), "--out", "two.png",
                                  "--limit", "1"])  # fmt: skip
    assert decoded.exit_code == 0, decoded.output
    (moved / "maskgit.bin").unlink()
    gone = runner.invoke(app, ["decode", str(moved / "tokens"), "--out", "three.png"])
    assert gone.exit_code == 2 and "Traceback" not in gone.output
    assert "maskgit.bin (sha256 " in gone.stderr and "pass it with --tokenizer" in gone.stderr
