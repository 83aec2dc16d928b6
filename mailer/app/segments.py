"""Saved segments for operators: named rules over subscribers, attached to newsletters.

A rule is ``subscribers.segments``' JSON language; it is compiled (and so checked) on
every save, and a bad rule is refused with the condition at fault named. A newsletter
with a segment sends to those of its lists' subscribers whom the rule matches.
``count_segment`` counts a rule that is not saved yet, for the editor's live count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.accounts.models import Role
from mailer.app import audit
from mailer.app.actors import Actor
from mailer.app.errors import Conflict, Invalid, NotFound
from mailer.db.models import Newsletter
from mailer.db.session import transaction
from mailer.runtime import Runtime
from subscribers.models import Segment, Subscriber
from subscribers.segments import SegmentRuleError, compile_rule

__all__ = [
    "SegmentInfo",
    "attach_segment",
    "count_segment",
    "create_segment",
    "delete_segment",
    "get_segment",
    "list_segments",
    "newsletter_segments",
    "update_segment",
]

_MAX_NAME = 100  # segments.name


@dataclass(frozen=True)
class SegmentInfo:
    id: int
    name: str
    rule: dict[str, Any]
    created_at: datetime
    newsletters: tuple[str, ...]  # slugs of the newsletters it is attached to

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "rule": self.rule,
            "created_at": self.created_at.isoformat(),
            "newsletters": list(self.newsletters),
        }


def _name(value: str) -> str:
    name = value.strip()
    if not name or len(name) > _MAX_NAME or not name.isprintable():
        raise Invalid(
            f"segment {value!r}: give a name of 1 to {_MAX_NAME} printable characters",
            field="name",
        )
    return name


def checked_rule(rule: Any) -> dict[str, Any]:
    """The rule if it compiles; Invalid naming the condition at fault otherwise."""
    if not isinstance(rule, Mapping):
        raise Invalid("segment rule (top level): must be an object", field="rule")
    try:
        compile_rule(rule)
    except SegmentRuleError as exc:
        raise Invalid(str(exc), field=exc.where) from exc
    return dict(rule)


def _load(session: Session, name: str, *, lock: bool = False) -> Segment:
    query = select(Segment).where(Segment.name == name.strip())
    found = session.scalar(query.with_for_update() if lock else query)
    if found is None:
        raise NotFound(f"no segment {name!r}")
    return found


def _info(session: Session, item: Segment) -> SegmentInfo:
    users = session.scalars(
        select(Newsletter.slug).where(Newsletter.segment_id == item.id).order_by(Newsletter.slug)
    )
    return SegmentInfo(item.id, item.name, dict(item.rule or {}), item.created_at, tuple(users))


def list_segments(runtime: Runtime, actor: Actor) -> list[SegmentInfo]:
    actor.require(Role.ADMIN)
    with runtime.sessions() as session:
        return [_info(session, s) for s in session.scalars(select(Segment).order_by(Segment.name))]


def get_segment(runtime: Runtime, actor: Actor, name: str) -> SegmentInfo:
    actor.require(Role.ADMIN)
    with runtime.sessions() as session:
        return _info(session, _load(session, name))


def count_segment(runtime: Runtime, actor: Actor, rule: Any) -> int:
    """How many subscribers the rule matches now (saved or not)."""
    actor.require(Role.ADMIN)
    condition = compile_rule(checked_rule(rule))
    with runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(Subscriber).where(condition)) or 0


def create_segment(runtime: Runtime, actor: Actor, name: str, rule: Any) -> SegmentInfo:
    actor.require(Role.ADMIN)
    clean = _name(name)
    checked = checked_rule(rule)
    with transaction(runtime.sessions) as session:
        if session.scalar(select(Segment.id).where(Segment.name == clean)) is not None:
            raise Conflict(f"there is already a segment {clean!r}")
        item = Segment(name=clean, rule=checked)
        session.add(item)
        session.flush()
        audit.record(
            session,
            actor,
            "segments.create",
            "segment",
            item.id,
            after={"name": clean, "rule": checked},
        )
        return _info(session, item)


def update_segment(
    runtime: Runtime,
    actor: Actor,
    name: str,
    *,
    new_name: str | None = None,
    rule: Any = None,
) -> SegmentInfo:
    """Rename it and/or replace its rule (``None`` leaves each)."""
    actor.require(Role.ADMIN)
    clean = _name(new_name) if new_name is not None else None
    checked = checked_rule(rule) if rule is not None else None
    with transaction(runtime.sessions) as session:
        item = _load(session, name, lock=True)
        before = {"name": item.name, "rule": dict(item.rule or {})}
        if clean is not None and clean != item.name:
            if session.scalar(select(Segment.id).where(Segment.name == clean)) is not None:
                raise Conflict(f"there is already a segment {clean!r}")
            item.name = clean
        if checked is not None:
            item.rule = checked
        session.flush()
        after = {"name": item.name, "rule": dict(item.rule or {})}
        if after != before:
            audit.record(
                session, actor, "segments.update", "segment", item.id, before=before, after=after
            )
        return _info(session, item)


def delete_segment(runtime: Runtime, actor: Actor, name: str) -> str:
    """Delete it; refused while a newsletter uses it (it would start sending to all of
    its lists at once)."""
    actor.require(Role.ADMIN)
    with transaction(runtime.sessions) as session:
        item = _load(session, name, lock=True)
        info = _info(session, item)
        if info.newsletters:
            raise Conflict(
                f"segment {item.name!r} is attached to {', '.join(info.newsletters)}: "
                "detach it first"
            )
        before = {"name": item.name, "rule": info.rule}
        segment_id = item.id
        session.delete(item)
        audit.record(session, actor, "segments.delete", "segment", segment_id, before=before)
        return info.name


def attach_segment(
    runtime: Runtime, actor: Actor, newsletter_slug: str, segment_name: str | None
) -> str | None:
    """Attach the segment to the newsletter (``None`` detaches: it sends to all of its
    lists again). Returns the segment's name or None."""
    actor.require(Role.ADMIN)
    with transaction(runtime.sessions) as session:
        newsletter = session.scalar(
            select(Newsletter).where(Newsletter.slug == newsletter_slug).with_for_update()
        )
        if newsletter is None:
            raise NotFound(f"no newsletter {newsletter_slug!r}")
        segment = _load(session, segment_name) if segment_name else None
        before_id = newsletter.segment_id
        newsletter.segment_id = segment.id if segment is not None else None
        if before_id != newsletter.segment_id:
            audit.record(
                session,
                actor,
                "newsletters.segment",
                "newsletter",
                newsletter.slug,
                before={"segment_id": before_id},
                after={"segment_id": newsletter.segment_id},
                note=segment.name if segment is not None else "detached",
            )
        return segment.name if segment is not None else None


def newsletter_segments(runtime: Runtime, actor: Actor) -> list[tuple[str, str, str | None]]:
    """Each newsletter's slug, name and attached segment (or None), for the attach form."""
    actor.require(Role.ADMIN)
    with runtime.sessions() as session:
        return [
            (slug, name, segment)
            for slug, name, segment in session.execute(
                select(Newsletter.slug, Newsletter.name, Segment.name)
                .outerjoin(Segment, Segment.id == Newsletter.segment_id)
                .order_by(Newsletter.slug)
            )
        ]
