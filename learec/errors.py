"""Errors that are the user's to fix: the CLI prints them as one paragraph, without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (a file, a config key, a name) rather than a bug.

    ``hint`` says what to do about it; the CLI prints both and exits with status 2.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  What to do: {self.hint}"
