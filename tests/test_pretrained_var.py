"""VAR's multi-scale VQ-VAE: its published file's names, a pyramid of scales as the token
row, VAR's preprocessing; against VAR's own code: benchmarks/pretrained_parity.py
(`--only var`: 0 differing tokens, bit-identical decodes, equal saved pictures)."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from support.data import image_bytes
from typer.testing import CliRunner

from vqtool.cli.main import app
from vqtool.data.images import encode_pixels
from vqtool.models import Tokenizer, TokenizerConfig
from vqtool.pretrained.convert import load_foreign
from vqtool.pretrained.families import REGISTRY
from vqtool.tokens.reader import TokenDataset

runner = CliRunner()

SMALL = {
    "model": {"architecture": "var", "channels": 32, "channel_mult": [1, 1, 2, 2, 4],
              "num_res_blocks": 1, "z_channels": 8, "phi_convs": 4},
    "quantizer": {"kind": "vq", "codebook_size": 64, "ema_decay": None, "kmeans_init": False,
                  "distance": "addmm"},
    "image_size": 256,
}  # fmt: skip


@pytest.fixture(scope="module")
def var_file(tmp_path_factory):
    """A small VAR VQ-VAE (32 channels, 64 codes, VAR's ten scales) in VAR's own names,
    saved as the release saves vae_ch160v4096z32.pth: a bare state_dict."""
    torch.manual_seed(0)
    ours = Tokenizer(TokenizerConfig.from_dict(SMALL)).state_dict()
    mapping = REGISTRY["var"].mapping(SMALL)
    sd = {t: ours[m].clone() for t, m in mapping.items() if m in ours}
    sd["quantize.ema_vocab_hit_SV"] = torch.zeros(10, 64)  # a training statistic
    path = tmp_path_factory.mktemp("var") / "vae_ch160v4096z32.pth"
    torch.save(sd, path)
    return path


def test_var_file_is_recognised_and_its_row_is_a_pyramid_of_scales(var_file):
    tok, info = load_foreign(var_file)
    assert info.family == "var" and info.image_size == 256
    assert [tuple(g) for g in tok.layout.to_dict()["grids"]] == [
        (p, p) for p in (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    ]
    assert tok.layout.tokens_per_image == 680 and tok.vocab_size == 64
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 256, 256), np.uint8))
    tokens = tok.encode(x)
    assert tokens.shape == (2, 680)
    assert torch.equal(tokens[:1], tok.encode(x[:1]))
    with pytest.raises(ValueError, match="VAR's tokenizer runs at 256 or 512 px"):
        load_foreign(var_file, image_size=384)


def test_var_preprocessing_is_its_lanczos_resize_to_nine_eighths_then_centre_crop():
    data = image_bytes(5, size=(300, 200))
    got = encode_pixels(data, 256, "var").pixels
    img = Image.open(io.BytesIO(data)).convert("RGB")
    # torchvision Resize(288): short side 288, long side int(288 * 300 / 200) = 432
    mid = img.resize((432, 288), Image.Resampling.LANCZOS)
    left, top = round((432 - 256) / 2), round((288 - 256) / 2)
    want = np.asarray(mid.crop((left, top, left + 256, top + 256)))
    assert np.array_equal(got.permute(1, 2, 0).numpy(), want)


@pytest.mark.slow
def test_var_encode_inspect_decode_round_trip(var_file, tmp_path):
    out = tmp_path / "tokens"
    enc = runner.invoke(app, ["encode", "vqtool:sample", "--tokenizer", str(var_file), "--out",
                              str(out), "--workers", "0", "--json"])  # fmt: skip
    assert enc.exit_code == 0, enc.output
    assert json.loads(enc.stdout)["tokens"] == 16 * 680
    meta = json.loads((out / "encode.json").read_text())
    assert meta["layout"]["grids"][0] == [1, 1] and meta["layout"]["tokens_per_image"] == 680
    assert meta["preprocessing"]["orientation"] == "stored"  # VAR's pil_loader
    report = json.loads(runner.invoke(app, ["inspect", str(out), "--json"]).stdout)
    assert [g["name"] for g in report["levels"]][:2] == ["level 0 (1x1)", "level 1 (2x2)"]
    assert len(report["levels"]) == 10  # usage per scale
    dec = runner.invoke(app, ["decode", str(out), "--out", str(tmp_path / "png"), "--limit", "2",
                              "--json"])  # fmt: skip
    assert dec.exit_code == 0, dec.output
    images = json.loads(dec.stdout)["images"]
    tok, _ = load_foreign(var_file)
    keys, rows = TokenDataset.open(str(out)).select([images[0]["key"]], None, None)
    want = tok.decode_uint8(torch.as_tensor(rows[0].astype(np.int64))[None])[0]
    assert np.array_equal(np.array(Image.open(images[0]["path"])), want.permute(1, 2, 0).numpy())


@pytest.mark.slow
def test_decode_scales_draws_the_picture_after_each_scale(var_file, tmp_path, sample_tokens):
    out = tmp_path / "tokens"
    enc = runner.invoke(app, ["encode", "vqtool:sample", "--tokenizer", str(var_file), "--out",
                              str(out), "--workers", "0", "-q"])  # fmt: skip
    assert enc.exit_code == 0, enc.output
    strip = tmp_path / "scales.png"
    dec = runner.invoke(app, ["decode", str(out), "--scales", "--limit", "1", "--out", str(strip)])
    assert dec.exit_code == 0, dec.output
    picture = np.array(Image.open(strip))
    assert picture.shape == (256, 10 * 256 + 9 * 2, 3)  # ten scales, 2-px white gaps
    full = tmp_path / "full.png"
    whole = runner.invoke(app, ["decode", str(out), "--limit", "1", "--out", str(full)])
    assert whole.exit_code == 0, whole.output
    assert np.array_equal(picture[:, -256:], np.array(Image.open(full)))  # all scales: decode
    assert not np.array_equal(picture[:, :256], picture[:, -256:])  # one scale: coarser
    grid_rows = runner.invoke(app, ["decode", str(sample_tokens), "--scales", "--out",
                                    str(tmp_path / "x.png"), "--limit", "1"])  # fmt: skip
    assert grid_rows.exit_code == 2 and "--scales needs pyramid tokens" in grid_rows.stderr
