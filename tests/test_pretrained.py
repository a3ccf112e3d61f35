"""Public pretrained tokenizers: key sets, strict loading, index conventions,
safe loading, and convert -> encode -> decode for every family.

No downloaded weights: state_dicts are built from the published key lists
(tests/data/pretrained-keys, names and shapes) with random values."""

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from vqtool.cli.main import app
from vqtool.models import Tokenizer, TokenizerConfig
from vqtool.models.magvit2 import depth_to_space_dcr
from vqtool.pretrained.convert import load_foreign
from vqtool.pretrained.families import REGISTRY
from vqtool.pretrained.opener import open_tokenizer
from vqtool.pretrained.staged import omv2_ema_name
from vqtool.quantizers import build_quantizer
from vqtool.utils import ConfigError

runner = CliRunner()
KEYS = Path(__file__).parent / "data" / "pretrained-keys"
LISTS = {
    "llamagen_vq16": "llamagen",
    "llamagen_vq8": "llamagen",
    "taming_f16_1024": "taming",
    "taming_f16_16384": "taming",
    "taming_gumbel_f8_8192": "taming",
    "omv2_256_L": "open-magvit2",
    "omv2_128_L": "open-magvit2",
    "maskgit_vqgan": "maskgit",
    "chameleon_vqgan": "chameleon",
    "janus_vq16": "janus",
    "var_vae": "var",
}


def reference_keys(name: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in (KEYS / f"keys_{name}.txt").read_text().splitlines():
        key, shape = re.match(r"(\S+) \((.*)\)", line).groups()
        out[key] = tuple(int(x) for x in shape.split(",") if x.strip())
    return out


def random_state_dict(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * 0.02 for k, s in reference_keys(name).items()}


@pytest.mark.parametrize("name", sorted(LISTS))
def test_key_sets_and_shapes_match_the_reference_lists(name):
    family = REGISTRY[LISTS[name]]
    ref = reference_keys(name)
    sd = {k: torch.empty(s) for k, s in ref.items()}
    cfg = family.config(sd, 256)
    mapping = {k: v for k, v in family.mapping(cfg).items() if k in ref}
    used = {k for k in ref if not k.startswith(family.ignored)}
    assert set(mapping) == used  # every reference key has exactly one place ...
    tok = Tokenizer(TokenizerConfig.from_dict(cfg))
    ours = tok.state_dict()
    assert len(set(mapping.values())) == len(mapping)  # ... and no two share one
    for theirs, mine in mapping.items():
        assert ours[mine].numel() == int(np.prod(ref[theirs])), (theirs, mine)
    params = sum(p.numel() for p in tok.parameters())
    published = {"llamagen_vq16": 71_883_403, "taming_f16_1024": 72_141_699,
                 "maskgit_vqgan": 54_515_587}  # fmt: skip
    if name in published:  # totals quoted in the reference notes
        assert params == published[name]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,wrap",
    [
        ("llamagen_vq8", lambda sd: {"model": sd, "ema": sd, "steps": 10}),
        ("taming_gumbel_f8_8192", lambda sd: {"state_dict": {**sd, "loss.w": torch.ones(1)}}),
        ("maskgit_vqgan", lambda sd: sd),
    ],
)
def test_foreign_state_dicts_load_strictly(tmp_path, name, wrap):
    sd = random_state_dict(name)
    path = tmp_path / "w.pt"
    torch.save(wrap(sd), path)
    tok, info = load_foreign(path, image_size=32)
    assert info.family == LISTS[name]
    family = REGISTRY[info.family]
    mapping = {k: v for k, v in family.mapping(family.config(sd, 32)).items() if k in sd}
    ours = tok.state_dict()
    for theirs, mine in mapping.items():  # the values land where they belong
        assert torch.equal(ours[mine].reshape(-1), sd[theirs].reshape(-1)), theirs
    broken = dict(sd)
    lost = list(mapping)[5]
    broken.pop(lost)
    torch.save(wrap(broken), path)
    with pytest.raises(ValueError, match="missing") as exc:
        load_foreign(path, image_size=32)
    assert lost in str(exc.value)  # named as the file names it
    extra = {**sd, "encoder.extra_block.weight": torch.zeros(3)}
    torch.save(wrap(extra), path)
    with pytest.raises(ValueError, match="no place"):
        load_foreign(path, image_size=32)


@pytest.mark.slow
def test_open_magvit2_ema_weights_are_the_default(tmp_path):
    sd = random_state_dict("omv2_128_L")
    ema = {omv2_ema_name(k): v + 1.0 for k, v in sd.items()}
    path = tmp_path / "omv2.ckpt"
    torch.save({"state_dict": {**sd, **ema, "model_ema.decay": torch.tensor(0.99)}}, path)
    tok, info = load_foreign(path, image_size=32)
    assert info.weights.startswith("ema")
    assert torch.equal(tok.net.encoder.conv_in.weight, sd["encoder.conv_in.weight"] + 1.0)
    raw, info = load_foreign(path, weights="raw", image_size=32)
    assert torch.equal(raw.net.encoder.conv_in.weight, sd["encoder.conv_in.weight"])


def test_lfq_indices_are_lsb_first_and_round_trip():
    q = build_quantizer(18, {"kind": "lfq", "codebook_size": 2**18, "entropy_weight": 0.0}).eval()
    z = -torch.ones(1, 18, 1, 2)
    z[0, 0, 0, 0] = 1.0  # only channel 0 positive -> index 1
    z[0, 17, 0, 1] = 1.0  # only channel 17 positive -> index 2^17
    z[0, 3, 0, 1] = 0.0  # zero counts as negative
    codes = q(z).codes
    assert codes.tolist() == [[[1, 2**17]]]
    assert torch.equal(q.decode_codes(codes), torch.where(z > 0, 1.0, -1.0))
    idx = torch.randint(0, 2**18, (4, 3, 3))
    assert torch.equal(q(q.decode_codes(idx)).codes, idx)


@pytest.mark.slow
def test_indices_are_raster_b_h_w_order(tmp_path):
    sd = random_state_dict("maskgit_vqgan")
    torch.save(sd, tmp_path / "m.bin")
    tok, _ = load_foreign(tmp_path / "m.bin", image_size=32)
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    z = tok.net.encoder(tok.normalize(x))  # (2, 256, 2, 2)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 256)
    e = tok.net.quantizer.embed
    expect = torch.cdist(flat.double(), e.double()).argmin(1).reshape(2, 4)
    assert torch.equal(tok.encode(x), expect)


def test_dcr_depth_to_space_is_not_pixel_shuffle():
    x = torch.arange(2 * 8 * 3 * 3, dtype=torch.float32).reshape(2, 8, 3, 3)
    out = depth_to_space_dcr(x)
    # channel (by*2 + bx)*C + c goes to pixel (2y + by, 2x + bx) of channel c
    assert out[0, 1, 0, 1] == x[0, (0 * 2 + 1) * 2 + 1, 0, 0]
    assert out[1, 0, 5, 4] == x[1, (1 * 2 + 0) * 2 + 0, 2, 2]
    assert not torch.equal(out, torch.nn.functional.pixel_shuffle(x, 2))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_pickled_modules_are_refused_and_torchscript_is_read_as_tensors(tmp_path):
    """A pickled module cannot be read without its code; a TorchScript archive's tensors
    are read (its code never runs), and a module of no known family is named as such,
    whatever the file's suffix."""
    (tmp_path / "encoder.pkl").write_bytes(b"\x80\x04")
    script = torch.jit.script(torch.nn.Linear(2, 2))
    script.save(str(tmp_path / "decoder.jit"))
    script.save(str(tmp_path / "renamed.pt"))
    for name, why in [("encoder.pkl", "pickled Python module"),
                      ("decoder.jit", "cannot tell which family"),
                      ("renamed.pt", "cannot tell which family")]:  # fmt: skip
        result = runner.invoke(
            app, ["convert", "auto", str(tmp_path / name), "--out", "x.safetensors"]
        )
        assert result.exit_code == 2, result.output
        assert why in result.stderr and "Traceback" not in result.output
    assert "keys such as bias, weight" in runner.invoke(
        app, ["convert", "auto", str(tmp_path / "renamed.pt"), "--out", "x.safetensors"]
    ).stderr


def test_non_tensor_objects_are_ignored_safely_and_reported(tmp_path):
    sd = random_state_dict("maskgit_vqgan")
    path = tmp_path / "with-args.pt"
    torch.save({"model": sd, "args": argparse.Namespace(lr=1.0, name="x")}, path)
    tok, info = load_foreign(path, image_size=32)
    assert any("argparse.Namespace" in n for n in info.notes)


def test_unknown_files_are_refused_by_name(tmp_path):
    torch.save({"state_dict": {"foo.weight": torch.zeros(2)}}, tmp_path / "x.pt")
    result = runner.invoke(
        app, ["convert", "auto", str(tmp_path / "x.pt"), "--out", "y.safetensors"]
    )
    assert result.exit_code == 2 and "cannot tell which family" in result.stderr
    torch.save(random_state_dict("maskgit_vqgan"), tmp_path / "m.pt")
    wrong = runner.invoke(
        app, ["convert", "taming", str(tmp_path / "m.pt"), "--out", "y.safetensors"]
    )
    assert wrong.exit_code == 2 and "do not look like a taming checkpoint" in wrong.stderr
    with pytest.raises(ConfigError):
        build_quantizer(8, {"kind": "vq", "distance": "other"})


# ----------------------------------------------------------------------------- round trips

FAMILY_FILES = {
    "llamagen": ("llamagen_vq8", lambda sd: {"model": sd}, "vq.pt"),
    "taming": ("taming_f16_1024", lambda sd: {"state_dict": sd}, "last.ckpt"),
    "open-magvit2": ("omv2_128_L", lambda sd: {"state_dict": sd}, "omv2.ckpt"),
    "maskgit": ("maskgit_vqgan", lambda sd: sd, "pytorch_model.bin"),
    "chameleon": ("chameleon_vqgan", lambda sd: {"state_dict": sd}, "vqgan.ckpt"),
    "janus": (
        "janus_vq16",
        lambda sd: {f"gen_vision_model.{k}": v for k, v in sd.items()},
        "pytorch_model.bin",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILY_FILES))
def test_convert_encode_decode_round_trip(tmp_path, family):
    name, wrap, filename = FAMILY_FILES[family]
    src = tmp_path / filename
    torch.save(wrap(random_state_dict(name)), src)
    out = tmp_path / "converted.safetensors"
    result = runner.invoke(app, ["convert", family, str(src), "--out", str(out),
                                 "--image-size", "32", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["family"] == family and info["source"] == filename and len(info["sha256"]) == 64

    tokens = tmp_path / "tokens"
    enc = runner.invoke(app, ["encode", "vqtool:sample", "--tokenizer", str(out), "--out",
                              str(tokens), "--workers", "0", "--json"])  # fmt: skip
    assert enc.exit_code == 0, enc.output
    r = json.loads(enc.stdout)
    assert r["images"] == 16
    tok = Tokenizer.load(out)
    meta = json.loads((tokens / "encode.json").read_text())
    assert meta["preprocessing"]["pixel_arithmetic"] == tok.config.pixel_arithmetic
    # the tokens name both the converted file and the original it came from
    assert meta["tokenizer"]["source_sha256"] == info["sha256"]
    assert open_tokenizer(str(src)).wrote(meta["tokenizer"])  # the original file too
    assert meta["dtype"] == ("uint32" if family == "open-magvit2" else "uint16")

    pictures = tmp_path / "grid.png"
    dec = runner.invoke(app, ["decode", str(tokens), "--tokenizer", str(out), "--out",
                              str(pictures), "--grid", "--limit", "4", "--json"])  # fmt: skip
    assert dec.exit_code == 0, dec.output
    assert json.loads(dec.stdout)["warnings"] == []
    assert Image.open(pictures).size == (2 * 32 + 2, 2 * 32 + 2)
    provenance = json.loads(_metadata(out)["vqtool.provenance"])
    assert provenance["family"] == family


@pytest.mark.slow
def test_a_foreign_file_works_directly_as_tokenizer(tmp_path):
    src = tmp_path / "pytorch_model.bin"
    torch.save(random_state_dict("maskgit_vqgan"), src)
    tok, _ = load_foreign(src, image_size=32)
    pixels = torch.randint(0, 256, (1, 3, 256, 256), dtype=torch.uint8)
    assert tok.encode(pixels).shape == (1, 256)  # any multiple of 16 works for a conv net
    args = ["decode", "-", "--tokenizer", str(src), "--out", str(tmp_path / "one.png")]
    result = runner.invoke(app, args, input=json.dumps([0] * 256))
    assert result.exit_code == 0, result.output
    assert "detected a maskgit checkpoint" in result.stderr
    report = runner.invoke(app, ["inspect", str(src), "--json"])
    assert report.exit_code == 0, report.output
    r = json.loads(report.stdout)
    assert r["format"] == "maskgit (public)" and r["parameters"] == 54_515_587
    assert r["codebooks"][0]["codes"] == 1024


def _metadata(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


# ----------------------------------------------------------------------------- exactness


def test_gumbel_logits_follow_tamings_1x1_convolution():
    """taming computes Gumbel logits with a 1x1 Conv2d; a Linear over flattened vectors
    sums in another order, which flips the argmax where two codes nearly tie."""
    from torch import nn

    q = build_quantizer(64, {"kind": "gumbel", "codebook_size": 32}).eval()
    with torch.no_grad():  # pairs of codes whose logits differ only in the last bits
        q.proj.weight[1::2] = q.proj.weight[0::2] * (1 + 1e-7)
        q.proj.bias[1::2] = q.proj.bias[0::2]
    conv = nn.Conv2d(64, 32, 1)
    conv.weight.data.copy_(q.proj.weight.data[:, :, None, None])
    conv.bias.data.copy_(q.proj.bias.data)
    z = torch.randn(4, 64, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = conv(z).argmax(1)
        linear = q.proj(z.permute(0, 2, 3, 1)).argmax(-1)
        got = q(z).codes
    assert (linear != want).any()  # the two orders do disagree on this input ...
    assert torch.equal(got, want)  # ... and the quantizer follows the convolution


@pytest.mark.slow
def test_public_files_record_their_preprocessing_and_decode_layout(tmp_path):
    expected = {
        "taming_f16_1024": ("taming", "contiguous"),
        "taming_gumbel_f8_8192": ("taming", "einsum"),
        "llamagen_vq8": ("adm", "contiguous"),
        "maskgit_vqgan": ("bilinear", "channels_last"),
        "chameleon_vqgan": ("chameleon", "contiguous"),
    }
    for name, (resize, layout) in expected.items():
        src = tmp_path / f"{name}.pt"
        torch.save(random_state_dict(name), src)
        tok, _ = load_foreign(src, image_size=32)
        assert (tok.config.resize, tok.config.decode_layout) == (resize, layout), name


@pytest.mark.slow
def test_image_size_for_a_public_file_on_encode_decode_inspect(tmp_path):
    src = tmp_path / "omv2.ckpt"
    torch.save({"state_dict": random_state_dict("omv2_128_L")}, src)
    assert load_foreign(src)[0].config.image_size == 128  # 128_L: native 128 px (f8)
    tokens = tmp_path / "tokens"
    args = ["encode", "vqtool:sample", "--tokenizer", str(src), "--out", str(tokens)]
    enc = runner.invoke(app, [*args, "--image-size", "32", "--workers", "0", "--json"])
    assert enc.exit_code == 0, enc.output
    assert json.loads(enc.stdout)["tokens"] == 16 * 16  # 16 images of 4x4 tokens at f8
    meta = json.loads((tokens / "encode.json").read_text())
    assert meta["preprocessing"]["image_size"] == 32
    # decode runs the file at the size the tokens were encoded at
    one = tmp_path / "one.png"
    dec = runner.invoke(app, ["decode", str(tokens), "--tokenizer", str(src), "--out", str(one),
                              "--limit", "1"])  # fmt: skip
    assert dec.exit_code == 0, dec.output
    assert Image.open(one).size == (32, 32)
    report = runner.invoke(app, ["inspect", str(src), "--image-size", "64", "--json"])
    assert report.exit_code == 0, report.output
    assert json.loads(report.stdout)["layout"]["grids"] == [[8, 8]]


def test_image_size_is_refused_for_a_vqtool_tokenizer(tmp_path):
    result = runner.invoke(app, ["encode", "vqtool:sample", "--out", str(tmp_path / "t"),
                                 "--image-size", "128"])  # fmt: skip
    assert result.exit_code == 2
    assert "trained at 64 px" in result.stderr and "Traceback" not in result.output


def test_convert_refuses_a_bad_output_name_or_weights_choice_before_loading(tmp_path):
    # the output name is checked before the (possibly multi-GB) source is read
    result = runner.invoke(app, ["convert", "maskgit", str(tmp_path / "absent.bin"),
                                 "--out", str(tmp_path / "x.pt")])  # fmt: skip
    assert result.exit_code == 2 and "give a .safetensors file name" in result.stderr
    src = tmp_path / "pytorch_model.bin"
    torch.save(random_state_dict("maskgit_vqgan"), src)
    with pytest.raises(ValueError, match="--weights raw: this maskgit file holds one set"):
        load_foreign(src, weights="raw", image_size=32)
