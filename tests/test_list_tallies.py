"""The lists' kept membership counts (subscribers.tallies): every way a membership
changes is counted by the database's triggers, folding keeps the sums, a deleted list's
id starts from nothing, and an upgrade counts what was already there; on both databases."""

from __future__ import annotations

import threading

from sqlalchemy import func, select, text

from mailer.app import lists, subscribers
from mailer.app.actors import Actor
from mailer.db import migrate
from mailer.db.session import transaction
from mailer.runtime import Runtime
from subscribers import tallies
from subscribers.models import ListTally, Subscription
from tests import factories

ADMIN = Actor.cli()


def counted(runtime: Runtime) -> dict[int, dict[str, int]]:
    """The memberships by list and status, counted from the rows."""
    found: dict[int, dict[str, int]] = {}
    with runtime.sessions() as session:
        for list_id, status, number in session.execute(
            select(Subscription.list_id, Subscription.status, func.count()).group_by(
                Subscription.list_id, Subscription.status
            )
        ):
            found.setdefault(list_id, {"active": 0, "pending": 0, "unsubscribed": 0})
            found[list_id][status] = number
    return found


def kept(runtime: Runtime) -> dict[int, dict[str, int]]:
    with runtime.sessions() as session:
        return {k: v for k, v in tallies.counts(session).items() if any(v.values())}


def tally_rows(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(ListTally)) or 0


def fold(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        tallies.fold(session.connection())


def test_every_change_is_counted_and_folding_keeps_the_sums(runtime: Runtime) -> None:
    factories.newsletter(runtime, lists=("morning",))
    factories.subscribers(runtime, 30)  # an import: set-based inserts
    lists.create_list(runtime, ADMIN, "evening", opt_in="single")
    ann = subscribers.add_subscriber(runtime, ADMIN, "ann@example.com", lists=["evening"])
    subscribers.set_memberships(
        runtime, ADMIN, "reader00001@example.com", {"morning": "unsubscribed", "evening": "active"}
    )
    subscribers.set_memberships(runtime, ADMIN, ann.id, {"evening": "unsubscribed"})
    # A subscriber's delete cascades to their memberships.
    subscribers.remove_subscriber(runtime, ADMIN, "reader00002@example.com")
    subscribers.erase_subscriber(runtime, ADMIN, "reader00003@example.com")

    morning = lists.get_list(runtime, ADMIN, "morning")
    evening = lists.get_list(runtime, ADMIN, "evening")
    assert (morning.active, morning.unsubscribed) == (27, 1)
    assert (evening.active, evening.unsubscribed) == (1, 1)
    assert kept(runtime) == counted(runtime)

    before = tally_rows(runtime)
    fold(runtime)
    assert tally_rows(runtime) == 2 < before
    assert kept(runtime) == counted(runtime)
    fold(runtime)  # nothing new: the same sums, still one row per list
    assert tally_rows(runtime) == 2
    assert [(i.name, i.active) for i in lists.list_lists(runtime, ADMIN)] == [
        ("evening", 1),
        ("morning", 27),
    ]


def test_a_deleted_lists_id_starts_from_nothing(runtime: Runtime) -> None:
    factories.subscribers(runtime, 5, list_name="spare")
    spare = lists.get_list(runtime, ADMIN, "spare")
    assert spare.active == 5
    lists.delete_list(runtime, ADMIN, "spare")
    with runtime.sessions() as session:
        assert tallies.counts(session, spare.id) == {}
    # On SQLite a new list may take the freed id; it must not inherit the old counts.
    again = lists.create_list(runtime, ADMIN, "fresh")
    assert (again.active, again.pending, again.unsubscribed) == (0, 0, 0)
    assert kept(runtime) == counted(runtime)


def test_a_fold_drops_what_a_fold_beside_a_deletion_left_for_a_list_that_is_gone(
    runtime: Runtime,
) -> None:
    factories.subscribers(runtime, 3, list_name="kept")
    with transaction(runtime.sessions) as session:
        gone = int(session.scalar(select(func.max(ListTally.list_id))) or 0) + 1000
        # As a fold leaves it when the list's deletion commits between its two halves.
        session.add(ListTally(list_id=gone, active=7, pending=0, unsubscribed=0))
    fold(runtime)
    with runtime.sessions() as session:
        assert tallies.counts(session, gone) == {}
    assert kept(runtime) == counted(runtime)
    assert lists.get_list(runtime, ADMIN, "kept").active == 3


def test_folding_beside_writers_loses_nothing(runtime: Runtime) -> None:
    factories.newsletter(runtime, lists=("morning",))
    lists.set_list(runtime, ADMIN, "morning", opt_in="single")
    stop = threading.Event()
    errors: list[BaseException] = []

    def keep_folding() -> None:
        while not stop.is_set():
            try:
                fold(runtime)
            except BaseException as exc:  # the test reports it below
                errors.append(exc)
                return

    folder = threading.Thread(target=keep_folding)
    folder.start()
    try:
        for i in range(40):
            subscribers.add_subscriber(runtime, ADMIN, f"r{i}@example.com", lists=["morning"])
            if i % 3 == 0:
                subscribers.set_memberships(
                    runtime, ADMIN, f"r{i}@example.com", {"morning": "unsubscribed"}
                )
    finally:
        stop.set()
        folder.join()
    assert errors == []
    info = lists.get_list(runtime, ADMIN, "morning")
    assert (info.active, info.unsubscribed) == (26, 14)
    assert kept(runtime) == counted(runtime)


def test_the_upgrade_counts_what_is_already_there(runtime: Runtime) -> None:
    factories.subscribers(runtime, 6)
    subscribers.set_memberships(
        runtime, ADMIN, "reader00001@example.com", {"morning": "unsubscribed"}
    )
    migrate.downgrade(runtime.engine, "0014")
    try:
        with runtime.engine.begin() as connection:
            # Written while nothing kept count.
            connection.execute(text("UPDATE subscriptions SET status = 'pending'"))
    finally:
        migrate.upgrade(runtime.engine)
    info = lists.get_list(runtime, ADMIN, "morning")
    assert (info.active, info.pending, info.unsubscribed) == (0, 6, 0)
    assert kept(runtime) == counted(runtime)
