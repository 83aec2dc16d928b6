"""mailer.db.group_commit: writes that arrive together commit together (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, Table, insert, select

from mailer.db.group_commit import Closed, GroupCommit
from mailer.runtime import Runtime

PROBE = Table("group_commit_probe", MetaData(), Column("value", Integer, primary_key=True))


class Refused(ValueError):
    pass


@pytest.fixture
def probe(runtime: Runtime) -> Iterator[Runtime]:
    PROBE.create(runtime.engine)
    yield runtime
    PROBE.drop(runtime.engine)


def stored(runtime: Runtime) -> list[int]:
    with runtime.engine.connect() as connection:
        return sorted(connection.scalars(select(PROBE.c.value)))


class Recorder:
    """An ``apply`` that stores each value, answers its double, refuses 13 without failing
    the group, and fails the whole group when it holds a negative value."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.first_group_in = threading.Event()
        self.go_on = threading.Event()
        self.go_on.set()

    def __call__(self, connection: Connection, values: Sequence[int]) -> list[int | Exception]:
        self.groups.append(list(values))
        self.first_group_in.set()
        assert self.go_on.wait(10)
        connection.execute(insert(PROBE), [{"value": v} for v in values if v != 13])
        if any(v < 0 for v in values):
            raise RuntimeError("a fault of the whole transaction")
        return [Refused("no thirteen") if v == 13 else 2 * v for v in values]


Held = tuple[Recorder, GroupCommit[int, int], Future[int]]


@contextmanager
def writing_the_first(probe: Runtime) -> Iterator[Held]:
    """A writer holding the group [1] with its transaction open, until ``go_on`` is set:
    what is submitted meanwhile waits for the next group."""
    recorder = Recorder()
    recorder.go_on.clear()
    writer = GroupCommit(probe.engine, recorder, name="probe")
    try:
        first = writer.submit(1)
        assert recorder.first_group_in.wait(10)
        yield recorder, writer, first
    finally:
        recorder.go_on.set()
        writer.close()


def test_items_waiting_together_are_one_group_and_each_gets_its_own_answer(
    probe: Runtime,
) -> None:
    with writing_the_first(probe) as (recorder, writer, first):
        rest = [writer.submit(v) for v in (2, 3, 13, 4)]
        recorder.go_on.set()
        assert first.result(10) == 2
        assert [f.result(10) for f in rest if f is not rest[2]] == [4, 6, 8]
        with pytest.raises(Refused, match="no thirteen"):
            rest[2].result(10)
    assert recorder.groups == [[1], [2, 3, 13, 4]]
    assert stored(probe) == [1, 2, 3, 4]


def test_a_group_that_fails_is_written_again_one_by_one_so_the_fault_stays_with_its_item(
    probe: Runtime,
) -> None:
    with writing_the_first(probe) as (recorder, writer, first):
        rest = [writer.submit(v) for v in (5, -1, 6)]
        recorder.go_on.set()
        assert first.result(10) == 2
        assert rest[0].result(10) == 10
        with pytest.raises(RuntimeError, match="whole transaction"):
            rest[1].result(10)
        assert rest[2].result(10) == 12
    # The failed group [5, -1, 6] rolled back whole; then each alone.
    assert recorder.groups == [[1], [5, -1, 6], [5], [-1], [6]]
    assert stored(probe) == [1, 5, 6]


def test_close_writes_what_is_queued_and_then_refuses_more(probe: Runtime) -> None:
    recorder = Recorder()
    recorder.go_on.clear()
    writer = GroupCommit(probe.engine, recorder, name="probe")
    queued = [writer.submit(v) for v in (7, 8, 9)]
    assert recorder.first_group_in.wait(10)
    closing = threading.Thread(target=writer.close)
    closing.start()
    recorder.go_on.set()
    closing.join(10)
    assert not closing.is_alive()
    assert [f.result(0) for f in queued] == [14, 16, 18]
    assert stored(probe) == [7, 8, 9]
    with pytest.raises(Closed):
        writer.submit(10)


def test_a_runtime_stops_its_writers_when_closed(probe: Runtime) -> None:
    recorder = Recorder()
    writer = probe.group_commit("probe", recorder)
    assert probe.group_commit("probe", recorder) is writer  # one per kind of write
    assert writer.submit(3).result(10) == 6
    probe.close()
    with pytest.raises(Closed):
        writer.submit(4)


def test_an_item_is_written_even_if_its_caller_gives_up(probe: Runtime) -> None:
    # A one-click request cancelled as its server stops: the reader asked, so it is written.
    with writing_the_first(probe) as (recorder, writer, first):
        queued = writer.submit(2)
        assert not queued.cancel()  # running from the start: nobody can take it back
        recorder.go_on.set()
        assert first.result(10) == 2 and queued.result(10) == 4
    assert stored(probe) == [1, 2]
