"""Segment rules: a small JSON language over subscribers, compiled to SQL.

A rule is ``{"match": "all" | "any", "conditions": [...]}``; each condition is
``{"field": F, "op": OP, "value": V}``. An empty rule matches everyone. Every value
travels as a bound parameter. A bad rule raises SegmentRuleError naming the condition
(``conditions[2]``) and what is wrong with it.

Text fields: ``email``, ``name``, ``timezone``, ``attributes.<key>``; ops ``eq``, ``ne``,
``in``, ``not_in`` (a list of strings), ``contains``, ``ends_with`` (case-insensitive),
``exists``, ``not_exists``.

``list``: list names; ``eq``, ``ne``, ``in``, ``not_in`` (active memberships).

Comparisons: ``gt``, ``gte``, ``lt``, ``lte`` (one value) and ``between`` (``[low, high]``,
both ends included), on ``attributes.<key>`` and ``subscribed_at``:

- a number (``{"field": "attributes.age", "op": "gte", "value": 18}``) compares the
  attribute as a decimal number: an optional minus, digits with an optional fraction
  (``40``, ``-2.5``, ``1.``, ``.5``), spaces around allowed, at most 100 characters. An
  attribute that is not one (``"n/a"``, ``"40 apples"``, ``"1e3"``, empty, missing)
  matches no comparison, and never breaks the query: on PostgreSQL a regular expression
  guards the cast, on SQLite the value must equal its own ``CAST`` (see ``_as_number``).
  A JSON number is one as it is; ``true`` and ``false`` are none;
- a date, ``"2025-01-31"`` (or a date-time, of which the date counts), or a relative one,
  ``{"days_ago": 30}``, compares the attribute's first ten characters as a date when they
  look like ``YYYY-MM-DD`` (ISO 8601 sorts as text), and never matches otherwise;
- ``within_last_days`` N is ``gte {"days_ago": N}``.

``subscribed_at`` is the subscriber's ``created_at``: when the address first joined
(a sign-up or an import makes the row with its first membership). It is one indexed
column of the subscriber, the same whichever newsletter's lists the rule is used with;
dates there compare at full precision, ``"2025-01-31"`` being midnight UTC. Relative
dates are taken from the clock when the rule is compiled (each fill and claim).

Engagement, from the delivery ledger:

- ``delivered``, ``opened``, ``clicked``: ``exists`` (ever) or ``within_last_days`` N
  (``deliveries.delivered_at`` / ``opened_at`` / ``clicked_at``);
- ``bounced``: ``exists`` (ever) or ``within_last_days`` N (a ``bounce_class`` on a
  delivery queued in that window: the ledger keeps no bounce time of its own);
- ``editions_received``: ``eq``, ``gt``, ``gte``, ``lt``, ``lte``, ``between`` on the
  number of editions sent to them: rows marked ``sent`` and rows of batches sent whole,
  which stay ``queued`` in the ledger (see ``mailer.dispatch.ledger.sent_by_batch``).

Engagement conditions are set-based (``subscribers.id IN (SELECT subscriber_id FROM
deliveries …)``), so that neither database probes the ledger once per subscriber.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Numeric,
    String,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.visitors import InternalTraversal

from mailer.db.models import Delivery, DeliveryStatus
from subscribers.models import MailingList, Subscriber, Subscription, SubscriptionStatus

TEXT_FIELDS = {"email": Subscriber.email, "name": Subscriber.name, "timezone": Subscriber.timezone}
TEXT_OPS = {"eq", "ne", "in", "not_in", "contains", "ends_with", "exists", "not_exists"}
COMPARE_OPS = {"gt", "gte", "lt", "lte", "between", "within_last_days"}
OPS = TEXT_OPS | COMPARE_OPS
LIST_OPS = {"eq", "ne", "in", "not_in"}
ENGAGEMENT = {
    "delivered": Delivery.delivered_at,
    "opened": Delivery.opened_at,
    "clicked": Delivery.clicked_at,
}
COUNT_OPS = {"eq", "gt", "gte", "lt", "lte", "between"}
MAX_DAYS = 36500
MAX_TEXT = 1000  # characters of a text value or an attribute's key
# Numbers compared with attributes: any finite value a person would write, and none
# that a database's binding refuses (SQLite's integers stop at 2**63).
MAX_NUMBER = 10**15
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# White space spelled out: PostgreSQL's \s also matches Unicode spaces, which its numeric
# input refuses (the cast would fail the whole query).
_PG_NUMBER = r"^[ \t\n\r]*-?([0-9]+(\.[0-9]*)?|\.[0-9]+)[ \t\n\r]*$"
# Longer text is no number a person compares with: PostgreSQL's numeric refuses some
# (a fraction of 16,384 digits), and SQLite would read them only roughly.
MAX_NUMBER_TEXT = 100
_PG_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
_SQLITE_NOT_NUMBER = "*[^0-9.\t\n\r -]*"
_SQLITE_DATE = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*"


class SegmentRuleError(ValueError):
    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"segment rule {where}: {reason}")
        self.where = where
        self.reason = reason


def compile_rule(rule: Mapping[str, Any]) -> ColumnElement[bool]:
    if not isinstance(rule, Mapping):
        raise SegmentRuleError("(top level)", "must be an object")
    unknown = set(rule) - {"match", "conditions"}
    if unknown:
        raise SegmentRuleError("(top level)", f"unknown keys {sorted(unknown)}")
    match = rule.get("match", "all")
    if match not in ("all", "any"):
        raise SegmentRuleError("match", f"must be 'all' or 'any', not {match!r}")
    conditions = rule.get("conditions", [])
    if not isinstance(conditions, list):
        raise SegmentRuleError("conditions", "must be a list")
    if not conditions:
        return true()
    compiled = [_condition(f"conditions[{i}]", c) for i, c in enumerate(conditions)]
    # Cheapest first: the database tests the terms of an AND (or OR) in the order given
    # and stops at the first that settles it, so a column comparison or one attribute's
    # text spares most rows the numeric guard and the subqueries. Order changes no answer.
    order = sorted(range(len(compiled)), key=lambda i: _cost(conditions[i]))
    ordered = [compiled[i] for i in order]
    return and_(*ordered) if match == "all" else or_(*ordered)


def _cost(condition: Mapping[str, Any]) -> int:
    """A condition's rough cost per row (only its order among the others depends on it):
    a column, an attribute's text, an attribute read as a number or date, a subquery."""
    field = condition["field"]
    if field == "list" or field in ENGAGEMENT or field in ("bounced", "editions_received"):
        return 3
    if field.startswith("attributes."):
        return 2 if condition["op"] in COMPARE_OPS else 1
    return 0


def _condition(where: str, condition: Any) -> ColumnElement[bool]:
    if not isinstance(condition, Mapping):
        raise SegmentRuleError(where, "must be an object with field, op and value")
    field, op, value = condition.get("field"), condition.get("op"), condition.get("value")
    if not isinstance(op, str) or op not in OPS:
        raise SegmentRuleError(where, f"op must be one of {sorted(OPS)}, not {_shown(op)}")
    if not isinstance(field, str):
        raise SegmentRuleError(where, f"field must be a string, not {type(field).__name__}")
    if field == "list":
        return _list_condition(where, op, value)
    if field in ENGAGEMENT or field == "bounced":
        return _engagement(where, field, op, value)
    if field == "editions_received":
        return _received(where, op, value)
    if field == "subscribed_at":
        if op not in COMPARE_OPS:
            raise SegmentRuleError(where, f"subscribed_at takes op {sorted(COMPARE_OPS)}")
        return _compare(where, op, value, lambda v: _moment(where, v), Subscriber.created_at)
    if field.startswith("attributes.") and len(field) > 11:
        key = _key(where, field)
        column: Any = Subscriber.attributes[key].as_string()
        if op in COMPARE_OPS:
            return _attribute_compare(where, key, column, op, value)
    elif field in TEXT_FIELDS:
        column = TEXT_FIELDS[field]
        if op in COMPARE_OPS:
            raise SegmentRuleError(where, f"{field} takes op {sorted(TEXT_OPS)}, not {op!r}")
    else:
        raise SegmentRuleError(
            where,
            "field must be email, name, timezone, list, attributes.<key>, subscribed_at, "
            f"delivered, opened, clicked, bounced or editions_received, not {_shown(field)}",
        )
    if op == "exists":
        return column.is_not(None)  # type: ignore[no-any-return]
    if op == "not_exists":
        return column.is_(None)  # type: ignore[no-any-return]
    if op in ("in", "not_in"):
        values = _string_list(where, value)
        return column.in_(values) if op == "in" else or_(column.is_(None), column.not_in(values))
    text = _string(where, value)
    if op == "eq":
        return column == text  # type: ignore[no-any-return]
    if op == "ne":
        return or_(column.is_(None), column != text)
    if op == "contains":
        return contains_text(column, text)
    return column.iendswith(text, autoescape=True)  # type: ignore[no-any-return]


def _list_condition(where: str, op: str, value: Any) -> ColumnElement[bool]:
    if op not in LIST_OPS:
        raise SegmentRuleError(where, f"a list condition takes op {sorted(LIST_OPS)}, not {op!r}")
    names = [_string(where, value)] if op in ("eq", "ne") else _string_list(where, value)
    if not names:
        return false() if op in ("eq", "in") else true()
    member = exists(
        select(Subscription.subscriber_id)
        .join(MailingList, MailingList.id == Subscription.list_id)
        .where(
            Subscription.subscriber_id == Subscriber.id,
            Subscription.status == SubscriptionStatus.ACTIVE,
            MailingList.name.in_(names),
        )
    )
    return member if op in ("eq", "in") else not_(member)


def _shown(value: Any) -> str:
    """A bad part of a rule, as much of it as an error message should repeat."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _key(where: str, field: str) -> str:
    """The attribute's key from ``attributes.<key>``: it becomes a JSON path."""
    key = field.removeprefix("attributes.")
    if len(key) > MAX_TEXT or not key.isprintable() or any(c in key for c in '"\\'):
        raise SegmentRuleError(
            where,
            f"attribute key {_shown(key)}: at most {MAX_TEXT} printable characters, "
            "without quotes or backslashes",
        )
    return key


def _string(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise SegmentRuleError(where, f"value must be a string, not {type(value).__name__}")
    if "\x00" in value or len(value) > MAX_TEXT:
        # Neither database takes a NUL in a text value, and no stored text holds one.
        raise SegmentRuleError(
            where, f"value: at most {MAX_TEXT} characters, without NUL characters"
        )
    return value


def _string_list(where: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SegmentRuleError(where, "value must be a list of strings")
    return [_string(where, v) for v in value]


def _bounds(where: str, op: str, value: Any) -> tuple[str, list[Any]]:
    """``within_last_days`` N as ``gte {"days_ago": N}``; ``between`` as its two ends."""
    if op == "within_last_days":
        return "gte", [{"days_ago": value}]
    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise SegmentRuleError(where, "between takes a list of two values [low, high]")
        return op, list(value)
    return op, [value]


def _compare(where: str, op: str, value: Any, convert: Any, column: Any) -> ColumnElement[bool]:
    op, values = _bounds(where, op, value)
    converted = [convert(v) for v in values]
    if op == "between":
        return and_(column >= converted[0], column <= converted[1])
    operators = {
        "gt": column.__gt__,
        "gte": column.__ge__,
        "lt": column.__lt__,
        "lte": column.__le__,
    }
    return operators[op](converted[0])  # type: ignore[no-any-return]


def _days(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DAYS:
        raise SegmentRuleError(where, f"days must be a whole number from 0 to {MAX_DAYS}")
    return value


def _relative(where: str, value: Mapping[str, Any]) -> datetime:
    if set(value) != {"days_ago"}:
        raise SegmentRuleError(where, 'a relative date is {"days_ago": N}')
    return datetime.now(UTC) - timedelta(days=_days(where, value["days_ago"]))


def _moment(where: str, value: Any) -> datetime:
    """A date value as a UTC moment: ISO date (midnight UTC), date-time, or days ago."""
    if isinstance(value, Mapping):
        return _relative(where, value)
    if isinstance(value, str):
        try:
            if len(value) == 10:
                return datetime.combine(date.fromisoformat(value), time(), UTC)
            moment = datetime.fromisoformat(value)
            return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
        except (ValueError, OverflowError):  # OverflowError: 9999-12-31T23:00-05:00
            raise SegmentRuleError(where, f"{_shown(value)} is not an ISO 8601 date") from None
    raise SegmentRuleError(where, 'a date is an ISO 8601 string ("2025-01-31") or {"days_ago": N}')


def _attribute_compare(
    where: str, key: str, column: Any, op: str, value: Any
) -> ColumnElement[bool]:
    _, values = _bounds(where, op, value)
    numbers = [isinstance(v, int | float) and not isinstance(v, bool) for v in values]
    if all(numbers):
        if not all(-MAX_NUMBER <= v <= MAX_NUMBER for v in values):  # NaN fails this too
            raise SegmentRuleError(where, f"a number from -{MAX_NUMBER:,} to {MAX_NUMBER:,}")
        return _compare(where, op, value, lambda v: literal(v, Numeric()), _as_number(key, column))
    if any(numbers):
        raise SegmentRuleError(where, "compare with numbers or with dates, not both")

    def day(v: Any) -> str:
        return _moment(where, v).date().isoformat()

    if any(isinstance(v, str) and not _ISO_DATE.fullmatch(v[:10]) for v in values):
        raise SegmentRuleError(where, "value must be a number, an ISO 8601 date or {days_ago}")
    return _compare(where, op, value, lambda v: literal(day(v), String()), _as_date(column))


def _as_number(key: str, column: Any) -> Any:
    """The attribute as a number where it is one, else NULL (which compares false):
    a JSON number, or text that is a decimal number."""
    text = func.trim(cast(column, String()))
    short = func.length(column) <= MAX_NUMBER_TEXT
    # PostgreSQL: ->> gives a JSON number's text in plain digits, true as "true".
    pg = case((and_(short, text.regexp_match(_PG_NUMBER)), cast(text, Numeric())), else_=None)
    # SQLite: what json_extract gives says a JSON string ('text') from a number; true and
    # false come as 1 and 0 ('integer'), which only json_type, a second parse and too
    # dear for every row, tells from a JSON integer (the key holds no quote: see _key).
    # For text, SQLite's CAST reads "40 apples" and "abc" as 40 and 0, but its comparison
    # with a NUMERIC operand turns text into a number only when the whole text is one (a
    # decimal literal, white space around allowed): so a value equal to its own CAST is a
    # number, in one test where four GLOBs and a trim of the value took twice as long.
    # The GLOB keeps out what that also reads and PostgreSQL's pattern does not: "+5", "1e3".
    path = f'$."{key}"'
    raw = func.json_extract(Subscriber.attributes, path, type_=String())
    stored = func.typeof(raw)
    number = cast(raw, Numeric())
    text_number = and_(
        stored == "text",
        not_(raw.op("GLOB", is_comparison=True)(_SQLITE_NOT_NUMBER)),
        func.length(raw) <= MAX_NUMBER_TEXT,
        raw == number,
    )
    json_integer = and_(
        stored == "integer", func.json_type(Subscriber.attributes, path) == "integer"
    )
    lite = case(
        (text_number, number), (stored == "real", number), (json_integer, number), else_=None
    )
    return per_dialect(pg, lite)


def _as_date(column: Any) -> Any:
    text = cast(column, String())
    pg = case((text.regexp_match(_PG_DATE), func.substr(text, 1, 10)), else_=None)
    lite = case((text.op("GLOB")(_SQLITE_DATE), func.substr(text, 1, 10)), else_=None)
    return per_dialect(pg, lite)


def contains_text(column: Any, text: str) -> ColumnElement[bool]:
    """``text`` anywhere in ``column``, the case of letters aside. PostgreSQL: ``ILIKE``,
    which folds every letter and which a trigram index answers. SQLite: ``LIKE``, which
    folds the ASCII letters (as SQLite's own ``lower`` does: lowering both sides first
    did the same work twice, at twice the cost of a scan)."""
    escaped = text.replace("/", "//").replace("%", "/%").replace("_", "/_")
    pattern = f"%{escaped}%"
    return per_dialect(  # type: ignore[no-any-return]
        column.ilike(pattern, escape="/"), column.like(pattern, escape="/")
    )


def per_dialect(pg: Any, lite: Any) -> Any:
    """One SQL expression on PostgreSQL, another elsewhere (SQLite)."""
    return _PerDialect(pg, lite)


class _PerDialect(ColumnElement[Any]):
    """One expression on PostgreSQL, another elsewhere (SQLite): the guards differ."""

    inherit_cache = True
    _traverse_internals: list[tuple[str, Any]] = [  # noqa: RUF012 (as SQLAlchemy declares it)
        ("pg", InternalTraversal.dp_clauseelement),
        ("lite", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, pg: Any, lite: Any) -> None:
        self.pg = pg
        self.lite = lite
        self.type = lite.type


@compiles(_PerDialect)
def _compile_lite(element: _PerDialect, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.lite, **kw)  # type: ignore[no-any-return]


@compiles(_PerDialect, "postgresql")
def _compile_pg(element: _PerDialect, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.pg, **kw)  # type: ignore[no-any-return]


def _engagement(where: str, field: str, op: str, value: Any) -> ColumnElement[bool]:
    if op not in ("exists", "within_last_days"):
        raise SegmentRuleError(where, f"{field} takes op exists or within_last_days, not {op!r}")
    if field == "bounced":
        happened: Any = Delivery.bounce_class.is_not(None)
        stamp: Any = Delivery.queued_at
    else:
        stamp = ENGAGEMENT[field]
        happened = stamp.is_not(None)
    if op == "within_last_days":
        since = datetime.now(UTC) - timedelta(days=_days(where, value))
        happened = and_(happened, stamp >= since)
    return Subscriber.id.in_(select(Delivery.subscriber_id).where(happened))


def _received(where: str, op: str, value: Any) -> ColumnElement[bool]:
    if op not in COUNT_OPS:
        raise SegmentRuleError(where, f"editions_received takes op {sorted(COUNT_OPS)}")
    # A function-level import: the ledger compiles segments, so it imports this module.
    from mailer.dispatch.ledger import sent_by_batch

    def count(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_NUMBER:
            raise SegmentRuleError(
                where, f"value must be a whole number of editions, 0 to {MAX_NUMBER:,}"
            )
        return v

    def at_least(n: int) -> ColumnElement[bool]:
        if n <= 0:
            return true()
        sent = or_(Delivery.status == DeliveryStatus.SENT, sent_by_batch())
        return Subscriber.id.in_(
            select(Delivery.subscriber_id)
            .where(sent)
            .group_by(Delivery.subscriber_id)
            .having(func.count() >= n)
        )

    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise SegmentRuleError(where, "between takes a list of two values [low, high]")
        low, high = count(value[0]), count(value[1])
        return and_(at_least(low), not_(at_least(high + 1)))
    n = count(value)
    if op == "gte":
        return at_least(n)
    if op == "gt":
        return at_least(n + 1)
    if op == "lt":
        return not_(at_least(n)) if n > 0 else false()
    if op == "lte":
        return not_(at_least(n + 1))
    return and_(at_least(n), not_(at_least(n + 1)))
