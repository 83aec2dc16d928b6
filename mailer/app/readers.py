"""What readers do, without an account: sign up, confirm, manage their preferences, read
an edition on the web, take their data away or have it erased.

Each operation opens its own transaction and returns frozen values. Readers are not
accounts: the link they followed (a signed token from their own mailbox) is what lets
them act, and what they agree to is recorded as ``Consent`` rows; their other changes are
audited as ``reader:<subscriber id>`` with no address in the entry (an erasure must not
leave one behind in the audit log).

Answers never tell whether an address is known: a sign-up of a stranger, of a subscriber,
of a suppressed address and of a bot that filled the honeypot field all get the same
answer, and any email they cause is sent, or not, out of sight.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Generic, TypeVar
from zoneinfo import available_timezones

from markupsafe import escape
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from mailer.accounts import rate_limits
from mailer.accounts.models import Role
from mailer.app import audit
from mailer.app.actors import Actor
from mailer.app.errors import AppError, Conflict, Invalid, NotFound, RateLimited
from mailer.briefings.api_tokens import authenticate
from mailer.db.base import utcnow
from mailer.db.models import Edition, EditionStatus, Newsletter
from mailer.db.session import one_writer, transaction
from mailer.links import PREFERENCES_PATH
from mailer.rendering.personalize import new_nonce, personalize
from mailer.runtime import Runtime
from mailer.schedule.slots import ScheduleError, parse_timezone
from mailer.transports import transport_for
from mailer.transports.base import Envelope, Outcome, Recipient
from subscribers import erasure, personal_data, preferences, signup
from subscribers import unsubscribe as leaving
from subscribers.addresses import InvalidAddress, normalize_email
from subscribers.models import MailingList, Subscriber, SubscriberStatus, SubscriptionStatus
from subscribers.tokens import (
    Keys,
    TokenError,
    sign_confirmation,
    sign_email_change,
    sign_preferences,
    verify_confirmation,
    verify_edition_web,
    verify_email_change,
    verify_preferences,
    verify_unsubscribe,
)

__all__ = [
    "TokenError",
    "archive",
    "come_back",
    "confirm",
    "confirm_email_change",
    "confirmation",
    "edition_web",
    "email_change",
    "erase",
    "export_data",
    "leave",
    "pause",
    "preferences_page",
    "request_email_change",
    "resume",
    "set_lists",
    "set_timezone",
    "subscribe",
    "subscribe_api",
    "subscribe_form",
    "undo_unsubscribe",
    "unsubscribe",
    "unsubscribe_link",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_NAME = 200
SUBSCRIBE_WORDING = (
    "Yes, email me {newsletter} ({lists}). I can change my preferences or unsubscribe "
    "at any time with the link in every email."
)
COME_BACK_WORDING = "Yes, I want {lists} again. I confirm with the link emailed to me."
JOIN_WORDING = "Added on my preference page: {lists}."


def valid_timezones() -> tuple[str, ...]:
    return _zones()


@lru_cache(maxsize=1)
def _zones() -> tuple[str, ...]:
    # Only Area/Location names people pick (not "posixrules" or bare abbreviations).
    return tuple(sorted(z for z in available_timezones() if "/" in z and not z.startswith("Etc/")))


def _zone(value: str | None) -> str | None:
    value = (value or "").strip()
    if not value:
        return None
    try:
        return parse_timezone(value).key
    except ScheduleError as exc:
        raise Invalid(str(exc), "timezone") from exc


def _address(value: str, field: str = "email") -> str:
    try:
        return normalize_email(value)
    except InvalidAddress as exc:
        raise Invalid(str(exc), field) from exc


def _name(value: str | None) -> str | None:
    cleaned = " ".join((value or "").split())
    return cleaned[:MAX_NAME] or None


def mask(email: str) -> str:
    """Enough of the address to recognise it, not enough to harvest from a forwarded link."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}{'•' * min(max(len(local) - 1, 1), 6)}@{domain}"


# -- subscribing ----------------------------------------------------------------------


@dataclass(frozen=True)
class ListOption:
    id: int
    name: str
    description: str
    double_opt_in: bool


@dataclass(frozen=True)
class SubscribeForm:
    slug: str
    newsletter: str
    audience_note: str
    lists: tuple[ListOption, ...]
    timezones: tuple[str, ...]


@dataclass(frozen=True)
class SignupAnswer:
    """The same for every address (no enumeration): it depends on the lists only."""

    newsletter: str
    email: str
    confirm_by_email: bool  # a double opt-in list was among them


def _newsletter(session: Session, slug: str) -> Newsletter:
    newsletter = session.scalar(select(Newsletter).where(Newsletter.slug == slug))
    if newsletter is None:
        raise NotFound(f"no newsletter {slug!r}")
    return newsletter


def _public_lists(newsletter: Newsletter) -> list[MailingList]:
    return sorted((m for m in newsletter.lists if m.public), key=lambda m: m.name)


def subscribe_form(runtime: Runtime, slug: str) -> SubscribeForm:
    with runtime.sessions() as session:
        newsletter = _newsletter(session, slug)
        lists = _public_lists(newsletter)
        if not lists:
            raise NotFound(f"{newsletter.name} takes no sign-ups on the web")
        return SubscribeForm(
            slug=newsletter.slug,
            newsletter=newsletter.name,
            audience_note=newsletter.audience_note,
            lists=tuple(
                ListOption(m.id, m.name, m.description, m.opt_in != "single") for m in lists
            ),
            timezones=valid_timezones(),
        )


def _wording(newsletter: str, lists: Sequence[MailingList]) -> str:
    return SUBSCRIBE_WORDING.format(newsletter=newsletter, lists=", ".join(m.name for m in lists))


@dataclass(frozen=True)
class _FormSignup:
    slug: str
    email: str
    name: str | None
    list_ids: tuple[int, ...]
    timezone: str | None
    client: str
    honeypot: str
    now: datetime


@dataclass(frozen=True)
class _Signed(Generic[T]):
    """A sign-up's result, and its confirmation to post once the sign-up has committed."""

    result: T
    mail: _Mail | None


def subscribe(
    runtime: Runtime,
    slug: str,
    *,
    email: str,
    name: str | None,
    list_ids: Sequence[int],
    timezone: str | None,
    client: str,
    honeypot: str = "",
) -> Future[SignupAnswer]:
    """The public form. Throttled per client (``MAILER_SUBSCRIBE_PER_CLIENT_PER_MINUTE``)
    and, by the confirmation pacing, per address. The future holds the answer once the
    sign-up has committed and its confirmation has been handed to the transport, or
    raises RateLimited, Invalid or NotFound.

    Sign-ups come in bursts (a newsletter mentioned somewhere): the process's sign-ups
    waiting at one moment are written together, in one transaction, by one writer
    thread (``mailer.db.group_commit``), the form's newsletter read once for them all.
    """
    request = _FormSignup(slug, email, name, tuple(list_ids), timezone, client, honeypot, utcnow())
    writer = runtime.group_commit("signup", functools.partial(_signup_group, runtime))
    return _posted_after(runtime, writer.submit(request))


def _signup_group(
    runtime: Runtime, connection: Connection, requests: Sequence[_FormSignup]
) -> list[_Signed[SignupAnswer] | Exception]:
    forms: dict[str, Newsletter | AppError] = {}

    def newsletter_of(session: Session, slug: str) -> Newsletter:
        found = forms.get(slug)
        if found is None:
            try:
                found = _newsletter(session, slug)
            except AppError as exc:
                found = exc
            forms[slug] = found
        if isinstance(found, AppError):
            raise found
        return found

    with Session(bind=connection, expire_on_commit=False) as session:
        checked: list[tuple[SignupAnswer, _Todo | None] | AppError] = []
        counted = _count(runtime, session, [(r.client, r.now) for r in requests])
        for request, refused in zip(requests, counted, strict=True):
            answer, wanted = (
                (refused, None)
                if refused is not None
                else _checked(session, functools.partial(_form_signup, request, newsletter_of))
            )
            checked.append(answer if isinstance(answer, AppError) else (answer, wanted))
        todo = [c[1] for c in checked if not isinstance(c, AppError) and c[1] is not None]
        mails = iter(_sign_up_all(runtime, session, todo))
        results: list[_Signed[SignupAnswer] | Exception] = [
            c if isinstance(c, AppError) else _Signed(c[0], next(mails) if c[1] else None)
            for c in checked
        ]
        session.flush()
    return results


def _form_signup(
    request: _FormSignup,
    newsletter_of: Callable[[Session, str], Newsletter],
    session: Session,
) -> tuple[SignupAnswer, _Todo | None]:
    """The form's request checked: its answer, and the sign-up to make (None: a bot's)."""
    address = _address(request.email)
    zone = _zone(request.timezone)
    newsletter = newsletter_of(session, request.slug)
    offered = {m.id: m for m in _public_lists(newsletter)}
    if not offered:
        raise NotFound(f"{newsletter.name} takes no sign-ups on the web")
    chosen = [offered[i] for i in dict.fromkeys(request.list_ids) if i in offered]
    if not chosen:
        if len(offered) != 1:
            raise Invalid("pick at least one list", "lists")
        chosen = list(offered.values())
    answer = SignupAnswer(newsletter.name, address, any(m.opt_in != "single" for m in chosen))
    if request.honeypot.strip():
        # A bot filled the field people never see: it gets the same answer, and
        # nothing is stored or sent.
        log.info("signup.honeypot", extra={"newsletter": request.slug})
        return answer, None
    wanted = _todo(
        newsletter,
        address,
        _name(request.name),
        zone,
        chosen,
        source=f"form:{newsletter.slug}",
        client=request.client,
        now=request.now,
    )
    return answer, wanted


def _posted_after(runtime: Runtime, written: Future[_Signed[T]]) -> Future[T]:
    """The result of ``written``, settled once its confirmation (if any) is posted: on
    one of the process's helper threads, so that the writer never waits on a
    transport (SendGrid's API, an SMTP server)."""
    answered: Future[T] = Future()
    answered.set_running_or_notify_cancel()

    def post(signed: _Signed[T]) -> None:
        try:
            if signed.mail is not None:
                _post(runtime, signed.mail)
        except BaseException as exc:
            answered.set_exception(exc)
        else:
            answered.set_result(signed.result)

    def on_written(done: Future[_Signed[T]]) -> None:
        error = done.exception()
        if error is not None:
            answered.set_exception(error)
            return
        signed = done.result()
        if signed.mail is None:
            answered.set_result(signed.result)
            return
        try:
            runtime.helpers().submit(post, signed)
        except RuntimeError:  # the helpers are shutting down with the process (Closed too)
            post(signed)

    written.add_done_callback(on_written)
    return answered


def subscribe_api(
    runtime: Runtime,
    token: str,
    *,
    email: str,
    name: str | None,
    lists: Sequence[str],
    timezone: str | None,
    client: str,
) -> None:
    """``POST /api/subscribers`` for a CMS: lists by name (any list of a newsletter the
    token may speak for; a token bound to no newsletter: any public list). Raises
    PermissionDenied-free ``NotFound`` for an unknown token (the route answers 401)."""
    now = utcnow()

    def check(session: Session) -> tuple[None, _Todo]:
        address = _address(email)
        zone = _zone(timezone)
        source = authenticate(session, token)
        if source is None:
            raise NotFound("unknown or revoked token")
        names = list(dict.fromkeys(lists))
        if not names:
            raise Invalid("name at least one list", "lists")
        found = {
            m.name: m
            for m in session.scalars(select(MailingList).where(MailingList.name.in_(names)))
        }
        missing = [n for n in names if n not in found]
        if missing:
            raise Invalid(f"no list {', '.join(missing)}", "lists")
        allowed = _api_lists(session, source.newsletter_id)
        refused = [n for n in names if found[n].id not in allowed]
        if refused:
            raise Invalid(f"this token cannot sign people up to {', '.join(refused)}", "lists")
        chosen = [found[n] for n in names]
        newsletter = _newsletter_of(session, source.newsletter_id, chosen[0])
        if newsletter is None:
            raise Conflict(f"list {chosen[0].name} belongs to no newsletter")
        wanted = _todo(
            newsletter,
            address,
            _name(name),
            zone,
            chosen,
            source=f"api:{source.name}",
            client=client,
            now=now,
        )
        return None, wanted

    _counted(runtime, client, now, check)


def _api_lists(session: Session, newsletter_id: int | None) -> set[int]:
    if newsletter_id is not None:
        newsletter = session.get(Newsletter, newsletter_id)
        return {m.id for m in newsletter.lists} if newsletter else set()
    return set(session.scalars(select(MailingList.id).where(MailingList.public.is_(True))))


def _newsletter_of(
    session: Session, newsletter_id: int | None, mailing_list: MailingList
) -> Newsletter | None:
    if newsletter_id is not None:
        return session.get(Newsletter, newsletter_id)
    for newsletter in session.scalars(select(Newsletter).order_by(Newsletter.id)):
        if any(m.id == mailing_list.id for m in newsletter.lists):
            return newsletter
    return None


def _counted(
    runtime: Runtime,
    client: str,
    now: datetime,
    sign_up: Callable[[Session], tuple[T, _Todo | None]],
) -> T:
    """``sign_up`` (a check, then the sign-up to make) in a write transaction of its own
    with its count (``_count``), and its confirmation posted after the commit."""
    mail = None
    with one_writer(runtime.engine), transaction(runtime.sessions) as session:
        [refused] = _count(runtime, session, [(client, now)])
        result, wanted = (refused, None) if refused is not None else _checked(session, sign_up)
        if wanted is not None and not isinstance(result, AppError):
            [mail] = _sign_up_all(runtime, session, [wanted])
    if isinstance(result, AppError):
        raise result
    if mail is not None:
        _post(runtime, mail)
    return result


def _count(
    runtime: Runtime, session: Session, requests: Sequence[tuple[str, datetime]]
) -> list[RateLimited | None]:
    """Count requests (client, when) against the client's limit
    (``MAILER_SUBSCRIBE_PER_CLIENT_PER_MINUTE``, kept in the database: every web process
    shares it), in the caller's transaction; per request, its refusal or None.

    The count commits with the transaction whatever the request turns out to be,
    refused, invalid or a bot's (a client that keeps trying stays refused). A refusal
    is returned, not raised, for the caller to raise after the commit.
    """
    limit = runtime.settings.subscribe_per_client_per_minute
    waits = rate_limits.take_all(session, [(f"signup:{c}", at) for c, at in requests], limit)
    return [
        None
        if wait is None
        else RateLimited(
            "too many sign-ups from your network in a minute: try again shortly",
            retry_after=wait,
        )
        for wait in waits
    ]


def _checked(
    session: Session, check: Callable[[Session], tuple[T, _Todo | None]]
) -> tuple[T | AppError, _Todo | None]:
    """``check``'s answer and sign-up to make, or the AppError it raised."""
    try:
        return check(session)
    except AppError as exc:
        return exc, None


@dataclass(frozen=True)
class _Todo:
    """A checked sign-up to make, and the newsletter whose form or API it came through."""

    newsletter: Newsletter
    signup: signup.Signup


def _todo(
    newsletter: Newsletter,
    address: str,
    name: str | None,
    zone: str | None,
    lists: list[MailingList],
    *,
    source: str,
    client: str,
    now: datetime,
) -> _Todo:
    wording = _wording(newsletter.name, lists)
    return _Todo(
        newsletter, signup.Signup(address, name, zone, lists, source, wording, client, now)
    )


def _sign_up_all(runtime: Runtime, session: Session, todo: Sequence[_Todo]) -> list[_Mail | None]:
    """Make the sign-ups in the caller's write transaction; per sign-up, the
    confirmation to post after its commit, if one is due."""
    if not todo:
        return []
    keys = runtime.settings.require_secret_keys()
    outcomes = signup.sign_up_all(session, keys, [t.signup for t in todo])
    mails: list[_Mail | None] = []
    for wanted, outcome in zip(todo, outcomes, strict=True):
        log.info(
            "signup.received",
            extra={
                "source": wanted.signup.source,
                "pending": len(outcome.pending),
                "active": len(outcome.activated),
            },
        )
        if not outcome.send_confirmation or outcome.subscriber_id is None:
            mails.append(None)
            continue
        assert outcome.slot_taken_at is not None
        mails.append(
            _confirmation(
                runtime,
                wanted.newsletter,
                outcome.subscriber_id,
                wanted.signup.email,
                wanted.signup.name,
                outcome.pending_names,
                outcome.slot_taken_at,
            )
        )
    return mails


# -- the confirmation email -----------------------------------------------------------


def _confirm_url(runtime: Runtime, subscriber_id: int, now: datetime) -> str:
    key = runtime.settings.require_secret_key()
    expires = int((now + signup.CONFIRMATION_VALIDITY).timestamp())
    return f"{runtime.settings.base_url}/confirm/{sign_confirmation(key, subscriber_id, expires)}"


def preferences_url(runtime: Runtime, subscriber_id: int) -> str:
    key = runtime.settings.require_secret_key()
    return f"{runtime.settings.base_url}{PREFERENCES_PATH}{sign_preferences(key, subscriber_id)}"


def _message(
    newsletter: Newsletter, subject: str, lead: str, button: str, url: str, after: str
) -> tuple[str, str]:
    """A small HTML email and its plain twin; every value is escaped."""
    e = escape
    html = (
        f'<!doctype html><html lang="{e(newsletter.language)}">'
        '<body style="margin:0;background:#f4f1ea;">'
        '<div style="max-width:520px;margin:0 auto;padding:32px 24px;'
        "font:17px/1.55 Georgia,'Times New Roman',serif;color:#1d1d1f;\">"
        f'<p style="font-size:13px;letter-spacing:1px;text-transform:uppercase;color:#6b6357;">'
        f"{e(newsletter.name)}</p>"
        f'<h1 style="font-size:24px;line-height:1.25;margin:0 0 14px;">{e(subject)}</h1>'
        f"<p>{e(lead)}</p>"
        f'<p style="margin:26px 0;"><a href="{e(url)}" style="background:#1d1d1f;color:#ffffff;'
        f'padding:12px 22px;border-radius:4px;text-decoration:none;">{e(button)}</a></p>'
        f'<p style="font-size:14px;color:#6b6357;">{e(after)}</p>'
        f'<p style="font-size:13px;color:#6b6357;">Or paste this link into your browser: '
        f"{e(url)}</p>"
        f'<p style="font-size:13px;color:#6b6357;">{e(newsletter.from_name)} · '
        f"{e(newsletter.postal_address)}</p></div></body></html>"
    )
    text = (
        f"{newsletter.name.upper()}\n\n{subject}\n\n{lead}\n\n{button}: {url}\n\n{after}\n\n"
        f"{newsletter.from_name}, {newsletter.postal_address}\n"
    )
    return html, text


def _deliver(
    runtime: Runtime,
    newsletter: Newsletter,
    subscriber_id: int,
    to: str,
    name: str | None,
    subject: str,
    html: str,
    text: str,
) -> bool:
    """One message outside the ledger, through the configured transport, marked as not
    an edition's (``test_send``: nothing that comes back counts for any edition)."""
    envelope = Envelope(
        edition_id=0,
        newsletter_slug=newsletter.slug,
        from_name=newsletter.from_name,
        from_email=newsletter.from_email,
        reply_to=newsletter.reply_to,
        subject=subject,
        html=html,
        text=text,
        nonce=new_nonce(),
        test_send=True,
        newsletter_name=newsletter.name,
        language=newsletter.language,
    )
    # List-Unsubscribe leads to the preference page, whose one-click POST leaves all.
    recipient = Recipient(subscriber_id, to, name, preferences_url(runtime, subscriber_id))
    transport = transport_for(runtime.settings)
    try:
        results = transport.send(envelope, [recipient])
    except Exception:  # a transport that fails outright: the slot is given back below
        log.exception("reader_mail.failed", extra={"subscriber_id": subscriber_id})
        return False
    finally:
        transport.close()
    return bool(results) and results[0].outcome == Outcome.SENT


@dataclass(frozen=True)
class _Mail:
    """A reader's email, made in the transaction that called for it and posted after its
    commit, so that no link is ever sent for a row that is not there."""

    newsletter: Newsletter  # loaded; read after its session closed
    subscriber_id: int
    to: str
    name: str | None
    subject: str
    html: str
    text: str
    slot_taken_at: datetime  # given back if the email cannot be sent


def _confirmation(
    runtime: Runtime,
    newsletter: Newsletter,
    subscriber_id: int,
    to: str,
    name: str | None,
    pending: Sequence[str],
    now: datetime,
) -> _Mail:
    """The confirmation email naming the ``pending`` lists; ``now`` is its slot's time."""
    lists = ", ".join(pending)
    subject = f"Confirm your subscription to {newsletter.name}"
    html, text = _message(
        newsletter,
        subject,
        f"Someone, probably you, asked to receive {newsletter.name} ({lists}) at this "
        "address. Press the button to confirm; the link works for 7 days.",
        "Confirm my subscription",
        _confirm_url(runtime, subscriber_id, now),
        "If it was not you, ignore this email: nothing will be sent to you.",
    )
    return _Mail(newsletter, subscriber_id, to, name, subject, html, text, now)


def _post(runtime: Runtime, mail: _Mail) -> None:
    sent = _deliver(
        runtime,
        mail.newsletter,
        mail.subscriber_id,
        mail.to,
        mail.name,
        mail.subject,
        mail.html,
        mail.text,
    )
    if not sent:
        with transaction(runtime.sessions) as session:
            signup.release_confirmation_slot(session, mail.subscriber_id, mail.slot_taken_at)


def _send_confirmation(
    runtime: Runtime, subscriber_id: int, newsletter_id: int, now: datetime
) -> None:
    with runtime.sessions() as session:
        newsletter = session.get(Newsletter, newsletter_id)
        subscriber = session.get(Subscriber, subscriber_id)
        if newsletter is None or subscriber is None:
            return
        pending = signup.pending_list_names(session, subscriber_id)
        mail = _confirmation(
            runtime, newsletter, subscriber_id, subscriber.email, subscriber.name, pending, now
        )
    _post(runtime, mail)


# -- confirming -----------------------------------------------------------------------


@dataclass(frozen=True)
class ConfirmView:
    email: str  # masked
    lists: tuple[str, ...]  # pending now (empty: nothing left to confirm)
    preferences_url: str


def _confirm_target(runtime: Runtime, session: Session, token: str) -> Subscriber:
    keys = runtime.settings.require_secret_keys()
    claims = verify_confirmation(keys, token, int(time.time()))
    subscriber = session.get(Subscriber, claims.subscriber_id)
    if subscriber is None:
        raise TokenError("this link belongs to a subscription that no longer exists")
    return subscriber


def confirmation(runtime: Runtime, token: str) -> ConfirmView:
    """What a confirmation link would confirm; changes nothing (link scanners GET)."""
    with runtime.sessions() as session:
        subscriber = _confirm_target(runtime, session, token)
        lists = tuple(signup.pending_list_names(session, subscriber.id))
        return ConfirmView(mask(subscriber.email), lists, preferences_url(runtime, subscriber.id))


def confirm(runtime: Runtime, token: str, *, client: str) -> ConfirmView:
    """The confirming click (POST): pending subscriptions become active, recorded."""
    keys = runtime.settings.require_secret_keys()
    with transaction(runtime.sessions) as session:
        subscriber = _confirm_target(runtime, session, token)
        lists = {m.id: m.name for m in signup.pending_lists(session, subscriber.id)}
        done = signup.confirm(session, keys, subscriber, client=client, now=utcnow())
        return ConfirmView(
            mask(subscriber.email),
            tuple(lists[i] for i in done.list_ids if i in lists),
            preferences_url(runtime, subscriber.id),
        )


# -- the unsubscribe link -------------------------------------------------------------


@dataclass(frozen=True)
class LeaveView:
    newsletter: str
    email: str  # masked
    changed: bool  # False for the page, and for a repeat: nothing was left to leave


def unsubscribe_link(runtime: Runtime, token: str) -> LeaveView:
    """What an email's unsubscribe link would do; changes nothing (link scanners GET).
    One read by key on the point-read connection: the web makes it on its event loop,
    since it is the page readers open most."""
    keys = runtime.settings.require_secret_keys()
    with runtime.point_reads.connect() as connection:
        target = _link_target(connection, keys, token)
    return LeaveView(target.newsletter_name, mask(target.email), changed=False)


def unsubscribe(runtime: Runtime, token: str, *, source: str) -> Future[LeaveView]:
    """Leave the lists of the link's newsletter (its button, or an RFC 8058 one-click
    request). Raises TokenError for a link we did not sign; otherwise the future holds
    the answer once the change has committed, or raises NotFound for a link whose reader
    or edition is gone.

    One-click requests come in bursts (a mailbox provider's button, a list-wide
    complaint): the process's requests waiting at one moment are written together, in
    one transaction, by one writer thread (``mailer.db.group_commit``).
    """
    claims = verify_unsubscribe(runtime.settings.require_secret_keys(), token)
    writer = runtime.group_commit("unsubscribe", _unsubscribe_group)
    return writer.submit(leaving.LinkRequest(claims.subscriber_id, claims.edition_id, source))


def _unsubscribe_group(
    connection: Connection, requests: Sequence[leaving.LinkRequest]
) -> list[LeaveView | Exception]:
    outcomes = leaving.unsubscribe_links(connection, requests)
    views: list[LeaveView | Exception] = []
    for outcome in outcomes:
        if isinstance(outcome, leaving.UnknownRecipient):
            views.append(NotFound(str(outcome)))
        else:
            target = outcome.target
            views.append(LeaveView(target.newsletter_name, mask(target.email), outcome.changed))
    changed = sum(1 for view in views if isinstance(view, LeaveView) and view.changed)
    log.info("subscribers.unsubscribed", extra={"requests": len(requests), "changed": changed})
    return views


def _link_target(connection: Connection, keys: Keys, token: str) -> leaving.LinkTarget:
    try:
        return leaving.resolve(connection, keys, token)
    except leaving.UnknownRecipient as exc:
        raise NotFound(str(exc)) from None


# -- the preference page --------------------------------------------------------------


@dataclass(frozen=True)
class PreferenceList:
    id: int
    name: str
    description: str
    status: str | None


@dataclass(frozen=True)
class PreferencesView:
    subscriber_id: int
    email: str  # masked
    name: str | None
    status: str  # the subscriber's
    lists: tuple[PreferenceList, ...]
    paused_until: datetime | None
    timezone: str | None
    timezones: tuple[str, ...]

    @property
    def left(self) -> bool:
        return self.status != SubscriberStatus.ACTIVE or not any(
            c.status == SubscriptionStatus.ACTIVE for c in self.lists
        )

    @property
    def pending(self) -> bool:
        return any(c.status == SubscriptionStatus.PENDING for c in self.lists)


def _reader(runtime: Runtime, session: Session, token: str, *, lock: bool = False) -> Subscriber:
    keys = runtime.settings.require_secret_keys()
    subscriber_id = verify_preferences(keys, token)
    query = select(Subscriber).where(Subscriber.id == subscriber_id)
    if lock:
        # One reader's changes take turns (two tabs, a double click).
        query = query.with_for_update()
    subscriber = session.scalar(query)
    if subscriber is None or not _email_was_theirs(session, keys, token, subscriber):
        raise NotFound("this link belongs to a subscription that no longer exists")
    return subscriber


def _email_was_theirs(session: Session, keys: Keys, token: str, subscriber: Subscriber) -> bool:
    """Whether an edition's token can have reached this subscriber: its edition started
    before they existed? Then it was another person's, whose row was erased and whose
    number SQLite gave again (it reuses the highest rowid). A preference token carries no
    edition and is taken as it is."""
    try:
        claims = verify_unsubscribe(keys, token)
    except TokenError:
        return True
    started = session.scalar(select(Edition.send_started_at).where(Edition.id == claims.edition_id))
    return started is not None and started >= subscriber.created_at


def _view(session: Session, subscriber: Subscriber) -> PreferencesView:
    now = utcnow()
    paused = subscriber.paused_until
    return PreferencesView(
        subscriber_id=subscriber.id,
        email=mask(subscriber.email),
        name=subscriber.name,
        status=subscriber.status,
        lists=tuple(
            PreferenceList(c.id, c.name, c.description, c.status)
            for c in preferences.offered_lists(session, subscriber.id)
        ),
        paused_until=paused if paused is not None and paused > now else None,
        timezone=subscriber.timezone,
        timezones=valid_timezones(),
    )


def preferences_page(runtime: Runtime, token: str) -> PreferencesView:
    """The reader's page; reading it changes nothing."""
    with runtime.sessions() as session:
        return _view(session, _reader(runtime, session, token))


def _actor(subscriber_id: int) -> Actor:
    # Readers hold no role; the label is what the audit log shows.
    return Actor(f"reader:{subscriber_id}", Role.EDITOR)


def set_lists(runtime: Runtime, token: str, keep: Sequence[int], *, client: str) -> PreferencesView:
    with transaction(runtime.sessions) as session:
        subscriber = _reader(runtime, session, token, lock=True)
        names = {c.id: c.name for c in preferences.offered_lists(session, subscriber.id)}
        wording = JOIN_WORDING.format(lists=", ".join(names[i] for i in keep if i in names))
        change = preferences.set_lists(
            session, subscriber, set(keep), wording=wording, client=client, now=utcnow()
        )
        if change.joined or change.left:
            audit.record(
                session,
                _actor(subscriber.id),
                "reader.lists",
                "subscriber",
                subscriber.id,
                after={"joined": list(change.joined), "left": list(change.left)},
            )
        return _view(session, subscriber)


def pause(runtime: Runtime, token: str, length: str) -> PreferencesView:
    with transaction(runtime.sessions) as session:
        subscriber = _reader(runtime, session, token, lock=True)
        try:
            until = preferences.pause(subscriber, length, utcnow())
        except ValueError as exc:
            raise Invalid(str(exc), "length") from exc
        audit.record(
            session,
            _actor(subscriber.id),
            "reader.pause",
            "subscriber",
            subscriber.id,
            after={"paused_until": until.isoformat()},
        )
        return _view(session, subscriber)


def resume(runtime: Runtime, token: str) -> PreferencesView:
    with transaction(runtime.sessions) as session:
        subscriber = _reader(runtime, session, token, lock=True)
        if subscriber.paused_until is not None:
            before = subscriber.paused_until.isoformat()
            preferences.resume(subscriber)
            audit.record(
                session,
                _actor(subscriber.id),
                "reader.resume",
                "subscriber",
                subscriber.id,
                before={"paused_until": before},
            )
        return _view(session, subscriber)


def set_timezone(runtime: Runtime, token: str, timezone: str | None) -> PreferencesView:
    zone = _zone(timezone)
    with transaction(runtime.sessions) as session:
        subscriber = _reader(runtime, session, token, lock=True)
        if subscriber.timezone != zone:
            audit.record(
                session,
                _actor(subscriber.id),
                "reader.timezone",
                "subscriber",
                subscriber.id,
                before={"timezone": subscriber.timezone},
                after={"timezone": zone},
            )
            subscriber.timezone = zone
        return _view(session, subscriber)


def leave(runtime: Runtime, token: str, *, client: str) -> PreferencesView:
    """Unsubscribe from everything (the page's button, or an RFC 8058 one-click POST)."""
    with transaction(runtime.sessions) as session:
        subscriber = _reader(runtime, session, token, lock=True)
        if preferences.leave_everything(session, subscriber, client=client, now=utcnow()):
            audit.record(
                session, _actor(subscriber.id), "reader.unsubscribe", "subscriber", subscriber.id
            )
        return _view(session, subscriber)


def come_back(
    runtime: Runtime, token: str, list_ids: Sequence[int], *, client: str
) -> PreferencesView:
    """Ask to come back: the lists wait, pending, for the link of a fresh confirmation
    email (paced like a sign-up's: one per address per 10 minutes)."""
    now = utcnow()
    with transaction(runtime.sessions) as session:
        subscriber = _reader(runtime, session, token, lock=True)
        if subscriber.status in signup.BLOCKED or signup.is_suppressed(session, subscriber.email):
            raise Conflict(
                "mail to this address bounced or was reported: write to us to be let back in"
            )
        offered = {c.id: c for c in preferences.offered_lists(session, subscriber.id)}
        wanted = [i for i in list_ids if i in offered] or [
            c.id for c in offered.values() if c.status == SubscriptionStatus.UNSUBSCRIBED
        ]
        if not wanted:
            raise Invalid("pick at least one list", "lists")
        wording = COME_BACK_WORDING.format(lists=", ".join(offered[i].name for i in wanted))
        asked = preferences.come_back(
            session, subscriber, wanted, wording=wording, client=client, now=now
        )
        due = signup.claim_confirmation_slot(session, subscriber.id, now)
        newsletter_id = _newsletter_for_lists(session, asked)
        view = _view(session, subscriber)
    if due and newsletter_id is not None:
        _send_confirmation(runtime, subscriber.id, newsletter_id, now)
    return view


def undo_unsubscribe(runtime: Runtime, token: str, *, client: str) -> PreferencesView:
    """Undo from the unsubscribe page: the email's own token names the edition, whose
    newsletter's lists the reader just left. A reader still subscribed (they left those
    lists only) rejoins them at once, as from the preference page; one who left
    everything comes back through a fresh confirmation."""
    keys = runtime.settings.require_secret_keys()
    try:
        claims = verify_unsubscribe(keys, token)
    except TokenError:
        raise Invalid("only the unsubscribe link of an email can be undone", "token") from None
    with runtime.sessions() as session:
        edition = session.get(Edition, claims.edition_id)
        if edition is None:
            raise NotFound("this link belongs to an edition that no longer exists")
        list_ids = [m.id for m in edition.newsletter.lists]
        subscriber = session.get(Subscriber, claims.subscriber_id)
        if subscriber is None:
            raise NotFound("this link belongs to a subscription that no longer exists")
        active = subscriber.status == SubscriberStatus.ACTIVE
    if not active:
        return come_back(runtime, token, list_ids, client=client)
    with transaction(runtime.sessions) as session:
        subscriber = _reader(runtime, session, token, lock=True)
        offered = preferences.offered_lists(session, subscriber.id)
        keep = {c.id for c in offered if c.status == SubscriptionStatus.ACTIVE} | set(list_ids)
        change = preferences.set_lists(
            session, subscriber, keep, wording="Undid an unsubscribe", client=client, now=utcnow()
        )
        if change.joined:
            audit.record(
                session,
                _actor(subscriber.id),
                "reader.undo_unsubscribe",
                "subscriber",
                subscriber.id,
                after={"joined": list(change.joined)},
            )
        return _view(session, subscriber)


def _newsletter_for_lists(session: Session, list_ids: Sequence[int]) -> int | None:
    for newsletter in session.scalars(select(Newsletter).order_by(Newsletter.id)):
        if any(m.id in list_ids for m in newsletter.lists):
            return newsletter.id
    return session.scalar(select(Newsletter.id).order_by(Newsletter.id).limit(1))


# -- a new address --------------------------------------------------------------------


@dataclass(frozen=True)
class EmailChangeView:
    old: str  # masked
    new: str  # in full: it is the address this link was sent to


def request_email_change(runtime: Runtime, token: str, new_email: str) -> PreferencesView:
    """A link goes to the new address; the old one stays until it is clicked. The answer
    is the same whether the new address is free, taken or suppressed."""
    address = _address(new_email, "new_email")
    key = runtime.settings.require_secret_key()
    now = utcnow()
    with transaction(runtime.sessions) as session:
        subscriber = _reader(runtime, session, token, lock=True)
        view = _view(session, subscriber)
        if address == subscriber.email:
            return view
        free = not preferences.address_taken(session, address, subscriber.id) and not (
            signup.is_suppressed(session, address)
        )
        due = free and signup.claim_confirmation_slot(session, subscriber.id, now)
        newsletter_id = _newsletter_for_lists(
            session, [c.id for c in view.lists if c.status == SubscriptionStatus.ACTIVE]
        )
        name = subscriber.name
    if due and newsletter_id is not None:
        expires = int((now + signup.CONFIRMATION_VALIDITY).timestamp())
        url = (
            f"{runtime.settings.base_url}/confirm/email/"
            f"{sign_email_change(key, subscriber.id, expires, address)}"
        )
        with runtime.sessions() as session:
            newsletter = session.get(Newsletter, newsletter_id)
            assert newsletter is not None
            subject = f"Confirm your new address for {newsletter.name}"
            html, text = _message(
                newsletter,
                subject,
                f"Someone, probably you, asked to receive {newsletter.name} at this address "
                "instead of their current one. Press the button to make the change; the link "
                "works for 7 days.",
                "Use this address",
                url,
                "If it was not you, ignore this email: nothing changes.",
            )
            sent = _deliver(runtime, newsletter, subscriber.id, address, name, subject, html, text)
        if not sent:
            with transaction(runtime.sessions) as session:
                signup.release_confirmation_slot(session, subscriber.id, now)
    return view


def _email_change_claims(runtime: Runtime, session: Session, token: str) -> tuple[Subscriber, str]:
    keys = runtime.settings.require_secret_keys()
    claims = verify_email_change(keys, token, int(time.time()))
    subscriber = session.get(Subscriber, claims.subscriber_id)
    if subscriber is None:
        raise TokenError("this link belongs to a subscription that no longer exists")
    return subscriber, claims.new_email


def email_change(runtime: Runtime, token: str) -> EmailChangeView:
    """What the link would change; changes nothing."""
    with runtime.sessions() as session:
        subscriber, new = _email_change_claims(runtime, session, token)
        return EmailChangeView(mask(subscriber.email), new)


def confirm_email_change(runtime: Runtime, token: str, *, client: str) -> EmailChangeView:
    with transaction(runtime.sessions) as session:
        subscriber, new = _email_change_claims(runtime, session, token)
        if subscriber.email == new:
            return EmailChangeView(mask(new), new)
        if preferences.address_taken(session, new, subscriber.id) or signup.is_suppressed(
            session, new
        ):
            raise Conflict("that address cannot be used: write to us if it is yours")
        old = mask(subscriber.email)
        subscriber.email = new
        subscriber.confirmation_sent_at = None
        audit.record(
            session,
            _actor(subscriber.id),
            "reader.email",
            "subscriber",
            subscriber.id,
            after={"email": "changed (confirmed from the new address)", "client": client[:100]},
        )
        return EmailChangeView(old, new)


# -- their data -----------------------------------------------------------------------


def export_data(runtime: Runtime, token: str) -> bytes:
    """Everything we hold about the reader, as JSON (subscribers.personal_data)."""
    with runtime.sessions() as session:
        subscriber = _reader(runtime, session, token)
        try:
            data = personal_data.export(session, subscriber.id)
        except personal_data.NoSuchSubscriber as exc:
            raise NotFound(str(exc)) from exc
    return json.dumps(data, indent=2, ensure_ascii=False, default=str).encode("utf-8")


def erase(runtime: Runtime, token: str) -> None:
    """Erase the reader (subscribers.erasure): only a keyed hash of the address stays,
    as a suppression. The audit entry names the subscriber number only."""
    key = runtime.settings.require_secret_key()
    with transaction(runtime.sessions) as session:
        subscriber = _reader(runtime, session, token, lock=True)
        subscriber_id = subscriber.id
        erasure.erase(session, subscriber_id, key)
        audit.record(session, _actor(subscriber_id), "reader.erase", "subscriber", subscriber_id)


# -- editions on the web --------------------------------------------------------------

WEB_VALUES = {"name": "", "email": "you"}
SENT = (EditionStatus.SENDING, EditionStatus.SENT)
_WEB_COPY = select(Edition.html, Edition.token_nonce, Edition.subject).where(
    Edition.id == bindparam("edition"), Edition.status.in_(SENT)
)


@dataclass(frozen=True)
class WebEdition:
    html: str
    subject: str


def edition_web(runtime: Runtime, token: str) -> WebEdition:
    """An edition as a browser shows it: the email's own HTML with no personal data and
    no working token (every per-reader link leads to ``/preview/link``). Only editions
    that went out: a draft stays with the editors even if its link is known."""
    keys = runtime.settings.require_secret_keys()
    edition_id = verify_edition_web(keys, token)
    # One read by key on the point-read connection: the web makes it on its event loop.
    with runtime.point_reads.connect() as connection:
        found = connection.execute(_WEB_COPY, {"edition": edition_id}).first()
    if found is None or found.html is None or found.token_nonce is None:
        raise NotFound("this edition is not on the web")
    link = f"{runtime.settings.base_url}/preview/link"
    values = {
        **WEB_VALUES,
        "unsubscribe_url": link,
        "preferences_url": link,
        "web_url": f"{runtime.settings.base_url}/e/{token}",
    }
    html = personalize(found.html, found.token_nonce, values, html=True)
    return WebEdition(html, found.subject)


@dataclass(frozen=True)
class ArchiveItem:
    url: str
    subject: str
    date_label: str
    sent_at: datetime | None


@dataclass(frozen=True)
class ArchiveView:
    slug: str
    newsletter: str
    audience_note: str
    subscribe_url: str | None
    editions: tuple[ArchiveItem, ...]


def archive(runtime: Runtime, slug: str, *, limit: int = 200) -> ArchiveView:
    """The past editions of a newsletter with a public archive, newest first."""
    from mailer.links import edition_web_url

    key = runtime.settings.require_secret_key()
    with runtime.sessions() as session:
        newsletter = session.scalar(select(Newsletter).where(Newsletter.slug == slug))
        if newsletter is None or not newsletter.public_archive:
            raise NotFound("this newsletter has no public archive")
        rows = session.scalars(
            select(Edition)
            .where(Edition.newsletter_id == newsletter.id, Edition.status.in_(SENT))
            .order_by(Edition.edition_date.desc(), Edition.id.desc())
            .limit(limit)
        )
        items = tuple(
            ArchiveItem(
                edition_web_url(runtime.settings.base_url, key, e.id),
                e.subject,
                f"{e.edition_date:%A, %B} {e.edition_date.day}, {e.edition_date.year}",
                e.sent_at,
            )
            for e in rows
        )
        public = bool(_public_lists(newsletter))
        return ArchiveView(
            newsletter.slug,
            newsletter.name,
            newsletter.audience_note,
            f"/subscribe/{newsletter.slug}" if public else None,
            items,
        )


def subscribe_payload(data: Any) -> dict[str, Any]:
    """The JSON body of ``POST /api/subscribers``, checked field by field."""
    if not isinstance(data, dict):
        raise Invalid("send a JSON object", "body")
    email = data.get("email")
    if not isinstance(email, str):
        raise Invalid("email: a string is required", "email")
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise Invalid("name: a string", "name")
    lists = data.get("lists")
    if not isinstance(lists, list) or not all(isinstance(n, str) for n in lists):
        raise Invalid("lists: a list of list names", "lists")
    timezone = data.get("timezone")
    if timezone is not None and not isinstance(timezone, str):
        raise Invalid("timezone: an IANA name", "timezone")
    return {"email": email, "name": name, "lists": lists, "timezone": timezone}
