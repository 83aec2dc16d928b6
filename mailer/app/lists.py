"""Mailing lists for operators: create, rename, describe, set, delete, list with counts.

A list's opt-in mode (``double``: a confirmation email first; ``single``: at once) and
visibility (public lists are offered on the subscribe form and the preference page) are
what the reader pages read. A list a newsletter sends to cannot be deleted: the
newsletter would silently lose its audience.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from mailer.accounts.models import Role
from mailer.app import audit
from mailer.app.actors import Actor
from mailer.app.errors import Conflict, Invalid, NotFound
from mailer.db.models import Newsletter, newsletter_lists
from mailer.db.session import transaction
from mailer.runtime import Runtime
from subscribers import tallies
from subscribers.models import MailingList, OptIn, SubscriptionStatus

__all__ = [
    "ListInfo",
    "create_list",
    "delete_list",
    "describe_list",
    "list_lists",
    "list_names",
    "rename_list",
    "set_list",
]

_MAX_NAME = 100  # lists.name
_MAX_DESCRIPTION = 2000


@dataclass(frozen=True)
class ListInfo:
    id: int
    name: str
    description: str
    opt_in: str
    public: bool
    created_at: datetime
    active: int
    pending: int
    unsubscribed: int
    newsletters: tuple[str, ...]  # slugs of the newsletters that send to it

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "opt_in": self.opt_in,
            "public": self.public,
            "created_at": self.created_at.isoformat(),
            "active": self.active,
            "pending": self.pending,
            "unsubscribed": self.unsubscribed,
            "newsletters": list(self.newsletters),
        }


def _name(value: str) -> str:
    name = value.strip()
    if not name or len(name) > _MAX_NAME or not name.isprintable():
        raise Invalid(
            f"list {value!r}: give a name of 1 to {_MAX_NAME} printable characters", field="name"
        )
    return name


def _description(value: str) -> str:
    text = value.strip()
    if len(text) > _MAX_DESCRIPTION:
        raise Invalid(
            f"description is {len(text)} characters; at most {_MAX_DESCRIPTION}",
            field="description",
        )
    return text


def _opt_in(value: str) -> str:
    if value not in tuple(OptIn):
        raise Invalid(f"opt-in {value!r}: double or single", field="opt_in")
    return value


def _load(session: Session, name: str, *, lock: bool = False) -> MailingList:
    query = select(MailingList).where(MailingList.name == name.strip())
    found = session.scalar(query.with_for_update() if lock else query)
    if found is None:
        raise NotFound(f"no list {name!r}")
    return found


def _snapshot(item: MailingList) -> dict[str, Any]:
    return {
        "name": item.name,
        "description": item.description,
        "opt_in": item.opt_in,
        "public": item.public,
    }


def _users(session: Session, list_id: int | None = None) -> dict[int, tuple[str, ...]]:
    """The slugs of the newsletters that send to each list (or to the one given)."""
    query = (
        select(newsletter_lists.c.list_id, Newsletter.slug)
        .join(Newsletter, newsletter_lists.c.newsletter_id == Newsletter.id)
        .order_by(Newsletter.slug)
    )
    if list_id is not None:
        query = query.where(newsletter_lists.c.list_id == list_id)
    found: dict[int, tuple[str, ...]] = {}
    for list_of, slug in session.execute(query):
        found[list_of] = (*found.get(list_of, ()), slug)
    return found


def _info(session: Session, item: MailingList) -> ListInfo:
    return _described(item, tallies.counts(session, item.id), _users(session, item.id))


def _described(
    item: MailingList, counts: dict[int, dict[str, int]], users: dict[int, tuple[str, ...]]
) -> ListInfo:
    # The counts are kept as memberships change (subscribers.tallies): reading them
    # does not read the list's subscriptions.
    kept = counts.get(item.id, {})
    return ListInfo(
        id=item.id,
        name=item.name,
        description=item.description,
        opt_in=item.opt_in,
        public=item.public,
        created_at=item.created_at,
        active=kept.get(SubscriptionStatus.ACTIVE, 0),
        pending=kept.get(SubscriptionStatus.PENDING, 0),
        unsubscribed=kept.get(SubscriptionStatus.UNSUBSCRIBED, 0),
        newsletters=users.get(item.id, ()),
    )


def list_lists(runtime: Runtime, actor: Actor) -> list[ListInfo]:
    """Every list by name, with its subscribers counted by status."""
    actor.require(Role.ADMIN)
    with runtime.sessions() as session:
        counts, users = tallies.counts(session), _users(session)
        return [
            _described(item, counts, users)
            for item in session.scalars(select(MailingList).order_by(MailingList.name))
        ]


def get_list(runtime: Runtime, actor: Actor, name: str) -> ListInfo:
    actor.require(Role.ADMIN)
    with runtime.sessions() as session:
        return _info(session, _load(session, name))


def create_list(
    runtime: Runtime,
    actor: Actor,
    name: str,
    *,
    description: str = "",
    opt_in: str = OptIn.DOUBLE,
    public: bool = False,
) -> ListInfo:
    actor.require(Role.ADMIN)
    clean = _name(name)
    values = {"description": _description(description), "opt_in": _opt_in(opt_in)}
    with transaction(runtime.sessions) as session:
        if session.scalar(select(MailingList.id).where(MailingList.name == clean)) is not None:
            raise Conflict(f"there is already a list {clean!r}")
        item = MailingList(name=clean, public=public, **values)
        session.add(item)
        session.flush()
        audit.record(session, actor, "lists.create", "list", item.id, after=_snapshot(item))
        return _info(session, item)


def rename_list(runtime: Runtime, actor: Actor, name: str, new_name: str) -> ListInfo:
    actor.require(Role.ADMIN)
    clean = _name(new_name)
    with transaction(runtime.sessions) as session:
        item = _load(session, name, lock=True)
        if clean != item.name:
            taken = session.scalar(select(MailingList.id).where(MailingList.name == clean))
            if taken is not None:
                raise Conflict(f"there is already a list {clean!r}")
            before = _snapshot(item)
            item.name = clean
            session.flush()
            audit.record(
                session,
                actor,
                "lists.rename",
                "list",
                item.id,
                before=before,
                after=_snapshot(item),
            )
        return _info(session, item)


def describe_list(runtime: Runtime, actor: Actor, name: str, description: str) -> ListInfo:
    return set_list(runtime, actor, name, description=description)


def set_list(
    runtime: Runtime,
    actor: Actor,
    name: str,
    *,
    description: str | None = None,
    opt_in: str | None = None,
    public: bool | None = None,
) -> ListInfo:
    """Change what is given (``None`` leaves it)."""
    actor.require(Role.ADMIN)
    values: dict[str, Any] = {}
    if description is not None:
        values["description"] = _description(description)
    if opt_in is not None:
        values["opt_in"] = _opt_in(opt_in)
    if public is not None:
        values["public"] = public
    with transaction(runtime.sessions) as session:
        item = _load(session, name, lock=True)
        before = _snapshot(item)
        for attr, value in values.items():
            setattr(item, attr, value)
        session.flush()
        if _snapshot(item) != before:
            audit.record(
                session, actor, "lists.set", "list", item.id, before=before, after=_snapshot(item)
            )
        return _info(session, item)


def delete_list(runtime: Runtime, actor: Actor, name: str) -> str:
    """Delete the list and its subscriptions (the subscribers stay). Refused while a
    newsletter sends to it. Returns the name."""
    actor.require(Role.ADMIN)
    with transaction(runtime.sessions) as session:
        item = _load(session, name, lock=True)
        users = _users(session, item.id).get(item.id, ())
        if users:
            raise Conflict(f"list {item.name!r} is used by {', '.join(users)}: take it off first")
        before = _snapshot(item) | {"subscriptions": _info(session, item).as_dict()["active"]}
        list_id, list_name = item.id, item.name
        session.expunge(item)
        # Through SQL, so the database's ON DELETE CASCADE takes its subscriptions.
        session.execute(delete(MailingList).where(MailingList.id == list_id))
        tallies.forget(session, list_id)
        audit.record(session, actor, "lists.delete", "list", list_id, before=before)
        return list_name


def list_names(runtime: Runtime, actor: Actor) -> list[str]:
    """Every list's name, for pickers: no counts, so a page that only offers the lists
    does not read a million subscriptions."""
    actor.require(Role.ADMIN)
    with runtime.sessions() as session:
        return list(session.scalars(select(MailingList.name).order_by(MailingList.name)))
