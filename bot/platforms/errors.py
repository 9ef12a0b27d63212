"""What went wrong calling a platform's API, and what a caller should do about it.

Both platforms (the Official Account and WeCom) answer with an errcode; the outbox sender only
needs to know which of a few kinds it is. The kinds and their meaning are those of
bot/platforms/official_account/api.py, so that the two clients can share them.
"""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    """What a caller should do about a failed call."""

    TOKEN = "token"  # the access_token was refused; refresh once and retry once
    RETRY = "retry"  # transient: try again later, with backoff
    HOLD = "hold"  # the member's window or budget is closed: wait for their next message
    UNDELIVERABLE = "undeliverable"  # the member cannot receive messages from us
    FAIL = "fail"  # anything else: do not retry


class PlatformAPIError(Exception):
    """The platform answered with a non-zero errcode (or with something that is not an answer).

    The message names the API path, never the URL: its query string holds the token or secret.
    """

    def __init__(self, errcode: int | None, errmsg: str, *, kind: ErrorKind | None = None) -> None:
        super().__init__(f"API error {errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg
        self._kind = kind

    @property
    def kind(self) -> ErrorKind:
        """What to do about it (set by the client that classified the errcode)."""
        return self._kind if self._kind is not None else ErrorKind.FAIL


class TransientAPIError(PlatformAPIError):
    """No usable answer: a timeout, a connection error or an HTTP 5xx."""

    def __init__(self, errmsg: str) -> None:
        super().__init__(None, errmsg, kind=ErrorKind.RETRY)


class TokenFetchError(PlatformAPIError):
    """The token endpoint refused us: for the operator to fix (credentials, IP lists)."""

    def __init__(self, errcode: int | None, errmsg: str) -> None:
        # Messages wait (with backoff) while the operator fixes the settings.
        super().__init__(errcode, errmsg, kind=ErrorKind.RETRY)
