"""The input rule: how a stored picture becomes RGB (EXIF orientation, more than 8 bits),
each family's default, recorded, pinned, counted, shown; and progress inside a slow
batch."""

import io
import json
import time

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from support.data import image_bytes, make_tokenizer, write_shard
from typer.testing import CliRunner

from vqtool.cli.main import app
from vqtool.data.decoding import InputRule, decode_file, family_rule
from vqtool.data.images import RESIZERS, encode_pixels
from vqtool.errors import ConfigError
from vqtool.tokens import encode_job, heartbeat
from vqtool.tokens.encode import EncodeConfig, EncodeError, encode

runner = CliRunner()


def phone_photo(size=(48, 32)) -> bytes:
    """A JPEG stored sideways with EXIF orientation 6: shown upright, `size` as shown."""
    upright = Image.open(io.BytesIO(image_bytes(3, size=size))).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90 degrees clockwise to show
    buf = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buf, "JPEG", quality=95, exif=exif)
    return buf.getvalue()


def deep_png(size=(40, 30)) -> bytes:
    """A 16-bit greyscale PNG (`I;16`) with values up to 1023."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    buf = io.BytesIO()
    Image.fromarray((xx * 25 + yy).astype(np.uint16)).save(buf, "PNG")
    return buf.getvalue()


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"))


def test_each_family_defaults_to_its_originals_rule():
    assert family_rule("bicubic") == InputRule("exif", "scale")  # vqtool's own
    for resize in RESIZERS.keys() - {"bicubic"}:  # every public family
        assert family_rule(resize) == InputRule("stored", "clip"), resize
    assert family_rule("janus", orientation="exif") == InputRule("exif", "clip")
    with pytest.raises(ConfigError, match="--orientation 'sideways'"):
        family_rule("bicubic", orientation="sideways")
    with pytest.raises(ConfigError, match="--high-bit-depth 'round'"):
        family_rule("bicubic", high_bit_depth="round")


def test_stored_keeps_the_pixels_as_the_originals_read_them_and_exif_turns_them_upright():
    data = phone_photo()
    opened = Image.open(io.BytesIO(data))
    stored = decode_file(data, rule=InputRule("stored", "clip"))
    assert stored.size == (32, 48) and stored.touched == ("exif_oriented",)
    assert np.array_equal(pixels(stored.image), pixels(opened))  # Image.open().convert("RGB")
    upright = decode_file(data, rule=InputRule("exif", "clip"))
    assert upright.size == (48, 32)
    assert np.array_equal(pixels(upright.image), pixels(ImageOps.exif_transpose(opened)))


def test_clip_converts_as_pillow_does_and_scale_keeps_the_range():
    data = deep_png()
    raw = np.asarray(Image.open(io.BytesIO(data)), dtype=np.int64)
    assert raw.max() > 255
    clipped = decode_file(data, rule=InputRule("exif", "clip"))
    assert clipped.touched == ("high_bit_depth",)
    assert np.array_equal(pixels(clipped.image)[..., 0], np.minimum(raw, 255))
    assert np.array_equal(pixels(clipped.image), pixels(Image.open(io.BytesIO(data))))
    scaled = pixels(decode_file(data, rule=InputRule("exif", "scale")).image)[..., 0]
    assert np.array_equal(scaled, np.floor(raw / 65535 * 255 + 0.5).astype(np.uint8))


@pytest.mark.parametrize("resize", ["janus", "chameleon", "taming", "bilinear", "adm", "lumina"])
def test_a_public_familys_pixels_by_default_are_its_originals_picture(resize):
    """Stored orientation, clipped depth, and (for all but Chameleon's and Lumina's blend)
    transparency dropped: the pixels of `Image.open(f).convert("RGB")`. (Lumina-mGPT crops
    a picture in its own mode and converts afterwards: its 16-bit and transparent files are
    checked against its original in benchmarks/parity_2025.py.)"""
    files = [phone_photo()]
    if resize != "lumina":
        files.append(deep_png())
    if resize not in ("chameleon", "lumina"):
        files.append(image_bytes(1, size=(40, 30), mode="RGBA"))
    for data in files:
        got = encode_pixels(data, 16, resize).pixels
        assert torch.equal(got, encode_pixels(_as_rgb_png(data), 16, resize).pixels), resize


def _as_rgb_png(data: bytes) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def odd_photos(tmp_path):
    shard = write_shard(tmp_path / "odd.tar", [
        ("phone", {"jpg": phone_photo()}),
        ("deep", {"png": deep_png()}),
        ("plain", {"png": image_bytes(2)}),
    ])  # fmt: skip
    return shard, make_tokenizer(tmp_path / "tok.safetensors")


def test_encode_records_the_rule_counts_what_it_met_and_refuses_a_rerun_under_another(
    odd_photos, tmp_path
):
    shard, tok = odd_photos
    out = tmp_path / "tokens"
    result = encode(EncodeConfig([shard], tok, str(out), workers=0))
    assert (result.images, result.exif_oriented, result.high_bit_depth) == (3, 1, 1)
    assert result.input_rule == {"orientation": "exif", "high_bit_depth": "scale"}
    assert any("1 photo(s) carried an EXIF orientation: turned upright" in n for n in result.notes)
    assert any("--high-bit-depth clip clips them" in n for n in result.notes)
    pre = json.loads((out / "encode.json").read_text())["preprocessing"]
    assert (pre["orientation"], pre["high_bit_depth"]) == ("exif", "scale")
    with pytest.raises(EncodeError, match="another input rule \\(--orientation exif;"):
        encode(EncodeConfig([shard], tok, str(out), workers=0, orientation="stored"))
    # the same command again is a resume
    assert encode(EncodeConfig([shard], tok, str(out), workers=0)).tasks_skipped == 1


def test_the_cli_takes_the_rule_shows_it_and_says_what_it_did(odd_photos, tmp_path):
    shard, tok = odd_photos
    out = tmp_path / "tokens"
    args = ["encode", shard, "--tokenizer", tok, "--out", str(out), "--workers", "0"]
    r = runner.invoke(app, [*args, "--orientation", "stored", "--high-bit-depth", "clip", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["input_rule"] == {"orientation": "stored", "high_bit_depth": "clip"}
    assert (report["exif_oriented"], report["high_bit_depth"]) == (1, 1)
    assert "kept as stored, as the tokenizer's original reads them (--orientation exif" in r.stderr
    again = runner.invoke(app, args)  # the tokenizer's own rule now: refused, one line
    assert again.exit_code == 2
    assert "rerun with --orientation stored --high-bit-depth clip" in again.stderr
    shown = runner.invoke(app, ["inspect", str(out)])
    assert "--orientation stored, --high-bit-depth clip" in shown.stdout


def test_a_slow_batch_reports_progress_from_inside(odd_photos, tmp_path, monkeypatch):
    """A batch that takes longer than the heartbeat reports how many of its images are
    done and the time per image, before the batch ends."""
    shard, tok = odd_photos
    monkeypatch.setattr(heartbeat, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(encode_job, "CPU_PIXELS", 16 * 16)  # one image at a time
    from vqtool.models import Tokenizer

    slow_encode = Tokenizer.encode

    def slow(self, x):
        time.sleep(0.2)
        return slow_encode(self, x)

    monkeypatch.setattr(Tokenizer, "encode", slow)
    events = []
    encode(EncodeConfig([shard], tok, str(tmp_path / "t"), workers=0, batch_size=8),
           lambda kind, info: events.append((kind, dict(info))))  # fmt: skip
    beats = [info for kind, info in events if kind == "heartbeat"]
    assert beats and all(b["of"] == 3 and 0 <= b["done"] <= 3 for b in beats)
    assert any(b["done"] and b["s_per_image"] > 0 for b in beats)  # pieces of one image
    first_batch = next(i for i, (kind, _) in enumerate(events) if kind == "batch")
    assert any(kind == "heartbeat" for kind, _ in events[:first_batch])


def test_a_slow_batch_prints_a_progress_line_in_a_log(odd_photos, tmp_path, monkeypatch):
    """Not on a terminal (a batch log), the first heartbeat prints a line at once, whatever
    --log-every says."""
    shard, tok = odd_photos
    monkeypatch.setattr(heartbeat, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(encode_job, "CPU_PIXELS", 16 * 16)
    from vqtool.models import Tokenizer

    slow_encode = Tokenizer.encode
    monkeypatch.setattr(Tokenizer, "encode",
                        lambda self, x: (time.sleep(0.2), slow_encode(self, x))[1])  # fmt: skip
    r = runner.invoke(app, ["encode", shard, "--tokenizer", tok, "--out", str(tmp_path / "t"),
                            "--workers", "0", "--log-every", "600"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "batch in progress: 0/3 images" in r.stderr
