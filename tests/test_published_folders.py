"""Every public family's folder as its release lays it out opens as `--tokenizer`
(small stand-in weights in the published formats and file names): the weight file is
found beside configs and code files, in taming's `checkpoints/` subfolder, across a
Cosmos release's two TorchScript files; a folder holding several whole tokenizers
(MoVQGAN's 67M / 102M / 270M) is refused in one line naming them."""

import json

import pytest
import torch
from safetensors.torch import save_file
from support.data import write_shard
from test_pretrained_2025 import small_emu35_folder, small_movq_file, small_showo_file
from test_pretrained_cosmos import release
from test_recipes import _emu3_file, _movq_f8, _vqgan_file
from typer.testing import CliRunner

from vqtool.cli.main import app
from vqtool.errors import CheckpointError
from vqtool.models import Tokenizer, TokenizerConfig
from vqtool.pretrained.families import REGISTRY
from vqtool.pretrained.opener import open_tokenizer

runner = CliRunner()


def _llamagen(folder):  # FoundationVision/vq-ds16-c2i: model.safetensors + config.json
    save_file(_vqgan_file("llamagen", 16384, 8, "llamagen"), str(folder / "model.safetensors"))
    (folder / "config.json").write_text("{}")


def _taming(folder):  # vqgan_imagenet_f16_1024/: checkpoints/last.ckpt + configs/model.yaml
    (folder / "checkpoints").mkdir()
    (folder / "configs").mkdir()
    torch.save({"state_dict": _vqgan_file("taming", 1024, 256, "taming")},
               folder / "checkpoints" / "last.ckpt")  # fmt: skip
    (folder / "configs" / "model.yaml").write_text("model: {}\n")


def _chameleon(folder):  # Chameleon's tokenizer/: vqgan.ckpt, vqgan.yaml, text_tokenizer.json
    torch.save({"state_dict": _vqgan_file("chameleon", 8192, 256 // 8, "taming")},
               folder / "vqgan.ckpt")  # fmt: skip
    (folder / "vqgan.yaml").write_text("model: {}\n")
    (folder / "text_tokenizer.json").write_text("{}")


def _emu3(folder):  # BAAI/Emu3-VisionTokenizer: model.safetensors, config.json, code
    save_file(_emu3_file(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text("{}")
    (folder / "modeling_emu3visionvq.py").write_text("# remote code, never run\n")


def _showo(folder):  # showlab/magvitv2: pytorch_model.bin + config.json
    small_showo_file(folder / "pytorch_model.bin")
    (folder / "config.json").write_text("{}")


def _small(family: str, model: dict, quantizer: dict) -> dict[str, torch.Tensor]:
    """A small model of a family in its published names (vqtool's, renamed back)."""
    cfg = {"model": model, "quantizer": quantizer, "image_size": 256}
    torch.manual_seed(0)
    ours = Tokenizer(TokenizerConfig.from_dict(cfg)).state_dict()
    return {t: ours[m].clone() for t, m in REGISTRY[family].mapping(cfg).items() if m in ours}


def _open_magvit2(folder):  # TencentARC/Open-MAGVIT2-Tokenizer-*: imagenet_*_L.ckpt
    sd = _small("open-magvit2", {"architecture": "magvit2", "channels": 32,
                                 "channel_mult": [1, 1, 2], "num_res_blocks": 1,
                                 "z_channels": 6},
                {"kind": "lfq", "codebook_size": 64, "entropy_weight": 0.0})  # fmt: skip
    torch.save({"state_dict": sd}, folder / "imagenet_128_L.ckpt")


def _maskgit(folder):  # openMUSE/maskgit-vqgan-imagenet-f16-256: config + pytorch_model.bin
    sd = _small("maskgit", {"architecture": "maskgit_vqgan", "channels": 32,
                            "channel_mult": [1, 1, 2], "num_res_blocks": 1, "z_channels": 8},
                {"kind": "vq", "codebook_size": 64, "ema_decay": None, "kmeans_init": False,
                 "distance": "addmm"})  # fmt: skip
    torch.save(sd, folder / "pytorch_model.bin")
    (folder / "config.json").write_text("{}")


def _janus(folder):  # deepseek-ai/Janus-Pro-*: the VQ inside the LM's shards, an index
    vq = {f"gen_vision_model.{k}": v
          for k, v in _vqgan_file("llamagen", 16384, 8, "llamagen").items()}  # fmt: skip
    lm = {"language_model.model.embed_tokens.weight": torch.zeros(8, 4)}
    save_file(lm, str(folder / "model-00001-of-00002.safetensors"))
    save_file(vq, str(folder / "model-00002-of-00002.safetensors"))
    where = {**{k: "model-00001-of-00002.safetensors" for k in lm},
             **{k: "model-00002-of-00002.safetensors" for k in vq}}  # fmt: skip
    index = {"metadata": {}, "weight_map": where}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    for name in ("config.json", "preprocessor_config.json", "tokenizer.json"):
        (folder / name).write_text("{}")


def _var(folder):  # FoundationVision/var on Hugging Face: vae_ch160v4096z32.pth beside var_d*
    from test_pretrained_var import SMALL

    sd = _small("var", SMALL["model"], SMALL["quantizer"])
    torch.save(sd, folder / "vae_ch160v4096z32.pth")
    # the VAR transformers beside it (names of VAR's own modules)
    torch.save({"class_emb.weight": torch.zeros(4, 2), "blocks.0.attn.mat_qkv.weight":
                torch.zeros(6, 2)}, folder / "var_d16.pth")  # fmt: skip


def _infinity(folder):  # FoundationVision/Infinity: infinity_vae_d32reg.pth beside the 2B model
    from test_pretrained_infinity import release as infinity_release

    infinity_release(folder, 32).rename(folder / "infinity_vae_d32reg.pth")
    torch.save({"word_embed.weight": torch.zeros(4, 2), "head.weight": torch.zeros(2, 4)},
               folder / "infinity_2b_reg.pth")  # fmt: skip


def _movqgan(folder):  # one of ai-forever/MoVQGAN's files in its own folder
    torch.save(_movq_f8(), folder / "movqgan_270M.ckpt")


FOLDERS = {
    "llamagen": _llamagen,
    "janus": _janus,
    "open-magvit2": _open_magvit2,
    "maskgit": _maskgit,
    "var": _var,
    "infinity": _infinity,
    "taming": _taming,
    "chameleon": _chameleon,
    "emu3": _emu3,
    "show-o": _showo,
    "movqgan": _movqgan,
    "emu3.5": small_emu35_folder,
    "cosmos": lambda folder: release(folder, dims=3, spatial=16, temporal=8),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FOLDERS))
def test_release_folder_opens_as_tokenizer(family, tmp_path):
    name = "Cosmos-1.0-Tokenizer-DV8x16x16" if family == "cosmos" else family
    folder = tmp_path / name
    folder.mkdir()
    FOLDERS[family](folder)
    native = family in ("var", "infinity")  # pyramids: their own schedules' sizes
    opened = open_tokenizer(str(folder), image_size=None if native else 32)
    assert opened.foreign.family == family
    record = opened.record()  # the files it was read from, found again by their sha256s
    files = [folder / p for p in record["read_from"]] if "read_from" in record else [
        opened.path]  # fmt: skip
    assert files and all(f.is_file() for f in files) and opened.path.is_relative_to(folder)


@pytest.mark.slow
def test_taming_folder_encodes_and_decode_finds_it_again(tmp_path):
    folder = tmp_path / "vqgan_imagenet_f16_1024"
    folder.mkdir()
    _taming(folder)
    from support.data import image_bytes

    shard = write_shard(tmp_path / "s-000000.tar", [("a", {"png": image_bytes(0)})])
    out = tmp_path / "tokens"
    enc = runner.invoke(app, ["encode", shard, "--tokenizer", str(folder), "--out", str(out),
                              "--image-size", "32", "--workers", "0", "-q"])  # fmt: skip
    assert enc.exit_code == 0, enc.output
    meta = json.loads((out / "encode.json").read_text())
    assert meta["tokenizer"]["file"] == "last.ckpt"
    dec = runner.invoke(app, ["decode", str(out), "--out", str(tmp_path / "png"), "--json"])
    assert dec.exit_code == 0, dec.output


def test_a_folder_of_several_tokenizers_is_refused_naming_them(tmp_path):
    folder = tmp_path / "MoVQGAN"
    folder.mkdir()
    small_movq_file(folder / "movqgan_67M.ckpt")
    small_movq_file(folder / "movqgan_270M.ckpt", seed=1)
    with pytest.raises(CheckpointError, match="movqgan_270M.ckpt, movqgan_67M.ckpt"):
        open_tokenizer(str(folder))
    res = runner.invoke(app, ["inspect", str(folder / "movqgan_67M.ckpt"), "--json"])
    assert res.exit_code == 0, res.output  # one named file opens
