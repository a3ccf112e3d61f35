"""What an encode run is asked (`EncodeConfig`, one field per `vqtool encode` option) and
what it answers (`EncodeResult`, the summary and `--json`). Standard library only."""

from __future__ import annotations

from dataclasses import dataclass, field

from vqtool.data.remote import RETRIES


@dataclass
class EncodeConfig:
    sources: list[str]  # SRC entries (tar, pipe:, folder, parquet, vqtool:sample)
    tokenizer: str  # checkpoint path or bundled name
    out: str  # output folder
    batch_size: int = 64
    workers: int = 2  # DataLoader decode workers
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    shards_per_task: int | None = None  # input shards per output file (None: by images)
    task_images: int = 5000  # ... as many shards as hold about this many images
    num_shards: int | None = None  # split tasks K ways (Slurm arrays) ...
    shard_index: int | None = None  # ... and take part I
    image_size: int | None = None  # default: the tokenizer's training resolution
    # "square" (resize + centre crop to image_size), "none" (each image as it is) or
    # "smart:MIN_PIXELS:MAX_PIXELS" (Emu3's rule) or "area:AREA[:FACTOR]" (Emu3.5's); all
    # but square write each row's grid
    resize: str | None = None  # None: the tokenizer's own (square; Emu3: smart; Emu3.5: area)
    max_pixels: int | None = None  # larger images are refused (None: MAX_PIXELS, 2^28)
    # how stored pictures become RGB (vqtool.data.decoding.InputRule); None: the
    # tokenizer's family rule (public families: "stored" + "clip", as their originals'
    # `convert("RGB")`; vqtool's own: "exif" + "scale")
    orientation: str | None = None  # "exif" (upright by the EXIF tag) or "stored"
    high_bit_depth: str | None = None  # "scale" (16-bit scaled to 8) or "clip"
    # "pil" (full decode, then the resize) or "draft" (a JPEG at least twice the size
    # reduced in libjpeg's DCT first); None: the family's way (draft for vqtool's own)
    decode: str | None = None
    tf32: bool = False  # CUDA TF32 matmuls/convolutions (faster; tokens may differ from fp32)
    retries: int = RETRIES  # remote inputs and outputs: retries after a transient failure
    caption_from: str = "auto"  # "auto", "txt" or "json:FIELD" (see data.sources.caption_of)
    executor: str = "local"  # "local" (this process; torchrun/Slurm split) or "ray"
    ray_address: str | None = (
        None  # a running cluster ("auto", "ray://host:10001"); None: start one
    )
    ray_actors: int | None = None  # default: one per GPU, else CPUs // ray_cpus_per_actor
    ray_cpus_per_actor: float = 1.0
    ray_max_retries: int = 3  # a task whose actor or node dies is redone at most this often
    redo_errors: bool = False  # encode again the done tasks that recorded sample errors
    threads: int = 0  # CPU torch threads (0: OMP_NUM_THREADS, else cores less the workers)
    create_bucket: bool = False  # --out in a bucket that does not exist: create it
    # only this run writes into --out: no claims on an object store (for stores without
    # conditional writes, where claims cannot work)
    single_writer: bool = False
    # how long an object-store claim holds unless renewed: a crashed run's tasks are
    # taken over after this (its owner renews every third of it)
    claim_lease_s: float = 600.0


@dataclass
class EncodeResult:
    out: str
    tasks_total: int
    tasks_mine: int
    tasks_done: int  # written by this run
    tasks_skipped: int  # already done before
    images: int
    tokens: int
    errors: int
    error_examples: list = field(default_factory=list)
    bytes_on_disk: int = 0
    bytes_per_token: float = 0.0
    used_share: float = 0.0
    vocab_size: int = 0
    wall_s: float = 0.0
    images_per_s: float = 0.0
    device: str = ""
    tokenizer_family: str | None = None  # set when --tokenizer was a public checkpoint
    notes: list = field(default_factory=list)
    ray_actors: int = 0  # --executor ray: actors started
    ray_retried: int = 0  # tasks redone after their actor or node died
    ray_failed: list = field(default_factory=list)  # tasks given up on, with the reason
    # tasks left without a done marker ("NAME: why"): an input that could not be read, or
    # a task that failed on every Ray actor; a rerun does them (the CLI exits 3)
    unfinished: list = field(default_factory=list)
    # photos this run met that its input rule treats one way or the other: an EXIF
    # orientation other than 1, more than 8 bits per value (the summary says the flag)
    exif_oriented: int = 0
    high_bit_depth: int = 0
    input_rule: dict = field(default_factory=dict)  # the rule used (orientation, depth)
    # the run against its limits (vqtool.metrics.roofline.Roofline, as a dict): encoder
    # FLOPs per image, the device's peak, the decode ceiling, the run's share of each
    roofline: dict | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


EXECUTORS = ("local", "ray")
