"""`vqtool export` throughput, beside its ceilings measured in the same run.

    python benchmarks/export.py [--rows 8192] [--files 4] [--tokens-per-image 256]

(a) Image-only export (megatron and stream, a layout of `code + offset` and an
    end-of-document id) of FILES token files: the whole job (read the Parquet
    token files, build documents, write, rename, mark done) and the
    build-and-write part alone on arrays already in memory, against the ceiling:
    `numpy.concatenate` of the same arrays with the same add (what the job is at
    heart), as a ratio. One process, numpy single-threaded.
(b) Caption-interleaved export (Liquid-style: caption, <boi>, codes, <eoi>) against
    the text tokenizer alone on the same captions (`encode_batch`), side by side:
    the export should be bounded by the tokenizer.
(c) Peak memory (max RSS) against the size of the token data, to show that memory
    follows one batch and one task, not the dataset.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import write_tokens  # noqa: E402

from vqtool.export.job import ExportConfig, export  # noqa: E402
from vqtool.tokens.lm_documents import ResolvedLayout  # noqa: E402
from vqtool.tokens.lm_files import DocumentWriter, Packing  # noqa: E402
from vqtool.tokens.lm_layout import LayoutSpec  # noqa: E402
from vqtool.tokens.text import TextTokenizer  # noqa: E402

WORDS = (
    "a the of photo picture small large red green blue old new dog cat bird house tree street "
    "river mountain beach city night morning people car boat sky cloud sunset flower garden "
    "market bridge window table book child woman man group field road"
).split()


def best_of(fn, repeat=3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


SYLLABLES = [a + b for a in "bcdfghklmnprstvwz" for b in "aeiou"]


def captions(n: int, rng) -> list[str]:
    """Caption-like text: 6-24 words from a 2,000-word vocabulary (a common word list
    plus made-up words of 2-4 syllables), so a BPE vocabulary has something to learn."""
    made_up = ["".join(rng.choice(SYLLABLES, rng.integers(2, 5))) for _ in range(2000)]
    vocab = np.asarray(WORDS + made_up)
    lengths = rng.integers(6, 25, n)
    return [" ".join(vocab[rng.integers(0, len(vocab), k)]) for k in lengths]


def train_bpe(path: Path, rng) -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    specials = ["<unk>", "<bos>", "<eos>", "<boi>", "<eoi>"]
    trainer = trainers.BpeTrainer(vocab_size=4000, show_progress=False, special_tokens=specials)
    tok.train_from_iterator(captions(20000, rng), trainer)
    tok.save(str(path))
    return str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=8192, help="token rows per file")
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--tokens-per-image", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=16384)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    side = int(args.tokens_per_image**0.5)
    grids = [(side, args.tokens_per_image // side)]
    work = Path(tempfile.mkdtemp(prefix="vqtool-export-bench-"))
    tok_dir = work / "tokens"
    arrays = []
    for f in range(args.files):
        codes = rng.integers(0, args.vocab, (args.rows, args.tokens_per_image), dtype=np.uint16)
        arrays.append(codes)
        write_tokens(tok_dir, codes, args.vocab, grids, name=f"part-{f:06d}",
                     captions=captions(args.rows, rng))  # fmt: skip
    n_tokens = sum(a.size for a in arrays)
    data_mb = n_tokens * 2 / 2**20
    print(f"{args.files} files x {args.rows} rows x {args.tokens_per_image} tokens = "
          f"{n_tokens / 1e6:.1f}M image tokens ({data_mb:.0f} MiB as uint16), "
          f"vocab {args.vocab}")  # fmt: skip
    layout_file = work / "plain.toml"
    layout_file.write_text('name = "plain"\nimage_offset = 50000\neos = 49999\n')
    offset = 50000

    # the ceiling: concatenate the same arrays with the same add, in memory
    def ceiling():
        np.concatenate([np.add(a, offset, dtype=np.uint16).reshape(-1) for a in arrays])

    t_ceiling = best_of(ceiling)
    print(f"\n(a) image-only, {n_tokens / 1e6:.1f}M tokens (+1 end id per image)")
    print(f"  ceiling: numpy concatenate + add        {n_tokens / t_ceiling / 1e6:8.1f} M tok/s")
    spec = LayoutSpec(name="plain", image_offset=offset, eos=49999)
    layout = ResolvedLayout.bind(
        spec, {"grids": grids, "depth": 1, "vocab_size": args.vocab}, None
    )  # fmt: skip
    meta = {"key": [str(i) for i in range(args.rows)], "source": ["b"] * args.rows,
            "source_index": list(range(args.rows)), "caption": [None] * args.rows,
            "label": [None] * args.rows}  # fmt: skip
    for fmt, dtype in (("megatron", "uint16"), ("stream", "uint16")):

        def build_and_write(fmt=fmt, dtype=dtype):
            out = work / f"bw-{fmt}"
            out.mkdir(exist_ok=True)
            for i, a in enumerate(arrays):
                w = DocumentWriter(out, f"p{i}", fmt, dtype, Packing())
                w.add(layout.build(a, meta["key"], meta["caption"], meta["label"], dtype), meta)
                w.commit()

        def whole_job(fmt=fmt):
            out = work / f"job-{fmt}"
            if out.exists():
                import shutil

                shutil.rmtree(out)
            export(ExportConfig(tokens=[str(tok_dir)], layout=str(layout_file), format=fmt,
                                out=str(out)))  # fmt: skip

        t_bw = best_of(build_and_write)
        t_job = best_of(whole_job)
        print(f"  {fmt:8s} build + write (in memory)      {n_tokens / t_bw / 1e6:8.1f} M tok/s"
              f"   ratio to ceiling {t_ceiling / t_bw:.2f}")  # fmt: skip
        print(f"  {fmt:8s} whole job (Parquet in, done)   {n_tokens / t_job / 1e6:8.1f} M tok/s"
              f"   ratio to ceiling {t_ceiling / t_job:.2f}")  # fmt: skip

    # (b) captions: bounded by the text tokenizer
    text_path = train_bpe(work / "bpe.json", rng)
    text = TextTokenizer.open(text_path)
    all_captions = [c for f in range(args.files) for c in _captions_of(tok_dir, f)]
    t_tok = best_of(lambda: text.encode_batch(all_captions), repeat=2)
    caption_ids = sum(len(x) for x in text.encode_batch(all_captions))
    liquid = work / "liquid.toml"
    liquid.write_text('name = "l"\nimage_offset = "text_vocab"\ncaption = "before"\n'
                      'bos = "<bos>"\nboi = "<boi>"\neoi = "<eoi>"\neos = "<eos>"\n')  # fmt: skip

    def caption_job():
        out = work / "job-caption"
        if out.exists():
            import shutil

            shutil.rmtree(out)
        return export(ExportConfig(tokens=[str(tok_dir)], layout=str(liquid), format="megatron",
                                   out=str(out), text_tokenizer=text_path))  # fmt: skip

    t_cap = best_of(caption_job, repeat=2)
    result = caption_job()
    docs = result.documents
    print(f"\n(b) caption-interleaved (BPE {text.vocab_size} ids, {len(all_captions):,} captions, "
          f"{caption_ids / len(all_captions):.1f} text ids each)")  # fmt: skip
    print(
        f"  tokenizer alone (encode_batch)          {len(all_captions) / t_tok:10,.0f} captions/s"
    )
    print(f"  export, megatron, whole job             {docs / t_cap:10,.0f} documents/s"
          f"  ({result.tokens / t_cap / 1e6:.1f} M tok/s); ratio to tokenizer "
          f"{(docs / t_cap) / (len(all_captions) / t_tok):.2f}")  # fmt: skip

    print("\n(c) peak memory of an export process (max RSS), one file vs all of them")
    one = work / "one"
    one.mkdir(exist_ok=True)
    (one / "part-000000.parquet").symlink_to(tok_dir / "part-000000.parquet")
    (one / "part-000000.done.json").symlink_to(tok_dir / "part-000000.done.json")
    for name, src in (("1 file", one), (f"{args.files} files", tok_dir)):
        code = ("import resource; from vqtool.export.job import ExportConfig, export; "
                f"export(ExportConfig(tokens=[{str(src)!r}], layout={str(layout_file)!r}, "
                f"format='megatron', out={str(work / ('mem-' + name[0]))!r})); "
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")  # fmt: skip
        rss = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout.split()[-1]) / 1024  # fmt: skip
        print(f"  {name:8s} {rss:6.0f} MiB")


def _captions_of(folder: Path, f: int) -> list[str]:
    import pyarrow.parquet as pq

    return (
        pq.read_table(folder / f"part-{f:06d}.parquet", columns=["caption"])
        .column("caption")
        .to_pylist()
    )


if __name__ == "__main__":
    main()
