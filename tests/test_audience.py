"""Operators and their audience: subscribers, lists and segments through the application
layer, the command line and the admin pages (real HTTP), on both databases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from typer.testing import CliRunner

from mailer.accounts.models import Role
from mailer.app import lists, segments, subscribers
from mailer.app.actors import Actor
from mailer.app.errors import Conflict, Invalid, NotFound, PermissionDenied
from mailer.cli import app as cli
from mailer.runtime import Runtime
from subscribers import erased
from tests import factories
from tests.test_erasure import tables_holding
from tests.workspace import csrf_in, page_csrf, serve, signed_in

ADMIN = Actor.cli()
EDITOR = Actor("account:ed@example.org", Role.EDITOR, None)
runner = CliRunner()


def test_search_pages_by_keyset_and_filters(runtime: Runtime) -> None:
    factories.newsletter(runtime)
    factories.subscribers(runtime, 25)
    factories.subscribers(runtime, 5, list_name="evening", prefix="night")
    first = subscribers.search_subscribers(runtime, ADMIN, limit=10)
    second = subscribers.search_subscribers(runtime, ADMIN, limit=10, after_id=first[-1].id)
    assert [r.id for r in first + second] == sorted({r.id for r in first + second})
    assert first[-1].id < second[0].id
    everyone: list[int] = []
    after = None
    while page := subscribers.search_subscribers(runtime, ADMIN, limit=7, after_id=after):
        everyone += [r.id for r in page]
        after = page[-1].id
    assert len(everyone) == len(set(everyone)) == 30

    by_prefix = subscribers.search_subscribers(runtime, ADMIN, query="reader0001")
    assert [r.email for r in by_prefix] == [f"reader{i:05d}@example.com" for i in range(10, 20)]
    by_name = subscribers.search_subscribers(runtime, ADMIN, query="ader 2")
    assert {r.name for r in by_name} >= {"Reader 2", "Reader 20"}
    evening = subscribers.search_subscribers(runtime, ADMIN, list_name="evening", status="active")
    assert [r.lists for r in evening] == [("evening",)] * 5
    with pytest.raises(Invalid):
        subscribers.search_subscribers(runtime, ADMIN, status="sleeping")
    with pytest.raises(NotFound):
        subscribers.search_subscribers(runtime, ADMIN, list_name="nope")
    with pytest.raises(PermissionDenied):
        subscribers.search_subscribers(runtime, EDITOR)


def test_a_name_search_folds_case_takes_wildcards_as_text_and_needs_three_letters(
    runtime: Runtime,
) -> None:
    for email, name in [
        ("ann@example.com", "Ann O'Hara"),
        ("bo@example.com", "100% Bo_Diddley"),
        ("cy@example.com", "Cyrus Hannah"),
        ("dee@example.com", "Dee 100 Bo"),
        ("lloyd@example.com", "Lloyd Webber"),  # "o_d" read as a pattern would match
        ("ab@example.com", "A/B Testers"),
        ("win@example.com", "C:\\Users\\Win"),
        ("wang@example.com", "王五"),
    ]:
        subscribers.add_subscriber(runtime, ADMIN, email=email, name=name)

    def names(query: str) -> list[str | None]:
        return [r.name for r in subscribers.search_subscribers(runtime, ADMIN, query=query)]

    assert names("ANNA") == ["Cyrus Hannah"]
    assert names("ANN O") == ["Ann O'Hara"]
    assert names("o'h") == ["Ann O'Hara"]
    assert names("0% b") == ["100% Bo_Diddley"]  # '%' and '_' are letters here, not wildcards
    assert names("o_d") == ["100% Bo_Diddley"]
    assert names("0 b") == ["Dee 100 Bo"]
    assert names("a/b t") == ["A/B Testers"]  # '/' is the escape character of our LIKE
    assert names(":\\users\\") == ["C:\\Users\\Win"]
    assert [r.email for r in subscribers.search_subscribers(runtime, ADMIN, query="bo")] == [
        "bo@example.com"  # an address prefix, whatever its length
    ]
    with pytest.raises(Invalid, match="at least 3 characters"):
        subscribers.search_subscribers(runtime, ADMIN, query="nn")
    # A name of two characters in a script whose names are that short is searched.
    assert names("王五") == ["王五"]


def test_a_name_search_reads_the_trigram_index_on_postgresql(runtime: Runtime) -> None:
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no trigram index: it scans the names")
    subscribers.add_subscriber(runtime, ADMIN, email="cy@example.com", name="Cyrus Hannah")
    sent: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "ILIKE" in statement:
            sent.append((statement, params))

    event.listen(runtime.engine, "before_cursor_execute", record)
    try:
        found = subscribers.search_subscribers(runtime, ADMIN, query="hannah")
    finally:
        event.remove(runtime.engine, "before_cursor_execute", record)
    assert [r.name for r in found] == ["Cyrus Hannah"]
    ((statement, params),) = sent  # the search's own statement, as it went to the server
    with runtime.engine.connect() as connection:
        # The table is small here: without these the planner reads it, or its id order.
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
        connection.exec_driver_sql("SET LOCAL enable_indexscan = off")
        plan = "\n".join(r[0] for r in connection.exec_driver_sql("EXPLAIN " + statement, params))
    assert "ix_subscribers_name_trgm" in plan


def test_add_edit_memberships_remove_and_erase(runtime: Runtime) -> None:
    lists.create_list(runtime, ADMIN, "morning", opt_in="single", public=True)
    lists.create_list(runtime, ADMIN, "evening")
    added = subscribers.add_subscriber(
        runtime,
        ADMIN,
        "Ann@Example.com",
        name="Ann",
        lists=["morning"],
        attributes={"plan": "pro"},
        timezone="Europe/Paris",
    )
    assert added.email == "ann@example.com"
    assert [(m.list, m.status) for m in added.memberships] == [("morning", "active")]
    assert [c["kind"] for c in added.consents] == ["operator"]
    with pytest.raises(Conflict):
        subscribers.add_subscriber(runtime, ADMIN, "ann@example.com")
    with pytest.raises(Invalid):
        subscribers.add_subscriber(runtime, ADMIN, "x@example.com", timezone="Mars/Base")

    edited = subscribers.edit_subscriber(runtime, ADMIN, added.id, name="Ann Lee", timezone="")
    assert (edited.name, edited.timezone) == ("Ann Lee", None)
    moved = subscribers.set_memberships(
        runtime, ADMIN, "ann@example.com", {"morning": "unsubscribed", "evening": "active"}
    )
    assert {m.list: m.status for m in moved.memberships} == {
        "evening": "active",
        "morning": "unsubscribed",
    }
    data = subscribers.export_subscriber_data(runtime, ADMIN, added.id)
    assert data["profile"]["name"] == "Ann Lee"

    subscribers.erase_subscriber(runtime, ADMIN, added.id)
    with runtime.sessions() as session:
        assert tables_holding(session, "ann@example.com") == []
        assert erased.was_erased(session, runtime.settings.require_secret_key(), "ann@example.com")
    with pytest.raises(Conflict, match="erased"):
        subscribers.add_subscriber(runtime, ADMIN, "ann@example.com")
    again = subscribers.add_subscriber(runtime, ADMIN, "ann@example.com", override_suppression=True)
    subscribers.remove_subscriber(runtime, ADMIN, again.id)
    with pytest.raises(NotFound):
        subscribers.get_subscriber(runtime, ADMIN, again.id)


def test_lists_and_segments(runtime: Runtime) -> None:
    factories.newsletter(runtime, lists=("morning",))
    factories.subscribers(runtime, 4)
    info = lists.set_list(runtime, ADMIN, "morning", opt_in="single", public=True)
    assert (info.active, info.opt_in, info.public, info.newsletters) == (
        4,
        "single",
        True,
        ("daily",),
    )
    with pytest.raises(Conflict, match="daily"):
        lists.delete_list(runtime, ADMIN, "morning")
    lists.create_list(runtime, ADMIN, "spare")
    assert lists.rename_list(runtime, ADMIN, "spare", "spare2").name == "spare2"
    with pytest.raises(Invalid):
        lists.set_list(runtime, ADMIN, "spare2", opt_in="triple")
    assert lists.delete_list(runtime, ADMIN, "spare2") == "spare2"

    rule = {"conditions": [{"field": "email", "op": "ends_with", "value": "1@example.com"}]}
    assert segments.count_segment(runtime, ADMIN, rule) == 1
    with pytest.raises(Invalid, match=r"conditions\[1\]"):
        segments.count_segment(
            runtime, ADMIN, {"conditions": [rule["conditions"][0], {"field": "x", "op": "eq"}]}
        )
    segments.create_segment(runtime, ADMIN, "ones", rule)
    assert segments.attach_segment(runtime, ADMIN, "daily", "ones") == "ones"
    with pytest.raises(Conflict):
        segments.delete_segment(runtime, ADMIN, "ones")
    assert segments.list_segments(runtime, ADMIN)[0].newsletters == ("daily",)
    segments.attach_segment(runtime, ADMIN, "daily", None)
    assert segments.delete_segment(runtime, ADMIN, "ones") == "ones"


def invoke(*args: str, code: int = 0) -> str:
    result = runner.invoke(cli, list(args))
    assert result.exit_code == code, result.output
    return result.stdout if code == 0 else result.stderr


def test_the_command_line(
    cli_env: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILER_SECRET_KEY", "s" * 40)
    invoke("db", "upgrade")
    made: Any = json.loads(invoke("lists", "create", "morning", "--opt-in", "single", "--json"))
    assert made["opt_in"] == "single"
    added = json.loads(
        invoke(
            "subscribers",
            "add",
            "bo@example.com",
            "--list",
            "morning",
            "--attribute",
            "age=41",
            "--json",
        )
    )
    assert added["attributes"] == {"age": 41}
    invoke("subscribers", "add", "cy@example.com", "--list", "morning")
    found = json.loads(invoke("subscribers", "search", "bo", "--json"))
    assert [s["email"] for s in found["subscribers"]] == ["bo@example.com"]
    paged = json.loads(invoke("subscribers", "search", "--limit", "1", "--json"))
    assert paged["next_after"] == added["id"]
    edited = json.loads(
        invoke(
            "subscribers",
            "edit",
            "bo@example.com",
            "--name",
            "Bo",
            "--membership",
            "morning=unsubscribed",
            "--json",
        )
    )
    assert edited["name"] == "Bo" and edited["memberships"][0]["status"] == "unsubscribed"
    data = json.loads(invoke("subscribers", "export-data", "bo@example.com"))
    assert data["profile"]["email"] == "bo@example.com"
    rule = '{"conditions": [{"field": "attributes.age", "op": "eq", "value": "41"}]}'
    invoke("segments", "create", "forties", "--rule", rule)
    assert json.loads(invoke("segments", "count", "forties", "--json")) == {"count": 1}
    assert "conditions[0]" in invoke(
        "segments", "count", "--rule", '{"conditions": [{"op": "eq"}]}', code=1
    )
    invoke("subscribers", "erase", "bo@example.com", "--yes")
    invoke("subscribers", "remove", "cy@example.com", "--yes")
    assert json.loads(invoke("lists", "list", "--json"))[0]["active"] == 0
    invoke("lists", "delete", "morning", "--yes")
    assert json.loads(invoke("segments", "list", "--json"))[0]["name"] == "forties"


def test_admin_pages(runtime: Runtime) -> None:
    factories.newsletter(runtime)
    factories.subscribers(runtime, 60)
    with serve(runtime) as site:
        with signed_in(site, "ed@example.org") as editor:
            for path in ("/admin/subscribers", "/admin/lists", "/admin/segments", "/admin/import"):
                assert editor.get(path).status_code == 403, path
        with signed_in(site, "admin@example.org", "admin") as client:
            listing = client.get("/admin/subscribers")
            assert listing.status_code == 200
            assert listing.text.count('data-subscriber="') == 50
            assert 'id="next-page"' in listing.text
            second = client.get("/admin/subscribers?after=50")
            assert second.text.count('data-subscriber="') == 10
            one = client.get("/admin/subscribers?q=reader00007")
            assert one.text.count('data-subscriber="') == 1
            token = csrf_in(listing.text)

            refused = client.post("/admin/subscribers", data={"email": "new@example.com"})
            assert refused.status_code == 403  # no CSRF token
            added = client.post(
                "/admin/subscribers",
                data={"email": "new@example.com", "lists": "morning", "csrf": token},
            )
            assert added.status_code == 303
            detail_path = added.headers["location"].split("?")[0]
            detail = client.get(detail_path)
            assert detail.status_code == 200 and "new@example.com" in detail.text
            subscriber_id = int(detail_path.rsplit("/", 1)[1])
            saved = client.post(
                f"{detail_path}/edit",
                data={
                    "email": "new@example.com",
                    "name": "Newt",
                    "status": "active",
                    "attributes": '{"plan": "free"}',
                    "csrf": token,
                },
            )
            assert saved.status_code == 303
            assert "Newt" in client.get(detail_path).text
            off = client.post(
                f"{detail_path}/memberships", data={"list:morning": "unsubscribed", "csrf": token}
            )
            assert off.status_code == 303
            download = client.get(f"{detail_path}/data.json")
            assert download.json()["profile"]["name"] == "Newt"
            assert "attachment" in download.headers["content-disposition"]
            unconfirmed = client.post(f"{detail_path}/erase", data={"csrf": token})
            assert unconfirmed.status_code == 422
            erased_now = client.post(
                f"{detail_path}/erase", data={"confirm": "erase", "csrf": token}
            )
            assert erased_now.status_code == 303
            with runtime.sessions() as session:
                assert tables_holding(session, "new@example.com") == []
            assert client.get(f"/admin/subscribers/{subscriber_id}").status_code == 404

            lists_page = client.get("/admin/lists")
            assert 'data-list="morning"' in lists_page.text
            used = client.post("/admin/lists/delete", data={"name": "morning", "csrf": token})
            assert used.status_code == 409 and "daily" in used.text
            created = client.post(
                "/admin/lists", data={"name": "weekly", "opt_in": "single", "csrf": token}
            )
            assert created.status_code == 303

            count = client.get(
                "/admin/segments/count",
                params={
                    "rule": '{"conditions": [{"field": "email", "op": "ends_with", '
                    '"value": "9@example.com"}]}'
                },
            )
            assert "6 subscribers match" in count.text
            bad = client.get("/admin/segments/count", params={"rule": '{"conditions": [{}]}'})
            assert "conditions[0]" in bad.text
            assert (
                client.post(
                    "/admin/segments",
                    data={"name": "nines", "rule": '{"conditions": []}', "csrf": token},
                ).status_code
                == 303
            )
            assert 'data-segment="nines"' in client.get("/admin/segments").text
            attach = client.post(
                "/admin/segments/attach",
                data={"newsletter": "daily", "segment": "nines", "csrf": token},
            )
            assert attach.status_code == 303

            exported = client.get("/admin/export.csv", params={"list": "morning"})
            assert exported.status_code == 200
            assert "text/csv" in exported.headers["content-type"]
            assert "reader00001@example.com" in exported.text
            assert "/admin/export.csv?list=morning" in client.get("/admin/lists").text

            form = client.get("/admin/import")
            assert form.status_code == 200
            csv_text = "email;name\nzed@example.com;Zed\nbad-address;Nobody\n"
            preview = client.post(
                "/admin/import/preview",
                data={"list": "weekly", "csrf": token},
                files={"file": ("people.csv", csv_text.encode("cp1252"), "text/csv")},
            )
            assert preview.status_code == 200 and "zed@example.com" in preview.text
            assert subscribers.search_subscribers(runtime, Actor.cli(), query="zed@") == []
            done = client.post(
                "/admin/import",
                data={
                    "list": "weekly",
                    "text": "email,name\nzed@example.com,Zed\n",
                    "filename": "people.csv",
                    "csrf": page_csrf(client, "/admin/import"),
                },
            )
            assert done.status_code == 200 and 'id="import-report"' in done.text
            assert [
                r.email for r in subscribers.search_subscribers(runtime, Actor.cli(), query="zed@")
            ] == ["zed@example.com"]
