"""CSV import: ``email,name,<attribute>…`` rows onto a list.

Rows are checked first; bad rows are reported by line and skipped, and the
good ones are written in one transaction, so an import either lands whole
(minus the rows it reported) or not at all. An import never re-subscribes
someone who left the list, bounced or complained.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailer.db.session import transaction
from mailer.schedule.slots import ScheduleError, parse_timezone
from subscribers.addresses import InvalidAddress, normalize_email
from subscribers.models import MailingList, Subscriber, Subscription, SubscriptionStatus

MAX_NAME_LENGTH = 200


@dataclass(frozen=True)
class Row:
    line: int
    email: str
    name: str | None
    attributes: dict[str, str]
    timezone: str | None = None  # IANA name, for delivery at the slot in their own time


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    subscribed: int = 0
    kept_unsubscribed: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "subscribed": self.subscribed,
            "kept_unsubscribed": self.kept_unsubscribed,
            "errors": [{"line": line, "reason": reason} for line, reason in self.errors],
        }


class ImportFileError(ValueError):
    """The file as a whole cannot be read as a subscriber CSV."""


def read_rows(path: Path) -> tuple[list[Row], list[tuple[int, str]]]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFileError(f"{path}: not UTF-8 (byte {exc.start})") from exc
    except OSError as exc:
        raise ImportFileError(f"{path}: {exc.strerror}") from exc
    return parse_rows(text, source=str(path))


def parse_rows(text: str, *, source: str) -> tuple[list[Row], list[tuple[int, str]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ImportFileError(f"{source}: empty file") from None
    except csv.Error as exc:
        raise ImportFileError(f"{source}:1: {exc}") from exc
    if not header or header[0].lower() != "email":
        raise ImportFileError(f"{source}:1: the first column must be 'email', not {header[:1]}")
    lowered = [h.lower() for h in header]
    if len(set(lowered)) != len(lowered) or any(not h for h in header):
        raise ImportFileError(f"{source}:1: column names must be non-empty and distinct")
    has_name = len(header) > 1 and lowered[1] == "name"
    attribute_names = header[2:] if has_name else header[1:]

    rows: list[Row] = []
    errors: list[tuple[int, str]] = []
    seen: set[str] = set()
    try:
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                errors.append((line, f"expected {len(header)} columns, found {len(values)}"))
                continue
            try:
                email = normalize_email(values[0])
            except InvalidAddress as exc:
                errors.append((line, f"email: {exc}"))
                continue
            if email in seen:
                errors.append((line, f"email: {email} appears earlier in the file"))
                continue
            name = values[1].strip() or None if has_name else None
            if name is not None and (len(name) > MAX_NAME_LENGTH or not name.isprintable()):
                errors.append((line, "name: too long or contains control characters"))
                continue
            extra = values[2:] if has_name else values[1:]
            attributes = {k: v.strip() for k, v in zip(attribute_names, extra, strict=True)}
            # A `timezone` column is the subscriber's own zone, not a free attribute.
            zone_key = next((k for k in attributes if k.lower() == "timezone"), None)
            zone = (attributes.pop(zone_key) or None) if zone_key else None
            if zone is not None:
                try:
                    parse_timezone(zone)
                except ScheduleError as exc:
                    errors.append((line, str(exc)))
                    continue
            seen.add(email)
            rows.append(Row(line, email, name, attributes, zone))
    except csv.Error as exc:
        errors.append((reader.line_num, f"unreadable CSV: {exc}"))
    return rows, errors


def import_rows(
    factory: sessionmaker[Session], rows: Iterable[Row], list_name: str, report: ImportReport
) -> ImportReport:
    rows = list(rows)
    with transaction(factory) as session:
        mailing_list = session.scalar(select(MailingList).where(MailingList.name == list_name))
        if mailing_list is None:
            mailing_list = MailingList(name=list_name)
            session.add(mailing_list)
            session.flush()
        existing: dict[str, Subscriber] = {}
        emails = [r.email for r in rows]
        for start in range(0, len(emails), 500):
            chunk = emails[start : start + 500]
            for sub in session.scalars(select(Subscriber).where(Subscriber.email.in_(chunk))):
                existing[sub.email] = sub
        memberships = {
            s.subscriber_id: s
            for s in session.scalars(
                select(Subscription).where(Subscription.list_id == mailing_list.id)
            )
        }
        fresh = []
        for row in rows:
            subscriber = existing.get(row.email)
            if subscriber is None:
                subscriber = Subscriber(
                    email=row.email, name=row.name, attributes=row.attributes, timezone=row.timezone
                )
                fresh.append(subscriber)
                report.added += 1
            else:
                if row.name:
                    subscriber.name = row.name
                if row.timezone:
                    subscriber.timezone = row.timezone
                subscriber.attributes = {**(subscriber.attributes or {}), **row.attributes}
                report.updated += 1
        # One flush inserts every new subscriber in a few multi-row statements.
        session.add_all(fresh)
        session.flush()
        for subscriber in [*existing.values(), *fresh]:
            membership = memberships.get(subscriber.id)
            if membership is None:
                session.add(Subscription(subscriber_id=subscriber.id, list_id=mailing_list.id))
                report.subscribed += 1
            elif membership.status != SubscriptionStatus.ACTIVE:
                report.kept_unsubscribed += 1
    return report


def import_csv(factory: sessionmaker[Session], path: Path, list_name: str) -> ImportReport:
    rows, errors = read_rows(path)
    report = ImportReport(errors=[(line, f"{path}:{line}: {r}") for line, r in errors])
    return import_rows(factory, rows, list_name, report)
