"""A dispatch worker: sends whatever editions are sending, alongside any number of others.

Workers share an edition through the ledger: each claim writes one batch row under
the edition's claim lock (``FOR NO KEY UPDATE`` on PostgreSQL), so they can run on
any number of machines. A worker holds its
liveness for its whole life, so if it dies its claim is taken over at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, sessionmaker

from mailer.db.models import Delivery, DeliveryStatus, Edition, EditionStatus
from mailer.dispatch.dispatcher import DispatchSettings, send_edition, worker_name
from mailer.dispatch.liveness import Liveness
from mailer.transports.base import Transport

log = logging.getLogger(__name__)


def sending_editions(factory: sessionmaker[Session]) -> list[int]:
    with factory() as session:
        return list(
            session.scalars(
                select(Edition.id)
                .where(Edition.status == EditionStatus.SENDING)
                .order_by(Edition.id)
            )
        )


def work_left(factory: sessionmaker[Session]) -> bool:
    """Some sending edition still has queued rows (rows in flight elsewhere among them)."""
    with factory() as session:
        return bool(
            session.scalar(
                select(
                    exists().where(
                        Delivery.edition_id == Edition.id,
                        Edition.status == EditionStatus.SENDING,
                        # In-flight rows are queued too, until their batch is recorded,
                        # and so are the rows of batches sent whole: an edition whose
                        # rows are all sent counts until a send marks it sent.
                        Delivery.status == DeliveryStatus.QUEUED,
                    )
                )
            )
        )


def run(
    factory: sessionmaker[Session],
    transport: Transport,
    settings: DispatchSettings,
    *,
    stop: threading.Event,
    drain: bool = False,
    poll_interval: float = 2.0,
    name: str | None = None,
    on_batch: Callable[[dict[str, int]], None] | None = None,
) -> int:
    """Work until ``stop`` is set (or, with ``drain``, until nothing is left). Returns editions
    touched."""
    name = name or worker_name()
    touched = 0
    engine = factory.kw["bind"]
    with Liveness(engine, name):
        log.info("worker.started", extra={"worker": name})
        while not stop.is_set():
            editions = sending_editions(factory)
            for edition_id in editions:
                if stop.is_set():
                    break
                try:
                    send_edition(
                        factory,
                        edition_id,
                        transport,
                        settings,
                        worker=name,
                        should_stop=stop.is_set,
                        on_progress=on_batch,
                    )
                except Exception:
                    # One edition's trouble (a database hiccup, a bug) must not stop
                    # every worker that polls it; what it claimed is in the ledger.
                    log.exception("worker.edition_failed", extra={"edition_id": edition_id})
                    stop.wait(poll_interval)
                touched += 1
            if drain and not work_left(factory):
                break
            stop.wait(poll_interval)
        log.info("worker.stopped", extra={"worker": name})
    return touched
