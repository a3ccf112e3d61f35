"""vqtool: vector-quantization image tokenizers and token-shard tooling.

`import vqtool` pulls in nothing heavy; the quantizer zoo lives in
`vqtool.quantizers` and the codebook usage tracker in `vqtool.metrics`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
