"""The failures a user can cause and fix: a sentence to show and what to do, never a stack.

Every ``pzone`` command and every `dvc repro` stage reports a :class:`UserError` as ``error: <message>`` plus its
``hint`` (see :func:`pzone.cli.common.run_cli`); packages subclass it for their own (params.yaml, an empty
platform). No dependencies: the Lambda's base install may raise these too.
"""

from __future__ import annotations


class UserError(Exception):
    """A failure with a known cause: ``str(error)`` is the sentence, ``hint`` (optional) what to do about it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type's name when it has none), at most ``limit`` characters."""
    lines = str(exc).strip().splitlines()
    text = lines[0].strip() if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
