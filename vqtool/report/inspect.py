"""The facts behind `vqtool inspect PATH`, as typed reports (rendering is in
`report.terminal`, JSON is `report.to_dict()`).

PATH is recognised by what it is: a `.safetensors` checkpoint (tokenizer or
prior), a token dataset (an encode folder or token Parquet files) or image
shards (anything `encode` reads). Token datasets are streamed batch by batch,
so memory stays bounded by the vocabulary, not by the dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vqtool.assets import resolve
from vqtool.data.remote import Folder, is_url, redact
from vqtool.errors import InspectError
from vqtool.report.export import inspect_export
from vqtool.report.plot import save_usage_plot
from vqtool.report.shards import inspect_images
from vqtool.report.tokens import inspect_tokens
from vqtool.tokens.reader import TokenDataset
from vqtool.tokens.schema import read_vqtool_metadata

if TYPE_CHECKING:  # a checkpoint's report needs torch; it is imported when one is asked for
    from vqtool.report.checkpoint import CheckpointReport
    from vqtool.report.export import ExportReport
    from vqtool.report.prior import PriorReport
    from vqtool.report.shards import ImageShardsReport
    from vqtool.report.tokens import TokenDatasetReport

    Report = CheckpointReport | PriorReport | TokenDatasetReport | ImageShardsReport | ExportReport


def inspect_path(
    path: str, top: int = 10, image_size: int | None = None, plot: str | None = None
) -> Report:
    """Report on a checkpoint, a token dataset or image shards, by what PATH is
    (`image_size`: a public tokenizer file's input size; `plot`: also draw a token
    dataset's usage curve into this PNG)."""
    report = _inspect(path, top, 400 if plot else 60, image_size)
    if plot:
        curve = getattr(report, "frequency_curve", None)
        if curve is None:
            raise InspectError(
                f"--plot: {path} is {report.kind}; the usage histogram needs a token dataset"
            )
        title = f"code usage: {path}"
        save_usage_plot(curve, report.usage.vocab_size, title, report.top_codes, plot)
    return report


def _inspect(path: str, top: int, curve_points: int, image_size: int | None) -> Report:
    resolved = resolve(path)
    if is_url(resolved):  # an object-store token folder or file, else image shards
        if resolved.endswith(".parquet") or Folder(resolved).exists("encode.json"):
            return inspect_tokens(TokenDataset.open(resolved), redact(resolved), top, curve_points)
        return inspect_images([resolved], redact(resolved))
    p = Path(resolved)
    if p.is_file() and p.suffix in (".safetensors", ".pt", ".pth", ".ckpt", ".bin"):
        from vqtool.report.checkpoint import inspect_checkpoint

        return inspect_checkpoint(p, top, image_size)
    if image_size is not None:
        raise InspectError(f"--image-size applies to a tokenizer checkpoint, not to {path}")
    if p.is_file() and p.suffix == ".parquet" and _is_token_file(p):
        return inspect_tokens(TokenDataset.open(p), str(p), top, curve_points)
    if p.is_dir() and (p / "export.json").exists():
        return inspect_export(str(p))
    if p.is_dir() and ((p / "encode.json").exists() or _has_token_files(p)):
        return inspect_tokens(TokenDataset.open(p), str(p), top, curve_points)
    return inspect_images([resolved], path)


def _is_token_file(path: Path) -> bool:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception:
        return False
    return read_vqtool_metadata(schema) is not None and "tokens" in schema.names


def _has_token_files(folder: Path) -> bool:
    return any(_is_token_file(f) for f in sorted(folder.glob("*.parquet"))[:1])
