"""A local server that answers like SendGrid's ``POST /v3/mail/send``, over real HTTP.

It checks the API key, validates every body against SendGrid's official
OpenAPI schema (with the documented fix: top-level ``custom_args`` is an
object) plus the limits the schema does not state, records what it
received, and can be told to answer 429, 500, 502, 503, 504, 400, 401, to hang, or to reset
the connection, request by request.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from tests.loopback import LoopbackServer, send_json

SCHEMA_FILE = Path(__file__).parent / "data" / "sendgrid" / "tsg_mail_v3.json"
API_KEY = "SG.test-key"
# 5xx answers it can give, each as told (an action "500" answers 500).
SERVER_ERRORS = ("500", "502", "503", "504")


def mail_send_validator() -> Draft202012Validator:
    document = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    components = document["components"]
    schema = components["requestBodies"]["PostMailSend"]["content"]["application/json"]["schema"]
    schema = json.loads(json.dumps(schema))
    # Known fault of the published document: the live API takes an object here.
    schema["properties"]["custom_args"] = {
        "type": "object",
        "additionalProperties": {"type": "string"},
    }
    return Draft202012Validator({**schema, "components": components})


def limit_errors(body: dict[str, Any]) -> list[dict[str, str]]:
    """Rules SendGrid enforces that the schema does not express."""
    errors = []
    personalizations = body.get("personalizations", [])
    recipients = [
        r["email"].lower()
        for p in personalizations
        for kind in ("to", "cc", "bcc")
        for r in p.get(kind, [])
    ]
    if len(recipients) > 1000:
        errors.append({"field": "personalizations", "message": "more than 1000 recipients"})
    if len(recipients) != len(set(recipients)):
        errors.append({"field": "personalizations", "message": "each email address must be unique"})
    for index, p in enumerate(personalizations):
        for key in ("substitutions", "custom_args"):
            values = p.get(key, {})
            if any(not isinstance(v, str) for v in values.values()):
                errors.append(
                    {
                        "field": f"personalizations.{index}.{key}",
                        "message": "values must be strings",
                    }
                )
            if len(json.dumps(values).encode()) > 10_000:
                errors.append(
                    {"field": f"personalizations.{index}.{key}", "message": "over 10000 bytes"}
                )
    if len(body.get("categories", [])) > 10:
        errors.append({"field": "categories", "message": "at most 10 categories"})
    return errors


@dataclass
class Sink:
    """What the sink saw, and what it will answer next."""

    actions: list[str] = field(default_factory=list)  # consumed one per request; then "ok"
    bodies: list[dict[str, Any]] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    hang_seconds: float = 3.0
    # X-RateLimit-Reset as a 429 gives it, raw; None: a second from now.
    rate_limit_reset: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def delivery_ids(self) -> list[int]:
        """Every delivery id in every request that reached the sink, accepted or not."""
        return [
            int(p["custom_args"]["delivery_id"])
            for b in self.bodies
            for p in b.get("personalizations", [])
        ]

    def accepted_ids(self) -> list[int]:
        return [
            int(p["custom_args"]["delivery_id"])
            for b, status in zip(self.bodies, self.answered, strict=False)
            if status == 202
            for p in b.get("personalizations", [])
        ]


class SinkServer(LoopbackServer):
    def __init__(self) -> None:
        self.sink = Sink()
        validator = mail_send_validator()
        sink = self.sink

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                if self.path != "/v3/mail/send":
                    self._answer(404, {"errors": [{"message": "not found"}]})
                    return
                with sink.lock:
                    action = sink.actions.pop(0) if sink.actions else "ok"
                    authorized = (
                        self.headers.get("Authorization") == f"Bearer {API_KEY}" and action != "401"
                    )
                    if authorized:
                        # A slot in arrival order, the order actions are handed out in
                        # (validating a body takes a while, longer for longer bodies).
                        sink.bodies.append({})
                        sink.answered.append(0)
                        index = len(sink.bodies) - 1
                if not authorized:
                    self._answer(
                        401,
                        {
                            "errors": [
                                {
                                    "message": "The provided authorization grant is invalid",
                                    "field": None,
                                    "help": None,
                                }
                            ]
                        },
                    )
                    return
                try:
                    body = json.loads(raw)
                except ValueError:
                    with sink.lock:
                        sink.answered[index] = 400
                    self._answer(400, {"errors": [{"message": "Bad Request", "field": None}]})
                    return
                problems = [
                    {"field": ".".join(map(str, e.absolute_path)) or None, "message": e.message}
                    for e in validator.iter_errors(body)
                ] + limit_errors(body)
                status = {"400": 400, "429": 429, "hang": -1, "reset": -1}.get(action, 202)
                if action in SERVER_ERRORS:
                    status = int(action)
                if problems:
                    status = 400
                with sink.lock:
                    # Recorded before answering: the client may look as soon as it hears back.
                    sink.bodies[index] = body
                    sink.answered[index] = status
                if problems:
                    self._answer(400, {"errors": [{**p, "help": None} for p in problems]})
                elif action == "400":
                    self._answer(
                        400,
                        {
                            "errors": [
                                {
                                    "field": "from.email",
                                    "help": None,
                                    "message": (
                                        "The from address does not match a verified Sender Identity"
                                    ),
                                }
                            ]
                        },
                    )
                elif action == "429":
                    reset = sink.rate_limit_reset
                    if reset is None:
                        reset = str(int(time.time()) + 1)
                    self._answer(
                        429,
                        {"errors": [{"message": "too many requests"}]},
                        {"X-RateLimit-Reset": reset},
                    )
                elif action in SERVER_ERRORS:
                    self._answer(int(action), {"errors": [{"message": "internal error"}]})
                elif action == "hang":
                    time.sleep(sink.hang_seconds)
                elif action == "reset":
                    # RST instead of FIN: the client sees a reset after sending its request.
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
                    self.close_connection = True
                else:
                    self._answer(202, None, {"X-Message-Id": uuid.uuid4().hex[:22]})

            def _answer(
                self, status: int, payload: object, headers: dict[str, str] | None = None
            ) -> None:
                send_json(self, status, payload, headers)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(Handler)


def sendgrid_sink() -> SinkServer:
    """A sink to use as a context manager: serving inside the ``with``."""
    return SinkServer()
