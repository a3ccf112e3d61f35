"""Training a prior on Parquet token shards with the one training loop.

The prior's vocabulary, row length and depth come from the token files; the
number of classes from their `label` column unless the recipe fixes it.
Evaluation on held-out token files reports bits per token next to the
unigram entropy of the same tokens and log2 of the vocabulary: the gap to the
unigram entropy is the structure the prior has learned.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from vqtool.data.loader import StreamPosition
from vqtool.errors import TokenDataError
from vqtool.metrics.codes import DENSE_LIMIT
from vqtool.priors.checkpoint import save_prior
from vqtool.priors.data import (
    TokenStream,
    cache_rows,
    cached_token_batches,
    held_out,
    scan_labels,
    token_loader,
)
from vqtool.priors.models import build_prior
from vqtool.priors.recipe import PriorRecipe
from vqtool.priors.text import CaptionEncoder
from vqtool.runtime import rank
from vqtool.tokens.reader import TokenDataset
from vqtool.training.loop import (
    RunError,
    StepBatch,
    TrainEvent,
    TrainResult,
    TrainTask,
    run_training,
)

CHECKPOINT = "prior.safetensors"
#: at most this many training captions form the caption-averaged prior (evaluation
#: runs the held-out rows once per caption)
CAPTION_MIXTURE = 32


def refuse_unmodelled(ds: TokenDataset) -> None:
    """Token folders a prior cannot read: rows of their own grids, and vocabularies of
    packed bits too large for an embedding row per code."""
    ds.refuse_native("a prior")
    if ds.vocab_size > DENSE_LIMIT:
        raise TokenDataError(
            f"a prior over {ds.vocab_size:,} codes would need an embedding row per code; "
            "these are packed bits (a bitwise tokenizer such as Infinity's d24/d32), which "
            "vqtool's priors do not model bit by bit"
        )


class PriorTask(TrainTask):
    kind = "prior"
    checkpoint = CHECKPOINT

    def __init__(self, recipe: PriorRecipe, data: list[str], eval_data: list[str] | None):
        self.recipe, self.data = recipe, list(data)
        ds = TokenDataset.open(self.data)
        refuse_unmodelled(ds)
        cfg = dataclasses.replace(
            recipe.prior,
            vocab_size=ds.vocab_size,
            tokens_per_image=ds.tokens_per_image,
            depth=int(ds.layout["depth"]),
            scales=[int(g[0]) for g in ds.layout["grids"]]
            if all(g[0] == g[1] for g in ds.layout["grids"]) and len(ds.layout["grids"]) > 1
            else None,
        )
        if cfg.num_classes < 0:
            cfg.num_classes = scan_labels(ds)
        self.captions = None
        if cfg.has_text:
            self.captions = CaptionEncoder(recipe.text)
            cfg.text_vocab, cfg.text_length = self.captions.vocab_size, recipe.text.max_length
            if not ds.has_values("caption"):
                raise RunError(
                    f"--data {', '.join(self.data[:3])}: the token rows carry no captions; "
                    "encode the images with their captions (--caption-from txt or json:FIELD)"
                )
        self.config = cfg
        self.tokens_meta = ds.meta
        self.holdout = recipe.eval.holdout  # a fraction of --data's rows, kept out of training
        if self.holdout and eval_data:
            raise RunError(
                f"eval.holdout = {self.holdout} and --eval-data both name the evaluation rows; "
                "give one (eval.holdout = 0 to evaluate on --eval-data)"
            )
        self.eval_ds = TokenDataset.open(eval_data) if eval_data else None
        if self.holdout:
            self.eval_ds = ds  # its held-out rows: see _read_eval_rows
        self.has_eval = self.eval_ds is not None
        # "held out" only when no evaluated row is a training row
        self.held_out = (
            bool(self.holdout)
            or self.eval_ds is not None
            and not (
                {str(Path(f.path).resolve()) for f in self.eval_ds.files}
                & {str(Path(f.path).resolve()) for f in ds.files}
            )
        )
        if self.eval_ds is not None and (
            self.eval_ds.tokenizer_sha256 != ds.tokenizer_sha256 or self.eval_ds.layout != ds.layout
        ):
            raise RunError(
                "--eval-data was encoded with tokenizer "
                f"{str(self.eval_ds.tokenizer_sha256)[:12]}... "
                f"(layout {self.eval_ds.layout.get('grids')}), --data with "
                f"{str(ds.tokenizer_sha256)[:12]}... (layout {ds.layout.get('grids')})"
            )
        torch.manual_seed(recipe.train.seed)  # identical initial weights on every rank
        self.model = build_prior(cfg)
        self._eval_rows: tuple[torch.Tensor, torch.Tensor] | None = None
        self.last_eval: dict | None = None
        self._captions_seen: dict[str, int] | None = None  # training caption counts

    def setup(self, device, amp, train) -> None:
        super().setup(device, amp, train)
        self.model.to(device)

    def busy_workers(self) -> int:
        # with the rows cached, no worker reads beside the model
        return 0 if self.recipe.data.cache_mb else self.recipe.data.workers

    def batches(self, position: StreamPosition) -> Iterator[StepBatch]:
        r = self.recipe
        with_labels = self.config.num_classes > 0
        text = self.captions is not None
        cached = (
            cache_rows(self.data, with_labels, r.data.cache_mb << 20, text, self.holdout)
            if r.data.cache_mb
            else None
        )
        if cached is not None:
            if not len(cached[0]):
                raise RunError(f"--data {', '.join(self.data[:3])}: no token rows to train on")
            seed = r.train.seed + 1000 * rank()
            yield from cached_token_batches(*cached, r.data.batch_size, seed, position.epoch)
            return
        stream = TokenStream(
            self.data,
            seed=r.train.seed + 1000 * rank(),
            start=position,
            shuffle_buffer=r.data.shuffle_buffer,
            with_labels=self.config.num_classes > 0,
            with_captions=text,
            holdout=self.holdout,
        )
        yield from token_loader(
            stream, r.data.batch_size, r.data.workers, self.device.type == "cuda"
        )
        raise RunError(f"--data {', '.join(self.data[:3])}: no token rows in a whole pass")

    def loss(self, model, batch: StepBatch, step: int):
        tokens, labels, captions = batch.data
        tokens, labels = (t.to(self.device, non_blocking=True) for t in (tokens, labels))
        inputs, labels, mask = self.model.prepare(tokens, labels)
        if self.captions is not None:
            text = self.model.drop_text(self.captions(captions).to(self.device))
            out = model(inputs, labels, text)  # through DDP when distributed
            loss, logs = self.model.loss_from(out, tokens, mask, text)
        else:
            loss, logs = self.model.loss_from(model(inputs, labels), tokens, mask)
        logs["loss"] = float(loss.detach())
        return loss, logs

    def describe(self, kind: str, m: dict) -> str:
        if kind == "eval":
            given = (
                f" given the caption, {m['unconditioned_bits_per_token']:.3f} without"
                if "unconditioned_bits_per_token" in m
                else ""
            )
            if "caption_averaged_bits_per_token" in m:
                given += f", {m['caption_averaged_bits_per_token']:.3f} caption-averaged"
            return (
                f"{m['bits_per_token']:.3f} bits/token "
                f"{'held out' if m.get('held_out', True) else 'on its training rows'}{given}, "
                "unigram entropy "
                f"{m['unigram_bits']:.3f}, log2(vocab) {m['max_bits']:.3f} ({m['rows']} rows)"
            )
        return (
            f"loss {m['loss']:.3f} {m['bits_per_token']:.2f} bits/token "
            f"{m['images_per_s']:.1f} rows/s"
        )

    def evaluate(self, model) -> dict | None:
        if self.eval_ds is None:
            return None
        e = self.recipe.eval
        if self._eval_rows is None:
            self._eval_rows = self._read_eval_rows(min(e.images, self.eval_ds.rows))
        tokens, labels, text = self._eval_rows
        figures = {"bits_per_token": float(self._row_bits(model, tokens, labels, text).sum())
                   / tokens.numel()}  # fmt: skip
        if text is not None:
            null = torch.full_like(text, model.text_pad)
            bits = self._row_bits(model, tokens, labels, null)
            figures["unconditioned_bits_per_token"] = float(bits.sum()) / tokens.numel()
            figures.update(self._caption_averaged(model, tokens, labels))
        counts = np.bincount(tokens.numpy().ravel(), minlength=self.config.vocab_size)
        p = counts[counts > 0] / counts.sum()
        self.last_eval = {
            "rows": len(tokens),
            **figures,
            "unigram_bits": float(-(p * np.log2(p)).sum()),
            "max_bits": math.log2(self.config.vocab_size),
            "measure": self.model.measure,
            "held_out": self.held_out,  # False: --eval-data shares files with --data
        }
        return self.last_eval

    def _row_bits(self, model, tokens, labels, text) -> torch.Tensor:
        """Held-out bits per row (all its image tokens), given `text` (None: no caption
        input); the same random masks for every call."""
        e = self.recipe.eval
        g = torch.Generator(device=self.device).manual_seed(1234)
        out = []
        for a in range(0, len(tokens), e.batch_size):
            x = tokens[a : a + e.batch_size].to(self.device)
            y = labels[a : a + e.batch_size].to(self.device)
            kw = {} if text is None else {"text": text[a : a + e.batch_size].to(self.device)}
            with torch.autocast(
                self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None
            ):
                out.append(model.nll_bits(x, y, g, **kw).float().cpu())
        return torch.cat(out)

    def _caption_averaged(self, model, tokens, labels) -> dict:
        """Held-out bits under the caption-averaged prior p(x) = sum_c w_c p(x | c), over
        the training captions (their frequencies; the CAPTION_MIXTURE most frequent when
        there are more). Its gap to the figure given the true caption is at most that
        caption's -log2 w_c per image (the caption entropy on average), while the
        "without" figure comes from the rows trained with a dropped caption and can
        overstate what the caption tells."""
        counts = self._caption_counts()
        chosen = sorted(counts, key=lambda c: (-counts[c], c))[:CAPTION_MIXTURE]
        if not chosen:
            return {}
        w = torch.tensor([counts[c] for c in chosen], dtype=torch.float64)
        w = w / w.sum()
        rows = torch.stack([
            self._row_bits(model, tokens, labels, self.captions([c] * len(tokens))).double()
            for c in chosen
        ])  # (captions, rows) bits  # fmt: skip
        log_p = -rows * math.log(2) + w.log()[:, None]
        bits = -torch.logsumexp(log_p, dim=0) / math.log(2)
        return {
            "caption_averaged_bits_per_token": float(bits.sum()) / tokens.numel(),
            "caption_entropy_bits": float(-(w * w.log2()).sum()),  # per image, of the mixture
            "caption_mixture": len(chosen),
        }

    def _caption_counts(self) -> dict[str, int]:
        """How often each caption occurs in the training rows (read once per run)."""
        if self._captions_seen is not None:
            return self._captions_seen
        counts: dict[str, int] = {}
        for f in TokenDataset.open(self.data).files:
            for batch in f.open().iter_batches(columns=["caption", "key"], batch_size=65536):
                held = held_out(batch.column(1).to_pylist(), self.holdout)
                for c, out in zip(batch.column(0).to_pylist(), held):
                    if c is not None and not out:
                        counts[c] = counts.get(c, 0) + 1
        self._captions_seen = counts
        return counts

    def _read_eval_rows(self, rows: int):
        """The first `rows` held-out rows, with labels when the prior is conditional and
        text ids when it reads captions."""
        columns = ("key", "tokens") + ("label",) * (self.config.num_classes > 0)
        columns += ("caption",) * (self.captions is not None)
        tokens, labels, captions, seen = [], [], [], 0
        for _, batch_tokens, batch in self.eval_ds.iter_batches(columns=columns):
            if self.holdout:  # the rows training skips, and only those
                keep = held_out(batch.column("key").to_pylist(), self.holdout)
                batch_tokens, batch = batch_tokens[keep], batch.filter(pa.array(keep))
            take = batch_tokens[: rows - seen]
            tokens.append(take)
            if "label" in batch.schema.names:
                lab = batch.column("label").to_pylist()[: len(take)]
                labels += [-1 if v is None else int(v) for v in lab]
            else:
                labels += [-1] * len(take)
            if "caption" in batch.schema.names:
                captions += batch.column("caption").to_pylist()[: len(take)]
            seen += len(take)
            if seen >= rows:
                break
        if not seen:
            raise RunError(
                f"eval.holdout = {self.holdout} holds out none of the {self.eval_ds.rows} rows of "
                "--data; raise it, or give --eval-data"
            )
        return (
            torch.from_numpy(np.concatenate(tokens).astype(np.int64)),
            torch.tensor(labels, dtype=torch.long),
            self.captions(captions) if self.captions is not None else None,
        )

    def save_checkpoint(self, model, path: Path, metadata) -> None:
        meta = dict(metadata)
        if self.last_eval:
            meta["vqtool.eval"] = json.dumps(self.last_eval)
        if self.captions is not None:
            meta["vqtool.text"] = json.dumps(self.captions.record())
        save_prior(model, path, self.tokens_meta, meta)


def train_prior(
    recipe: PriorRecipe,
    data: list[str],
    out: str | Path,
    eval_data: list[str] | None = None,
    resume: bool = False,
    callback: Callable[[TrainEvent], None] | None = None,
) -> TrainResult:
    """Train the prior of `recipe` on the token shards of `data`, writing the run to `out`."""
    return run_training(PriorTask(recipe, data, eval_data), out, resume, callback)
