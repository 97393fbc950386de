"""The base class of errors whose message is written for the person, not a developer.

A core exception that derives from :class:`UserFacingError` says what went wrong and what
to do about it; the window and the CLI show ``str(error)`` as one line, without a
traceback (which still goes to the log when the cause is interesting).  Anything else is
a bug and is shown with its type name.
"""

from __future__ import annotations

__all__ = ["UserFacingError", "user_message"]


class UserFacingError(Exception):
    """An error the person can act on: its message is shown as it is, with no traceback."""


def user_message(exc: BaseException) -> str:
    """*exc* in one line for the person: its own message when it is user-facing, else type and message."""
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, UserFacingError) else f"{type(exc).__name__}: {text}"
