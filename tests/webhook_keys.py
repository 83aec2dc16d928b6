"""Signing like SendGrid's Event Webhook, for tests: a P-256 key pair and ``sign()``."""

from __future__ import annotations

import base64
import textwrap

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec


def new_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_key_b64(private_key: ec.EllipticCurvePrivateKey) -> str:
    """The public key as the SendGrid console shows it: one line of base64 DER SPKI."""
    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")


def public_key_pem(private_key: ec.EllipticCurvePrivateKey) -> str:
    """The same key as someone might paste it: PEM armour, 64-character lines."""
    lines = "\n".join(textwrap.wrap(public_key_b64(private_key), 64))
    return f"-----BEGIN PUBLIC KEY-----\n{lines}\n-----END PUBLIC KEY-----\n"


def sign(private_key: ec.EllipticCurvePrivateKey, timestamp: str, body: bytes) -> str:
    """The X-Twilio-Email-Event-Webhook-Signature header for ``body`` sent at ``timestamp``."""
    der = private_key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(der).decode("ascii")
