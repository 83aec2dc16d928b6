"""``mailer worker``: one more dispatch worker."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import typer

from mailer.cli.common import console, open_runtime
from mailer.dispatch import worker as dispatch_worker
from mailer.transports import transport_for


def worker(
    drain: bool = typer.Option(False, "--drain", help="Exit once nothing is left to send."),
    poll_interval: float = typer.Option(2.0, min=0.1, help="Seconds between looks for work."),
) -> None:
    """Send sending editions alongside any other workers, until stopped (SIGTERM/SIGINT)."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        # Finish (or release) the batch in hand, claim nothing more, exit 0.
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with open_runtime(service=True) as runtime:
        transport = transport_for(runtime.settings)
        try:
            touched = dispatch_worker.run(
                runtime.sessions,
                transport,
                runtime.dispatch_settings(),
                stop=stop,
                drain=drain,
                poll_interval=poll_interval,
            )
        finally:
            transport.close()
    console.print(f"worker stopped after working on {touched} edition runs")
