"""`vqtool export` throughput, beside its ceilings measured in the same run.

    python benchmarks/export.py [--rows 8192] [--files 4] [--tokens-per-image 256]

(a) Image-only export (megatron and stream, a layout of `code + offset` and an
    end-of-document id) of FILES token files, in the job's dtype (int32 here: the
    ids pass 65,535): the whole job (read the Parquet token files, build
    documents, write, fsync, rename, mark done) and the build-and-write part
    alone on arrays already in memory, beside a ten-line baseline script
    (pyarrow `read_table`, numpy add, `tofile`: the same bytes as the job's
    Megatron `.bin`, checked) and the in-memory ceiling (the add and concatenate
    alone), as ratios to the baseline. Median of interleaved rounds.
(b) Caption-interleaved export (Liquid-style: caption, <boi>, codes, <eoi>) against
    the text tokenizer alone on the same captions (`encode_batch`), side by side:
    the export should be bounded by the tokenizer.
(c) Peak memory (the export process's own VmHWM) against the size of the token data,
    to show that memory follows the tasks read ahead and the one being written, not
    the dataset.
(d) The whole process, as a user runs it: `python -m vqtool export` of a one-file folder
    (python start, imports, the job) beside the ten-line script's whole process
    (`python SCRIPT`, writing the same .bin), interleaved rounds, medians: what a user
    pays per command.
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
from support.data import write_tokens  # noqa: E402

from vqtool.export.job import ExportConfig, export  # noqa: E402
from vqtool.lm.documents import ResolvedLayout  # noqa: E402
from vqtool.lm.files import Packing, open_writer  # noqa: E402
from vqtool.lm.layout import LayoutSpec  # noqa: E402
from vqtool.lm.text import TextTokenizer  # noqa: E402

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
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--tokens-per-image", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=16384)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--sections", default="abcd", help="which of (a)-(d) to run")
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

    # the job's dtype: the ids reach offset + vocab, past uint16 here
    dtype = np.dtype(np.uint16 if offset + args.vocab <= 1 << 16 else np.int32)
    files = sorted(tok_dir.glob("part-*.parquet"))
    one = work / "one"
    one.mkdir(exist_ok=True)
    (one / "part-000000.parquet").symlink_to(tok_dir / "part-000000.parquet")
    (one / "part-000000.done.json").symlink_to(tok_dir / "part-000000.done.json")
    if "d" in args.sections:
        whole_process(work, one, layout_file, offset, dtype, args.rounds)
    if "a" in args.sections:
        image_only(args, work, arrays, files, tok_dir, layout_file, grids, offset, dtype)
    if "b" in args.sections:
        caption_interleaved(args, work, tok_dir, rng)
    if "c" in args.sections:
        peak_memory(args, work, one, tok_dir, layout_file)


def image_only(args, work, arrays, files, tok_dir, layout_file, grids, offset, dtype):
    n_tokens = sum(a.size for a in arrays)

    # the ceiling: the same arrays, the same add and end ids, concatenated in memory
    def ceiling():
        for a in arrays:
            docs = np.empty((len(a), a.shape[1] + 1), dtype=dtype)
            np.add(a, offset, out=docs[:, :-1], dtype=dtype)
            docs[:, -1] = 49999
            docs.reshape(-1)

    # the baseline: a ten-line script writing the same bytes as the Megatron .bin files
    def baseline():
        import pyarrow.parquet as pq

        out = work / "baseline"
        out.mkdir(exist_ok=True)
        for i, path in enumerate(files):
            flat = pq.read_table(path, columns=["tokens"]).column("tokens").combine_chunks()
            codes = flat.values.to_numpy().reshape(len(flat), -1)
            docs = np.empty((len(codes), codes.shape[1] + 1), dtype=dtype)
            np.add(codes, offset, out=docs[:, :-1], dtype=dtype)
            docs[:, -1] = 49999
            docs.reshape(-1).tofile(out / f"part-{i:06d}.bin")

    spec = LayoutSpec(name="plain", image_offset=offset, eos=49999)
    layout = ResolvedLayout.bind(
        spec, {"grids": grids, "depth": 1, "vocab_size": args.vocab}, None
    )  # fmt: skip
    meta = {"key": [str(i) for i in range(args.rows)], "source": ["b"] * args.rows,
            "source_index": list(range(args.rows)), "caption": [None] * args.rows,
            "label": [None] * args.rows}  # fmt: skip
    print(f"\n(a) image-only, {n_tokens / 1e6:.1f}M tokens (+1 end id per image), {dtype.name}")
    for fmt in ("megatron", "stream"):

        def build_and_write(fmt=fmt):
            out = work / f"bw-{fmt}"
            out.mkdir(exist_ok=True)
            for i, a in enumerate(arrays):
                w = open_writer(out, f"p{i}", fmt, dtype.name, Packing())
                w.add(layout.build(a, meta["key"], meta["caption"], meta["label"], dtype.name),
                      meta)  # fmt: skip
                w.commit()

        def whole_job(fmt=fmt) -> float:
            out = work / f"job-{fmt}"
            if out.exists():  # the last round's files go first, outside the timing (the
                import shutil  # baseline overwrites its files, which costs it nothing)

                shutil.rmtree(out)
            t0 = time.perf_counter()
            export(ExportConfig(tokens=[str(tok_dir)], layout=str(layout_file), format=fmt,
                                out=str(out)))  # fmt: skip
            return time.perf_counter() - t0

        # interleaved rounds, the median of each: load on the machine hits all alike
        times = {"ceiling": [], "baseline": [], "build": [], "job": []}
        for _ in range(args.rounds):
            for name, fn in (("ceiling", ceiling), ("baseline", baseline),
                             ("build", build_and_write), ("job", whole_job)):  # fmt: skip
                t0 = time.perf_counter()
                own = fn()  # a function that times itself returns its seconds
                times[name].append(own if own is not None else time.perf_counter() - t0)
        med = {k: float(np.median(v)) for k, v in times.items()}
        if fmt == "megatron":
            same = all((work / "baseline" / f"part-{i:06d}.bin").read_bytes()
                       == (work / "job-megatron" / f"part-{i:06d}.bin").read_bytes()
                       for i in range(len(files)))  # fmt: skip
            print(f"  the job's .bin files equal the baseline's byte for byte: {same}")
        print(f"  {fmt}, median of {args.rounds} interleaved rounds:")
        for name, label in (("ceiling", "ceiling: numpy add + concatenate in memory"),
                            ("baseline", "baseline: 10-line pyarrow + numpy + tofile"),
                            ("build", "vqtool build + write (arrays in memory)"),
                            ("job", "vqtool export, whole job (Parquet in, done)")):  # fmt: skip
            print(f"    {label:45s} {n_tokens / med[name] / 1e6:7.1f} M tok/s   "
                  f"{med['baseline'] / med[name]:.2f} x baseline")  # fmt: skip
        # each round's job against the baseline run just before it (the host's speed drifts
        # between rounds, hardly within one)
        paired = np.asarray(times["baseline"]) / np.asarray(times["job"])
        print(f"    {'the job / baseline, round by round':45s} median {np.median(paired):.2f} x, "
              f"{np.min(paired):.2f}-{np.max(paired):.2f} over {args.rounds} rounds")  # fmt: skip



def caption_interleaved(args, work, tok_dir, rng):
    """(b) captions: bounded by the text tokenizer."""
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



def peak_memory(args, work, one, tok_dir, layout_file):
    print("\n(c) peak memory of an export process (its VmHWM), one file vs all of them")
    for name, src in (("1 file", one), (f"{args.files} files", tok_dir)):
        # VmHWM, the peak of this process's own memory (getrusage's ru_maxrss keeps the
        # parent's peak across fork and exec on Linux: it reported this script's arrays)
        code = ("from vqtool.export.job import ExportConfig, export; "
                f"export(ExportConfig(tokens=[{str(src)!r}], layout={str(layout_file)!r}, "
                f"format='megatron', out={str(work / ('mem-' + name[0]))!r})); "
                "status = open('/proc/self/status').read(); "
                "print(status.split('VmHWM:')[1].split()[0])")  # fmt: skip
        rss = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout.split()[-1]) / 1024  # fmt: skip
        print(f"  {name:8s} {rss:6.0f} MiB")


#: the ten-line script of (d): the same ids as the job's Megatron .bin (codes + offset, an
#: end id after each image), written with pyarrow and numpy
SCRIPT = """import sys
from pathlib import Path
import numpy as np
import pyarrow.parquet as pq
src, out, offset, dtype = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
flat = pq.read_table(src, columns=["tokens"]).column("tokens").combine_chunks()
codes = flat.values.to_numpy().reshape(len(flat), -1)
docs = np.empty((len(codes), codes.shape[1] + 1), dtype=dtype)
np.add(codes, offset, out=docs[:, :-1], dtype=dtype)
docs[:, -1] = 49999
out.mkdir(exist_ok=True)
docs.reshape(-1).tofile(out / "part-000000.bin")
"""


def whole_process(work: Path, one: Path, layout_file: Path, offset: int, dtype, rounds: int):
    import shutil

    script = work / "ten_lines.py"
    script.write_text(SCRIPT)
    src = one / "part-000000.parquet"
    runs = {
        "script": [sys.executable, str(script), str(src), str(work / "d-script"), str(offset),
                   dtype.name],
        "vqtool": [sys.executable, "-m", "vqtool", "export", str(one), "--layout",
                   str(layout_file), "--format", "megatron", "--out", str(work / "d-job"), "-q"],
    }  # fmt: skip
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for name, cmd in runs.items():
            shutil.rmtree(work / ("d-job" if name == "vqtool" else "d-script"), ignore_errors=True)
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times[name].append(time.perf_counter() - t0)
    same = (work / "d-script" / "part-000000.bin").read_bytes() == (
        work / "d-job" / "part-000000.bin").read_bytes()  # fmt: skip
    med = {k: float(np.median(v)) for k, v in times.items()}
    paired = np.asarray(times["vqtool"]) / np.asarray(times["script"])
    print(f"\n(d) whole process on a one-file folder ({src.stat().st_size / 2**20:.1f} MiB of "
          f"Parquet), median of {rounds} interleaved rounds; the same .bin bytes: {same}")
    print(f"  ten-line script (python SCRIPT)          {med['script']:6.2f} s")
    print(f"  python -m vqtool export                  {med['vqtool']:6.2f} s   "
          f"{med['vqtool'] / med['script']:.2f} x the script's time (round by round: median "
          f"{np.median(paired):.2f}, {paired.min():.2f}-{paired.max():.2f})")  # fmt: skip


def _captions_of(folder: Path, f: int) -> list[str]:
    import pyarrow.parquet as pq

    return (
        pq.read_table(folder / f"part-{f:06d}.parquet", columns=["caption"])
        .column("caption")
        .to_pylist()
    )


if __name__ == "__main__":
    main()
