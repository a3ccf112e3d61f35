"""Token priors: autoregressive, MaskGIT and RQ-transformer over token rows
(models), their training task (task), sampling (sampling), checkpoint
(checkpoint) and the `vqtool sample` job (sample)."""
