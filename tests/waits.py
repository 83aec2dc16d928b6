"""Waits a test does not want to sit through, in a form a sender process can take too."""

from __future__ import annotations


def no_wait(_seconds: float) -> None:
    """A ``sleep`` for transports under test: backoffs and rate-limit waits pass at once.

    A module-level function, so that a transport holding it still pickles and moves
    to a sender process.
    """
