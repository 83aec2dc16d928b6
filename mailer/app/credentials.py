"""Machines' credentials, throttled: API tokens and webhook signatures.

Every check is made for a client (the remote address) under that client's sign-in
throttle key (``mailer.accounts.throttle``), so that wrong passwords, wrong API tokens
and forged webhooks from one address add up, and a client that keeps failing waits
before anything it sends is checked at all. Being refused says only that the
credential was not accepted, never which part was wrong (the reason is logged).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TypeVar

from mailer.accounts import throttle
from mailer.app.errors import AuthenticationFailed, Throttled
from mailer.briefings.api_tokens import authenticate
from mailer.db.models import Source
from mailer.db.session import transaction
from mailer.runtime import Runtime

log = logging.getLogger(__name__)
T = TypeVar("T")

REFUSED = "credentials not accepted"


class Refused(Exception):
    """A check's own refusal, with the reason for the log only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def checked(runtime: Runtime, client: str, what: str, check: Callable[[], T]) -> T:
    """``check()``'s result, unless the client is throttled or the check raises Refused.

    Raises Throttled (retry_after set) without running the check while the client waits;
    AuthenticationFailed (``REFUSED``) when the check refuses, counted as a failure.
    """
    key = throttle.client_key(client)
    with runtime.sessions() as session:
        wait = throttle.wait_for(session, (key,))
    if wait is not None:
        log.warning(
            "credentials.throttled",
            extra={"what": what, "client": client, "retry_after_seconds": math.ceil(wait)},
        )
        raise Throttled(f"too many refused attempts: try again in {math.ceil(wait)} seconds", wait)
    try:
        return check()
    except Refused as refused:
        with transaction(runtime.sessions) as session:
            throttle.failed(session, (key,))
        log.warning(
            "credentials.refused",
            extra={"what": what, "client": client, "reason": refused.reason},
        )
        raise AuthenticationFailed(REFUSED) from None


def api_token_source(runtime: Runtime, token: str, client: str) -> int:
    """The id of the briefing source an API token speaks for (throttled, see ``checked``)."""

    def check() -> int:
        with transaction(runtime.sessions) as session:
            source: Source | None = authenticate(session, token)
            if source is None:
                raise Refused("unknown or revoked API token")
            return source.id

    return checked(runtime, client, "api-token", check)
