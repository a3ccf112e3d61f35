"""The way back: `vqtool decode` converts to uint8 as each family's original saves its
images, and a row's picture does not depend on the rows decoded beside it. (Against the
originals' own code: benchmarks/pretrained_parity.py, parity_2025.py, parity_cosmos.py.)"""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from vqtool.cli.main import app
from vqtool.models import Tokenizer
from vqtool.models.saving import TO_UINT8, round_unit
from vqtool.tokens.reader import TokenDataset

runner = CliRunner()

#: each original's lines from decoder output to saved uint8, as the original writes them
#: (numpy, float32), for one (3, H, W) output
ORIGINAL_LINES = {
    # taming scripts/make_samples.py save_image
    "taming": lambda x: ((x.transpose(1, 2, 0) + 1.0) * 127.5).clip(0, 255).astype(np.uint8),
    # chameleon image_tokenizer._pil_from_chw_tensor
    "chameleon": lambda x: (((np.clip(x, -1.0, 1.0) + 1.0) / 2.0).transpose(1, 2, 0) * 255)
    .astype(np.uint8),
    # Janus generation_inference.py (assignment into a uint8 array)
    "janus": lambda x: _assign_u8(np.clip((x.transpose(1, 2, 0) + 1) / 2 * 255, 0, 255)),
    # LlamaGen reconstruction_vq_ddp.py
    "llamagen": lambda x: np.clip(127.5 * x + 128.0, 0, 255).transpose(1, 2, 0).astype(np.uint8),
    # Lumina-mGPT 2.0 inference_solver.show_images
    "lumina": lambda x: np.clip(np.round((x + 1) * 127.5), 0, 255).astype(np.uint8)
    .transpose(1, 2, 0),
    # open-muse pipeline_muse.to_pil_image (output in [0, 1])
    "muse": lambda x: (255 * ((np.clip(2.0 * x.transpose(1, 2, 0) - 1.0, -1.0, 1.0) + 1.0) / 2.0))
    .astype(np.uint8),
}  # fmt: skip


def _assign_u8(a: np.ndarray) -> np.ndarray:
    out = np.zeros(a.shape, dtype=np.uint8)
    out[:] = a
    return out


@pytest.mark.parametrize("mode", sorted(ORIGINAL_LINES))
def test_each_mode_computes_its_originals_lines(mode):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 64, 64, generator=g) * 2.4 - 1.2  # beyond the range on both sides
    x[0, 0, :8] = torch.tensor([-1.0, 1.0, 0.0, 1 / 255, -1 / 255, 0.5, -0.5, 127 / 127.5 - 1])
    # values where LlamaGen's 127.5x + 128 and Lumina's round-half-to-even part from
    # vqtool's rounding (found by a search over 2M values in [-1, 1]: 6 and 9 such)
    x[1, 0, :4] = torch.tensor([-0.9725490212440491, -0.800000011920929, -0.4, 0.054902002])
    want = ORIGINAL_LINES[mode](x.numpy())
    got = TO_UINT8[mode](x[None])[0].permute(1, 2, 0).numpy()
    assert np.array_equal(got, want)
    # the modes differ where it matters: each from "round" (vqtool's) on these values
    rounded = round_unit(((x[None] + 1) / 2).clamp(0, 1))[0].permute(1, 2, 0).numpy()
    assert not np.array_equal(got, rounded)


@pytest.mark.slow
def test_decode_writes_decode_uint8_and_a_rows_picture_is_the_same_in_any_batch(
    sample_tokens, tmp_path
):
    many = runner.invoke(app, ["decode", str(sample_tokens), "--out", str(tmp_path / "all"),
                               "--limit", "6", "--json"])  # fmt: skip
    assert many.exit_code == 0, many.output
    images = json.loads(many.stdout)["images"]
    tok = Tokenizer.load("vqtool/assets/tokenizer-fsq-f4-64.safetensors")
    ds = TokenDataset.open(str(sample_tokens))
    keys, rows = ds.select([i["key"] for i in images], None, None)
    for key, row in zip(keys, rows):
        path = next(i["path"] for i in images if i["key"] == key)
        want = tok.decode_uint8(torch.as_tensor(row.astype(np.int64))[None])[0]
        assert np.array_equal(np.array(Image.open(path)), want.permute(1, 2, 0).numpy())
        alone = runner.invoke(app, ["decode", str(sample_tokens), "--keys", key, "--out",
                                    str(tmp_path / f"{key}.png")])  # fmt: skip
        assert alone.exit_code == 0, alone.output
        assert np.array_equal(np.array(Image.open(tmp_path / f"{key}.png")),
                              np.array(Image.open(path)))  # fmt: skip
