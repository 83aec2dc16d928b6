"""A local server that answers like SendGrid's suppression lists, over real HTTP.

``GET /v3/suppression/<kind>`` for bounces, blocks, spam reports, invalid emails and
global unsubscribes: it checks the bearer key (401 in SendGrid's error shape), keeps the
items of each list as given (so a test can plant malformed ones), keeps those whose
``created`` lies within ``start_time``..``end_time`` (both inclusive, as documented),
pages them with ``limit`` (1 to 500) and ``offset``, records every request and answer,
and can be told to answer 429 (with ``X-RateLimit-Reset``), 500, 401 or 403, or to drop
the connection, request by request. The tests check its answers against SendGrid's
published schema (``item_validators``), so the fake cannot drift from the real shapes.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from tests.loopback import LoopbackServer, send_json

API_KEY = "SG.suppressions-test-key"
KINDS = ("bounces", "blocks", "spam_reports", "invalid_emails", "unsubscribes")
MAX_LIMIT = 500
_SCHEMA_NAME = "tsg_suppressions_v3.json"
SCHEMA_FILES = (Path(__file__).parent / "data" / "sendgrid" / _SCHEMA_NAME,)


def _document() -> dict[str, Any]:
    for path in SCHEMA_FILES:
        if path.is_file():
            document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return document
    raise FileNotFoundError(f"SendGrid's {_SCHEMA_NAME} is in none of {SCHEMA_FILES}")


def item_validators() -> dict[str, Draft202012Validator]:
    """Per list, a validator for its 200 answer (a JSON array), from the published schema."""
    document = _document()
    components = document["components"]
    validators = {}
    for kind in KINDS:
        answer = document["paths"][f"/v3/suppression/{kind}"]["get"]["responses"]["200"]
        schema = answer["content"]["application/json"]["schema"]
        validators[kind] = Draft202012Validator(
            {**schema, "components": components},
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )
    return validators


def error_validator() -> Draft202012Validator:
    """SendGrid's ErrorResponse; ``field`` may be null (the document says so OpenAPI 3.0's
    way, ``nullable``, which JSON Schema ignores)."""
    schema = json.loads(json.dumps(_document()["components"]["schemas"]["ErrorResponse"]))
    schema["properties"]["errors"]["items"]["properties"]["field"]["type"] = ["string", "null"]
    return Draft202012Validator(schema)


def item(
    kind: str,
    email: str,
    created: int,
    *,
    reason: str = "550 5.1.1 The email account that you tried to reach does not exist.",
    status: str = "5.1.1",
    ip: str = "10.63.202.100",
) -> dict[str, Any]:
    """One list item in the shape SendGrid documents for ``kind``."""
    base: dict[str, Any] = {"created": created, "email": email}
    if kind in ("bounces", "blocks"):
        return {**base, "reason": reason, "status": status}
    if kind == "spam_reports":
        return {**base, "ip": ip}
    if kind == "invalid_emails":
        return {**base, "reason": reason}
    if kind == "unsubscribes":
        return base
    raise ValueError(f"no such list: {kind}")


@dataclass
class Recorded:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    status: int = 0  # 0: the connection was dropped without an answer
    body: Any = None


@dataclass
class Suppressions:
    """What the server holds, what it saw, and what it will answer next."""

    lists: dict[str, list[Any]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    # Consumed one per request: "429", "500", "401", "403", "close"; then "ok".
    actions: list[str] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    rate_limit_reset_in: int = 2  # seconds from now, in X-RateLimit-Reset
    rate_limit_reset: str | None = None  # X-RateLimit-Reset as it is, instead
    ignore_offset: bool = False  # a broken server, to check the client cannot loop forever
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        """Back to empty lists and no plans, so one server can serve many tests."""
        fresh = Suppressions()
        with self.lock:
            self.lists = fresh.lists
            self.actions = fresh.actions
            self.requests = fresh.requests
            self.rate_limit_reset_in = fresh.rate_limit_reset_in
            self.rate_limit_reset = fresh.rate_limit_reset
            self.ignore_offset = fresh.ignore_offset

    def add(self, kind: str, *items: Any) -> None:
        with self.lock:
            self.lists[kind].extend(items)

    def fail_next(self, action: str, count: int = 1) -> None:
        with self.lock:
            self.actions.extend([action] * count)

    def offsets(self, kind: str) -> list[int]:
        return [int(r.query["offset"]) for r in self.requests if r.path.endswith("/" + kind)]


def _error(message: str, field: str | None = None) -> dict[str, Any]:
    return {"errors": [{"field": field, "message": message}]}


def _page(state: Suppressions, kind: str, query: dict[str, str]) -> tuple[int, Any]:
    numbers: dict[str, int] = {}
    for name in ("start_time", "end_time", "limit", "offset"):
        if name in query:
            try:
                numbers[name] = int(query[name])
            except ValueError:
                return 400, _error(f"{name} must be an integer", name)
    limit = numbers.get("limit", MAX_LIMIT)
    offset = numbers.get("offset", 0)
    if not 1 <= limit <= MAX_LIMIT:
        return 400, _error(f"limit must be between 1 and {MAX_LIMIT}", "limit")
    if offset < 0:
        return 400, _error("offset must not be negative", "offset")
    start = numbers.get("start_time")
    end = numbers.get("end_time")

    def in_window(entry: Any) -> bool:
        created = entry.get("created") if isinstance(entry, dict) else None
        if isinstance(created, bool) or not isinstance(created, int | float):
            return True  # a planted malformed item: let the client see it
        if not math.isfinite(created) or created > 253_402_300_799:
            return True  # planted: a time no datetime holds (milliseconds, say)
        return (start is None or created >= start) and (end is None or created <= end)

    with state.lock:
        selected = [entry for entry in state.lists[kind] if in_window(entry)]
    if state.ignore_offset:
        offset = 0
    return 200, selected[offset : offset + limit]


class SuppressionServer(LoopbackServer):
    def __init__(self) -> None:
        self.state = Suppressions()
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; without this, Nagle and delayed ACKs
            # add 40 ms to every answer on a kept-alive connection.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
                record = Recorded(parts.path, query, dict(self.headers.items()))
                with state.lock:
                    state.requests.append(record)
                    action = state.actions.pop(0) if state.actions else "ok"
                prefix, _, kind = parts.path.rpartition("/")
                if prefix != "/v3/suppression" or kind not in KINDS:
                    self._answer(record, 404, _error("resource not found"))
                elif self.headers.get("Authorization") != f"Bearer {API_KEY}" or action == "401":
                    message = (
                        "authorization required"
                        if "Authorization" not in self.headers
                        else "The provided authorization grant is invalid, expired, or revoked"
                    )
                    self._answer(record, 401, _error(message))
                elif action == "403":
                    self._answer(record, 403, _error("access forbidden"))
                elif action == "429":
                    reset = state.rate_limit_reset
                    if reset is None:
                        reset = str(int(time.time()) + state.rate_limit_reset_in)
                    headers = {
                        "X-RateLimit-Limit": "600",
                        "X-RateLimit-Remaining": "0",
                        "X-RateLimit-Reset": reset,
                    }
                    self._answer(record, 429, _error("too many requests"), headers)
                elif action == "500":
                    self._answer(record, 500, _error("internal error"))
                elif action == "close":
                    # Read the request, answer nothing: the client sees the server hang up.
                    self.close_connection = True
                else:
                    self._answer(record, *_page(state, kind, query))

            def _answer(
                self,
                record: Recorded,
                status: int,
                payload: Any,
                headers: dict[str, str] | None = None,
            ) -> None:
                # Recorded before answering: the client may look as soon as it hears back.
                with state.lock:
                    record.status = status
                    record.body = payload
                send_json(self, status, payload, headers)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(Handler)


def suppression_server() -> SuppressionServer:
    """A server to use as a context manager: serving inside the ``with``."""
    return SuppressionServer()
