"""Every encode run is measured against its limits: the encoder's FLOPs per image
(counted on the meta device), the device's peak (a GEMM probe; a GPU's datasheet figure by
name), the decode workers' rate; the summary, --json and `inspect` of the folder say them."""

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from vqtool.assets import DEFAULT_TOKENIZER, resolve
from vqtool.cli.main import app
from vqtool.metrics.roofline import datasheet_peak, gemm_peak
from vqtool.models import Tokenizer
from vqtool.models.flops import encoder_flops

runner = CliRunner()


def test_flops_counted_on_the_meta_device_equal_a_real_forward():
    tok = Tokenizer.load(resolve(DEFAULT_TOKENIZER))
    with FlopCounterMode(display=False) as real, torch.no_grad():
        tok.net.encoder(torch.zeros(1, 3, 64, 48))
    assert encoder_flops(tok.config, 64, 48) == real.get_total_flops() > 0
    assert encoder_flops(tok.config, 128, 128) == pytest.approx(
        4 * encoder_flops(tok.config, 64, 64), rel=1e-6
    )  # a convolutional encoder's FLOPs follow the pixels


def test_gpu_peaks_come_from_the_datasheet_by_name_and_the_cpu_is_probed():
    assert datasheet_peak("NVIDIA H100 80GB HBM3", torch.bfloat16) == 989e12
    assert datasheet_peak("NVIDIA H100 PCIe", torch.bfloat16) == 756e12
    assert datasheet_peak("NVIDIA A100-SXM4-80GB", None) == 19.5e12
    assert datasheet_peak("Some Future GPU", torch.bfloat16) is None
    assert gemm_peak("cpu", "float32", torch.get_num_threads()) > 1e8


def test_encode_summary_json_and_inspect_carry_the_roofline(tmp_path):
    out = tmp_path / "tokens"
    res = runner.invoke(app, ["encode", "vqtool:sample", "--out", str(out), "--workers", "0",
                              "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)["roofline"]
    tok = Tokenizer.load(resolve(DEFAULT_TOKENIZER))
    size = tok.config.image_size
    assert r["flops_per_image"] == encoder_flops(tok.config, size, size)
    assert r["compute_ceiling"] == pytest.approx(r["device_peak"] / r["flops_per_image"])
    assert r["share_of_compute"] == pytest.approx(r["images_per_s"] / r["compute_ceiling"])
    assert r["decode_workers"] == 1 and r["decode_ceiling"] > 0
    assert r["share_of_decode"] == pytest.approx(r["images_per_s"] / r["decode_ceiling"])
    assert r["device_peak_source"].startswith("cpu float32")
    shown = runner.invoke(app, ["inspect", str(out)], terminal_width=120)
    assert "the last encode run against its limits" in shown.output
    assert "FLOP per image (encoder)" in shown.output
    report = json.loads(runner.invoke(app, ["inspect", str(out), "--json"]).stdout)
    assert report["roofline"] == r
