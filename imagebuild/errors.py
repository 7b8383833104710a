"""The error hierarchy.

Every failure a user can act on is an ImageBuildError carrying a one-line
message and an exit code; the CLI prints the line and exits, never a traceback.
"""

from __future__ import annotations

# How much of a value a message quotes: an error line stays readable whatever was typed.
QUOTE_LIMIT = 80


def quoted(value: str, limit: int = QUOTE_LIMIT) -> str:
    """`value` as repr() shows it (control characters escaped), shortened when longer than `limit`."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


class ImageBuildError(Exception):
    """Base of all errors the tool reports to a user as one line."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message
        if self.hint:
            text = f"{text} ({self.hint})"
        return " ".join(text.split())


class UserError(ImageBuildError):
    """The user's input is wrong: a bad path, option, recipe or reference."""

    exit_code = 2


class RecipeError(UserError):
    """A recipe problem, located at file:line and key."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 key: str | None = None, hint: str | None = None):
        self.file = file
        self.line = line
        self.key = key
        where = ""
        if file:
            where = f"{file}:{line}: " if line else f"{file}: "
        super().__init__(f"{where}{message}", hint=hint)


class LayerInputError(UserError):
    """A layer was fed an entry it must refuse, such as an absolute or `..` path."""


class DirtyTreeError(UserError):
    """The work tree has uncommitted changes and --allow-dirty was not given."""


class PromotionError(UserError):
    """A promotion rule refused the move."""


class EvidenceError(UserError):
    """A key, signature or attestation cannot be read, or no given key verifies it."""


class BuildError(ImageBuildError):
    """A build step failed for a reason outside the user's input."""

    exit_code = 3


class StoreError(ImageBuildError):
    """The local store cannot be read or written."""

    exit_code = 4


class CorruptBlobError(StoreError):
    """A stored blob no longer matches its digest."""


class RegistryError(ImageBuildError):
    """The registry refused or failed a request."""

    exit_code = 5

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 hint: str | None = None, retried: bool = False):
        self.status = status
        self.code = code
        # True when the transport already spent its retries on it: nobody above retries it again.
        self.retried = retried
        super().__init__(message, hint=hint)


class PromotionConflictError(ImageBuildError):
    """Another promotion to the same environment ran at the same time and won; this one changed nothing."""

    exit_code = 5


class RegistryUnreachableError(ImageBuildError):
    """No registry answers at the address: a wrong address, or an outage worth retrying.

    Its own exit code lets CI retry it without also retrying refusals (5) and mistakes (2)."""

    exit_code = 8


class AuthError(UserError):
    """Credentials were refused or missing."""


class DeployError(ImageBuildError):
    """A deployment step failed; the old version keeps serving."""

    exit_code = 6
