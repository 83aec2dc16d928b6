"""Email address checks and the one normal form every table stores.

Addresses are checked by the ``email-validator`` package, without DNS (no lookups in an
import of a million rows, nor in tests). Its rules, deliberately kept as they are:

- **Internationalised domains are stored in Unicode** (``anna@bücher.de``), never as
  IDNA (``xn--bcher-kva.de``): email-validator turns an IDNA spelling into its Unicode
  form, so both spellings of one address become one row, one unique key and one
  suppression. Unicode is what people type and read; a transport that needs the ASCII
  form can derive it from the domain (IDNA is lossless for a valid domain).
- **Special-use domains are refused** (email-validator's ``SPECIAL_USE_DOMAIN_NAMES``:
  ``.invalid``, ``.local``, ``.localhost``, ``.onion``, ``.test``, ``.arpa`` (with
  ``home.arpa``), ``.internal`` and the like): nobody can receive mail there.
- **The IANA example domains** (``example.com``, ``example.net``, ``example.org`` and
  their subdomains) **are accepted**. RFC 6761 says applications should not treat them
  as special, and email-validator's list leaves them out on purpose; the demo and the
  tests rely on it, and nothing is lost: no real reader has such an address. We pass
  ``globally_deliverable=True`` explicitly so that a global change of the package's
  defaults cannot loosen these rules.
- Quoted local parts, domain literals (``a@[10.0.0.1]``) and display names are refused:
  no reader needs them and each is a way to smuggle odd text into headers.

The whole address is then lower-cased (see ``normalize_email``).

Speed: the validator costs about 30 µs an address, two thirds of it checking the domain
character by character (UTS #46), which alone would cap an import near 33,000 rows/s. A
list has few distinct domains, so the common case, an ASCII dot-atom local part, is
checked here against email-validator's own ``DOT_ATOM_TEXT`` and its length limits, with
the domain's verdict remembered per domain (a bounded LRU, never per address); anything
else (non-ASCII local parts, quoting, odd characters, a refused domain, to give its
message) goes through ``validate_email`` whole. A test holds both paths to the same
answers.
"""

from __future__ import annotations

from functools import lru_cache

from email_validator import EmailNotValidError, ValidatedEmail, validate_email
from email_validator.rfc_constants import DOT_ATOM_TEXT, EMAIL_MAX_LENGTH

MAX_ADDRESS_LENGTH = 320


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
    # Checked before the validator so that a pathological cell (a whole pasted page)
    # costs a length test, not a parse.
    if len(address) > MAX_ADDRESS_LENGTH:
        raise InvalidAddress(f"address longer than {MAX_ADDRESS_LENGTH} characters")
    local, at, domain = address.partition("@")
    if at and "@" not in domain and DOT_ATOM_TEXT.match(local):
        domains = _domain(domain)
        if domains is not None:
            unicode_domain, ascii_domain = domains
            if domain == unicode_domain == ascii_domain and address.isascii():
                # The common case, an ASCII address in normal form: the three lengths
                # below are all this one.
                if len(address) <= EMAIL_MAX_LENGTH:
                    return address.lower()
                return _validated(address)
            # The three lengths validate_email checks: as given, normalised, as IDNA.
            if all(
                len(f"{local}@{d}".encode()) <= EMAIL_MAX_LENGTH
                for d in (domain, unicode_domain, ascii_domain)
            ):
                return f"{local}@{unicode_domain}".lower()
    return _validated(address)


@lru_cache(maxsize=16384)
def _domain(domain: str) -> tuple[str, str] | None:
    """The domain's normalised and IDNA forms if the validator takes it, else None."""
    try:
        checked = _check(f"a@{domain}")
    except EmailNotValidError:
        return None
    return checked.domain, checked.ascii_domain


def _validated(address: str) -> str:
    try:
        return _check(address).normalized.lower()
    except EmailNotValidError as exc:
        raise InvalidAddress(f"{address!r}: {exc}") from None


def _check(address: str) -> ValidatedEmail:
    return validate_email(
        address,
        check_deliverability=False,
        globally_deliverable=True,
        test_environment=False,
        allow_quoted_local=False,
        allow_domain_literal=False,
        allow_display_name=False,
        allow_empty_local=False,
    )
