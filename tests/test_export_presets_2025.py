"""The `simplear` and `lumina-mgpt2` presets, each against a sequence written out by hand
from its source (`benchmarks/preset_parity.py` runs the originals' own code beside them),
and the layout keys they brought: a phrase drawn in front of the caption, its first
sentence, one line, a second template, the image's size in pixels and size tokens."""

import numpy as np
import pyarrow.parquet as pq
import pytest
from support.data import write_text_tokenizer, write_tokens
from test_export import CODES, WORDS, export_docs

from vqtool.errors import ConfigError
from vqtool.lm.exported import ExportSet
from vqtool.lm.layout import load_layout

SIMPLEAR = ["<|t2i|>", "<|i2t|>", "<|soi|>", "<|vtokens|>", "<|t2v|>", "<|v2t|>", "<|sov|>"]


def simplear_text(tmp_path):
    return write_text_tokenizer(tmp_path / "qwen.json", [*WORDS, "."], SIMPLEAR)  # ids 14..20


def test_simplear_is_t2i_phrase_caption_soi_codes_after_the_text_ids(tmp_path):
    """preprocess_t2i: "<|t2i|>" + phrase + caption + "<|soi|>" + codes (+ len(tokenizer)),
    no end token, every id trained (no mask)."""
    text = simplear_text(tmp_path)
    tokens = write_tokens(tmp_path / "tok", CODES[:2], 8, [(2, 3)],
                          captions=["  a red fish  ", "blue\nsky"])  # fmt: skip
    sets = ["caption_drop=0.0", "caption_first_sentence=0.0", 'caption_prefixes=["red "]']
    out, docs = export_docs(tokens, tmp_path, "simplear", text=text, fmt="parquet", sets=sets)
    t2i, soi, n = 14, 16, 21
    assert docs[0] == [t2i, 2, 1, 2, 3, soi, *(n + CODES[0]).tolist()]  # stripped
    assert docs[1] == [t2i, 2, 4, 5, soi, *(n + CODES[1]).tolist()]  # newline as a space
    assert "loss_mask" not in pq.read_table(out / "part-000000.parquet").column_names
    _, codes, caps, _ = ExportSet.open(out).select(limit=2)
    assert caps == ["a red fish", "blue sky"] and codes[0].tolist() == CODES[0].tolist()


def test_simplear_first_sentence_and_condition_drop(tmp_path):
    text = simplear_text(tmp_path)
    tokens = write_tokens(tmp_path / "tok", CODES[:2], 8, [(2, 3)],
                          captions=["a red fish. blue sky", "blue sky"])  # fmt: skip
    sets = ["caption_drop=0.0", "caption_first_sentence=1.0", 'caption_prefixes=["red "]']
    _, docs = export_docs(tokens, tmp_path, "simplear", text=text, fmt="parquet", sets=sets)
    assert docs[0][:7] == [14, 2, 1, 2, 3, 13, 16]  # "red a red fish ." then <|soi|>
    assert docs[1][:4] == [14, 2, 4, 5]  # no period: the whole caption
    _, dropped = export_docs(tokens, tmp_path, "simplear", text=text, fmt="parquet",
                             sets=["caption_drop=1.0"], name="dropped")  # fmt: skip
    assert dropped[0] == [14, 16, *(21 + CODES[0]).tolist()]  # "<|t2i|><|soi|>" + codes


def test_simplear_preset_draws_its_phrases_and_halves(tmp_path):
    spec = load_layout("simplear")
    assert len(spec.caption_prefixes) == 20 and spec.caption_prefixes[4] == (
        "A photorealistic depiction of "
    )
    assert (spec.caption_first_sentence, spec.caption_drop, spec.loss) == (0.5, 0.1, "all")


LUMINA = ["<s>", "<racm3:break>", "<eoss>", "<reserved08706>", "<reserved08799>",
          "<reserved08802>", "<reserved08803>"]  # ids 15..21  # fmt: skip


def test_lumina_mgpt2_names_the_size_in_pixels_and_in_patch_tokens(tmp_path):
    """pre_tokenize.py's prompt with the crop's width x height, its turn separator; then
    process_image: <racm3:break>, <reserved{8800 + h patches}>, <reserved{8800 + w}>, each
    row of codes + 155000 followed by <reserved08799>, <eoss>; the answer turn (from
    <racm3:break>, its separator included) trained."""
    text = write_text_tokenizer(tmp_path / "chameleon.json", [*WORDS, "16", "24"], LUMINA)
    tokens = write_tokens(tmp_path / "tok", CODES[:1], 8, [(2, 3)], captions=["a red fish"])
    sets = ['caption_template="{width} {height} {caption}<reserved08706>"',
            "caption_template_alt_share=0.0", "resolution_unit=8"]  # fmt: skip
    out, docs = export_docs(tokens, tmp_path, "lumina-mgpt2", text=text, fmt="parquet",
                            sets=sets)  # fmt: skip
    bos, brk, eoss, sep, nl, h8802, w8803 = range(15, 22)
    c = (155000 + CODES[0]).tolist()
    want = [bos, 14, 13, 1, 2, 3, sep, brk, h8802, w8803, *c[:3], nl, *c[3:], nl, eoss, sep]
    assert docs[0] == want  # 2x3 codes of f8: 24 x 16 px; 16 // 8 = 2, 24 // 8 = 3
    mask = pq.read_table(out / "part-000000.parquet").column("loss_mask").to_pylist()[0]
    assert mask == [0] * 7 + [1] * (len(want) - 7)
    _, _, caps, _ = ExportSet.open(out).select(limit=1)
    assert caps == ["a red fish"]
    alt = sets[:1] + ['caption_template_alt="{caption}<reserved08706>"',
                      "caption_template_alt_share=1.0", "resolution_unit=8"]  # fmt: skip
    _, other = export_docs(tokens, tmp_path, "lumina-mgpt2", text=text, fmt="parquet",
                           sets=alt, name="alt")  # fmt: skip
    assert other[0][:6] == [bos, 1, 2, 3, sep, brk]  # the prompt without the size


def test_pixel_fields_need_pixels_per_code():
    with pytest.raises(ConfigError, match="pixels_per_code"):
        load_layout("lumina-mgpt2", [(["pixels_per_code"], 0)])
    with pytest.raises(ConfigError, match="caption_template_alt_share needs"):
        load_layout("emu3", [(["caption_template_alt_share"], 0.5)])
    spec = load_layout("lumina-mgpt2")
    assert spec.size_fields((96, 64))["h_token"] == 8824  # 768 px: 24 patches of 32
    assert np.isclose(spec.caption_template_alt_share, 0.1)


def test_var_preset_is_the_class_then_the_pyramid_coarse_first(tmp_path):
    """VAR (models/var.py, trainer.py): the class token (the null class `num_classes` for
    about 10% of documents), then every scale's codes; loss on the codes only. Against
    VAR's own VAR.forward: benchmarks/preset_parity.py --only var."""
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 64, (200, 1 + 4 + 9))
    labels = [i % 10 for i in range(200)]
    tokens = write_tokens(tmp_path / "pyr", rows, 64, [(1, 1), (2, 2), (3, 3)], labels=labels)
    out, docs = export_docs(tokens, tmp_path, "var", fmt="parquet", sets=["num_classes=10"])
    masks = pq.read_table(out / "part-000000.parquet").column("loss_mask").to_pylist()
    nulls = 0
    for doc, row, label, mask in zip(docs, rows, labels, masks):
        assert doc[1:] == row.tolist() and mask == [0] + [1] * 14
        assert doc[0] in (64 + label, 64 + 10)
        nulls += doc[0] == 64 + 10
    assert 5 <= nulls <= 40  # class_drop = 0.1 of 200 documents
