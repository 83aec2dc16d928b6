"""The SendGrid Event Webhook signature check, with real P-256 keys."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

# The package ships no type information; only its verifier is used, as a cross-check.
from sendgrid.helpers.eventwebhook import EventWebhook  # type: ignore[import-untyped]

from mailer.events.signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    WebhookVerifier,
)
from tests.webhook_keys import new_private_key, public_key_b64, public_key_pem, sign

NOW = 1_700_000_000
BODY = (
    b'[{"email":"reader@example.com","timestamp":1699999990,"event":"delivered",'
    b'"sg_event_id":"ZGVsaXZlcmVkLTAtMTIzNDU2","sg_message_id":"W86EgYT6SQKk0lRflfLRsA.f0.0",'
    b'"response":"250 OK","edition_id":"42","delivery_id":"1001"}]\r\n'
)


@pytest.fixture(scope="module")
def private_key() -> ec.EllipticCurvePrivateKey:
    return new_private_key()


@pytest.fixture
def verifier(private_key: ec.EllipticCurvePrivateKey) -> WebhookVerifier:
    return WebhookVerifier(public_key_b64(private_key), clock=lambda: NOW)


def test_a_valid_signature_passes(
    verifier: WebhookVerifier, private_key: ec.EllipticCurvePrivateKey
) -> None:
    timestamp = str(NOW - 5)
    verifier.verify(sign(private_key, timestamp, BODY), timestamp, BODY)


@pytest.mark.parametrize("form", ["pem", "pem-crlf", "wrapped-bare", "padded"])
def test_the_key_is_accepted_bare_or_in_pem(
    private_key: ec.EllipticCurvePrivateKey, form: str
) -> None:
    bare = public_key_b64(private_key)
    key = {
        "pem": public_key_pem(private_key),
        "pem-crlf": public_key_pem(private_key).replace("\n", "\r\n"),
        "wrapped-bare": "\n".join(bare[i : i + 64] for i in range(0, len(bare), 64)),
        "padded": f"  {bare}\n",
    }[form]
    timestamp = str(NOW)
    WebhookVerifier(key, clock=lambda: NOW).verify(
        sign(private_key, timestamp, BODY), timestamp, BODY
    )


def test_a_tampered_body_fails(
    verifier: WebhookVerifier, private_key: ec.EllipticCurvePrivateKey
) -> None:
    timestamp = str(NOW)
    signature = sign(private_key, timestamp, BODY)
    tampered = BODY.replace(b"delivered", b"bounce\x20\x20\x20")
    with pytest.raises(SignatureError, match="does not match"):
        verifier.verify(signature, timestamp, tampered)
    # Even a byte of whitespace counts: the check is over the raw bytes.
    with pytest.raises(SignatureError, match="does not match"):
        verifier.verify(signature, timestamp, BODY.rstrip())


def test_a_signature_for_another_timestamp_fails(
    verifier: WebhookVerifier, private_key: ec.EllipticCurvePrivateKey
) -> None:
    signature = sign(private_key, str(NOW - 1), BODY)
    with pytest.raises(SignatureError, match="does not match"):
        verifier.verify(signature, str(NOW), BODY)


def test_a_signature_by_another_key_fails(verifier: WebhookVerifier) -> None:
    timestamp = str(NOW)
    with pytest.raises(SignatureError, match="does not match"):
        verifier.verify(sign(new_private_key(), timestamp, BODY), timestamp, BODY)


def test_valid_base64_that_is_not_a_der_signature_fails(verifier: WebhookVerifier) -> None:
    garbage = base64.b64encode(b"\x30\x06\x02\x01\x01\x02\x01\x01" + b"x" * 40).decode()
    with pytest.raises(SignatureError, match="does not match"):
        verifier.verify(garbage, str(NOW), BODY)


@pytest.mark.parametrize(
    ("offset", "message"),
    [(-301, "stale .* 301 s old"), (-86_400, "stale"), (301, "301 s in the future")],
)
def test_a_timestamp_outside_the_window_fails(
    verifier: WebhookVerifier, private_key: ec.EllipticCurvePrivateKey, offset: int, message: str
) -> None:
    # Validly signed: only the clock is wrong, as with a replayed capture.
    timestamp = str(NOW + offset)
    with pytest.raises(SignatureError, match=message):
        verifier.verify(sign(private_key, timestamp, BODY), timestamp, BODY)


@pytest.mark.parametrize("offset", [-300, 300])
def test_the_window_edges_are_inside(
    verifier: WebhookVerifier, private_key: ec.EllipticCurvePrivateKey, offset: int
) -> None:
    timestamp = str(NOW + offset)
    verifier.verify(sign(private_key, timestamp, BODY), timestamp, BODY)


def test_the_window_is_configurable(private_key: ec.EllipticCurvePrivateKey) -> None:
    timestamp = str(NOW - 3000)
    signature = sign(private_key, timestamp, BODY)
    key = public_key_b64(private_key)
    WebhookVerifier(key, tolerance_seconds=3600, clock=lambda: NOW).verify(
        signature, timestamp, BODY
    )
    with pytest.raises(SignatureError, match="outside the 60 s window"):
        WebhookVerifier(key, tolerance_seconds=60, clock=lambda: NOW).verify(
            signature, timestamp, BODY
        )
    with pytest.raises(ValueError, match="negative"):
        WebhookVerifier(key, tolerance_seconds=-1)


def test_the_real_clock_is_the_default(private_key: ec.EllipticCurvePrivateKey) -> None:
    verifier = WebhookVerifier(public_key_b64(private_key))
    with pytest.raises(SignatureError, match="stale"):
        verifier.verify(sign(private_key, str(NOW), BODY), str(NOW), BODY)


@pytest.mark.parametrize("signature", [None, ""])
def test_a_missing_signature_header_fails(verifier: WebhookVerifier, signature: str | None) -> None:
    with pytest.raises(SignatureError, match=f"missing {SIGNATURE_HEADER}"):
        verifier.verify(signature, str(NOW), BODY)


@pytest.mark.parametrize("timestamp", [None, ""])
def test_a_missing_timestamp_header_fails(
    verifier: WebhookVerifier, private_key: ec.EllipticCurvePrivateKey, timestamp: str | None
) -> None:
    with pytest.raises(SignatureError, match=f"missing {TIMESTAMP_HEADER}"):
        verifier.verify(sign(private_key, str(NOW), BODY), timestamp, BODY)


@pytest.mark.parametrize(
    "timestamp",
    ["abc", "1700000000.5", "-1700000000", " 1700000000", "1.7e9", "١٧٠٠٠٠٠٠٠٠", "9" * 40],
)
def test_a_malformed_timestamp_fails(
    verifier: WebhookVerifier, private_key: ec.EllipticCurvePrivateKey, timestamp: str
) -> None:
    signature = sign(private_key, timestamp, BODY)  # signed, so only the format is at fault
    with pytest.raises(SignatureError, match=f"malformed {TIMESTAMP_HEADER}"):
        verifier.verify(signature, timestamp, BODY)


@pytest.mark.parametrize("signature", ["not base64!", "abc", "é" * 10, "A" * 500])
def test_a_malformed_signature_fails(verifier: WebhookVerifier, signature: str) -> None:
    with pytest.raises(SignatureError, match=f"malformed {SIGNATURE_HEADER}"):
        verifier.verify(signature, str(NOW), BODY)


def _spki_b64(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey,
) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def _small_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505


@pytest.mark.parametrize(
    ("make_key", "message"),
    [
        (lambda: _spki_b64(ec.generate_private_key(ec.SECP384R1())), "not an ECDSA P-256"),
        (lambda: _spki_b64(ed25519.Ed25519PrivateKey.generate()), "not an ECDSA P-256"),
        (lambda: _spki_b64(ec.generate_private_key(ec.SECP256K1())), "not an ECDSA P-256"),
        # Small only to keep the test fast: the key is refused, never used.
        (lambda: _spki_b64(_small_rsa_key()), "not an ECDSA P-256"),
        (lambda: base64.b64encode(b"not a key at all").decode(), "not a DER"),
        (lambda: "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE!!", "not valid base64"),
        (lambda: "", "empty"),
        (lambda: "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----", "empty"),
    ],
)
def test_a_key_that_is_not_p256_is_refused_at_construction(
    make_key: Callable[[], str], message: str
) -> None:
    key = make_key()
    with pytest.raises(ValueError, match=message) as caught:
        WebhookVerifier(key)
    assert not isinstance(caught.value, SignatureError)
    if len(key) > 8:
        assert key.strip("-") not in str(caught.value)  # the key never reaches a log


def test_a_private_key_pasted_by_mistake_is_refused_without_echoing_it(
    private_key: ec.EllipticCurvePrivateKey,
) -> None:
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    with pytest.raises(ValueError, match="not a DER SubjectPublicKeyInfo") as caught:
        WebhookVerifier(pem)
    secret_lines = [line for line in pem.splitlines() if not line.startswith("-----")]
    assert all(line not in str(caught.value) for line in secret_lines)


def test_errors_never_include_the_key(
    verifier: WebhookVerifier, private_key: ec.EllipticCurvePrivateKey
) -> None:
    key = public_key_b64(private_key)
    for signature, timestamp in [(None, str(NOW)), ("x!", str(NOW)), ("QUJD", str(NOW))]:
        with pytest.raises(SignatureError) as caught:
            verifier.verify(signature, timestamp, BODY)
        assert key not in str(caught.value)


def test_our_signatures_satisfy_the_sendgrid_package(
    private_key: ec.EllipticCurvePrivateKey,
) -> None:
    # The sendgrid package's EventWebhook can only verify, not sign, so the cross-check
    # runs the other way: what tests sign (and WebhookVerifier accepts) is what the
    # official helper accepts, with the key in the console's form.
    timestamp = str(NOW)
    signature = sign(private_key, timestamp, BODY)
    helper = EventWebhook(public_key_b64(private_key))
    assert helper.verify_signature(BODY.decode(), signature, timestamp) is True
    assert helper.verify_signature(BODY.decode() + " ", signature, timestamp) is False
    WebhookVerifier(public_key_b64(private_key), clock=lambda: NOW).verify(
        signature, timestamp, BODY
    )
