"""`inspect` of image shards: samples, formats, sizes, undecodable samples."""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from vqtool.data.decoding import MAX_PIXELS, decode_with_size
from vqtool.data.sources import expand_sources, iter_samples
from vqtool.errors import DecodeError


@dataclass
class ImageShardsReport:
    path: str
    shards: int
    samples: int
    decodable: int
    undecodable: int
    undecodable_examples: list[dict]
    formats: dict[str, int]
    width: dict  # min, mean, max
    height: dict
    short_side_histogram: dict[str, int]
    with_caption: int
    with_label: int
    warnings: list[str] = field(default_factory=list)
    kind: str = "images"

    def to_dict(self) -> dict:
        return asdict(self)


SHORT_SIDE_BUCKETS = [(0, 64), (64, 128), (128, 256), (256, 512), (512, 1024), (1024, None)]


def inspect_images(
    sources: list[str], path: str, max_pixels: int = MAX_PIXELS
) -> ImageShardsReport:
    shards = expand_sources(sources)
    formats: Counter = Counter()
    sizes_w, sizes_h = array("i"), array("i")  # 8 bytes per image
    hist = Counter()
    bad: list[dict] = []
    samples = captions = labels = 0
    for shard in shards:
        for s in iter_samples(shard):
            samples += 1
            captions += s.caption is not None
            labels += s.label is not None
            if s.error:
                bad.append({"key": s.key, "kind": s.kind, "source": s.source, "reason": s.error})
                continue
            try:
                img, (w, h) = decode_with_size(s.data, 64, max_pixels)
            except DecodeError as exc:
                bad.append({"key": s.key, "kind": exc.kind, "source": s.source, "reason": str(exc)})
                continue
            formats[_format_of(s.data, s.ext)] += 1
            sizes_w.append(w)
            sizes_h.append(h)
            short = min(w, h)
            for lo, hi in SHORT_SIDE_BUCKETS:
                if short >= lo and (hi is None or short < hi):
                    hist[_bucket_name(lo, hi)] += 1
    report = ImageShardsReport(
        path=path,
        shards=len(shards),
        samples=samples,
        decodable=len(sizes_w),
        undecodable=len(bad),
        undecodable_examples=bad[:5],
        formats=dict(formats.most_common()),
        width=_spread(sizes_w),
        height=_spread(sizes_h),
        short_side_histogram={
            _bucket_name(lo, hi): hist.get(_bucket_name(lo, hi), 0) for lo, hi in SHORT_SIDE_BUCKETS
        },
        with_caption=captions,
        with_label=labels,
    )
    if samples == 0:
        report.warnings.append("no samples found")
    elif bad:
        report.warnings.append(f"{len(bad)} of {samples} samples cannot be decoded")
    return report


def _format_of(data: bytes, ext: str) -> str:
    from io import BytesIO

    from PIL import Image

    try:
        return Image.open(BytesIO(data)).format or ext.upper()
    except Exception:
        return ext.upper() or "?"


def _bucket_name(lo: int, hi: int | None) -> str:
    return f">={lo}" if hi is None else f"{lo}-{hi - 1}"


def _spread(values) -> dict:
    if not len(values):
        return {"min": None, "median": None, "max": None}
    a = np.asarray(values)
    return {"min": int(a.min()), "median": float(np.median(a)), "max": int(a.max())}
