"""Every error a user can cause, under one base class, importable without torch.

Library code raises these with a message that names the bad value and says how to
fix it; the CLI prints `vqtool: error: <message>` and exits 2 for `UserError` (3 for
`IncompleteError`) and nothing else, so a bug (any other exception) keeps its
traceback. They subclass
`ValueError` so callers of the library can catch them as such.
"""

from __future__ import annotations


class UserError(ValueError):
    """A user's mistake or unusable input; the message says what and how to fix it."""


class ConfigError(UserError):
    """A recipe or config value is unknown or has the wrong type; the message names the key."""


class SourceError(UserError):
    """A SRC entry that cannot be used; the message names it and says why."""


class DecodeError(UserError):
    """An image that cannot be turned into pixels; the message says why and `kind`
    names the reason for machines (see `vqtool.data.sources.ERROR_KINDS`)."""

    def __init__(self, message: str, kind: str = "undecodable"):
        super().__init__(message)
        self.kind = kind


class CheckpointError(UserError):
    """A checkpoint that is missing, foreign or inconsistent; the message says which."""


class PerceptualError(UserError):
    """Perceptual-loss weights missing or not matching; says what to provide."""


class InspectError(UserError):
    """A PATH that `inspect` cannot read; the message says what was expected."""


class EncodeError(UserError):
    """The encode job cannot run as asked; the message says why and how to fix it."""


class IncompleteError(EncodeError):
    """The run stopped with tasks left to do for a reason outside the inputs' content (a
    decode worker killed, e.g. by the out-of-memory killer); a rerun finishes them. The
    CLI exits 3, as for tasks left unfinished."""

    exit_code = 3


class TokenDataError(UserError):
    """Token files that cannot be read as asked; the message says which and why."""


class RunError(UserError):
    """The run folder or the training setup cannot be used as asked."""
