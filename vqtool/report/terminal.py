"""Rich renderings of the `inspect` reports: tables, a log-scale frequency
curve drawn with block characters, top codes with bars, per-position usage
maps. Everything fits an 80-column terminal; warnings are coloured."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from vqtool.metrics.stats import UsageStats
from vqtool.report.charts import frequency_curve, position_map, top_table
from vqtool.report.common import LOW_USAGE, MANY_DEAD

if TYPE_CHECKING:  # the checkpoint and prior reports need torch; token folders do not
    from vqtool.report.checkpoint import CheckpointReport
    from vqtool.report.export import ExportReport
    from vqtool.report.inspect import Report
    from vqtool.report.prior import PriorReport
    from vqtool.report.shards import ImageShardsReport
    from vqtool.report.tokens import TokenDatasetReport


def render(report: Report) -> RenderableType:
    """A report's rendering, by its kind (no report module is imported for it)."""
    renderers = {"tokens": _tokens, "images": _images, "checkpoint": _checkpoint,
                 "prior": _prior, "LM export": _export}  # fmt: skip
    kind = getattr(report, "kind", None)
    if kind not in renderers:
        raise TypeError(f"no renderer for {type(report).__name__}")
    return renderers[kind](report)


def facts_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left", expand=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for k, v in rows:
        table.add_row(k, v)
    return table


def warnings_text(warnings: list[str]) -> Text:
    text = Text()
    for w in warnings:
        text.append("warning: ", style="bold red")
        text.append(w + "\n", style="yellow")
    return text


def usage_rows(u: UsageStats) -> list[tuple[str, str]]:
    used_style = "red" if u.used_share < LOW_USAGE else "green"
    dead_style = "red" if u.vocab_size and u.dead / u.vocab_size > MANY_DEAD else "green"
    return [
        ("tokens counted", f"{u.tokens:,}"),
        ("codes used", f"[{used_style}]{u.used:,} of {u.vocab_size:,} ({u.used_share:.1%})[/]"),
        ("dead codes", f"[{dead_style}]{u.dead:,}[/]"),
        ("perplexity", f"{u.perplexity:,.1f}"),
        ("entropy", f"{u.entropy_bits:.3f} of {u.max_entropy_bits:.3f} bits/token"),
    ]


# ----------------------------------------------------------------------------- checkpoints


def _checkpoint(r: CheckpointReport) -> RenderableType:
    grids = " + ".join(f"{h}x{w}" for h, w in r.layout["grids"])
    rows = [
        ("file", r.path),
        ("format", r.format),
        ("family", f"{r.family} ({r.architecture})"),
        ("parameters", f"{r.parameters:,}"),
        ("vocabulary", f"{r.vocab_size:,}"),
        ("code dim", str(r.code_dim)),
        ("downsampling", f"f{r.downsample}" if r.downsample else "-"),
        ("image size", f"{r.image_size}x{r.image_size}"),
        ("layout", f"{r.layout['levels']} level(s) {grids}, depth {r.layout['depth']}"),
        ("tokens/image", f"{r.tokens_per_image:,}"),
        ("bits/image", f"{r.bits_per_image:,.0f} ({r.compression_ratio:,.1f}x vs 8-bit RGB)"),
    ]
    if r.implicit_codebook:
        rows.append(("codebook", r.implicit_codebook))
    parts: list[RenderableType] = [facts_table("tokenizer checkpoint", rows)]
    if r.codebooks:
        t = Table(title="codebooks", title_justify="left")
        for col in ("", "codes", "norm min/mean/max", "nearest min/med", "mean dist", "dups"):
            t.add_column(col, justify="right" if col else "left")
        for b in r.codebooks:
            dup = f"[red]{b.near_duplicates}[/]" if b.near_duplicates else "0"
            t.add_row(
                b.name,
                f"{b.codes:,}x{b.dim}",
                f"{b.norm_min:.2f}/{b.norm_mean:.2f}/{b.norm_max:.2f}",
                f"{b.nearest_min:.3f}/{b.nearest_median:.3f}",
                f"{b.pairwise_mean:.3f}",
                dup,
            )
        parts.append(t)
    if r.usage is not None:
        parts.append(facts_table("usage during training (whole run)", usage_rows(r.usage)))
        if r.usage_top:
            parts.append(top_table(r.usage_top, "most used codes in training"))
    else:
        parts.append(Text("no usage counters in this checkpoint", style="dim"))
    if r.warnings:
        parts.append(warnings_text(r.warnings))
    return Group(*parts)


# ----------------------------------------------------------------------------- token datasets


def _token_facts(r: TokenDatasetReport) -> list[tuple[str, str]]:
    """The token dataset's facts: files, rows, disk, errors, tokenizer, preprocessing."""
    m = r.metadata
    tasks = f"{r.done_tasks} done"
    if r.unfinished_tasks:
        tasks += f", [red]{len(r.unfinished_tasks)} unfinished[/]"
    if r.missing_tasks:
        tasks += f", [red]{len(r.missing_tasks)} missing[/]"
    rows = [
        ("path", r.path),
        ("files", f"{r.files:,} Parquet ({tasks})"),
        ("rows", f"{r.rows:,} images"),
        (
            "tokens",
            f"{r.tokens:,} ({r.tokens_per_image:,} per image"
            + (" on average" if r.grids else "")
            + ")",
        ),
        ("on disk", f"{r.bytes_on_disk:,} bytes, {r.bytes_per_token:.3f} bytes/token"),
        ("errors", f"{r.errors:,}" + _error_example(r.error_examples)),
    ]
    tok = m.get("tokenizer_file") or "?"
    sha = (m.get("tokenizer_sha256") or "?")[:12]
    rows += [
        ("tokenizer", f"{tok} ({m.get('tokenizer_family')}, sha256 {sha}...)"),
        ("vocabulary", f"{m.get('vocab_size'):,} codes, {m.get('dtype')}"),
    ]
    pre = m.get("preprocessing") or {}
    if pre and r.grids:
        rows.append(("preprocessing", f"--resize {pre.get('policy')}: {pre.get('resize')}"))
        shown = ", ".join(f"{g} x{n:,}" for g, n in list(r.grids.items())[:8])
        more = f" and {len(r.grids) - 8} more" if len(r.grids) > 8 else ""
        rows.append(("grids", f"{len(r.grids):,} sizes: {shown}{more}"))
    elif pre:
        rows.append(
            ("preprocessing", f"{pre.get('image_size')} px, {pre.get('resize')}, {pre.get('crop')}")
        )
    if pre.get("orientation"):
        rows.append(("input rule", f"--orientation {pre['orientation']}, --high-bit-depth "
                     f"{pre.get('high_bit_depth')}"))  # fmt: skip
    rows.append(
        ("written by", f"vqtool {m.get('vqtool_version')}, schema {m.get('schema_version')}")
    )
    return rows


def _levels_table(groups: list) -> Table:
    t = Table(title="per level / depth", title_justify="left")
    for col in ("", "used", "dead", "perplexity", "bits/token"):
        t.add_column(col, justify="right" if col else "left")
    for g in groups:
        s = g.stats
        t.add_row(
            g.name,
            f"{s.used_share:.1%}",
            f"{s.dead:,}",
            f"{s.perplexity:,.1f}",
            f"{s.entropy_bits:.2f}/{s.max_entropy_bits:.2f}",
        )
    return t


def _tokens(r: TokenDatasetReport) -> RenderableType:
    rows = _token_facts(r)
    parts: list[RenderableType] = [facts_table("token dataset", rows)]
    parts.append(facts_table("codebook usage (whole dataset)", usage_rows(r.usage)))
    parts.append(frequency_curve(r.frequency_curve, r.usage.vocab_size, r.top_share))
    if r.top_codes:
        parts.append(top_table(r.top_codes, f"top {len(r.top_codes)} codes"))
    if r.bottom_codes and r.usage.used > len(r.top_codes):
        title = f"the {len(r.bottom_codes)} rarest codes in use"
        parts.append(top_table(r.bottom_codes, title, peak=r.top_codes[0]["share"]))
    groups = [*r.levels, *r.depths]
    if groups:
        parts.append(_levels_table(groups))
    if r.bits is not None:
        parts.append(facts_table("bits (codes of packed sign bits)", _bit_rows(r)))
    if r.roofline:
        from vqtool.report.jobs import roofline_rows

        rows = [("images/s", f"{r.roofline['images_per_s']:,.1f}"), *roofline_rows(r.roofline)]
        parts.append(facts_table("the last encode run against its limits", rows))
    for pm in r.positions:
        parts.append(position_map(pm, len(r.positions) > 1))
    if r.positions_note:
        parts.append(Text(r.positions_note, style="dim"))
    if r.warnings:
        parts.append(warnings_text(r.warnings))
    return Group(*parts)


BARS = " ▁▂▃▄▅▆▇█"


def _bit_rows(r: TokenDatasetReport) -> list[tuple[str, str]]:
    """Per-bit share of ones (a bar per bit, lowest bit first) and bit correlations,
    over the dataset and, for a pyramid, per scale."""
    b = r.bits
    bars = "".join(BARS[min(8, round(v * 8))] for v in b.ones)
    rows = [
        ("share of ones", f"{bars}  bit 0..{b.bits - 1}: {min(b.ones):.3f} to {max(b.ones):.3f}"),
        ("bit correlation", f"max |r| {b.correlation_max:.3f} (bits {b.most_correlated[0]} and "
                            f"{b.most_correlated[1]}), mean |r| {b.correlation_mean:.3f}"),
    ]  # fmt: skip
    for level, lb in zip(r.levels, r.bits_per_level):
        rows.append((level.name, f"ones {min(lb.ones):.3f} to {max(lb.ones):.3f}, "
                                 f"max |r| {lb.correlation_max:.3f}"))  # fmt: skip
    return rows


def _error_example(examples: list[dict]) -> str:
    if not examples:
        return ""
    e = examples[0]
    reason = str(e.get("reason", ""))
    if len(reason) > 60:  # cut at a word, and say so
        reason = reason[:60].rsplit(" ", 1)[0] + " ..."
    kind = f"{e['kind']}: " if e.get("kind") else ""
    return f" (e.g. {e.get('key')}: {kind}{reason})"


# ----------------------------------------------------------------------------- image shards


def _images(r: ImageShardsReport) -> RenderableType:
    fmt = ", ".join(f"{k} {v:,}" for k, v in r.formats.items()) or "-"
    w, h = r.width, r.height
    rows = [
        ("path", r.path),
        ("shards", f"{r.shards:,}"),
        ("samples", f"{r.samples:,}"),
        ("decodable", f"{r.decodable:,}"),
        (
            "undecodable",
            (f"[red]{r.undecodable:,}[/]" if r.undecodable else "0")
            + _error_example(r.undecodable_examples),
        ),
        ("formats", fmt),
        ("width", f"{w['min']} / {w['median']} / {w['max']} (min/median/max)"),
        ("height", f"{h['min']} / {h['median']} / {h['max']}"),
        ("captions", f"{r.with_caption:,}"),
        ("labels", f"{r.with_label:,}"),
    ]
    parts: list[RenderableType] = [facts_table("image shards", rows)]
    t = Table(title="short side (pixels)", title_justify="left")
    t.add_column("range")
    t.add_column("images", justify="right")
    t.add_column("", no_wrap=True)
    peak = max(r.short_side_histogram.values(), default=0) or 1
    for k, v in r.short_side_histogram.items():
        t.add_row(k, f"{v:,}", "[cyan]" + "█" * round(v / peak * 30) + "[/]")
    parts.append(t)
    if r.warnings:
        parts.append(warnings_text(r.warnings))
    return Group(*parts)


def _prior(r: PriorReport) -> RenderableType:
    grids = " + ".join(f"{h}x{w}" for h, w in (r.tokens.get("layout") or {}).get("grids", []))
    rows = [
        ("file", r.path),
        ("format", r.format),
        ("prior", f"{r.prior_kind}, {r.layers} layers x {r.width} wide"),
        ("parameters", f"{r.parameters:,}"),
        ("vocabulary", f"{r.vocab_size:,} (log2 = {math.log2(max(r.vocab_size, 1)):.2f} bits)"),
        ("tokens/image", f"{r.tokens_per_image:,} ({grids}, depth {r.depth})"),
        ("classes", str(r.num_classes) if r.num_classes else "unconditional"),
        ("tokenizer", f"sha256 {r.tokenizer_sha256[:12]}..."),
    ]
    if r.text:
        rows.append(("captions", f"{r.text['path']} (sha256 {r.text['sha256'][:12]}..., "
                                 f"{r.text['vocab_size']:,} ids, up to {r.text['max_length']} "
                                 "per caption)"))  # fmt: skip
    if r.eval:
        e = r.eval
        given = e.get("unconditioned_bits_per_token")
        rows.append(
            (
                "held-out" if e.get("held_out", True) else "on training rows",
                f"{e['bits_per_token']:.3f} bits/token"
                + (f" given the caption, {given:.3f} without" if given is not None else "")
                + (
                    f", {e['caption_averaged_bits_per_token']:.3f} caption-averaged"
                    if "caption_averaged_bits_per_token" in e
                    else ""
                )
                + f" vs unigram {e['unigram_bits']:.3f}, "
                f"log2 V {e['max_bits']:.3f} ({e['rows']} rows)",
            )
        )
        if "caption_averaged_bits_per_token" in e:
            rows.append(("caption gain", (
                "given minus caption-averaged is what the caption tells the prior (at most "
                f"the {e['caption_entropy_bits']:.2f}-bit caption entropy per image over "
                f"{e['caption_mixture']} training captions); 'without' comes from the rows "
                "trained with a dropped caption and overstates it")))  # fmt: skip
        if e.get("measure"):
            rows.append(("measure", e["measure"]))
    return Group(facts_table("prior checkpoint", rows))


def _export(r: ExportReport) -> RenderableType:
    packing = (f"packed in rows of {r.pack}" if r.pack else
               f"padded to {r.pad_to}" if r.pad_to else "one document per row")  # fmt: skip
    rows = [
        ("layout", f"{r.layout} (hash {r.layout_hash}); {r.layout_source}"),
        ("format", f"{r.format}, {r.dtype}, {packing}"),
        ("files", f"{r.files} finished" + (f", {len(r.unfinished)} unfinished"
                                           if r.unfinished else "")),
        ("documents", f"{r.documents:,} (mean {r.mean_document:.1f} tokens)"),
        ("tokens", f"{r.tokens:,} in documents, {r.stream_tokens:,} in the files"),
        ("on disk", f"{r.bytes_on_disk:,} bytes"),
    ]  # fmt: skip
    if r.row_fill is not None:
        fill = f"{r.row_fill:.1%} of {r.rows:,} rows hold document tokens"
        if r.split_documents is not None:
            fill += f"; {r.split_documents:,} documents continue into the next row"
        rows.append(("packing", fill))
    for kind, (a, b) in ((k, v) for k, v in r.id_ranges.items()
                         if isinstance(v, list) and len(v) == 2):  # fmt: skip
        rows.append((f"{kind} ids", f"{a:,}..{b:,}"))
    rows.append(("share", ", ".join(f"{k} {v:.1%}" for k, v in r.shares.items())))
    if r.text_tokenizer:
        rows.append(("text tokenizer", r.text_tokenizer))
    return facts_table(f"LM export {r.path}", rows)
