"""Waits a test does not want to sit through, in a form a sender process can take too."""

from __future__ import annotations

import time


def no_wait(_seconds: float) -> None:
    """A ``sleep`` for transports under test: backoffs and rate-limit waits pass at once.

    A module-level function, so that a transport holding it still pickles and moves
    to a sender process.
    """


def sleep_checks(seconds: float) -> None:
    """A ``sleep`` that refuses what ``time.sleep`` refuses (NaN, a negative wait) and
    any wait over an hour, and waits for nothing else: a transport that would crash
    on a wait crashes, one that would hang fails."""
    if seconds > 3600:
        raise ValueError(f"a wait of {seconds} s")
    if not seconds >= 0:  # NaN too
        time.sleep(seconds)  # raises, as it would for real
