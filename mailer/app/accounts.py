"""Workspace accounts: who may sign in, with what role, and their sessions.

Administrators create, disable, enable and reset accounts and change their roles. A
new account (or a reset one) gets either a password or a one-time sign-in link, with
which its owner sets one. People sign in with an address and a password
(``authenticate``), throttled per account and per client (``mailer.accounts.throttle``),
and get a session (``open_session``): a random identifier kept in a signed cookie, of
which the database stores only a SHA-256 digest, so that disabling an account or
resetting it ends its sessions at their next request.

Sign-in errors never tell whether an address has an account: an unknown address, a
disabled account, one with no password yet and a wrong password all raise the same
``AuthenticationFailed``, after the same amount of argon2 work.

Every function that depends on the time takes ``now`` (tests pass their own).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, false, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.accounts import passwords, throttle
from mailer.accounts.models import Account, AccountSession, Role, SignInLink
from mailer.app import audit
from mailer.app.actors import Actor
from mailer.app.errors import (
    AuthenticationFailed,
    Conflict,
    Invalid,
    NotFound,
    PermissionDenied,
    Throttled,
)
from mailer.db.base import utcnow
from mailer.db.session import transaction
from mailer.runtime import Runtime
from subscribers.addresses import InvalidAddress, normalize_email

__all__ = [
    "LINK_NOT_VALID",
    "WRONG_CREDENTIALS",
    "AccountView",
    "SessionInfo",
    "SessionTicket",
    "authenticate",
    "change_password",
    "change_role",
    "check_sign_in_link",
    "close_session",
    "create_account",
    "disable_account",
    "enable_account",
    "end_sessions",
    "get_account",
    "list_accounts",
    "open_session",
    "redeem_sign_in_link",
    "reset_account",
    "resolve_session",
]

log = logging.getLogger(__name__)

WRONG_CREDENTIALS = "wrong email address or password"
LINK_NOT_VALID = "this sign-in link is not valid any more: ask an administrator for a new one"
# A session's last_seen_at is written at most this often: idle expiry is then up to a
# minute early, and a page that makes ten requests does not make ten writes.
LAST_SEEN_EVERY = timedelta(minutes=1)
# Binds a cookie's signature to its use: no other value signed with the same key
# (unsubscribe tokens) can pass for a session cookie.
_SESSION_PURPOSE = b"mailer/session/v1:"
# secrets.token_urlsafe(32) and an unpadded base64 SHA-256: 43 characters each.
_COOKIE = re.compile(r"([A-Za-z0-9_-]{43})\.([A-Za-z0-9_-]{43})")
_LINK_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,100}")
_CLIENT_LENGTH = 100  # models.AccountSession.client
_USER_AGENT_LENGTH = 300  # models.AccountSession.user_agent


@dataclass(frozen=True)
class AccountView:
    id: int
    email: str
    role: str
    disabled: bool
    has_password: bool
    created_at: datetime
    last_sign_in_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "role": self.role,
            "disabled": self.disabled,
            "has_password": self.has_password,
            "created_at": self.created_at.isoformat(),
            "last_sign_in_at": self.last_sign_in_at.isoformat() if self.last_sign_in_at else None,
        }


@dataclass(frozen=True)
class SessionTicket:
    """What the browser gets at sign-in; kept out of reprs so that it is never logged."""

    cookie_value: str = field(repr=False)
    csrf_token: str = field(repr=False)
    expires_at: datetime


@dataclass(frozen=True)
class SessionInfo:
    session_id: int
    account: AccountView
    csrf_token: str = field(repr=False)
    actor: Actor


# -- helpers -------------------------------------------------------------------------


def _address(email: str) -> str:
    try:
        return normalize_email(email)
    except InvalidAddress as exc:
        raise Invalid(f"email address: {exc}", field="email") from None


def _role(role: str) -> Role:
    try:
        return Role(role.strip().lower())
    except ValueError:
        names = " or ".join(r.value for r in Role)
        raise Invalid(f"role {role!r}: use {names}", field="role") from None


def _checked_hash(password: str, address: str, field_name: str = "password") -> str:
    """The hash of a password that meets the policy, or Invalid saying what is wrong."""
    problem = passwords.policy_problem(password, address)
    if problem is not None:
        raise Invalid(problem, field=field_name)
    return passwords.hash_password(password)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _view(account: Account) -> AccountView:
    return AccountView(
        id=account.id,
        email=account.email,
        role=str(account.role),
        disabled=account.disabled_at is not None,
        has_password=account.password_hash is not None,
        created_at=account.created_at,
        last_sign_in_at=account.last_sign_in_at,
    )


def _actor_of(account: Account) -> Actor:
    return Actor.account(account.id, account.email, account.role)


def _find(session: Session, address: str) -> Account:
    account = session.scalar(
        select(Account).where(Account.email == address).execution_options(populate_existing=True)
    )
    if account is None:
        raise NotFound(f"no account for {address}")
    return account


def _take_turns(session: Session) -> None:
    """Make account changes take turns, before anything is read.

    The last-admin rule counts enabled administrators: two admins disabling each other
    at once must not both see the other still enabled. On PostgreSQL the
    administrators' rows are locked; on SQLite a write that changes nothing takes the
    database's write lock.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Account.id).where(Account.role == Role.ADMIN).with_for_update())
    else:
        session.execute(
            update(Account)
            .where(false())
            .values(role=Account.role)
            .execution_options(synchronize_session=False)
        )


def _enabled_admins(session: Session) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Account)
            .where(Account.role == Role.ADMIN, Account.disabled_at.is_(None))
        )
        or 0
    )


def _refuse_last_admin(session: Session, account: Account, doing: str) -> None:
    if account.role == Role.ADMIN and account.disabled_at is None and _enabled_admins(session) <= 1:
        raise Conflict(
            f"{account.email} is the last enabled administrator and cannot be {doing}: "
            "make another account an administrator first"
        )


def _end_sessions(
    session: Session, account_id: int, now: datetime, *, keep: int | None = None
) -> int:
    query = (
        update(AccountSession)
        .where(AccountSession.account_id == account_id, AccountSession.ended_at.is_(None))
        .values(ended_at=now)
        .returning(AccountSession.id)
        .execution_options(synchronize_session=False)
    )
    if keep is not None:
        query = query.where(AccountSession.id != keep)
    return len(session.execute(query).all())


def _expire_links(session: Session, account_id: int, now: datetime) -> None:
    session.execute(
        update(SignInLink)
        .where(
            SignInLink.account_id == account_id,
            SignInLink.used_at.is_(None),
            SignInLink.expires_at > now,
        )
        .values(expires_at=now)
        .execution_options(synchronize_session=False)
    )


def _issue_link(runtime: Runtime, session: Session, account_id: int, now: datetime) -> str:
    """A new one-time sign-in link; any earlier one of the account stops working."""
    _expire_links(session, account_id, now)
    token = secrets.token_urlsafe(32)
    session.add(
        SignInLink(
            token_hash=_digest(token),
            account_id=account_id,
            created_at=now,
            expires_at=now + timedelta(hours=runtime.settings.sign_in_link_hours),
        )
    )
    return f"{runtime.settings.base_url}/signin/link/{token}"


def _in_words(seconds: float) -> str:
    whole = max(1, math.ceil(seconds))
    if whole < 120:
        return f"{whole} second{'s' if whole != 1 else ''}"
    return f"{math.ceil(whole / 60)} minutes"


def _throttled(blocked: throttle.Blocked) -> Throttled:
    return Throttled(
        f"too many failed sign-ins: try again in {_in_words(blocked.retry_after)}",
        blocked.retry_after,
    )


# -- administration ------------------------------------------------------------------


def create_account(
    runtime: Runtime, actor: Actor, email: str, role: str, password: str | None = None
) -> tuple[AccountView, str | None]:
    """A new account; with no password, also the one-time link with which to set one."""
    actor.require(Role.ADMIN)
    address = _address(email)
    kind = _role(role)
    # Hashed before the transaction: argon2 takes a tenth of a second, held locks none.
    encoded = None if password is None else _checked_hash(password, address)
    now = utcnow()
    try:
        with transaction(runtime.sessions) as session:
            _take_turns(session)
            if session.scalar(select(Account.id).where(Account.email == address)) is not None:
                raise Conflict(f"an account for {address} exists")
            account = Account(email=address, role=kind.value, password_hash=encoded, created_at=now)
            session.add(account)
            session.flush()
            link = None if encoded else _issue_link(runtime, session, account.id, now)
            audit.record(
                session,
                actor,
                "account.create",
                "account",
                account.id,
                after={
                    "email": address,
                    "role": kind.value,
                    "password": "set" if encoded else "to be set with a sign-in link",
                },
            )
            view = _view(account)
    except IntegrityError:
        # Created by someone else between our check and our insert.
        raise Conflict(f"an account for {address} exists") from None
    return view, link


def list_accounts(runtime: Runtime, actor: Actor) -> list[AccountView]:
    actor.require(Role.ADMIN)
    with runtime.sessions() as session:
        return [_view(a) for a in session.scalars(select(Account).order_by(Account.email))]


def get_account(runtime: Runtime, actor: Actor, email: str) -> AccountView:
    actor.require(Role.ADMIN)
    address = _address(email)
    with runtime.sessions() as session:
        return _view(_find(session, address))


def disable_account(runtime: Runtime, actor: Actor, email: str) -> AccountView:
    """Stop an account from signing in; its sessions end at once. Disabling twice is a
    no-op."""
    actor.require(Role.ADMIN)
    address = _address(email)
    now = utcnow()
    with transaction(runtime.sessions) as session:
        _take_turns(session)
        account = _find(session, address)
        if account.disabled_at is None:
            _refuse_last_admin(session, account, "disabled")
            account.disabled_at = now
            ended = _end_sessions(session, account.id, now)
            _expire_links(session, account.id, now)
            audit.record(
                session,
                actor,
                "account.disable",
                "account",
                account.id,
                before={"email": address, "disabled": False},
                after={"email": address, "disabled": True, "sessions_ended": ended},
            )
        return _view(account)


def enable_account(runtime: Runtime, actor: Actor, email: str) -> AccountView:
    """Let a disabled account sign in again (with its password as it was)."""
    actor.require(Role.ADMIN)
    address = _address(email)
    with transaction(runtime.sessions) as session:
        _take_turns(session)
        account = _find(session, address)
        if account.disabled_at is not None:
            account.disabled_at = None
            audit.record(
                session,
                actor,
                "account.enable",
                "account",
                account.id,
                before={"email": address, "disabled": True},
                after={"email": address, "disabled": False},
            )
        return _view(account)


def reset_account(
    runtime: Runtime, actor: Actor, email: str, password: str | None = None
) -> tuple[AccountView, str | None]:
    """Clear an account's password (or set ``password``), ending its sessions.

    With no password, returns a new one-time sign-in link; earlier links stop working.
    The account's failed sign-ins are forgotten: an administrator has vouched for it.
    """
    actor.require(Role.ADMIN)
    address = _address(email)
    encoded = None if password is None else _checked_hash(password, address)
    now = utcnow()
    with transaction(runtime.sessions) as session:
        _take_turns(session)
        account = _find(session, address)
        account.password_hash = encoded
        ended = _end_sessions(session, account.id, now)
        _expire_links(session, account.id, now)
        link = None if encoded else _issue_link(runtime, session, account.id, now)
        throttle.forget(session, throttle.account_key(address))
        audit.record(
            session,
            actor,
            "account.reset",
            "account",
            account.id,
            after={
                "email": address,
                "password": "set by an administrator" if encoded else "cleared: sign-in link",
                "sessions_ended": ended,
            },
        )
        return _view(account), link


def change_role(runtime: Runtime, actor: Actor, email: str, role: str) -> AccountView:
    """Make an account an admin or an editor; it applies from its next request."""
    actor.require(Role.ADMIN)
    address = _address(email)
    kind = _role(role)
    with transaction(runtime.sessions) as session:
        _take_turns(session)
        account = _find(session, address)
        old = str(account.role)
        if old != kind.value:
            if kind != Role.ADMIN:
                _refuse_last_admin(session, account, f"made {kind.value}")
            account.role = kind.value
            audit.record(
                session,
                actor,
                "account.role",
                "account",
                account.id,
                before={"email": address, "role": old},
                after={"email": address, "role": kind.value},
            )
        return _view(account)


# -- signing in ----------------------------------------------------------------------


def authenticate(
    runtime: Runtime, email: str, password: str, client: str, *, now: datetime | None = None
) -> AccountView:
    """The account whose address and password these are, or AuthenticationFailed.

    ``client`` names where the attempt comes from (the web passes the remote address).
    Throttled (an AuthenticationFailed) while the account's or the client's key is
    blocked, whatever the password; see ``mailer.accounts.throttle``. A success forgets
    the account's failures and takes back its own count from the client's, but not the
    client's failures at other addresses: one good password (the attacker's own
    account, say) must not buy another round of guesses at everyone else's.
    """
    now = now or utcnow()
    try:
        address: str | None = normalize_email(email)
    except InvalidAddress:
        address = None
    account_key = throttle.account_key(address or email)
    try:
        with transaction(runtime.sessions) as session:
            attempt = throttle.begin(session, (account_key, throttle.client_key(client)), now=now)
            account = (
                None
                if address is None
                else session.scalar(select(Account).where(Account.email == address))
            )
    except throttle.Blocked as blocked:
        log.warning(
            "account.sign_in_throttled",
            extra={"client": client, "retry_after_seconds": round(blocked.retry_after)},
        )
        raise _throttled(blocked) from None

    # Exactly one argon2 verification on every path, so that timing tells nothing.
    encoded = account.password_hash if account is not None else None
    if encoded is None:
        passwords.verify_nothing(password)
        matched = False
    else:
        matched = passwords.verify_password(encoded, password)
    if account is None or encoded is None or not matched or account.disabled_at is not None:
        if account is None:
            reason = "unknown address"
        elif encoded is None:
            reason = "no password yet"
        elif not matched:
            reason = "wrong password"
        else:
            reason = "disabled"
        log.warning(
            "account.sign_in_failed",
            extra={
                "reason": reason,
                "account_id": None if account is None else account.id,
                "client": client,
            },
        )
        raise AuthenticationFailed(WRONG_CREDENTIALS)

    rehashed = passwords.hash_password(password) if passwords.needs_rehash(encoded) else None
    with transaction(runtime.sessions) as session:
        # A write first (SQLite's write lock), and a check that the account is still as
        # verified: disabled or reset in the last tenth of a second counts as refused.
        still = session.execute(
            update(Account)
            .where(
                Account.id == account.id,
                Account.disabled_at.is_(None),
                Account.password_hash == encoded,
            )
            .values(last_sign_in_at=now, password_hash=rehashed or encoded)
            .returning(Account.id)
            .execution_options(synchronize_session=False)
        ).first()
        if still is None:
            log.warning(
                "account.sign_in_failed",
                extra={"reason": "changed meanwhile", "account_id": account.id, "client": client},
            )
            raise AuthenticationFailed(WRONG_CREDENTIALS)
        throttle.succeeded(session, attempt, clear=(account_key,))
        throttle.prune(session, now)
        signed_in = session.get(Account, account.id, populate_existing=True)
        assert signed_in is not None
        audit.record(
            session,
            _actor_of(signed_in),
            "account.sign_in",
            "account",
            signed_in.id,
            note=f"from {client}" + ("; password hash upgraded" if rehashed else ""),
        )
        view = _view(signed_in)
    log.info("account.signed_in", extra={"account_id": view.id, "client": client})
    return view


def _live_link(session: Session, token: str, now: datetime) -> tuple[SignInLink, Account]:
    found = None
    if _LINK_TOKEN.fullmatch(token):
        found = session.execute(
            select(SignInLink, Account)
            .join(Account, SignInLink.account_id == Account.id)
            .where(SignInLink.token_hash == _digest(token))
        ).first()
    if found is None:
        raise AuthenticationFailed(LINK_NOT_VALID)
    link, account = found
    if link.used_at is not None or link.expires_at <= now or account.disabled_at is not None:
        raise AuthenticationFailed(LINK_NOT_VALID)
    return link, account


def check_sign_in_link(runtime: Runtime, token: str, *, now: datetime | None = None) -> str:
    """The address a sign-in link is for, without using it; AuthenticationFailed if it
    is unknown, used, expired, or its account is disabled."""
    now = now or utcnow()
    with runtime.sessions() as session:
        return _live_link(session, token, now)[1].email


def redeem_sign_in_link(
    runtime: Runtime,
    token: str,
    new_password: str,
    client: str,
    *,
    now: datetime | None = None,
) -> AccountView:
    """Set the account's password with a one-time link, using it up.

    A password the policy refuses raises Invalid(field="password") and leaves the link
    as it was. Every other link of the account stops working and its sessions end.
    The caller opens a session for the account returned.
    """
    now = now or utcnow()
    with runtime.sessions() as session:
        link, account = _live_link(session, token, now)
        link_id, account_id, address = link.id, account.id, account.email
    encoded = _checked_hash(new_password, address)
    with transaction(runtime.sessions) as session:
        # Using the link is the first write: of two redemptions at once, one gets it.
        used = session.execute(
            update(SignInLink)
            .where(
                SignInLink.id == link_id,
                SignInLink.used_at.is_(None),
                SignInLink.expires_at > now,
            )
            .values(used_at=now)
            .returning(SignInLink.id)
            .execution_options(synchronize_session=False)
        ).first()
        redeemed = session.get(Account, account_id, populate_existing=True)
        if used is None or redeemed is None or redeemed.disabled_at is not None:
            raise AuthenticationFailed(LINK_NOT_VALID)
        redeemed.password_hash = encoded
        redeemed.last_sign_in_at = now
        _expire_links(session, account_id, now)
        ended = _end_sessions(session, account_id, now)
        throttle.forget(session, throttle.account_key(address))
        audit.record(
            session,
            _actor_of(redeemed),
            "account.password_set",
            "account",
            account_id,
            after={"email": address, "sessions_ended": ended},
            note=f"with a sign-in link, from {client}",
        )
        return _view(redeemed)


def change_password(
    runtime: Runtime,
    actor: Actor,
    current: str,
    new: str,
    *,
    keep_session_id: int | None = None,
    now: datetime | None = None,
) -> AccountView:
    """Change the actor's own password, given the current one.

    Invalid(field="current") for a wrong current password (counted as a failed
    sign-in of the account, and Throttled like one), Invalid(field="new") for a new one
    the policy refuses. Every session of the account ends but ``keep_session_id`` (the
    one making the change).
    """
    now = now or utcnow()
    if actor.account_id is None:
        raise PermissionDenied("only a signed-in account has a password to change")
    with runtime.sessions() as session:
        account = session.get(Account, actor.account_id)
        if account is None or account.disabled_at is not None:
            raise NotFound("this account does not exist any more")
        account_id, address, encoded = account.id, account.email, account.password_hash
    problem = passwords.policy_problem(new, address)
    if problem is None and new == current:
        problem = "the new password is the same as the current one"
    if problem is not None:
        raise Invalid(problem, field="new")
    key = throttle.account_key(address)
    try:
        with transaction(runtime.sessions) as session:
            attempt = throttle.begin(session, (key,), now=now)
    except throttle.Blocked as blocked:
        raise _throttled(blocked) from None
    if encoded is None:
        passwords.verify_nothing(current)
        matched = False
    else:
        matched = passwords.verify_password(encoded, current)
    if not matched:
        log.warning("account.password_change_refused", extra={"account_id": account_id})
        raise Invalid("the current password is not right", field="current")
    new_hash = passwords.hash_password(new)
    with transaction(runtime.sessions) as session:
        changed = session.execute(
            update(Account)
            .where(
                Account.id == account_id,
                Account.disabled_at.is_(None),
                Account.password_hash == encoded,
            )
            .values(password_hash=new_hash)
            .returning(Account.id)
            .execution_options(synchronize_session=False)
        ).first()
        if changed is None:
            raise Conflict("the password was changed or reset meanwhile: sign in again")
        throttle.succeeded(session, attempt, clear=(key,))
        ended = _end_sessions(session, account_id, now, keep=keep_session_id)
        _expire_links(session, account_id, now)
        audit.record(
            session,
            actor,
            "account.password_change",
            "account",
            account_id,
            after={"email": address, "sessions_ended": ended},
        )
        updated = session.get(Account, account_id, populate_existing=True)
        assert updated is not None
        return _view(updated)


# -- sessions ------------------------------------------------------------------------


def _signature(key: bytes, session_id: str) -> str:
    mac = hmac.new(key, _SESSION_PURPOSE + session_id.encode("ascii"), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


def _session_id(runtime: Runtime, cookie_value: str) -> str | None:
    """The session identifier a cookie carries, if its signature is ours."""
    match = _COOKIE.fullmatch(cookie_value)
    if match is None:
        return None
    # Any configured key: rotating the keys does not sign everybody out.
    for key in runtime.settings.require_secret_keys():
        if hmac.compare_digest(match[2], _signature(key, match[1])):
            return match[1]
    return None


def open_session(
    runtime: Runtime,
    account_id: int,
    client: str,
    user_agent: str,
    *,
    now: datetime | None = None,
) -> SessionTicket:
    """A new session for an account that just signed in (``authenticate``,
    ``redeem_sign_in_link``). AuthenticationFailed if the account is gone or disabled.

    ``expires_at`` is the absolute expiry (``MAILER_SESSION_MAX_HOURS``), for the
    cookie's lifetime; the session also ends after ``MAILER_SESSION_IDLE_MINUTES``
    without a request.
    """
    now = now or utcnow()
    settings = runtime.settings
    key = settings.require_secret_key()
    session_id = secrets.token_urlsafe(32)
    csrf_token = secrets.token_urlsafe(32)
    expires_at = now + timedelta(hours=settings.session_max_hours)
    with transaction(runtime.sessions) as session:
        # The account's dead sessions are of no further use; clearing them is also this
        # transaction's first write (SQLite's write lock before the read below).
        session.execute(
            delete(AccountSession)
            .where(
                AccountSession.account_id == account_id,
                or_(
                    AccountSession.ended_at.is_not(None),
                    AccountSession.expires_at <= now,
                    AccountSession.last_seen_at
                    <= now - timedelta(minutes=settings.session_idle_minutes),
                ),
            )
            .execution_options(synchronize_session=False)
        )
        account = session.get(Account, account_id)
        if account is None or account.disabled_at is not None:
            raise AuthenticationFailed(WRONG_CREDENTIALS)
        session.add(
            AccountSession(
                token_hash=_digest(session_id),
                account_id=account_id,
                csrf_token=csrf_token,
                client=client[:_CLIENT_LENGTH],
                user_agent=user_agent[:_USER_AGENT_LENGTH],
                created_at=now,
                last_seen_at=now,
                expires_at=expires_at,
            )
        )
    cookie = f"{session_id}.{_signature(key, session_id)}"
    return SessionTicket(cookie_value=cookie, csrf_token=csrf_token, expires_at=expires_at)


def resolve_session(
    runtime: Runtime, cookie_value: str, *, now: datetime | None = None
) -> SessionInfo | None:
    """The live session a cookie stands for, or None.

    None for a cookie not signed by us, an unknown or ended session, one idle for
    ``MAILER_SESSION_IDLE_MINUTES`` or past its absolute expiry (which ends it), and an
    account that is disabled: checked on every call, so that disabling takes effect at
    the next request. The account's role is read afresh each time too. Comparisons of
    secrets are constant-time.
    """
    now = now or utcnow()
    session_id = _session_id(runtime, cookie_value)
    if session_id is None:
        return None
    digest = _digest(session_id)
    idle = timedelta(minutes=runtime.settings.session_idle_minutes)
    with runtime.sessions() as session:
        found = session.execute(
            select(AccountSession, Account)
            .join(Account, AccountSession.account_id == Account.id)
            .where(AccountSession.token_hash == digest)
        ).first()
        if found is None:
            return None
        row, account = found
        if (
            not hmac.compare_digest(row.token_hash, digest)
            or row.ended_at is not None
            or account.disabled_at is not None
        ):
            return None
        expired = now >= row.expires_at or now - row.last_seen_at >= idle
        if expired or now - row.last_seen_at >= LAST_SEEN_EVERY:
            # An expired session is ended there and then, so that it stays ended even
            # for a web server whose clock is behind.
            session.execute(
                update(AccountSession)
                .where(AccountSession.id == row.id, AccountSession.ended_at.is_(None))
                .values({"ended_at": now} if expired else {"last_seen_at": now})
                .execution_options(synchronize_session=False)
            )
            session.commit()
        if expired:
            return None
        return SessionInfo(
            session_id=row.id,
            account=_view(account),
            csrf_token=row.csrf_token,
            actor=_actor_of(account),
        )


def close_session(runtime: Runtime, cookie_value: str, *, now: datetime | None = None) -> None:
    """Sign out: the session ends now. Nothing happens for a cookie that is not live."""
    now = now or utcnow()
    session_id = _session_id(runtime, cookie_value)
    if session_id is None:
        return
    with transaction(runtime.sessions) as session:
        ended = session.execute(
            update(AccountSession)
            .where(
                AccountSession.token_hash == _digest(session_id),
                AccountSession.ended_at.is_(None),
            )
            .values(ended_at=now)
            .returning(AccountSession.account_id)
            .execution_options(synchronize_session=False)
        ).first()
        if ended is None:
            return
        account = session.get(Account, ended[0])
        if account is not None:
            audit.record(session, _actor_of(account), "account.sign_out", "account", account.id)


def end_sessions(runtime: Runtime, actor: Actor, email: str, *, now: datetime | None = None) -> int:
    """End every session of an account at once; returns how many were live.

    Administrators may do this to any account, anyone to their own ("sign out
    everywhere").
    """
    now = now or utcnow()
    address = _address(email)
    if actor.label != f"account:{address}":
        actor.require(Role.ADMIN)
    with transaction(runtime.sessions) as session:
        account_id = session.scalar(select(Account.id).where(Account.email == address))
        if account_id is None:
            raise NotFound(f"no account for {address}")
        ended = _end_sessions(session, account_id, now)
        audit.record(
            session,
            actor,
            "account.end_sessions",
            "account",
            account_id,
            after={"email": address, "sessions_ended": ended},
        )
        return ended
