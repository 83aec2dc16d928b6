"""How long to wait after SendGrid's 429: its ``X-RateLimit-Reset``, read defensively.

SendGrid sends the Unix time, in seconds, at which the limit resets. The value comes
off the network, so whatever it holds the answer is a finite wait between
``MIN_WAIT`` and the caller's cap: a reset in the past means "now" (the shortest
wait), one far ahead the cap, and anything that is not a plain number (``nan``,
``inf``, a sign, an exponent, text, nothing) the default. A value too small to be a
time since 1970 that SendGrid could send (before 2001) is taken as seconds to wait,
as some proxies rewrite it so. Both SendGrid clients (the mail transport and the
suppression sync) wait through this, and never hand ``time.sleep`` a NaN.
"""

from __future__ import annotations

import math
import re
import time

MIN_WAIT = 0.5
DEFAULT_WAIT = 1.0
MAX_WAIT = 120.0
HEADER = "X-RateLimit-Reset"
_PLAIN_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_FIRST_PLAUSIBLE_RESET = 1_000_000_000  # 2001-09-09T01:46:40Z


def reset_wait(value: str | None, *, now: float | None = None, cap: float = MAX_WAIT) -> float:
    """Seconds to wait, finite and within ``[MIN_WAIT, cap]``, for a header ``value``."""
    text = (value or "").strip()
    if not _PLAIN_NUMBER.fullmatch(text):
        return min(DEFAULT_WAIT, cap)
    wait = float(text)
    if not math.isfinite(wait):  # digits enough to overflow a float: far ahead
        return cap
    if wait >= _FIRST_PLAUSIBLE_RESET:
        wait -= time.time() if now is None else now
    return min(max(wait, MIN_WAIT), cap)
