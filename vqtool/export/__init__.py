"""LM-ready exports of token shards (`vqtool export`)."""
