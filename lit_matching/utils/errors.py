"""The one-line message of an error shown to a user (the CLI's and the HTTP server's)."""

from __future__ import annotations

__all__ = ["error_message"]


def error_message(error: BaseException) -> str:
    """An exception's message; ``KeyError`` quotes its argument, so its argument is used.

    Example:
        >>> error_message(KeyError("unknown user id(s): 7")), error_message(ValueError())
        ('unknown user id(s): 7', 'ValueError')
    """
    if isinstance(error, KeyError) and len(error.args) == 1:
        return str(error.args[0])
    return str(error) or type(error).__name__
