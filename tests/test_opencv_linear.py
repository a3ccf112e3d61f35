"""taming's preprocessing reproduced exactly: albumentations' size rounding and crop
offsets, and OpenCV's 8-bit INTER_LINEAR resize (checked against OpenCV itself when
`opencv-python-headless` is installed, as in CI)."""

import numpy as np
import pytest
from PIL import Image

from vqtool.data.opencv_linear import (
    resize_linear,
    taming_center_crop,
    taming_crop_offset,
    taming_size,
)


def test_the_resized_size_is_rounded_not_truncated():
    # 640 x 427 -> the short side to 256: the long side is 383.70 px
    assert taming_size(640, 427, 256) == (384, 256)  # albumentations rounds
    # (torchvision's Resize, our "bilinear" mode, truncates it to 383)
    assert taming_size(427, 640, 256) == (256, 384)
    # exact halves round to even, as Python 3 does: 3 x 2 -> 4.5 x 3
    assert taming_size(3, 2, 3) == (4, 3)
    assert taming_size(5, 2, 3) == (8, 3)  # 7.5 -> 8
    assert taming_size(256, 300, 256) == (256, 300)  # already at size: untouched


def test_the_crop_offset_is_floored():
    assert taming_crop_offset(387, 256, 256) == (65, 0)  # 65.5: torchvision would take 66
    assert taming_crop_offset(256, 385, 256) == (0, 64)
    assert taming_crop_offset(256, 256, 256) == (0, 0)


def test_linear_resize_uses_opencv_fixed_point_weights():
    # one row [0, 255] widened to 4: source positions -0.25 (clamped), 0.25, 0.75, 1.25
    # (past the edge); weights in 1/2048 steps, 63.75 -> 64, 191.25 -> 191
    row = np.array([[0, 255]], dtype=np.uint8)
    assert resize_linear(row, 4, 1).tolist() == [[0, 64, 191, 255]]
    # an exact 2x shrink is an area average rounded half up: (10+20+50+60+2) >> 2
    block = np.array([[10, 20, 30, 41], [50, 60, 70, 80]], dtype=np.uint8)
    assert resize_linear(block, 2, 1).tolist() == [[35, 55]]
    # shrinking does not antialias: 4 -> 3 samples at 0.17, 1.5 and 2.83 between two
    # neighbours only (weights 1707/341, 1024/1024, 341/1707)
    ramp = np.array([[0, 100, 200, 40]], dtype=np.uint8)
    assert resize_linear(ramp, 3, 1).tolist() == [[17, 150, 67]]


def test_taming_crop_of_an_odd_photo():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (301, 457, 3), dtype=np.uint8))
    out = taming_center_crop(img, 128)
    assert out.shape == (3, 128, 128)
    w, h = taming_size(457, 301, 128)  # 194.36 -> 194 x 128
    left, top = taming_crop_offset(w, h, 128)
    full = resize_linear(np.asarray(img), w, h)
    assert np.array_equal(out.permute(1, 2, 0).numpy(), full[top : top + 128, left : left + 128])


SIZES = [(1, 1), (1, 5), (5, 1), (2, 2), (3, 7), (17, 13), (301, 457), (457, 301),
         (640, 480), (383, 256), (999, 1001), (50, 2000)]  # fmt: skip
OUTS = [(1, 1), (2, 3), (7, 5), (128, 128), (256, 383), (193, 128), (32, 32), (1000, 1000),
        (25, 1000), (8, 4)]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("w,h", SIZES)
def test_resize_equals_opencv(w, h):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(w * 1000 + h)
    # a noisy image and a smooth one (a photo-like gradient) per size, RGB and grey
    noise = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    smooth = ((xx * 7 + yy * 3) % 256).astype(np.uint8)
    for arr in (noise, smooth):
        for ow, oh in OUTS + [(max(w // 2, 1), max(h // 2, 1)), (2 * w, 2 * h)]:
            want = cv2.resize(arr, (ow, oh), interpolation=cv2.INTER_LINEAR)
            got = resize_linear(arr, ow, oh)
            assert np.array_equal(want, got), f"{w}x{h} -> {ow}x{oh}"
