"""The tokenizers of today's multimodal LMs: Chameleon's VQGAN (Chameleon, Anole,
Lumina-mGPT, Liquid) and Janus' VQ, from the files their users have: the original
checkpoints, a whole LM's sharded checkpoint, and transformers' layouts.

Exactness against the original projects' own code on real photos (grey and RGBA included)
is measured by `benchmarks/pretrained_parity.py`, which runs that code beside vqtool; here
the layouts are checked against transformers' implementations where they agree with the
originals, and the preprocessing against what the originals do to an image."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from support.data import image_bytes, write_shard
from test_pretrained import random_state_dict
from typer.testing import CliRunner

from vqtool.cli.main import app
from vqtool.data.decoding import to_rgb
from vqtool.data.images import encode_pixels
from vqtool.pretrained.convert import load_foreign

runner = CliRunner()


def _png(img: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_bare_janus_vq_file_is_llamagen_unless_named_janus(tmp_path):
    src = tmp_path / "janus_vq.pt"
    torch.save(random_state_dict("janus_vq16"), src)
    assert load_foreign(src, image_size=32)[1].family == "llamagen"  # the same code
    tok, info = load_foreign(src, family="janus", image_size=32)
    assert info.family == "janus" and tok.config.resize == "janus"


@pytest.mark.slow
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


def test_chameleon_in_transformers_layout_tokenizes_as_transformers_and_refuses_decode(
    tmp_path,
):
    """transformers' ChameleonVQVAE keeps the encoder only: its file tokenizes (tokens equal
    transformers' own `encode`) and inspects; decoding is refused in one line naming the
    file that has the decoder."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.chameleon.modeling_chameleon import ChameleonVQVAE

    torch.manual_seed(0)
    config = transformers.ChameleonVQVAEConfig(
        embed_dim=32, num_embeddings=64, latent_channels=32, base_channels=32,
        channel_multiplier=[1, 1, 2], num_res_blocks=1, resolution=32,
    )  # fmt: skip
    theirs = ChameleonVQVAE(config).eval()
    src = tmp_path / "model.safetensors"
    save_file({f"model.vqmodel.{k}": v.contiguous() for k, v in theirs.state_dict().items()},
              str(src))  # fmt: skip
    tok, info = load_foreign(src, image_size=32)
    assert info.family == "chameleon" and any("encoder only" in n for n in info.notes)
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        want = theirs.encode(tok.normalize(x)).image_tokens.reshape(2, -1)
        assert torch.equal(tok.encode(x), want)
    out = tmp_path / "c.safetensors"
    result = runner.invoke(
        app, ["convert", "auto", str(src), "--out", str(out), "--image-size", "32"]
    )
    assert result.exit_code == 0, result.output
    decode = runner.invoke(app, ["decode", "-", "--tokenizer", str(out), "--out",
                                 str(tmp_path / "x.png")], input=json.dumps([0] * 64))  # fmt: skip
    assert decode.exit_code == 2 and "encoder only" in decode.stderr
    assert "vqgan.ckpt" in decode.stderr and "Traceback" not in decode.output


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
    square, size, _ = encode_pixels(data, 16, "chameleon")
    assert square.shape == (3, 16, 16) and size == (91, 30)
    padded = encode_pixels(data, 66, "janus").pixels  # long side 66, short int(30/91*66) = 21
    assert padded.shape == (3, 66, 66)
    rows = padded[0, :, 33]  # pasted at (66 - 21) // 2 = 22 on grey
    assert (rows[:22] == 127).all() and (rows[22:43] == 200).all() and (rows[43:] == 127).all()
    tiny = encode_pixels(data, 33, "janus").pixels  # int(30/91*33) = 10, raised to Janus' 14
    assert (tiny[0, :, 16] == 200).sum() == 14
    rgba = Image.fromarray(np.zeros((20, 20, 4), np.uint8), "RGBA")  # fully transparent black
    assert int(encode_pixels(_png(rgba), 20, "janus")[0].max()) == 0  # Janus drops alpha
    assert int(encode_pixels(_png(rgba), 20, "chameleon")[0].min()) == 255  # Chameleon: white


def test_convert_lists_every_family():
    result = runner.invoke(app, ["convert", "--help"])
    for family in ("llamagen", "taming", "open-magvit2", "maskgit", "chameleon", "janus", "emu3",
                   "emu3.5", "show-o"):
        assert family in result.output


def _small_emu3():
    transformers = pytest.importorskip("transformers")
    from transformers.models.emu3.modeling_emu3 import Emu3VQVAE

    torch.manual_seed(0)
    config = transformers.Emu3VQVAEConfig(
        codebook_size=64,
        embed_dim=4,
        latent_channels=4,
        base_channels=32,
        channel_multiplier=[1, 2],
        num_res_blocks=1,
        attn_resolutions=[1],
        temporal_downsample_factor=4,
        hidden_size=64,
        num_attention_heads=1,
    )  # fmt: skip  (its attention width is a config value: the attention stages' width)
    model = Emu3VQVAE(config).eval()
    with torch.no_grad():  # BatchNorm statistics other than the defaults, so they matter
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
            elif name.endswith("running_mean"):
                buf.normal_(0, 0.1)
    return model


def test_emu3_in_transformers_layout_gives_transformers_tokens_and_pixels(tmp_path):
    """transformers' Emu3VQVAE (renamed weights, Linear attention projections) as a second
    implementation beside vqtool's; the original Emu3 code is run beside vqtool on photos by
    benchmarks/pretrained_parity.py."""
    theirs = _small_emu3()
    src = tmp_path / "model.safetensors"
    save_file({f"model.vqmodel.{k}": v.contiguous() for k, v in theirs.state_dict().items()},
              str(src))  # fmt: skip
    tok, info = load_foreign(src, image_size=32)
    assert info.family == "emu3" and tok.config.policy.startswith("smart:")
    x = torch.randint(0, 256, (2, 3, 32, 48), dtype=torch.uint8)
    with torch.no_grad():
        out = theirs.encode(tok.normalize(x), torch.tensor([[32, 48]] * 2)).image_tokens
        want = torch.stack([t.reshape(16, 24) for t in out])  # one (h, w) map per image
        tokens, grid = tok.encode_grid(x)
        assert grid == (16, 24)
        assert torch.equal(tokens.reshape(2, 16, 24), want.reshape(2, 16, 24))
        pixels = theirs.decode(want.reshape(2, 1, 16, 24)).reshape(2, -1, 3, 32, 48)[:, 0]
        assert torch.allclose(tok.decode_output(tokens, grid), pixels, atol=1e-5)


def test_emu3_key_list_maps_one_to_one():
    """Every weight of the published Emu3-VisionTokenizer (key list from its own module
    definitions) has exactly one place, checked on the meta device (270M parameters)."""
    from test_pretrained import reference_keys

    from vqtool.pretrained.families import REGISTRY

    ref = reference_keys("emu3_vision")
    with torch.device("meta"):
        sd = {k: torch.empty(s) for k, s in ref.items()}
        cfg = REGISTRY["emu3"].config(sd, 512)
        mapping = REGISTRY["emu3"].mapping(cfg)
    assert set(mapping) == set(ref) and len(set(mapping.values())) == len(mapping)
    assert cfg["model"]["channel_mult"] == [1, 2, 2, 4] and cfg["model"]["attention_levels"] == [3]
    assert cfg["quantizer"]["codebook_size"] == 32768 and cfg["model"]["temporal_factor"] == 4


def test_emu3_convert_encode_keeps_aspect_and_decodes_each_grid(tmp_path):
    theirs = _small_emu3()
    src = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, str(src))
    out = tmp_path / "emu3.safetensors"
    result = runner.invoke(app, ["convert", "emu3", str(src), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    samples = [(f"im{i}", {"png": image_bytes(i, size=s)})
               for i, s in enumerate([(48, 32), (32, 48), (40, 40)])]  # fmt: skip
    shard = write_shard(tmp_path / "s-000000.tar", samples)
    tokens = str(tmp_path / "tokens")
    args = ["--resize", "smart:1024:2304", "--workers", "0", "--json"]
    enc = runner.invoke(app, ["encode", shard, "--tokenizer", str(out), "--out", tokens, *args])
    assert enc.exit_code == 0, enc.output
    import pyarrow.parquet as pq

    rows = pq.read_table(f"{tokens}/part-000000.parquet").to_pylist()
    assert [(r["grid_h"], r["grid_w"]) for r in rows] == [(16, 24), (24, 16), (20, 20)]
    dec = runner.invoke(app, ["decode", tokens, "--tokenizer", str(out), "--out",
                              str(tmp_path / "png"), "--json"])  # fmt: skip
    assert dec.exit_code == 0, dec.output
    sizes = [Image.open(i["path"]).size for i in json.loads(dec.stdout)["images"]]
    assert sizes == [(48, 32), (32, 48), (40, 40)]


def test_tokenizer_messages_for_a_text_file_and_a_run_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("tokenizer: see vqgan.ckpt\n")
    notes, out = str(tmp_path / "notes.txt"), str(tmp_path / "t")
    result = runner.invoke(app, ["encode", "vqtool:sample", "--tokenizer", notes, "--out", out])
    assert result.exit_code == 2 and "a text file, not a checkpoint" in result.stderr
    from vqtool.pretrained.opener import open_tokenizer

    with pytest.raises(Exception, match="neither a training run"):
        open_tokenizer(str(tmp_path))
    from vqtool.assets import resolve

    run = tmp_path / "run"
    run.mkdir()
    (run / "tokenizer.safetensors").write_bytes(Path(resolve("vqtool:fsq-f4-64")).read_bytes())
    assert open_tokenizer(str(run)).path == run / "tokenizer.safetensors"
