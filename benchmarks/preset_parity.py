"""Each LM export preset against the original project's own sequence code, on real photos.

    python benchmarks/preset_parity.py --originals DIR [--images 16]

DIR holds checkouts of the original code (never part of this repository; the names
`fetch` gives them): baaivision+Emu3, FoundationVision+Liquid, facebookresearch+chameleon,
deepseek-ai+Janus. The bundled tokenizer encodes the bundled sample photos (real photos,
their category as the caption); `vqtool export` writes each preset; then each original's
code builds the same documents from the same codes and captions, with its random choices
(prompt drop, T2I/I2T mode, instruction phrase) set to the draws vqtool made for the
sample, and the two are compared id for id, loss mask included:

- emu3: `emu3/train/datasets.py` Emu3FeatureDataset.__getitem__ (its own .pth files);
- liquid, both modes: `liquid/train/train.py` DataCollatorForSupervisedDataset (the class
  and `random_choice_t2iprompt_from_list` executed from the file's source: the module
  itself imports the whole trainer);
- chameleon: `chameleon/inference/chameleon.py` TokenManager.tokens_from_ui + tokenize_image
  (executed from source on a stand-in object) with `vocab.py` VocabInfo/VocabTranslation;
- janus and janus-1.3b: `janus/models/processing_vlm.py`
  apply_sft_template_for_multi_turn_prompts with `janus/utils/conversation.py`, then
  `prompt + image_start_tag` encoded with BOS as `demo/app_januspro.py` (roles
  "<|User|>") and `generation_inference.py` (roles "User") do, on captions with surrounding
  whitespace, inner newlines and empty ones;
- lwm: `lwm/data.py` VisionTextProcessor.__call__ (fields "[caption],vision"), its
  tokenizer adding <s> to every text as LWM's LLaMA tokenizer does;
- show-o: `training/prompting_utils.py` UniversalPrompting (its __init__ adding [PAD] and
  its special tokens to the tokenizer, t2i_prompt with its condition drop), image ids as
  `training/train.py` offsets them; showlab+Show-o joins DIR;
- emu3.5: `src/utils/input_utils.py` format_image_string and the t2i template of
  `configs/example_config_t2i.py` (build_unc_and_template), on rows of their own grids;
  baaivision+Emu3.5 joins DIR;
- class-prefix: LlamaGen's `autoregressive/models/gpt.py` LabelEmbedder.token_drop (class
  dropout 0.1, the null class `num_classes`), the class then the codes, targets the codes
  (`autoregressive/train/train_c2i.py`: model(cond_idx, idx=codes[:, :-1], targets=codes)).
  FoundationVision+LlamaGen joins DIR.

The text tokenizer is a stand-in word-level tokenizer.json holding each LM's special and
image tokens (the real ones cannot be downloaded here), the same file on both sides.
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib.util
import json
import random
import sys
import tempfile
import time
import types
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow.parquet as pq
import torch

from vqtool.export.job import ExportConfig, export
from vqtool.lm.layout import load_layout, sample_uniforms
from vqtool.tokens.encode import EncodeConfig, encode

LIQUID_WORDS = (
    "Generate an image based on this description Create that captures the provided Based "
    "previous text produce a corresponding Please illustrate above with picture Translate "
    "given into Construct visual representation of matches Formulate expression reflects "
    "narrative just Give depiction sentences using information mentioned as guidance The "
    "caption is . :"
).split()


def run_source(path: Path, names: list[str], namespace: dict) -> dict:
    """Execute the named top-level definitions of an original file (its imports are the
    caller's `namespace`)."""
    tree = ast.parse(path.read_text())
    def defines(node) -> set:
        if isinstance(node, ast.Assign):  # a constant such as SimpleAR's PROMPTS_GEN
            return {t.id for t in node.targets if isinstance(t, ast.Name)}
        return {getattr(node, "name", None)}

    picked = [n for n in tree.body if defines(n) & set(names)]
    exec(compile(ast.Module(picked, []), str(path), "exec"), namespace)  # noqa: S102
    return namespace


def method_source(path: Path, cls: str, names: list[str], namespace: dict) -> dict:
    tree = ast.parse(path.read_text())
    klass = next(n for n in tree.body if getattr(n, "name", None) == cls)
    picked = [n for n in klass.body if getattr(n, "name", None) in names]
    exec(compile(ast.Module(picked, []), str(path), "exec"), namespace)  # noqa: S102
    return namespace


def module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def stand_in_tokenizer(
    path: Path, words: list[str], specials: list[str], bos: str | None, texts=None
):
    """A word-level tokenizer.json (vqtool reads the file) and the transformers fast
    tokenizer over the same file (the originals call it), BOS added as theirs do. Given
    `texts`, a byte-level BPE trained on them instead, in which whitespace is tokens (as in
    the LMs' own tokenizers), so a stray space or newline changes the ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if texts is not None:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400,
                                                           initial_alphabet=alphabet))  # fmt: skip
    else:
        words = list(dict.fromkeys(["[UNK]", *words]))
        tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok.add_special_tokens(specials)
    tok.save(str(path))
    fast = PreTrainedTokenizerFast(tokenizer_file=str(path), model_max_length=4096)
    if bos:  # the LM's tokenizer adds BOS when asked to add special tokens
        wrapped = Tokenizer.from_file(str(path))
        wrapped.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, wrapped.token_to_id(bos))]
        )
        fast = PreTrainedTokenizerFast(tokenizer_object=wrapped, model_max_length=4096)
        fast.bos_token = bos
    return fast


def ours(tokens: Path, out: Path, preset: str, text: Path, sets: list[str]):
    export(ExportConfig(tokens=[str(tokens)], layout=preset, format="parquet", out=str(out),
                        text_tokenizer=str(text), sets=sets))  # fmt: skip
    return pq.read_table(out / "part-000000.parquet").to_pylist()


def report(name: str, pairs: list[tuple[list, list, list, list]]) -> str:
    ids = sum(a == b for a, b, _, _ in pairs)
    masks = sum(m == n for _, _, m, n in pairs)
    return f"| {name} | {len(pairs)} | {ids} of {len(pairs)} | {masks} of {len(pairs)} |"


def emu3(root: Path, tokens, rows, tmp: Path, grid, drop: float = 0.05) -> str:
    datasets = module(root / "emu3/train/datasets.py", "emu3_datasets")
    specials = ["<|extra_203|>", "<|extra_204|>", "<|image start|>", "<|image end|>",
                "<|image token|>", "<|extra_200|>", "<|extra_201|>", "<|endoftext|>"]  # fmt: skip
    visual = [f"<|visual token {i:06d}|>" for i in range(1000)]
    words = [*{r["caption"] for r in rows}, "*", *map(str, range(100))]
    fast = stand_in_tokenizer(tmp / "emu3.json", words, specials + visual, None)
    fast.bos_token, fast.pad_token = "<|extra_203|>", "<|endoftext|>"
    fast.boi_token, fast.img_token = "<|image start|>", "<|image token|>"
    fast.eol_token, fast.eof_token, fast.eoi_token = (
        "<|extra_200|>",
        "<|extra_201|>",
        "<|image end|>",
    )
    mine = ours(tokens, tmp / f"emu3-{drop}", "emu3", tmp / "emu3.json", [f"caption_drop={drop}"])
    feature = tmp / f"emu3-features-{drop}"
    feature.mkdir()
    names = []
    for r in rows:
        torch.save({"images": torch.tensor(r["tokens"]).reshape(grid), "texts": r["caption"]},
                   feature / f"{r['key']}.pth")  # fmt: skip
        names.append(f"{r['key']}.pth")
    listing = tmp / f"emu3-list-{drop}.json"
    listing.write_text(json.dumps({"prefix": str(feature), "path_list": names}))
    args = types.SimpleNamespace(
        data_path=str(listing), null_prompt_prob=drop, apply_loss_on_only_vision=True,
        ignore_index=-100, visual_token_pattern="<|visual token {token_id:0>6d}|>",
        codebook_size=1000,
    )  # fmt: skip
    ds = datasets.Emu3FeatureDataset(args, fast)
    draws = sample_uniforms(0, [r["key"] for r in rows])
    pairs = []
    for i in range(len(rows)):
        with mock.patch.object(random, "random", lambda u=draws[i, 1]: u):  # the prompt drop
            sample = ds[i]
        keep = sample["attention_mask"].bool()
        theirs = sample["input_ids"][keep].tolist()
        their_mask = (sample["labels"][keep] != -100).long().tolist()
        pairs.append((mine[i]["input_ids"], theirs, mine[i]["loss_mask"], their_mask))
    dropped = int((draws[:, 1] < drop).sum())
    return report(f"emu3, null_prompt_prob {drop} ({dropped} dropped) (Emu3FeatureDataset)", pairs)


def liquid(root: Path, tokens, rows, tmp: Path, share: float) -> str:
    """Liquid's collator; the seed is the first that gives two unconditional samples, so
    the 10% `<unconditional>` branch runs too."""
    keys = [r["key"] for r in rows]
    seed = next(s for s in range(1000) if (sample_uniforms(s, keys)[:, 1] < 0.1).sum() >= 2)
    import transformers

    ns = {"torch": torch, "np": np, "json": json, "random": random, "dataclass": __import__(
        "dataclasses").dataclass, "transformers": transformers, "Dict": dict,
        "Sequence": list, "IGNORE_INDEX": -100}  # fmt: skip
    names = ["random_choice_t2iprompt_from_list", "DataCollatorForSupervisedDataset"]
    run_source(root / "liquid/train/train.py", names, ns)
    words = [*{r["caption"] for r in rows}, *LIQUID_WORDS]
    specials = ["<pad>", "<eos>", "<bos>", "<boi>", "<eoi>", "<unconditional>"]
    fast = stand_in_tokenizer(tmp / "gemma.json", words, specials, "<bos>")
    fast.pad_token = "<pad>"
    sets = [f"caption_before_share={share}", f"seed={seed}"]
    sets += ['caption="random"'] if share < 1 else []
    mine = ours(tokens, tmp / f"liquid-{share}", "liquid", tmp / "gemma.json", sets)
    collate = ns["DataCollatorForSupervisedDataset"](
        tokenizer=fast, data_args=types.SimpleNamespace(vq_resolution="512", T2I_ratio=share)
    )
    phrases = load_layout("liquid").caption_suffixes
    draws = sample_uniforms(seed, keys)
    pairs = []
    for i, r in enumerate(rows):
        u = draws[i]
        rolls = iter([u[0], 1 - u[1]])  # T2I if < T2I_ratio; unconditional if > 0.9
        phrase = phrases[min(int(u[3] * len(phrases)), len(phrases) - 1)]
        instance = {"data_type": "image_text", "vqcode_512": json.dumps(r["tokens"]),
                    "text": r["caption"]}  # fmt: skip
        roll = mock.patch.object(np.random, "rand", lambda rolls=rolls: next(rolls))
        choose = mock.patch.object(random, "choice", lambda _, phrase=phrase: phrase)
        with roll, choose:
            batch = collate([instance])
        theirs = batch["input_ids"][0].tolist()
        their_mask = (batch["labels"][0] != -100).long().tolist()
        pairs.append((mine[i]["input_ids"], theirs, mine[i]["loss_mask"], their_mask))
    t2i = draws[:, 0] < share
    mode = f"T2I_ratio {share}: {int(t2i.sum())} T2I ({int((t2i & (draws[:, 1] < 0.1)).sum())} "
    mode += f"unconditional), {int((~t2i).sum())} caption mode"
    return report(f"liquid, {mode} (DataCollatorForSupervisedDataset)", pairs)


def chameleon(root: Path, tokens, rows, tmp: Path) -> str:
    from tokenizers import Tokenizer

    vocab = module(root / "chameleon/inference/vocab.py", "chameleon_vocab")
    letters = str.maketrans("0123456789", "ABCDEFGHIJ")
    image = [f"IMGIMG{str(c).translate(letters)}Z" for c in range(1000)]
    specials = ["<s>", "</s>", "<racm3:break>", "<eoss>", "<pad>", "<reserved08706>"]
    stand_in_tokenizer(tmp / "chameleon.json", [*{r["caption"] for r in rows}, *image],
                       specials, None)  # fmt: skip
    mine = ours(tokens, tmp / "chameleon-out", "chameleon", tmp / "chameleon.json", [])
    text = Tokenizer.from_file(str(tmp / "chameleon.json"))
    info = vocab.VocabInfo(text.get_vocab(with_added_tokens=True))
    ns = run_source(root / "chameleon/inference/chameleon.py", [], {"Image": object})
    method_source(root / "chameleon/inference/chameleon.py", "TokenManager",
                  ["tokens_from_ui", "tokenize_text", "tokenize_image"], ns)  # fmt: skip
    pairs = []
    for i, r in enumerate(rows):
        model = types.SimpleNamespace(vocab=info, tokenizer=text,
                                      translation=vocab.VocabTranslation(info))  # fmt: skip
        model.image_tokenizer = types.SimpleNamespace(
            img_tokens_from_pil=lambda _, t=r["tokens"]: torch.tensor(t)
        )
        model.tokenize_text = types.MethodType(ns["tokenize_text"], model)
        model.tokenize_image = types.MethodType(ns["tokenize_image"], model)
        theirs = ns["tokens_from_ui"](model, [{"type": "text", "value": r["caption"]},
                                              {"type": "image", "value": object()}])  # fmt: skip
        pairs.append((mine[i]["input_ids"], theirs, [], []))
    return report("chameleon (tokens_from_ui)", pairs) + " (no loss mask in the source)"


def janus(root: Path, tmp: Path, preset: str) -> str:
    """Janus' prompt built by its own apply_sft_template_for_multi_turn_prompts (roles
    "<|User|>"/"<|Assistant|>" as demo/app_januspro.py, "User"/"Assistant" as
    generation_inference.py for Janus-1.3B) + image_start_tag, encoded with BOS; captions
    as corpora hold them: surrounding whitespace, inner newlines, empty ones."""
    conversation = module(root / "janus/utils/conversation.py", "janus_conversation")
    ns = method_source(root / "janus/models/processing_vlm.py", "VLChatProcessor",
                       ["apply_sft_template_for_multi_turn_prompts"],
                       {"get_conv_template": conversation.get_conv_template, "List": list,
                        "Dict": dict})  # fmt: skip
    roles = ("<|User|>", "<|Assistant|>") if preset == "janus" else ("User", "Assistant")
    tokens, rows = captioned_tokens(tmp, f"janus-{preset}")
    bos = "<｜begin▁of▁sentence｜>"
    specials = ["<|User|>", "<|Assistant|>", bos, "<begin_of_image>", "<end_of_image>"]
    texts = [r["caption"] for r in rows] + ["User: \n\nAssistant:"]
    fast = stand_in_tokenizer(tmp / f"{preset}.json", [], specials, bos, texts)
    mine = ours(tokens, tmp / f"{preset}-out", preset, tmp / f"{preset}.json", [])
    pairs = []
    for i, r in enumerate(rows):
        sft = ns["apply_sft_template_for_multi_turn_prompts"](
            None, [{"role": roles[0], "content": r["caption"]},
                   {"role": roles[1], "content": ""}], "deepseek", "")  # fmt: skip
        prompt = fast.encode(sft + "<begin_of_image>")
        codes = [len(fast) + c for c in r["tokens"]]
        theirs = prompt + codes + [fast.convert_tokens_to_ids("<end_of_image>")]
        their_mask = [0] * len(prompt) + [1] * len(codes) + [0]
        pairs.append((mine[i]["input_ids"], theirs, mine[i]["loss_mask"], their_mask))
    shapes = sum(r["caption"] != r["caption"].strip() for r in rows)
    empty = sum(not r["caption"].strip() for r in rows)
    return report(f"{preset} ({shapes} captions with surrounding whitespace, {empty} empty)",
                  pairs)  # fmt: skip


class _ConfigDict(dict):
    """ml_collections' ConfigDict as VisionTextProcessor uses it (attributes, update)."""

    __getattr__ = dict.__getitem__
    __setattr__ = dict.__setitem__

    def copy_and_resolve_references(self):
        return _ConfigDict(self)


def lwm(root: Path, tokens, rows, tmp: Path) -> str:
    """LWM's VisionTextProcessor.__call__ (executed from lwm/data.py's source) with fields
    "[caption],vision", over a tokenizer that adds <s> to every text it encodes, as LWM's
    LLaMA tokenizer does (add_bos_token): vision ids mapped into one id space as the
    preset does (len(text tokenizer) + vision id where the vision mask is set)."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    words = [*{w for r in rows for w in r["caption"].split()}, "<", ">", "/", "vision"]
    stand_in_tokenizer(tmp / "lwm.json", words, ["<s>", "</s>"], None)
    tok = Tokenizer.from_file(str(tmp / "lwm.json"))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    tok.save(str(tmp / "lwm.json"))  # LLaMA's tokenizer.json adds <s> the same way
    fast = PreTrainedTokenizerFast(tokenizer_file=str(tmp / "lwm.json"), bos_token="<s>",
                                   eos_token="</s>")  # fmt: skip
    mine = ours(tokens, tmp / "lwm-out", "lwm", tmp / "lwm.json", [])
    ns = method_source(root / "lwm/data.py", "VisionTextProcessor",
                       ["get_default_config", "__init__", "__call__"],
                       {"ConfigDict": _ConfigDict, "random": random, "np": np})  # fmt: skip
    processor = types.SimpleNamespace(tokenizer=fast)
    processor.config = ns["get_default_config"](
        {"fields_from_example": "fields", "eof_token": 1000, "eov_token": 1001}
    )  # the bundled tokenizer's 1,000 codes: LWM's ids of size + 0 and size + 1
    processor.vision_start, processor.vision_end = fast.encode("<vision>"), fast.encode("</vision>")
    pairs = []
    for i, r in enumerate(rows):
        example = {"fields": "[caption],vision", "caption": r["caption"], "vision": r["tokens"]}
        ids, mask, vision, *_ = ns["__call__"](processor, (example, i), has_aux=True)
        theirs = [len(fast) + t if v else t for t, v in zip(ids, vision)]
        pairs.append((mine[i]["input_ids"], theirs, mine[i]["loss_mask"], [int(m) for m in mask]))
    return report("lwm (VisionTextProcessor, a tokenizer adding <s> per text)", pairs)


def showo(root: Path, tmp: Path, drop: float) -> str:
    """Show-o's UniversalPrompting (training/prompting_utils.py, executed from source) over
    a GPT-2-style byte-level tokenizer (Phi-1.5's kind: BOS = EOS = <|endoftext|>, none
    added by encoding) with [PAD] and its nine tokens added by its own __init__; the
    tokenizer it leaves is the file vqtool reads. Image ids = codes + len(tokenizer), as
    training/train.py adds them; its condition drop driven by vqtool's draws; the loss
    from <|soi|> on (train.py's logits[:, max_seq_length + 1:]). Captions as corpora hold
    them, one longer than the 129-id text part (cut as Show-o cuts it)."""
    from transformers import PreTrainedTokenizerFast

    from vqtool.lm.layout import load_layout, sample_uniforms

    tokens, rows = captioned_tokens(tmp, f"showo-{drop}", long=True)
    texts = [r["caption"] for r in rows]
    stand_in_tokenizer(tmp / "phi.json", [], ["<|endoftext|>"], None, texts)
    end = "<|endoftext|>"
    fast = PreTrainedTokenizerFast(tokenizer_file=str(tmp / "phi.json"), bos_token=end,
                                   eos_token=end)  # fmt: skip
    ns = run_source(root / "training/prompting_utils.py", ["UniversalPrompting"],
                    {"torch": torch})  # fmt: skip
    prompting = ns["UniversalPrompting"](fast, max_text_len=128, cond_dropout_prob=drop)
    fast.save_pretrained(str(tmp / f"phi-showo-{drop}"))  # with [PAD] and the nine tokens
    text = tmp / f"phi-showo-{drop}" / "tokenizer.json"
    mine = ours(tokens, tmp / f"showo-out-{drop}", "show-o", text, [f"caption_drop={drop}"])
    rand = sample_uniforms(load_layout("show-o").seed, [r["key"] for r in rows])
    codes = torch.tensor([r["tokens"] for r in rows]) + len(fast)
    with mock.patch.object(torch, "rand", lambda n: torch.tensor(rand[:n, 1])):
        ids, _, labels = prompting((texts, codes, codes.clone()), "t2i")
    pairs, dropped = [], int((rand[:, 1] < drop).sum())
    for i in range(len(rows)):
        theirs = ids[i].tolist()
        their_mask = [0] * 129 + [1] * (len(theirs) - 129)  # logits[:, max_seq_length + 1:]
        pairs.append((mine[i]["input_ids"], theirs, mine[i]["loss_mask"], their_mask))
    long = sum(len(fast.encode(t)) > 126 for t in texts)
    return report(f"show-o, cond_dropout_prob {drop} ({dropped} dropped, {long} cut)",
                  pairs)  # fmt: skip


def captioned_tokens(tmp: Path, name: str, long: bool = False, shapes=None):
    """The bundled photos with captions as web corpora hold them, encoded (`long`: one
    caption of some 300 words; `shapes`: the caption forms, {} the photo's words)."""
    import io
    import tarfile

    from vqtool.assets import resolve
    from vqtool.data.sources import expand_sources, iter_samples

    shapes = shapes or ["{}", "  {}  ", "\n{}\n", "{} \n second line ", "", "   ", "\t{}"]
    shard = tmp / f"{name}.tar"
    with tarfile.open(shard, "w") as tar:
        for i, s in enumerate(iter_samples(expand_sources([resolve("vqtool:sample")])[0])):
            caption = shapes[i % len(shapes)].format(f"photo number {i}")
            if long and i == 2:
                caption = " ".join(f"word{j % 37} and" for j in range(150))
            meta = json.dumps({"caption": caption}).encode()  # .txt captions are stripped
            for ext, data in (("jpg", s.data), ("json", meta)):
                info = tarfile.TarInfo(f"{s.key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    tokens = tmp / f"tokens-{name}"
    encode(EncodeConfig(sources=[str(shard)], tokenizer="vqtool:fsq-f4-64", out=str(tokens),
                        workers=0, caption_from="json:caption"))  # fmt: skip
    return tokens, pq.read_table(tokens / "part-000000.parquet").to_pylist()


def simplear(root: Path, tmp: Path, drop: float) -> str:
    """SimpleAR: T2TokenDataset._get_item (simpar/train/t2token_data.py) with
    preprocess_t2i (simpar/train/preprocess.py), both executed from their source, reading
    the .npy codes and label files written as simpar/data/extract_token.py writes them
    (caption stripped, newlines as spaces), sample_short on, over a byte-level BPE stand-in
    for Qwen2's tokenizer (no BOS) with SimpleAR's seven special tokens added; its
    random.random (condition drop) and both random.choice calls (first sentence or whole
    caption; the PROMPTS_GEN phrase) answered with vqtool's draws."""
    from vqtool.lm.layout import load_layout, sample_uniforms

    shapes = ["{}. A second sentence.", "  {}. Trailing spaces.  ", "{} without a period",
              "first line {}.\nsecond line.", "", "   ", "\t{}. tab"]  # fmt: skip
    tokens, rows = captioned_tokens(tmp, f"simplear-{drop}", shapes=shapes)
    prompts = run_source(root / "simpar/train/preprocess.py", ["PROMPTS_GEN"], {})["PROMPTS_GEN"]
    texts = [r["caption"] for r in rows] + prompts
    specials = ["<|t2i|>", "<|i2t|>", "<|soi|>", "<|vtokens|>", "<|t2v|>", "<|v2t|>", "<|sov|>"]
    fast = stand_in_tokenizer(tmp / "qwen.json", [], specials, None, texts)
    mine = ours(tokens, tmp / f"simplear-out-{drop}", "simplear", tmp / "qwen.json",
                [f"caption_drop={drop}"])  # fmt: skip
    ns = {"torch": torch, "np": np, "random": random, "copy": copy, "os": __import__("os"),
          "Dataset": torch.utils.data.Dataset, "transformers": __import__("transformers"),
          "json": json, "Sequence": list, "Dict": dict, "rank0_print": lambda *a: None}  # fmt: skip
    run_source(root / "simpar/train/preprocess.py", ["preprocess_t2i", "preprocess_multimodal",
                                                     "PROMPTS_GEN"], ns)  # fmt: skip
    run_source(root / "simpar/train/t2token_data.py", ["T2TokenDataset"], ns)
    entries = []
    for i, r in enumerate(rows):  # extract_token.py's files: {step}.npy and its label
        code, label = tmp / f"sa-{drop}-{i}.npy", tmp / f"sa-{drop}-{i}.txt"
        np.save(code, np.asarray(r["tokens"], dtype=np.int32).reshape(1, 1, 16, 16))
        label.write_text(r["caption"].strip().replace("\n", " "))
        entries.append({"code_path": str(code), "label_path": str(label)})
    (tmp / f"sa-{drop}.json").write_text(json.dumps(entries))
    data_args = types.SimpleNamespace(is_multimodal=False)
    dataset = ns["T2TokenDataset"](str(tmp / f"sa-{drop}.json"), None, fast, data_args,
                                   p_drop_cond=drop, sample_short=True)  # fmt: skip
    dataset.list_data_dict = entries  # its plain-json branch reads the list twice
    draws = sample_uniforms(load_layout("simplear").seed, [r["key"] for r in rows])
    pairs = []
    for i in range(len(rows)):
        u = draws[i]

        def choice(seq, u=u):
            if seq is ns["PROMPTS_GEN"]:
                return seq[min(int(u[4] * len(seq)), len(seq) - 1)]
            return seq[0] if u[5] < 0.5 else seq[1]  # [first sentence, whole caption]

        with mock.patch.object(random, "choice", choice), \
                mock.patch.object(random, "random", lambda u=u: u[1]):  # fmt: skip
            item = dataset._get_item(i)
        theirs = item["input_ids"].tolist()
        their_mask = [1] * len(theirs)  # labels = input_ids: every id trained
        ours_mask = mine[i].get("loss_mask") or [1] * len(mine[i]["input_ids"])  # "all": none
        pairs.append((mine[i]["input_ids"], theirs, ours_mask, their_mask))
    dropped, short = int((draws[:, 1] < drop).sum()), int((draws[:, 5] < 0.5).sum())
    return report(f"simplear, p_drop_cond {drop} ({dropped} dropped, {short} first sentence)",
                  pairs)  # fmt: skip


def lumina_mgpt2(root: Path, tmp: Path) -> str:
    """Lumina-mGPT 2.0: pre_tokenize.py's ItemProcessor.process_item(training_mode=True)
    over FlexARItemProcessor (lumina_mgpt/data/item_processor.py), MMConvItemProcessor
    (xllmx/data/item_processor.py), its Conversation and its Tokenizer wrapper
    (xllmx/model/tokenizer.py), all executed from their source, on the photos' own files:
    its var_center_crop picks each crop (target 256 here) and its process_image lays out
    the codes; the MoVQGAN call (img_tokens_from_pil) returns the codes vqtool wrote for
    that photo (an f8 tokenizer with Lumina's crop rule: `--resize crops:256:32`), and its
    random.random (size in the prompt or not) answers vqtool's draw. The text tokenizer is
    a byte-level stand-in holding Chameleon's special tokens the sequence names."""
    import io
    import tarfile
    import typing

    from PIL import Image

    from vqtool.assets import resolve
    from vqtool.data.sources import expand_sources, iter_samples
    from vqtool.lm.layout import load_layout, sample_uniforms
    from vqtool.models import Tokenizer as VQTokenizer
    from vqtool.models import TokenizerConfig

    cfg = {"model": {"architecture": "conv", "channels": 32, "channel_mult": [1, 1, 1, 1],
                     "z_channels": 8},
           "quantizer": {"kind": "fsq", "levels": [8, 8]}, "image_size": 64}  # fmt: skip
    torch.manual_seed(0)
    VQTokenizer(TokenizerConfig.from_dict(cfg)).save(tmp / "f8.safetensors")
    shard, files = tmp / "lumina.tar", {}
    captions = ["a photo of fishes", "  monuments at dusk ", "line one\nline two", ""]
    with tarfile.open(shard, "w") as tar:
        for i, sample in enumerate(iter_samples(expand_sources([resolve("vqtool:sample")])[0])):
            files[sample.key] = tmp / f"lumina-{sample.key}.jpg"
            files[sample.key].write_bytes(sample.data)
            meta = json.dumps({"caption": captions[i % len(captions)]}).encode()
            for ext, data in (("jpg", sample.data), ("json", meta)):
                info = tarfile.TarInfo(f"{sample.key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    tokens = tmp / "tokens-lumina"
    encode(EncodeConfig(sources=[str(shard)], tokenizer=str(tmp / "f8.safetensors"),
                        out=str(tokens), workers=0, caption_from="json:caption",
                        resize="crops:256:32"))  # fmt: skip
    rows = pq.read_table(tokens / "part-000000.parquet").to_pylist()
    specials = ["<s>", "</s>", "<racm3:break>", "<eoss>", "<reserved08706>",
                *(f"<reserved{n:05d}>" for n in range(8796, 8850))]  # fmt: skip
    words = [r["caption"] for r in rows] + ["Generate an image of 256x256 according to the "
                                            "following prompt:\n Hi my darling"]  # fmt: skip
    fast = stand_in_tokenizer(tmp / "lumina.json", [], specials, None, words)
    fast.bos_token, fast.eos_token = "<s>", "</s>"
    fast.save_pretrained(str(tmp / "lumina-tok"))
    mine = ours(tokens, tmp / "lumina-out", "lumina-mgpt2", tmp / "lumina.json", [])
    # the original's modules, from their source
    ns = {"logging": __import__("logging"), "copy": copy, "os": __import__("os"),
          "List": list, "Dict": dict, "Any": typing.Any, "Callable": typing.Callable,
          "Tuple": tuple, "Union": typing.Union, "Optional": typing.Optional,
          "ABC": __import__("abc").ABC, "abstractmethod": __import__("abc").abstractmethod,
          "Path": Path, "AutoTokenizer": __import__("transformers").AutoTokenizer,
          "SentencePieceProcessor": None, "Image": Image, "PIL": sys.modules["PIL"],
          "torch": torch, "np": np, "random": random, "contextmanager":
          __import__("contextlib").contextmanager, "BytesIO": io.BytesIO, "time": time,
          "get_movqgan_model": lambda *a, **k: None, "transforms": None}  # fmt: skip
    ns["logger"] = ns["logging"].getLogger("lumina")
    x = root / "xllmx"
    run_source(x / "model/tokenizer.py", ["Tokenizer"], ns)
    run_source(x / "data/data_reader.py", ["no_proxy", "read_general", "client"], ns)
    run_source(x / "data/item_processor.py", ["LabelAllZeroError", "ItemProcessorBase",
                                              "MMConvItemProcessor"], ns)  # fmt: skip
    run_source(root / "lumina_mgpt/data/convertsation.py", ["Conversation"], ns)
    run_source(root / "lumina_mgpt/data/item_processor.py", ["center_crop", "var_center_crop",
               "generate_crop_size_list", "FlexARItemProcessor"], ns)  # fmt: skip
    run_source(root / "lumina_mgpt/pre_tokenize/pre_tokenize.py", ["ItemProcessor"], ns)
    processor = ns["ItemProcessor"](tokenizer=str(tmp / "lumina-tok"), target_size=256)
    draws = sample_uniforms(load_layout("lumina-mgpt2").seed, [r["key"] for r in rows])
    pairs, sizes = [], set()
    for i, r in enumerate(rows):
        codes = torch.tensor(r["tokens"]).reshape(r["grid_h"], r["grid_w"])
        processor.img_tokens_from_pil = lambda img, codes=codes: codes  # the MoVQGAN's codes
        item = {"image_path": str(files[r["key"]]), "prompt": r["caption"]}
        with mock.patch.object(random, "random", lambda u=draws[i]: 1 - u[6]):
            theirs, labels = processor.process_item(item, training_mode=True)
        sizes.add((r["grid_w"] * 8, r["grid_h"] * 8))
        their_mask = [int(v != -100) for v in labels]
        pairs.append((mine[i]["input_ids"], theirs, mine[i]["loss_mask"], their_mask))
    alt = int((draws[:, 6] < 0.1).sum())
    return report(f"lumina-mgpt2 ({len(sizes)} crop sizes, {alt} prompts without the size)",
                  pairs)  # fmt: skip


def labelled_export(part: Path, layout: str, tmp: Path, name: str):
    """The token file `part` with labels 0..9 in turn, exported with a class layout
    (num_classes 10) under the first seed that drops at least two labels: (labels, keys,
    seed, the exported rows)."""
    import pyarrow as pa

    table = pq.read_table(part)
    labels = [i % 10 for i in range(table.num_rows)]
    table = table.set_column(table.schema.get_field_index("label"), "label",
                             pa.array(labels, pa.int64()))  # fmt: skip
    pq.write_table(table, tmp / f"{name}.parquet")
    keys = table.column("key").to_pylist()
    seed = next(s for s in range(1000) if (sample_uniforms(s, keys)[:, 2] < 0.1).sum() >= 2)
    export(ExportConfig(tokens=[str(tmp / f"{name}.parquet")], layout=layout,
                        format="parquet", out=str(tmp / f"{name}-ex"),
                        sets=["num_classes=10", f"seed={seed}"]))  # fmt: skip
    return labels, keys, seed, pq.read_table(tmp / f"{name}-ex" / f"{name}.parquet").to_pylist()


def class_prefix(root: Path, tokens, rows, tmp: Path) -> str:
    from torch import nn

    ns = run_source(root / "autoregressive/models/gpt.py", ["LabelEmbedder"],
                    {"nn": nn, "torch": torch})  # fmt: skip
    labels, keys, seed, mine = labelled_export(tokens / "part-000000.parquet", "class-prefix",
                                               tmp, "labelled")  # fmt: skip
    embedder = ns["LabelEmbedder"](10, 8, 0.1)
    drops = torch.as_tensor(sample_uniforms(seed, keys)[:, 2] < 0.1).long()
    cond = embedder.token_drop(torch.tensor(labels), force_drop_ids=drops)
    pairs = []
    for i, r in enumerate(rows):
        theirs = [1000 + int(cond[i]), *r["tokens"]]  # the class after the 1,000 codes
        pairs.append((mine[i]["input_ids"], theirs, mine[i]["loss_mask"], [0] + [1] * 256))
    return report(f"class-prefix, {int(drops.sum())} null class (LabelEmbedder)", pairs)


def var(root: Path, tmp: Path) -> str:
    """VAR: a small VQ-VAE built by VAR's own `models/vqvae.py` (ch 32, 64 codes, its ten
    scales), the bundled photos encoded with it by vqtool (680 tokens a row), labelled
    0..9; exported with the `var` preset beside VAR's own `VAR.forward` (depth 1, width 64)
    fed the same rows, whose class embedding receives the label after its drop
    (`torch.rand` answered with the same per-sample uniform the export drew)."""
    sys.path.insert(0, str(root))  # models/ and dist.py, as VAR's train.py runs
    from models.var import VAR
    from models.vqvae import VQVAE

    torch.manual_seed(0)
    vae = VQVAE(vocab_size=64, z_channels=8, ch=32, test_mode=True, share_quant_resi=4)
    torch.save(vae.state_dict(), tmp / "vae_small.pth")
    encode(EncodeConfig(sources=["vqtool:sample"], tokenizer=str(tmp / "vae_small.pth"),
                        out=str(tmp / "var-tokens"), workers=0))  # fmt: skip
    rows = pq.read_table(tmp / "var-tokens" / "part-000000.parquet").to_pylist()
    labels, keys, seed, mine = labelled_export(tmp / "var-tokens" / "part-000000.parquet", "var",
                                               tmp, "var-labelled")  # fmt: skip
    model = VAR(vae_local=vae, num_classes=10, depth=1, embed_dim=64, num_heads=1,
                flash_if_available=False, fused_if_available=False).eval()  # fmt: skip
    seen = []
    model.class_emb.register_forward_hook(lambda m, inp, out: seen.append(inp[0].clone()))
    gt = torch.tensor([r["tokens"] for r in rows])
    pns = [1, 2, 3, 4, 5, 6, 8, 10, 13, 16]
    cuts = np.cumsum([0] + [p * p for p in pns])
    gt_idx_Bl = [gt[:, a:b] for a, b in zip(cuts[:-1], cuts[1:])]
    u = torch.as_tensor(sample_uniforms(seed, keys)[:, 2], dtype=torch.float32)
    with torch.no_grad(), mock.patch.object(torch, "rand", lambda *a, **k: u):
        model(torch.tensor(labels), vae.quantize.idxBl_to_var_input(gt_idx_Bl))
    dropped = seen[0]
    pairs = []
    for i in range(len(rows)):
        theirs = [64 + int(dropped[i]), *torch.cat([g[i] for g in gt_idx_Bl]).tolist()]
        pairs.append((mine[i]["input_ids"], theirs, mine[i]["loss_mask"], [0] + [1] * 680))
    nulls = int((dropped == 10).sum())
    return report(f"var ({nulls} null class; VAR.forward's drop, 680 tokens)", pairs)


def emu35(root: Path, tmp: Path) -> str:
    """Emu3.5: the t2i prompt of configs/example_config_t2i.py and format_image_string of
    src/utils/input_utils.py (both executed from their source), on tokens of each photo's
    own grid (the bundled tokenizer with Emu3.5's area rule), so rows differ in shape."""
    tokens = tmp / "tokens-emu35"
    encode(EncodeConfig(sources=["vqtool:sample"], tokenizer="vqtool:fsq-f4-64",
                        out=str(tokens), workers=0, caption_from="json:category",
                        resize="area:4096:16"))  # fmt: skip
    rows = pq.read_table(tokens / "part-000000.parquet").to_pylist()
    specials = ["<|extra_203|>", "<|extra_100|>", "<|image start|>", "<|image end|>",
                "<|image token|>", "<|extra_200|>", "<|endoftext|>"]  # fmt: skip
    visual = [f"<|visual token {i:06d}|>" for i in range(1000)]
    words = "You are a helpful assistant for t2i task . USER : ASSISTANT *".split()
    words += [*{w for r in rows for w in r["caption"].split()}, *map(str, range(100))]
    fast = stand_in_tokenizer(tmp / "emu35.json", words, specials + visual, None)
    mine = ours(tokens, tmp / "emu35-out", "emu3.5", tmp / "emu35.json", [])
    ns = run_source(root / "src/utils/input_utils.py", ["format_image_string"], {})
    cfg = run_source(root / "configs/example_config_t2i.py", ["build_unc_and_template"], {})
    _, template = cfg["build_unc_and_template"]("t2i", False)
    tok = types.SimpleNamespace(eol_token="<|extra_200|>", boi_token="<|image start|>",
                                img_token="<|image token|>", eoi_token="<|image end|>")  # fmt: skip
    pairs = []
    for i, r in enumerate(rows):
        grid = torch.tensor(r["tokens"]).reshape(r["grid_h"], r["grid_w"])
        text = template.format(question=r["caption"]) + ns["format_image_string"](tok, grid)
        pairs.append((mine[i]["input_ids"], fast.encode(text), [], []))
    shapes = sorted({(r["grid_h"], r["grid_w"]) for r in rows})
    return report(f"emu3.5 ({len(shapes)} grids; format_image_string + t2i template)",
                  pairs) + " (no loss mask in the source)"  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--originals", type=Path, required=True)
    ap.add_argument("--only", default="", help="comma-separated presets (default: all)")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    d = args.originals
    sys.path.insert(0, str(d / "baaivision+Emu3"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tokens = tmp / "tokens"
        encode(EncodeConfig(sources=["vqtool:sample"], tokenizer="vqtool:fsq-f4-64",
                            out=str(tokens), workers=0, caption_from="json:category"))  # fmt: skip
        rows = pq.read_table(tokens / "part-000000.parquet").to_pylist()
        print(f"# {len(rows)} bundled sample photos, bundled tokenizer (16x16 codes)")
        print("| preset (original code) | documents | identical ids | identical loss masks |")
        print("|---|---|---|---|")
        runs = {
            "emu3": lambda: [emu3(d / "baaivision+Emu3", tokens, rows, tmp, (16, 16)),
                             emu3(d / "baaivision+Emu3", tokens, rows, tmp, (16, 16), 0.5)],
            "liquid": lambda: [liquid(d / "FoundationVision+Liquid", tokens, rows, tmp, share)
                               for share in (1.0, 0.1, 0.5)],
            "chameleon": lambda: [chameleon(d / "facebookresearch+chameleon", tokens, rows, tmp)],
            "janus": lambda: [janus(d / "deepseek-ai+Janus", tmp, "janus"),
                              janus(d / "deepseek-ai+Janus", tmp, "janus-1.3b")],
            "class-prefix": lambda: [class_prefix(d / "FoundationVision+LlamaGen", tokens, rows,
                                                  tmp)],
            "emu3.5": lambda: [emu35(d / "baaivision+Emu3.5", tmp)],
            "lwm": lambda: [lwm(d / "LargeWorldModel+LWM", tokens, rows, tmp)],
            "show-o": lambda: [showo(d / "showlab+Show-o", tmp, p) for p in (0.1, 0.5)],
            "lumina-mgpt2": lambda: [lumina_mgpt2(d / "Alpha-VLLM+Lumina-mGPT-2.0", tmp)],
            "simplear": lambda: [simplear(d / "wdrink+SimpleAR", tmp, p) for p in (0.1, 0.5)],
            "var": lambda: [var(d / "FoundationVision+VAR", tmp)],
        }  # fmt: skip
        for name, run in runs.items():
            if not only or name in only:
                print("\n".join(run()), flush=True)


if __name__ == "__main__":
    main()
