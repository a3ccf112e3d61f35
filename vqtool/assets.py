"""Files shipped inside the package, so `vqtool encode` works right after
install with no download and no training:

- `vqtool:sample`  a webdataset shard of 16 public-domain/CC0 photos
  (attribution in each sample's JSON), built by `tools/build_assets.py`;
- `vqtool:fsq-f4-64`  an FSQ tokenizer (f4, 64x64 -> 256 tokens, 1000 codes)
  trained by `vqtool train recipes/fsq.toml` on the devset's public-domain
  and CC0 photos (the command is in README and tools/build_assets.py).
"""

from __future__ import annotations

from pathlib import Path

from vqtool.errors import UserError

ASSETS = Path(__file__).resolve().parent / "assets"
BUNDLED = {
    "vqtool:sample": ASSETS / "sample-000000.tar",
    "vqtool:fsq-f4-64": ASSETS / "tokenizer-fsq-f4-64.safetensors",
}
DEFAULT_TOKENIZER = "vqtool:fsq-f4-64"


def resolve(name: str) -> str:
    """A bundled `vqtool:` name -> its path; anything else unchanged."""
    if name.startswith("vqtool:"):
        if name not in BUNDLED:
            raise UserError(f"{name}: unknown bundled asset; known: {', '.join(BUNDLED)}")
        return str(BUNDLED[name])
    return name
