"""The README's recipes for today's multimodal LMs, run as written: every command and
every trainer-side snippet of "Recipes: the data of today's multimodal LMs", with
random-weight stand-ins in the published file formats (small networks of the same
families: nothing can be downloaded) and stand-in text tokenizers holding the special
and image tokens the presets name."""

import re
import shlex
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from support.data import image_bytes, write_shard, write_text_tokenizer
from test_pretrained_2025 import small_showo_file
from test_pretrained_cosmos import release
from test_readme import README, run_python_blocks
from typer.testing import CliRunner

from vqtool.cli.main import app
from vqtool.models import Tokenizer, TokenizerConfig
from vqtool.pretrained.families import REGISTRY

WORDS = ["[UNK]", "fishes", "monuments", "*", *(str(i) for i in range(256))]


def _vqgan_file(family: str, codes: int, embed: int, naming: str) -> dict[str, torch.Tensor]:
    """A small VQGAN (f16, 32 channels) in a family's own names: vqtool's model with the
    family's config, its weights renamed back through the family's mapping."""
    model = {"architecture": "conv", "channels": 32, "channel_mult": [1, 1, 1, 1, 1],
             "num_res_blocks": 1, "decoder_res_blocks": 2, "attention": True,
             "attention_levels": [] if family == "chameleon" else [4], "z_channels": 32,
             "embed_dim": embed, "swish": "x_sigmoid", "attention_impl": "manual"}  # fmt: skip
    cfg = {"model": model, "quantizer": {"kind": "vq", "codebook_size": codes,
           "cosine": naming == "llamagen", "ema_decay": None, "kmeans_init": False,
           "distance": "expanded"}, "image_size": 64}  # fmt: skip
    torch.manual_seed(0)
    tok = Tokenizer(TokenizerConfig.from_dict(cfg))
    ours = tok.state_dict()
    fam = REGISTRY["llamagen" if naming == "llamagen" else "taming"]
    full = {**cfg, "model": {**model}}
    mapping = fam.mapping(full)
    out = {}
    for theirs, mine in mapping.items():
        if mine in ours:
            t = ours[mine]
            if theirs.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight")) or (
                theirs.endswith(("quant_conv.weight", "post_quant_conv.weight"))
            ):
                t = t.reshape(*t.shape[:2], 1, 1) if t.ndim == 2 else t
            out[theirs] = (t * 1.0).contiguous()
    return out


def _emu3_file() -> dict[str, torch.Tensor]:
    """A small Emu3 VisionTokenizer (f8, 32 base channels, 64 codes) in its own names."""
    import transformers
    from transformers.models.emu3.modeling_emu3 import Emu3VQVAE

    from vqtool.pretrained.renames import emu3_original_names

    torch.manual_seed(0)
    config = transformers.Emu3VQVAEConfig(
        codebook_size=64, embed_dim=4, latent_channels=4, base_channels=32,
        channel_multiplier=[1, 2, 2, 4], num_res_blocks=1, attn_resolutions=[3],
        temporal_downsample_factor=4, hidden_size=128, num_attention_heads=1,
    )  # fmt: skip
    sd = emu3_original_names(Emu3VQVAE(config).eval().state_dict())
    projections = (".q.weight", ".k.weight", ".v.weight", ".proj_out.weight")
    return {  # the original's 1x1 convolutions where transformers has Linear layers
        k: (
            v.reshape(*v.shape, 1, 1) if k.endswith(projections) and v.ndim == 2 else v
        ).contiguous()
        for k, v in sd.items()
    }


def _movq_f8() -> dict[str, torch.Tensor]:
    """A small f8 MoVQGAN (16 channels) in its published names (a bare state_dict)."""
    cfg = {
        "model": {"architecture": "movq", "channels": 32, "channel_mult": [1, 1, 1, 1],
                  "num_res_blocks": 1, "attention_levels": [], "z_channels": 4,
                  "embed_dim": 4},
        "quantizer": {"kind": "vq", "codebook_size": 64, "ema_decay": None,
                      "kmeans_init": False, "distance": "expanded"},
    }  # fmt: skip
    torch.manual_seed(0)
    ours = Tokenizer(TokenizerConfig.from_dict(cfg)).state_dict()
    mapping = REGISTRY["movqgan"].mapping(cfg)
    return {t: ours[m].clone() for t, m in mapping.items() if m in ours}


def _stand_ins(root: Path) -> None:
    photos = [((96, 64), "fishes"), ((64, 80), "monuments")]  # two aspect ratios
    samples = [(f"photo{i}", {"png": image_bytes(i, size=size), "txt": cap.encode()})
               for i, (size, cap) in enumerate(photos)]  # fmt: skip
    (root / "shards").mkdir()
    write_shard(root / "shards" / "000000.tar", samples)
    # VAR: vae_ch160v4096z32.pth (a bare state_dict; here a small one), labelled photos
    from test_pretrained_var import SMALL

    var = Tokenizer(TokenizerConfig.from_dict(SMALL)).state_dict()
    torch.save({t: var[m].clone() for t, m in REGISTRY["var"].mapping(SMALL).items() if m in var},
               root / "vae_ch160v4096z32.pth")  # fmt: skip
    (root / "labelled").mkdir()
    write_shard(root / "labelled" / "000000.tar",
                [(f"photo{i}", {"png": image_bytes(i, size=(96, 80)), "cls": str(i).encode()})
                 for i in range(3)])  # fmt: skip
    # Chameleon's release: tokenizer/vqgan.ckpt (Lightning layout) + text_tokenizer.json
    cham = root / "chameleon" / "tokenizer"
    cham.mkdir(parents=True)
    torch.save({"state_dict": _vqgan_file("chameleon", 8192, 256 // 8, "taming")},
               cham / "vqgan.ckpt")  # fmt: skip
    letters = str.maketrans("0123456789", "ABCDEFGHIJ")
    image = [f"IMGIMG{str(c).translate(letters)}Z" for c in range(8192)]
    write_text_tokenizer(cham / "text_tokenizer.json", WORDS + image,
                         ["<s>", "</s>", "<racm3:break>", "<eoss>"])  # fmt: skip
    (root / "gemma-7b").mkdir()  # Gemma's first ids: <pad> <eos> <bos> <unk>
    write_text_tokenizer(root / "gemma-7b" / "tokenizer.json",
                         ["<pad>", "<eos>", "<bos>", "<unk>", *WORDS],
                         ["<boi>", "<eoi>", "<unconditional>"], unk="<unk>")  # fmt: skip
    # Emu3: BAAI/Emu3-VisionTokenizer model.safetensors; Emu3's text tokenizer
    emu3 = root / "emu3" / "Emu3-VisionTokenizer"
    emu3.mkdir(parents=True)
    save_file(_emu3_file(), str(emu3 / "model.safetensors"))
    specials = ["<|extra_203|>", "<|extra_204|>", "<|image start|>", "<|image end|>",
                "<|image token|>", "<|extra_200|>", "<|extra_201|>"]  # fmt: skip
    write_text_tokenizer(root / "emu3" / "tokenizer.json", WORDS,
                         specials + [f"<|visual token {i:06d}|>" for i in range(64)])  # fmt: skip
    # Emu3.5: the BAAI/Emu3.5-VisionTokenizer folder (config.yaml + Lightning-style
    # model.ckpt), IBQ's 131,072 codes; Emu3.5's text tokenizer (visual tokens last)
    emu35 = root / "Emu3.5-VisionTokenizer"
    emu35.mkdir()
    torch.save({"state_dict": _vqgan_file("emu3.5", 131072, 4, "taming")}, emu35 / "model.ckpt")
    (emu35 / "config.yaml").write_text("n_embed: 131072\nembed_dim: 4\n")
    (root / "emu3.5").mkdir()
    write_text_tokenizer(root / "emu3.5" / "tokenizer.json", [*WORDS, "You", "are", "a",
                         "helpful", "assistant", "for", "t2i", "task", ".", "USER", ":",
                         "ASSISTANT"], ["<|extra_203|>", "<|extra_100|>", "<|image start|>",
                         "<|image end|>", "<|image token|>", "<|extra_200|>",
                         *(f"<|visual token {i:06d}|>" for i in range(131072))])  # fmt: skip
    # Show-o: showlab/magvitv2's pytorch_model.bin; Phi-1.5's tokenizer as Show-o leaves it
    (root / "magvitv2").mkdir()
    small_showo_file(root / "magvitv2" / "pytorch_model.bin")
    (root / "show-o").mkdir()
    write_text_tokenizer(root / "show-o" / "tokenizer.json", WORDS,
                         ["<|endoftext|>", "[PAD]", "<|soi|>", "<|eoi|>", "<|sov|>", "<|eov|>",
                          "<|t2i|>", "<|mmu|>", "<|t2v|>", "<|v2v|>", "<|lvg|>"])  # fmt: skip
    # SimpleAR: the Cosmos-1.0-Tokenizer-DV8x16x16 release folder (traced encoder.jit and
    # decoder.jit); Qwen2.5's tokenizer with SimpleAR's seven added tokens
    release(root / "Cosmos-1.0-Tokenizer-DV8x16x16", dims=3, spatial=16, temporal=8)
    (root / "SimpleAR-0.5B").mkdir()
    write_text_tokenizer(root / "SimpleAR-0.5B" / "tokenizer.json", [*WORDS, "A", "of"],
                         ["<|t2i|>", "<|i2t|>", "<|soi|>", "<|vtokens|>", "<|t2v|>", "<|v2t|>",
                          "<|sov|>"])  # fmt: skip
    # Lumina-mGPT 2.0: movqgan_270M.ckpt (a bare state_dict; here a small f8 MoVQGAN) and
    # its Chameleon-style text tokenizer
    torch.save(_movq_f8(), root / "movqgan_270M.ckpt")
    (root / "Lumina-mGPT-2.0").mkdir()
    write_text_tokenizer(root / "Lumina-mGPT-2.0" / "tokenizer.json",
                         [*WORDS, "Generate", "an", "image", "of", "according", "to", "the",
                          "following", "prompt", ":"],
                         ["<s>", "</s>", "<racm3:break>", "<eoss>", "<reserved08706>",
                          *(f"<reserved{n:05d}>" for n in range(8799, 8849))])  # fmt: skip
    # Janus-Pro: the LM's folder, the VQ inside as gen_vision_model.*, and its tokenizer
    janus = root / "Janus-Pro-1B"
    janus.mkdir()
    vq = {f"gen_vision_model.{k}": v for k, v in _vqgan_file("janus", 16384, 8, "llamagen").items()}
    save_file({**vq, "language_model.model.norm.weight": torch.ones(8)},
              str(janus / "model.safetensors"))  # fmt: skip
    write_text_tokenizer(janus / "tokenizer.json", [*WORDS, ":"],
                         ["<|User|>", "<|Assistant|>", "<｜begin▁of▁sentence｜>",
                          "<begin_of_image>", "<end_of_image>"])  # fmt: skip


@pytest.mark.slow
def test_readme_lm_recipes_run_as_written(tmp_path, monkeypatch):
    text = README.read_text()
    section = text[text.index("## Recipes: the data of today's multimodal LMs") :]
    section = section[: section.index("\n## ", 10)]
    monkeypatch.chdir(tmp_path)
    _stand_ins(tmp_path)
    runner = CliRunner()
    ran = 0
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.splitlines():
            if line.startswith("vqtool "):
                result = runner.invoke(app, shlex.split(line)[1:])
                assert result.exit_code == 0, (line, result.output)
                ran += 1
    assert ran == 20
    assert run_python_blocks(section) == 10
    inspect = runner.invoke(app, ["inspect", "emu3-tokens/", "--json"])
    assert inspect.exit_code == 0 and len(__import__("json").loads(inspect.stdout)["grids"]) == 2
