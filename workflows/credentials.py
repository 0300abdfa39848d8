"""Badge awards as Open Badges 3.0 credentials, signed with the territory's Ed25519 key.

Every award is also an ``OpenBadgeCredential`` [OB 3.0 §4, §8.1; example "Sample
OpenBadgeCredential"]: a W3C Verifiable Credential in the VC Data Model 2.0 shape (contexts
``https://www.w3.org/ns/credentials/v2`` and
``https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json``, ``validFrom``/``validUntil``).

Encoding: the **JSON Web Token Proof Format of Open Badges 3.0, §8.2** ("VC-JWT"), which profiles
W3C *Securing Verifiable Credentials using JOSE and COSE* (VC-JOSE-COSE §3.1.1) for VCDM 2.0:

* a Compact JWS (RFC 7515 §7.1) whose JOSE header is exactly ``alg``, ``kid``, ``typ`` — OB 3.0
  §8.2.3 allows no other header parameters and says ``typ``, if present, MUST be ``"JWT"`` (so not
  VC-JOSE-COSE's ``vc+jwt``, which that spec only RECOMMENDS); ``alg`` is ``EdDSA`` (RFC 8037 §3.1,
  "permitted but limits interoperability" in §8.2.3); ``kid`` is a URL into the issuer profile
  document (:meth:`CredentialIssuer.issuer_profile`), whose ``verificationMethod`` holds the key as a
  ``JsonWebKey`` with ``publicKeyJwk`` (W3C Controlled Identifiers 1.0 §2.2.2);
* the JWT payload *is* the credential — no ``vc`` wrapper claim (that was the VCDM 1.1 encoding,
  which VC-JOSE-COSE forbids) — plus the claims §8.2.4 requires, mirroring credential properties:
  ``iss`` = ``issuer.id``, ``jti`` = ``id``, ``sub`` = ``credentialSubject.id``, ``nbf`` =
  ``validFrom``, and ``exp`` = ``validUntil`` when the award expires. There is no ``iat``: it is
  not required, and leaving it out makes signing deterministic (Ed25519 signatures are), so the
  same award always yields the same token;
* the signature is Ed25519 over ``ASCII(BASE64URL(header) || "." || BASE64URL(payload))``; header
  and payload are serialised canonically with ``json.dumps(..., separators=(",", ":"),
  sort_keys=True)``.

:meth:`CredentialIssuer.verify` performs the checks of OB 3.0 §8.2.6 for tokens of this issuer
only (the key is known, so ``kid`` is matched rather than dereferenced) and never raises on a bad
token: each failure becomes a sentence in :attr:`Verification.reasons`. Revocation state lives in
the database; the caller passes it in. The credentials carry no ``credentialStatus``: the
credential ``id`` is an URL of this issuer, which is where a verifier asks.

The holder is named in ``credentialSubject.identifier`` only by a salted hash of their Matrix user
id (an ``IdentityObject``, ``hashed: true``, ``identityHash`` ``sha256$<hex of user id + salt>``,
OB 3.0 §B.1.12): anyone who knows the MXID can check the credential is theirs, nobody learns the
MXID from a credential they were shown. There is no ``credentialSubject.id`` and so no ``sub``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

VC_CONTEXT = "https://www.w3.org/ns/credentials/v2"
OB_CONTEXT = "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json"
CID_CONTEXT = "https://www.w3.org/ns/cid/v1"
CREDENTIAL_TYPES = ("VerifiableCredential", "OpenBadgeCredential")
JOSE_ALG = "EdDSA"
JOSE_TYP = "JWT"  # OB 3.0 §8.2.3: "If present, MUST be set to 'JWT'".
# typ values accepted when verifying: ours, the VC-JOSE-COSE one, or none (typ is optional).
_ACCEPTED_TYP = frozenset({JOSE_TYP, "vc+jwt"})
# Registered JWT claims (RFC 7519 §4.1) stripped from the payload to give back the credential.
_JWT_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti"})
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
# RFC 3986 pchar minus the percent sign: what may stay unescaped in one path segment.
_SEGMENT_SAFE = "-._~!$&'()*+,;=:@"
_MAX_TOKEN_CHARS = 1_000_000


@dataclass(frozen=True)
class AwardFacts:
    award_id: int  # database id of the award
    user_id: str  # Matrix user id of the holder, e.g. "@bob:dk.example"
    badge_slug: str
    badge_name: str
    badge_description: str
    criteria: str  # narrative, e.g. "Completed the course Climate basics"
    awarded_at: datetime  # aware UTC
    expires_at: datetime | None
    territory_code: str  # e.g. "dk"
    territory_name: str
    credential_key: str = ""  # the random id in the credential's URL (the award id when empty)


@dataclass(frozen=True)
class Verification:
    valid: bool
    reasons: tuple[str, ...]  # empty when valid; otherwise sentences for people
    credential: dict[str, Any] | None  # the decoded credential when the JWS parsed


# --- keys -----------------------------------------------------------------------------------


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 key in the unencrypted PKCS#8 PEM file ``path``, created (mode 0600, parent
    directories too) when missing. Two processes racing to create it end up with the same key:
    the file appears atomically (hard link of a finished temporary file) and the loser loads the
    winner's. Raises ``ValueError`` when the file holds something other than an Ed25519 key."""
    path = Path(path)
    try:
        return _load_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(pem)
            tmp.flush()
            os.fsync(tmp.fileno())
        try:
            os.link(tmp_name, path)
        except FileExistsError:
            return _load_key(path)
    finally:
        os.unlink(tmp_name)
    return key


def _load_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key")
    return key


def public_jwk(key: Ed25519PublicKey, kid: str) -> dict[str, str]:
    """The public key as an OKP JSON Web Key (RFC 8037 §2)."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url_encode(raw),
        "kid": kid,
        "alg": JOSE_ALG,
        "use": "sig",
    }


# --- base64url (RFC 7515 §2: no padding) ----------------------------------------------------


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding: only the URL-safe alphabet, a possible length, and the
    canonical encoding (no stray bits in the last character), so one value has one spelling."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc
    if b64url_encode(data) != text:
        raise ValueError("not canonical base64url")
    return data


def canonical_json(value: Any) -> bytes:
    return json.dumps(
        value, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


# --- the issuer -----------------------------------------------------------------------------

KID_SUFFIX = "/api/badges/issuer#key-1"


def issuer_id_of(base_url: str) -> str:
    """The issuer profile's URL of the territory whose public API is ``base_url``."""
    return f"{base_url.rstrip('/')}/api/badges/issuer"


def kid_of(base_url: str) -> str:
    """The ``kid`` of that territory's key: a URL into its issuer profile."""
    return f"{base_url.rstrip('/')}{KID_SUFFIX}"


def base_url_of_kid(kid: object) -> str | None:
    """The territory's public API a ``kid`` points into (None when it is not one of ours)."""
    if isinstance(kid, str) and kid.endswith(KID_SUFFIX):
        return kid.removesuffix(KID_SUFFIX)
    return None


class CredentialIssuer:
    """Builds, signs and verifies the OpenBadgeCredentials of one territory."""

    def __init__(
        self,
        key: Ed25519PrivateKey,
        *,
        base_url: str,
        territory_code: str,
        territory_name: str,
    ) -> None:
        self._key = key
        self._public = key.public_key()
        self.base_url = base_url.rstrip("/")
        self.territory_code = territory_code
        self.territory_name = territory_name
        self.issuer_id = issuer_id_of(self.base_url)
        # What checks this issuer's tokens, with its public key only.
        self.verifier = CredentialVerifier(
            self._public, base_url=self.base_url, territory_name=territory_name
        )

    @property
    def kid(self) -> str:
        return kid_of(self.base_url)

    def credential_id(self, key: str | int) -> str:
        return f"{self.base_url}/api/badges/credentials/{key}"

    def achievement_id(self, slug: str) -> str:
        return f"{self.base_url}/api/badges/achievements/{quote(slug, safe=_SEGMENT_SAFE)}"

    def public_jwk(self) -> dict[str, str]:
        return public_jwk(self._public, self.kid)

    def issuer_profile(self) -> dict[str, Any]:
        """The issuer's OB 3.0 ``Profile`` document, served at ``issuer_id``. It is also the
        controlled identifier document the ``kid`` points into: the key is the
        ``verificationMethod`` whose ``id`` is the ``kid``, a ``JsonWebKey`` with the public key
        under ``publicKeyJwk``, listed under ``assertionMethod`` (it signs credentials)."""
        return {
            "@context": [VC_CONTEXT, OB_CONTEXT, CID_CONTEXT],
            "id": self.issuer_id,
            "type": ["Profile"],
            "name": self.territory_name,
            "verificationMethod": [
                {
                    "id": self.kid,
                    "type": "JsonWebKey",
                    "controller": self.issuer_id,
                    "publicKeyJwk": self.public_jwk(),
                }
            ],
            "assertionMethod": [self.kid],
        }

    def _issuer_summary(self) -> dict[str, Any]:
        return {"id": self.issuer_id, "type": ["Profile"], "name": self.territory_name}

    def identity(self, award_id: int, user_id: str) -> dict[str, Any]:
        """OB 3.0 ``IdentityObject``: ``sha256$hex(user_id + salt)``, the salt per award and
        derived from the territory key, so a credential re-issued later is the same document."""
        salt = hmac.new(
            self._key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            ),
            f"identity-salt:{award_id}".encode(),
            hashlib.sha256,
        ).hexdigest()[:32]
        digest = hashlib.sha256((user_id + salt).encode()).hexdigest()
        return {
            "type": "IdentityObject",
            "hashed": True,
            "identityHash": f"sha256${digest}",
            "identityType": "identifier",
            "salt": salt,
        }

    def credential(self, award: AwardFacts) -> dict[str, Any]:
        """The unsigned OpenBadgeCredential for ``award``. Times are whole seconds in UTC so
        ``validFrom``/``validUntil`` equal the ``nbf``/``exp`` claims of the signed token.
        Raises ``ValueError`` for an award of another territory or with naive datetimes."""
        if award.territory_code != self.territory_code:
            raise ValueError(
                f"award {award.award_id} is from territory {award.territory_code!r}, "
                f"this issuer signs for {self.territory_code!r}"
            )
        valid_from = _whole_seconds(award.awarded_at, "awarded_at")
        achievement = {
            "id": self.achievement_id(award.badge_slug),
            "type": ["Achievement"],
            "name": award.badge_name,
            "description": award.badge_description.strip() or award.badge_name,
            "criteria": {
                "narrative": award.criteria.strip() or f"Awarded in {self.territory_name}."
            },
        }
        credential: dict[str, Any] = {
            "@context": [VC_CONTEXT, OB_CONTEXT],
            "id": self.credential_id(award.credential_key or award.award_id),
            "type": list(CREDENTIAL_TYPES),
            "name": award.badge_name,
            "issuer": self._issuer_summary(),
            "validFrom": _format_time(valid_from),
            # The holder is named only by a salted hash of their MXID: whoever knows the MXID
            # can check the credential is theirs; nobody learns the MXID from the credential.
            "credentialSubject": {
                "type": ["AchievementSubject"],
                "identifier": [self.identity(award.award_id, award.user_id)],
                "achievement": achievement,
            },
        }
        if award.expires_at is not None:
            credential["validUntil"] = _format_time(_whole_seconds(award.expires_at, "expires_at"))
        return credential

    def sign(self, award: AwardFacts) -> str:
        """The award as a VC-JWT: a Compact JWS over the credential plus its JWT claims."""
        credential = self.credential(award)
        payload = dict(credential)
        payload["iss"] = credential["issuer"]["id"]
        payload["jti"] = credential["id"]
        if "id" in credential["credentialSubject"]:
            payload["sub"] = credential["credentialSubject"]["id"]
        payload["nbf"] = _numeric_date(credential["validFrom"])
        if "validUntil" in credential:
            payload["exp"] = _numeric_date(credential["validUntil"])
        header = {"alg": JOSE_ALG, "kid": self.kid, "typ": JOSE_TYP}
        signing_input = (
            f"{b64url_encode(canonical_json(header))}.{b64url_encode(canonical_json(payload))}"
        )
        signature = self._key.sign(signing_input.encode("ascii"))
        return f"{signing_input}.{b64url_encode(signature)}"

    def verify(
        self,
        token: str,
        *,
        now: datetime,
        revoked_at: datetime | None = None,
        revoke_reason: str | None = None,
    ) -> Verification:
        return self.verifier.verify(
            token, now=now, revoked_at=revoked_at, revoke_reason=revoke_reason
        )


class CredentialVerifier:
    """Checks the tokens of one issuer from its public key: this territory's own, or another
    territory's with the key and public URL the registry holds for it."""

    def __init__(self, public_key: Ed25519PublicKey, *, base_url: str, territory_name: str) -> None:
        self._public = public_key
        self.base_url = base_url.rstrip("/")
        self.territory_name = territory_name
        self.issuer_id = issuer_id_of(self.base_url)
        self.kid = kid_of(self.base_url)

    def verify(
        self,
        token: str,
        *,
        now: datetime,
        revoked_at: datetime | None = None,
        revoke_reason: str | None = None,
    ) -> Verification:
        """Check a token this issuer signed: its structure, ``alg``, ``kid``, the Ed25519
        signature, the JWT claims against the credential, then ``validFrom`` <= ``now`` <
        ``validUntil`` and the revocation state the caller read from the database. Never raises
        for a bad token; raises ``ValueError`` only for a naive ``now``/``revoked_at``."""
        if now.tzinfo is None or (revoked_at is not None and revoked_at.tzinfo is None):
            raise ValueError("now and revoked_at must be timezone-aware")
        try:
            return self._verify(token, now, revoked_at, revoke_reason)
        except Exception:  # a last net: a malformed token is a refusal, never an exception
            return Verification(False, ("the credential could not be read",), None)

    def _verify(
        self, token: object, now: datetime, revoked_at: datetime | None, reason: str | None
    ) -> Verification:
        if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS:
            return _invalid("it is not a signed credential (a compact JWS)")
        parts = token.strip().split(".")
        if len(parts) != 3 or not all(parts):
            return _invalid("it is not a signed credential (a compact JWS has three parts)")
        header_b64, payload_b64, signature_b64 = parts
        header = _decode_object(header_b64)
        if header is None:
            return _invalid("the JWS header is not a base64url-encoded JSON object")
        if header.get("alg") != JOSE_ALG:
            return _invalid(f"the signature algorithm is {header.get('alg')!r}, not {JOSE_ALG}")
        if "crit" in header:
            return _invalid("the JWS header has critical extensions this verifier does not know")
        if "typ" in header and header["typ"] not in _ACCEPTED_TYP:
            return _invalid(f"the token type is {header['typ']!r}, not a credential")
        if header.get("kid") != self.kid:
            return _invalid(f"it was not signed with the key of {self.territory_name}")
        payload = _decode_object(payload_b64)
        credential = _strip_claims(payload) if payload is not None else None
        try:
            signature = b64url_decode(signature_b64)
            if len(signature) != 64:
                raise InvalidSignature
            self._public.verify(signature, f"{header_b64}.{payload_b64}".encode("ascii"))
        except (ValueError, InvalidSignature):
            return Verification(False, ("the signature does not match",), credential)
        if payload is None or credential is None:
            return _invalid("the JWS payload is not a base64url-encoded JSON object")
        problem = self._check_credential(payload, credential)
        if problem is not None:
            return Verification(False, (problem,), credential)

        reasons: list[str] = []
        valid_from = _parse_time(credential["validFrom"])
        assert valid_from is not None  # checked above
        if now < valid_from:
            reasons.append(f"not valid before {_format_time(valid_from)}")
        if "validUntil" in credential:
            valid_until = _parse_time(credential["validUntil"])
            assert valid_until is not None
            if now >= valid_until:
                reasons.append(f"expired on {valid_until.astimezone(UTC).date().isoformat()}")
        if revoked_at is not None:
            sentence = f"revoked on {revoked_at.astimezone(UTC).date().isoformat()}"
            if reason and reason.strip():
                sentence += f": {reason.strip()}"
            reasons.append(sentence)
        return Verification(not reasons, tuple(reasons), credential)

    def _check_credential(
        self, payload: Mapping[str, Any], credential: Mapping[str, Any]
    ) -> str | None:
        """The credential's shape and the OB 3.0 §8.2.6 claim checks; ``None`` when fine."""
        types = credential.get("type")
        if not isinstance(types, list) or not set(CREDENTIAL_TYPES) <= set(types):
            return "it is not an OpenBadgeCredential"
        issuer = credential.get("issuer")
        issuer_id = issuer.get("id") if isinstance(issuer, dict) else issuer
        if issuer_id != self.issuer_id or payload.get("iss") != issuer_id:
            return f"it was not issued by {self.territory_name}"
        subject = credential.get("credentialSubject")
        if not isinstance(subject, dict) or not isinstance(subject.get("achievement"), dict):
            return "the credential has no achievement subject"
        if not isinstance(credential.get("id"), str) or payload.get("jti") != credential["id"]:
            return "the jti claim does not match the credential id"
        if payload.get("sub") != subject.get("id"):
            return "the sub claim does not match the credential subject"
        valid_from = _parse_time(credential.get("validFrom"))
        if valid_from is None:
            return "the credential has no valid validFrom date"
        if not _same_instant(payload.get("nbf"), valid_from):
            return "the nbf claim does not match validFrom"
        if "validUntil" in credential or "exp" in payload:
            valid_until = _parse_time(credential.get("validUntil"))
            if valid_until is None:
                return "the credential has no valid validUntil date"
            if not _same_instant(payload.get("exp"), valid_until):
                return "the exp claim does not match validUntil"
        return None


# --- helpers --------------------------------------------------------------------------------


def matrix_uri(user_id: str) -> str:
    """``@bob:dk.example`` → ``matrix:u/bob:dk.example`` (the Matrix URI scheme), with anything
    that cannot stand in one URI path segment percent-encoded."""
    bare = user_id[1:] if user_id.startswith("@") else user_id
    return f"matrix:u/{quote(bare, safe=_SEGMENT_SAFE)}"


def _invalid(reason: str) -> Verification:
    return Verification(False, (reason,), None)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate member {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decode_object(part: str) -> dict[str, Any] | None:
    """A base64url JSON object, or ``None`` for anything else (bad base64url, bad UTF-8, bad or
    too deeply nested JSON, duplicate members, NaN, a non-object)."""
    try:
        value = json.loads(
            b64url_decode(part).decode("utf-8"),
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
        )
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _strip_claims(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in payload.items() if key not in _JWT_CLAIMS}


def _whole_seconds(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return moment.astimezone(UTC).replace(microsecond=0)


def _format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: object) -> datetime | None:
    """An XML Schema dateTimeStamp (timezone required), or ``None``."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _numeric_date(value: str) -> int:
    moment = _parse_time(value)
    assert moment is not None
    return int(moment.timestamp())


def _same_instant(claim: object, moment: datetime) -> bool:
    """A NumericDate claim (RFC 7519 §2) equal to ``moment`` to the second."""
    if isinstance(claim, bool) or not isinstance(claim, int | float):
        return False
    return int(claim) == int(moment.timestamp())
