"""NVIDIA's Cosmos discrete tokenizers (DI8x8, DI16x16; DV4x8x8, DV8x8x8, DV8x16x16 on
one-frame videos) from the released TorchScript files, which vqtool reads without running
them.

Exactness against the original code (SimpleAR's extraction and NVIDIA's networks, all
five variants, bf16 and float32) is measured by `benchmarks/parity_cosmos.py`, which
runs that code beside vqtool; here small models in the published layout, written as the
release writes them (traced TorchScript), run the whole path."""

import io
import json
import pickle
import zipfile

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from support.data import image_bytes, write_shard
from test_pretrained import reference_keys
from torch import nn
from typer.testing import CliRunner

from vqtool.cli.main import app
from vqtool.data.images import encode_pixels
from vqtool.errors import CheckpointError
from vqtool.models import Tokenizer, TokenizerConfig
from vqtool.models.cosmos import CosmosConfig
from vqtool.models.cosmos3d import avg_pool
from vqtool.models.cosmos_net import CosmosDecoder, CosmosEncoder
from vqtool.pretrained.convert import detect_family, load_foreign
from vqtool.pretrained.families import FAMILIES, REGISTRY
from vqtool.pretrained.torchscript import read_torchscript

runner = CliRunner()
LEVELS = [8, 8, 8, 5, 5, 5]


class _Levels(nn.Module):  # the FSQ tables the release's quantizer stores
    def __init__(self):
        super().__init__()
        self.register_buffer("_levels", torch.tensor(LEVELS, dtype=torch.int32))


class _EncoderJit(nn.Module):  # encoder_jit(): encoder, quant_conv, quantizer
    def __init__(self, enc: CosmosEncoder):
        super().__init__()
        self.encoder, self.quant_conv, self.quantizer = enc.encoder, enc.quant_conv, _Levels()

    def forward(self, x):
        return self.quant_conv(self.encoder(x))


class _DecoderJit(nn.Module):  # decoder_jit(): inv_quant, post_quant_conv, decoder
    def __init__(self, dec: CosmosDecoder):
        super().__init__()
        self.inv_quant = nn.Module()
        self.inv_quant.quantizer = _Levels()
        self.post_quant_conv, self.decoder = dec.post_quant_conv, dec.decoder

    def forward(self, codes):
        return self.decoder(self.post_quant_conv(codes))


def release(folder, dims=2, spatial=8, temporal=4, seed=0, files=("encoder", "decoder")):
    """A small Cosmos tokenizer in the published layout (widths 32/32/64, one block per
    stage, Haar patches of 4), written as the release's traced encoder.jit/decoder.jit."""
    c = CosmosConfig(dims=dims, channels=32, channel_mult=[1, 1, 2], num_res_blocks=1,
                     spatial_compression=spatial, temporal_compression=temporal,
                     z_channels=16, compute_dtype="float32")  # fmt: skip
    torch.manual_seed(seed)
    enc, dec = CosmosEncoder(c).eval(), CosmosDecoder(c).eval()
    with torch.no_grad():
        for p in [*enc.parameters(), *dec.parameters()]:
            if p.ndim == 1:  # norms near 1, small biases
                p.copy_(1 + 0.05 * torch.randn_like(p) if p.abs().mean() > 0.5 else p * 0.1)
    folder.mkdir(parents=True, exist_ok=True)
    x = torch.randn(1, 3, 32, 32) if dims == 2 else torch.randn(1, 3, 1, 32, 32)
    z = torch.randn(1, 6, 32 // spatial, 32 // spatial)
    z = z if dims == 2 else z.unsqueeze(2)
    if "encoder" in files:
        torch.jit.save(torch.jit.trace(_EncoderJit(enc), x), str(folder / "encoder.jit"))
    if "decoder" in files:
        torch.jit.save(torch.jit.trace(_DecoderJit(dec), z), str(folder / "decoder.jit"))
    return folder


@pytest.mark.slow
def test_torchscript_tensors_are_read_without_running_the_archive(tmp_path):
    folder = release(tmp_path / "Cosmos-0.1-Tokenizer-DI8x8")
    ours = read_torchscript(folder / "encoder.jit")
    theirs = torch.jit.load(str(folder / "encoder.jit")).state_dict()
    assert set(ours) == set(theirs)  # non-persistent buffers (wavelet taps) included
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert ours["quantizer._levels"].tolist() == LEVELS


def test_torchscript_with_any_other_global_is_refused(tmp_path):
    """A data.pkl naming a callable outside the allow-list (here os.system) is refused
    before anything is called."""

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("touch " + str(tmp_path / "ran"),))

    path = tmp_path / "evil.jit"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"w": Evil()}, protocol=2))
        z.writestr("evil/code/__torch__.py", "")
    with pytest.raises(CheckpointError, match="posix.system|os.system|nt.system"):
        read_torchscript(path)
    assert not (tmp_path / "ran").exists()


def test_published_key_lists_are_detected_and_map_one_to_one():
    """DI16x16 and DV8x16x16 as the released files hold them (the original's encoder_jit()
    and decoder_jit(): 83.7M and 112.5M parameters), in front of taming, whose names the
    image tokenizer shares."""
    for name, video, params in (("cosmos_di16x16", False, 83_723_958),
                                ("cosmos_dv8x16x16", True, 112_472_182)):  # fmt: skip
        release_name = "Cosmos-1.0-Tokenizer-" + name.split("_")[1].upper().replace("X", "x")
        ref = reference_keys(name)
        with torch.device("meta"):
            sd = {k: torch.empty(s) for k, s in ref.items()}
        for k in sd:  # the stored constants, real
            if k.endswith("._levels"):
                sd[k] = torch.tensor(LEVELS, dtype=torch.int32)
            elif k.endswith(".wavelets"):
                sd[k] = torch.tensor([0.7071067811865476] * 2)
        assert detect_family(sd) == "cosmos"
        cfg = REGISTRY["cosmos"].config(sd, 256, f"/models/{release_name}")
        mapping = REGISTRY["cosmos"].mapping(cfg)
        fam = REGISTRY["cosmos"]
        used = {k for k in ref if not k.startswith(fam.ignored)}
        assert used == set(mapping) and len(set(mapping.values())) == len(mapping)
        with torch.device("meta"):
            tok = Tokenizer(TokenizerConfig.from_dict(cfg))
        ours = tok.state_dict()
        assert all(ours[m].shape == ref[t] for t, m in mapping.items())
        assert sum(int(np.prod(s)) for k, s in ref.items() if k in used) == params
        m = cfg["model"]
        assert (m["channels"], m["channel_mult"], m["patch_size"], m["dims"]) == (
            128, [2, 4, 4], 4, 3 if video else 2
        )  # fmt: skip
        assert (m["spatial_compression"], cfg["quantizer"]["levels"]) == (16, LEVELS)
        assert (cfg["resize"], cfg["pixel_arithmetic"], m["compute_dtype"]) == (
            "adm", "normalize_half", "bfloat16"
        )  # fmt: skip


@pytest.mark.slow
def test_video_compression_comes_from_the_releases_name(tmp_path):
    """A DV's down/up blocks hold the same weights whatever they halve: the name says."""
    folder = release(tmp_path / "Cosmos-0.1-Tokenizer-DV4x8x8", dims=3, spatial=8, temporal=4)
    tok, info = load_foreign(folder, image_size=32)
    m = tok.config.model
    assert (info.family, m.dims, m.temporal_compression, m.spatial_compression) == (
        "cosmos", 3, 4, 8
    )  # fmt: skip
    assert info.read_from == ["encoder.jit", "decoder.jit"] and tok.vocab_size == 64000
    unnamed = tmp_path / "weights"
    (unnamed).mkdir()
    (unnamed / "encoder.jit").write_bytes((folder / "encoder.jit").read_bytes())
    with pytest.raises(CheckpointError, match="release's name"):
        load_foreign(unnamed / "encoder.jit")
    image = REGISTRY["cosmos"].config(
        read_torchscript(release(tmp_path / "x", spatial=16) / "encoder.jit"), 32, None
    )
    assert image["model"]["spatial_compression"] == 16  # an image tokenizer's: its downsamplers


@pytest.mark.slow
def test_fsq_index_counts_channel_zero_fastest(tmp_path):
    """Cosmos' indices_to_codes: digit_i = index // prod_{j<i} L_j % L_i, code (digit -
    L_i//2) / (L_i//2); channel 0 varies fastest."""
    tok, _ = load_foreign(release(tmp_path / "Cosmos-0.1-Tokenizer-DI8x8"), image_size=32)
    q = tok.net.quantizer
    codes = q.decode_codes(torch.tensor([[[1, 8, 512, 63999]]]))[0, :, 0].T
    assert codes.tolist() == [
        [-0.75, -1, -1, -1, -1, -1],
        [-1, -0.75, -1, -1, -1, -1],
        [-1, -1, -1, -0.5, -1, -1],
        [0.75, 0.75, 0.75, 1, 1, 1],
    ]


@pytest.mark.slow
def test_encode_decode_inspect_from_the_release_folder(tmp_path):
    folder = release(tmp_path / "Cosmos-1.0-Tokenizer-DV8x16x16", dims=3, spatial=16, temporal=8)
    samples = [(f"im{i}", {"png": image_bytes(i, size=(48, 40), mode=m)})
               for i, m in enumerate(["RGB", "L", "RGBA"])]  # fmt: skip
    shard = write_shard(tmp_path / "s-000000.tar", samples)
    tokens = str(tmp_path / "tokens")
    enc = runner.invoke(app, ["encode", shard, "--tokenizer", str(folder), "--out", tokens,
                              "--image-size", "32", "--workers", "0", "--json"])  # fmt: skip
    assert enc.exit_code == 0, enc.output
    rows = pq.read_table(f"{tokens}/part-000000.parquet").to_pylist()
    tok, _ = load_foreign(folder, image_size=32)
    for (key, files), row in zip(samples, rows):
        pixels = encode_pixels(files["png"], 32, "adm")[0]
        assert row["tokens"] == tok.encode(pixels[None])[0].tolist(), key
    assert len(rows[0]["tokens"]) == 4  # 32 px / 16
    # decode finds the folder again by its two files' sha256s
    dec = runner.invoke(app, ["decode", tokens, "--out", str(tmp_path / "png"), "--json"])
    assert dec.exit_code == 0, dec.output
    assert [Image.open(i["path"]).size for i in json.loads(dec.stdout)["images"]] == [(32, 32)] * 3
    ins = runner.invoke(app, ["inspect", tokens, "--json"])
    assert ins.exit_code == 0 and json.loads(ins.stdout)["usage"]["vocab_size"] == 64000


@pytest.mark.slow
def test_encoder_jit_alone_tokenizes_and_refuses_to_decode(tmp_path):
    folder = release(tmp_path / "Cosmos-0.1-Tokenizer-DI8x8", files=("encoder",))
    tok, info = load_foreign(folder / "encoder.jit", image_size=32)
    black = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    assert tok.config.encoder_only and tok.encode(black).shape == (1, 16)
    with pytest.raises(CheckpointError, match="encoder only"):
        tok.decode(torch.zeros(1, 16, dtype=torch.long))


@pytest.mark.slow
def test_convert_writes_the_same_tokenizer(tmp_path):
    folder = release(tmp_path / "Cosmos-0.1-Tokenizer-DI16x16", spatial=16)
    out = tmp_path / "cosmos-di16.safetensors"
    res = runner.invoke(app, ["convert", "cosmos", str(folder), "--out", str(out), "--json",
                              "--image-size", "64"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["family"] == "cosmos"
    direct, _ = load_foreign(folder, image_size=64)
    converted = Tokenizer.load(out)
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (2, 3, 64, 64), np.uint8))
    assert torch.equal(direct.encode(images), converted.encode(images))
    assert next(converted.net.encoder.parameters()).dtype == torch.bfloat16  # as it runs


def test_convert_help_lists_every_family():
    res = runner.invoke(app, ["convert", "--help"], terminal_width=200)
    assert len(FAMILIES) == 13 and "infinity" in FAMILIES
    assert all(f in res.output for f in FAMILIES), res.output


def test_adm_crop_drops_transparency_as_convert_rgb():
    """SimpleAR's T2IDataset and LlamaGen's ImageFolder open with convert('RGB')."""
    rgba = Image.open(io.BytesIO(image_bytes(3, size=(50, 40), mode="RGBA")))
    buf = io.BytesIO()
    rgba.convert("RGB").save(buf, "PNG")
    dropped = encode_pixels(buf.getvalue(), 16, "adm")[0]
    assert torch.equal(encode_pixels(image_bytes(3, size=(50, 40), mode="RGBA"), 16, "adm")[0],
                       dropped)  # fmt: skip


def test_bf16_average_pool_on_a_cpu_rounds_a_float32_average_once():
    x = torch.randn(1, 2, 2, 4, 4).to(torch.bfloat16)
    want = torch.nn.functional.avg_pool3d(x.float(), (1, 2, 2), (1, 2, 2)).to(torch.bfloat16)
    assert torch.equal(avg_pool(x, (1, 2, 2)), want)
