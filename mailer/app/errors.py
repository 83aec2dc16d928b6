"""The errors of the application layer, one tree for every caller.

    AppError
    ├── NotFound              no such edition, newsletter, briefing, account…
    ├── Invalid               a value is wrong; ``field`` says which
    ├── Conflict              the thing is in a state that does not allow it
    │   └── ChecksFailed      approval refused by pre-send checks (``failures``)
    ├── PermissionDenied      the actor's role does not allow it
    ├── AuthenticationFailed  sign-in refused (the same words for every cause)
    │   └── Throttled         too many failures; ``retry_after`` seconds to wait
    └── RateLimited           too many requests of one kind (test sends, say)

Callers map them once: the CLI prints the message and exits 1; the web answers
404, 422, 409, 403, 401 or 429 with the message on the page.
"""

from __future__ import annotations

from collections.abc import Sequence


class AppError(Exception):
    """Base of every error the application layer raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(AppError):
    pass


class Invalid(AppError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Conflict(AppError):
    pass


class ChecksFailed(Conflict):
    def __init__(self, message: str, failures: Sequence[str]) -> None:
        super().__init__(message)
        self.failures = tuple(failures)


class PermissionDenied(AppError):
    pass


class AuthenticationFailed(AppError):
    pass


class Throttled(AuthenticationFailed):
    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(AppError):
    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
