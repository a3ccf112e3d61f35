"""Data sources and decoding: every input kind, every odd image, never a crash."""

import io
import itertools
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from support.data import image_bytes, write_shard

from vqtool.data import (
    DecodeError,
    ImageStream,
    PositionTracker,
    SourceError,
    StreamPosition,
    center_crop,
    decode_image,
    expand_sources,
    iter_samples,
    make_loader,
)
from vqtool.data.sources import brace_expand


def test_brace_expansion_keeps_zero_padding():
    assert brace_expand("d-{000..002}.tar") == ["d-000.tar", "d-001.tar", "d-002.tar"]
    assert brace_expand("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]
    assert brace_expand("plain.tar") == ["plain.tar"]


def test_sources_of_every_kind(image_shards, tmp_path):
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.png").write_bytes(image_bytes(1))
    (folder / "sub" / "a.txt").write_text("a caption")
    shards = expand_sources(
        [str(tmp_path / "shard-{00..01}.tar"), str(folder), f"pipe:cat {image_shards[2]}", "-"],
        stdin=[image_shards[0] + "\n", "\n"],
    )
    assert [s.kind for s in shards] == ["tar", "tar", "folder", "pipe", "tar"]
    (sample,) = iter_samples(shards[2])
    assert sample.key == "sub/a" and sample.caption == "a caption" and sample.error is None
    piped = list(iter_samples(shards[3]))
    assert len(piped) == 8 and piped[0].caption == "caption 16"


def test_bad_source_entries_name_the_problem(tmp_path):
    with pytest.raises(SourceError, match="nope.tar: no such file"):
        expand_sources([str(tmp_path / "nope.tar")])
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(SourceError, match="not a .tar shard"):
        expand_sources([str(tmp_path / "x.csv")])
    with pytest.raises(SourceError, match="no input"):
        expand_sources([])


def test_tar_samples_group_members_and_record_bad_ones(tmp_path):
    shard = write_shard(
        tmp_path / "s.tar",
        [
            (
                "a",
                {
                    "jpg": image_bytes(0, fmt="JPEG"),
                    "txt": b"hello",
                    "cls": b"7",
                    "json": json.dumps({"w": 1}).encode(),
                },
            ),
            ("b", {"json": b"{}"}),  # no image member
            ("c", {"png": b"not really a png"}),
        ],
    )
    a, b, c = iter_samples(expand_sources([shard])[0])
    assert (a.key, a.caption, a.label, a.meta, a.ext, a.index) == (
        "a",
        "hello",
        7,
        {"w": 1},
        "jpg",
        0,
    )
    assert b.error == "no image member (found: json)"
    assert c.error is None and c.data == b"not really a png"  # decoding, later, reports it
    with pytest.raises(DecodeError, match="undecodable"):
        decode_image(c.data)


def test_truncated_tar_yields_what_it_can_and_an_error(tmp_path):
    pngs = [image_bytes(i) for i in range(3)]
    shard = write_shard(tmp_path / "s.tar", [(f"k{i}", {"png": p}) for i, p in enumerate(pngs)])
    data = open(shard, "rb").read()
    first_member = 512 + -(-len(pngs[0]) // 512) * 512  # header + padded data
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: first_member + 512 + 100])  # stops inside the second image
    samples = list(iter_samples(expand_sources([str(cut)])[0]))
    assert [s.key for s in samples[:1]] == ["k0"] and samples[0].error is None
    assert samples[-1].error and "unreadable tar stream" in samples[-1].error


def test_parquet_with_hf_image_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = [{"bytes": image_bytes(i), "path": f"{i}.png"} for i in range(3)]
    table = pa.table({"image": images, "label": [0, 1, 2], "text": ["x", "y", "z"]})
    pq.write_table(table, tmp_path / "hf.parquet")
    samples = list(iter_samples(expand_sources([str(tmp_path / "hf.parquet")])[0]))
    assert [s.label for s in samples] == [0, 1, 2] and samples[1].caption == "y"
    assert decode_image(samples[0].data).size == (40, 30)
    pq.write_table(pa.table({"other": [1]}), tmp_path / "bad.parquet")
    with pytest.raises(SourceError, match="no image column"):
        list(iter_samples(expand_sources([str(tmp_path / "bad.parquet")])[0]))


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "CMYK", "I;16", "1", "P"])
def test_every_mode_becomes_rgb(mode):
    fmt = "JPEG" if mode == "CMYK" else "TIFF" if mode == "I;16" else "PNG"
    img = decode_image(image_bytes(3, mode=mode, fmt=fmt))
    assert img.mode == "RGB" and img.size == (40, 30)


def test_transparency_is_composited_over_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    assert decode_image(buf.getvalue()).getpixel((0, 0)) == (255, 255, 255)
    p = Image.new("P", (4, 4), 0)
    p.putpalette([0, 0, 0] + [0] * 765)
    p.info["transparency"] = 0
    buf = io.BytesIO()
    p.save(buf, "PNG", transparency=0)
    assert decode_image(buf.getvalue()).getpixel((1, 1)) == (255, 255, 255)


def test_sixteen_bit_grey_is_scaled_not_clipped():
    arr = np.full((4, 4), 65535 // 2, dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    assert decode_image(buf.getvalue()).getpixel((0, 0))[0] in (127, 128)


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    assert decode_image(buf.getvalue()).size == (20, 40)


def test_bad_images_raise_decode_errors():
    with pytest.raises(DecodeError, match="empty file"):
        decode_image(b"")
    jpeg = image_bytes(0, size=(64, 64), fmt="JPEG")
    with pytest.raises(DecodeError):
        decode_image(jpeg[: len(jpeg) // 3])  # truncated
    with pytest.raises(DecodeError, match="pixel limit"):
        decode_image(image_bytes(0, size=(64, 64)), max_pixels=1000)


def test_jpeg_draft_decodes_large_images_at_reduced_scale():
    big = image_bytes(0, size=(800, 600), fmt="JPEG")
    img = decode_image(big, draft_size=64)
    assert min(img.size) >= 64 and img.size[0] < 800
    assert center_crop(img, 64).shape == (3, 64, 64)


def test_stream_counts_errors_and_never_crashes(tmp_path):
    shard = write_shard(
        tmp_path / "s.tar",
        [
            ("good1", {"png": image_bytes(1)}),
            ("zero", {"jpg": b""}),
            ("junk", {"png": b"junk"}),
            ("text", {"txt": b"only text"}),
            ("good2", {"jpg": image_bytes(2, fmt="JPEG")}),
            ("tiny", {"png": image_bytes(3, size=(1, 1))}),
        ],
    )
    stream = ImageStream(expand_sources([shard]), 16, train=False)
    (batch,) = list(make_loader(stream, batch_size=8, workers=0))
    assert batch.keys == ["good1", "good2", "tiny"] and batch.images.shape == (3, 3, 16, 16)
    assert sorted(k for k, _ in batch.errors) == ["junk", "text", "zero"]


def test_two_workers_split_samples_without_duplicates(image_shards):
    stream = ImageStream(expand_sources(image_shards), 16, train=False)
    keys = [k for b in make_loader(stream, batch_size=5, workers=2) for k in b.keys]
    assert sorted(keys) == [f"sample{n:04d}" for n in range(24)]


def test_training_stream_cycles_and_resumes_at_shard_granularity(image_shards):
    shards = expand_sources(image_shards)
    stream = ImageStream(shards, 16, train=True, seed=3, shuffle_buffer=4)
    items = list(itertools.islice(iter(stream), 60))  # more than one epoch (24 samples)
    assert {it["pos"][1] for it in items} == {0, 1, 2}
    tracker = PositionTracker(StreamPosition())
    tracker.update([it["pos"] for it in items[:30]])
    pos = tracker.position()
    assert pos.epoch == 1
    resumed = ImageStream(shards, 16, train=True, seed=3, start=pos)
    first = next(iter(resumed))
    assert first["pos"][1:] == (pos.epoch, pos.shard)
    assert isinstance(first["image"], torch.Tensor) and first["image"].shape == (3, 16, 16)


def test_tar_written_by_python_tarfile_with_directories(tmp_path):
    path = tmp_path / "dirs.tar"
    with tarfile.open(path, "w") as tar:
        d = tarfile.TarInfo("part1")
        d.type = tarfile.DIRTYPE
        tar.addfile(d)
        data = image_bytes(5)
        info = tarfile.TarInfo("part1/x.seg.png")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (s,) = iter_samples(expand_sources([str(path)])[0])
    assert s.key == "part1/x" and s.ext == "png"


def _detailed_jpeg(size=(1600, 1200), seed=0) -> bytes:
    """A JPEG with detail at every scale (smoothed noise plus fine noise)."""
    rng = np.random.default_rng(seed)
    w, h = size
    coarse = Image.fromarray(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8))
    img = np.asarray(coarse.resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
    img = np.clip(img + rng.integers(-40, 41, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_training_crops_pick_the_jpeg_draft_scale_from_the_crop_taken():
    import random

    from vqtool.data.images import crop_box, decode_random_crop, sample_box

    data = _detailed_jpeg()
    full = Image.open(io.BytesIO(data)).convert("RGB")
    whole = Image.open(io.BytesIO(data))
    whole.draft("RGB", (200, 150))  # the old draft: from the whole image's short side
    whole = whole.convert("RGB")
    for seed in range(4):
        crop, shown = decode_random_crop(data, 64, random.Random(seed), scale=(0.02, 0.05))
        assert shown == (1600, 1200) and crop.shape == (3, 64, 64)
        rng = random.Random(seed)  # the same box and flip, cut from the full-scale decode
        box = sample_box(1600, 1200, rng, (0.02, 0.05))
        flip = rng.random() < 0.5
        exact = crop_box(full, box, 64, flip).float()
        r = whole.size[0] / 1600
        coarse = crop_box(whole, tuple(v * r for v in box), 64, flip).float()
        err = (crop.float() - exact).abs().mean()
        assert err < 4, err  # at most JPEG's reduced-scale IDCT rounding
        assert (coarse - exact).abs().mean() > 2 * err  # an upsampled 1/8 draft is blurred


def test_short_side_crops_and_the_photo_cache(image_shards):
    from vqtool.data.cache import cache_photos, cached_batches

    shards = expand_sources(image_shards)
    stream = ImageStream(shards, 16, train=True, short_side=24)
    item = next(iter(stream))
    assert item["image"].shape == (3, 16, 16)
    cache = cache_photos(shards, 24, max_bytes=1 << 20, workers=0)
    assert len(cache.photos) == 24 and not cache.errors
    assert all(min(p.shape[:2]) == 24 for p in cache.photos)  # 40x30 photos -> short side 24
    assert cache_photos(shards, 24, max_bytes=1000, workers=0) is None  # does not fit: stream
    # batch i depends only on (seed, i): a resumed run draws the same batches
    run = cached_batches(cache, 16, 4, seed=7)
    batches = [next(run) for _ in range(5)]
    resumed = next(cached_batches(cache, 16, 4, seed=7, start=3))
    assert torch.equal(resumed.images, batches[3].images)
    assert batches[3].positions == [(0, 4, 0)]
    assert not torch.equal(batches[0].images, batches[1].images)


# ----------------------------------------------------------------------------- hostile shards


def _jpeg(color="red") -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buf, "JPEG")
    return buf.getvalue()


def _tar(path, members) -> str:
    """members: (name, bytes) or (name, "->target") for a symbolic link."""
    import io
    import tarfile

    with tarfile.open(path, "w") as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if isinstance(data, str):
                info.type, info.linkname = tarfile.SYMTYPE, data[2:]
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return str(path)


def test_odd_names_duplicates_and_links_are_samples_or_recorded_errors(tmp_path):
    from vqtool.data.sources import Shard, iter_samples

    odd = b"\xffodd.jpg".decode("utf-8", "surrogateescape")  # not UTF-8
    path = _tar(tmp_path / "s.tar", [
        (odd, _jpeg()), ("a.jpg", _jpeg()), ("a.jpg", _jpeg("blue")),  # same member twice
        ("b.jpg", _jpeg()), ("a.txt", b"late caption"),  # key a again, later
        ("link.jpg", "->b.jpg"),
    ])  # fmt: skip
    samples = list(iter_samples(Shard("tar", path)))
    good = [s.key for s in samples if not s.error]
    assert good == ["\\xffodd", "a", "b"]  # printable key, one sample per key
    assert all(k.encode("utf-8") for k in good)
    errors = {s.key: s.error for s in samples if s.error}
    assert "duplicate key" in errors["a"] and "symbolic link" in errors["link"]
    assert len([s for s in samples if s.error]) == 3  # each dropped member is recorded


def test_the_pixel_limit_is_ours_not_pillows():
    import io

    from PIL import Image

    from vqtool.data.decoding import MAX_PIXELS, DecodeError, decode_with_size

    buf = io.BytesIO()
    Image.new("L", (10000, 9500)).save(buf, "PNG")  # 95 MP: over Pillow's 89.5 MP warning
    img, size = decode_with_size(buf.getvalue())  # the documented default: 2^28 pixels
    assert size == (10000, 9500) and MAX_PIXELS == 1 << 28
    with pytest.raises(DecodeError, match="exceeds the pixel limit of 90000000"):
        decode_with_size(buf.getvalue(), max_pixels=90_000_000)
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's setting is left as it was
