"""Token priors, one module per family: `ar` (AR, DALL-E), `maskgit` (MaskGIT, Muse),
`rq` (RQ-Transformer, contextual RQ), each class with its own `sample()` and held-out
measure; `base` (config, shared module parts), `sampling` (shared sampling helpers),
`models` (kind -> class, `build_prior`); their training task (`task`, `data`, `text`,
`recipe`), checkpoint (`checkpoint`), linear probe (`probe`) and the `vqtool sample`
job (`sample`)."""
