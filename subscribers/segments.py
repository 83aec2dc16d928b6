"""Segment rules: a small JSON language over subscribers, compiled to SQL.

A rule is ``{"match": "all" | "any", "conditions": [...]}``; each condition is
``{"field": F, "op": OP, "value": V}`` where F is ``email``, ``name``,
``timezone``, ``attributes.<key>`` or ``list`` (list names), and OP one of
``eq``, ``ne``, ``in``, ``not_in``, ``contains``, ``ends_with``, ``exists``,
``not_exists``. An empty rule matches everyone. Bad rules raise
SegmentRuleError naming the condition and what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, not_, or_, select, true

from subscribers.models import MailingList, Subscriber, Subscription, SubscriptionStatus

TEXT_FIELDS = {"email": Subscriber.email, "name": Subscriber.name, "timezone": Subscriber.timezone}
OPS = {"eq", "ne", "in", "not_in", "contains", "ends_with", "exists", "not_exists"}
LIST_OPS = {"eq", "ne", "in", "not_in"}


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
    return and_(*compiled) if match == "all" else or_(*compiled)


def _condition(where: str, condition: Any) -> ColumnElement[bool]:
    if not isinstance(condition, Mapping):
        raise SegmentRuleError(where, "must be an object with field, op and value")
    field, op, value = condition.get("field"), condition.get("op"), condition.get("value")
    if op not in OPS:
        raise SegmentRuleError(where, f"op must be one of {sorted(OPS)}, not {op!r}")
    if field == "list":
        return _list_condition(where, op, value)
    if isinstance(field, str) and field.startswith("attributes.") and len(field) > 11:
        column: Any = Subscriber.attributes[field.removeprefix("attributes.")].as_string()
    elif field in TEXT_FIELDS:
        column = TEXT_FIELDS[field]
    else:
        raise SegmentRuleError(
            where, f"field must be email, name, timezone, list or attributes.<key>, not {field!r}"
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
        return column.icontains(text, autoescape=True)  # type: ignore[no-any-return]
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


def _string(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise SegmentRuleError(where, f"value must be a string, not {type(value).__name__}")
    return value


def _string_list(where: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SegmentRuleError(where, "value must be a list of strings")
    return list(value)
