"""Read SendGrid's suppression lists: the provider half of ``mailer bounces sync``.

Pure HTTP, no database: this yields what SendGrid has recorded in a time window; the
caller applies the bounce policy (idempotently) and keeps the window's end as the next
sync's start.

Five lists, each ``GET /v3/suppression/<kind>`` answering a JSON array of
``{"email", "created", ...}`` objects: bounces and blocks add ``reason`` and ``status``,
spam reports ``ip``, invalid emails ``reason``, global unsubscribes nothing. Each takes
``start_time`` and ``end_time`` (unix seconds, both inclusive), ``limit`` (at most 500)
and ``offset``.

Outcomes: 2xx a page; 429 wait for ``X-RateLimit-Reset`` (capped) and ask again; 5xx or
any transport error retried with backoff, since a GET changes nothing at SendGrid, then
``SyncError``; 401/403 and other 4xx ``SyncError`` with SendGrid's own messages. An item
without a usable address or time is skipped and noted in ``skipped``: one odd record
must not stop everybody else's bounce from being applied.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any

import httpx

from mailer.briefings.sanitize import clean_text
from mailer.transports import rate_limit
from subscribers.addresses import InvalidAddress, normalize_email

MAX_PAGE_SIZE = 500  # SendGrid's documented maximum for these lists
MAX_RETRIES = 4
MAX_RATE_LIMIT_WAITS = 20
MAX_RATE_LIMIT_WAIT = rate_limit.MAX_WAIT
_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")  # RFC 3463 class.subject.detail
_SNIPPET = 200


# 9999-12-31T23:59:59Z, the last second a datetime holds.
_LAST_SECOND = 253_402_300_799


class SuppressionKind(StrEnum):
    """The lists, named by their path segment under ``/v3/suppression/``."""

    BOUNCE = "bounces"
    BLOCK = "blocks"
    SPAM_REPORT = "spam_reports"
    INVALID_EMAIL = "invalid_emails"
    GLOBAL_UNSUBSCRIBE = "unsubscribes"


@dataclass(frozen=True)
class ProviderSuppression:
    kind: SuppressionKind
    email: str  # in the normal form subscribers are stored in (lower case)
    created: int  # unix seconds, when SendGrid added the address to the list
    reason: str  # SendGrid's status, reason and sending IP as one line; may be ""
    status: str | None  # RFC 3463 enhanced status (bounces, blocks), when given


class SyncError(RuntimeError):
    """A list could not be read; nothing after the failing page was yielded."""


class _Malformed(ValueError):
    pass


class SendGridSuppressionClient:
    """Pages through SendGrid's suppression lists over one pooled client."""

    def __init__(
        self,
        api_key: str,
        base_url: str,
        *,
        timeout: float = 30.0,
        page_size: int = MAX_PAGE_SIZE,
        max_retries: int = MAX_RETRIES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not api_key:
            raise ValueError("the SendGrid API key is empty")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1 to {MAX_PAGE_SIZE}")
        self._api_key = api_key
        self._base_url = base_url.rstrip("/") + "/v3/suppression/"
        self._headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
        self._page_size = page_size
        self._max_retries = max_retries
        self._sleep = sleep
        self.skipped: list[str] = []
        """One line per item left out as malformed, for the caller to report."""
        # Pages are read one after another: one kept-alive connection is enough.
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> SendGridSuppressionClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def fetch_all(self, since: int | None, until: int) -> Iterator[ProviderSuppression]:
        """Every list in turn, over the same window (see ``fetch``)."""
        for kind in SuppressionKind:
            yield from self.fetch(kind, since, until)

    def fetch(
        self, kind: SuppressionKind, since: int | None, until: int
    ) -> Iterator[ProviderSuppression]:
        """Addresses added to ``kind`` in ``[since, until)``; ``since=None`` means from the start.

        ``until`` is the caller's, fixed before the sync begins (normally the current
        time), and the caller stores it as the next sync's ``since`` once everything
        yielded has been applied. Taking "now" when the sync ends instead would lose
        events: a bounce SendGrid records after its list was read but before the sync
        finished is older than that end, so the next window would start past it. With
        a fixed end it has ``created >= until`` and belongs to the next window. The
        fixed end also keeps offset paging steady, as no new record enters the
        filtered list between two pages.

        SendGrid's ``end_time`` is inclusive, hence ``until - 1``. If SendGrid may list
        a record a little after its ``created`` time, pass an ``until`` slightly in the
        past. After a ``SyncError`` keep the old ``since``: applying is idempotent, so
        reading part of the window again is harmless.
        """
        if since is not None and since > until:
            raise ValueError(f"the window starts ({since}) after it ends ({until})")
        if since == until:
            return
        params: dict[str, int] = {"end_time": until - 1, "limit": self._page_size}
        if since is not None:
            params["start_time"] = since
        offset = 0
        previous: list[Any] | None = None
        while True:
            page = self._page(kind, {**params, "offset": offset})
            if len(page) >= self._page_size and page == previous:
                # A server that ignores offset would otherwise be read forever.
                raise SyncError(
                    f"SendGrid {kind}: the page at offset {offset} repeats the one before; "
                    "is the offset being ignored?"
                )
            for index, item in enumerate(page):
                try:
                    suppression = _suppression(kind, item)
                except _Malformed as exc:
                    snippet = json.dumps(item, separators=(",", ":"))[:_SNIPPET]
                    self.skipped.append(f"{kind} item {offset + index}: {exc}: {snippet}")
                    continue
                yield suppression
            # A short page is the last one (an empty one too, when the total is a multiple).
            if len(page) < self._page_size:
                return
            previous = page
            offset += len(page)

    def _page(self, kind: SuppressionKind, params: dict[str, int]) -> list[Any]:
        url = self._base_url + kind.value
        where = f"SendGrid {kind} list, offset {params['offset']}"
        failures = 0
        rate_limited = 0
        while True:
            try:
                response = self._client.get(url, params=params, headers=self._headers)
            except httpx.TransportError as exc:
                # A GET changes nothing at SendGrid: safe to repeat whatever happened.
                failures += 1
                if failures > self._max_retries:
                    last = f"{type(exc).__name__}: {exc}"
                    raise SyncError(
                        self._clean(f"{where}: gave up after {failures} tries: {last}")
                    ) from exc
                self._backoff(failures)
                continue
            status = response.status_code
            if 200 <= status < 300:
                return self._decode(where, response)
            if status == 429:
                rate_limited += 1
                if rate_limited > MAX_RATE_LIMIT_WAITS:
                    raise SyncError(f"{where}: still rate limited after {rate_limited} waits")
                self._sleep(rate_limit.reset_wait(response.headers.get(rate_limit.HEADER)))
                continue
            if status >= 500:
                failures += 1
                if failures > self._max_retries:
                    raise SyncError(
                        self._clean(
                            f"{where}: gave up after {failures} tries: {status} {_errors(response)}"
                        )
                    )
                self._backoff(failures)
                continue
            if status == 401:
                raise SyncError(
                    self._clean(f"{where}: the API key was refused (401 {_errors(response)})")
                )
            if status == 403:
                raise SyncError(
                    self._clean(
                        f"{where}: forbidden (403 {_errors(response)}); "
                        "does the API key have read access to suppressions?"
                    )
                )
            raise SyncError(self._clean(f"{where}: {status} {_errors(response)}"))

    def _decode(self, where: str, response: httpx.Response) -> list[Any]:
        # The standard parser, not orjson: orjson refuses a whole page over one number
        # beyond 64 bits or a double, and one odd item must not cost the page.
        try:
            data = json.loads(response.content)
        except ValueError:
            data = None
        if not isinstance(data, list):
            snippet = response.content[:_SNIPPET].decode("utf-8", "replace")
            raise SyncError(self._clean(f"{where}: the answer is not a JSON array: {snippet!r}"))
        return data

    def _backoff(self, failures: int) -> None:
        # Exponential with full jitter, as the mail transport does.
        self._sleep(random.uniform(0, min(30.0, 0.5 * 2**failures)))

    def _clean(self, message: str) -> str:
        # Our messages never hold the key; this keeps an echoed one out of logs too.
        return message.replace(self._api_key, "[redacted]")


def _suppression(kind: SuppressionKind, item: object) -> ProviderSuppression:
    if not isinstance(item, dict):
        raise _Malformed("not an object")
    raw_email = item.get("email")
    if not isinstance(raw_email, str):
        raise _Malformed("'email' missing or not a string")
    try:
        email = normalize_email(raw_email)
    except InvalidAddress as exc:
        # Not an address a subscriber could have been stored under, so nobody to suppress.
        raise _Malformed(f"unusable 'email': {exc}") from exc
    created = item.get("created")
    # bool is an int to Python, not a time to SendGrid; bounces document "number".
    if isinstance(created, bool) or not isinstance(created, int | float):
        raise _Malformed("'created' missing or not a number")
    if not math.isfinite(created) or not 0 <= created <= _LAST_SECOND:
        # Milliseconds, or garbage: a time we cannot store must not stop the sync.
        raise _Malformed("'created' is not a time in unix seconds")
    # The other fields only describe: a wrong type loses the words, not the suppression.
    given_status = _text(item.get("status"))
    reason = _text(item.get("reason"))
    ip = _text(item.get("ip"))
    parts = []
    if given_status and given_status not in reason:
        parts.append(given_status)  # the reason usually quotes the status already
    if reason:
        parts.append(reason)
    line = " ".join(parts)
    if ip:
        line = f"{line}; sent from {ip}" if line else f"sent from {ip}"
    return ProviderSuppression(
        kind=kind,
        email=email,
        created=int(created),
        reason=line,
        status=given_status if _STATUS.fullmatch(given_status) else None,
    )


def _text(value: object) -> str:
    # SendGrid's reasons carry trailing and doubled spaces, and control characters go
    # the way they go at every other way in (PostgreSQL stores no NUL).
    return " ".join(clean_text(value).split()) if isinstance(value, str) else ""


def _errors(response: httpx.Response) -> str:
    """SendGrid's own words: {"errors": [{"field", "message"}]}."""
    try:
        data = json.loads(response.content)
        parts = [
            f"{e.get('field')}: {e.get('message')}" if e.get("field") else str(e.get("message"))
            for e in data.get("errors", [])
        ]
    except (ValueError, AttributeError, TypeError):
        parts = []
    return "; ".join(parts) or response.reason_phrase or "error"
