"""The SMTP transport against a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import email
import email.policy
import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dkim
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from mailer.db.base import utcnow
from mailer.db.models import Delivery, DeliveryStatus, Edition, EditionStatus
from mailer.dispatch.dispatcher import send_edition
from mailer.runtime import Runtime
from mailer.transports import transport_for
from mailer.transports.base import Recipient
from mailer.transports.smtp import SmtpConfig, SmtpTransport
from tests import factories
from tests.smtp_server import Recorder, free_port, running


@pytest.fixture
def smtp_server() -> Iterator[tuple[Recorder, int]]:
    with running() as server:
        yield server


def test_send_with_temporary_and_permanent_refusals(
    runtime: Runtime, smtp_server: tuple[Recorder, int]
) -> None:
    recorder, port = smtp_server
    newsletter_id = factories.newsletter(runtime)
    emails = factories.subscribers(runtime, 12)
    recorder.refuse = {
        emails[0]: "450 4.2.1 Mailbox busy, try later",
        emails[1]: "550 5.1.1 No such user",
    }
    edition_id = factories.edition(runtime, newsletter_id)
    settings = runtime.settings.model_copy(
        update={
            "transport": "smtp",
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_security": "none",
            "smtp_pool_size": 3,
            "smtp_return_path": "bounces+{delivery_id}@news.example.org",
        }
    )
    transport = transport_for(settings)
    try:
        tally = send_edition(
            runtime.sessions,
            edition_id,
            transport,
            replace(runtime.dispatch_settings(), batch_size=5),
        )
    finally:
        transport.close()

    assert tally["sent"] == 10 and tally["failed"] == 1
    with runtime.sessions() as session:
        rows = {d.email: d for d in session.scalars(select(Delivery))}
    assert rows[emails[1]].status == DeliveryStatus.FAILED
    assert rows[emails[1]].error == "550 5.1.1 No such user"
    # A 4xx is temporary: queued again, to be tried after a backoff, not in a tight loop.
    busy = rows[emails[0]]
    assert busy.status == DeliveryStatus.QUEUED and busy.attempts == 1
    assert busy.retry_after is not None and busy.retry_after > utcnow()
    assert "450" in (busy.error or "")

    delivered = {rcpts[0]: (sender, data) for sender, rcpts, data in recorder.messages}
    assert set(delivered) == set(emails[2:])
    sender, data = delivered[emails[2]]
    assert sender == f"bounces+{rows[emails[2]].id}@news.example.org"  # VERP
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert message.get_content_type() == "multipart/alternative"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert rows[emails[2]].message_id == message["Message-ID"]


def test_dkim_signature_verifies(smtp_server: tuple[Recorder, int]) -> None:
    recorder, port = smtp_server
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import base64

    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    transport = SmtpTransport(
        SmtpConfig(
            host="127.0.0.1",
            port=port,
            security="none",
            pool_size=1,
            dkim_domain="news.example.org",
            dkim_selector="mail",
            dkim_key=pem,
        )
    )
    envelope = factories.envelope(subject="Signed")
    try:
        (result,) = transport.send(envelope, [Recipient(1, "r@example.com", "R", "https://x/u/1")])
    finally:
        transport.close()

    assert result.outcome.value == "sent"
    (_, _, data) = recorder.messages[0]
    assert data.startswith(b"DKIM-Signature:")

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"mail._domainkey.news.example.org."
        return record

    assert dkim.verify(data, dnsfunc=dns)


def test_an_unreachable_server_leaves_everyone_queued(runtime: Runtime) -> None:
    newsletter_id = factories.newsletter(runtime)
    factories.subscribers(runtime, 3)
    edition_id = factories.edition(runtime, newsletter_id)
    transport = SmtpTransport(
        SmtpConfig(host="127.0.0.1", port=free_port(), security="none", timeout=2)
    )
    try:
        tally = send_edition(runtime.sessions, edition_id, transport, runtime.dispatch_settings())
    finally:
        transport.close()
    assert tally["queued"] == 3 and tally["sent"] == 0


def self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh certificate for 127.0.0.1, and a client that trusts it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


def test_starttls_and_login(tmp_path: Path) -> None:
    server_tls, client_tls = self_signed(tmp_path)
    recorder = Recorder()
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth: Any) -> Any:
        logins.append((auth.login, auth.password))
        ok = auth.login == b"desk" and auth.password == b"s3cret"
        return AuthResult(success=ok, handled=False)

    port = free_port()
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_tls,
        require_starttls=True,
        auth_required=True,
        authenticator=authenticator,
    )
    controller.start()
    envelope = factories.envelope(
        subject="Over TLS",
        html="<p>%%0123456789ab:unsubscribe_url%%</p>",
        text="%%0123456789ab:unsubscribe_url%%",
    )
    recipient = [Recipient(1, "r@example.com", "R", "https://x/u/1")]
    try:
        good = SmtpTransport(
            SmtpConfig(
                host="127.0.0.1",
                port=port,
                security="starttls",
                username="desk",
                password="s3cret",
                pool_size=1,
                tls_context=client_tls,
            )
        )
        try:
            (result,) = good.send(envelope, recipient)
        finally:
            good.close()
    finally:
        controller.stop()

    assert result.outcome.value == "sent"
    assert len(recorder.messages) == 1
    assert logins[0] == (b"desk", b"s3cret")


def test_implicit_tls(tmp_path: Path) -> None:
    server_tls, client_tls = self_signed(tmp_path)
    recorder = Recorder()
    port = free_port()
    # TLS from the first byte (port 465 style), not upgraded with STARTTLS.
    controller = Controller(recorder, hostname="127.0.0.1", port=port, ssl_context=server_tls)
    controller.start()
    envelope = factories.envelope(
        html="<p>%%0123456789ab:unsubscribe_url%%</p>", text="%%0123456789ab:unsubscribe_url%%"
    )
    try:
        smtp = SmtpTransport(
            SmtpConfig(
                host="127.0.0.1", port=port, security="tls", pool_size=1, tls_context=client_tls
            )
        )
        try:
            (result,) = smtp.send(envelope, [Recipient(1, "r@example.com", "R", "https://x/u/1")])
        finally:
            smtp.close()
    finally:
        controller.stop()
    assert result.outcome.value == "sent"
    assert [rcpt for _, rcpt, _ in recorder.messages] == [["r@example.com"]]


def test_a_refused_login_pauses_the_edition_and_sends_nothing(
    runtime: Runtime, tmp_path: Path
) -> None:
    server_tls, client_tls = self_signed(tmp_path)
    recorder = Recorder()
    port = free_port()
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_tls,
        require_starttls=True,
        auth_required=True,
        # handled=False: aiosmtpd then answers 535 itself (True would mean "already answered").
        authenticator=lambda *args: AuthResult(success=False, handled=False),
    )
    controller.start()
    newsletter_id = factories.newsletter(runtime)
    factories.subscribers(runtime, 5)
    edition_id = factories.edition(runtime, newsletter_id)
    smtp = SmtpTransport(
        SmtpConfig(
            host="127.0.0.1",
            port=port,
            security="starttls",
            username="desk",
            password="wrong",
            pool_size=1,
            timeout=5,
            tls_context=client_tls,
        )
    )
    try:
        # Threads: a TLS context made here for the test's CA cannot move to a sender process.
        settings = replace(runtime.dispatch_settings(), sender_process=False)
        tally = send_edition(runtime.sessions, edition_id, smtp, settings)
    finally:
        smtp.close()
        controller.stop()
    assert tally["queued"] == 5 and tally["sent"] == 0 and not recorder.messages
    with runtime.sessions() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None and edition.status == EditionStatus.PAUSED
        assert "login refused" in (edition.status_reason or "")
        assert "wrong" not in (edition.status_reason or "")
