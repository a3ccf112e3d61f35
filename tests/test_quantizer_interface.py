"""Every quantizer honours the one interface of DESIGN.md."""

import pytest
import torch

from vqtool.quantizers import QUANTIZERS, Quantizer, build_quantizer

# small configurations of every family, as a recipe's [quantizer] table would give them
SMALL = {
    "vq": {"codebook_size": 32},
    "vq-factorized-cosine": {"kind": "vq", "codebook_size": 32, "code_dim": 4, "cosine": True},
    "vq-codebook-loss": {"kind": "vq", "codebook_size": 32, "ema_decay": None, "restart_after": 2},
    "gumbel": {"codebook_size": 32, "hard": True},
    "rq": {"codebook_size": 16, "depth": 3},
    "rq-per-depth": {"kind": "rq", "codebook_size": 16, "depth": 2, "shared_codebook": False},
    "lfq": {"codebook_size": 64},
    "fsq": {"levels": [5, 4, 3]},
    "bsq": {"codebook_size": 64},
    "palette": {"num_colors": 16},
}


def make(name: str) -> tuple[Quantizer, int]:
    table = dict(SMALL[name])
    table.setdefault("kind", name)
    dim = 3 if table["kind"] == "palette" else 12
    return build_quantizer(dim, table), dim


def test_every_family_is_covered():
    assert {dict(t, kind=t.get("kind", n))["kind"] for n, t in SMALL.items()} == set(QUANTIZERS)


@pytest.mark.parametrize("name", SMALL)
def test_shapes_dtypes_and_straight_through_gradients(name):
    quantizer, dim = make(name)
    for x in (torch.randn(2, dim, 5, 6), torch.randn(2, 7, dim)):
        x.requires_grad_(True)
        out = quantizer(x)
        assert out.quantized.shape == x.shape and out.quantized.dtype == x.dtype
        grid = (2, 5, 6) if x.ndim == 4 else (2, 7)
        depth = (quantizer.depth,) if quantizer.depth > 1 else ()
        assert out.codes.shape == grid + depth and out.codes.dtype == torch.int64
        assert 0 <= int(out.codes.min()) and int(out.codes.max()) < quantizer.vocab_size
        assert out.loss.ndim == 0
        assert all(isinstance(v, float) for v in out.metrics.values())
        (out.quantized.square().sum() + out.loss).backward()
        assert x.grad is not None and x.grad.abs().sum() > 0, "no gradient reached the input"


@pytest.mark.parametrize("name", SMALL)
def test_decode_codes_is_the_forward_path(name):
    quantizer, dim = make(name)
    quantizer(torch.randn(4, dim, 6, 6))  # one training step: initialise codebooks
    quantizer.eval()
    for x in (torch.randn(2, dim, 4, 4), torch.randn(3, 5, dim)):
        out = quantizer(x)
        torch.testing.assert_close(quantizer.decode_codes(out.codes), out.quantized)


@pytest.mark.parametrize("name", SMALL)
def test_bf16_input_uses_float32_math_and_returns_bf16(name):
    quantizer, dim = make(name)
    quantizer(torch.randn(4, dim, 6, 6))
    quantizer.eval()
    x = torch.randn(2, dim, 6, 6).to(torch.bfloat16)
    seen = []
    original = quantizer.quantize_flat
    quantizer.quantize_flat = lambda z: seen.append(z.dtype) or original(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = quantizer(x)
    assert seen == [torch.float32]
    assert out.quantized.dtype == torch.bfloat16
    assert not torch.isnan(out.quantized).any() and not torch.isnan(out.loss)
    # the codes are exactly those of the same values in float32
    assert torch.equal(out.codes, quantizer(x.float()).codes)


def test_wrong_channel_count_names_the_fix():
    quantizer, _ = make("vq")
    with pytest.raises(ValueError, match="expects 12 channels"):
        quantizer(torch.randn(1, 5, 2, 2))


def test_config_dict_rebuilds_the_same_quantizer():
    for name in SMALL:
        quantizer, dim = make(name)
        again = build_quantizer(dim, quantizer.config_dict())
        assert again.config == quantizer.config


@pytest.mark.parametrize("name", SMALL)
def test_code_tables_give_what_the_decoder_sees_and_the_learned_tables(name):
    """`code_tables()`: per code, the vector `decode_codes` gives the decoder (one table
    per codebook: RQ with its own codebook per depth has one per depth); `learned=True`:
    the stored tables of a learned quantizer, none for an implicit grid."""
    quantizer, dim = make(name)
    quantizer.eval()
    tables = quantizer.code_tables()
    codes = torch.arange(quantizer.vocab_size)
    if quantizer.depth == 1:
        assert list(tables) == [""]
        assert torch.allclose(tables[""], quantizer.decode_codes(codes[None])[0], atol=1e-6)
    else:
        per_depth = not SMALL[name].get("shared_codebook", True)
        assert list(tables) == ([f"depth{d}" for d in range(quantizer.depth)] if per_depth
                                else [""])  # fmt: skip
        # code c at depth 0, code 0 below: the depth-0 entry plus each lower depth's entry 0
        only_first = torch.stack([codes] + [torch.zeros_like(codes)] * (quantizer.depth - 1), 1)
        books = [tables[f"depth{d}" if per_depth else ""] for d in range(quantizer.depth)]
        expected = books[0] + sum(b[0] for b in books[1:])
        assert torch.allclose(quantizer.decode_codes(only_first[None])[0], expected, atol=1e-5)
    learned = quantizer.code_tables(learned=True)
    implicit = name in ("lfq", "fsq", "bsq")
    assert (learned == {}) == implicit
    for vectors in learned.values():
        assert vectors.shape[0] == quantizer.vocab_size
