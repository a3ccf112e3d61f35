"""The tokenizers of today's multimodal LMs: Chameleon's VQGAN (Chameleon, Anole,
Lumina-mGPT, Liquid) and Janus' VQ, from the files their users have: the original
checkpoints, a whole LM's sharded checkpoint, and transformers' layouts.

Exactness against the original projects' own code on real photos (grey and RGBA included)
is measured by `benchmarks/pretrained_parity.py`, which runs that code beside vqtool; here
the layouts are checked against transformers' implementations where they agree with the
originals, and the preprocessing against what the originals do to an image."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from test_pretrained import random_state_dict
from typer.testing import CliRunner

from vqtool.cli.main import app
from vqtool.data.images import encode_pixels, to_rgb
from vqtool.pretrained.convert import load_foreign

runner = CliRunner()


def _png(img: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_janus_vq_is_read_from_a_sharded_lm_checkpoint_without_its_other_weights(tmp_path):
    """Janus-Pro ships the VQ inside the LM's shards as `gen_vision_model.*`: the index
    names the shard, and only the tokenizer's tensors are read from it."""
    sd = random_state_dict("janus_vq16")
    vq = {f"gen_vision_model.{k}": v.contiguous() for k, v in sd.items()}
    lm = {"language_model.model.embed_tokens.weight": torch.zeros(8, 4),
          "gen_head.output_mlp_projector.weight": torch.zeros(2, 2)}  # fmt: skip
    save_file(lm, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({**vq, "gen_aligner.fc1.weight": torch.zeros(2, 2)},
              str(tmp_path / "model-00002-of-00002.safetensors"))  # fmt: skip
    index = {
        "metadata": {},
        "weight_map": {
            **{k: "model-00001-of-00002.safetensors" for k in lm},
            **{k: "model-00002-of-00002.safetensors" for k in [*vq, "gen_aligner.fc1.weight"]},
        },
    }
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    for src in (tmp_path, tmp_path / "model.safetensors.index.json"):
        tok, info = load_foreign(src, image_size=32)
        assert info.family == "janus" and info.weights == "gen_vision_model"
        assert torch.equal(tok.net.quantizer.embed, sd["quantize.embedding.weight"])
    assert (tok.config.resize, tok.config.pixel_arithmetic) == ("janus", "rescale_normalize")
    assert load_foreign(tmp_path)[1].image_size == 384  # Janus' own size: 24x24 tokens


def test_a_bare_janus_vq_file_is_llamagen_unless_named_janus(tmp_path):
    src = tmp_path / "janus_vq.pt"
    torch.save(random_state_dict("janus_vq16"), src)
    assert load_foreign(src, image_size=32)[1].family == "llamagen"  # the same code
    tok, info = load_foreign(src, family="janus", image_size=32)
    assert info.family == "janus" and tok.config.resize == "janus"


def test_janus_in_transformers_layout_decodes_as_transformers_does(tmp_path):
    """transformers' JanusVQVAE renames every weight and decodes as Janus does; its
    `encode` leaves out the L2 normalization Janus applies before the nearest-code search,
    so tokens follow the original: the nearest normalized code to the normalized latent."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.janus.modeling_janus import JanusVQVAE

    torch.manual_seed(0)
    config = transformers.JanusVQVAEConfig(num_patches=2)  # 32 px -> 2x2 tokens
    theirs = JanusVQVAE(config).eval()
    src = tmp_path / "model.safetensors"
    save_file({f"model.vqmodel.{k}": v.contiguous() for k, v in theirs.state_dict().items()},
              str(src))  # fmt: skip
    tok, info = load_foreign(src, image_size=32)
    assert info.family == "janus" and info.weights == "model.vqmodel"

    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        h = theirs.quant_conv(theirs.encoder(tok.normalize(x)))  # (3, 8, 2, 2)
        ours_h = tok.net.encoder(tok.normalize(x))
        assert torch.allclose(ours_h, h, atol=1e-6)
        z = torch.nn.functional.normalize(h.permute(0, 2, 3, 1).reshape(-1, 8), dim=-1)
        e = torch.nn.functional.normalize(theirs.quantize.embedding.weight, dim=-1)
        want = torch.cdist(z.double(), e.double()).argmin(1).reshape(3, 4)
        tokens = tok.encode(x)
        assert torch.equal(tokens, want)
        assert torch.equal(tok.decode_output(tokens), theirs.decode(tokens))


def test_chameleon_in_transformers_layout_is_refused_in_one_line(tmp_path):
    """transformers' ChameleonVQVAE keeps the encoder only; vqtool loads whole tokenizers
    (decode, inspect), so the release's vqgan.ckpt is asked for by name."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.chameleon.modeling_chameleon import ChameleonVQVAE

    sd = ChameleonVQVAE(transformers.ChameleonVQVAEConfig()).state_dict()
    src = tmp_path / "model.safetensors"
    save_file({f"model.vqmodel.{k}": v.contiguous() for k, v in sd.items()}, str(src))
    out = str(tmp_path / "c.safetensors")
    result = runner.invoke(app, ["convert", "auto", str(src), "--out", out])
    assert result.exit_code == 2, result.output
    assert "encoder only" in result.stderr and "vqgan.ckpt" in result.stderr


def test_chameleon_blends_transparency_over_white_as_its_tokenizer_does():
    """Chameleon's `_whiten_transparency`: (1 - a) * 255 + a * rgb in float64, truncated;
    Pillow's alpha_composite rounds, so the two differ by one in places."""
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    img = Image.fromarray(rgba, "RGBA")
    a = rgba[:, :, 3:] / 255.0
    want = ((1 - a) * 255 + a * rgba[:, :, :3]).astype(np.uint8)
    assert np.array_equal(np.array(to_rgb(img, "chameleon")), want)
    assert not np.array_equal(np.array(to_rgb(img)), want)
    opaque = Image.fromarray(rgba[:, :, :3], "RGB").convert("L")
    assert np.array_equal(np.array(to_rgb(opaque, "chameleon")), np.array(opaque.convert("RGB")))


def test_chameleon_and_janus_geometry_on_a_wide_image():
    img = Image.fromarray(np.full((30, 91, 3), 200, np.uint8), "RGB")
    data = _png(img)
    square, size = encode_pixels(data, 16, "chameleon")
    assert square.shape == (3, 16, 16) and size == (91, 30)
    padded, _ = encode_pixels(data, 66, "janus")  # long side 66, short int(30/91*66) = 21
    assert padded.shape == (3, 66, 66)
    rows = padded[0, :, 33]  # pasted at (66 - 21) // 2 = 22 on grey
    assert (rows[:22] == 127).all() and (rows[22:43] == 200).all() and (rows[43:] == 127).all()
    tiny, _ = encode_pixels(data, 33, "janus")  # int(30/91*33) = 10, raised to Janus' 14
    assert (tiny[0, :, 16] == 200).sum() == 14
    rgba = Image.fromarray(np.zeros((20, 20, 4), np.uint8), "RGBA")  # fully transparent black
    assert int(encode_pixels(_png(rgba), 20, "janus")[0].max()) == 0  # Janus drops alpha
    assert int(encode_pixels(_png(rgba), 20, "chameleon")[0].min()) == 255  # Chameleon: white


def test_convert_lists_every_family():
    result = runner.invoke(app, ["convert", "--help"])
    for family in ("llamagen", "taming", "open-magvit2", "maskgit", "chameleon", "janus"):
        assert family in result.output
