"""`vqtool probe`: how much a prior learned, as iGPT measured it (Chen et al. 2020): a
linear classifier on the frozen prior's features.

Each row's features at layer l are the layer's hidden states mean-pooled over the
image positions (every token visible: no mask, no caption). A multinomial logistic
regression (standardized features, L2, full-batch L-BFGS) is trained per layer on
the `--train` rows; the layer is chosen on a held-out fifth of them, and top-1 on
the `--eval` rows is reported for every layer, the chosen one marked. Beside it,
from the same rows: the majority class, and the same classifier on unigram
features (each row's normalized code histogram: what the tokens say with no prior).

The target is the `label` column, or the caption (`--target caption`: each distinct
training caption a class; eval rows with a caption never seen in training are left
out and counted).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from vqtool.errors import ConfigError
from vqtool.priors.checkpoint import load_prior
from vqtool.runtime import pick_device
from vqtool.tokens.reader import TokenDataset


@dataclass
class ProbeConfig:
    prior: str
    train: list[str]
    eval: list[str]
    target: str = "label"  # "label" or "caption"
    batch_size: int = 64
    l2: float = 1e-3
    device: str = "auto"
    seed: int = 0


@dataclass
class ProbeResult:
    prior: str
    kind: str
    target: str
    classes: int
    train_rows: int
    eval_rows: int
    layer_accuracy: list[float]  # eval top-1 per layer (1 = after the first block)
    validation_accuracy: list[float]  # on the held-out fifth of --train, per layer
    best_layer: int  # chosen on validation
    accuracy: float  # eval top-1 at the chosen layer
    majority_accuracy: float
    unigram_accuracy: float
    left_out: int = 0  # eval rows whose caption class never occurs in training
    notes: list[str] = field(default_factory=list)
    kind_of_report: str = "probe"

    def to_dict(self) -> dict:
        return asdict(self)


def _rows(paths: list[str], target: str) -> tuple[np.ndarray, list, TokenDataset]:
    ds = TokenDataset.open(paths)
    column = "label" if target == "label" else "caption"
    tokens, values = [], []
    for _, t, batch in ds.iter_batches(columns=("key", "tokens", column)):
        tokens.append(t.astype(np.int64))
        values += batch.column(column).to_pylist()
    return np.concatenate(tokens), values, ds


@torch.no_grad()
def features(model, tokens: np.ndarray, batch_size: int, device) -> list[np.ndarray]:
    """Per layer: (N, width) hidden states mean-pooled over the image positions."""
    per_layer: list[list[np.ndarray]] = []
    t = model.cfg.tokens_per_image
    for a in range(0, len(tokens), batch_size):
        x = torch.from_numpy(tokens[a : a + batch_size]).to(device)
        hidden: list[torch.Tensor] = []
        model(x, hidden=hidden)
        for i, h in enumerate(hidden):
            positions = h.shape[1] if not model.cfg.has_text else t
            pooled = h[:, -positions:].float().mean(1).cpu().numpy()
            if len(per_layer) <= i:
                per_layer.append([])
            per_layer[i].append(pooled)
    return [np.concatenate(x) for x in per_layer]


def fit_linear(x: np.ndarray, y: np.ndarray, classes: int, l2: float, seed: int):
    """Multinomial logistic regression on standardized features; returns a predictor."""
    torch.manual_seed(seed)
    mean, std = x.mean(0), x.std(0) + 1e-6
    xt = torch.from_numpy((x - mean) / std).float()
    yt = torch.from_numpy(y).long()
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xt @ w + b, yt) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)

    def predict(z: np.ndarray) -> np.ndarray:
        zt = torch.from_numpy((z - mean) / std).float()
        return (zt @ w.detach() + b.detach()).argmax(1).numpy()

    return predict


def unigram(tokens: np.ndarray, vocab: int) -> np.ndarray:
    counts = np.zeros((len(tokens), vocab), dtype=np.float32)
    np.add.at(counts, (np.repeat(np.arange(len(tokens)), tokens.shape[1]), tokens.ravel()), 1)
    return counts / tokens.shape[1]


def probe(cfg: ProbeConfig) -> ProbeResult:
    if cfg.target not in ("label", "caption"):
        raise ConfigError(f"--target {cfg.target!r}: use label or caption")
    device = pick_device(cfg.device)
    loaded = load_prior(cfg.prior, device)
    model, pc = loaded.model, loaded.config
    train_tokens, train_y, train_ds = _rows(cfg.train, cfg.target)
    eval_tokens, eval_y, eval_ds = _rows(cfg.eval, cfg.target)
    for ds, what in ((train_ds, "--train"), (eval_ds, "--eval")):
        if ds.tokenizer_sha256 != loaded.tokenizer_sha256 or ds.tokens_per_image != (
            pc.tokens_per_image
        ):
            raise ConfigError(
                f"{what} tokens were not made by the tokenizer prior {cfg.prior} models "
                f"(sha256 {str(ds.tokenizer_sha256)[:12]}... vs {loaded.tokenizer_sha256[:12]}...)"
            )
    keep_train = [i for i, v in enumerate(train_y) if v is not None]
    names = sorted({train_y[i] for i in keep_train}, key=str)
    if len(names) < 2:
        raise ConfigError(
            f"--train {', '.join(cfg.train)}: probing needs at least two classes in the "
            f"{cfg.target} column, found {len(names)}"
        )
    index = {v: i for i, v in enumerate(names)}
    keep_eval = [i for i, v in enumerate(eval_y) if v in index]
    left_out = sum(v is not None for v in eval_y) - len(keep_eval)
    if not keep_eval:
        raise ConfigError(f"--eval {', '.join(cfg.eval)}: no row has a class seen in training")
    ytr = np.asarray([index[train_y[i]] for i in keep_train])
    yev = np.asarray([index[eval_y[i]] for i in keep_eval])
    xtr_tok, xev_tok = train_tokens[keep_train], eval_tokens[keep_eval]
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(ytr))
    val, fit = order[: max(1, len(order) // 5)], order[max(1, len(order) // 5) :]

    def scores(xtr: np.ndarray, xev: np.ndarray) -> tuple[float, float]:
        chooser = fit_linear(xtr[fit], ytr[fit], len(names), cfg.l2, cfg.seed)
        validation = float((chooser(xtr[val]) == ytr[val]).mean())
        final = fit_linear(xtr, ytr, len(names), cfg.l2, cfg.seed)
        return validation, float((final(xev) == yev).mean())

    ftr = features(model, xtr_tok, cfg.batch_size, device)
    fev = features(model, xev_tok, cfg.batch_size, device)
    layer_scores = [scores(a, b) for a, b in zip(ftr, fev)]
    best = int(np.argmax([v for v, _ in layer_scores]))
    majority = Counter(ytr.tolist()).most_common(1)[0][0]
    uni_val, uni_eval = scores(unigram(xtr_tok, pc.vocab_size), unigram(xev_tok, pc.vocab_size))
    return ProbeResult(
        prior=cfg.prior, kind=pc.kind, target=cfg.target, classes=len(names),
        train_rows=len(ytr), eval_rows=len(yev),
        layer_accuracy=[e for _, e in layer_scores],
        validation_accuracy=[v for v, _ in layer_scores], best_layer=best + 1,
        accuracy=layer_scores[best][1], majority_accuracy=float((yev == majority).mean()),
        unigram_accuracy=uni_eval, left_out=left_out,
    )  # fmt: skip
