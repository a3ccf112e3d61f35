"""Foreign checkpoint -> vqtool Tokenizer: detect the family from the keys, pick
the weights (EMA or raw), map names strictly, and write vqtool's single-file
format with the provenance (family, source file name and sha256).

    tok, info = load_foreign("vq_ds16_c2i.pt")              # family detected
    convert("llamagen", "vq_ds16_c2i.pt", "llamagen-vq16.safetensors")
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vqtool.errors import CheckpointError
from vqtool.models.tokenizer import Tokenizer, TokenizerConfig
from vqtool.models.weights import weights_to_load
from vqtool.pretrained.families import FAMILIES, REGISTRY, WEIGHT_ROOTS
from vqtool.pretrained.infinity import infinity_plain_names
from vqtool.pretrained.loading import read_foreign
from vqtool.pretrained.records import files_sha256
from vqtool.pretrained.renames import emu3_original_names, janus_original_names
from vqtool.pretrained.staged import omv2_ema_name
from vqtool.utils import sha256_file

#: our buffers that a foreign file does not carry (their defaults are right for inference)
DEFAULT_BUFFERS = re.compile(r"\.(initialized|unused_steps|temperature)$")


@dataclass
class ForeignInfo:
    family: str
    description: str
    source: str  # file name
    sha256: str
    weights: str  # which weights were taken ("model", "ema", "state_dict", ...)
    image_size: int
    preprocessing: str
    notes: list[str] = field(default_factory=list)
    read_from: list[str] = field(default_factory=list)  # a folder's files read, relative to it

    def metadata(self) -> dict[str, str]:
        return {"vqtool.provenance": json.dumps(self.__dict__)}


def _roots(tensors: dict[str, torch.Tensor]) -> list[str]:
    present = []
    for root in WEIGHT_ROOTS:
        if any(k.startswith(root) for k in tensors):
            present.append(root)
    return present


def _under(tensors: dict, root: str) -> dict[str, torch.Tensor]:
    return {k[len(root) :]: v for k, v in tensors.items() if k.startswith(root)}


def detect_family(sd: dict[str, torch.Tensor], root: str = "") -> str | None:
    """The family whose names (and, where names alone do not tell, shapes) the weights `sd`
    (found under `root` in the file) have. Janus' own checkpoint holds LlamaGen's code
    under `gen_vision_model.`."""
    for name in FAMILIES:
        if REGISTRY[name].detect(sd):
            return "janus" if name == "llamagen" and root == "gen_vision_model." else name
    return None


#: families that share another's weight names: asked for by name, such a file is read as them
SAME_NAMES = {"janus": "llamagen", "emu3.5": "taming"}


#: families whose files may hold other names than their original code's, renamed on reading
RENAMES = {
    "janus": janus_original_names,
    "emu3": emu3_original_names,
    "infinity": infinity_plain_names,
}


def _omv2_weights(sd: dict, weights: str | None, notes: list[str]) -> tuple[dict, str, list]:
    """Open-MAGVIT2's EMA copy (`model_ema.*`, the default) or its raw weights."""
    has_ema = any(k.startswith("model_ema.") for k in sd)
    use = weights or "ema"
    if use == "ema" and not has_ema:
        if weights == "ema":
            raise CheckpointError("--weights ema: this Open-MAGVIT2 file holds no model_ema.*")
        notes.append("no EMA weights in the file: using the raw weights")
        use = "raw"
    if use == "ema":
        raw_names = [k for k in sd if not k.startswith(("model_ema.", "loss."))]
        ema = {k: sd[omv2_ema_name(k)] for k in raw_names if omv2_ema_name(k) in sd}
        missing = [k for k in raw_names if omv2_ema_name(k) not in sd]
        if missing:
            raise CheckpointError(f"EMA weights missing for {missing[:3]}")
        return ema, "ema (model_ema.*)", notes
    return {k: v for k, v in sd.items() if not k.startswith("model_ema.")}, "raw", notes


def select_weights(
    tensors: dict[str, torch.Tensor], family: str | None, weights: str | None
) -> tuple[str, dict[str, torch.Tensor], str, list[str]]:
    """(family, state_dict in the family's own names, which weights, notes)."""
    notes: list[str] = []
    candidates = []
    for root in _roots(tensors):
        sd = _under(tensors, root)
        found = detect_family(sd, root)
        if found and family is not None and SAME_NAMES.get(family) == found:
            found = family  # e.g. a Janus VQ saved on its own: LlamaGen's names
        if found and (family is None or found == family):
            rename = RENAMES.get(found)
            candidates.append((root, found, rename(sd) if rename else sd))
    if not candidates:
        known = ", ".join(FAMILIES)
        if family:
            raise CheckpointError(
                f"the file's keys do not look like a {family} checkpoint (e.g. "
                f"{', '.join(sorted(tensors)[:3])}); known families: {known}"
            )
        raise CheckpointError(
            f"cannot tell which family this checkpoint is (keys such as "
            f"{', '.join(sorted(tensors)[:3])}); known families: {known}"
        )
    by_root = {root: (fam, sd) for root, fam, sd in candidates}
    family = candidates[0][1]
    if family == "open-magvit2":
        return (family, *_omv2_weights(candidates[0][2], weights, notes))
    if weights == "ema":
        if "ema." not in by_root:
            raise CheckpointError("--weights ema: this file holds no 'ema' weights")
        return family, by_root["ema."][1], "ema", notes
    if weights == "raw" and "ema." not in by_root:
        raise CheckpointError(
            f"--weights raw: this {family} file holds one set of weights (no EMA copy to "
            "choose against); leave --weights out"
        )
    for root in ("model.", "state_dict.", "module.", "vae.", ""):
        if root in by_root:
            if "ema." in by_root and weights is None:
                notes.append("the file also holds EMA weights ('ema'); --weights ema takes them")
            return family, by_root[root][1], root.rstrip(".") or "top level", notes
    root = candidates[0][0]
    return family, candidates[0][2], root.rstrip(".") or "top level", notes


def _mapped_state(
    name: str, family: str, sd: dict, ours: dict, config, cfg_dict: dict, notes: list
) -> dict:
    """The file's weights under vqtool's names (1x1 conv weights reshaped to the linear
    layers that hold them), refused when one has no place or one is missing; an
    encoder-only file's decoder as zeros."""
    fam = REGISTRY[family]
    used = {k for k in sd if not k.startswith(fam.ignored)}
    layout = fam.mapping(cfg_dict)
    mapping = {theirs: mine for theirs, mine in layout.items() if theirs in sd}
    unexpected = sorted(used - set(mapping))
    if unexpected:
        raise CheckpointError(
            f"{name}: {len(unexpected)} {family} weights have no place in the rebuilt model "
            f"(e.g. {', '.join(unexpected[:3])}); is this a variant vqtool does not know?"
        )
    state = {}
    for theirs, mine in mapping.items():
        t = sd[theirs]
        if mine not in ours:
            raise CheckpointError(f"{name}: internal mapping names unknown {mine}")
        if t.shape != ours[mine].shape:
            if t.numel() != ours[mine].numel():
                raise CheckpointError(
                    f"{name}: {theirs} has shape {tuple(t.shape)}, vqtool expects "
                    f"{tuple(ours[mine].shape)}"
                )
            t = t.reshape(ours[mine].shape)  # 1x1 conv weight -> linear weight
        state[mine] = t.to(ours[mine].dtype)
    if config.encoder_only:  # no decoder in the file: zeros, and decoding is refused
        for k in ours:
            if k.startswith("net.decoder.") and k not in state:
                state[k] = torch.zeros_like(ours[k])
        notes.append("the file holds the encoder only: tokens and inspect work, decode is refused")
    missing = [k for k in ours if k not in state and not DEFAULT_BUFFERS.search(k)]
    if missing:
        theirs = {mine: n for n, mine in layout.items()}  # in the file's own names
        named = [theirs.get(k, k) for k in missing]
        raise CheckpointError(
            f"{name}: {len(missing)} weights a {family} checkpoint of this shape holds "
            f"are missing (e.g. {', '.join(named[:3])})"
        )
    for k in ours:
        state.setdefault(k, ours[k])
    return state


def load_foreign(
    path: str | Path,
    family: str | None = None,
    weights: str | None = None,
    image_size: int | None = None,
) -> tuple[Tokenizer, ForeignInfo]:
    """A public checkpoint file as a vqtool Tokenizer (strict: every weight used)."""
    if family is not None and family not in REGISTRY:
        raise CheckpointError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    if weights not in (None, "ema", "raw"):
        raise CheckpointError(f"--weights {weights!r}: use ema or raw")
    path = Path(path)
    foreign = read_foreign(path)
    family, sd, which, notes = select_weights(foreign.tensors, family, weights)
    fam = REGISTRY[family]
    native = fam.default_size(sd) if callable(fam.default_size) else fam.default_size
    size = image_size or native
    try:
        cfg_dict = fam.config(sd, size, path) if fam.named else fam.config(sd, size)
    except KeyError as exc:
        raise CheckpointError(
            f"{path.name}: weights missing for {exc.args[0]}, which a {family} checkpoint has"
        ) from None
    config = TokenizerConfig.from_dict(cfg_dict)
    with weights_to_load():  # every weight comes from the file: no random init to discard
        tok = Tokenizer(config)
    state = _mapped_state(path.name, family, sd, tok.state_dict(), config, cfg_dict, notes)
    # the file's tensors become the parameters (no copy into fresh memory: a 455M-parameter
    # Emu3.5 ran 10-30% slower on this VM from freshly allocated copies than from these)
    tok.load_state_dict(state, strict=True, assign=True)
    dropped = sorted({p.rstrip(".") for p in fam.ignored if any(k.startswith(p) for k in sd)})
    if dropped:
        listed = ", ".join(dropped)
        notes.append(f"not loaded (training-only, or constants vqtool recomputes): {listed}")
    notes = foreign.notes + notes
    if foreign.files:  # a sharded model: the shards holding the tokenizer identify it
        notes.append("read from " + ", ".join(f.name for f in foreign.files))
        sha = files_sha256(foreign.files)
    else:
        sha = sha256_file(path)
    info = ForeignInfo(
        family=family,
        description=fam.description,
        source=path.name,
        sha256=sha,
        weights=which,
        image_size=size,
        preprocessing=fam.preprocessing,
        notes=notes,
        read_from=[str(f.relative_to(path if path.is_dir() else path.parent))
                   for f in foreign.files],  # fmt: skip
    )
    return tok.eval(), info


@dataclass
class ConvertResult:
    out: str
    info: ForeignInfo
    layout: dict
    parameters: int
    policy: str = "square"  # encode's default --resize for this tokenizer

    def to_dict(self) -> dict:
        return {
            "out": self.out,
            **self.info.__dict__,
            "layout": self.layout,
            "parameters": self.parameters,
            "policy": self.policy,
        }


def convert(
    family: str | None,
    src: str | Path,
    out: str | Path,
    weights: str | None = None,
    image_size: int | None = None,
) -> ConvertResult:
    """Write `src` (a `family` checkpoint) as a vqtool tokenizer checkpoint."""
    out = Path(out)
    if out.suffix != ".safetensors":  # before reading a multi-GB checkpoint
        raise CheckpointError(f"--out {out}: give a .safetensors file name")
    tok, info = load_foreign(src, family, weights, image_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(out, info.metadata())
    return ConvertResult(
        str(out),
        info,
        tok.layout.to_dict(),
        sum(p.numel() for p in tok.parameters()),
        tok.config.policy,
    )
