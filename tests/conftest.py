"""Fixtures only; the helpers tests import live in `tests/support/`."""

from __future__ import annotations

import json

import pytest
import torch
from support.data import image_bytes, write_shard


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def image_shards(tmp_path):
    """Two small training shards and one eval shard of synthetic images, as webdataset tars."""
    paths = []
    for s in range(3):
        samples = []
        for i in range(8):
            n = s * 8 + i
            parts = {
                "png" if n % 2 else "jpg": image_bytes(n, fmt="PNG" if n % 2 else "JPEG"),
                "txt": f"caption {n}".encode(),
                "json": json.dumps({"n": n}).encode(),
            }
            samples.append((f"sample{n:04d}", parts))
        paths.append(write_shard(tmp_path / f"shard-{s:02d}.tar", samples))
    return paths


@pytest.fixture(scope="session")
def sample_tokens(tmp_path_factory):
    """`vqtool encode vqtool:sample` with the bundled tokenizer, once per test session
    (read only: tests decode, inspect and export it, never write into it)."""
    from typer.testing import CliRunner

    from vqtool.cli.main import app

    out = tmp_path_factory.mktemp("sample-enc") / "tokens"
    r = CliRunner().invoke(app, ["encode", "vqtool:sample", "--out", str(out), "--workers", "0"])
    assert r.exit_code == 0, r.output
    return out
