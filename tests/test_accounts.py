"""Workspace accounts through mailer.app.accounts: creation, sign-in, throttles, sessions."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher, Type
from pydantic import SecretStr
from sqlalchemy import select, update

from mailer.accounts import passwords, throttle
from mailer.accounts.models import (
    Account,
    AccountSession,
    AuditEntry,
    SignInLink,
    SignInThrottle,
)
from mailer.app import accounts
from mailer.app.accounts import LINK_NOT_VALID, WRONG_CREDENTIALS
from mailer.app.actors import Actor
from mailer.app.errors import (
    AuthenticationFailed,
    Conflict,
    Invalid,
    NotFound,
    PermissionDenied,
    Throttled,
)
from mailer.config import ConfigError, Settings
from mailer.db.session import transaction
from mailer.runtime import Runtime

ADMIN = Actor.cli()
PASSWORD = "correct horse battery"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def cheap_hasher(time_cost: int = 1) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=1024, parallelism=1, type=Type.ID)


@pytest.fixture(autouse=True)
def _fast_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    # The production parameters cost a tenth of a second per hash; the tests hash a lot.
    monkeypatch.setattr(passwords, "HASHER", cheap_hasher())


def make(runtime: Runtime, email: str = "ed@example.org", role: str = "editor") -> int:
    view, link = accounts.create_account(runtime, ADMIN, email, role, PASSWORD)
    assert link is None
    return view.id


def token_of(link: str) -> str:
    return link.rsplit("/", 1)[1]


def sign_in(
    runtime: Runtime,
    password: str = PASSWORD,
    *,
    email: str = "ed@example.org",
    client: str = "203.0.113.5",
    at: datetime = T0,
) -> accounts.AccountView:
    return accounts.authenticate(runtime, email, password, client, now=at)


def refused(runtime: Runtime, password: str, **kwargs: Any) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as caught:
        sign_in(runtime, password, **kwargs)
    return caught.value


def audit_rows(runtime: Runtime) -> list[AuditEntry]:
    with runtime.sessions() as session:
        return list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))


# -- creating accounts ---------------------------------------------------------------


def test_create_with_a_sign_in_link_that_works_once(runtime: Runtime) -> None:
    view, link = accounts.create_account(runtime, ADMIN, " Ed@Example.ORG ", "editor")
    assert (view.email, view.role, view.disabled, view.has_password) == (
        "ed@example.org",
        "editor",
        False,
        False,
    )
    assert link is not None and link.startswith("https://news.example.org/signin/link/")
    token = token_of(link)
    assert len(token) == 43
    with runtime.sessions() as session:
        stored = session.scalars(select(SignInLink.token_hash)).all()
    assert stored and token not in stored  # only its digest is kept

    # No password yet: signing in fails like any wrong password.
    assert refused(runtime, PASSWORD).message == WRONG_CREDENTIALS
    assert accounts.check_sign_in_link(runtime, token) == "ed@example.org"
    assert accounts.check_sign_in_link(runtime, token) == "ed@example.org"  # not used up

    redeemed = accounts.redeem_sign_in_link(runtime, token, PASSWORD, "203.0.113.5")
    assert redeemed.has_password and redeemed.last_sign_in_at is not None
    assert sign_in(runtime, at=datetime.now(UTC)).email == "ed@example.org"
    for attempt in (
        lambda: accounts.check_sign_in_link(runtime, token),
        lambda: accounts.redeem_sign_in_link(runtime, token, "another long password", "x"),
    ):
        with pytest.raises(AuthenticationFailed) as caught:
            attempt()
        assert caught.value.message == LINK_NOT_VALID
    assert sign_in(runtime, at=datetime.now(UTC)).id == view.id  # the second try changed nothing


def test_sign_in_links_expire_and_unknown_ones_are_refused(runtime: Runtime) -> None:
    _, link = accounts.create_account(runtime, ADMIN, "ed@example.org", "editor")
    assert link is not None
    token = token_of(link)
    soon = datetime.now(UTC) + timedelta(hours=23, minutes=59)
    assert accounts.check_sign_in_link(runtime, token, now=soon) == "ed@example.org"
    later = datetime.now(UTC) + timedelta(hours=24, minutes=1)
    for bad, at in ((token, later), ("A" * 43, None), ("not a token!", None), ("", None)):
        with pytest.raises(AuthenticationFailed, match="not valid any more"):
            accounts.check_sign_in_link(runtime, bad, now=at)
        with pytest.raises(AuthenticationFailed, match="not valid any more"):
            accounts.redeem_sign_in_link(runtime, bad, PASSWORD, "x", now=at)


def test_sign_in_link_lifetime_is_a_setting(settings: Settings) -> None:
    runtime = Runtime(settings.model_copy(update={"sign_in_link_hours": 2}))
    try:
        _, link = accounts.create_account(runtime, ADMIN, "ed@example.org", "editor")
        assert link is not None
        later = datetime.now(UTC) + timedelta(hours=2, seconds=5)
        with pytest.raises(AuthenticationFailed):
            accounts.check_sign_in_link(runtime, token_of(link), now=later)
    finally:
        runtime.close()


def test_create_with_a_password(runtime: Runtime) -> None:
    view, link = accounts.create_account(runtime, ADMIN, "boss@example.org", "admin", PASSWORD)
    assert link is None and view.has_password and view.role == "admin"
    signed_in = sign_in(runtime, email="BOSS@example.org", at=datetime.now(UTC))
    assert signed_in.id == view.id and signed_in.last_sign_in_at is not None
    with runtime.sessions() as session:
        assert session.scalars(select(SignInLink)).all() == []
    assert [a.email for a in accounts.list_accounts(runtime, ADMIN)] == ["boss@example.org"]
    assert accounts.get_account(runtime, ADMIN, "Boss@Example.org").last_sign_in_at is not None


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("short pass", "at least 12 characters (10 given)"),
        ("a" * 20, "one character repeated"),
        ("Ed@Example.org", "the account's email address"),
        ("x" * 1025, "at most 1024 characters"),
    ],
)
def test_password_policy(runtime: Runtime, password: str, problem: str) -> None:
    with pytest.raises(Invalid, match=re.escape(problem)) as caught:
        accounts.create_account(runtime, ADMIN, "ed@example.org", "editor", password)
    assert caught.value.field == "password"
    assert accounts.list_accounts(runtime, ADMIN) == []
    # A link survives a refused password, for a better one.
    _, link = accounts.create_account(runtime, ADMIN, "ed@example.org", "editor")
    assert link is not None
    with pytest.raises(Invalid, match=re.escape(problem)):
        accounts.redeem_sign_in_link(runtime, token_of(link), password, "x")
    assert accounts.check_sign_in_link(runtime, token_of(link)) == "ed@example.org"


def test_policy_counts_characters_not_bytes_and_normalises() -> None:
    assert passwords.policy_problem("ééééééééééé", "a@b.org") is not None  # 11
    assert passwords.policy_problem("éèêëēėęîïíīį", "a@b.org") is None
    # The same word typed composed or decomposed is the same password.
    encoded = passwords.hash_password("Ame\u0301lie-and-more")
    assert passwords.verify_password(encoded, "Am\u00e9lie-and-more")
    assert not passwords.verify_password("not a hash", "anything at all")


def test_create_checks_address_role_duplicates_and_permission(runtime: Runtime) -> None:
    for email, role, field in (
        ("not an address", "editor", "email"),
        ("ed@example.org", "owner", "role"),
    ):
        with pytest.raises(Invalid) as caught:
            accounts.create_account(runtime, ADMIN, email, role)
        assert caught.value.field == field
    make(runtime)
    with pytest.raises(Conflict, match="exists"):
        accounts.create_account(runtime, ADMIN, "ED@example.org", "admin")
    editor = Actor.account(1, "ed@example.org", "editor")
    for call in (
        lambda: accounts.create_account(runtime, editor, "x@example.org", "editor"),
        lambda: accounts.list_accounts(runtime, editor),
        lambda: accounts.get_account(runtime, editor, "ed@example.org"),
        lambda: accounts.disable_account(runtime, editor, "ed@example.org"),
        lambda: accounts.reset_account(runtime, editor, "ed@example.org"),
        lambda: accounts.change_role(runtime, editor, "ed@example.org", "admin"),
    ):
        with pytest.raises(PermissionDenied):
            call()
    with pytest.raises(NotFound):
        accounts.get_account(runtime, ADMIN, "nobody@example.org")


# -- signing in ----------------------------------------------------------------------


def test_one_error_for_every_reason_and_one_hash_check_each(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same parameters as the accounts' hashes, or the decoy would take another time.
    make(runtime)
    make(runtime, "off@example.org")
    accounts.disable_account(runtime, ADMIN, "off@example.org")
    accounts.create_account(runtime, ADMIN, "new@example.org", "editor")
    verifications: list[str] = []

    class CountingHasher(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> bool:
            verifications.append(str(hash))
            return super().verify(hash, password)

    monkeypatch.setattr(
        passwords,
        "HASHER",
        CountingHasher(time_cost=1, memory_cost=1024, parallelism=1, type=Type.ID),
    )
    cases = [
        ("nobody@example.org", PASSWORD),  # unknown
        ("ed@example.org", "wrong password here"),  # wrong password
        ("off@example.org", PASSWORD),  # disabled, right password
        ("new@example.org", PASSWORD),  # no password yet
        ("not an address at all", PASSWORD),  # malformed
    ]
    messages = set()
    for index, (email, password) in enumerate(cases):
        before = len(verifications)
        # A client each, so that the client throttle stays out of it.
        error = refused(runtime, password, email=email, client=f"198.51.100.{index}")
        assert type(error) is AuthenticationFailed
        messages.add(error.message)
        assert len(verifications) == before + 1, email
    assert messages == {WRONG_CREDENTIALS}


def test_sixth_attempt_is_refused_even_with_the_right_password_until_the_wait_passes(
    runtime: Runtime,
) -> None:
    make(runtime)
    for i in range(5):
        error = refused(runtime, "wrong password!", client=f"198.51.100.{i}", at=T0)
        assert type(error) is AuthenticationFailed
    with pytest.raises(Throttled) as caught:
        sign_in(runtime, client="192.0.2.9", at=T0 + timedelta(seconds=10))
    assert caught.value.retry_after == pytest.approx(20)
    assert "try again in 20 seconds" in caught.value.message
    with pytest.raises(Throttled):
        sign_in(runtime, client="192.0.2.9", at=T0 + timedelta(seconds=29))
    assert sign_in(runtime, client="192.0.2.9", at=T0 + timedelta(seconds=31)).email
    # The success forgot the account's failures: four more are allowed again.
    for i in range(4):
        refused(runtime, "wrong password!", client=f"198.51.100.{i}", at=T0 + timedelta(minutes=1))
    assert sign_in(runtime, client="192.0.2.9", at=T0 + timedelta(minutes=1)).email


def test_each_further_failure_doubles_the_wait_up_to_an_hour(runtime: Runtime) -> None:
    make(runtime)
    at = T0
    waits = []
    for failure in range(1, 14):
        refused(runtime, "wrong password!", client=f"198.51.100.{failure}", at=at)
        if failure >= 5:
            with pytest.raises(Throttled) as caught:
                sign_in(runtime, client="192.0.2.9", at=at)
            waits.append(caught.value.retry_after)
            at += timedelta(seconds=caught.value.retry_after + 1)
    assert waits == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert [throttle.wait_after(n) for n in (4, 5, 6, 12, 13, 1000)] == [
        None,
        timedelta(seconds=30),
        timedelta(seconds=60),
        timedelta(seconds=3600),
        timedelta(seconds=3600),
        timedelta(seconds=3600),
    ]


def test_failures_are_forgotten_after_a_quiet_hour(runtime: Runtime) -> None:
    make(runtime)
    for i in range(4):
        refused(runtime, "wrong password!", client=f"198.51.100.{i}", at=T0)
    later = T0 + timedelta(hours=1, seconds=1)
    for i in range(4):
        refused(runtime, "wrong password!", client=f"198.51.100.{i}", at=later)
    assert sign_in(runtime, client="192.0.2.9", at=later).email


def test_a_quiet_hour_counts_from_the_end_of_a_block() -> None:
    state: throttle.State | None = None
    for _ in range(12):  # the wait is at its one-hour cap
        state = throttle.after_failure(state, T0)
    assert throttle.retry_after(state, T0 + timedelta(minutes=59)) is not None
    assert throttle.retry_after(state, T0 + timedelta(hours=1, seconds=1)) is None
    assert throttle.current(state, T0 + timedelta(hours=1, minutes=30)) == state
    assert throttle.current(state, T0 + timedelta(hours=2)) is None


def test_unknown_addresses_are_throttled_like_accounts(runtime: Runtime) -> None:
    for i in range(5):
        refused(runtime, "guess guess guess", email="who@example.org", client=f"198.51.100.{i}")
    with pytest.raises(Throttled):
        sign_in(runtime, email="Who@Example.org", client="192.0.2.9")


def test_one_client_failing_at_many_accounts_is_throttled(runtime: Runtime) -> None:
    make(runtime)
    attacker = "203.0.113.66"
    for i in range(5):
        refused(runtime, "password123456", email=f"person{i}@example.org", client=attacker)
    with pytest.raises(Throttled):
        sign_in(runtime, client=attacker, at=T0 + timedelta(seconds=5))
    # Another client signs in to the same account as usual.
    assert sign_in(runtime, client="192.0.2.9", at=T0 + timedelta(seconds=5)).email


def test_a_success_does_not_clear_the_clients_failures_at_other_accounts(
    runtime: Runtime,
) -> None:
    make(runtime)  # the attacker's own account, say
    client = "203.0.113.66"
    for i in range(4):
        refused(runtime, "password123456", email=f"person{i}@example.org", client=client)
    assert sign_in(runtime, client=client, at=T0 + timedelta(seconds=1)).email
    refused(
        runtime,
        "password123456",
        email="person9@example.org",
        client=client,
        at=T0 + timedelta(seconds=1),
    )
    with pytest.raises(Throttled):
        sign_in(runtime, client=client, at=T0 + timedelta(seconds=2))
    with runtime.sessions() as session:
        row = session.get(SignInThrottle, throttle.client_key(client))
        assert row is not None and row.failures == 5


def test_parallel_attempts_get_no_more_guesses(runtime: Runtime) -> None:
    make(runtime)
    attempts = 12
    barrier = threading.Barrier(attempts)
    outcomes: list[str] = []

    def guess(index: int) -> None:
        barrier.wait()
        try:
            accounts.authenticate(runtime, "ed@example.org", f"guess number {index}", f"c{index}")
        except Throttled:
            outcomes.append("throttled")
        except AuthenticationFailed:
            outcomes.append("checked")

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("checked") == throttle.FAILURES_ALLOWED
    assert outcomes.count("throttled") == attempts - throttle.FAILURES_ALLOWED


def test_a_hash_made_with_old_parameters_is_upgraded_at_sign_in(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    make(runtime)
    monkeypatch.setattr(passwords, "HASHER", cheap_hasher(time_cost=2))
    sign_in(runtime, at=datetime.now(UTC))
    with runtime.sessions() as session:
        encoded = session.scalar(select(Account.password_hash))
    assert encoded is not None and "t=2" in encoded
    assert not passwords.needs_rehash(encoded)
    assert sign_in(runtime, at=datetime.now(UTC)).email
    assert "password hash upgraded" in (audit_rows(runtime)[-2].note or "")


def test_reset_forgets_failures_and_ends_sessions(runtime: Runtime) -> None:
    account_id = make(runtime)
    ticket = accounts.open_session(runtime, account_id, "203.0.113.5", "Firefox")
    for i in range(5):
        refused(runtime, "wrong password!", client=f"198.51.100.{i}")
    view, link = accounts.reset_account(runtime, ADMIN, "ed@example.org")
    assert not view.has_password and link is not None
    assert accounts.resolve_session(runtime, ticket.cookie_value) is None
    assert refused(runtime, PASSWORD, client="192.0.2.9").message == WRONG_CREDENTIALS
    accounts.redeem_sign_in_link(runtime, token_of(link), "a new long password", "x")
    assert sign_in(runtime, "a new long password", client="192.0.2.9", at=datetime.now(UTC))


def test_reset_with_a_password_and_old_links_stop_working(runtime: Runtime) -> None:
    _, first = accounts.create_account(runtime, ADMIN, "ed@example.org", "editor")
    _, second = accounts.reset_account(runtime, ADMIN, "ed@example.org")
    assert first is not None and second is not None
    with pytest.raises(AuthenticationFailed):
        accounts.check_sign_in_link(runtime, token_of(first))
    assert accounts.check_sign_in_link(runtime, token_of(second)) == "ed@example.org"
    view, link = accounts.reset_account(runtime, ADMIN, "ed@example.org", "set by the admin")
    assert link is None and view.has_password
    with pytest.raises(AuthenticationFailed):
        accounts.check_sign_in_link(runtime, token_of(second))
    assert sign_in(runtime, "set by the admin", at=datetime.now(UTC)).email
    with pytest.raises(Invalid) as caught:
        accounts.reset_account(runtime, ADMIN, "ed@example.org", "short")
    assert caught.value.field == "password"


def test_change_password(runtime: Runtime) -> None:
    account_id = make(runtime)
    me = Actor.account(account_id, "ed@example.org", "editor")
    here = accounts.open_session(runtime, account_id, "203.0.113.5", "Firefox")
    elsewhere = accounts.open_session(runtime, account_id, "198.51.100.7", "Safari")
    kept = accounts.resolve_session(runtime, here.cookie_value)
    assert kept is not None
    for current, new, field in (
        ("wrong current one", "a brand new password", "current"),
        (PASSWORD, "short", "new"),
        (PASSWORD, PASSWORD, "new"),
    ):
        with pytest.raises(Invalid) as caught:
            accounts.change_password(runtime, me, current, new)
        assert caught.value.field == field
    accounts.change_password(
        runtime, me, PASSWORD, "a brand new password", keep_session_id=kept.session_id
    )
    assert accounts.resolve_session(runtime, here.cookie_value) is not None
    assert accounts.resolve_session(runtime, elsewhere.cookie_value) is None
    refused(runtime, PASSWORD, at=datetime.now(UTC))
    assert sign_in(runtime, "a brand new password", at=datetime.now(UTC)).email
    with pytest.raises(PermissionDenied):
        accounts.change_password(runtime, ADMIN, PASSWORD, "a brand new password")


def test_wrong_current_passwords_are_throttled(runtime: Runtime) -> None:
    account_id = make(runtime)
    me = Actor.account(account_id, "ed@example.org", "editor")
    for _ in range(5):
        with pytest.raises(Invalid):
            accounts.change_password(
                runtime, me, "wrong current one", "a brand new password", now=T0
            )
    with pytest.raises(Throttled):
        accounts.change_password(runtime, me, PASSWORD, "a brand new password", now=T0)


# -- administration ------------------------------------------------------------------


def test_disable_ends_sessions_at_once_and_enable_lets_the_account_back(
    runtime: Runtime,
) -> None:
    account_id = make(runtime)
    ticket = accounts.open_session(runtime, account_id, "203.0.113.5", "Firefox")
    assert accounts.resolve_session(runtime, ticket.cookie_value) is not None
    view = accounts.disable_account(runtime, ADMIN, "ed@example.org")
    assert view.disabled
    assert accounts.resolve_session(runtime, ticket.cookie_value) is None
    assert refused(runtime, PASSWORD).message == WRONG_CREDENTIALS
    with pytest.raises(AuthenticationFailed):
        accounts.open_session(runtime, account_id, "203.0.113.5", "Firefox")
    assert accounts.disable_account(runtime, ADMIN, "ed@example.org").disabled  # no-op
    assert not accounts.enable_account(runtime, ADMIN, "ed@example.org").disabled
    assert accounts.resolve_session(runtime, ticket.cookie_value) is None  # it stays ended
    assert sign_in(runtime, at=datetime.now(UTC)).email


def test_a_disabled_account_is_refused_at_its_next_request(runtime: Runtime) -> None:
    # Disabled behind the application's back: every resolve reads the account.
    account_id = make(runtime)
    ticket = accounts.open_session(runtime, account_id, "203.0.113.5", "Firefox")
    with transaction(runtime.sessions) as session:
        session.execute(update(Account).values(disabled_at=datetime.now(UTC)))
    assert accounts.resolve_session(runtime, ticket.cookie_value) is None


def test_the_last_enabled_admin_stays(runtime: Runtime) -> None:
    make(runtime, "boss@example.org", "admin")
    with pytest.raises(Conflict, match="last enabled administrator"):
        accounts.disable_account(runtime, ADMIN, "boss@example.org")
    with pytest.raises(Conflict, match="last enabled administrator"):
        accounts.change_role(runtime, ADMIN, "boss@example.org", "editor")
    make(runtime, "deputy@example.org", "editor")
    assert accounts.change_role(runtime, ADMIN, "deputy@example.org", "ADMIN").role == "admin"
    assert accounts.disable_account(runtime, ADMIN, "boss@example.org").disabled
    # A disabled admin is no admin to fall back on.
    with pytest.raises(Conflict):
        accounts.change_role(runtime, ADMIN, "deputy@example.org", "editor")
    accounts.enable_account(runtime, ADMIN, "boss@example.org")
    assert accounts.change_role(runtime, ADMIN, "deputy@example.org", "editor").role == "editor"
    with pytest.raises(Invalid) as caught:
        accounts.change_role(runtime, ADMIN, "deputy@example.org", "owner")
    assert caught.value.field == "role"


def test_end_sessions(runtime: Runtime) -> None:
    ed = make(runtime)
    other = make(runtime, "other@example.org")
    tickets = [accounts.open_session(runtime, ed, "x", "y") for _ in range(2)]
    theirs = accounts.open_session(runtime, other, "x", "y")
    me = Actor.account(ed, "ed@example.org", "editor")
    with pytest.raises(PermissionDenied):
        accounts.end_sessions(runtime, me, "other@example.org")
    assert accounts.end_sessions(runtime, me, "ed@example.org") == 2
    assert all(accounts.resolve_session(runtime, t.cookie_value) is None for t in tickets)
    assert accounts.resolve_session(runtime, theirs.cookie_value) is not None
    assert accounts.end_sessions(runtime, ADMIN, "other@example.org") == 1
    with pytest.raises(NotFound):
        accounts.end_sessions(runtime, ADMIN, "nobody@example.org")


def test_audit_entries_without_passwords_or_hashes(runtime: Runtime) -> None:
    account_id = make(runtime, "boss@example.org", "admin")
    _, link = accounts.create_account(runtime, ADMIN, "ed@example.org", "editor")
    assert link is not None
    accounts.redeem_sign_in_link(runtime, token_of(link), "ed's own long password", "x")
    sign_in(runtime, email="boss@example.org", at=datetime.now(UTC))
    accounts.change_role(runtime, ADMIN, "ed@example.org", "admin")
    accounts.disable_account(runtime, ADMIN, "ed@example.org")
    accounts.enable_account(runtime, ADMIN, "ed@example.org")
    accounts.reset_account(runtime, ADMIN, "ed@example.org", "reset long password")
    ticket = accounts.open_session(runtime, account_id, "x", "y")
    accounts.close_session(runtime, ticket.cookie_value)
    rows = audit_rows(runtime)
    assert [r.action for r in rows] == [
        "account.create",
        "account.create",
        "account.password_set",
        "account.sign_in",
        "account.role",
        "account.disable",
        "account.enable",
        "account.reset",
        "account.sign_out",
    ]
    assert rows[3].actor == "account:boss@example.org" and rows[3].account_id == account_id
    assert rows[0].actor.startswith("cli:") and rows[0].target_id == str(account_id)
    text = json.dumps([[r.before, r.after, r.note] for r in rows])
    for secret in (PASSWORD, "ed's own long password", "reset long password", "$argon2"):
        assert secret not in text
    assert token_of(link) not in text


# -- sessions ------------------------------------------------------------------------


def test_sessions_are_signed_and_only_digests_are_stored(runtime: Runtime) -> None:
    account_id = make(runtime)
    ticket = accounts.open_session(runtime, account_id, "203.0.113.5", "Firefox", now=T0)
    assert ticket.expires_at == T0 + timedelta(hours=72)
    assert "cookie_value" not in repr(ticket) and ticket.cookie_value not in repr(ticket)
    session_id, _, signature = ticket.cookie_value.partition(".")
    info = accounts.resolve_session(runtime, ticket.cookie_value, now=T0)
    assert info is not None
    assert info.account.email == "ed@example.org" and info.csrf_token == ticket.csrf_token
    assert info.actor == Actor.account(account_id, "ed@example.org", "editor")
    with runtime.sessions() as session:
        row = session.scalars(select(AccountSession)).one()
    assert row.token_hash == hashlib.sha256(session_id.encode()).hexdigest()
    assert (row.client, row.user_agent) == (
        "203.0.113.5",
        "Firefox",
    )
    flipped = "A" if signature[0] != "A" else "B"
    other_id = "B" * 43 if session_id != "B" * 43 else "C" * 43
    for forged in (
        f"{session_id}.{flipped}{signature[1:]}",
        f"{other_id}.{signature}",
        session_id,
        f"{session_id}.",
        f"{ticket.cookie_value}x",
        "",
        "garbage",
    ):
        assert accounts.resolve_session(runtime, forged, now=T0) is None, forged


def test_a_cookie_signed_with_another_key_is_refused(runtime: Runtime, settings: Settings) -> None:
    account_id = make(runtime)
    ticket = accounts.open_session(runtime, account_id, "x", "y")
    rotated = Runtime(settings.model_copy(update={"secret_key": SecretStr("another-key-" * 4)}))
    try:
        assert accounts.resolve_session(rotated, ticket.cookie_value) is None
    finally:
        rotated.close()


def test_idle_sessions_expire(runtime: Runtime) -> None:
    account_id = make(runtime)
    ticket = accounts.open_session(runtime, account_id, "x", "y", now=T0)
    cookie = ticket.cookie_value

    def last_seen() -> datetime:
        with runtime.sessions() as session:
            return session.scalars(select(AccountSession.last_seen_at)).one()

    # Refreshed at most once a minute.
    assert accounts.resolve_session(runtime, cookie, now=T0 + timedelta(seconds=30))
    assert last_seen() == T0
    assert accounts.resolve_session(runtime, cookie, now=T0 + timedelta(seconds=61))
    assert last_seen() == T0 + timedelta(seconds=61)
    # Each request keeps it alive for another 480 minutes.
    at = T0 + timedelta(minutes=479)
    assert accounts.resolve_session(runtime, cookie, now=at)
    assert accounts.resolve_session(runtime, cookie, now=at + timedelta(minutes=479))
    assert accounts.resolve_session(runtime, cookie, now=at + timedelta(minutes=959)) is None
    # Ended for good: a later request cannot revive it.
    assert accounts.resolve_session(runtime, cookie, now=at + timedelta(minutes=479)) is None


def test_sessions_end_at_their_absolute_expiry(settings: Settings) -> None:
    runtime = Runtime(settings.model_copy(update={"session_max_hours": 2}))
    try:
        account_id = make(runtime)
        ticket = accounts.open_session(runtime, account_id, "x", "y", now=T0)
        assert ticket.expires_at == T0 + timedelta(hours=2)
        at = T0
        while at < T0 + timedelta(hours=2) - timedelta(minutes=20):
            at += timedelta(minutes=20)  # busy: never idle
            assert accounts.resolve_session(runtime, ticket.cookie_value, now=at) is not None
        assert (
            accounts.resolve_session(runtime, ticket.cookie_value, now=T0 + timedelta(hours=2))
            is None
        )
    finally:
        runtime.close()


def test_close_session_signs_out_and_roles_apply_at_the_next_request(
    runtime: Runtime,
) -> None:
    make(runtime, "boss@example.org", "admin")
    account_id = make(runtime)
    ticket = accounts.open_session(runtime, account_id, "x", "y")
    accounts.change_role(runtime, ADMIN, "ed@example.org", "admin")
    info = accounts.resolve_session(runtime, ticket.cookie_value)
    assert info is not None and info.actor.is_admin and info.account.role == "admin"
    accounts.close_session(runtime, ticket.cookie_value)
    assert accounts.resolve_session(runtime, ticket.cookie_value) is None
    accounts.close_session(runtime, ticket.cookie_value)  # twice, or a bad cookie: nothing
    accounts.close_session(runtime, "garbage")
    with runtime.sessions() as session:
        ended = session.scalars(select(AccountSession.ended_at)).one()
    assert ended is not None
    # Dead sessions are cleared when the account next signs in.
    accounts.open_session(runtime, account_id, "x", "y")
    with runtime.sessions() as session:
        assert len(session.scalars(select(AccountSession)).all()) == 1


def test_open_session_needs_a_secret_key(settings: Settings) -> None:
    runtime = Runtime(settings.model_copy(update={"secret_key": None}))
    try:
        account_id = make(runtime)
        with pytest.raises(ConfigError, match="MAILER_SECRET_KEY"):
            accounts.open_session(runtime, account_id, "x", "y")
    finally:
        runtime.close()
