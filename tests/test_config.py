"""Quantizer tables from recipes: typed, with errors that name the key."""

import pytest

from vqtool.quantizers import FSQConfig, VQConfig, build_quantizer, quantizer_config
from vqtool.utils import ConfigError


def test_a_table_becomes_a_typed_config():
    config = quantizer_config({"kind": "vq", "codebook_size": 4096, "ema_decay": 0.95})
    assert config == VQConfig(codebook_size=4096, ema_decay=0.95)
    assert quantizer_config({"kind": "fsq", "levels": [8, 8, 8]}) == FSQConfig(levels=[8, 8, 8])


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="unknown key quantizer.codebok_size"):
        quantizer_config({"kind": "vq", "codebok_size": 8})


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="quantizer.codebook_size: expected an integer"):
        quantizer_config({"kind": "vq", "codebook_size": "big"})
    with pytest.raises(ConfigError, match=r"quantizer.levels\[1\]: expected an integer"):
        quantizer_config({"kind": "fsq", "levels": [8, 2.5]})


def test_bad_value_is_named():
    with pytest.raises(ConfigError, match="power of two"):
        quantizer_config({"kind": "lfq", "codebook_size": 1000})
    with pytest.raises(ConfigError, match="quantizer.kind: 'vqq' is not one of"):
        quantizer_config({"kind": "vqq"})


def test_build_from_plain_dict():
    q = build_quantizer(16, {"kind": "rq", "codebook_size": 64, "depth": 2})
    assert (q.vocab_size, q.depth, q.code_dim) == (64, 2, 16)
