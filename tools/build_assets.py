"""Build the files bundled in `vqtool/assets/` from the devset photos.

    python tools/build_assets.py --devset ../shared/data/devset --out runs/assets

Writes (1) `runs/assets/train-pd.tar`: the public-domain and CC0 photos of the
devset's training shards, for training the bundled tokenizer, and (2)
`vqtool/assets/sample-000000.tar`: 16 public-domain/CC0 photos of the
devset's evaluation shard, shrunk to a 160-pixel short side, each with its
attribution JSON and its category as caption. The bundled tokenizer is then
trained with the command printed at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from pathlib import Path

from PIL import Image

PERMISSIVE = {"public domain", "cc0-1.0"}


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devset", default="../shared/data/devset")
    p.add_argument("--out", default="runs/assets")
    p.add_argument("--sample-size", type=int, default=16)
    args = p.parse_args()
    devset, out = Path(args.devset), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = [json.loads(line) for line in (devset / "manifest.jsonl").open()]
    ok = {m["key"]: m for m in manifest if m["license"].lower() in PERMISSIVE}
    train = tarfile.open(out / "train-pd.tar", "w")
    sample = tarfile.open(Path("vqtool/assets/sample-000000.tar"), "w")
    n_train = n_sample = 0
    for shard in sorted(devset.glob("devset-*.tar")):
        is_eval = shard.name == "devset-000005.tar"
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, _, ext = member.name.partition(".")
                if key not in ok or ext == "json":
                    continue
                data = tar.extractfile(member).read()
                meta = json.dumps(ok[key]).encode()
                if not is_eval:
                    _add(train, f"{key}.{ext}", data)
                    _add(train, f"{key}.json", meta)
                    n_train += 1
                elif n_sample < args.sample_size:
                    img = Image.open(io.BytesIO(data)).convert("RGB")
                    scale = 160 / min(img.size)
                    img = img.resize(
                        (round(img.width * scale), round(img.height * scale)),
                        Image.Resampling.LANCZOS,
                    )
                    buf = io.BytesIO()
                    img.save(buf, "JPEG", quality=90)
                    _add(sample, f"{key}.jpg", buf.getvalue())
                    _add(sample, f"{key}.json", meta)
                    _add(sample, f"{key}.txt", ok[key]["category"].split("/")[-1].encode())
                    n_sample += 1
    train.close()
    sample.close()
    print(
        f"{n_train} training photos -> {out / 'train-pd.tar'}; "
        f"{n_sample} sample photos -> vqtool/assets/sample-000000.tar"
    )
    print(
        "train the bundled tokenizer with:\n  vqtool train recipes/fsq.toml "
        f"--data {out / 'train-pd.tar'} --steps 400 --out runs/bundled && "
        "cp runs/bundled/tokenizer.safetensors vqtool/assets/tokenizer-fsq-f4-64.safetensors"
    )


if __name__ == "__main__":
    main()
