"""``mailer scheduler``: the scheduler alone, for deployments that split roles."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import typer

from mailer.cli.common import console, open_runtime
from mailer.schedule.service import SchedulerService


def scheduler(
    tick_seconds: float | None = typer.Option(
        None, "--tick-seconds", min=0.2, help="Seconds between looks at the schedules."
    ),
) -> None:
    """Run the scheduler (daily slots and service jobs) until stopped (SIGTERM/SIGINT).

    Any number may run against one database: one leads, the others stand by.
    """
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with open_runtime(service=True) as runtime:
        service = SchedulerService(runtime, tick_seconds=tick_seconds)
        service.start()
        while not stop.wait(0.5):
            pass
        service.stop(runtime.settings.shutdown_timeout_seconds)
    console.print("scheduler stopped")
