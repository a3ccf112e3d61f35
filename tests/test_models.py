"""The Tokenizer: layout, encode/decode, and the single-file checkpoint."""

import json

import pytest
import torch

from vqtool.models import CheckpointError, Tokenizer, TokenizerConfig, TokenLayout


def tiny(model: dict, quantizer: dict, image_size: int = 32) -> Tokenizer:
    return Tokenizer(
        TokenizerConfig.from_dict(
            {"model": model, "quantizer": quantizer, "image_size": image_size}
        )
    )


CONV = {"architecture": "conv", "channels": 8, "channel_mult": [1, 2], "z_channels": 8}
VIT = {
    "architecture": "vit",
    "patch_size": 8,
    "width": 16,
    "layers": 1,
    "heads": 2,
    "z_channels": 16,
}


def test_layout_flattens_levels_coarse_first_depth_innermost():
    layout = TokenLayout(grids=[(1, 2), (2, 2)], depth=2, vocab_size=10)
    assert layout.tokens_per_image == 12
    top = torch.arange(4).reshape(1, 1, 2, 2)  # (B, h, w, D)
    bottom = torch.arange(4, 12).reshape(1, 2, 2, 2)
    tokens = layout.flatten([top, bottom])
    assert tokens.tolist() == [list(range(12))]
    back = layout.unflatten(tokens)
    assert torch.equal(back[0], top) and torch.equal(back[1], bottom)
    with pytest.raises(ValueError, match="12 tokens per image"):
        layout.unflatten(torch.zeros(1, 11, dtype=torch.long))


@pytest.mark.parametrize(
    "model,quantizer,tokens",
    [
        (CONV, {"kind": "vq", "codebook_size": 16}, 16 * 16),
        (CONV, {"kind": "rq", "codebook_size": 16, "depth": 3}, 16 * 16 * 3),
        (
            {
                "architecture": "hierarchical",
                "channels": 8,
                "channel_mult": [1, 2],
                "z_channels": 8,
            },
            {"kind": "fsq", "levels": [4, 4]},
            8 * 8 + 16 * 16,
        ),
        (
            VIT,
            {"kind": "lfq", "codebook_size": 64},
            4 * 4,
        ),
        (
            {"architecture": "dvae", "channels": 8, "groups": 2, "z_channels": 8},
            {"kind": "gumbel", "codebook_size": 32},
            16 * 16,
        ),
        ({"architecture": "palette", "downsample": 4}, {"kind": "palette", "num_colors": 8}, 8 * 8),
    ],
)
def test_encode_decode_and_checkpoint_roundtrip(model, quantizer, tokens, tmp_path):
    tok = tiny(model, quantizer)
    tok(tok.normalize(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)))  # init codebooks
    tok.eval()
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    codes = tok.encode(images)
    assert codes.shape == (3, tokens) and codes.dtype == torch.int64
    pictures = tok.decode(codes)
    assert pictures.shape == (3, 3, 32, 32) and 0 <= pictures.min() and pictures.max() <= 1
    # decode(encode(x)) is the same picture as reconstruct(x): decode_codes is the forward path
    torch.testing.assert_close(pictures, tok.reconstruct(images), atol=1e-4, rtol=0)

    path = tmp_path / "tok.safetensors"
    tok.save(path, extra_tensors={"usage.counts": torch.ones(tok.vocab_size)})
    again, extras = Tokenizer.load_with_extras(path)
    assert torch.equal(again.encode(images), codes)
    assert extras["usage.counts"].shape == (tok.vocab_size,)
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoint_metadata_describes_the_model(tmp_path):
    from safetensors import safe_open

    tok = tiny(CONV, {"kind": "vq", "codebook_size": 16})
    tok.save(tmp_path / "t.safetensors")
    with safe_open(str(tmp_path / "t.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["vqtool.format"] == "tokenizer/1"
    config = json.loads(meta["vqtool.config"])
    assert config["image_size"] == 32 and config["pixel_range"] == "-1,1"
    assert config["quantizer"]["codebook_size"] == 16
    assert json.loads(meta["vqtool.layout"])["tokens_per_image"] == 256


def test_foreign_or_missing_checkpoints_are_refused(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(CheckpointError, match="no such checkpoint"):
        Tokenizer.load(tmp_path / "missing.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not a vqtool tokenizer"):
        Tokenizer.load(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        Tokenizer.load(tmp_path / "junk.safetensors")


def test_decode_refuses_out_of_range_tokens():
    tok = tiny(CONV, {"kind": "vq", "codebook_size": 16}).eval()
    with pytest.raises(ValueError, match=r"outside \[0, 16\)"):
        tok.decode(torch.full((1, 256), 16))


def test_bad_model_configs_fail_naming_the_key():
    from vqtool.utils import ConfigError

    with pytest.raises(ConfigError, match="not divisible"):
        tiny(CONV, {"kind": "vq"}, image_size=33)
    with pytest.raises(ConfigError, match="model.architecture"):
        tiny({"architecture": "unet"}, {"kind": "vq"})
    with pytest.raises(ConfigError, match="needs model.architecture = 'palette'"):
        tiny(CONV, {"kind": "palette"})


EVERY_QUANTIZER = [
    {"kind": "vq", "codebook_size": 16},
    {"kind": "gumbel", "codebook_size": 16},
    {"kind": "rq", "codebook_size": 16, "depth": 2},
    {"kind": "lfq", "codebook_size": 16},
    {"kind": "fsq", "levels": [4, 4]},
    {"kind": "bsq", "codebook_size": 16},
]


@pytest.mark.parametrize("model", [CONV, VIT], ids=["conv", "vit"])
@pytest.mark.parametrize("quantizer", EVERY_QUANTIZER, ids=lambda q: q["kind"])
def test_every_quantizer_plugs_into_conv_and_vit(model, quantizer):
    tok = tiny(model, quantizer)
    out = tok(torch.rand(2, 3, 32, 32) * 2 - 1)
    (out.output.square().mean() + out.loss).backward()
    assert out.output.shape == (2, 3, 32, 32)
    assert any(p.grad is not None for p in tok.net.encoder.parameters())


def test_the_light_conv_layout_is_the_reference_autoencoder():
    from vqtool.models.conv import ConvConfig, ConvDecoder, ConvEncoder
    from vqtool.models.layers import Downsample, ResBlock, Upsample

    light = ConvConfig(
        channels=32,
        channel_mult=[1, 2, 2],
        z_channels=32,
        norm_groups=8,
        mid_blocks=0,
        resample_channels=True,
        code_kernel=1,
    )
    enc, dec = ConvEncoder(light), ConvDecoder(light)
    # 450,659: the reference AE of benchmarks/rate_distortion.py without its quantizer, built
    # there independently from the description; the taming-style layout has 784,067
    count = sum(p.numel() for m in (enc, dec) for p in m.parameters())
    assert count == 450_659
    taming = ConvConfig(channels=32, channel_mult=[1, 2, 2], z_channels=32)
    assert (
        sum(p.numel() for m in (ConvEncoder(taming), ConvDecoder(taming)) for p in m.parameters())
        == 784_067
    )
    # widths change in the resampling convs, so full resolution runs at 32 channels
    downs = [m for m in enc.blocks if isinstance(m, Downsample)]
    ups = [m for m in dec.blocks if isinstance(m, Upsample)]
    assert [d.conv.out_channels for d in downs] == [64, 64]
    assert [u.conv.out_channels for u in ups] == [64, 32]
    assert all(b.norm1.num_groups == 8 for b in enc.blocks if isinstance(b, ResBlock))
    assert enc(torch.randn(2, 3, 64, 64)).shape == (2, 32, 16, 16)
