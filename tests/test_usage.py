"""The codebook usage tracker that training logs and `inspect` reports."""

import math

import pytest
import torch

from vqtool.metrics import CodebookUsage, usage_stats


def test_known_distribution_gives_exact_numbers():
    # 8 codes: four used equally, four dead -> 2 bits, perplexity 4, half the codebook used
    usage = CodebookUsage(8)
    usage.update(torch.tensor([[0, 1], [2, 3]]))
    usage.update(torch.tensor([3, 2, 1, 0]))
    stats = usage.stats()
    assert stats.tokens == 8
    assert stats.used == 4 and stats.dead == 4 and stats.used_share == 0.5
    assert stats.entropy_bits == pytest.approx(2.0)
    assert stats.perplexity == pytest.approx(4.0)
    assert stats.max_entropy_bits == 3.0


def test_skewed_distribution_entropy():
    stats = usage_stats(torch.tensor([3, 1, 0, 0]))
    expected = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert stats.entropy_bits == pytest.approx(expected)
    assert stats.perplexity == pytest.approx(2**expected)


def test_window_forgets_old_updates():
    usage = CodebookUsage(4, window=2)
    usage.update(torch.tensor([0, 0]))
    usage.update(torch.tensor([1]))
    usage.update(torch.tensor([2, 2, 2]))  # the update with code 0 leaves the window
    assert usage.counts.tolist() == [0, 1, 3, 0]
    assert usage.stats().dead == 2


def test_state_roundtrip_keeps_the_window():
    usage = CodebookUsage(4, window=2)
    for codes in ([0], [1, 1], [2]):
        usage.update(torch.tensor(codes))
    again = CodebookUsage(4, window=2)
    again.load_state_dict(usage.state_dict())
    again.update(torch.tensor([3]))
    usage.update(torch.tensor([3]))
    assert again.counts.tolist() == usage.counts.tolist() == [0, 0, 1, 1]


def test_out_of_range_code_is_refused():
    with pytest.raises(ValueError, match="code 9 is outside a vocabulary of 8"):
        CodebookUsage(8).update(torch.tensor([1, 9]))


def test_empty_tracker_reports_zero():
    stats = CodebookUsage(16).stats()
    assert stats.tokens == 0 and stats.used == 0 and stats.perplexity == 1.0
