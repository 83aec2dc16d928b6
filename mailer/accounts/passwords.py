"""Passwords of workspace accounts: the policy a new one must meet, argon2id hashes.

Hashes are argon2id in argon2-cffi's encoded form, which carries its own parameters,
so that raising them later only needs ``needs_rehash`` at the next sign-in. Passwords
are NFKC-normalised before hashing: the same password typed on another keyboard or
operating system (composed or decomposed accents, full-width digits) still matches.
"""

from __future__ import annotations

import functools
import secrets
import unicodedata

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = [
    "MAX_LENGTH",
    "MIN_LENGTH",
    "hash_password",
    "needs_rehash",
    "policy_problem",
    "verify_nothing",
    "verify_password",
]

MIN_LENGTH = 12
# argon2 takes any length, but a megabyte "password" posted to the sign-in form would
# only cost us memory and time.
MAX_LENGTH = 1024

# argon2-cffi's defaults are RFC 9106's second recommended profile (64 MiB, 3 passes,
# 4 lanes); the type is spelled out because only argon2id resists both side channels
# and GPU cracking. Module-level so that a deployment (or a test) can swap it whole.
HASHER = PasswordHasher(type=Type.ID)


def _prepared(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


def policy_problem(password: str, email: str) -> str | None:
    """What is wrong with ``password`` for the account ``email``, or None if it will do.

    Length is what makes a password hard to guess; composition rules (a digit, a
    symbol) mostly make people write them down, so there are none beyond refusing the
    two guesses any attacker tries first.
    """
    prepared = _prepared(password)
    if len(prepared) < MIN_LENGTH:
        return f"a password needs at least {MIN_LENGTH} characters ({len(prepared)} given)"
    if len(prepared) > MAX_LENGTH:
        return f"a password can have at most {MAX_LENGTH} characters"
    if len(set(prepared)) == 1:
        return "a password cannot be one character repeated"
    if prepared.strip().casefold() == email.strip().casefold():
        return "a password cannot be the account's email address"
    return None


def hash_password(password: str) -> str:
    return HASHER.hash(_prepared(password))


def verify_password(encoded: str, password: str) -> bool:
    """Whether ``password`` matches the hash; a damaged hash matches nothing."""
    try:
        return HASHER.verify(encoded, _prepared(password))
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(encoded: str) -> bool:
    """Whether the hash was made with other parameters than the hasher's current ones."""
    try:
        return HASHER.check_needs_rehash(encoded)
    except InvalidHashError:
        return True


@functools.cache
def _decoy(hasher: PasswordHasher) -> str:
    return hasher.hash(secrets.token_urlsafe(16))


def verify_nothing(password: str) -> None:
    """Spend the time a verification takes, for a sign-in with no hash to check.

    Without it an unknown address would be refused in microseconds and a known one
    with a wrong password in a tenth of a second: the timing would tell which
    addresses have accounts.
    """
    verify_password(_decoy(HASHER), password)
