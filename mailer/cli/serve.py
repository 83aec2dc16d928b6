"""``mailer serve``: the web app, the scheduler and one dispatch worker, in one process;
or, with ``--workers N``, N web processes on one address beside them."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

import typer
import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from mailer.cli.common import fail, load_settings
from mailer.config import ConfigError
from mailer.db.migrate import is_current
from mailer.dispatch import worker as dispatch_worker
from mailer.dispatch.dispatcher import DispatchSettings
from mailer.runtime import Runtime
from mailer.schedule.service import SchedulerService
from mailer.transports import transport_for
from mailer.transports.base import Transport
from mailer.web.app import create_app

log = logging.getLogger(__name__)

MIGRATION_POLL_SECONDS = 5.0


class _Server(uvicorn.Server):
    """uvicorn, whose SIGTERM/SIGINT handling also stops the scheduler and the worker."""

    def __init__(self, config: uvicorn.Config, stop: threading.Event) -> None:
        super().__init__(config)
        self.stop = stop

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.stop.set()
        super().handle_exit(sig, frame)


class _Background:
    """The scheduler and the worker: started once the schema is current, stopped on exit."""

    def __init__(
        self,
        runtime: Runtime,
        app: FastAPI,
        stop: threading.Event,
        *,
        scheduler: bool,
        transport: Transport | None,
        dispatch: DispatchSettings | None,
        poll_interval: float,
    ) -> None:
        self.runtime, self.app, self.stop = runtime, app, stop
        self.want_scheduler, self.transport, self.dispatch = scheduler, transport, dispatch
        self.poll_interval = poll_interval
        self.service: SchedulerService | None = None
        self.worker: threading.Thread | None = None
        self.thread = threading.Thread(target=self._start, name="serve-start", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _start(self) -> None:
        warned = False
        while not self.stop.is_set():
            try:
                if is_current(self.runtime.engine):
                    break
            except Exception as exc:
                log.warning("serve.database_unavailable", extra={"error": type(exc).__name__})
            if not warned:
                log.warning("serve.waiting_for_migrations", extra={"hint": "mailer db upgrade"})
                warned = True
            self.stop.wait(MIGRATION_POLL_SECONDS)
        if self.stop.is_set():
            return
        if self.want_scheduler:
            service = SchedulerService(self.runtime)
            try:
                service.start()
            except Exception:
                log.exception("serve.scheduler_failed")
            else:
                self.service = service
                self.app.state.scheduler = service
        if self.transport is not None:
            self.worker = threading.Thread(target=self._work, name="dispatch-worker", daemon=True)
            self.worker.start()

    def _work(self) -> None:
        assert self.transport is not None and self.dispatch is not None
        while not self.stop.is_set():
            try:
                dispatch_worker.run(
                    self.runtime.sessions,
                    self.transport,
                    self.dispatch,
                    stop=self.stop,
                    poll_interval=self.poll_interval,
                )
            except Exception:
                # The database went away, say: the ledger holds what was claimed.
                log.exception("serve.worker_failed")
                self.stop.wait(MIGRATION_POLL_SECONDS)

    def shutdown(self, timeout: float) -> bool:
        """Stop claiming, let the batch in hand finish, stop the scheduler; within
        ``timeout`` seconds. Returns whether everything stopped in time."""
        self.stop.set()
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        self.thread.join(left())
        clean = not self.thread.is_alive()
        if self.service is not None:
            clean = self.service.stop(left()) and clean
        if self.worker is not None:
            self.worker.join(left())
            clean = clean and not self.worker.is_alive()
        if clean and self.transport is not None:
            self.transport.close()
        return clean


def _uvicorn(app: Any, host: str, port: int, **extra: Any) -> uvicorn.Config:
    # Our own JSON logs cover requests; uvicorn's access log would print tokens in URLs.
    # No Server header: what runs here is nobody else's business.
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=5,
        **extra,
    )


def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    scheduler: bool = typer.Option(
        True, "--scheduler/--no-scheduler", help="Run the scheduler in this process."
    ),
    worker: bool = typer.Option(
        True, "--worker/--no-worker", help="Run a dispatch worker in this process."
    ),
    poll_interval: float = typer.Option(
        2.0, min=0.1, help="Seconds between the worker's looks for work."
    ),
    workers: int = typer.Option(
        1,
        min=1,
        max=64,
        help="Web processes sharing the address (the scheduler and the worker stay in "
        "this one). State they share lives in the database.",
    ),
) -> None:
    """Run the web app, the scheduler and a dispatch worker until SIGTERM/SIGINT.

    On a signal: stop claiming, finish the batch in hand, hand the scheduler's
    lease over, exit 0 (within MAILER_SHUTDOWN_TIMEOUT_SECONDS).
    """
    settings = load_settings(service=True)
    runtime = Runtime(settings)
    transport: Transport | None = None
    dispatch: DispatchSettings | None = None
    try:
        # Refuses to start without a signing key or a usable transport.
        app = create_app(runtime=runtime)
        if worker:
            dispatch = runtime.dispatch_settings()
            transport = transport_for(settings)
    except ConfigError as exc:
        runtime.close()
        fail(str(exc))
    stop = threading.Event()
    supervisor: Multiprocess | None = None
    if workers > 1:
        # Each web process builds its own app from the same environment; the one built
        # above only checked the configuration (and carries /status's scheduler here).
        if settings.log_level is None:
            os.environ["MAILER_LOG_LEVEL"] = logging.getLevelName(logging.getLogger().level)
        config = _uvicorn(
            "mailer.web.asgi:app_from_environment", host, port, factory=True, workers=workers
        )
        # Bound here, once: the processes accept on the same socket (it installs its own
        # SIGTERM/SIGINT handling, which stops them all).
        supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    config = _uvicorn(app, host, port)
    server = _Server(config, stop)

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        # Before uvicorn runs and after it returns (it re-raises the signal it caught).
        stop.set()
        server.should_exit = True

    if supervisor is None:
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
    background = _Background(
        runtime,
        app,
        stop,
        scheduler=scheduler,
        transport=transport,
        dispatch=dispatch,
        poll_interval=poll_interval,
    )
    background.start()
    log.info(
        "serve.started",
        extra={
            "host": host,
            "port": port,
            "scheduler": scheduler,
            "worker": worker,
            "web_processes": workers,
        },
    )
    try:
        if supervisor is not None:
            supervisor.run()
        elif not stop.is_set():
            server.run()
    finally:
        clean = background.shutdown(settings.shutdown_timeout_seconds)
    if not clean:
        # A batch still with its transport: its rows become `unknown` once this process is
        # gone (liveness), never resent blindly. Leave without waiting on it.
        log.warning(
            "serve.stop_timeout", extra={"timeout_seconds": settings.shutdown_timeout_seconds}
        )
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    runtime.close()
    log.info("serve.stopped")
