"""Territory signatures on the bus: Ed25519 over the subject and the exact bytes of a message.

Each territory signs what it publishes (events, badge.check answers) with its key; the public key is
in the global registry, so a receiver checks the signature against the key of the territory the
message claims to come from, never against anything the message carries.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SIGNATURE_HEADER = "Unityplan-Signature"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_key_text(key: Ed25519PrivateKey) -> str:
    """The raw 32-byte public key, base64url: what the registry holds."""
    return _b64(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """The registry's base64url public key as a key; ValueError when it is not one."""
    try:
        return Ed25519PublicKey.from_public_bytes(_unb64(text))
    except (ValueError, binascii.Error) as exc:
        raise ValueError("not an Ed25519 public key") from exc


def _message(subject: str, body: bytes) -> bytes:
    return subject.encode() + b"\n" + body


def sign(key: Ed25519PrivateKey, subject: str, body: bytes) -> str:
    return _b64(key.sign(_message(subject, body)))


def verify(public_key: str, subject: str, body: bytes, signature: str) -> bool:
    try:
        key = Ed25519PublicKey.from_public_bytes(_unb64(public_key))
        key.verify(_unb64(signature), _message(subject, body))
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True
