"""Files shipped inside the package, so `vqtool encode` works right after
install with no download and no training:

- `vqtool:sample`  a webdataset shard of 16 public-domain/CC0 photos
  (attribution in each sample's JSON), built by `tools/build_assets.py`;
- `vqtool:fsq-f4-64`  an FSQ tokenizer (f4, 64x64 -> 256 tokens, 1000 codes)
  trained by `vqtool train recipes/fsq.toml` on the devset's public-domain
  and CC0 photos (the command is in README and tools/build_assets.py).
"""

from __future__ import annotations

import re
from pathlib import Path

from vqtool.errors import ConfigError, UserError
from vqtool.utils import did_you_mean, shipped_tomls

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


#: the recipes shipped with vqtool (`vqtool train fsq`, `vqtool recipes`)
RECIPES = Path(__file__).resolve().parent / "recipes"
#: the LM layout presets shipped with vqtool (`vqtool export --layout liquid`)
LAYOUTS = Path(__file__).resolve().parent / "layouts"


def layout_names() -> list[str]:
    """The shipped layout presets, from the folder (for help texts and did-you-mean)."""
    return sorted(p.stem for p in LAYOUTS.glob("*.toml"))


def recipe_path(name: str | Path) -> Path:
    """A recipe file, or the name of a shipped recipe (`fsq`, `prior-ar`)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = RECIPES / f"{name}.toml"
    if path.suffix == "" and shipped.is_file():
        return shipped
    names = [n for n, _ in list_recipes()]
    raise ConfigError(
        f"{name}: no such recipe file, and no shipped recipe of that name"
        f"{did_you_mean(str(name), names)}; shipped: {', '.join(names)}"
    )


def list_recipes() -> list[tuple[str, str]]:
    """(name, first sentence of its comment) of every shipped recipe."""
    return shipped_tomls(RECIPES, sentence=True)


def recipe_sizes() -> dict[str, tuple[int, int]]:
    """{name: (tokens, bits) per image} of the shipped tokenizer recipes, from their
    `# Tokens: N per image (B bits).` line (tests hold each line to the model the recipe
    builds, so `vqtool recipes` needs no torch)."""
    found = {}
    for path in sorted(RECIPES.glob("*.toml")):
        for line in path.read_text().splitlines():
            m = re.match(r"# Tokens: ([\d,]+) per image \(([\d,]+) bits\)\.$", line)
            if m:
                found[path.stem] = (int(m[1].replace(",", "")), int(m[2].replace(",", "")))
    return found


def recommended_recipes() -> dict[str, str]:
    """{name: why} of the shipped recipes whose comment has a `# Recommended: why` line."""
    found = {}
    for path in sorted(RECIPES.glob("*.toml")):
        for line in path.read_text().splitlines():
            if line.startswith("# Recommended:"):
                found[path.stem] = line.split(":", 1)[1].strip()
    return found
