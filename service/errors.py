"""The domain error tree. No HTTP in it: each API profile maps these to its own envelope.

HeraldError
├── SettingsError          a bad environment value; the message names the variable
├── InvalidEvent           an event that fails validation (field path + reason)
├── BadRequest             a reader's request that cannot be served as asked (bad body, bad id list)
├── Unauthorized           no credentials, or credentials Herald does not know
├── Forbidden              known credentials that may not do this (deactivated, wrong kind/role/tenant)
├── NotFound               missing, or not the caller's: the two are indistinguishable on purpose
├── Conflict               a uniqueness rule would be broken
├── TooManyRequests        a rate limit: try again in `retry_after` seconds
└── Unavailable            PostgreSQL or Redis cannot be reached (answered as 503, retried by workers)
"""

from __future__ import annotations


class HeraldError(Exception):
    """Base of every error Herald raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SettingsError(HeraldError):
    pass


class InvalidEvent(HeraldError):
    """`field` is a dotted path into the event (`audience.users`), or "" for the whole event."""

    def __init__(self, message: str, field: str = "", member: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.member = member


class BadRequest(HeraldError):
    """`field` names the offending parameter or body field when there is one."""

    def __init__(self, message: str, field: str = "", location: str = "body") -> None:
        super().__init__(message)
        self.field = field
        self.location = location


class Unauthorized(HeraldError):
    pass


class Forbidden(HeraldError):
    pass


class NotFound(HeraldError):
    pass


class Conflict(HeraldError):
    pass


class TooManyRequests(HeraldError):
    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(HeraldError):
    pass
