"""CSV export of everyone, one list or one segment, streamed in constant memory.

Subscribers are read in keyset pages by id (``id > last`` … ``LIMIT PAGE_ROWS``), each page
on a short connection of its own, so a slow reader of the stream (a browser download)
holds no transaction open and memory does not grow with the audience. The result is a
generator of CSV lines.

Columns: ``email``, ``name``, ``status`` (the subscriber's: active, unsubscribed,
bounced, complained), ``list_status`` (with a list: that membership's status), ``lists``
(``name:status`` for each membership, ``|``-separated), ``suppressed`` (the suppression's
reason, or empty), ``timezone``, ``created_at`` (ISO 8601, UTC) and ``attributes`` (a JSON
object). The file imports again as it is: the importer reads ``attributes`` as JSON and
ignores the state columns, which an import never sets.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import ColumnElement, Engine, Text, cast, select, true

from subscribers.models import MailingList, Subscriber, Subscription, Suppression
from subscribers.segments import compile_rule

PAGE_ROWS = 5000
STATE_COLUMNS = ("status", "list_status", "lists", "suppressed", "created_at")


def export_rows(
    engine: Engine,
    *,
    list_id: int | None = None,
    rule: Mapping[str, Any] | None = None,
    page_rows: int = PAGE_ROWS,
) -> Iterator[str]:
    """CSV lines (each ending in ``\\r\\n``), the header first. ``list_id`` keeps that
    list's members (whatever their membership's status); ``rule`` a segment's matches."""
    condition: ColumnElement[bool] = compile_rule(rule) if rule else true()
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    header = ["email", "name", "status"]
    if list_id is not None:
        header.append("list_status")
    header += ["lists", "suppressed", "timezone", "created_at", "attributes"]
    writer.writerow(header)
    yield _take(buffer)
    columns = (
        Subscriber.id,
        Subscriber.email,
        Subscriber.name,
        Subscriber.status,
        Subscriber.timezone,
        Subscriber.created_at,
        # The stored JSON text as it is: parsing it to write it out again was a fifth of
        # the time, and each database's text of a JSON object is valid JSON.
        cast(Subscriber.attributes, Text),
        Suppression.reason,
    )
    last = 0
    while True:
        # The suppression by a join on its unique address, memberships by the page's id
        # range: lists of thousands of bound values cost more to compile than to run.
        query = (
            select(*columns)
            .outerjoin(Suppression, Suppression.email == Subscriber.email)
            .where(Subscriber.id > last, condition)
        )
        if list_id is not None:
            query = query.join(
                Subscription,
                (Subscription.subscriber_id == Subscriber.id) & (Subscription.list_id == list_id),
            ).add_columns(Subscription.status)
        query = query.order_by(Subscriber.id).limit(page_rows)
        with engine.connect() as connection:
            page: list[Any] = list(connection.execute(query).all())
            if not page:
                return
            memberships: dict[int, list[str]] = {}
            for sid, name, status in connection.execute(
                select(Subscription.subscriber_id, MailingList.name, Subscription.status)
                .join(MailingList, MailingList.id == Subscription.list_id)
                .where(Subscription.subscriber_id.between(page[0][0], page[-1][0]))
                .order_by(Subscription.subscriber_id, MailingList.name)
            ):
                memberships.setdefault(sid, []).append(f"{name}:{status}")
        for row in page:
            sid, email, name, status, zone, created_at, attributes, suppressed = row[:8]
            cells = [email, name or "", status]
            if list_id is not None:
                cells.append(row[8])
            cells += [
                "|".join(memberships.get(sid, ())),
                suppressed or "",
                zone or "",
                created_at.isoformat(),
                attributes or "{}",
            ]
            writer.writerow(cells)
        yield _take(buffer)
        last = page[-1][0]


def _take(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
