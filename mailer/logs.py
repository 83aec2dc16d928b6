"""Structured logs: one event per line, JSON when not on a terminal.

Call sites log an event name as the message and facts as ``extra``; the
formatter keeps those facts as fields rather than burying them in prose.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

# uvicorn puts an ANSI-coloured copy of its message on each record: never a fact.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
# Never written to a log, whatever a call site passes (Invariant 6).
_REDACT = ("secret", "password", "api_key", "token", "authorization")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = {}
    for key, value in vars(record).items():
        if key in _STANDARD:
            continue
        fields[key] = "[redacted]" if any(word in key.lower() for word in _REDACT) else value
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        facts = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{record.levelname.lower():<7} {record.getMessage()} {facts}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


# Libraries that narrate every step at INFO: their requests and retries are ours to
# log (with what they were for), so only their problems are news unless debugging.
_CHATTY = ("alembic", "flufl.bounce", "httpx", "httpcore", "uvicorn.error", "asyncio")


def configure(level: str = "WARNING", fmt: str = "auto") -> None:
    """One handler on stderr (stdout is the command's output), at ``level``."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    quiet = logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING
    for name in _CHATTY:
        logging.getLogger(name).setLevel(quiet)
