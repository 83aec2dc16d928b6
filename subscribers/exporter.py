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
from itertools import groupby
from operator import itemgetter
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    String,
    Text,
    bindparam,
    cast,
    func,
    literal,
    select,
    true,
)
from sqlalchemy import type_coerce as as_text
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import aliased

from subscribers.models import MailingList, Subscriber, Subscription, Suppression
from subscribers.segments import compile_rule, per_dialect

PAGE_ROWS = 10_000
STATE_COLUMNS = ("status", "list_status", "lists", "suppressed", "created_at")


def _iso_created_at() -> Any:
    """``created_at`` as ISO 8601 text in UTC, made by the database (as Python's
    ``isoformat`` writes it: no fraction when it is zero), so that no row is turned into
    a datetime and back. SQLite stores naive UTC text, PostgreSQL a timestamptz."""
    stamp = Subscriber.created_at
    lite = func.replace(func.replace(stamp, " ", "T") + "+00:00", ".000000+", "+")
    pg = func.replace(
        func.to_char(func.timezone("UTC", stamp), literal('YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')),
        ".000000+",
        "+",
    )
    return as_text(per_dialect(pg, lite), String())


def export_rows(
    engine: Engine,
    *,
    list_id: int | None = None,
    rule: Mapping[str, Any] | None = None,
    page_rows: int | None = None,
) -> Iterator[str]:
    """CSV lines (each ending in ``\\r\\n``), the header first. ``list_id`` keeps that
    list's members (whatever their membership's status); ``rule`` a segment's matches.

    Each page is read as plain text and numbers (no value converted to a Python object
    and back: dates are formatted by the database, attributes stay the stored JSON text)
    and written by ``csv.writer.writerows`` in one call."""
    size = page_rows or PAGE_ROWS
    condition: ColumnElement[bool] = compile_rule(rule) if rule else true()
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    header = ["email", "name", "status"]
    if list_id is not None:
        header.append("list_status")
    header += ["lists", "suppressed", "timezone", "created_at", "attributes"]
    writer.writerow(header)
    yield _take(buffer)
    if engine.dialect.name == "postgresql":
        yield from _copied(engine, list_id, condition, size)
        return
    columns: list[Any] = [
        Subscriber.id,
        Subscriber.email,
        func.coalesce(Subscriber.name, ""),
        Subscriber.status,
    ]
    if list_id is not None:
        columns.append(Subscription.status)
    columns += [
        func.coalesce(Suppression.reason, ""),
        func.coalesce(Subscriber.timezone, ""),
        _iso_created_at(),
        # The stored JSON text as it is: each database's text of a JSON object is JSON.
        func.coalesce(cast(Subscriber.attributes, Text), "{}"),
    ]
    # The suppression by a join on its unique address, memberships by the page's id
    # range: lists of thousands of bound values cost more to compile than to run.
    query = select(*columns).outerjoin(Suppression, Suppression.email == Subscriber.email)
    if list_id is not None:
        query = query.join(
            Subscription,
            (Subscription.subscriber_id == Subscriber.id) & (Subscription.list_id == list_id),
        )
    memberships = (
        select(
            Subscription.subscriber_id,
            as_text(MailingList.name + ":" + Subscription.status, String()),
        )
        .join(MailingList, MailingList.id == Subscription.list_id)
        .order_by(Subscription.subscriber_id, MailingList.name)
    )
    lists_at = 5 if list_id is not None else 4  # where "lists" goes in a page's row
    last = 0
    while True:
        page_query = query.where(Subscriber.id > last, condition)
        with engine.connect() as connection:
            page = _tuples(connection, page_query.order_by(Subscriber.id).limit(size))
            if not page:
                return
            member_rows = _tuples(
                connection,
                memberships.where(Subscription.subscriber_id.between(page[0][0], page[-1][0])),
            )
        lists = {
            sid: "|".join(m for _, m in group)
            for sid, group in groupby(member_rows, key=itemgetter(0))
        }
        writer.writerows((*row[1:lists_at], lists.get(row[0], ""), *row[lists_at:]) for row in page)
        yield _take(buffer)
        last = page[-1][0]


def _copied(
    engine: Engine, list_id: int | None, condition: ColumnElement[bool], size: int
) -> Iterator[str]:
    """PostgreSQL writes the CSV itself (``COPY (SELECT …) TO STDOUT``), a page of ids at
    a time: no row becomes a Python object. The pages are ranges of ids up to the highest
    when the export began (a range can hold fewer rows than ``size``, never more).

    Its CSV is the ``csv`` module's: empty cells are NULLs (which PostgreSQL leaves
    unquoted, where it would quote an empty string), and lines end in CRLF (no cell
    holds a line break: every text here is validated or JSON, which escapes them)."""

    def cell(value: Any) -> Any:
        return func.nullif(value, "")

    # Aliases: the outer query joins the subscriptions too, for one list's status.
    member, named = aliased(Subscription), aliased(MailingList)
    memberships = (
        select(
            func.string_agg(
                named.name + ":" + member.status, aggregate_order_by(literal("|"), named.name)
            )
        )
        .select_from(member)
        .join(named, named.id == member.list_id)
        .where(member.subscriber_id == Subscriber.id)
        .scalar_subquery()
    )
    columns: list[Any] = [Subscriber.email, cell(Subscriber.name), Subscriber.status]
    if list_id is not None:
        columns.append(Subscription.status)
    columns += [
        memberships,
        cell(Suppression.reason),
        cell(Subscriber.timezone),
        _iso_created_at(),
        cast(Subscriber.attributes, Text),
    ]
    query = (
        select(*columns)
        .outerjoin(Suppression, Suppression.email == Subscriber.email)
        .where(
            Subscriber.id > bindparam("low"),
            Subscriber.id <= bindparam("high"),
            condition,
        )
        .order_by(Subscriber.id)
    )
    if list_id is not None:
        query = query.join(
            Subscription,
            (Subscription.subscriber_id == Subscriber.id) & (Subscription.list_id == list_id),
        )
    compiled = query.compile(engine, compile_kwargs={"render_postcompile": True})
    statement = f"COPY ({compiled.string}) TO STDOUT (FORMAT csv)"
    with engine.connect() as connection:
        top = connection.scalar(select(func.coalesce(func.max(Subscriber.id), 0))) or 0
    for low in range(0, top, size):
        params = _bound(engine, compiled, {"low": low, "high": low + size})
        with engine.connect() as connection:
            raw: Any = connection.connection.dbapi_connection
            with raw.cursor() as cursor, cursor.copy(statement, params) as copy:
                text = b"".join(bytes(block) for block in copy).decode()
        if text:
            yield text.replace("\n", "\r\n")


def _bound(engine: Engine, compiled: Any, values: dict[str, Any]) -> dict[str, Any]:
    """The statement's parameters as the driver takes them (each through its type)."""
    params: dict[str, Any] = compiled.construct_params(values)
    for name, bind in compiled.binds.items():
        if name in params:
            process = bind.type.dialect_impl(engine.dialect).bind_processor(engine.dialect)
            if process is not None:
                params[name] = process(params[name])
    return params


def _tuples(connection: Connection, query: Select[*tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The rows as the driver gives them: every column here is text or a number, so
    SQLAlchemy's result rows (a third of the time) would add nothing."""
    result = connection.execute(query)
    try:
        return list(result.cursor.fetchall())
    finally:
        result.close()


def _take(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
