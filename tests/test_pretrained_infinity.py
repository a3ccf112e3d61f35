"""Infinity's bitwise multi-scale VAE: its release's names (wrapped or plain, under `vae`), a
pyramid of d-bit codes packed into one token per position, its aspect-ratio templates as
`--resize templates:PIXELS`; against Infinity's own code: benchmarks/parity_infinity.py
(0 differing tokens, bit-identical decodes, equal saved pictures for d16, d24, d32)."""

import io
import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from support.data import image_bytes
from typer.testing import CliRunner

from vqtool.cli.main import app
from vqtool.data.images import encode_pixels, native_pixels
from vqtool.data.sources import expand_sources, iter_samples
from vqtool.data.templates import SCHEDULES, template_pixels
from vqtool.models import Tokenizer, TokenizerConfig
from vqtool.pretrained.convert import load_foreign
from vqtool.pretrained.families import REGISTRY
from vqtool.tokens.reader import TokenDataset

runner = CliRunner()
#: encode the sample shard at 256 px, the 1:1 template's 7 scales (0.06M)
SQUARE = ["encode", "vqtool:sample", "--workers", "0", "--image-size", "256", "--resize",
          "square", "-q"]  # fmt: skip


def small(bits: int) -> dict:
    return {
        "model": {"architecture": "infinity", "channels": 32, "channel_mult": [1, 1, 2, 2, 4],
                  "num_res_blocks": 1, "bits": bits},
        "quantizer": {"kind": "bsq", "codebook_size": 2**bits, "bit_order": "msb"},
        "image_size": 256,
    }  # fmt: skip


def release(folder, bits: int, wrapped: bool = True):
    """A small Infinity VAE saved as the release saves its files: `{"vae": state_dict}` of
    its module, every conv and norm wrapped (`.conv.`, `.norm.`), the bit-weight buffer
    under both names the module holds it (`quantizer`, and its alias `quantize`)."""
    torch.manual_seed(bits)
    cfg = small(bits)
    ours = Tokenizer(TokenizerConfig.from_dict(cfg)).state_dict()
    sd = {t: ours[m].clone() for t, m in REGISTRY["infinity"].mapping(cfg).items() if m in ours}
    if wrapped:
        norms = re.compile(r"(norm1|norm2|norm_out)\.(weight|bias)$")
        convs = re.compile(r"\.(weight|bias)$")
        sd = {(norms.sub(r"\1.norm.\2", k) if norms.search(k) else convs.sub(r".conv.\1", k)): v
              for k, v in sd.items()}  # fmt: skip
    mask = 2 ** torch.arange(bits - 1, -1, -1)
    sd.update({"quantizer.lfq.mask": mask, "quantize.lfq.mask": mask})
    path = folder / f"infinity_vae_d{bits}.pth"
    torch.save({"vae": sd}, path)
    return path


@pytest.fixture(scope="module")
def d16(tmp_path_factory):
    return release(tmp_path_factory.mktemp("infinity"), 16)


@pytest.fixture(scope="module")
def rows16(d16, tmp_path_factory):
    """vqtool:sample encoded with Infinity's templates at 0.06M (images of their own
    shapes, each a pyramid ending at its template's grid)."""
    out = tmp_path_factory.mktemp("rows16") / "tokens"
    enc = runner.invoke(app, ["encode", "vqtool:sample", "--tokenizer", str(d16), "--out", str(out),
                              "--resize", "templates:0.06M", "--workers", "0", "-q"])  # fmt: skip
    assert enc.exit_code == 0, enc.output
    return out


def test_release_is_recognised_wrapped_or_plain_and_its_row_is_a_pyramid(d16, tmp_path):
    tok, info = load_foreign(d16, image_size=256)
    assert info.family == "infinity" and tok.vocab_size == 2**16
    assert [tuple(g) for g in tok.layout.to_dict()["grids"]] == [
        (1, 1), (2, 2), (4, 4), (6, 6), (8, 8), (12, 12), (16, 16)
    ]  # fmt: skip
    assert tok.layout.tokens_per_image == 521
    assert load_foreign(d16)[1].image_size == 1024  # Infinity 2B's pixel class, 1M
    plain, _ = load_foreign(release(tmp_path, 16, wrapped=False), image_size=256)
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 256, 256), np.uint8))
    assert torch.equal(tok.encode(x), plain.encode(x))
    assert torch.equal(tok.encode(x)[1:], tok.encode(x[1:]))  # a row does not see its batch
    with pytest.raises(ValueError, match="square template ends at 256, 512, 768, 1024 px"):
        load_foreign(d16, image_size=384)


def test_templates_crop_each_image_to_its_nearest_ratio_with_lanczos():
    data = image_bytes(5, size=(300, 200))  # height / width 0.667: the 2:3 template
    assert template_pixels(200, 300, "0.06M") == (224, 336)
    got = native_pixels(data, ("templates", "0.06M"), 16, "infinity").pixels
    img = Image.open(io.BytesIO(data)).convert("RGB")
    # Infinity's transform: width binds (300/200 > 336/224 is false), height int(336 / 1.5)
    mid = img.resize((336, 224), Image.Resampling.LANCZOS)
    assert np.array_equal(got.permute(1, 2, 0).numpy(), np.asarray(mid))
    tall = native_pixels(image_bytes(6, size=(100, 290)), ("templates", "1M"), 16, "infinity")
    assert tuple(tall.pixels.shape[1:]) == (111 * 16, 37 * 16)  # 2.9: the 1:3 template at 1M


@pytest.mark.slow
@pytest.mark.parametrize("bits", [16, 24, 32])
def test_bitwise_codes_keep_their_bits(bits, tmp_path):
    """Every position's d bits, packed most significant first, come back from the token
    files exactly (uint16 for d16, uint32 for d24 and d32)."""
    path = release(tmp_path, bits)
    out = tmp_path / "tokens"
    enc = runner.invoke(app, [*SQUARE, "--tokenizer", str(path), "--out", str(out)])
    assert enc.exit_code == 0, enc.output
    table = pq.read_table(next(out.glob("*.parquet")))
    stored = str(table.schema.field("tokens").type.value_type)
    assert stored == ("uint16" if bits == 16 else "uint32")
    tok, _ = load_foreign(path, image_size=256)
    keys, rows = TokenDataset.open(str(out)).select(None, None, 2)
    samples = {s.key: s for s in iter_samples(expand_sources(["vqtool:sample"])[0])}
    x = torch.stack([encode_pixels(samples[k].data, 256, "infinity").pixels for k in keys])
    levels = tok.net.quantize(tok.normalize(x))
    want = torch.cat([(lv.quantized > 0).permute(0, 2, 3, 1).reshape(2, -1, bits)
                      for lv in levels], 1)  # fmt: skip
    codes = torch.as_tensor(np.stack(rows).astype(np.int64))
    shifts = torch.arange(bits - 1, -1, -1)
    assert torch.equal((codes.unsqueeze(-1) >> shifts) & 1 == 1, want)


@pytest.mark.slow
def test_rows_of_their_own_shapes_round_trip_inspect_decode_export(d16, rows16, tmp_path):
    meta = json.loads((rows16 / "encode.json").read_text())
    assert meta["preprocessing"]["policy"] == "templates:0.06M"
    assert meta["layout"]["schedules"]["14x21"] == [list(g) for g in SCHEDULES[(14, 21)]]
    report = json.loads(runner.invoke(app, ["inspect", str(rows16), "--json"]).stdout)
    assert report["bits"]["bits"] == 16 and len(report["bits"]["ones"]) == 16
    assert 0 <= report["bits"]["correlation_max"] <= 1
    assert [g["name"] for g in report["levels"]] == [f"scale {i}" for i in range(7)]
    assert len(report["bits_per_level"]) == 7  # usage and bits per scale, from the schedules
    dec = runner.invoke(app, ["decode", str(rows16), "--out", str(tmp_path / "png"),
                              "--limit", "1", "--json"])  # fmt: skip
    assert dec.exit_code == 0, dec.output
    first = json.loads(dec.stdout)["images"][0]
    tok, _ = load_foreign(d16)
    _, rows, grids = TokenDataset.open(str(rows16)).select_native([first["key"]])
    row = torch.as_tensor(rows[0].astype(np.int64))[None]
    want = tok.decode_uint8(row, grids[0])[0].permute(1, 2, 0).numpy()
    assert np.array_equal(np.array(Image.open(first["path"])), want)
    h, w = (v * 16 for v in grids[0])
    strip = tmp_path / "scales.png"
    scales = runner.invoke(app, ["decode", str(rows16), "--scales", "--keys", first["key"],
                                 "--out", str(strip)])  # fmt: skip
    assert scales.exit_code == 0, scales.output
    assert Image.open(strip).size == (7 * w + 6 * 2, h)  # 7 scales at 0.06M
    (tmp_path / "images.toml").write_text('name = "images"\nsource = "the codes alone"\n'
                                          'image_offset = 0\nloss = "image"\n')  # fmt: skip
    for fmt in ("megatron", "stream", "parquet"):
        out = tmp_path / f"export-{fmt}"
        ex = runner.invoke(app, ["export", str(rows16), "--layout", str(tmp_path / "images.toml"),
                                 "--format", fmt, "--out", str(out)])  # fmt: skip
        assert ex.exit_code == 0, ex.output
    stream = tmp_path / "export-stream"
    ids = np.fromfile(stream / "part-000000.bin", dtype=np.uint16)  # the rows' codes, in order
    docs = pq.read_table(stream / "part-000000.docs.parquet").column("key").to_pylist()
    _, every, _ = TokenDataset.open(str(rows16)).select_native(docs)
    assert np.array_equal(ids, np.concatenate(every).astype(np.uint16))


@pytest.mark.slow
def test_a_prior_refuses_packed_bits_it_cannot_embed(tmp_path):
    path = release(tmp_path, 32)
    out = tmp_path / "tokens"
    enc = runner.invoke(app, [*SQUARE, "--tokenizer", str(path), "--out", str(out)])
    assert enc.exit_code == 0, enc.output
    train = runner.invoke(app, ["train", "prior-var", "--data", str(out), "--out",
                                str(tmp_path / "prior"), "--steps", "1"])  # fmt: skip
    assert train.exit_code == 2
    assert "a prior over 4,294,967,296 codes" in train.stderr and "Traceback" not in train.output


def test_convert_writes_a_tokenizer_that_keeps_its_templates_and_tokens(d16, tmp_path):
    out = tmp_path / "infinity.safetensors"
    res = runner.invoke(app, ["convert", "infinity", str(d16), "--out", str(out),
                              "--image-size", "256", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["policy"] == "templates:1M"
    converted, (direct, _) = Tokenizer.load(out), load_foreign(d16, image_size=256)
    x = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (1, 3, 336, 224), np.uint8))
    assert torch.equal(converted.encode_grid(x)[0], direct.encode_grid(x)[0])
