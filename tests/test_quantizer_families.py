"""Behaviour of each quantizer family on small synthetic data."""

import itertools
import math

import pytest
import torch

from vqtool.quantizers import (
    BSQ,
    FSQ,
    LFQ,
    BSQConfig,
    FSQConfig,
    GumbelConfig,
    GumbelQuantizer,
    LFQConfig,
    PaletteConfig,
    PaletteQuantizer,
    ResidualQuantizer,
    RQConfig,
    VectorQuantizer,
    VQConfig,
)
from vqtool.quantizers.entropy import (
    bits_to_index,
    codebook_entropy,
    index_to_bits,
    per_sample_entropy,
)


def gaussian_mixture(n: int, centers: torch.Tensor, spread: float = 0.05) -> torch.Tensor:
    pick = torch.randint(len(centers), (n,))
    return centers[pick] + spread * torch.randn(n, centers.shape[1])


# ----------------------------------------------------------------------------- VQ


@pytest.mark.parametrize("kmeans_init", [True, False])
def test_ema_vq_fits_a_gaussian_mixture(kmeans_init):
    centers = 3 * torch.randn(16, 8)
    vq = VectorQuantizer(
        8, VQConfig(codebook_size=16, ema_decay=0.9, kmeans_init=kmeans_init, restart_after=3)
    )
    errors = []
    for _ in range(60):
        out = vq(gaussian_mixture(512, centers).unsqueeze(0))  # (1, N, 8)
        errors.append(out.metrics["commit"])
    vq.eval()
    out = vq(gaussian_mixture(2048, centers).unsqueeze(0))
    assert out.metrics["used"] == 1.0, "every code should serve one mixture component"
    if kmeans_init:  # k-means++ seeding finds every component: the noise floor 0.05^2
        assert out.metrics["commit"] < 0.005
    else:  # from a random codebook EMA and restarts must bring the error down
        assert errors[0] > 5 * out.metrics["commit"]
    assert out.metrics["perplexity"] > 15


def test_dead_code_restart_revives_codes_that_started_unused():
    vq = VectorQuantizer(
        4, VQConfig(codebook_size=8, ema_decay=None, kmeans_init=False, restart_after=2)
    )
    with torch.no_grad():
        vq.embed[:] = torch.randn(8, 4)
        vq.embed[4:] += 1000.0  # half the codebook is far from any data
    data = lambda: torch.randn(1, 256, 4)  # noqa: E731
    vq.eval()
    assert vq(data()).codes.max() < 4, "the far codes start dead"
    vq.train()
    for _ in range(3):
        vq(data())
    vq.eval()
    used = torch.unique(vq(data()).codes)
    assert set(range(4, 8)) <= set(used.tolist())


def test_codebook_loss_vq_learns_its_codebook_by_gradient():
    vq = VectorQuantizer(4, VQConfig(codebook_size=8, ema_decay=None, kmeans_init=False))
    assert isinstance(vq.embed, torch.nn.Parameter)
    out = vq(torch.randn(1, 64, 4))
    out.loss.backward()
    assert vq.embed.grad is not None and vq.embed.grad.abs().sum() > 0


def test_factorized_cosine_codes_are_unit_vectors_in_low_dim():
    vq = VectorQuantizer(32, VQConfig(codebook_size=64, code_dim=4, cosine=True))
    vq(torch.randn(8, 32, 4, 4))
    assert vq.codebook().shape == (64, 4)
    torch.testing.assert_close(vq.codebook().norm(dim=1), torch.ones(64))


def test_nearest_never_builds_n_by_k_by_d(monkeypatch):
    import vqtool.quantizers.kmeans as km

    monkeypatch.setattr(km, "CHUNK_ELEMENTS", 1000)  # force many chunks
    x, book = torch.randn(500, 16), torch.randn(64, 16)
    brute = torch.cdist(x, book).argmin(1)
    assert torch.equal(km.nearest(x, book), brute)


# ----------------------------------------------------------------------------- RQ


@pytest.mark.parametrize("shared", [True, False])
def test_rq_error_falls_with_depth(shared):
    rq = ResidualQuantizer(8, RQConfig(codebook_size=32, depth=4, shared_codebook=shared))
    for _ in range(20):
        rq(torch.randn(16, 8, 4, 4))
    rq.eval()
    out = rq(torch.randn(16, 8, 4, 4))
    errors = [out.metrics[f"error_depth{d}"] for d in range(4)]
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert out.codes.shape == (16, 4, 4, 4)


# ----------------------------------------------------------------------------- FSQ


def test_fsq_index_bijection_is_exhaustive():
    fsq = FSQ(3, FSQConfig(levels=[8, 5, 3]))
    assert fsq.vocab_size == 120
    idx = torch.arange(120)
    digits = fsq.index_to_digits(idx)
    assert torch.equal(fsq.digits_to_index(digits), idx)
    implicit = fsq.lookup_flat(idx)  # the implicit codebook
    assert len(torch.unique(implicit, dim=0)) == 120
    assert implicit.min() >= -1 and implicit.max() <= 1
    # every code is reachable from continuous input: invert the bound at each codeword
    target = implicit * fsq.half_width  # integer levels
    x = torch.atanh((target + fsq.bound_offset) / fsq.bound_half) - fsq.bound_shift
    assert torch.equal(fsq(x.unsqueeze(0)).codes[0], idx)


def test_fsq_uses_exactly_l_levels_per_channel():
    fsq = FSQ(2, FSQConfig(levels=[4, 5]))
    q = fsq(10 * torch.randn(1, 20000, 2)).quantized[0]
    assert len(torch.unique(q[:, 0])) == 4 and len(torch.unique(q[:, 1])) == 5


# ----------------------------------------------------------------------------- LFQ / BSQ


def test_binary_index_roundtrip_is_exhaustive_and_lsb_first():
    idx = torch.arange(1 << 10)
    assert torch.equal(bits_to_index(index_to_bits(idx, 10)), idx)
    only_channel0 = torch.tensor([[1.0, -1.0, -1.0]])
    assert LFQ(3, LFQConfig(codebook_size=8))(only_channel0.unsqueeze(0)).codes.item() == 1
    zero = torch.zeros(1, 1, 3)  # z == 0 maps to the negative side
    assert LFQ(3, LFQConfig(codebook_size=8))(zero).codes.item() == 0


@pytest.mark.parametrize("cls,config", [(LFQ, LFQConfig), (BSQ, BSQConfig)])
def test_binary_codes_roundtrip_through_the_quantizer(cls, config):
    q = cls(6, config(codebook_size=64))
    q.eval()
    idx = torch.arange(64)
    values = q.lookup_flat(idx)  # every code's quantized vector
    assert torch.equal(q(values.unsqueeze(0)).codes[0], idx)
    if cls is BSQ:
        torch.testing.assert_close(values.norm(dim=1), torch.ones(64))


def brute_force_entropies(logits: torch.Tensor):
    """Materialise p(c | z) over all 2^d codes: the reference for small d."""
    d = logits.shape[1]
    signs = index_to_bits(torch.arange(1 << d), d).double() * 2 - 1  # (2^d, d) in {-1, +1}
    # p(c|z) proportional to exp(sum_i c_i l_i / 2): per-bit logit l_i between c_i = +1 and -1
    probs = torch.softmax(logits.double() @ signs.t() / 2, dim=1)  # (N, 2^d)
    sample = -(probs * probs.log()).sum(1).mean()
    mean = probs.mean(0)
    return sample, -(mean * mean.log()).sum()


@pytest.mark.parametrize("d", [1, 4, 7])
def test_entropy_terms_equal_brute_force(d):
    logits = (3 * torch.randn(200, d, dtype=torch.float64)).requires_grad_(True)
    ref_sample, ref_book = brute_force_entropies(logits)
    torch.testing.assert_close(per_sample_entropy(logits), ref_sample)
    ours = codebook_entropy(logits)
    torch.testing.assert_close(ours, ref_book)
    (grad_ours,) = torch.autograd.grad(ours, logits)
    (grad_ref,) = torch.autograd.grad(ref_book, logits)
    torch.testing.assert_close(grad_ours, grad_ref)


def test_grouped_codebook_entropy_sums_group_marginals():
    logits = 2 * torch.randn(300, 6, dtype=torch.float64)
    grouped = codebook_entropy(logits, group_bits=3)
    expected = sum(brute_force_entropies(part)[1] for part in logits.split(3, dim=1))
    torch.testing.assert_close(grouped, expected)
    assert grouped >= codebook_entropy(logits) - 1e-9  # an upper bound of the joint entropy


def test_codebook_entropy_of_2_18_codes_fits_in_little_memory():
    logits = torch.zeros(64, 18)  # uniform per bit -> uniform over 2^18 codes
    torch.testing.assert_close(codebook_entropy(logits), torch.tensor(18 * math.log(2)))


@pytest.mark.parametrize("cls,config", [(LFQ, LFQConfig), (BSQ, BSQConfig)])
def test_entropy_penalty_matches_its_parts(cls, config):
    q = cls(5, config(codebook_size=32, beta=0.0, entropy_weight=1.0, gamma=2.0, temperature=0.5))
    z = torch.randn(1, 100, 5)
    out = q(z)
    scale = 1.0 if cls is LFQ else 1 / math.sqrt(5)
    x = z[0] if cls is LFQ else torch.nn.functional.normalize(z[0], dim=1)
    sample, book = brute_force_entropies(4 * scale * x / 0.5)
    torch.testing.assert_close(out.loss, (sample - 2.0 * book).float())
    assert abs(out.metrics["codebook_entropy_bits"] - float(book) / math.log(2)) < 1e-4


# ----------------------------------------------------------------------------- Gumbel


def test_gumbel_anneals_and_samples_one_hot_when_hard():
    g = GumbelQuantizer(
        4,
        GumbelConfig(
            codebook_size=8, temperature=1.0, min_temperature=0.125, anneal_steps=100, hard=True
        ),
    )
    g.anneal(0)
    assert float(g.temperature) == pytest.approx(1.0)
    g.anneal(50)
    assert float(g.temperature) == pytest.approx(math.sqrt(0.125))
    g.anneal(1000)
    assert float(g.temperature) == pytest.approx(0.125)
    out = g(torch.randn(1, 32, 4))
    # hard samples pick exactly one codeword per position
    dist = torch.cdist(out.quantized[0].detach(), g.embed.detach())
    assert torch.allclose(dist.min(1).values, torch.zeros(32), atol=1e-3)


def test_gumbel_kl_is_zero_for_uniform_logits():
    g = GumbelQuantizer(4, GumbelConfig(codebook_size=8, kl_weight=1.0))
    with torch.no_grad():
        g.proj.weight.zero_()
        g.proj.bias.zero_()
    out = g(torch.randn(1, 10, 4))
    assert abs(out.metrics["kl"]) < 1e-6


# ----------------------------------------------------------------------------- palette


def test_palette_recovers_the_colours_of_an_image():
    colours = torch.tensor([[-1.0, -1, -1], [1, 1, 1], [1, -1, -1], [-1, 1, -1]])
    pixels = colours[torch.randint(4, (2, 16, 16))].permute(0, 3, 1, 2)  # (2, 3, 16, 16)
    palette = PaletteQuantizer(3, PaletteConfig(num_colors=4))
    for _ in range(3):
        palette(pixels + 0.01 * torch.randn_like(pixels))
    palette.eval()
    out = palette(pixels)
    assert out.metrics["error"] < 1e-3
    found = sorted(map(tuple, palette.palette.round().tolist()))
    assert found == sorted(map(tuple, colours.tolist()))
    assert out.codes.shape == (2, 16, 16)


def test_exhaustive_roundtrips_cover_all_small_vocabularies():
    for levels in itertools.product([2, 3, 4], repeat=2):
        fsq = FSQ(2, FSQConfig(levels=list(levels)))
        idx = torch.arange(fsq.vocab_size)
        assert torch.equal(fsq.digits_to_index(fsq.index_to_digits(idx)), idx)


def test_gumbel_distance_logits_start_spread_where_linear_logits_collapse():
    from vqtool.quantizers import GumbelConfig, GumbelQuantizer

    torch.manual_seed(0)
    # what a fresh encoder emits: one common direction, small differences between positions
    z = torch.randn(1, 1, 16) * 3 + 0.05 * torch.randn(1, 2048, 16)  # (B, N, C)
    linear = GumbelQuantizer(16, GumbelConfig(codebook_size=256)).train()
    distance = GumbelQuantizer(
        16, GumbelConfig(codebook_size=256, logits="distance", restart_after=2)
    ).train()
    assert linear(z).codes.unique().numel() < 16  # nearly every position on the same code
    assert distance(z).codes.unique().numel() > 200  # k-means codes spread over the data
    distance.eval()
    assert torch.equal(distance(z).codes, distance(z).codes)  # argmax outside training
    # codes that no position chose are re-seeded from the batch after `restart_after` steps
    distance.train()
    with torch.no_grad():
        distance.embed[:8] = 1e3  # far from everything: never chosen
    for _ in range(2):
        distance(z)
    assert distance.embed[:8].abs().max() < 100


@pytest.mark.slow
def test_dvae_recipe_uses_more_than_a_quarter_of_its_codes(image_shards, tmp_path):
    from pathlib import Path

    from vqtool.training import load_recipe, train_tokenizer

    recipe = load_recipe(
        Path(__file__).resolve().parents[1] / "recipes" / "dvae-gumbel.toml",
        [
            "data.image_size=32",
            "data.batch_size=8",
            "data.workers=0",
            "train.steps=30",
            "quantizer.codebook_size=64",
            "quantizer.anneal_steps=30",
            "model.channels=16",
            "eval.images=16",
            "eval.every=0",
        ],
    )
    result = train_tokenizer(recipe, image_shards[:2], tmp_path / "run", image_shards[2:])
    # 16 held-out images x 64 tokens; the linear-logit recipe of v0.1 used 2% of its codes
    assert result.eval["used_share"] > 0.25, result.eval
