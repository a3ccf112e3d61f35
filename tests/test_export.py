"""`vqtool export`: token shards -> LM documents, in the published layouts, read back by
the trainers' own readers (Megatron-Core, numpy.memmap as nanoGPT reads, HF datasets)."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.data import write_text_tokenizer, write_tokens
from support.processes import Forks, in_megatron, run_without_torch
from typer.testing import CliRunner

from vqtool.cli.main import app
from vqtool.errors import ConfigError, TokenDataError
from vqtool.export.job import ExportConfig, export
from vqtool.lm.exported import ExportSet
from vqtool.lm.layout import sample_uniforms

WORDS = ["[UNK]", "a", "red", "fish", "blue", "sky", "2", "*", "3", "<", ">", "</", "vision"]
# four images of a 2x3 grid over an 8-code vocabulary
CODES = np.array([[3, 1, 4, 1, 5, 0], [2, 7, 1, 0, 6, 2], [7, 7, 0, 0, 1, 1], [5, 3, 5, 3, 5, 3]])
CAPTIONS = ["a red fish", "blue sky", "a blue fish", "red sky"]
LABELS = [7, 0, 3, 9]


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def ids_of(caption: str) -> list[int]:
    return [WORDS.index(w) for w in caption.split()]


@pytest.fixture
def tokens(tmp_path):
    return write_tokens(tmp_path / "tok", CODES, 8, [(2, 3)], captions=CAPTIONS, labels=LABELS)


def read_stream(folder: Path, name="part-000000") -> list[list[int]]:
    """The documents of a stream export, read as nanoGPT reads its train.bin."""
    data = np.memmap(folder / f"{name}.bin", dtype=np.uint16, mode="r")
    offsets = np.load(folder / f"{name}.offsets.npy")
    return [data[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]


def read_megatron(prefix: Path) -> list[list[int]]:
    """Megatron-Core's own reader (in the session's Megatron-Core child process)."""
    code = (
        "import json, sys\n"
        "from megatron.core.datasets.indexed_dataset import IndexedDataset\n"
        "ds = IndexedDataset(sys.argv[1])\n"
        "print(json.dumps([ds[i].tolist() for i in range(len(ds))]))"
    )
    return json.loads(in_megatron(code, prefix).splitlines()[-1])


def read_hf(path: Path) -> list[list[int]]:
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
    return [row["input_ids"] for row in ds]


def export_docs(tokens, tmp_path, layout, fmt="stream", text=None, sets=(), name="ex", **kw):
    out = tmp_path / name
    export(ExportConfig(tokens=[str(tokens)], layout=layout, format=fmt, out=str(out),
                        text_tokenizer=text, sets=list(sets), **kw))  # fmt: skip
    if fmt == "stream":
        return out, read_stream(out)
    if fmt == "megatron":
        return out, read_megatron(out / "part-000000")
    return out, read_hf(out / "part-000000.parquet")


# -- the presets, each against a sequence written out by hand from its source ------------------
def test_liquid_preset_is_caption_phrase_boi_codes_plus_text_vocab_eoi(tokens, tmp_path):
    added = ["<bos>", "<eos>", "<boi>", "<eoi>", "<unconditional>"]  # ids 13..17
    text = write_text_tokenizer(tmp_path / "gemma.json", WORDS, added)
    n = 18  # len(tokenizer): Liquid's `vqcode + len(self.tokenizer)`
    one = ['caption_suffixes=[" fish"]']  # one instruction phrase, so the draw is known
    _, docs = export_docs(tokens, tmp_path, "liquid", text=text, sets=["caption_drop=0.0", *one])
    # caption + phrase as one text, <boi>, codes + len(tokenizer), <eoi>, <eos>
    assert docs[0] == [13, 1, 2, 3, 3, 15, n + 3, n + 1, n + 4, n + 1, n + 5, n + 0, 16, 14]
    assert docs[1] == [13, 4, 5, 3, 15, *(n + CODES[1]).tolist(), 16, 14]
    # Liquid's 10% null prompt, here every time: <bos> <unconditional> <boi> ... <eoi> <eos>
    _, docs = export_docs(tokens, tmp_path, "liquid", text=text, sets=["caption_drop=1.0"],
                          name="null")  # fmt: skip
    assert docs[0] == [13, 17, 15, *(n + CODES[0]).tolist(), 16, 14]
    # each sample gets one of Liquid's ten phrases, drawn by its key
    _, docs = export_docs(tokens, tmp_path, "liquid", text=text, sets=["caption_drop=0.0"],
                          name="ten")  # fmt: skip
    lengths = {len(d) for d in docs}
    assert all(len(d) > 13 for d in docs) and len(lengths) >= 1


def test_liquid_caption_mode_puts_the_instruction_between_image_and_caption(tokens, tmp_path):
    added = ["<bos>", "<eos>", "<boi>", "<eoi>", "<unconditional>"]
    text = write_text_tokenizer(tmp_path / "gemma.json", WORDS, added)
    n = 18
    i2t = ['caption="after"', 'caption_after_prefix="blue sky"']
    out, docs = export_docs(tokens, tmp_path, "liquid", text=text, fmt="parquet", sets=i2t)
    # I2T: <bos> <boi> codes <eoi> instruction caption <eos>; never the null prompt
    assert docs[0] == [13, 15, *(n + CODES[0]).tolist(), 16, 4, 5, 1, 2, 3, 14]
    mask = pq.read_table(out / "part-000000.parquet").column("loss_mask").to_pylist()[0]
    assert mask == [0] * 11 + [1] * 4  # the caption and <eos> are trained
    _, caps, _ = ExportSet.open(out).select(limit=1)[1:]
    assert caps == ["a red fish"]  # the instruction is not part of the caption read back


def test_emu3_preset_has_resolution_text_image_token_and_end_of_row(tokens, tmp_path):
    added = ["<|extra_203|>", "<|extra_204|>", "<|image start|>", "<|image end|>",
             "<|image token|>", "<|extra_200|>", "<|extra_201|>"]  # ids 13..19 # fmt: skip
    visual = [f"<|visual token {i:06d}|>" for i in range(8)]  # ids 20..27
    text = write_text_tokenizer(tmp_path / "emu3.json", WORDS, added + visual)
    out, docs = export_docs(tokens, tmp_path, "emu3", text=text, sets=["caption_drop=0.0"])
    v = 20
    # [BOS] caption <|image start|> "2*3" <|image token|> row <eol> row <eol> <eof> <eoi>, no
    # EOS: Emu3's trainer ends the sample at <|image end|>
    assert docs[0] == [13, 1, 2, 3, 15, 6, 7, 8, 17,
                       v + 3, v + 1, v + 4, 18, v + 1, v + 5, v + 0, 18, 19, 16]  # fmt: skip
    # the loss on the visual tokens only (apply_loss_on_only_vision), in a parallel file
    mask = np.fromfile(out / "part-000000.mask.bin", dtype=np.uint8)
    first = mask[: len(docs[0])].tolist()
    assert first == [int(v <= t < v + 8) for t in docs[0]]
    assert len(mask) == sum(map(len, docs))
    # the prompt is dropped 5% of the time: [BOS] straight into the image prompt
    _, docs = export_docs(tokens, tmp_path, "emu3", text=text, sets=["caption_drop=1.0"],
                          name="null")  # fmt: skip
    assert docs[0][:2] == [13, 15]


def test_emu35_preset_puts_end_of_row_only_between_rows(tokens, tmp_path):
    """Emu3.5's format_image_string: <|extra_200|> between rows, none after the last; the
    t2i prompt (tested here with the caption alone) before; no loss mask in its source."""
    added = ["<|extra_203|>", "<|extra_100|>", "<|image start|>", "<|image end|>",
             "<|image token|>", "<|extra_200|>"]  # ids 13..18  # fmt: skip
    visual = [f"<|visual token {i:06d}|>" for i in range(8)]  # ids 19..26
    text = write_text_tokenizer(tmp_path / "emu35.json", WORDS, added + visual)
    plain = ['caption_template="{caption} <|extra_100|>"']
    out, docs = export_docs(tokens, tmp_path, "emu3.5", text=text, sets=plain)
    v = 19
    assert docs[0] == [13, 1, 2, 3, 14, 15, 6, 7, 8, 17,
                       v + 3, v + 1, v + 4, 18, v + 1, v + 5, v + 0, 16]  # fmt: skip
    assert not (out / "part-000000.mask.bin").exists()
    keys, codes, _, _ = ExportSet.open(out).select(limit=2)
    assert [c.tolist() for c in codes] == CODES[:2].tolist()  # read back through the rows


def test_chameleon_preset_maps_codes_to_the_vocabularys_imgimg_tokens(tokens, tmp_path):
    """Chameleon's img2bpe: code c is the BPE token named IMGIMG + c's digits as A-J + one
    closing letter; the image sits between <racm3:break> and <eoss> after <s> caption."""
    letters = str.maketrans("0123456789", "ABCDEFGHIJ")
    image = [f"IMGIMG{str(c).translate(letters)}Z" for c in range(8)]  # ids 13..20
    added = ["<s>", "</s>", "<racm3:break>", "<eoss>"]  # ids 21..24
    text = write_text_tokenizer(tmp_path / "chameleon.json", WORDS + image, added)
    out, docs = export_docs(tokens, tmp_path, "chameleon", text=text)
    assert docs[0] == [21, 1, 2, 3, 23, *(13 + CODES[0]).tolist(), 24]
    assert (ExportSet.open(out).select(limit=4)[1] == CODES).all()
    short = write_text_tokenizer(tmp_path / "short.json", WORDS + image[:5], added)
    with pytest.raises(ConfigError, match="names 5 of the 8 codes"):
        export_docs(tokens, tmp_path, "chameleon", text=short, name="short")


def test_janus_preset_wraps_the_caption_in_its_chat_template(tokens, tmp_path):
    words = [*WORDS, ":"]  # ":" is 13
    bos = "<｜begin▁of▁sentence｜>"
    added = ["<|User|>", "<|Assistant|>", bos, "<begin_of_image>", "<end_of_image>"]  # 14..18
    text = write_text_tokenizer(tmp_path / "janus.json", words, added)
    n = 19  # image ids after the text ids
    out, docs = export_docs(tokens, tmp_path, "janus", text=text, fmt="parquet")
    # <bos> "<|User|>: a red fish\n\n<|Assistant|>:" <begin_of_image> codes <end_of_image>
    assert docs[0] == [16, 14, 13, 1, 2, 3, 15, 13, 17, *(n + CODES[0]).tolist(), 18]
    mask = pq.read_table(out / "part-000000.parquet").column("loss_mask").to_pylist()[0]
    assert mask == [0] * 9 + [1] * 6 + [0]  # the image codes, which Janus' gen head predicts
    _, _, caps, _ = ExportSet.open(out).select(limit=1)
    assert caps == ["a red fish"]  # read back without the template


@pytest.mark.parametrize("preset,user,assistant", [("janus", "<|User|>", "<|Assistant|>"),
                                                   ("janus-1.3b", "User", "Assistant")])
def test_janus_strips_captions_and_writes_an_empty_one_as_its_template_does(
    tmp_path, preset, user, assistant
):
    """Janus' apply_sft_template_for_multi_turn_prompts .strip()s each message, and its
    "deepseek" template writes an empty message as "ROLE:" with no separator. A byte-level
    BPE (whitespace is tokens, as in Janus' own tokenizer) sees every difference."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bos = "<｜begin▁of▁sentence｜>"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["a red fish", "User: \n\nAssistant:"], trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))  # fmt: skip
    tok.add_special_tokens(["<|User|>", "<|Assistant|>", bos, "<begin_of_image>",
                            "<end_of_image>"])  # fmt: skip
    tok.save(str(tmp_path / "janus.json"))
    tokens = write_tokens(tmp_path / "tok", CODES[:2], 8, [(2, 3)],
                          captions=["  a red fish \n", "   "])  # fmt: skip
    out, docs = export_docs(tokens, tmp_path, preset, text=str(tmp_path / "janus.json"),
                            fmt="parquet")  # fmt: skip
    n = tok.get_vocab_size()

    def prompt(text):
        return tok.encode(bos + text + "<begin_of_image>").ids

    want = [f"{user}: a red fish\n\n{assistant}:", f"{user}:{assistant}:"]
    for doc, text, codes in zip(docs, want, CODES):
        assert doc == [*prompt(text), *(n + codes).tolist(), tok.token_to_id("<end_of_image>")]
    _, _, caps, _ = ExportSet.open(out).select(limit=2)
    assert caps == ["a red fish", ""]


def test_lwm_preset_wraps_codes_in_vision_tags_with_end_of_vision(tokens, tmp_path):
    text = write_text_tokenizer(tmp_path / "llama.json", WORDS, ["<s>", "</s>"])  # 13, 14
    n, eov = 15, 15 + 8 + 1  # vision ids follow the 15 text ids; eov = vision id 8 + 1
    _, docs = export_docs(tokens, tmp_path, "lwm", text=text)
    # <s> caption, tokenizer.encode('<vision>'), codes, eov, tokenizer.encode('</vision>'), </s>
    assert docs[0] == [13, 1, 2, 3, 9, 12, 10, *(n + CODES[0]).tolist(), eov, 11, 12, 10, 14]


def test_lwm_with_a_bos_adding_tokenizer_trains_its_vision_tags(tokens, tmp_path):
    """LWM's VisionTextProcessor encodes the caption, "<vision>" and "</vision>" each with
    tokenizer.encode, which for its LLaMA tokenizer starts every text with <s>; the loss
    runs over the whole vision block, tags included, and </s>."""
    from tokenizers import Tokenizer, processors

    path = write_text_tokenizer(tmp_path / "llama.json", WORDS, ["<s>", "</s>"])  # 13, 14
    tok = Tokenizer.from_file(path)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                       special_tokens=[("<s>", 13)])  # fmt: skip
    tok.save(path)
    n, eov = 15, 15 + 8 + 1
    out, docs = export_docs(tokens, tmp_path, "lwm", text=path, fmt="parquet")
    vision, end = [13, 9, 12, 10], [13, 11, 12, 10]  # <s> "<vision>", <s> "</vision>"
    assert docs[0] == [13, 13, 1, 2, 3, *vision, *(n + CODES[0]).tolist(), eov, *end, 14]
    mask = pq.read_table(out / "part-000000.parquet").column("loss_mask").to_pylist()[0]
    assert mask == [0] * 5 + [1] * (4 + 6 + 1 + 4 + 1)
    _, _, caps, _ = ExportSet.open(out).select(limit=1)
    assert caps == ["a red fish"]


def test_showo_preset_left_pads_or_cuts_its_text_part(tmp_path):
    """Show-o's t2i_prompt: [PAD]s, then <|t2i|> <|endoftext|> caption <|endoftext|> in a
    text part of 129 ids (a longer one cut to 128 + EOS), <|soi|> codes <|eoi|>; the loss
    from <|soi|> on."""
    end, pad, t2i, soi, eoi = 13, 14, 15, 16, 17
    added = ["<|endoftext|>", "[PAD]", "<|t2i|>", "<|soi|>", "<|eoi|>"]
    text = write_text_tokenizer(tmp_path / "phi.json", WORDS, added)
    long = " ".join(["red fish"] * 80)  # 160 words
    tokens = write_tokens(tmp_path / "tok", CODES[:2], 8, [(2, 3)], captions=["a red fish", long])
    out, docs = export_docs(tokens, tmp_path, "show-o", text=text, fmt="parquet",
                            sets=["caption_drop=0.0"])  # fmt: skip
    n = 18
    image = [soi, *(n + CODES[0]).tolist(), eoi]
    assert docs[0] == [pad] * 123 + [t2i, end, 1, 2, 3, end] + image
    assert docs[1][:129] == [t2i, end, *([2, 3] * 63), end]  # cut to 128, + EOS
    mask = pq.read_table(out / "part-000000.parquet").column("loss_mask").to_pylist()[0]
    assert mask == [0] * 129 + [1] * 8
    _, _, caps, _ = ExportSet.open(out).select(limit=2)
    assert caps[0] == "a red fish"


def test_class_prefix_preset_is_the_class_then_the_codes(tokens, tmp_path):
    _, docs = export_docs(tokens, tmp_path, "class-prefix",
                          sets=["num_classes=10", "class_drop=0.0"])  # fmt: skip
    assert docs[0] == [8 + 7, 3, 1, 4, 1, 5, 0]  # class 7 is id V + 7
    assert docs[3] == [8 + 9, *CODES[3].tolist()]
    _, docs = export_docs(tokens, tmp_path, "class-prefix", name="null",
                          sets=["num_classes=10", "class_drop=1.0"])  # fmt: skip
    assert docs[0] == [8 + 10, 3, 1, 4, 1, 5, 0]  # the null class, V + num_classes


def test_hierarchical_residual_layout_rows_per_level_and_depth_order(tmp_path):
    grids = [(1, 1), (1, 2)]  # 3 positions x depth 2 = 6 tokens
    codes = np.array([[1, 2, 3, 4, 5, 6]])
    tok = write_tokens(tmp_path / "tok", codes, 10, grids, depth=2)
    layout = tmp_path / "rows.toml"
    layout.write_text('name = "rows"\nimage_offset = 100\neol = 99\neos = 98\n')
    _, docs = export_docs(tok, tmp_path, str(layout))
    # interleaved: level 0 row [1 2] eol, level 1 row [3 4 5 6] eol
    assert docs[0] == [101, 102, 99, 103, 104, 105, 106, 99, 98]
    _, docs = export_docs(tok, tmp_path, str(layout), sets=['depth_order="depth_major"'],
                          name="dm")  # fmt: skip
    # depth-major per level: level 0 depth 0, depth 1; level 1 depth 0 row, depth 1 row
    assert docs[0] == [101, 99, 102, 99, 103, 105, 99, 104, 106, 99, 98]


def test_lookup_table_and_resolution_ids(tokens, tmp_path):
    table = tmp_path / "map.npy"
    np.save(table, np.array([50, 52, 54, 56, 58, 60, 62, 64]))  # Chameleon-style code -> BPE id
    layout = tmp_path / "lut.toml"
    layout.write_text(f'name = "lut"\nimage_lookup = "{table}"\nresolution = "ids"\n'
                      "resolution_offset = 200\nboi = 1\neoi = 2\n")  # fmt: skip
    out, docs = export_docs(tokens, tmp_path, str(layout))
    assert docs[0] == [1, 202, 203, 56, 52, 58, 52, 60, 50, 2]
    assert (ExportSet.open(out).select(limit=4)[1] == CODES).all()


def test_random_caption_position_is_seeded_by_key(tmp_path):
    n = 64
    codes = np.tile(CODES[:1], (n, 1))
    tok = write_tokens(tmp_path / "tok", codes, 8, [(2, 3)], captions=["a red fish"] * n)
    text = write_text_tokenizer(tmp_path / "t.json", WORDS, ["<boi>"])
    layout = tmp_path / "r.toml"
    layout.write_text('name = "r"\nimage_offset = "text_vocab"\ncaption = "random"\nboi = "<boi>"\n'
                      "caption_before_share = 0.5\nseed = 3\n")  # fmt: skip
    out, docs = export_docs(tok, tmp_path, str(layout), text=text)
    first = [d[0] != 13 for d in docs]  # a caption word, not <boi>, comes first
    keys = [f"part-000000-{i}" for i in range(n)]
    assert first == (sample_uniforms(3, keys)[:, 0] < 0.5).tolist()
    assert 10 < sum(first) < 54
    _, again = export_docs(tok, tmp_path, str(layout), text=text, name="again")
    assert again == docs  # the same seed and keys give the same documents
    _, keys_, caps, rows = ExportSet.open(out).select(limit=n)
    assert caps == ["a red fish"] * n and {r["position"] for r in rows} == {"before", "after"}


# -- the three formats, read by the trainers' readers, and back to the exact codes --------------
@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """Real encode output: 8 photos with captions and labels, the bundled tokenizer."""
    from support.data import image_bytes, write_shard

    root = tmp_path_factory.mktemp("encoded")
    samples = [(f"img{i}", {"png": image_bytes(i, size=(48, 40)),
                            "txt": CAPTIONS[i % 4].encode(), "cls": str(LABELS[i % 4]).encode()})
               for i in range(8)]  # fmt: skip
    shard = write_shard(root / "shard-000000.tar", samples)
    result = run("encode", shard, "--out", root / "tok", "--workers", 0, "-q")
    assert result.exit_code == 0, result.output
    table = pq.read_table(root / "tok" / "part-000000.parquet")
    return root / "tok", table


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["liquid", "emu3", "lwm", "class-prefix"])
def test_encode_export_every_format_and_back_to_the_codes_and_caption(encoded, tmp_path, preset):
    folder, table = encoded
    codes = np.asarray(table.column("tokens").to_pylist())
    words = [*WORDS, "16"]
    added = {"liquid": ["<bos>", "<eos>", "<boi>", "<eoi>", "<unconditional>"],
             "emu3": ["<|extra_203|>", "<|extra_204|>", "<|image start|>", "<|image end|>",
                      "<|image token|>", "<|extra_200|>", "<|extra_201|>"]
                     + [f"<|visual token {i:06d}|>" for i in range(1000)],
             "lwm": ["<s>", "</s>"], "class-prefix": []}[preset]  # fmt: skip
    text = write_text_tokenizer(tmp_path / "t.json", words, added) if added else None
    # no drops, and (a word-level test tokenizer cannot spell them) no Liquid phrases
    sets = {"class-prefix": ["num_classes=10", "class_drop=0.0"],
            "liquid": ["caption_drop=0.0", "caption_suffixes=[]"],
            "emu3": ["caption_drop=0.0"]}.get(preset, [])  # fmt: skip
    docs = {}
    for fmt in ("megatron", "stream", "parquet"):
        out, docs[fmt] = export_docs(folder, tmp_path, preset, fmt, text, sets, name=fmt)
        keys, back, captions, rows = ExportSet.open(out).select(limit=8)
        assert (back == codes).all()
        assert keys == table.column("key").to_pylist()
        if preset == "class-prefix":
            assert captions == [None] * 8
            assert [r["label"] for r in rows] == table.column("label").to_pylist()
        else:
            assert captions == table.column("caption").to_pylist()
        assert json.loads((out / "export.json").read_text())["documents"] == 8
    assert docs["megatron"] == docs["stream"] == docs["parquet"]


def test_pack_cuts_rows_and_keeps_document_starts(tokens, tmp_path):
    layout = tmp_path / "p.toml"
    layout.write_text('name = "p"\nimage_offset = 10\neos = 9\n')  # documents of 7 tokens
    _, plain = export_docs(tokens, tmp_path, str(layout))
    flat = [i for d in plain for i in d]  # 28 tokens
    out, rows = export_docs(tokens, tmp_path, str(layout), "megatron", pack=8, name="mg")
    assert [len(r) for r in rows] == [8, 8, 8, 4] and [i for r in rows for i in r] == flat
    out, rows = export_docs(tokens, tmp_path, str(layout), "parquet", pack=8, name="pq")
    assert [i for r in rows for i in r] == flat
    starts = pq.read_table(out / "part-000000.parquet").column("document_starts").to_pylist()
    assert starts == [[0, 7], [6], [5], []]  # documents begin at 0, 7, 14 and 21
    assert (ExportSet.open(out).select(limit=4)[1] == CODES).all()
    layout.write_text('name = "p"\nimage_offset = 10\neos = 9\npad = 0\n')
    out, rows = export_docs(tokens, tmp_path, str(layout), "megatron", pad_to=10, name="pad")
    assert rows[0] == plain[0] + [0, 0, 0] and len(rows) == 4
    assert (ExportSet.open(out).select(limit=4)[1] == CODES).all()


def test_embeddings_are_the_code_vectors_in_lm_id_order(tmp_path):
    import torch
    from safetensors.torch import load_file

    from vqtool.pretrained.opener import open_tokenizer

    tok_dir = tmp_path / "tok"
    assert run("encode", "vqtool:sample", "--out", tok_dir, "--workers", 0, "-q").exit_code == 0
    layout = tmp_path / "e.toml"
    layout.write_text('name = "e"\nimage_offset = 5000\n')
    result = run("export", tok_dir, "--layout", layout, "--format", "stream",
                 "--out", tmp_path / "ex", "--embeddings", tmp_path / "emb.safetensors",
                 "--tokenizer", "vqtool:fsq-f4-64", "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = load_file(tmp_path / "emb.safetensors")
    q = open_tokenizer("vqtool:fsq-f4-64", torch.device("cpu"), None).tokenizer.net.quantizers[0]
    assert saved["ids"].tolist() == list(range(5000, 6000))
    assert torch.equal(saved["embeddings"], q.lookup_flat(torch.arange(1000)).float())


# -- resumable and exact --------------------------------------------------------------------
@pytest.mark.slow
def test_kill_9_mid_export_then_rerun_is_byte_identical(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "tok"
    for t in range(12):
        write_tokens(folder, rng.integers(0, 8, (6000, 6)), 8, [(2, 3)], name=f"part-{t:06d}",
                     captions=[CAPTIONS[i % 4] for i in range(6000)])  # fmt: skip
    text = write_text_tokenizer(tmp_path / "t.json", WORDS, ["<boi>"])
    layout = tmp_path / "k.toml"
    layout.write_text('name = "k"\nimage_offset = "text_vocab"\ncaption = "random"\n'
                      'boi = "<boi>"\ncaption_drop = 0.2\n')  # fmt: skip
    args = [str(folder), "--layout", str(layout), "--format", "megatron",
            "--text-tokenizer", text, "-q"]  # fmt: skip
    forks, err, killed = Forks.shared(), tmp_path / "err.txt", tmp_path / "killed"  # `vqtool` runs
    forks.start(["export", *args, "--out", tmp_path / "whole"], err)
    assert forks.exit_code(120) == 0, err.read_text()
    pid = forks.start(["export", *args, "--out", killed], err)
    deadline = time.monotonic() + 60
    while not list(killed.glob("*.done.json")) and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    assert forks.exit_code(60) == -signal.SIGKILL
    assert len(list(killed.glob("*.done.json"))) < 12  # it really stopped part-way
    forks.start(["export", *args, "--out", killed], err)
    assert forks.exit_code(120) == 0, err.read_text()
    whole = sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert sorted(p.name for p in killed.iterdir()) == whole
    for name in whole:
        if name != "export.json":
            assert (killed / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


# -- mistakes: one clear line, nothing half-written ---------------------------------------------
def test_unfinished_input_tasks_are_listed_not_exported(tokens, tmp_path):
    write_tokens(tokens, CODES, 8, [(2, 3)], name="part-000001")
    (tokens / "part-000001.done.json").unlink()  # a task the encode has not finished
    result = run("export", tokens, "--layout", "class-prefix", "--set", "num_classes=10",
                 "--format", "stream", "--out", tmp_path / "ex", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "part-000001" in result.output  # named in the note
    assert sorted(p.name for p in (tmp_path / "ex").glob("part-*.bin")) == [
        "part-000000.bin",
        "part-000000.mask.bin",
    ]  # the ids and the loss mask, task 0 only


@pytest.mark.parametrize(
    "case, expected",
    [
        ("overflow", "--dtype uint16 holds ids up to 65535"),
        ("overlap", "overlap the text tokenizer's ids 0..13"),
        ("no tokenizer file", "no such file"),
        ("unknown key", "unknown key captoin"),
        ("stream pack", "--format stream is one token stream already"),
        ("bad label", "label 7 is not a class in [0, 3)"),
        ("url out", "export writes a local folder"),
    ],
)
def test_bad_export_requests_fail_in_one_line(tokens, tmp_path, case, expected):
    text = write_text_tokenizer(tmp_path / "t.json", WORDS, ["<boi>"])
    layout = tmp_path / "l.toml"
    layout.write_text('name = "l"\nimage_offset = 70000\n')
    args = {
        "overflow": ["--layout", layout, "--format", "stream", "--dtype", "uint16"],
        "overlap": ["--layout", "class-prefix", "--set", "num_classes=10", "--format", "stream",
                    "--text-tokenizer", text, "--set", 'boi="<boi>"'],
        "no tokenizer file": ["--layout", "liquid", "--format", "stream",
                              "--text-tokenizer", tmp_path / "missing.json"],
        "unknown key": ["--layout", "liquid", "--set", "captoin=1", "--format", "stream"],
        "stream pack": ["--layout", layout, "--format", "stream", "--pack", "8"],
        "bad label": ["--layout", "class-prefix", "--set", "num_classes=3", "--format", "stream"],
        "url out": ["--layout", layout, "--format", "stream", "--out", "s3://bucket/lm"],
    }[case]  # fmt: skip
    if "--out" not in args:
        args += ["--out", tmp_path / "ex"]
    result = run("export", tokens, *args)
    assert result.exit_code == 2, result.output
    line = " ".join(result.output.split())
    assert expected in line and "Traceback" not in result.output
    done = list((tmp_path / "ex").glob("*")) if (tmp_path / "ex").exists() else []
    assert not [p for p in done if p.suffix in (".bin", ".idx", ".tmp", ".parquet")], done


def test_another_layout_or_tokenizer_is_refused(tokens, tmp_path):
    out = tmp_path / "ex"
    base = ["--format", "stream", "--out", out, "-q"]
    assert run("export", tokens, "--layout", "class-prefix", "--set", "num_classes=10",
               *base).exit_code == 0  # fmt: skip
    again = run("export", tokens, "--layout", "class-prefix", "--set", "num_classes=10", *base)
    assert again.exit_code == 0  # a rerun with the same settings finds every task done
    result = run("export", tokens, "--layout", "class-prefix", "--set", "num_classes=20", *base)
    assert result.exit_code == 2 and "Use another --out" in result.output
    other = write_tokens(tmp_path / "other", CODES, 9, [(2, 3)])
    result = run("export", tokens, other, "--layout", "class-prefix", *base)
    assert result.exit_code == 2 and "read them separately" in " ".join(result.output.split())


def test_layout_errors_name_the_key():
    from vqtool.lm.layout import load_layout

    with pytest.raises(ConfigError, match="caption_drop"):
        load_layout("liquid", [(["caption_drop"], 2.0)])
    with pytest.raises(ConfigError, match="no such file or preset; presets: chameleon, class-"):
        load_layout("nope")
    with pytest.raises(ConfigError, match="class_drop needs class_offset and num_classes"):
        load_layout("liquid", [(["class_drop"], 0.5)])


def test_an_export_without_finished_files_is_refused(tokens, tmp_path):
    out = tmp_path / "ex"
    export(ExportConfig(tokens=[str(tokens)], layout="class-prefix", format="stream",
                        out=str(out), sets=["num_classes=10"]))  # fmt: skip
    (out / "part-000000.done.json").unlink()
    with pytest.raises(TokenDataError, match="no finished export files"):
        ExportSet.open(out)


# -- decode and inspect an export -----------------------------------------------------------
@pytest.mark.slow
def test_decode_and_inspect_an_export(tmp_path):
    tok_dir = tmp_path / "tok"
    assert run("encode", "vqtool:sample", "--out", tok_dir, "--workers", 0, "-q").exit_code == 0
    words = ["[UNK]", "fishes", "monuments", "others"]
    text = write_text_tokenizer(tmp_path / "t.json", words, ["<bos>", "<eos>", "<boi>", "<eoi>",
                                                               "<unconditional>"])  # fmt: skip
    ex = tmp_path / "ex"
    result = run("export", tok_dir, "--layout", "liquid", "--set", "caption_drop=0.25",
                 "--set", "caption_suffixes=[]",  # a word-level tokenizer cannot spell them
                 "--format", "megatron", "--text-tokenizer", text, "--out", ex, "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    result = run("decode", ex, "--rows", "0:16", "--out", tmp_path / "png", "--json")
    assert result.exit_code == 0, result.output
    images = json.loads(result.output)["images"]
    source = pq.read_table(tok_dir / "part-000000.parquet")
    kept = [c for c, img in zip(source.column("caption").to_pylist(), images) if img["caption"]]
    assert 0 < len(kept) < 16  # some captions dropped (null prompt), the rest exact
    assert all(img["caption"] in (None, c) for img, c in
               zip(images, source.column("caption").to_pylist()))  # fmt: skip
    first = next(i for i in images if i["caption"])
    assert Path(first["path"]).with_suffix(".txt").read_text().strip() == first["caption"]
    # the decoded pictures are the token file's, exactly
    direct = run("decode", tok_dir, "--rows", "0:16", "--out", tmp_path / "direct", "--json")
    for a, b in zip(images, json.loads(direct.output)["images"]):
        assert Path(a["path"]).read_bytes() == Path(b["path"]).read_bytes()
    result = run("inspect", ex, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["kind"] == "LM export" and report["documents"] == 16
    assert report["shares"]["image"] == pytest.approx(16 * 256 / report["tokens"])
    assert set(report["shares"]) >= {"image", "text", "special"}
    assert report["tokens"] == sum(
        len(d) for d in read_megatron(ex / "part-000000")
    )  # fmt: skip


# -- the README's section runs as written ----------------------------------------------------------
@pytest.mark.slow
def test_readme_export_examples_run_as_written(tmp_path, monkeypatch):
    import re
    import shlex

    from test_readme import README, run_python_blocks

    text = README.read_text()
    section = text[text.index("## From tokens to an LM run") :]
    section = section[: section.index("\n## ", 10)]
    monkeypatch.chdir(tmp_path)
    assert run("encode", "vqtool:sample", "--out", "tokens/", "--workers", 0, "-q").exit_code == 0
    captions = ["fishes", "monuments", "others"]
    Path("gemma-7b").mkdir()  # Gemma's first ids: <pad> <eos> <bos> <unk>
    write_text_tokenizer("gemma-7b/tokenizer.json", ["<pad>", "<eos>", "<bos>", "<unk>", *captions],
                         ["<boi>", "<eoi>", "<unconditional>"], unk="<unk>")  # fmt: skip
    Path("emu3").mkdir()
    emu3 = ["<|extra_203|>", "<|extra_204|>", "<|image start|>", "<|image end|>",
            "<|image token|>", "<|extra_200|>", "<|extra_201|>"]  # fmt: skip
    write_text_tokenizer("emu3/tokenizer.json", ["[UNK]", "16", "*", *captions],
                         emu3 + [f"<|visual token {i:06d}|>" for i in range(1000)])  # fmt: skip
    commands = [ln for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)
                for ln in block.splitlines()
                if ln and not ln.startswith("#") and "TOKENS..." not in block]  # fmt: skip
    ran = 0
    for line in commands:
        if line.startswith("printf"):
            subprocess.run(line, shell=True, check=True)
        elif line.startswith("vqtool export "):
            result = run(*shlex.split(line)[1:], "-q")
            assert result.exit_code == 0, (line, result.output)
            ran += 1
    assert ran == 3
    assert run_python_blocks(section) >= 5
    for line in re.findall(r"`(vqtool (?:decode|inspect) [^`]+)`", section.replace("\n", " ")):
        result = run(*shlex.split(line)[1:])
        assert result.exit_code == 0, (line, result.output)


def test_split_runs_write_what_one_run_writes(tmp_path):
    folder = tmp_path / "tok"
    for t in range(3):
        write_tokens(folder, CODES, 8, [(2, 3)], name=f"part-{t:06d}", labels=LABELS)
    base = dict(tokens=[str(folder)], layout="class-prefix", format="megatron",
                sets=["num_classes=10"])  # fmt: skip
    export(ExportConfig(out=str(tmp_path / "one"), **base))
    for i in range(2):  # two Slurm array tasks into one folder
        r = export(ExportConfig(out=str(tmp_path / "two"), num_shards=2, shard_index=i, **base))
        assert r.tasks_mine == (2 if i == 0 else 1)
    for path in sorted((tmp_path / "one").glob("part-*")):
        assert (tmp_path / "two" / path.name).read_bytes() == path.read_bytes(), path.name


def test_a_class_layout_on_unlabelled_tokens_is_refused_before_writing(tmp_path):
    unlabelled = write_tokens(tmp_path / "tok", CODES, 8, [(2, 3)])
    result = run("export", unlabelled, "--layout", "class-prefix", "--format", "stream",
                 "--out", tmp_path / "ex")  # fmt: skip
    assert result.exit_code == 2 and "carry no labels" in " ".join(result.output.split())
    assert not (tmp_path / "ex").exists()


def test_loss_masks_in_every_format_as_a_trainer_applies_them(tokens, tmp_path):
    """A trainer turns ids + mask into labels (-100 where the mask is 0, as Liquid's and
    Emu3's IGNORE_INDEX): Megatron reads the mask as its own indexed dataset
    (`PREFIX.mask`), stream readers memmap `part-N.mask.bin` beside the ids, Parquet rows
    carry `loss_mask` (packed rows too)."""
    added = ["<bos>", "<eos>", "<boi>", "<eoi>", "<unconditional>"]
    text = write_text_tokenizer(tmp_path / "gemma.json", WORDS, added)
    n, sets = 18, ["caption_drop=0.0", "caption_suffixes=[]"]
    want = [[-100] * (len(c.split()) + 2) + (n + CODES[i]).tolist() + [16, 14]
            for i, c in enumerate(CAPTIONS)]  # fmt: skip

    def labels(ids, mask):
        return np.where(np.asarray(mask) == 1, ids, -100).tolist()

    out, docs = export_docs(tokens, tmp_path, "liquid", "megatron", text, sets, "mg")
    masks = read_megatron(out / "part-000000.mask")
    assert [labels(d, m) for d, m in zip(docs, masks)] == want
    out, docs = export_docs(tokens, tmp_path, "liquid", "stream", text, sets, "st")
    mask = np.memmap(out / "part-000000.mask.bin", dtype=np.uint8, mode="r")
    offsets = np.load(out / "part-000000.offsets.npy")
    assert [labels(d, mask[a:b]) for d, a, b in zip(docs, offsets, offsets[1:])] == want
    out, docs = export_docs(tokens, tmp_path, "liquid", "parquet", text, sets, "pq")
    rows = pq.read_table(out / "part-000000.parquet").to_pylist()
    assert [labels(r["input_ids"], r["loss_mask"]) for r in rows] == want
    out, _ = export_docs(
        tokens,
        tmp_path,
        "liquid",
        "parquet",
        text,
        sets,
        "packed",
        pack=10,
        allow_split_documents=True,
    )  # rows cut through documents
    rows = pq.read_table(out / "part-000000.parquet").to_pylist()
    flat = [t for r in rows for t in labels(r["input_ids"], r["loss_mask"])]
    assert flat == [t for w in want for t in w]  # the mask stays aligned across row cuts


def test_epochs_redraw_per_epoch_reproducibly(tmp_path):
    """The originals redraw a sample's caption drop every epoch; `--epochs N` writes N
    epochs whose draws are keyed by (seed, epoch, key): epoch 0 as a one-epoch export,
    later epochs afresh, and a rerun byte-identical."""
    n = 64
    codes = np.tile(CODES[:1], (n, 1))
    tok = write_tokens(tmp_path / "tok", codes, 8, [(2, 3)], captions=["a red fish"] * n)
    added = ["<bos>", "<eos>", "<boi>", "<eoi>", "<unconditional>"]
    text = write_text_tokenizer(tmp_path / "t.json", WORDS, added)
    sets = ["caption_drop=0.5", "caption_suffixes=[]"]
    out, one = export_docs(tok, tmp_path, "liquid", text=text, sets=sets, name="one")
    three, _ = export_docs(tok, tmp_path, "liquid", text=text, sets=sets, name="three", epochs=3)
    epochs = [read_stream(three, name) for name in
              ("part-000000", "epoch-001-part-000000", "epoch-002-part-000000")]  # fmt: skip
    assert epochs[0] == one  # epoch 0 is the single-epoch export
    dropped = [[d[1] == 17 for d in docs] for docs in epochs]  # <unconditional> after <bos>
    assert dropped[0] != dropped[1] != dropped[2]  # each epoch draws afresh
    assert all(10 < sum(d) < 54 for d in dropped)
    again, _ = export_docs(tok, tmp_path, "liquid", text=text, sets=sets, name="again", epochs=3)
    for name in ("part-000000.bin", "epoch-002-part-000000.bin"):
        assert (again / name).read_bytes() == (three / name).read_bytes()


def test_silent_nonsense_is_refused_and_a_failed_start_blocks_nothing(tmp_path):
    """A caption layout over tokens without captions, a special token string that is not
    one token, --pack below the document length: each one line, unless asked for; and an
    export that fails before its first file commits leaves no manifest to refuse the
    corrected rerun."""
    bare = write_tokens(tmp_path / "bare", CODES, 8, [(2, 3)])  # no captions
    added = ["<bos>", "<eos>", "<boi>", "<eoi>", "<unconditional>"]
    text = write_text_tokenizer(tmp_path / "t.json", WORDS, added)
    no_captions = run("export", bare, "--layout", "liquid", "--text-tokenizer", text,
                      "--format", "stream", "--out", tmp_path / "a")  # fmt: skip
    assert no_captions.exit_code == 2 and "--caption-from" in no_captions.stderr
    assert not (tmp_path / "a").exists() or not list((tmp_path / "a").iterdir())
    allowed = run("export", bare, "--layout", "liquid", "--text-tokenizer", text, "--format",
                  "stream", "--out", tmp_path / "a", "--allow-missing-captions", "-q")  # fmt: skip
    assert allowed.exit_code == 0, allowed.output
    short = write_text_tokenizer(tmp_path / "short.json", WORDS, [])  # no <bos> token
    pieces = run("export", bare, "--layout", "liquid", "--text-tokenizer", short, "--format",
                 "stream", "--out", tmp_path / "b", "--allow-missing-captions")  # fmt: skip
    assert pieces.exit_code == 2 and "bos = '<bos>' is not one token" in pieces.stderr
    assert "{ text = '<bos>' }" in pieces.stderr
    packed = run("export", bare, "--layout", "class-prefix", "--set", "num_classes=10",
                 "--format", "megatron", "--pack", "3", "--out", tmp_path / "c")  # fmt: skip
    assert packed.exit_code == 2 and "--allow-split-documents" in packed.stderr
    tokens = write_tokens(tmp_path / "tok", CODES, 8, [(2, 3)], labels=LABELS)
    pad = tmp_path / "pad.toml"
    pad.write_text('name = "pad"\nimage_offset = 0\npad = 99\n')
    small = run("export", tokens, "--layout", pad, "--format", "parquet", "--pad-to", "4",
                "--out", tmp_path / "d")  # fmt: skip
    assert small.exit_code == 2 and "does not fit --pad-to 4" in small.stderr
    assert not (tmp_path / "d" / "export.json").exists()
    fixed = run("export", tokens, "--layout", pad, "--format", "parquet", "--pad-to", "8",
                "--out", tmp_path / "d", "-q")  # fmt: skip
    assert fixed.exit_code == 0, fixed.output


def plain_tokens(tmp_path: Path, tasks: int, rows: int) -> tuple[Path, Path]:
    """An encode folder of `tasks` files of `rows` random 2x3 rows, and a layout of codes
    + 2 with an end id 1."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "tok"
    for t in range(tasks):
        write_tokens(folder, rng.integers(0, 8, (rows, 6)), 8, [(2, 3)], name=f"part-{t:06d}")
    plain = tmp_path / "plain.toml"
    plain.write_text('name = "plain"\nimage_offset = 2\neos = 1\n')
    return folder, plain


# -- --merge: few large files, exactly once ----------------------------------------------------
def test_merge_joins_the_tasks_into_one_megatron_prefix_read_without_a_blend(tmp_path):
    """`--merge GB` joins the per-task files, once all are exported, into merged-NNNNNN
    files: Megatron-Core's IndexedDataset and GPTDataset read the one prefix (no blend),
    vqtool's reader finds documents back, a kill at any point of the merge and a rerun
    leave every document exactly once, and a stream export merges the same way."""
    folder, plain = plain_tokens(tmp_path, tasks=3, rows=40)
    whole = tmp_path / "whole"
    export(ExportConfig(tokens=[str(folder)], layout=str(plain), format="megatron",
                        out=str(whole)))  # fmt: skip
    merged = tmp_path / "merged"
    cfg = ExportConfig(tokens=[str(folder)], layout=str(plain), format="megatron",
                       out=str(merged), merge=1.0)  # fmt: skip
    result = export(cfg)
    assert result.merged == ["merged-000000"] and result.documents == 120
    assert sorted(p.name for p in merged.glob("*.bin")) == ["merged-000000.bin"]
    code = (  # Megatron-Core's readers; GPTDataset on the one prefix: no BlendedDataset
        "import json, sys, types, warnings; warnings.simplefilter('ignore')\n"
        "import numpy as np\n"
        "from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig\n"
        "from megatron.core.datasets.indexed_dataset import IndexedDataset\n"
        "from megatron.core.datasets.utils import Split\n"
        "docs = [[d.tolist() for d in IndexedDataset(p)] for p in sys.argv[1:]]\n"
        "cfg = GPTDatasetConfig(random_seed=0, sequence_length=16, blend=None, "
        "blend_per_split=None, split='1,0,0', path_to_cache=None, "
        "tokenizer=types.SimpleNamespace(vocab_size=16, eod=1, pad=0, "
        "unique_identifiers={'class': 'stand-in'}), "
        "reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False, "
        "mid_level_dataset_surplus=0.005)\n"
        "idx = IndexedDataset(sys.argv[-1])\n"
        "ids = np.arange(len(idx.document_indices) - 1, dtype=np.int32)\n"
        "ds = GPTDataset(idx, sys.argv[-1], ids, 5, Split.train, cfg)\n"
        "print(json.dumps([docs, len(ds), int(ds[0]['tokens'].shape[0])]))\n"
    )
    prefixes = [whole / f"part-{t:06d}" for t in range(3)] + [merged / "merged-000000"]
    docs, samples, length = json.loads(in_megatron(code, *prefixes).splitlines()[-1])
    per_task = [d for part in docs[:3] for d in part]
    assert docs[3] == per_task and len(per_task) == 120 and samples >= 5 and length == 16
    keys, codes, _, _ = ExportSet.open(merged).select(rows=(118, 120))  # decode's reader
    assert keys == ["part-000002-38", "part-000002-39"] and codes.shape == (2, 6)
    # killed between the merged file and its marker: the rerun rebuilds it, exactly once
    first = {s: (merged / f"merged-000000{s}").read_bytes() for s in (".bin", ".idx")}
    (merged / "merged-000000.done.json").unlink()
    for t in range(3):  # as if the kill came before the tasks' files were removed
        for suffix in (".bin", ".idx", ".docs.parquet"):
            shutil.copyfile(whole / f"part-{t:06d}{suffix}", merged / f"part-{t:06d}{suffix}")
    again = export(cfg)
    assert again.tasks_skipped == 3 and again.merged == ["merged-000000"]
    assert {s: (merged / f"merged-000000{s}").read_bytes() for s in (".bin", ".idx")} == first
    assert not list(merged.glob("part-*.bin")) and not list(merged.glob("*.tmp"))
    stream = export(ExportConfig(tokens=[str(folder)], layout=str(plain), format="stream",
                                 out=str(tmp_path / "s"), merge=1.0))  # fmt: skip
    assert read_stream(tmp_path / "s", "merged-000000") == per_task and stream.documents == 120
    groups = export(
        ExportConfig(
            tokens=[str(folder)],
            layout=str(plain),
            format="stream",
            out=str(tmp_path / "g"),
            merge=1e-6,
        )
    )  # 1 KiB: 2 groups
    assert groups.merged == ["merged-000000", "merged-000001"]
    assert [d for g in groups.merged for d in read_stream(tmp_path / "g", g)] == per_task
    with pytest.raises(TokenDataError, match="--merge"):
        export(ExportConfig(tokens=[str(folder)], layout=str(plain), format="parquet",
                            out=str(tmp_path / "p"), merge=1.0))  # fmt: skip


def test_split_writes_each_share_of_keys_to_its_own_folder_exactly_once(tmp_path):
    """`--split train=0.75,val=0.25`: every document in exactly one of OUT/train and
    OUT/val, chosen by its key's hash (the same on every run and every format), each
    folder a whole export that resumes on its own; a bad spec is one clear error."""
    folder, plain = plain_tokens(tmp_path, tasks=2, rows=50)
    args = ["export", folder, "--layout", plain, "--format", "stream", "--out", tmp_path / "ex",
            "--split", "train=0.75,val=0.25", "--json"]  # fmt: skip
    result = run(*args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary["splits"]) == {"train", "val"} and summary["documents"] == 100
    keys = {}
    for name in ("train", "val"):
        ex = ExportSet.open(tmp_path / "ex" / name)
        keys[name] = [k for _, index in ex.documents() for k in index.column("key").to_pylist()]
    assert not set(keys["train"]) & set(keys["val"])
    assert len(keys["train"]) + len(keys["val"]) == 100 and 10 <= len(keys["val"]) <= 40
    from vqtool.utils import key_unit

    assert all(key_unit(k) >= 0.75 for k in keys["val"])
    again = run(*args)
    assert json.loads(again.stdout)["tasks_skipped"] == 4  # two tasks in each folder
    for bad in ("train=0.9,val=0.2", "train", "a=0.5,a=0.5"):
        refused = run(*args[:-3], "--split", bad)
        assert refused.exit_code == 2 and "--split" in refused.output, bad


def test_a_read_failure_in_the_read_ahead_thread_surfaces_and_the_rerun_finishes(
    tmp_path, monkeypatch
):
    """Rows are read one task ahead on a background thread: a file that fails to read
    raises its own error in the export (no hang), the tasks before it are committed,
    and the rerun writes the rest, each document once."""
    import vqtool.export.task as task_module

    rng = np.random.default_rng(3)
    for f in range(3):
        write_tokens(tmp_path / "tok", rng.integers(0, 64, (5, 4)), 64, [(2, 2)],
                     name=f"part-{f:06d}")  # fmt: skip
    cfg = ExportConfig(tokens=[str(tmp_path / "tok")], layout=str(_plain_layout(tmp_path)),
                       format="stream", out=str(tmp_path / "out"))  # fmt: skip
    real = task_module._batches

    def failing(task, *how):
        if task.name == "part-000001":
            raise OSError(f"{task.path}: the disk went away")
        yield from real(task, *how)

    monkeypatch.setattr(task_module, "_batches", failing)
    with pytest.raises(OSError, match="the disk went away"):
        export(cfg)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.done.json")) == [
        "part-000000.done.json"
    ]
    monkeypatch.setattr(task_module, "_batches", real)
    again = export(cfg)
    assert again.tasks_skipped == 1 and again.tasks_done == 2 and again.documents == 15
    exported = ExportSet.open(tmp_path / "out")
    assert [index.num_rows for _, index in exported.documents()] == [5, 5, 5]


def test_tasks_read_out_of_order_are_written_in_order(tmp_path, monkeypatch):
    """Two tasks are decoded at once (`ReadAhead.READERS`): a slow first file is still
    written first and every file holds its own rows, each document once."""
    import time

    import vqtool.export.task as task_module

    rng = np.random.default_rng(4)
    codes = [rng.integers(0, 64, (6, 4)) for _ in range(4)]
    for f, c in enumerate(codes):
        write_tokens(tmp_path / "tok", c, 64, [(2, 2)], name=f"part-{f:06d}")
    real, order = task_module._batches, []

    def slow_first(task, *how):
        if task.name == "part-000000":
            time.sleep(0.5)  # the second reader finishes part 1 meanwhile
        order.append(task.name)
        yield from real(task, *how)

    monkeypatch.setattr(task_module, "_batches", slow_first)
    export(ExportConfig(tokens=[str(tmp_path / "tok")], layout=str(_plain_layout(tmp_path)),
                        format="stream", out=str(tmp_path / "out")))  # fmt: skip
    assert order[0] == "part-000001"  # read first, written second
    for f, c in enumerate(codes):
        ids = np.fromfile(tmp_path / "out" / f"part-{f:06d}.bin", dtype=np.uint16)
        assert (ids.reshape(6, 5)[:, :4] == c + 100).all()


def test_a_token_file_reads_the_same_rows_on_one_thread_and_on_arrows(tmp_path):
    """Export's readers decode a file each on their own thread when there are several
    tasks, on Arrow's threads when there is one: the same rows, in the same order."""
    from vqtool.tokens.reader import TokenDataset

    codes = np.random.default_rng(5).integers(0, 64, (50, 4))
    write_tokens(tmp_path / "tok", codes, 64, [(2, 2)])
    (file,) = TokenDataset.open(tmp_path / "tok").files
    one, pool = (pa.Table.from_batches(list(file.batches(["key", "tokens"], 20, threads)))
                 for threads in (False, True))  # fmt: skip
    assert one.equals(pool)
    assert one.column("key").to_pylist() == [f"part-000000-{i}" for i in range(50)]
    assert one.column("tokens").to_pylist() == codes.tolist()


def _plain_layout(folder: Path) -> Path:
    path = folder / "plain.toml"
    path.write_text('name = "plain"\nimage_offset = 100\neos = 99\n')
    return path


def test_export_runs_without_torch(tokens, tmp_path):
    """Export runs no network: its whole process imports no torch (here torch cannot be
    imported at all), so a user pays no seconds of torch start-up per export."""
    layout = tmp_path / "plain.toml"
    layout.write_text('name = "plain"\n')
    out = tmp_path / "ex"
    done = run_without_torch("export", str(tokens), "--layout", str(layout), "--format",
                             "stream", "--out", str(out), "--quiet")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert read_stream(out) == CODES.tolist()


def test_a_pyramid_row_exports_as_it_is_in_every_format(tmp_path):
    """VAR's rows (scales 1x1, 2x2, 3x3 coarse first, one codebook) go into every format
    as they are stored: the scales in order, each in raster order."""
    rows = np.random.default_rng(0).integers(0, 4096, (3, 1 + 4 + 9))
    pyramid = write_tokens(tmp_path / "pyr", rows, 4096, [(1, 1), (2, 2), (3, 3)])
    layout = tmp_path / "plain.toml"
    layout.write_text('name = "plain"\nimage_offset = 10\neos = 9\n')
    for fmt in ("stream", "parquet", "megatron"):
        _, docs = export_docs(pyramid, tmp_path, str(layout), fmt=fmt, name=f"ex-{fmt}")
        assert docs == [[*(r + 10).tolist(), 9] for r in rows], fmt
