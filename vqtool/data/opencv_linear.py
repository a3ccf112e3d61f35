"""OpenCV's `cv2.resize(..., interpolation=INTER_LINEAR)` on uint8 images, bit for bit,
in NumPy, and taming-transformers' preprocessing built on it.

taming resizes with albumentations `SmallestMaxSize` (OpenCV INTER_LINEAR) and
`CenterCrop`. OpenCV's 8-bit linear resize is fixed-point, not the exact bilinear
formula, and it does not antialias when shrinking, so Pillow cannot reproduce it.
What OpenCV computes (modules/imgproc/src/resize.cpp, `resizeGeneric_` with
`HResizeLinear` / `VResizeLinear` for uchar):

- source coordinate of output pixel d: `f = float((d + 0.5) * scale - 0.5)` with
  `scale = 1 / (dst / src)` in double; `s = floor(f)`, `f -= s` in float32;
- horizontally `s < 0` -> (s, f) = (0, 0) and `s >= w - 1` -> (w - 1, 0); rows are
  clamped to [0, h - 1] instead, with the unclamped weight;
- weights `round((1 - f) * 2048)` and `round(f * 2048)` (11-bit fixed point, each
  rounded on its own, half to even);
- the horizontal pass keeps ints (`a0 * S[s] + a1 * S[s + 1]`, or `2048 * S[s]` where
  `s + 1` is past the edge); the vertical pass computes
  `((b0 * (R0 >> 4)) >> 16) + ((b1 * (R1 >> 4)) >> 16) + 2) >> 2`, saturated to 8 bits;
- an exact 2x shrink in both directions is done as INTER_AREA: `(sum of 2x2 + 2) >> 2`.

`tests/test_opencv_linear.py` checks this against OpenCV itself on odd sizes when
`opencv-python-headless` is installed (CI installs it); vqtool never needs OpenCV.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

_BITS = 11
_ONE = 1 << _BITS  # 2048


def _axis(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output index: the first source index and the float32 fraction, as OpenCV
    computes them before any edge clamping."""
    scale = 1.0 / (dst / src)
    d = np.arange(dst, dtype=np.float64)
    f = ((d + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = (f - s.astype(np.float32)).astype(np.float32)
    return s, f


def _weights(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    one = np.float32(1.0)
    w0 = np.rint((one - f) * np.float32(_ONE)).astype(np.int64)
    w1 = np.rint(f * np.float32(_ONE)).astype(np.int64)
    return w0, w1


def resize_linear(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    """`cv2.resize(arr, (width, height), interpolation=cv2.INTER_LINEAR)` for an
    (H, W) or (H, W, C) uint8 array."""
    if arr.dtype != np.uint8:
        raise TypeError(f"resize_linear takes uint8 arrays, got {arr.dtype}")
    if width < 1 or height < 1:
        raise ValueError(f"output size must be positive, got {width}x{height}")
    squeeze = arr.ndim == 2
    src = arr[:, :, None] if squeeze else arr
    h, w = src.shape[:2]
    if (w, h) == (width, height):
        out = src.copy()
    elif w == 2 * width and h == 2 * height:  # OpenCV switches to INTER_AREA here
        s = src.astype(np.int32)
        total = s[0::2, 0::2] + s[0::2, 1::2] + s[1::2, 0::2] + s[1::2, 1::2]
        out = ((total + 2) >> 2).astype(np.uint8)
    else:
        out = _generic(src, width, height)
    return out[:, :, 0] if squeeze else out


def _generic(src: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = src.shape[:2]
    # horizontal pass: ints scaled by 2048
    sx, fx = _axis(w, width)
    left = sx < 0
    sx[left], fx[left] = 0, 0
    right = sx >= w - 1
    sx[right], fx[right] = w - 1, 0
    a0, a1 = _weights(fx)
    edge = np.zeros(width, dtype=bool)  # OpenCV's xmax: from the first index whose s + 1 >= w
    past = np.nonzero(sx + 1 >= w)[0]
    if past.size:
        edge[past[0] :] = True
    s = src.astype(np.int64)
    nxt = np.minimum(sx + 1, w - 1)
    rows = s[:, sx] * a0[None, :, None] + s[:, nxt] * a1[None, :, None]
    rows[:, edge] = s[:, sx[edge]] * _ONE
    # vertical pass
    sy, fy = _axis(h, height)
    b0, b1 = _weights(fy)
    r0 = rows[np.clip(sy, 0, h - 1)] >> 4
    r1 = rows[np.clip(sy + 1, 0, h - 1)] >> 4
    val = ((b0[:, None, None] * r0) >> 16) + ((b1[:, None, None] * r1) >> 16)
    return np.clip((val + 2) >> 2, 0, 255).astype(np.uint8)


def py3_round(x: float) -> int:
    """Python 3 rounding (half to even), as albumentations' `py3round` computes it."""
    r = round(x)
    if abs(r - x) == 0.5:
        return int(2.0 * round(x / 2.0))
    return int(r)


def taming_size(width: int, height: int, size: int) -> tuple[int, int]:
    """albumentations `SmallestMaxSize(size)`: the (width, height) after resizing."""
    scale = size / float(min(width, height))
    if scale == 1.0:
        return width, height
    return py3_round(width * scale), py3_round(height * scale)


def taming_crop_offset(width: int, height: int, size: int) -> tuple[int, int]:
    """albumentations `CenterCrop(size, size)`: (left, top), floored."""
    return (width - size) // 2, (height - size) // 2


def taming_center_crop(img: Image.Image, size: int) -> torch.Tensor:
    """taming-transformers' preprocessing: `SmallestMaxSize(size)` (OpenCV
    INTER_LINEAR, sizes rounded half to even) then `CenterCrop(size)` (offsets floored),
    as uint8 `(3, size, size)`."""
    arr = np.asarray(img.convert("RGB") if img.mode != "RGB" else img, dtype=np.uint8)
    h, w = arr.shape[:2]
    nw, nh = taming_size(w, h, size)
    if (nw, nh) != (w, h):
        arr = resize_linear(arr, nw, nh)
    left, top = taming_crop_offset(nw, nh, size)
    crop = np.ascontiguousarray(arr[top : top + size, left : left + size])
    return torch.from_numpy(crop).permute(2, 0, 1).contiguous()
