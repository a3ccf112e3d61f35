"""The text side of an LM export: a Hugging Face `tokenizers` file the user names.

    text = TextTokenizer.open("tokenizer.json")
    text.vocab_size                  # ids 0 .. vocab_size-1, added tokens included
    text.encode_batch(["a cat"])     # [[...ids...]], no special tokens added
    text.ids_of("<boi>")             # an added token's one id, or the text's encoding

Nothing is downloaded: the file is read from disk, and its sha256 is recorded
so an export and its decode use the same tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vqtool.errors import TokenDataError
from vqtool.utils import sha256_file


@dataclass
class TextTokenizer:
    path: str
    sha256: str
    vocab_size: int
    tokenizer: object  # tokenizers.Tokenizer

    @classmethod
    def open(cls, path: str | Path, named_by: str = "--text-tokenizer") -> TextTokenizer:
        """`named_by` says where the path came from (a flag, a recipe key, a record) in
        errors, so the user fixes the right place."""
        p = Path(path)
        if not p.is_file():
            raise TokenDataError(
                f"{named_by} {path}: no such file; name a Hugging Face tokenizer.json "
                "on disk (vqtool downloads nothing)"
            )
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise TokenDataError(
                "captions and text tokens need the `tokenizers` library: pip install 'vqtool[text]'"
            ) from exc
        try:
            tok = Tokenizer.from_file(str(p))
        except Exception as exc:  # the library raises its own Exception type for bad files
            raise TokenDataError(
                f"{named_by} {path}: not a Hugging Face tokenizer.json ({exc})"
            ) from exc
        return cls(str(p), sha256_file(p), tok.get_vocab_size(with_added_tokens=True), tok)

    def record(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "vocab_size": self.vocab_size}

    def encode_batch(self, texts: list[str], specials: bool = False) -> list[list[int]]:
        """Each text's ids; `specials`: with the tokenizer's own special tokens (its BOS
        when its post-processor adds one)."""
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=specials)]

    def ids_of(self, text: str, specials: bool = False) -> list[int]:
        """A token string's id when the vocabulary has it whole (added and special tokens
        such as `<boi>`), else the tokenizer's encoding of the text (`specials`: with the
        tokenizer's own special tokens, such as the BOS its post-processor adds)."""
        tid = self.tokenizer.token_to_id(text)
        if tid is not None and not specials:
            return [tid]
        return self.tokenizer.encode(text, add_special_tokens=specials).ids

    def decode(self, ids: list[int], skip_specials: bool = False) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_specials)
