"""The tokenizers of 2025-26 LMs.

- Emu3.5's VisionTokenizer (IBQ, 131,072 codes): its folder as users download it
  (config.yaml + model.ckpt), its code choice (the largest softmax of dot products, not
  the nearest code), its smart_resize, and ids above 65,535 through encode, inspect,
  decode, export (three formats) and a Megatron-Core read;
- Show-o's / MMaDA's MAGVIT-v2: per-stage blocks and widths, LFQ numbered from the most
  significant bit, torchvision's bicubic resize;
- SBER-MoVQGAN (Lumina-mGPT 2.0): the spatial-norm decoder, Lumina's crop lists, resizing
  in the image's own mode before the white blend.

Exactness against each original's own code on real photos (grey and RGBA included) in
the published architectures is measured by `benchmarks/parity_2025.py`, which runs that
code beside vqtool; here small models in the published layouts run the whole path."""

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from support.data import image_bytes, write_shard
from support.processes import in_megatron
from test_pretrained import reference_keys
from typer.testing import CliRunner

from vqtool.cli.main import app
from vqtool.data.images import encode_pixels
from vqtool.data.policies import area_size, best_crop, crop_sizes, parse_policy
from vqtool.models import Tokenizer, TokenizerConfig
from vqtool.pretrained.convert import detect_family, load_foreign
from vqtool.pretrained.families import REGISTRY
from vqtool.pretrained.vqgan import vqgan_mapping
from vqtool.quantizers import build_quantizer

runner = CliRunner()
CODES = 131072


def test_emu35_published_key_list_is_detected_and_maps_one_to_one():
    """The published architecture (455M parameters): taming's names, 131,072 codes."""
    ref = reference_keys("emu35_ibq")
    with torch.device("meta"):
        sd = {k: torch.empty(s) for k, s in ref.items()}
        assert detect_family(sd) == "emu3.5"
        assert detect_family({**sd, "quantize.embedding.weight": torch.empty(16384, 256)}) == (
            "taming"
        )  # the same names with a taming-sized codebook
        cfg = REGISTRY["emu3.5"].config(sd, 720)
        mapping = REGISTRY["emu3.5"].mapping(cfg)
    assert set(k for k in mapping if k in ref) == set(ref)
    assert len(set(mapping.values())) == len(mapping)
    m, q = cfg["model"], cfg["quantizer"]
    assert (m["channels"], m["channel_mult"], m["num_res_blocks"]) == (256, [1, 1, 2, 2, 4], 4)
    assert m["attention_levels"] == [4] and (m["z_channels"], m["embed_dim"]) == (256, 256)
    assert (q["codebook_size"], q["distance"]) == (CODES, "ibq")
    assert (cfg["policy"], cfg["resize"], cfg["pixel_arithmetic"]) == (
        "area:518400:16", "emu3", "float64"
    )  # fmt: skip


def test_ibq_takes_the_largest_dot_product_not_the_nearest_code():
    ibq = build_quantizer(2, {"kind": "vq", "codebook_size": 2, "ema_decay": None,
                              "kmeans_init": False, "distance": "ibq"}).eval()  # fmt: skip
    nearest = build_quantizer(2, {"kind": "vq", "codebook_size": 2, "ema_decay": None,
                                  "kmeans_init": False, "distance": "expanded"}).eval()  # fmt: skip
    for q in (ibq, nearest):
        q.embed.data = torch.tensor([[0.9, 0.0], [3.0, 0.0]])
    z = torch.tensor([[[1.0, 0.0]], [[-1.0, 0.0]]])  # (B=2, N=1, C=2)
    assert ibq(z).codes.flatten().tolist() == [1, 0]  # 1*3 > 1*0.9; -1*0.9 > -1*3
    assert nearest(z).codes.flatten().tolist() == [0, 0]
    assert torch.equal(ibq.decode_codes(torch.tensor([[1]])), torch.tensor([[[3.0, 0.0]]]))


def test_area_policy_follows_emu35_smart_resize():
    assert parse_policy("area:518400:16") == ("area", 518400, 16)
    for bad in ("area", "area:0", "area:x:16", "area:1:2:3"):
        with pytest.raises(ValueError, match="area:AREA"):
            parse_policy(bad)
    assert area_size(480, 640, 518400, 16) == (624, 832)  # int(sqrt(518400 * 3/4)) = 623
    for h, w in [(1000, 1000), (333, 1999), (2400, 1350), (17, 3000)]:
        nh, nw = area_size(h, w, 518400, 16)
        assert nh % 16 == 0 and nw % 16 == 0
        assert abs(nh * nw - 518400) / 518400 < 0.25 and abs(nw / nh - w / h) / (w / h) < 0.25
    with pytest.raises(ValueError, match="rounds to 0"):
        area_size(1, 9000, 518400, 16)  # 9000:1 at 720^2 pixels: a 7 px height rounds to 0


def small_emu35_folder(folder, seed=0):
    """A small model in Emu3.5's published layout (taming's names, IBQ's 131,072 codes),
    as its folder holds it: config.yaml + model.ckpt (a Lightning-style state_dict). Codes
    above 65,535 get the larger vectors, so the largest dot products pick them."""
    cfg = {
        "model": {"architecture": "conv", "channels": 32, "channel_mult": [1, 1, 2],
                  "num_res_blocks": 1, "decoder_res_blocks": 2, "attention": True,
                  "attention_levels": [2], "z_channels": 32, "embed_dim": 4,
                  "swish": "x_sigmoid", "attention_impl": "manual"},
        "quantizer": {"kind": "vq", "codebook_size": CODES, "ema_decay": None,
                      "kmeans_init": False, "distance": "ibq"},
        "image_size": 32, "pixel_range": "-1,1", "resize": "emu3",
        "pixel_arithmetic": "float64",
    }  # fmt: skip
    torch.manual_seed(seed)
    ours = Tokenizer(TokenizerConfig.from_dict(cfg)).state_dict()
    sd = {t: ours[m].clone() for t, m in vqgan_mapping(cfg, "taming").items() if m in ours}
    sd["quantize.embedding.weight"] = torch.randn(CODES, 4)  # spread: no near-ties
    sd["quantize.embedding.weight"][65536:] *= 3
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": sd, "loss.discriminator.w": torch.ones(1)}, folder / "model.ckpt")
    (folder / "config.yaml").write_text("n_embed: 131072\nembed_dim: 4\n")
    return folder


@pytest.fixture(scope="module")
def emu35(tmp_path_factory):
    return small_emu35_folder(tmp_path_factory.mktemp("emu35") / "Emu3.5-VisionTokenizer")


def test_emu35_folder_loads_with_its_own_rule_and_codes(emu35):
    tok, info = load_foreign(emu35)
    assert info.family == "emu3.5" and info.read_from == ["model.ckpt"]
    assert (tok.config.policy, tok.vocab_size) == ("area:518400:16", CODES)
    images = torch.randint(0, 256, (2, 3, 32, 48), dtype=torch.uint8)
    codes, grid = tok.encode_grid(images)
    assert grid == (8, 12)
    with torch.no_grad():  # the rule written out: argmax of z . e over the codebook
        z = tok.net.encoder(tok.normalize(images))
    flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
    embed = tok.net.quantizer.embed
    assert torch.equal(codes.flatten(), (flat @ embed.T).argmax(1))
    assert not torch.equal(codes.flatten(), torch.cdist(flat, embed).argmin(1))  # not nearest
    assert int(codes.max()) > 65535


@pytest.mark.slow
def test_ids_above_uint16_go_from_photos_to_megatron(emu35, tmp_path):
    photos = [(f"im{i}", {"png": image_bytes(i, size=s)})
              for i, s in enumerate([(64, 48), (48, 64), (56, 56)])]  # fmt: skip
    shard = write_shard(tmp_path / "s-000000.tar", photos)
    tokens = tmp_path / "tokens"
    enc = runner.invoke(app, ["encode", shard, "--tokenizer", str(emu35), "--out", str(tokens),
                              "--resize", "area:2048:16", "--workers", "0", "--json"])  # fmt: skip
    assert enc.exit_code == 0, enc.output
    table = pq.read_table(tokens / "part-000000.parquet")
    assert str(table.schema.field("tokens").type.value_type) == "uint32"
    rows = table.to_pylist()
    assert [(r["grid_h"], r["grid_w"]) for r in rows] == [(8, 12), (12, 8), (12, 12)]
    # Emu3.5 rule at 2048 px: 64x48 -> height int(39.2), width int(52.0) -> 32x48 (f = 4)
    ids = np.concatenate([r["tokens"] for r in rows])
    assert ids.max() > 65535
    meta = json.loads((tokens / "encode.json").read_text())
    assert meta["preprocessing"]["policy"] == "area:2048:16"
    assert meta["tokenizer"]["file"] == "model.ckpt" and meta["tokenizer"]["family"] == "emu3.5"

    ins = runner.invoke(app, ["inspect", str(tokens), "--json"])
    assert ins.exit_code == 0, ins.output
    report = json.loads(ins.stdout)  # usage over 131,072 codes, no 131,072-wide table
    assert (report["usage"]["vocab_size"], report["usage"]["tokens"]) == (CODES, len(ids))
    assert report["usage"]["dead"] == CODES - len(set(ids.tolist()))
    assert report["top_codes"][0]["code"] == np.bincount(ids).argmax() > 65535
    rarest = report["bottom_codes"]
    assert len(rarest) == 10 and rarest[0]["count"] == np.bincount(ids)[np.bincount(ids) > 0].min()
    dec = runner.invoke(app, ["decode", str(tokens), "--out", str(tmp_path / "png"), "--json"])
    assert dec.exit_code == 0, dec.output  # the tokenizer found again by its recorded sha256
    assert len(json.loads(dec.stdout)["images"]) == 3

    text_vocab = 151_000  # Emu3.5-sized: visual ids follow a ~151k text vocabulary
    layout = tmp_path / "layout.toml"
    layout.write_text(f"image_offset = {text_vocab}\neoi = {text_vocab + CODES}\n")
    docs = {}
    for fmt in ("megatron", "stream", "parquet"):
        out = tmp_path / fmt
        ex = runner.invoke(app, ["export", str(tokens), "--layout", str(layout), "--format", fmt,
                                 "--out", str(out), "--json"])  # fmt: skip
        assert ex.exit_code == 0, ex.output
        docs[fmt] = out
    code = (
        "import json, sys\n"
        "from megatron.core.datasets.indexed_dataset import IndexedDataset\n"
        "ds = IndexedDataset(sys.argv[1])\n"
        "print(json.dumps([str(ds[0].dtype)] + [ds[i].tolist() for i in range(len(ds))]))"
    )
    printed = in_megatron(code, docs["megatron"] / "part-000000")
    dtype, *megatron = json.loads(printed.splitlines()[-1])
    assert dtype == "int32"
    want = [[int(t) + text_vocab for t in r["tokens"]] + [text_vocab + CODES] for r in rows]
    assert megatron == want
    assert max(map(max, megatron)) > 2**16 + text_vocab
    stream = np.load(docs["stream"] / "part-000000.offsets.npy")
    flat = np.fromfile(docs["stream"] / "part-000000.bin", dtype=np.uint32)
    assert [flat[a:b].tolist() for a, b in zip(stream[:-1], stream[1:])] == want
    parquet = pq.read_table(docs["parquet"] / "part-000000.parquet").column("input_ids")
    assert parquet.to_pylist() == want


def test_showo_published_key_list_is_detected_and_maps_one_to_one():
    """showlab/magvitv2 (Show-o, MMaDA): stages of their own block counts and widths."""
    ref = reference_keys("showo_magvitv2")
    with torch.device("meta"):
        sd = {k: torch.empty(s) for k, s in ref.items()}
        assert detect_family(sd) == "show-o"
        cfg = REGISTRY["show-o"].config(sd, 256)
        mapping = {k: v for k, v in REGISTRY["show-o"].mapping(cfg).items() if k in ref}
    assert set(mapping) == {k for k in ref if not k.startswith("quantize.")}
    assert len(set(mapping.values())) == len(mapping)
    m = cfg["model"]
    assert (m["channel_mult"], m["decoder_channel_mult"]) == ([1, 2, 2, 4, 4], [1, 1, 2, 2, 4])
    assert (m["stage_res_blocks"], m["decoder_stage_res_blocks"]) == (
        [4, 3, 4, 3, 4], [4, 4, 3, 4, 3]
    )  # fmt: skip
    assert m["attention_levels"] == [] and (m["z_channels"], m["embed_dim"]) == (13, 13)
    assert cfg["quantizer"] == {"kind": "lfq", "codebook_size": 8192, "bit_order": "msb"}
    with torch.device("meta"):
        tok = Tokenizer(TokenizerConfig.from_dict(cfg))
    ours = tok.state_dict()
    for theirs, mine in mapping.items():
        assert ours[mine].numel() == int(np.prod(ref[theirs])), (theirs, mine)


def test_lfq_most_significant_bit_first_numbers_channel_zero_highest():
    msb = build_quantizer(3, {"kind": "lfq", "codebook_size": 8, "bit_order": "msb"}).eval()
    lsb = build_quantizer(3, {"kind": "lfq", "codebook_size": 8}).eval()
    z = torch.tensor([[[0.5, -0.2, 0.0]]])  # signs +, -, - (zero is negative)
    assert msb(z).codes.item() == 0b100 and lsb(z).codes.item() == 0b001
    every = torch.arange(8).reshape(1, 8)
    back = msb.decode_codes(every)[0]  # (8, 3): code 4 = +1 on channel 0 only
    assert back[4].tolist() == [1.0, -1.0, -1.0] and torch.equal(msb(back[None]).codes, every)


def small_showo_file(path, seed=0):
    """A small model in showlab/magvitv2's layout (a bare state_dict, as its
    pytorch_model.bin holds it): stages of their own blocks and widths, the encoder's
    and decoder's 1x1 convs, the LFQ tables (channel 0 the most significant bit)."""
    bits = 5
    cfg = {
        "model": {"architecture": "conv", "channels": 32, "channel_mult": [1, 2, 1],
                  "num_res_blocks": 2, "stage_res_blocks": [2, 1, 2],
                  "decoder_stage_res_blocks": [1, 2, 1], "decoder_channel_mult": [1, 1, 2],
                  "attention": True, "attention_levels": [], "z_channels": bits, "embed_dim": bits,
                  "swish": "x_sigmoid", "attention_impl": "manual"},
        "quantizer": {"kind": "lfq", "codebook_size": 2**bits, "bit_order": "msb"},
    }  # fmt: skip
    torch.manual_seed(seed)
    ours = Tokenizer(TokenizerConfig.from_dict(cfg)).state_dict()
    sd = {t: ours[m].clone() for t, m in REGISTRY["show-o"].mapping(cfg).items() if m in ours}
    codes = torch.arange(2**bits).unsqueeze(1)
    sd["quantize.power_vals"] = 2 ** torch.arange(bits - 1, -1, -1)
    sd["quantize.embedding"] = ((codes >> torch.arange(bits - 1, -1, -1)) & 1).float() * 2 - 1
    torch.save(sd, path)
    return path


def test_showo_file_converts_encodes_and_decodes(tmp_path):
    src = small_showo_file(tmp_path / "pytorch_model.bin")
    tok, info = load_foreign(src)
    assert (info.family, info.image_size, tok.config.resize) == ("show-o", 256, "showo")
    assert tok.config.pixel_arithmetic == "normalize_half"
    out = tmp_path / "showo.safetensors"
    result = runner.invoke(app, ["convert", "auto", str(src), "--out", str(out), "--json",
                                 "--image-size", "32"])  # fmt: skip
    assert result.exit_code == 0, result.output
    shard = write_shard(tmp_path / "s-000000.tar", [(f"im{i}", {"png": image_bytes(i, (48, 40))})
                                                    for i in range(3)])  # fmt: skip
    tokens, png = str(tmp_path / "tokens"), str(tmp_path / "png")
    enc = runner.invoke(app, ["encode", shard, "--tokenizer", str(out), "--out", tokens,
                              "--workers", "0", "--json"])  # fmt: skip
    assert enc.exit_code == 0, enc.output
    assert json.loads(enc.stdout)["images"] == 3
    dec = runner.invoke(app, ["decode", tokens, "--tokenizer", str(out), "--out", png, "--json"])
    assert dec.exit_code == 0, dec.output
    # the tables in the file must be the ones its bit order makes
    sd = torch.load(src)
    sd["quantize.embedding"] = sd["quantize.embedding"].flip(1)
    torch.save(sd, src)
    with pytest.raises(ValueError, match="not the \\+-1 table"):
        load_foreign(src)


def test_showo_resize_is_torchvisions_bicubic_resize_and_center_crop():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 47, 3), np.uint8))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    got = encode_pixels(buf.getvalue(), 16, "showo")[0]
    # Resize(16): short side 16, long side int(16 * 47 / 30) = 25; CenterCrop: left
    # round((25 - 16) / 2) = round(4.5) = 4 (half to even)
    want = np.asarray(img.resize((25, 16), Image.Resampling.BICUBIC))[:, 4:20]
    assert got.permute(1, 2, 0).numpy().tolist() == want.tolist()


def test_movqgan_published_key_list_is_detected_and_maps_one_to_one():
    """SBER-MoVQGAN 270M (Lumina-mGPT 2.0): 270.7M parameters in the published layout."""
    ref = reference_keys("movqgan_270M")
    with torch.device("meta"):
        sd = {k: torch.empty(s) for k, s in ref.items()}
        assert detect_family(sd) == "movqgan"
        cfg = REGISTRY["movqgan"].config(sd, 768)
        mapping = {k: v for k, v in REGISTRY["movqgan"].mapping(cfg).items() if k in ref}
        tok = Tokenizer(TokenizerConfig.from_dict(cfg))
    assert set(mapping) == set(ref) and len(set(mapping.values())) == len(mapping)
    ours = tok.state_dict()
    for theirs, mine in mapping.items():
        assert ours[mine].numel() == int(np.prod(ref[theirs])), (theirs, mine)
    assert sum(int(np.prod(s)) for s in ref.values()) == 270_669_103
    assert cfg["model"]["attention_levels"] == [3] and cfg["policy"] == "crops:768:32"
    assert (cfg["resize"], cfg["pixel_arithmetic"]) == ("lumina", "float64_unit")


def test_lumina_crop_list_and_choice():
    sizes = crop_sizes(768, 32)
    assert (768, 768) in sizes and (1536, 384) in sizes and (1568, 352) not in sizes  # ratio 4
    assert all(w % 32 == 0 and h % 32 == 0 and w * h <= 768**2 for w, h in sizes)
    assert best_crop(1000, 750, sizes) == (864, 640)  # 27 x 20 patches: 4:3 kept best
    assert best_crop(300, 300, sizes) == (768, 768)
    assert parse_policy("crops:768:32") == ("crops", 768, 32)
    with pytest.raises(ValueError, match="crops:TARGET:PATCH"):
        parse_policy("crops:16:32")


def test_lumina_resizes_in_the_images_own_mode_then_blends_over_white():
    """Lumina-mGPT opens an image without converting it, crops it (Pillow resizes RGBA
    with premultiplied alpha), and only then blends transparency over white."""
    rng = np.random.default_rng(0)
    rgba = np.dstack([rng.integers(0, 255, (40, 60, 3)), np.tile(np.linspace(0, 255, 60), (40, 1))])
    img = Image.fromarray(rgba.astype(np.uint8), "RGBA")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    got = encode_pixels(buf.getvalue(), 16, "lumina")[0].permute(1, 2, 0).numpy()
    half = img.resize((30, 20), Image.Resampling.BOX)  # both sides >= 2 x 16: halved first
    small = half.resize((24, 16), Image.Resampling.BICUBIC).crop((4, 0, 20, 16))
    a = np.asarray(small, dtype=np.float64)
    want = ((1 - a[..., 3:] / 255) * 255 + a[..., 3:] / 255 * a[..., :3]).astype(np.uint8)
    assert np.array_equal(got, want)
    blended_first = encode_pixels(buf.getvalue(), 16, "chameleon")[0].permute(1, 2, 0).numpy()
    assert not np.array_equal(got, blended_first)  # the order changes the pixels


def small_movq_file(path, seed=0):
    """A small model in MoVQGAN's layout (taming's encoder names, its decoder's spatial
    norms), as the published .ckpt holds it: a bare state_dict."""
    cfg = {
        "model": {"architecture": "movq", "channels": 32, "channel_mult": [1, 2],
                  "num_res_blocks": 1, "attention_levels": [1], "z_channels": 4,
                  "embed_dim": 4},
        "quantizer": {"kind": "vq", "codebook_size": 64, "ema_decay": None,
                      "kmeans_init": False, "distance": "expanded"},
    }  # fmt: skip
    torch.manual_seed(seed)
    ours = Tokenizer(TokenizerConfig.from_dict(cfg)).state_dict()
    mapping = REGISTRY["movqgan"].mapping(cfg)
    torch.save({t: ours[m].clone() for t, m in mapping.items() if m in ours}, path)
    return path


@pytest.mark.slow
def test_movqgan_file_keeps_each_images_lumina_crop(tmp_path):
    src = small_movq_file(tmp_path / "movqgan_67M.ckpt")
    samples = [(f"im{i}", {"png": image_bytes(i, size=s)})
               for i, s in enumerate([(96, 64), (40, 120), (64, 64)])]  # fmt: skip
    shard = write_shard(tmp_path / "s-000000.tar", samples)
    tokens = str(tmp_path / "tokens")
    enc = runner.invoke(app, ["encode", shard, "--tokenizer", str(src), "--out", tokens,
                              "--resize", "crops:64:16", "--workers", "0", "--json"])  # fmt: skip
    assert enc.exit_code == 0, enc.output
    rows = pq.read_table(f"{tokens}/part-000000.parquet").to_pylist()
    sizes = crop_sizes(64, 16)
    want = [best_crop(w, h, sizes) for w, h in [(96, 64), (40, 120), (64, 64)]]
    assert [(r["grid_w"] * 2, r["grid_h"] * 2) for r in rows] == want  # f2: pixels = 2 x grid
    dec = runner.invoke(app, ["decode", tokens, "--out", str(tmp_path / "png"), "--json"])
    assert dec.exit_code == 0, dec.output
    assert [Image.open(i["path"]).size for i in json.loads(dec.stdout)["images"]] == want
