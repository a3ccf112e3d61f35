"""`encode --decode pil|draft`: a JPEG at least twice the tokenizer's size may be reduced in
libjpeg's DCT before the exact resize (draft, vqtool's own tokenizers' way) or decoded in
full (pil, the public tokenizers' originals' way); below twice the size both are the same
pixels. A choice other than the tokenizer's own is recorded and pinned.
benchmarks/encode.py --decoders measures the differences on the devset."""

import io
import json

import numpy as np
import pytest
from PIL import Image
from support.data import image_bytes
from typer.testing import CliRunner

from vqtool.cli.main import app
from vqtool.data.images import encode_pixels

runner = CliRunner()


def jpeg(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(image_bytes(3, size=size))).convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_draft_equals_a_full_decode_below_twice_the_size_and_differs_a_little_above():
    small = jpeg((120, 100))  # short side 100 < 2 x 64: libjpeg has nothing to skip
    assert np.array_equal(encode_pixels(small, 64, "bicubic", draft=True).pixels,
                          encode_pixels(small, 64, "bicubic", draft=False).pixels)  # fmt: skip
    large = jpeg((600, 520))  # short side 520 >= 8 x 64: decoded at 1/8 in the DCT
    drafted = encode_pixels(large, 64, "bicubic", draft=True).pixels.float()
    full = encode_pixels(large, 64, "bicubic", draft=False).pixels.float()
    gap = (drafted - full).abs()
    # near, not equal (this synthetic picture is all high frequencies: a mean gap of ~4
    # levels; photos: benchmarks/encode.py --decoders)
    assert gap.max() > 0 and gap.mean() < 8
    # a public family's resize decodes in full unless asked
    assert np.array_equal(encode_pixels(large, 64, "adm").pixels,
                          encode_pixels(large, 64, "adm", draft=False).pixels)  # fmt: skip


@pytest.mark.slow
def test_a_non_default_decode_is_recorded_pinned_and_refused_where_it_cannot_apply(tmp_path):
    out = tmp_path / "tokens"
    base = ["encode", "vqtool:sample", "--out", str(out), "--workers", "0", "-q"]
    assert runner.invoke(app, [*base, "--decode", "pil"]).exit_code == 0
    assert json.loads((out / "encode.json").read_text())["preprocessing"]["decode"] == "pil"
    again = runner.invoke(app, base)  # the bundled tokenizer's own way is draft
    assert again.exit_code == 2
    assert "--decode pil; this run: --decode draft" in again.stderr
    native = runner.invoke(app, [*base[:3], str(tmp_path / "n"), "--workers", "0", "--resize",
                                 "none", "--decode", "draft"])  # fmt: skip
    assert native.exit_code == 2 and "--decode draft" in native.stderr
    default = tmp_path / "default"
    assert runner.invoke(app, [*base[:3], str(default), *base[4:]]).exit_code == 0
    assert "decode" not in json.loads((default / "encode.json").read_text())["preprocessing"]
