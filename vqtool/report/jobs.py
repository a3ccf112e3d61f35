"""What the long commands show while they run and when they finish: a rich bar on a
terminal, plain progress lines elsewhere (batch logs, `tee`, Slurm: a line every
`log_every` seconds and at each milestone), and one summary table per result."""

from __future__ import annotations

import time

from rich.console import Console, Group, RenderableType
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class JobProgress:
    """Progress of one job: `start(total)`, then `update(done, text)`; `milestone=True`
    (a finished task, a checkpoint) always prints a plain line."""

    def __init__(
        self, label: str, unit: str, console: Console, log: Console, enabled: bool, log_every=30.0
    ):
        self.label, self.unit, self.log, self.log_every = label, unit, log, log_every
        self.terminal = enabled and console.is_terminal
        self.plain = enabled and not console.is_terminal and log_every > 0
        self.bar = Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} " + unit),
            TextColumn("{task.fields[text]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not self.terminal,
        )
        self.task = self.bar.add_task(label, total=None, text="")
        self.total: int | None = None
        self.done = self.first = 0
        self.text, self.printed = "", ""
        self.t0 = self.last = time.monotonic()

    def __enter__(self) -> JobProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def start(self, total: int, completed: int = 0) -> None:
        self.total, self.done, self.first = total, completed, completed
        self.t0 = self.last = time.monotonic()
        self.bar.update(self.task, total=total, completed=completed)
        self._line(force=True)

    def update(self, completed: int | None = None, text: str | None = None, milestone=False):
        """`text` None keeps the last one; reaching the total always prints a line."""
        if completed is not None:
            self.done = completed
        if text is not None:
            self.text = text
        self.bar.update(self.task, completed=self.done, text=self.text)
        self._line(force=milestone or bool(self.total and self.done >= self.total))

    def note(self, line: str) -> None:
        """A line worth keeping (held-out figures): above the bar, or in the log."""
        if self.terminal:
            self.bar.console.print(line, highlight=False)
        elif self.plain:
            self.log.print(f"vqtool {self.label}: {line}", highlight=False, soft_wrap=True)

    def _line(self, force: bool) -> None:
        now = time.monotonic()
        if not self.plain or not (force or now - self.last >= self.log_every):
            return
        self.last = now
        parts = [
            f"{self.done}/{self.total} {self.unit}" if self.total else f"{self.done} {self.unit}"
        ]
        elapsed = now - self.t0
        rate = (self.done - self.first) / elapsed if elapsed > 0 else 0.0
        if self.total and rate > 0 and self.done < self.total:
            parts.append(f"ETA {_duration((self.total - self.done) / rate)}")
        parts.append(f"elapsed {_duration(elapsed)}")
        if self.text:
            parts.append(self.text)
        line = f"vqtool {self.label}: " + ", ".join(parts)
        if line != self.printed:  # a checkpoint right after a log line adds nothing new
            self.log.print(line, highlight=False, soft_wrap=True)
            self.printed = line


def follow_encode(progress: JobProgress):
    """The `encode` callback that drives `progress`: tasks done, images, rate, errors."""
    seen = {"images": 0, "errors": 0, "beat": False}

    def on_event(kind: str, info: dict) -> None:
        if kind == "start":
            progress.start(info["tasks"], info["skipped"])
            return
        if kind == "batch":
            seen["images"] += info["images"]
            seen["errors"] += info["errors"]
        elapsed = max(time.monotonic() - progress.t0, 1e-9)
        text = (
            f"{seen['images']:,} images, {seen['images'] / elapsed:.1f}/s, {seen['errors']} errors"
        )
        if kind == "heartbeat":  # inside a slow batch
            per = info["s_per_image"]
            text += f"; batch in progress: {info['done']}/{info['of']} images in "
            text += f"{info['elapsed_s']:.0f} s" + (f", {per:.1f} s/image" if per else "")
        done = progress.done + (kind == "task")
        # a finished task, and the run's first heartbeat (a log shows a slow batch at once;
        # then lines come every --log-every seconds)
        first_beat = kind == "heartbeat" and not seen["beat"]
        seen["beat"] = seen["beat"] or kind == "heartbeat"
        progress.update(done, text, milestone=kind == "task" or first_beat)

    return on_event


def follow_tasks(progress: JobProgress, unit: str):
    """A task job's callback (export): tasks done, and how many `unit` so far."""
    seen = {"count": 0}

    def on_event(kind: str, info: dict) -> None:
        if kind == "start":
            progress.start(info["tasks"], info["skipped"])
            return
        seen["count"] += info.get(unit, 0)
        progress.update(progress.done + 1, f"{seen['count']:,} {unit}", milestone=True)

    return on_event


def facts(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    for name, value in rows:
        table.add_row(name, value)
    return table


def encode_summary(r) -> Table:
    errors = f"{r.errors}"
    if r.error_examples:
        e = r.error_examples[0]
        errors += f" (e.g. {e['key']}: {e['reason']}; all in *.errors.jsonl)"
    rows = [
        ("tasks", f"{r.tasks_done} written, {r.tasks_skipped} already done, "
                  f"{r.tasks_mine} of {r.tasks_total} are this process's"),
        ("images", f"{r.images:,} ({r.images_per_s:.1f}/s on {r.device})"),
        ("tokens", f"{r.tokens:,} (vocabulary {r.vocab_size:,})"),
        ("errors", errors),
    ]  # fmt: skip
    if r.input_rule:
        rows.append(("input rule", f"--orientation {r.input_rule['orientation']}, "
                     f"--high-bit-depth {r.input_rule['high_bit_depth']} ({r.exif_oriented:,} "
                     f"with an EXIF orientation, {r.high_bit_depth:,} above 8 bits)"))  # fmt: skip
    if r.tokens:
        rows += [
            ("on disk", f"{r.bytes_on_disk:,} bytes, {r.bytes_per_token:.3f} bytes/token"),
            ("codes used", f"{r.used_share:.1%} of the vocabulary"),
        ]
    if r.ray_actors:
        ray = f"{r.ray_actors} actors, {r.ray_retried} task(s) redone after an actor died"
        if r.ray_failed:
            ray += f", {len(r.ray_failed)} failed (rerun to redo them)"
        rows.append(("ray", ray))
    if r.roofline:
        rows += roofline_rows(r.roofline)
    rows.append(("wall time", f"{r.wall_s:.1f} s"))
    return facts(f"encoded -> {r.out}", rows)


def _rate(value: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if value >= scale:
            return f"{value / scale:,.1f} {unit}"
    return f"{value:,.0f} "


def roofline_rows(f: dict) -> list[tuple[str, str]]:
    """An encode run against its limits: compute (encoder FLOPs, the device's peak) and
    decode (the workers' rate), and the run's share of each."""
    peak = f"{_rate(f['device_peak'])}FLOP/s ({f['device_peak_source']})"
    if f.get("datasheet_peak"):
        peak += f"; datasheet {_rate(f['datasheet_peak'])}FLOP/s"
    rows = [("device peak", peak)]
    if f.get("flops_per_image"):
        rows.append(("compute", f"{_rate(f['flops_per_image'])}FLOP per image (encoder): "
                     f"ceiling {f['compute_ceiling']:,.1f} images/s, this run "
                     f"{f['share_of_compute']:.1%} of it"))  # fmt: skip
    if f.get("decode_ceiling"):
        rows.append(("decode", f"ceiling {f['decode_ceiling']:,.1f} images/s "
                     f"({f['decode_workers']} decoding at once), this run "
                     f"{f['share_of_decode']:.1%} of it"))  # fmt: skip
    return rows


def export_summary(r) -> Table:
    ranges = ", ".join(
        f"{k} {v[0]}..{v[1]}"
        for k, v in r.id_ranges.items()
        if isinstance(v, list) and len(v) == 2 and k != "resolution"
    )
    rows = [
        ("tasks", f"{r.tasks_done} written, {r.tasks_skipped} already done, "
                  f"{r.tasks_mine} of {r.tasks_total} are this process's"),
        ("layout", f"{r.layout} (hash {r.layout_hash}), {r.format}, {r.dtype}"),
        ("documents", f"{r.documents:,} ({r.rows:,} rows)"),
        ("tokens", f"{r.tokens:,} ({r.tokens_per_s / 1e6:.1f} M/s), {r.text_tokens:,} text"
                   + (f", {r.pad_tokens:,} padding" if r.pad_tokens else "")),
        ("id ranges", ranges),
    ]  # fmt: skip
    if r.missing_captions:
        rows.append(("no caption", f"{r.missing_captions:,} documents (exported as dropped)"))
    if r.not_exported:
        rows.append(("not exported", f"{len(r.not_exported)} unfinished input task(s)"))
    if r.embeddings:
        rows.append(("embeddings", r.embeddings))
    for name, part in (r.splits or {}).items():
        rows.append((f"split {name}", f"{part['documents']:,} documents -> {part['out']}"))
    if r.merged:
        more = " ..." if len(r.merged) > 3 else ""
        rows.append(("merged into", ", ".join(r.merged[:3]) + more))
    rows.append(("wall time", f"{r.wall_s:.1f} s"))
    return facts(f"exported -> {r.out}", rows)


def probe_summary(r) -> Table:
    layers = ", ".join(
        f"{i + 1}: {a:.1%}" + (" *" if i + 1 == r.best_layer else "")
        for i, a in enumerate(r.layer_accuracy)
    )
    rows = [
        ("prior", f"{r.kind}, {len(r.layer_accuracy)} layers"),
        ("target", f"{r.target}, {r.classes} classes; {r.train_rows} training rows, "
                   f"{r.eval_rows} evaluated" + (f" ({r.left_out} left out: class unseen)"
                                                 if r.left_out else "")),
        ("linear probe", f"{r.accuracy:.1%} top-1 at layer {r.best_layer} (chosen on a "
                         "held-out fifth of the training rows)"),
        ("per layer", layers),
        ("majority class", f"{r.majority_accuracy:.1%}"),
        ("unigram features", f"{r.unigram_accuracy:.1%}"),
    ]  # fmt: skip
    return facts(f"probe {r.prior}", rows)


def train_summary(r, recipe: str) -> Table:
    skipped = f"{r.skipped}"
    if r.skip_examples:
        skipped += f" (e.g. {r.skip_examples[0][0]}: {r.skip_examples[0][1]})"
    unit = "token rows" if r.kind == "prior" else "images"
    rows = [
        ("checkpoint", r.checkpoint),
        ("steps", f"{r.start_step} -> {r.steps}"),
        (unit, f"{r.images:,} ({r.images / max(r.wall_s, 1e-9):.1f}/s on {r.device})"),
        ("skipped samples", skipped),
        *[tuple(row) for row in r.summary],  # the task's own figures
        ("wall time", f"{r.wall_s:.1f} s"),
    ]
    if r.swept:
        rows.append(("removed", ", ".join(r.swept) + " (left by a killed run)"))
    return facts(f"trained {recipe}", rows)


def sample_summary(r) -> Table:
    rows = [
        ("prior", f"{r.kind}, {r.tokens_per_image} tokens per image"),
        ("images", r.files[0] if len(r.files) == 1 else f"{r.out}/"),
    ]
    if r.tokens_out:
        rows.append(("tokens", r.tokens_out))
    rows += [
        ("speed", f"{r.tokens_per_s:,.0f} tokens/s ({r.seconds:.2f} s on {r.device})"),
        ("seed", str(r.seed)),
    ]
    return facts(f"sampled {r.n} image(s)", rows)


def convert_summary(r) -> Table:
    info = r.info
    grids = " + ".join(f"{h}x{w}" for h, w in r.layout["grids"])
    rows = [
        ("family", f"{info.family}: {info.description}"),
        ("source", f"{info.source} (sha256 {info.sha256[:12]}...)"),
        ("weights", info.weights),
        ("parameters", f"{r.parameters:,}"),
        (
            "tokens",
            f"{grids} at {info.image_size}px, vocabulary {r.layout['vocab_size']:,}"
            if r.policy == "square"
            else f"each image's own grid (encode --resize {r.policy} by "
            f"default), vocabulary {r.layout['vocab_size']:,}",
        ),
        ("preprocessing", info.preprocessing),
        *[("note", note) for note in info.notes],
    ]
    return facts(f"converted -> {r.out}", rows)


def decode_summary(r, shown: int = 50) -> RenderableType:
    psnr = r.mean_psnr is not None
    if r.grid and not psnr:
        return Text(f"decoded {len(r.images)} row(s) into one grid: {r.out}")
    parts: list[RenderableType] = []
    if r.grid:
        parts.append(Text(f"decoded {len(r.images)} row(s) into one grid: {r.out}"))
    title = "rows in the grid" if r.grid else f"decoded {len(r.images)} row(s) -> {r.out}"
    table = Table(title=title, title_justify="left")
    table.add_column("key")
    table.add_column("file", overflow="fold")
    if psnr:
        table.add_column("PSNR dB", justify="right")
    for img in r.images[:shown]:
        table.add_row(img.key, img.path, *([f"{img.psnr:.2f}"] if psnr else []))
    parts.append(table)
    if len(r.images) > shown:
        parts.append(Text(f"... and {len(r.images) - shown} more"))
    if psnr:
        parts.append(Text(f"mean PSNR {r.mean_psnr:.2f} dB (source vs decoded)"))
    return Group(*parts)
