"""LPIPS-style perceptual distance (Zhang et al. 2018) on VGG-16 features.

The network's weights are never downloaded: `load_perceptual(paths)` reads
them from files the user names (safetensors, or a PyTorch file loaded with
`weights_only=True`). Expected keys: the VGG-16 convolutions as
`features.{0,2,5,7,10,12,14,17,19,21,24,26,28}.{weight,bias}` (torchvision's
names), and LPIPS' five 1x1 heads as `lin{0..4}.model.1.weight` (the LPIPS
release's names). One file may hold both, or give two files.

The usual pair, with no download by vqtool:
- `lpips:vgg`: the LPIPS v0.1 heads that the `lpips` package ships
  (`pip install lpips`; the file `lpips/weights/v0.1/vgg.pth` is found in the
  installed package without importing it);
- torchvision's ImageNet VGG-16, `vgg16-397923af.pth` (what
  `torchvision.models.vgg16(weights="IMAGENET1K_V1")` caches under
  `~/.cache/torch/hub/checkpoints/`).
Known files are checked: the LPIPS heads by their full sha256, torchvision's
file by the sha256 prefix its name carries."""

from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path

import torch
from torch import nn

from vqtool.errors import PerceptualError

# VGG-16 "features": conv widths, with "M" for max-pool; LPIPS taps relu1_2..relu5_3
VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
TAPS = (3, 8, 15, 22, 29)  # indices in `features` after which a feature map is taken
TAP_CHANNELS = (64, 128, 256, 512, 512)
SHIFT = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
SCALE = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)


class _Head(nn.Module):
    """LPIPS' per-layer 1x1 weighting (named `lin{i}.model.1` as in its release)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(0.0), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x):
        return self.model(x)


class LPIPS(nn.Module):
    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
                c = v
        self.features = nn.Sequential(*layers)
        for i, ch in enumerate(TAP_CHANNELS):
            self.add_module(f"lin{i}", _Head(ch))
        self.register_buffer("shift", SHIFT.clone(), persistent=False)
        self.register_buffer("scale", SCALE.clone(), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def _taps(self, x):
        x = (x - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in TAPS:
                out.append(x)
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Mean distance between image batches in [-1, 1]."""
        total = a.new_zeros(())
        for i, (fa, fb) in enumerate(zip(self._taps(a), self._taps(b))):
            fa = fa / (fa.norm(dim=1, keepdim=True) + 1e-10)
            fb = fb / (fb.norm(dim=1, keepdim=True) + 1e-10)
            total = total + getattr(self, f"lin{i}")((fa - fb) ** 2).mean()
        return total

    def train(self, mode: bool = True):  # always frozen
        return super().train(False)


#: sha256 of the LPIPS heads the `lpips` package ships (lpips 0.1.4, weights/v0.1/vgg.pth)
LPIPS_VGG_SHA256 = "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868"


def resolve_weights(name: str) -> Path:
    """A perceptual_weights entry -> a file: `lpips:vgg` is the installed lpips package's
    v0.1 VGG heads; anything else is a path."""
    if name == "lpips:vgg":
        spec = importlib.util.find_spec("lpips")
        if spec is None or not spec.origin:
            raise PerceptualError(
                "loss.perceptual_weights: 'lpips:vgg' needs the lpips package "
                "(pip install lpips), or give the path of its weights/v0.1/vgg.pth"
            )
        return Path(spec.origin).parent / "weights" / "v0.1" / "vgg.pth"
    if name.startswith("lpips:"):
        raise PerceptualError(f"loss.perceptual_weights: {name!r}: only 'lpips:vgg' is known")
    return Path(name).expanduser()


def check_known(path: Path, data: bytes) -> None:
    """Refuse a file that claims to be a known release but has other bytes."""
    digest = hashlib.sha256(data).hexdigest()
    parts = path.parts[-4:]
    if parts[-3:] == ("weights", "v0.1", "vgg.pth") and "lpips" in parts[:1]:
        if digest != LPIPS_VGG_SHA256:
            raise PerceptualError(
                f"{path}: sha256 {digest[:12]}... is not the LPIPS v0.1 VGG file "
                f"({LPIPS_VGG_SHA256[:12]}...); reinstall lpips"
            )
    m = re.fullmatch(r"vgg16-([0-9a-f]{8})\.pth", path.name)
    if m and not digest.startswith(m.group(1)):
        raise PerceptualError(
            f"{path}: sha256 {digest[:12]}... does not start with {m.group(1)} as its "
            "torchvision name says; the file is damaged, download it again"
        )


def _read(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise PerceptualError(f"loss.perceptual_weights: {path} does not exist")
    check_known(path, path.read_bytes())
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PerceptualError(
            f"{path}: cannot be read safely ({exc}); re-save it as safetensors or a plain "
            "state_dict"
        ) from exc
    return state.get("state_dict", state) if isinstance(state, dict) else {}


def load_perceptual(paths: list[str]) -> LPIPS:
    """Build LPIPS from one or more weight files; every key must be found."""
    if not paths:
        raise PerceptualError(
            "the perceptual loss needs its network weights: set loss.perceptual_weights to "
            "the VGG-16 + LPIPS file(s); nothing is downloaded"
        )
    state: dict[str, torch.Tensor] = {}
    for p in paths:
        state.update(
            {
                k.removeprefix("net.").removeprefix("module."): v
                for k, v in _read(resolve_weights(p)).items()
            }
        )
    model = LPIPS()
    wanted = model.state_dict()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise PerceptualError(
            f"perceptual weights lack {len(missing)} tensors, e.g. {missing[0]!r}; "
            "expected torchvision VGG-16 `features.*` and LPIPS `lin*.model.1.weight`"
        )
    for k, v in wanted.items():
        if state[k].shape != v.shape:
            raise PerceptualError(
                f"perceptual weight {k}: shape {tuple(state[k].shape)}, expected {tuple(v.shape)}"
            )
    model.load_state_dict({k: state[k] for k in wanted})
    return model
