"""`mailer accounts` and `mailer audit` from the command line."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher, Type
from typer.testing import CliRunner

from mailer.accounts import passwords
from mailer.app import accounts
from mailer.cli import app
from mailer.cli.common import load_settings
from mailer.runtime import Runtime

runner = CliRunner()
PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def _fast_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        passwords,
        "HASHER",
        PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=Type.ID),
    )


def invoke(*args: str, code: int = 0, input: str | None = None) -> str:
    result = runner.invoke(app, list(args), input=input)
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout if code == 0 else result.stderr


def as_json(*args: str) -> Any:
    return json.loads(invoke(*args, "--json"))


def signs_in(email: str, password: str) -> bool:
    runtime = Runtime(load_settings())
    try:
        accounts.authenticate(runtime, email, password, "cli-test", now=datetime.now(UTC))
        return True
    except accounts.AuthenticationFailed:
        return False
    finally:
        runtime.close()


def test_create_prints_a_one_time_link(cli_env: Path) -> None:
    out = invoke("accounts", "create", "Boss@Example.org", "--role", "admin")
    assert "account boss@example.org created (admin)" in out
    link = out.strip().splitlines()[-1]
    assert link.startswith("https://news.example.org/signin/link/")
    runtime = Runtime(load_settings())
    try:
        assert accounts.check_sign_in_link(runtime, link.rsplit("/", 1)[1]) == "boss@example.org"
    finally:
        runtime.close()
    listed = as_json("accounts", "list")
    assert [(a["email"], a["role"], a["disabled"], a["has_password"]) for a in listed] == [
        ("boss@example.org", "admin", False, False)
    ]


def test_create_with_a_password_asked_twice_or_read_from_the_environment(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = invoke(
        "accounts",
        "create",
        "ed@example.org",
        "--role",
        "editor",
        "--password-prompt",
        input=f"{PASSWORD}\nnot the same one\n{PASSWORD}\n{PASSWORD}\n",
    )
    assert "do not match" in out and PASSWORD not in out and "signin/link" not in out
    assert signs_in("ed@example.org", PASSWORD)

    monkeypatch.setenv("MAILER_ACCOUNT_PASSWORD", "from the environment")
    created = as_json(
        "accounts", "create", "bot@example.org", "--role", "editor", "--password-prompt"
    )
    assert created["has_password"] and created["sign_in_link"] is None
    assert signs_in("bot@example.org", "from the environment")
    # Without --password-prompt the variable is not used: a link, as always.
    created = as_json("accounts", "create", "new@example.org", "--role", "editor")
    assert not created["has_password"] and created["sign_in_link"]


def test_refusals_are_errors_that_change_nothing(cli_env: Path) -> None:
    error = invoke(
        "accounts",
        "create",
        "ed@example.org",
        "--role",
        "editor",
        "--password-prompt",
        input="short\nshort\n",
        code=1,
    )
    assert "at least 12 characters" in error
    assert "use admin or editor" in invoke(
        "accounts", "create", "ed@example.org", "--role", "owner", code=1
    )
    refused = invoke("accounts", "create", "nobody", "--role", "editor", code=1)
    assert "must have an @-sign" in refused
    assert as_json("accounts", "list") == []
    invoke("accounts", "create", "ed@example.org", "--role", "editor")
    assert "exists" in invoke("accounts", "create", "ED@example.org", "--role", "admin", code=1)
    assert "no account" in invoke("accounts", "disable", "who@example.org", code=1)


def test_disable_enable_reset_role(cli_env: Path) -> None:
    invoke("accounts", "create", "boss@example.org", "--role", "admin")
    invoke(
        "accounts",
        "create",
        "ed@example.org",
        "--role",
        "editor",
        "--password-prompt",
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )
    error = invoke("accounts", "disable", "boss@example.org", code=1)
    assert "last enabled administrator" in " ".join(error.split())
    assert "last enabled administrator" in " ".join(
        invoke("accounts", "role", "boss@example.org", "editor", code=1).split()
    )
    assert "disabled" in invoke("accounts", "disable", "ed@example.org")
    assert not signs_in("ed@example.org", PASSWORD)
    assert "enabled" in invoke("accounts", "enable", "ed@example.org")
    assert signs_in("ed@example.org", PASSWORD)
    out = invoke("accounts", "reset", "ed@example.org")
    assert "password cleared" in out and "/signin/link/" in out.strip().splitlines()[-1]
    assert not signs_in("ed@example.org", PASSWORD)
    out = invoke(
        "accounts",
        "reset",
        "ed@example.org",
        "--password-prompt",
        input="a fresh long password\na fresh long password\n",
    )
    assert "password set" in out and "signin/link" not in out
    assert signs_in("ed@example.org", "a fresh long password")
    assert "is now admin" in invoke("accounts", "role", "ed@example.org", "admin")
    assert "0 sessions ended" in invoke("accounts", "end-sessions", "ed@example.org")
    table = invoke("accounts", "list")
    assert "ed@example.org" in table and "boss@example.org" in table
    listed = {a["email"]: a for a in as_json("accounts", "list")}
    assert listed["ed@example.org"]["role"] == "admin"
    assert listed["ed@example.org"]["last_sign_in_at"] is not None


def test_audit_list(cli_env: Path) -> None:
    invoke("accounts", "create", "boss@example.org", "--role", "admin")
    invoke(
        "accounts",
        "create",
        "ed@example.org",
        "--role",
        "editor",
        "--password-prompt",
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )
    invoke("accounts", "disable", "ed@example.org")
    entries = as_json("audit", "list")
    assert [e["action"] for e in entries] == [
        "account.disable",
        "account.create",
        "account.create",
    ]
    assert entries[0]["target"] == "account:2" and entries[0]["actor"].startswith("cli:")
    assert entries[0]["before"] == {"email": "ed@example.org", "disabled": False}
    assert PASSWORD not in json.dumps(entries) and "$argon2" not in json.dumps(entries)
    assert [e["id"] for e in as_json("audit", "list", "--limit", "1")] == [entries[0]["id"]]
    assert len(as_json("audit", "list", "--action", "account.create")) == 2
    assert [e["target"] for e in as_json("audit", "list", "--target", "account:1")] == ["account:1"]
    assert len(as_json("audit", "list", "--target", "account")) == 3
    assert as_json("audit", "list", "--target", "edition") == []
    assert "KIND:ID" in invoke("audit", "list", "--target", ":3", code=1)
    table = invoke("audit", "list")
    assert "account.disable" in table and "cli:" in table
