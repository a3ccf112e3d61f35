"""`Tokenizer`: encoder, quantizer(s) and decoder behind one object, with the
token layout and the single-file safetensors checkpoint of DESIGN.md.

    tok = Tokenizer.load("run/tokenizer.safetensors")
    tokens = tok.encode(images_uint8)       # (B, T) int64, flattened layout order
    pictures = tok.decode(tokens)           # (B, 3, S, S) float in [0, 1]
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from vqtool import __version__
from vqtool.atomic import replacing
from vqtool.errors import (
    CheckpointError,
    ConfigError,
    TokenDataError,
)
from vqtool.models.autoencoders import MODEL_CONFIGS, build_autoencoder
from vqtool.models.conv import ConvConfig
from vqtool.models.saving import saved_pixels
from vqtool.models.weights import check_weights, read_checkpoint, weights_to_load
from vqtool.quantizers import VQConfig, quantizer_config
from vqtool.utils import config_from_dict

FORMAT = "tokenizer/1"
LAPLACE_EPS = 0.1  # DALL-E's logit-Laplace squashing of pixels into (eps, 1 - eps)
#: how encode turns an image into the network's input (vqtool.data.images.RESIZERS)
Resize = Literal[
    "bicubic", "adm", "bilinear", "taming", "chameleon", "janus", "emu3", "showo", "lumina", "var",
    "infinity",
]
#: how decoded pixels become uint8 (TokenizerConfig.to_uint8; vqtool.models.saving)
ToUint8Mode = Literal["round", "taming", "chameleon", "janus", "llamagen", "lumina", "muse"]
#: how uint8 pixels become the network's floats (TokenizerConfig.pixel_arithmetic)
Arithmetic = Literal["float32", "float64", "normalize_half", "float64_unit", "rescale_normalize"]


@dataclass
class TokenizerConfig:
    model: Any = field(default_factory=ConvConfig)  # architecture config (see MODEL_CONFIGS)
    quantizer: Any = field(default_factory=VQConfig)  # quantizer config (see QUANTIZERS)
    image_size: int = 64  # training resolution; encode resizes to it by default
    pixel_range: Literal["-1,1", "0,1"] = "-1,1"  # what the network sees
    output: Literal["rgb", "logit_laplace"] = "rgb"  # decoder head (logit-Laplace: 6 channels)
    # how encode turns an image into the network's input (public checkpoints follow their
    # original code): "bicubic" short side + centre crop; "adm" LlamaGen's ADM crop;
    # "bilinear" torchvision Resize + CenterCrop; "taming" albumentations SmallestMaxSize
    # (OpenCV INTER_LINEAR) + CenterCrop; "chameleon" Chameleon's white compositing,
    # LANCZOS short side and floored centre crop; "janus" Janus' long side + grey padding;
    # "showo" torchvision Resize (BICUBIC) + CenterCrop with transparency dropped (Show-o);
    # "lumina" ADM's crop in the image's own mode, then Chameleon's blend (Lumina-mGPT 2.0)
    resize: Resize = "bicubic"
    # uint8 -> float: "float32" x/255 (*2-1); "float64" x/127.5-1 computed in float64
    # (taming, Open-MAGVIT2); "normalize_half" (x/255-0.5)/0.5 in float32 (LlamaGen);
    # "float64_unit" (x/255)*2-1 in float64 (Chameleon); "rescale_normalize" x*(1/255) in
    # float64 cast to float32, then (v-0.5)/0.5 in float32 (Hugging Face image processors:
    # Janus)
    pixel_arithmetic: Arithmetic = "float32"
    # memory layout of the code map the decoder receives when decoding tokens: the same
    # values with channels-last strides take other kernels and change the output in the
    # last bits; public checkpoints follow their original's decode path
    # ("einsum": what torch.einsum returns, channels-last for two images or more and
    # contiguous for one: taming's Gumbel get_codebook_entry)
    decode_layout: Literal["contiguous", "channels_last", "einsum"] = "contiguous"
    # how `vqtool decode` turns the output into uint8 pixels, as the original saves its
    # images (vqtool.models.saving.TO_UINT8): "round" (vqtool's own) or a family's
    to_uint8: ToUint8Mode = "round"
    # encode's default --resize: "square", or a policy keeping each image's shape
    # ("smart:MIN:MAX[:AREA]" for Emu3, whose original never crops)
    policy: str = "square"
    # only the encoder's weights are real (transformers' ChameleonVQVAE keeps no decoder):
    # tokens and inspect work, decoding is refused
    encoder_only: bool = False

    def to_dict(self) -> dict:
        return {
            "model": asdict(self.model),
            "quantizer": asdict(self.quantizer),
            "image_size": self.image_size,
            "pixel_range": self.pixel_range,
            "output": self.output,
            "resize": self.resize,
            "pixel_arithmetic": self.pixel_arithmetic,
            "decode_layout": self.decode_layout,
            "to_uint8": self.to_uint8,
            "policy": self.policy,
            "encoder_only": self.encoder_only,
        }

    @classmethod
    def from_dict(cls, data: dict) -> TokenizerConfig:
        data = dict(data)
        model = dict(data.pop("model", {}))
        arch = model.get("architecture", "conv")
        if arch not in MODEL_CONFIGS:
            raise ConfigError(
                f"model.architecture: {arch!r} is not one of {', '.join(MODEL_CONFIGS)}"
            )
        model_cfg = config_from_dict(MODEL_CONFIGS[arch], {**model, "architecture": arch}, "model.")
        quant_cfg = quantizer_config(dict(data.pop("quantizer", {})))
        rest = config_from_dict(_TopLevel, data, "")
        config = cls(model=model_cfg, quantizer=quant_cfg, **asdict(rest))
        config.validate()
        return config

    def validate(self) -> None:
        if self.image_size < 1:
            raise ConfigError(
                f"image_size (data.image_size) must be positive, got {self.image_size}"
            )
        f = self.model.downsample
        if self.image_size % f or (
            self.model.architecture == "hierarchical" and self.image_size % (2 * f)
        ):
            raise ConfigError(
                f"image_size {self.image_size} is not divisible by the model's downsampling {f}"
                + (" (x2 for the top level)" if self.model.architecture == "hierarchical" else "")
            )
        if self.model.architecture == "palette" and self.quantizer.kind != "palette":
            raise ConfigError("model.architecture 'palette' needs quantizer.kind = 'palette'")
        if self.quantizer.kind == "palette" and self.model.architecture != "palette":
            raise ConfigError("quantizer.kind 'palette' needs model.architecture = 'palette'")


@dataclass
class _TopLevel:
    image_size: int = 64
    pixel_range: Literal["-1,1", "0,1"] = "-1,1"
    output: Literal["rgb", "logit_laplace"] = "rgb"
    resize: Resize = "bicubic"
    pixel_arithmetic: Arithmetic = "float32"
    decode_layout: Literal["contiguous", "channels_last", "einsum"] = "contiguous"
    to_uint8: ToUint8Mode = "round"
    policy: str = "square"
    encoder_only: bool = False


@dataclass
class TokenLayout:
    """How one image's codes flatten into a token row: levels coarse first,
    raster order within a level, depth innermost."""

    grids: list[tuple[int, int]]
    depth: int
    vocab_size: int

    @property
    def tokens_per_image(self) -> int:
        return sum(h * w for h, w in self.grids) * self.depth

    def flatten(self, levels: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([codes.reshape(codes.shape[0], -1) for codes in levels], dim=1)

    def unflatten(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        if tokens.ndim != 2 or tokens.shape[1] != self.tokens_per_image:
            raise TokenDataError(
                f"token rows of shape {tuple(tokens.shape)} do not fit this tokenizer's layout "
                f"({self.tokens_per_image} tokens per image: grids {self.grids}, "
                f"depth {self.depth})"
            )
        out, start = [], 0
        depth = (self.depth,) if self.depth > 1 else ()
        for h, w in self.grids:
            n = h * w * self.depth
            out.append(tokens[:, start : start + n].reshape(tokens.shape[0], h, w, *depth))
            start += n
        return out

    def to_dict(self) -> dict:
        return {
            "levels": len(self.grids),
            "grids": [list(g) for g in self.grids],
            "depth": self.depth,
            "vocab_size": self.vocab_size,
            "tokens_per_image": self.tokens_per_image,
            "order": "levels coarse first, raster within a level, depth innermost",
        }


@dataclass
class TokenizerOutput:
    output: torch.Tensor  # raw decoder output (3 or 6 channels, model pixel range)
    codes: list[torch.Tensor]  # per level, coarse first
    loss: torch.Tensor  # quantizers' auxiliary losses, summed
    metrics: dict[str, float]


class Tokenizer(nn.Module):
    def __init__(self, config: TokenizerConfig):
        super().__init__()
        config.validate()
        self.config = config
        out_channels = 6 if config.output == "logit_laplace" else 3
        self.net = build_autoencoder(
            config.model, config.quantizer, config.image_size, out_channels
        )

    # -- layout ----------------------------------------------------------------
    @property
    def layout(self) -> TokenLayout:
        q = self.net.quantizers[0]
        return TokenLayout(self.net.grids(self.config.image_size), q.depth, q.vocab_size)

    @property
    def vocab_size(self) -> int:
        return self.net.quantizers[0].vocab_size

    # -- pixels ----------------------------------------------------------------
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> the network's float range (float input is used as is)."""
        if images.dtype != torch.uint8:
            return images
        unit = self.config.pixel_range == "0,1"
        arithmetic = self.config.pixel_arithmetic
        if arithmetic == "float64" and not unit:
            return (images.double() / 127.5 - 1).float()
        if arithmetic == "float64_unit":
            return (images.double() / 255.0 * 2 - 1).float()
        if arithmetic == "rescale_normalize":
            return ((images.double() * (1 / 255)).float() - 0.5) / 0.5
        x = images.float() / 255.0
        if unit:
            return x
        return (x - 0.5) / 0.5 if arithmetic == "normalize_half" else x * 2 - 1

    def to_unit(self, output: torch.Tensor) -> torch.Tensor:
        """Decoder output -> pixels in [0, 1]."""
        if self.config.output == "logit_laplace":
            mu = torch.sigmoid(output[:, :3].float())
            return ((mu - LAPLACE_EPS) / (1 - 2 * LAPLACE_EPS)).clamp(0, 1)
        x = output.float()
        x = (x + 1) / 2 if self.config.pixel_range == "-1,1" else x
        return x.clamp(0, 1)

    # -- the model ---------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> TokenizerOutput:
        """Training path: x in the network's range -> raw output, codes, aux loss."""
        train = getattr(self.net, "train_forward", None)
        if train is not None and self.training:  # a net whose training path is its own
            output, levels = train(x)
        else:
            levels = self.net.quantize(x)
            output = self.net.decode_levels([lv.quantized for lv in levels])
        loss = sum(lv.loss for lv in levels)
        metrics: dict[str, float] = {}
        for i, lv in enumerate(levels):
            prefix = f"l{i}_" if len(levels) > 1 else ""
            metrics.update({prefix + k: v for k, v in lv.metrics.items()})
        return TokenizerOutput(output, [lv.codes for lv in levels], loss, metrics)

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (uint8, or float in the network's range) -> (B, T) int64 tokens."""
        return self.layout.flatten([lv.codes for lv in self.net.quantize(self.normalize(images))])

    @torch.inference_mode()
    def encode_grid(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """`encode` for images of any size a conv tokenizer takes, with the token grid
        the network gave them (height, width)."""
        levels = self.net.quantize(self.normalize(images))
        codes = levels[-1].codes  # a pyramid's last scale: the grid its schedule ends at
        return self.layout.flatten([lv.codes for lv in levels]), tuple(codes.shape[1:3])

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, T) tokens -> (B, 3, S, S) float pixels in [0, 1] (`grid`: see decode_output)."""
        return self.to_unit(self.decode_output(tokens, grid))

    @torch.inference_mode()
    def decode_output(
        self, tokens: torch.Tensor, grid: tuple[int, int] | None = None, levels: int | None = None
    ) -> torch.Tensor:
        """(B, T) tokens -> the raw decoder output (the network's range and channels);
        `grid` for tokens of a native-size image (a single-level conv tokenizer); `levels`:
        the first N levels only (a pyramid's picture after N scales)."""
        self.refuse_encoder_only()
        if int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size:
            raise TokenDataError(f"tokens outside [0, {self.vocab_size}) for this tokenizer")
        layout = self.layout_at(grid) if grid is not None else self.layout
        codes = layout.unflatten(tokens.long())[:levels]
        quantized = [q.decode_codes(c) for q, c in zip(self.net.quantizers, codes)]
        strides = self.config.decode_layout
        if strides == "channels_last" or (strides == "einsum" and len(tokens) > 1):
            quantized = [q.contiguous(memory_format=torch.channels_last) for q in quantized]
        if levels is not None:  # a pyramid's first scales, drawn at its full size
            return self.net.decode_levels(quantized, final=layout.grids[-1])
        return self.net.decode_levels(quantized)

    def layout_at(self, grid: tuple[int, int]) -> TokenLayout:
        """The layout of a row whose (last) grid is `grid`: a pyramid whose schedule
        follows the image's shape ends there; a single-level tokenizer's row is that grid."""
        q = self.net.quantizers[0]
        grids_at = getattr(self.net, "grids_at", None)
        grids = grids_at(tuple(grid)) if grids_at else [tuple(grid)]
        return TokenLayout(grids, q.depth, q.vocab_size)

    def decode_uint8(self, tokens: torch.Tensor, grid: tuple[int, int] | None = None):
        """(B, T) tokens -> (B, 3, H, W) uint8 pixels, converted as the tokenizer's
        original saves its images (`TokenizerConfig.to_uint8`)."""
        return saved_pixels(self, self.decode_output(tokens, grid))

    def refuse_encoder_only(self) -> None:
        if self.config.encoder_only:
            raise CheckpointError(
                "this tokenizer holds its encoder only (read from transformers' "
                "ChameleonVQVAE, which keeps no decoder): it tokenizes, but decoding needs "
                "the release's tokenizer file (Chameleon/Anole: vqgan.ckpt)"
            )

    @torch.inference_mode()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        self.refuse_encoder_only()
        return self.to_unit(self(self.normalize(images)).output)

    # -- checkpoint ----------------------------------------------------------------
    def save(
        self,
        path: str | Path,
        metadata: dict[str, str] | None = None,
        extra_tensors: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Write the single-file checkpoint atomically (temporary name, then rename)."""
        from safetensors.torch import save_file

        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        for k, v in (extra_tensors or {}).items():
            tensors[f"extra.{k}"] = v.detach().contiguous().cpu()
        meta = {
            "vqtool.format": FORMAT,
            "vqtool.config": json.dumps(self.config.to_dict()),
            "vqtool.version": __version__,
            "vqtool.layout": json.dumps(self.layout.to_dict()),
            **(metadata or {}),
        }
        path = Path(path)
        with replacing(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Tokenizer:
        tok, _ = cls.load_with_extras(path, device)
        return tok

    @classmethod
    def load_with_extras(cls, path, device="cpu") -> tuple[Tokenizer, dict[str, torch.Tensor]]:
        path = Path(path)
        meta, tensors = read_checkpoint(path, FORMAT, "tokenizer")
        with weights_to_load():
            tok = cls(TokenizerConfig.from_dict(json.loads(meta["vqtool.config"])))
        extras = {k[len("extra.") :]: v for k, v in tensors.items() if k.startswith("extra.")}
        weights = {k: v for k, v in tensors.items() if not k.startswith("extra.")}
        check_weights(tok, weights, path)
        return tok.to(device).eval(), extras
