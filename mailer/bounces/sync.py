"""Pulling SendGrid's suppression lists into ours, and reading bounce mail.

Both turn what they find into events (each with a stable external id, so a rerun
stores nothing twice) and then apply the one bounce policy to them, exactly as
for webhook events.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from sqlalchemy import select

from mailer.bounces.mail import read_bounce
from mailer.bounces.mailbox import BounceSource
from mailer.bounces.reasons import Verdict, blocked_verdict, classify
from mailer.bounces.sendgrid_sync import (
    ProviderSuppression,
    SendGridSuppressionClient,
    SuppressionKind,
)
from mailer.db.base import utcnow
from mailer.db.models import Delivery, Newsletter, ProviderSync
from mailer.db.session import transaction
from mailer.events.policy import Policy, PolicyReport, apply_pending
from mailer.events.store import insert_new
from mailer.runtime import Runtime

log = logging.getLogger(__name__)

SYNC_NAME = "sendgrid-suppressions"
# A record SendGrid lists a little after its `created` time must not fall between
# two windows: each window ends this far in the past.
SETTLE_SECONDS = 60
_PAGE = 1000


class SyncNotConfigured(RuntimeError):
    """No SendGrid API key: there is nothing to sync from."""


@dataclass
class SyncReport:
    since: int | None
    until: int
    fetched: int
    stored: int
    skipped: list[str]
    policy: PolicyReport

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "fetched": self.fetched,
            "stored": self.stored,
            "skipped": self.skipped[:50],
            "policy": self.policy.as_dict(),
        }


def _event_row(item: ProviderSuppression, now: datetime) -> dict[str, Any]:
    verdict: Verdict | None = None
    if item.kind is SuppressionKind.BOUNCE:
        verdict = classify(item.status, item.reason)
    elif item.kind is SuppressionKind.BLOCK:
        verdict = blocked_verdict(item.status, item.reason)
    kind, detail = {
        SuppressionKind.BOUNCE: ("bounce", item.reason),
        SuppressionKind.BLOCK: ("bounce", item.reason),
        SuppressionKind.SPAM_REPORT: ("spamreport", item.reason),
        SuppressionKind.INVALID_EMAIL: ("dropped", "Invalid"),
        SuppressionKind.GLOBAL_UNSUBSCRIBE: ("unsubscribe", item.reason),
    }[item.kind]
    return {
        "source": "sendgrid-sync",
        # Stable across reruns and overlapping windows: the same record, the same id.
        "external_id": f"sync:{item.kind.value}:{item.email}:{item.created}"[:200],
        "kind": kind,
        "email": item.email,
        "edition_id": None,
        "delivery_id": None,
        "bounce_class": verdict.kind.value if verdict else None,
        "bounce_reason": verdict.reason.value if verdict else None,
        "detail": detail,
        "payload": {
            "list": item.kind.value,
            "reason": "Invalid" if item.kind is SuppressionKind.INVALID_EMAIL else item.reason,
            "status": item.status,
            "created": item.created,
        },
        "occurred_at": datetime.fromtimestamp(item.created, UTC),
        "received_at": now,
        "processed_at": None,
    }


def sync_sendgrid(
    runtime: Runtime,
    *,
    client: SendGridSuppressionClient | None = None,
    clock: Callable[[], float] = time.time,
) -> SyncReport:
    """Fetch what SendGrid recorded since the last sync and apply the policy. Idempotent.

    The window's end is fixed before fetching and stored only once everything in
    it is stored, so a failed sync is simply retried from the same point.
    """
    settings = runtime.settings
    if client is None:
        if settings.sendgrid_api_key is None:
            raise SyncNotConfigured("set MAILER_SENDGRID_API_KEY to sync SendGrid's suppressions")
        client = SendGridSuppressionClient(
            settings.sendgrid_api_key.get_secret_value(),
            settings.sendgrid_base_url,
            timeout=settings.sendgrid_timeout_seconds,
        )
    with runtime.sessions() as session:
        state = session.get(ProviderSync, SYNC_NAME)
        since = state.synced_until if state else None
    until = int(clock()) - SETTLE_SECONDS
    fetched = stored = 0
    try:
        with client:
            rows: list[dict[str, Any]] = []
            for item in client.fetch_all(since, until):
                fetched += 1
                rows.append(_event_row(item, utcnow()))
                if len(rows) >= _PAGE:
                    stored += _store(runtime, rows)
                    rows = []
            stored += _store(runtime, rows)
            skipped = list(client.skipped)
    except Exception as exc:
        with transaction(runtime.sessions) as session:
            state = session.get(ProviderSync, SYNC_NAME) or ProviderSync(name=SYNC_NAME)
            state.last_run_at, state.last_error = utcnow(), f"{type(exc).__name__}: {exc}"
            session.add(state)
        raise
    with transaction(runtime.sessions) as session:
        state = session.get(ProviderSync, SYNC_NAME) or ProviderSync(name=SYNC_NAME)
        state.synced_until, state.last_run_at = until, utcnow()
        state.last_error, state.last_count = None, fetched
        session.add(state)
    report = apply_pending(runtime.sessions, Policy.from_settings(settings))
    log.info(
        "bounces.synced",
        extra={"since": since, "until": until, "fetched": fetched, "stored": stored},
    )
    return SyncReport(since, until, fetched, stored, skipped, report)


def _store(runtime: Runtime, rows: list[dict[str, Any]]) -> int:
    if not rows:
        return 0
    with runtime.engine.begin() as connection:
        return insert_new(connection, rows)


@dataclass
class MailImportReport:
    messages: int = 0
    bounces: int = 0
    stored: int = 0
    not_bounces: int = 0
    unparsed: int = 0
    unparsed_keys: list[str] = field(default_factory=list)
    policy: PolicyReport | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "bounces": self.bounces,
            "stored": self.stored,
            "not_bounces": self.not_bounces,
            "unparsed": self.unparsed,
            "unparsed_keys": self.unparsed_keys[:50],
            "policy": self.policy.as_dict() if self.policy else None,
        }


def own_addresses(runtime: Runtime) -> set[str]:
    """Our senders: every newsletter's From and Reply-To. Never a failed reader."""
    with runtime.sessions() as session:
        rows = session.execute(select(Newsletter.from_email, Newsletter.reply_to)).all()
    return {a.strip().lower() for row in rows for a in row if a}


def import_bounce_mail(runtime: Runtime, source: BounceSource) -> MailImportReport:
    """Read bounce mail from ``source``, store what it reports, apply the policy.

    A message is marked done only after its events are committed, so a crash
    re-reads it (and the stable ids make that harmless). Mail that is not a bounce
    (an auto-reply) is marked done too: it would otherwise be read forever. Mail that
    could not be read (a detector failed on it and nothing else named a recipient) is
    kept as an ``unparsed`` event, with its headers and why, for an operator to see.
    """
    report = MailImportReport()
    pattern = runtime.settings.smtp_return_path
    own = own_addresses(runtime)
    for key, raw in source.messages():
        report.messages += 1
        read = read_bounce(raw, verp_pattern=pattern, own_addresses=own)
        bounces = read.bounces
        digest = hashlib.sha256(raw).hexdigest()[:32]
        now = utcnow()
        if not bounces and read.unparsed is not None:
            report.unparsed += 1
            report.unparsed_keys.append(key)
            with runtime.engine.begin() as connection:
                insert_new(connection, [_unparsed_row(raw, digest, key, read.unparsed, now)])
            source.done(key)
            continue
        if not bounces:
            report.not_bounces += 1
            source.done(key)
            continue
        with runtime.engine.begin() as connection:
            known = _deliveries(connection, [b.delivery_id for b in bounces if b.delivery_id])
            rows = []
            for bounce in bounces:
                delivery = known.get(bounce.delivery_id) if bounce.delivery_id else None
                rows.append(
                    {
                        "source": "dsn",
                        "external_id": f"dsn:{digest}:{bounce.email}",
                        "kind": "bounce",
                        "email": bounce.email,
                        "edition_id": delivery.edition_id if delivery else None,
                        "delivery_id": delivery.id if delivery else None,
                        "bounce_class": bounce.kind.value,
                        "bounce_reason": bounce.reason.value,
                        "detail": bounce.diagnostic or bounce.status,
                        "payload": {
                            "status": bounce.status,
                            "reason": bounce.reason.value,
                            "diagnostic": bounce.diagnostic,
                            "message_id": bounce.message_id,
                            "verp_delivery_id": bounce.delivery_id,
                        },
                        "occurred_at": now,
                        "received_at": now,
                        "processed_at": None,
                    }
                )
            report.bounces += len(rows)
            report.stored += insert_new(connection, rows)
        source.done(key)
    report.policy = apply_pending(runtime.sessions, Policy.from_settings(runtime.settings))
    return report


_KEPT_HEADERS = ("From", "To", "Subject", "Date", "Message-ID")


def _unparsed_row(raw: bytes, digest: str, key: str, why: str, now: datetime) -> dict[str, Any]:
    """An event an operator sees: which message, what it said it was, why it was not read.
    Born processed: the policy has nothing to apply."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw[:65536])
    kept = {
        name: " ".join(str(headers.get(name, "")).split())[:300]
        for name in _KEPT_HEADERS
        if headers.get(name) is not None
    }
    return {
        "source": "dsn",
        "external_id": f"dsn:{digest}:unparsed",
        "kind": "unparsed",
        "email": "",
        "edition_id": None,
        "delivery_id": None,
        "bounce_class": None,
        "bounce_reason": None,
        "detail": why[:1000],
        "payload": {"key": key[:200], "sha256": digest, "size": len(raw), "headers": kept},
        "occurred_at": now,
        "received_at": now,
        "processed_at": now,
    }


def _deliveries(connection: Any, ids: list[int]) -> dict[int, Any]:
    if not ids:
        return {}
    rows = connection.execute(
        select(Delivery.id, Delivery.edition_id, Delivery.email).where(Delivery.id.in_(ids))
    ).all()
    return {row.id: row for row in rows}
