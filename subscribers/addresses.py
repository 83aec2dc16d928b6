"""Email address checks and the one normal form every table stores."""

from __future__ import annotations

import re

MAX_ADDRESS_LENGTH = 320
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class InvalidAddress(ValueError):
    """An address we will not store or mail."""


def normalize_email(raw: str) -> str:
    """Return the address trimmed and lower-cased, or raise InvalidAddress saying why.

    Lower-casing the local part is technically lossy, but no mailbox provider
    our readers use treats case as significant, and one form per person is what
    keeps uniqueness and suppression honest.
    """
    address = raw.strip()
    if not address:
        raise InvalidAddress("empty address")
    if len(address) > MAX_ADDRESS_LENGTH:
        raise InvalidAddress(f"address longer than {MAX_ADDRESS_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 or ch in '<>,;"()[]\\' for ch in address):
        raise InvalidAddress(f"{address!r} contains characters not allowed in an address")
    local, sep, domain = address.rpartition("@")
    if not sep or not local or not domain:
        raise InvalidAddress(f"{address!r} is not of the form name@domain")
    if not _LOCAL.match(local) or local.startswith(".") or local.endswith(".") or ".." in local:
        raise InvalidAddress(f"{address!r} has an invalid part before the @")
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise InvalidAddress(f"{address!r} has an invalid domain")
    return address.lower()
