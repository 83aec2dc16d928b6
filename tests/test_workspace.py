"""The workspace over real HTTP: sign-in, sessions, CSRF, roles, and what editors do.

Every test runs on SQLite and PostgreSQL, against the app on a live uvicorn.
"""

from __future__ import annotations

import re
from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlalchemy import select, update

from mailer.accounts.models import AccountSession, AuditEntry, SignInThrottle
from mailer.app import accounts, sources
from mailer.app.actors import Actor
from mailer.db.models import Briefing, Edition, EditionBriefing
from mailer.db.session import transaction
from mailer.runtime import Runtime
from mailer.web.security import PREVIEW_HEADERS
from tests import factories
from tests.workspace import PASSWORD, account, csrf_in, page_csrf, serve, sign_in, signed_in

ELEVEN = [f"t{i}@news.example.org" for i in range(11)]


@pytest.fixture
def edition_id(runtime: Runtime) -> int:
    newsletter_id = factories.newsletter(runtime)
    factories.subscribers(runtime, 3)
    return factories.edition(runtime, newsletter_id)


def subject_of(runtime: Runtime, edition_id: int) -> str:
    with runtime.sessions() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        return edition.subject


def order_of(runtime: Runtime, edition_id: int) -> list[int]:
    with runtime.sessions() as session:
        return list(
            session.scalars(
                select(EditionBriefing.briefing_id)
                .where(EditionBriefing.edition_id == edition_id)
                .order_by(EditionBriefing.position)
            )
        )


def test_signing_in_sets_a_safe_cookie_and_refuses_alike(runtime: Runtime) -> None:
    account(runtime, "ed@news.example.org")
    with serve(runtime) as site, site.client() as client:
        assert client.get("/").status_code == 303  # to the sign-in page
        assert client.get("/").headers["location"].startswith("/signin?next=")
        unknown = sign_in(client, "nobody@news.example.org", expect=401)
        wrong = sign_in(client, "ed@news.example.org", "wrong password!", expect=401)
        # The same answer, whether or not the account exists.
        message = re.compile(r'id="signin-error"[^>]*>([^<]+)<')
        assert message.search(unknown.text)[1] == message.search(wrong.text)[1]  # type: ignore[index]
        answer = sign_in(client, "ed@news.example.org")
        cookie = answer.headers["set-cookie"]
        assert "mailer_session=" in cookie and "HttpOnly" in cookie
        assert "samesite=lax" in cookie.lower() and "Secure" not in cookie  # plain http here
        home = client.get("/")
        assert home.status_code == 200 and "ed@news.example.org" in home.text
        for name in ("Content-Security-Policy", "X-Frame-Options", "Referrer-Policy"):
            assert name in home.headers
        assert "script-src 'self'" in home.headers["Content-Security-Policy"]


def test_an_https_site_makes_its_cookies_secure(runtime: Runtime) -> None:
    account(runtime, "ed@news.example.org")
    with serve(runtime, https=True) as site, site.client() as client:
        form = client.get("/signin")
        assert "Secure" in form.headers["set-cookie"]
        # httpx keeps Secure cookies off plain http, as a browser does: send it by hand.
        token = form.cookies["mailer_signin"]
        answer = client.post(
            "/signin",
            data={"email": "ed@news.example.org", "password": PASSWORD, "csrf": csrf_in(form.text)},
            headers={"Cookie": f"mailer_signin={token}"},
        )
        assert answer.status_code == 303
        cookie = answer.headers["set-cookie"]
        assert "mailer_session=" in cookie and "Secure" in cookie and "HttpOnly" in cookie


def test_a_redirect_after_sign_in_stays_on_this_site(runtime: Runtime) -> None:
    account(runtime, "ed@news.example.org")
    with serve(runtime) as site, site.client() as client:
        form = client.get("/signin")
        answer = client.post(
            "/signin",
            data={
                "email": "ed@news.example.org",
                "password": PASSWORD,
                "csrf": csrf_in(form.text),
                "next": "//evil.example/steal",
            },
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/"


def test_the_sign_in_form_needs_its_own_token(runtime: Runtime) -> None:
    account(runtime, "ed@news.example.org")
    with serve(runtime) as site, site.client() as client:
        client.get("/signin")
        answer = client.post(
            "/signin", data={"email": "ed@news.example.org", "password": PASSWORD, "csrf": "x"}
        )
        assert answer.status_code == 400 and "mailer_session" not in answer.headers.get(
            "set-cookie", ""
        )


def test_a_form_without_or_with_a_wrong_csrf_token_changes_nothing(
    runtime: Runtime, edition_id: int
) -> None:
    with serve(runtime) as site, signed_in(site, "ed@news.example.org") as client:
        before = subject_of(runtime, edition_id)
        path = f"/editions/{edition_id}/retitle"
        for data in ({"subject": "Forged"}, {"subject": "Forged", "csrf": "not-the-token"}):
            answer = client.post(path, data=data)
            assert answer.status_code == 403
        forged = client.post(path, data={"subject": "Forged"}, headers={"X-CSRF-Token": "nope"})
        assert forged.status_code == 403
        assert subject_of(runtime, edition_id) == before
        token = page_csrf(client, f"/editions/{edition_id}")
        done = client.post(path, data={"subject": "A subject of our own", "csrf": token})
        assert done.status_code == 303
        assert subject_of(runtime, edition_id) == "A subject of our own"
        with runtime.sessions() as session:
            entry = session.scalars(
                select(AuditEntry).where(AuditEntry.action == "edition.retitle")
            ).one()
        assert entry.actor == "account:ed@news.example.org"
        assert entry.after and "A subject of our own" in str(entry.after)


def test_an_editor_cannot_reach_admin_pages(runtime: Runtime) -> None:
    with serve(runtime) as site:
        with signed_in(site, "ed@news.example.org") as editor:
            for path in ("/admin/accounts", "/admin/audit"):
                assert editor.get(path).status_code == 403
            token = page_csrf(editor)
            made = editor.post(
                "/admin/accounts",
                data={"email": "x@news.example.org", "role": "admin", "csrf": token},
            )
            assert made.status_code == 403
        with signed_in(site, "boss@news.example.org", role="admin") as admin:
            assert admin.get("/admin/accounts").status_code == 200
            assert "ed@news.example.org" in admin.get("/admin/accounts").text
            assert admin.get("/admin/audit").status_code == 200
    listed = {a.email for a in accounts.list_accounts(runtime, Actor.cli())}
    assert "x@news.example.org" not in listed


def test_a_disabled_accounts_session_stops_at_its_next_request(runtime: Runtime) -> None:
    with serve(runtime) as site, signed_in(site, "ed@news.example.org") as client:
        assert client.get("/").status_code == 200
        accounts.disable_account(runtime, Actor.cli(), "ed@news.example.org")
        answer = client.get("/")
        assert answer.status_code == 303 and answer.headers["location"].startswith("/signin")
        with runtime.sessions() as session:
            assert all(s.ended_at for s in session.scalars(select(AccountSession)))


def test_an_expired_session_signs_out(runtime: Runtime) -> None:
    with serve(runtime) as site, signed_in(site, "ed@news.example.org") as client:
        with transaction(runtime.sessions) as session:
            idle = timedelta(minutes=runtime.settings.session_idle_minutes + 1)
            for row in session.scalars(select(AccountSession)):
                row.last_seen_at = row.last_seen_at - idle
        assert client.get("/").status_code == 303


def test_the_sixth_wrong_password_locks_out_even_the_right_one(runtime: Runtime) -> None:
    account(runtime, "ed@news.example.org")
    with serve(runtime) as site, site.client() as client:
        for _ in range(5):
            sign_in(client, "ed@news.example.org", "not my password", expect=401)
        refused = sign_in(client, "ed@news.example.org", PASSWORD, expect=429)
        assert int(refused.headers["retry-after"]) >= 1
        assert "mailer_session" not in refused.headers.get("set-cookie", "")
        # Once the wait has passed, the right password works again.
        with transaction(runtime.sessions) as session:
            session.execute(update(SignInThrottle).values(blocked_until=None, failures=0))
        sign_in(client, "ed@news.example.org", PASSWORD)


def test_sign_out_ends_the_session(runtime: Runtime) -> None:
    with serve(runtime) as site, signed_in(site, "ed@news.example.org") as client:
        token = page_csrf(client)
        cookie = client.cookies.get("mailer_session")
        assert client.post("/signout", data={"csrf": token}).status_code == 303
        with site.client() as other:
            other.cookies.set("mailer_session", cookie or "")
            assert other.get("/").status_code == 303


def test_a_one_time_link_sets_a_password_once(runtime: Runtime) -> None:
    _made, link = accounts.create_account(runtime, Actor.cli(), "new@news.example.org", "editor")
    assert link is not None
    path = "/" + link.split("/", 3)[3]
    with serve(runtime) as site, site.client() as client:
        form = client.get(path)
        assert form.status_code == 200 and "new@news.example.org" in form.text
        data = {"password": "a long new password", "confirm": "a long new password"}
        done = client.post(path, data={**data, "csrf": csrf_in(form.text)})
        assert done.status_code == 303 and "mailer_session" in done.headers["set-cookie"]
        assert client.get("/").status_code == 200
    with serve(runtime) as site, site.client() as client:
        assert client.get(path).status_code == 400  # used
        sign_in(client, "new@news.example.org", "a long new password")


def test_editing_through_the_workspace(runtime: Runtime, edition_id: int) -> None:
    with serve(runtime) as site, signed_in(site, "ed@news.example.org") as client:
        page = client.get(f"/editions/{edition_id}")
        assert page.status_code == 200
        token = csrf_in(page.text)
        first, second, *_ = order_of(runtime, edition_id)
        moved = client.post(
            f"/editions/{edition_id}/items/{second}/move",
            data={"offset": "-1", "csrf": token},
            headers={"HX-Request": "true"},
        )
        assert moved.status_code == 200 and 'id="edition"' in moved.text
        assert order_of(runtime, edition_id)[:2] == [second, first]
        client.post(
            f"/editions/{edition_id}/items/{second}/headline",
            data={"headline": "Short <b>headline</b>", "csrf": token},
        )
        page = client.get(f"/editions/{edition_id}").text
        # Escaped wherever it shows: the editor typed markup, the page shows text.
        assert "Short &lt;b&gt;headline&lt;/b&gt;" in page and "Short <b>" not in page
        frame = client.get(f"/editions/{edition_id}/preview")
        assert frame.status_code == 200
        assert "Short &lt;b&gt;headline&lt;/b&gt;" in frame.text
        for name, value in PREVIEW_HEADERS.items():
            assert frame.headers[name] == value
        # A preview carries no working token: its links lead to the harmless page.
        assert "/preview/link" in frame.text and "/u/" not in frame.text
        harmless = client.get("/preview/link")
        assert harmless.status_code == 200 and "preview" in harmless.text.lower()


def test_preview_as_a_subscriber_fills_their_name_but_no_token(
    runtime: Runtime, edition_id: int
) -> None:
    with serve(runtime) as site, signed_in(site, "ed@news.example.org") as client:
        frame = client.get(
            f"/editions/{edition_id}/preview", params={"as": "reader00002@example.com"}
        )
        assert frame.status_code == 200 and "Sent to reader00002@example.com" in frame.text
        assert "/u/" not in frame.text
        text = client.get(
            f"/editions/{edition_id}/preview.txt", params={"as": "reader00002@example.com"}
        )
        assert "/preview/link" in text.text and "/u/" not in text.text
        missing = client.get(f"/editions/{edition_id}/preview", params={"as": "nobody@example.com"})
        assert missing.status_code == 404


def test_a_test_send_arrives_marked_and_harmless(runtime: Runtime, edition_id: int) -> None:
    with serve(runtime) as site, signed_in(site, "ed@news.example.org") as client:
        token = page_csrf(client, f"/editions/{edition_id}")
        answer = client.post(
            f"/editions/{edition_id}/test-send",
            data={"addresses": "desk@news.example.org, chief@news.example.org", "csrf": token},
        )
        assert answer.status_code == 303
        too_many = client.post(
            f"/editions/{edition_id}/test-send",
            data={
                "addresses": " ".join(f"t{i}@news.example.org" for i in range(11)),
                "csrf": token,
            },
        )
        assert too_many.status_code == 422
    files = sorted(Path(runtime.settings.outbox_dir).rglob("*.eml"))
    assert len(files) == 2 and all("test" in str(f.parent) for f in files)
    for path in files:
        message = message_from_bytes(path.read_bytes(), policy=policy.default)
        assert str(message["Subject"]).startswith("[TEST]")
        assert "/u/" not in path.read_text(errors="replace")
    with runtime.sessions() as session:
        assert session.scalar(select(Edition.status).where(Edition.id == edition_id)) == "ready"


def test_a_correction_shows_in_the_inbox_and_the_draft(runtime: Runtime, edition_id: int) -> None:
    with runtime.sessions() as session:
        briefing_id = session.scalars(
            select(EditionBriefing.briefing_id).where(EditionBriefing.edition_id == edition_id)
        ).first()
    assert briefing_id is not None
    with serve(runtime) as site, signed_in(site, "ed@news.example.org") as client:
        token = page_csrf(client, f"/briefings/{briefing_id}")
        done = client.post(
            f"/briefings/{briefing_id}/correct",
            data={"title": "Corrected <i>headline</i>", "lead": "", "csrf": token},
        )
        assert done.status_code == 303
        inbox = client.get("/briefings").text
        assert "Corrected &lt;i&gt;headline&lt;/i&gt;" in inbox
        frame = client.get(f"/editions/{edition_id}/preview").text
        assert "Corrected &lt;i&gt;headline&lt;/i&gt;" in frame
    with runtime.sessions() as session:
        row = session.get(Briefing, briefing_id)
        assert row is not None and row.edited_by == "account:ed@news.example.org"


def test_status_and_stats_json_need_a_session_or_a_token(runtime: Runtime, edition_id: int) -> None:
    with serve(runtime) as site:
        with site.client() as anonymous:
            assert anonymous.get("/status").status_code == 401
            assert anonymous.get(f"/editions/{edition_id}/stats.json").status_code == 401
            forged = anonymous.get("/status", headers={"Authorization": "Bearer mlr_forged"})
            assert forged.status_code == 401
        token = sources.create_api_token(runtime, Actor.cli(), "monitor")
        with site.client() as machine:
            machine.headers["Authorization"] = f"Bearer {token}"
            assert machine.get("/status").status_code == 200
            assert (
                machine.get(f"/editions/{edition_id}/stats.json").json()["edition_id"] == edition_id
            )
        with signed_in(site, "ed@news.example.org") as client:
            assert client.get("/status").status_code == 200
            assert client.get(f"/editions/{edition_id}/stats").status_code == 200
            old = client.get(f"/admin/editions/{edition_id}/stats")
            assert old.status_code == 308


def test_every_page_answers_for_an_editor(runtime: Runtime, edition_id: int) -> None:
    with serve(runtime) as site, signed_in(site, "ed@news.example.org") as client:
        for path in (
            "/",
            "/briefings",
            "/editions",
            f"/editions/{edition_id}",
            f"/editions/{edition_id}?view=text",
            f"/editions/{edition_id}/checks?links=0",
            f"/editions/{edition_id}/progress",
            "/stats",
        ):
            answer = client.get(path)
            assert answer.status_code == 200, (path, answer.text[:300])
        assert client.get("/editions/999999").status_code == 404


def test_addresses_are_suggested_as_they_are_typed(runtime: Runtime, edition_id: int) -> None:
    with serve(runtime) as site, signed_in(site, "ed@news.example.org") as client:
        path = f"/editions/{edition_id}/subscribers"
        found = client.get(path, params={"as": "Reader0000"}).text
        assert re.findall(r'<option value="([^"]+)">', found) == [
            "reader00001@example.com",
            "reader00002@example.com",
            "reader00003@example.com",
        ]
        assert "option" not in client.get(path, params={"as": "r"}).text
        assert "option" not in client.get(path, params={"as": "zz"}).text
