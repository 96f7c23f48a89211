"""The one exception type for problems the user can fix.

Convention (CONTRIBUTING.md, "Errors"): user input errors (missing file, wrong layout, stale cache,
bad flag) raise :class:`UserError` with a one-line message that names the thing and the fix.
``pipelines.cli`` catches it once, prints the line and exits with status 2. Programmer errors
raise ``ValueError``/``TypeError`` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A problem with the user's input, reported as one line and exit status 2.

    Args:
        message: one line naming what is wrong and how to fix it. Newlines are not allowed,
            so that the CLI's single-line promise holds.

    Raises:
        ValueError: if ``message`` contains a newline.
    """

    def __init__(self, message: str) -> None:
        if "\n" in message:
            raise ValueError(f"UserError messages are one line, got {message!r}")
        super().__init__(message)


def registered(registry: "Mapping[str, T]", name: str, what: str) -> "T":
    """``registry[name]``, or a one-line :class:`UserError` naming ``what`` was asked for and
    the names there are (``registered(METHODS, "toy", "--method")``)."""
    if name not in registry:
        raise UserError(f"unknown {what} '{name}'; choose one of: {', '.join(registry)}")
    return registry[name]
