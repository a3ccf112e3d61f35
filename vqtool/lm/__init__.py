"""LM documents, torch-free: a layout (`layout`: the typed spec, its presets, TOML
loading) bound to a token dataset and a text tokenizer (`documents`), documents built
from token rows and parsed back (`codec`), the files `vqtool export` writes (`files`,
`megatron`)
and reads back (`exported`), text tokenizers (`text`) and image-id lookup tables
(`lookup`)."""
