"""Open Badges 3.0 credentials: build, sign as VC-JWT with Ed25519, verify, refuse garbage."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from workflows.credentials import (
    AwardFacts,
    CredentialIssuer,
    b64url_decode,
    b64url_encode,
    load_or_create_signing_key,
    matrix_uri,
    public_jwk,
)

BASE = "https://dk.example/unityplan"
AWARDED = datetime(2026, 2, 1, 9, 30, 15, 123456, tzinfo=UTC)
EXPIRES = datetime(2027, 1, 31, 23, 59, 59, tzinfo=UTC)

AWARD = AwardFacts(
    award_id=42,
    user_id="@bob:dk.example",
    badge_slug="climate-basics",
    badge_name="Climate basics",
    badge_description="Knows the basics of the climate system.",
    criteria="Completed the course Climate basics",
    awarded_at=AWARDED,
    expires_at=EXPIRES,
    territory_code="dk",
    territory_name="Denmark",
)


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def issuer(key: Ed25519PrivateKey) -> CredentialIssuer:
    return CredentialIssuer(key, base_url=BASE + "/", territory_code="dk", territory_name="Denmark")


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    header, payload, signature = token.split(".")
    return (
        json.loads(b64url_decode(header)),
        json.loads(b64url_decode(payload)),
        b64url_decode(signature),
    )


def _reencode(token: str, payload: dict[str, Any]) -> str:
    header, _, signature = token.split(".")
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return f"{header}.{b64url_encode(body)}.{signature}"


# --- a good credential --------------------------------------------------------------------


def test_signed_credential_verifies(issuer: CredentialIssuer) -> None:
    token = issuer.sign(AWARD)
    result = issuer.verify(token, now=AWARDED + timedelta(days=30))
    assert result.valid, result.reasons
    assert result.reasons == ()
    assert result.credential == issuer.credential(AWARD)


def test_signing_is_deterministic_and_canonical(issuer: CredentialIssuer) -> None:
    token = issuer.sign(AWARD)
    assert token == issuer.sign(AWARD)
    header_b64, payload_b64, _ = token.split(".")
    header, payload, signature = _parts(token)
    canonical = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    assert b64url_decode(payload_b64) == canonical
    assert (
        b64url_decode(header_b64)
        == json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    )
    assert len(signature) == 64
    assert "=" not in token


def test_jose_header(issuer: CredentialIssuer) -> None:
    header, _, _ = _parts(issuer.sign(AWARD))
    assert header == {"alg": "EdDSA", "kid": f"{BASE}/api/badges/issuer#key-1", "typ": "JWT"}
    assert issuer.kid == header["kid"]


def test_payload_is_an_open_badge_credential(issuer: CredentialIssuer) -> None:
    _, payload, _ = _parts(issuer.sign(AWARD))
    assert payload["@context"] == [
        "https://www.w3.org/ns/credentials/v2",
        "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json",
    ]
    assert payload["type"] == ["VerifiableCredential", "OpenBadgeCredential"]
    assert payload["id"] == f"{BASE}/api/badges/credentials/42"
    assert payload["name"] == "Climate basics"
    assert payload["issuer"] == {
        "id": f"{BASE}/api/badges/issuer",
        "type": ["Profile"],
        "name": "Denmark",
    }
    assert payload["validFrom"] == "2026-02-01T09:30:15Z"
    assert payload["validUntil"] == "2027-01-31T23:59:59Z"
    assert "vc" not in payload and "proof" not in payload

    subject = payload["credentialSubject"]
    assert "id" not in subject  # the holder's MXID is not published
    assert subject["type"] == ["AchievementSubject"]
    [identity] = subject["identifier"]
    assert identity["type"] == "IdentityObject" and identity["hashed"] is True
    assert identity["identityType"] == "identifier"
    salt = identity["salt"]
    expected = hashlib.sha256(("@bob:dk.example" + salt).encode()).hexdigest()
    assert identity["identityHash"] == f"sha256${expected}"  # checkable by who knows the MXID
    assert "@bob" not in json.dumps(payload)
    assert issuer.credential(AWARD) == issuer.credential(AWARD)  # the same document each time
    assert subject["achievement"] == {
        "id": f"{BASE}/api/badges/achievements/climate-basics",
        "type": ["Achievement"],
        "name": "Climate basics",
        "description": "Knows the basics of the climate system.",
        "criteria": {"narrative": "Completed the course Climate basics"},
    }


def test_jwt_claims_mirror_the_credential(issuer: CredentialIssuer) -> None:
    _, payload, _ = _parts(issuer.sign(AWARD))
    assert payload["iss"] == payload["issuer"]["id"]
    assert payload["jti"] == payload["id"]
    assert "sub" not in payload  # no subject id, so no sub claim
    assert payload["nbf"] == int(AWARDED.replace(microsecond=0).timestamp())
    assert payload["exp"] == int(EXPIRES.timestamp())
    assert "iat" not in payload


def test_credential_without_expiry_is_valid_far_in_the_future(issuer: CredentialIssuer) -> None:
    award = replace(AWARD, expires_at=None)
    token = issuer.sign(award)
    _, payload, _ = _parts(token)
    assert "validUntil" not in payload and "exp" not in payload
    result = issuer.verify(token, now=datetime(2999, 12, 31, tzinfo=UTC))
    assert result.valid, result.reasons


def test_blank_description_and_criteria_fall_back(issuer: CredentialIssuer) -> None:
    credential = issuer.credential(replace(AWARD, badge_description=" ", criteria=""))
    achievement = credential["credentialSubject"]["achievement"]
    assert achievement["description"] == "Climate basics"
    assert achievement["criteria"] == {"narrative": "Awarded in Denmark."}


def test_credential_refuses_another_territory_and_naive_times(issuer: CredentialIssuer) -> None:
    with pytest.raises(ValueError, match="territory"):
        issuer.credential(replace(AWARD, territory_code="se"))
    with pytest.raises(ValueError, match="awarded_at"):
        issuer.credential(replace(AWARD, awarded_at=datetime(2026, 2, 1)))


def test_matrix_uri_escapes_what_a_path_segment_cannot_hold() -> None:
    assert matrix_uri("@bob:dk.example") == "matrix:u/bob:dk.example"
    assert matrix_uri("@a/b:[::1]:8448") == "matrix:u/a%2Fb:%5B::1%5D:8448"


def test_issuer_profile_publishes_the_key(issuer: CredentialIssuer, key: Ed25519PrivateKey) -> None:
    profile = issuer.issuer_profile()
    assert profile["id"] == f"{BASE}/api/badges/issuer"
    assert profile["type"] == ["Profile"]
    assert profile["name"] == "Denmark"
    (method,) = profile["verificationMethod"]
    assert method["id"] == issuer.kid
    assert method["type"] == "JsonWebKey"
    assert method["controller"] == profile["id"]
    assert method["publicKeyJwk"] == public_jwk(key.public_key(), issuer.kid)
    assert profile["assertionMethod"] == [issuer.kid]
    assert "d" not in method["publicKeyJwk"]


def test_jwk_x_is_the_raw_public_key(key: Ed25519PrivateKey) -> None:
    jwk = public_jwk(key.public_key(), "k")
    assert jwk == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": jwk["x"],
        "kid": "k",
        "alg": "EdDSA",
        "use": "sig",
    }
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert b64url_decode(jwk["x"]) == raw
    assert base64.urlsafe_b64decode(jwk["x"] + "=") == raw


# --- tampering and foreign keys -------------------------------------------------------------


def test_tampered_payload_fails(issuer: CredentialIssuer) -> None:
    token = issuer.sign(AWARD)
    _, payload, _ = _parts(token)
    payload["credentialSubject"]["identifier"][0]["identityHash"] = "sha256$" + "0" * 64
    result = issuer.verify(_reencode(token, payload), now=AWARDED + timedelta(days=1))
    assert not result.valid
    assert result.reasons == ("the signature does not match",)
    assert result.credential is not None
    assert result.credential["credentialSubject"]["identifier"][0]["identityHash"].endswith("0")


def test_extended_validity_fails(issuer: CredentialIssuer) -> None:
    token = issuer.sign(AWARD)
    _, payload, _ = _parts(token)
    payload["validUntil"] = "2099-01-01T00:00:00Z"
    payload["exp"] = int(datetime(2099, 1, 1, tzinfo=UTC).timestamp())
    result = issuer.verify(_reencode(token, payload), now=datetime(2030, 1, 1, tzinfo=UTC))
    assert result.reasons == ("the signature does not match",)


def test_tampered_signature_fails(issuer: CredentialIssuer) -> None:
    token = issuer.sign(AWARD)
    header, payload, signature = token.split(".")
    raw = bytearray(b64url_decode(signature))
    raw[0] ^= 1
    flipped = f"{header}.{payload}.{b64url_encode(bytes(raw))}"
    result = issuer.verify(flipped, now=AWARDED + timedelta(days=1))
    assert not result.valid
    assert result.reasons == ("the signature does not match",)
    truncated = f"{header}.{payload}.{b64url_encode(bytes(raw[:32]))}"
    assert issuer.verify(truncated, now=AWARDED).reasons == ("the signature does not match",)


def test_non_canonical_signature_encoding_fails(issuer: CredentialIssuer) -> None:
    token = issuer.sign(AWARD)
    head, _, last = token.rpartition(".")
    # 64 bytes -> 86 characters; the last one carries 2 unused bits that must be zero.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    sibling = alphabet[alphabet.index(last[-1]) ^ 1]
    result = issuer.verify(f"{head}.{last[:-1]}{sibling}", now=AWARDED)
    assert result.reasons == ("the signature does not match",)


def test_token_signed_by_another_key_with_the_same_kid_fails(issuer: CredentialIssuer) -> None:
    impostor = CredentialIssuer(
        Ed25519PrivateKey.generate(), base_url=BASE, territory_code="dk", territory_name="Denmark"
    )
    result = issuer.verify(impostor.sign(AWARD), now=AWARDED + timedelta(days=1))
    assert not result.valid
    assert result.reasons == ("the signature does not match",)


def test_token_of_another_issuer_fails(issuer: CredentialIssuer) -> None:
    other = CredentialIssuer(
        Ed25519PrivateKey.generate(),
        base_url="https://se.example/unityplan",
        territory_code="se",
        territory_name="Sweden",
    )
    token = other.sign(replace(AWARD, territory_code="se", territory_name="Sweden"))
    result = issuer.verify(token, now=AWARDED + timedelta(days=1))
    assert not result.valid
    assert result.reasons == ("it was not signed with the key of Denmark",)
    assert result.credential is None


def test_other_algorithms_are_refused(issuer: CredentialIssuer) -> None:
    token = issuer.sign(AWARD)
    _, payload, signature = token.split(".")
    for alg in ("none", "HS256", "RS256", None):
        header = b64url_encode(json.dumps({"alg": alg, "kid": issuer.kid}).encode())
        result = issuer.verify(f"{header}.{payload}.{signature}", now=AWARDED)
        assert not result.valid
        assert "algorithm" in result.reasons[0]


# --- time and revocation --------------------------------------------------------------------


def test_expired(issuer: CredentialIssuer) -> None:
    token = issuer.sign(AWARD)
    assert issuer.verify(token, now=EXPIRES - timedelta(seconds=1)).valid
    result = issuer.verify(token, now=EXPIRES)
    assert not result.valid
    assert result.reasons == ("expired on 2027-01-31",)
    assert result.credential == issuer.credential(AWARD)


def test_not_yet_valid(issuer: CredentialIssuer) -> None:
    token = issuer.sign(AWARD)
    assert issuer.verify(token, now=AWARDED.replace(microsecond=0)).valid
    result = issuer.verify(token, now=AWARDED - timedelta(hours=1))
    assert not result.valid
    assert result.reasons == ("not valid before 2026-02-01T09:30:15Z",)


def test_revoked(issuer: CredentialIssuer) -> None:
    token = issuer.sign(AWARD)
    revoked = datetime(2026, 5, 1, 12, tzinfo=UTC)
    now = datetime(2026, 6, 1, tzinfo=UTC)
    result = issuer.verify(token, now=now, revoked_at=revoked, revoke_reason="awarded by mistake")
    assert not result.valid
    assert result.reasons == ("revoked on 2026-05-01: awarded by mistake",)
    assert issuer.verify(token, now=now, revoked_at=revoked).reasons == ("revoked on 2026-05-01",)


def test_expired_and_revoked_report_both(issuer: CredentialIssuer) -> None:
    token = issuer.sign(AWARD)
    result = issuer.verify(
        token,
        now=datetime(2028, 1, 1, tzinfo=UTC),
        revoked_at=datetime(2026, 5, 1, tzinfo=UTC),
        revoke_reason="left",
    )
    assert result.reasons == ("expired on 2027-01-31", "revoked on 2026-05-01: left")


def test_naive_now_is_a_programming_error(issuer: CredentialIssuer) -> None:
    with pytest.raises(ValueError, match="timezone"):
        issuer.verify(issuer.sign(AWARD), now=datetime(2026, 3, 1))


# --- garbage --------------------------------------------------------------------------------


def _b64(value: object) -> str:
    return b64url_encode(json.dumps(value).encode())


GOOD_HEADER = {"alg": "EdDSA", "kid": f"{BASE}/api/badges/issuer#key-1", "typ": "JWT"}
SIG = b64url_encode(bytes(64))
SAFETY_NET = "the credential could not be read"
DUPLICATE_ALG = b64url_encode(b'{"alg":"none","alg":"EdDSA"}')

GARBAGE = [
    "",
    " ",
    ".",
    "..",
    "a.b",
    "x.y.z",
    "a.b.c.d",
    "a..c",
    "!!!.@@@.###",
    "eyJ.eyJ.eyJ",
    "a b.c d.e f",
    "é.é.é",
    "\x00.\x00.\x00",
    "A.A.A",  # impossible base64url length
    f"{b64url_encode(b'not json')}.{_b64({})}.{SIG}",
    f"{b64url_encode(bytes([0xFF, 0xFE]))}.{_b64({})}.{SIG}",
    f"{_b64([1, 2])}.{_b64({})}.{SIG}",
    f"{_b64('EdDSA')}.{_b64({})}.{SIG}",
    f"{_b64(None)}.{_b64({})}.{SIG}",
    f"{DUPLICATE_ALG}.{_b64({})}.{SIG}",
    f"{b64url_encode(b'[' * 100_000)}.{_b64({})}.{SIG}",
    f"{_b64(GOOD_HEADER)}.{_b64([1, 2, 3])}.{SIG}",
    f"{_b64(GOOD_HEADER)}.{_b64('a string')}.{SIG}",
    f"{_b64(GOOD_HEADER)}.{_b64(42)}.{SIG}",
    f"{_b64(GOOD_HEADER)}.{b64url_encode(b'{')}.{SIG}",
    f"{_b64(GOOD_HEADER)}.{b64url_encode(b'NaN')}.{SIG}",
    f"{_b64(GOOD_HEADER)}.{_b64({})}.{SIG}",
    f"{_b64(GOOD_HEADER)}.{_b64({})}.!!",
    f"{_b64(GOOD_HEADER)}.{_b64({})}.{SIG}=",
    f"{_b64({**GOOD_HEADER, 'crit': ['exp']})}.{_b64({})}.{SIG}",
    f"{_b64({**GOOD_HEADER, 'typ': 'at+jwt'})}.{_b64({})}.{SIG}",
    f"{_b64({**GOOD_HEADER, 'kid': None})}.{_b64({})}.{SIG}",
    "x" * 2_000_000,
]


@pytest.mark.parametrize("token", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_fails_cleanly(issuer: CredentialIssuer, token: str) -> None:
    result = issuer.verify(token, now=AWARDED)
    assert result.valid is False
    assert len(result.reasons) == 1 and result.reasons[0]
    assert result.reasons != (SAFETY_NET,)  # each case has its own check, not the catch-all


@pytest.mark.parametrize("token", [None, b"a.b.c", 42, ["a", "b", "c"]])
def test_non_strings_fail_cleanly(issuer: CredentialIssuer, token: Any) -> None:
    result = issuer.verify(token, now=AWARDED)
    assert not result.valid and result.credential is None


def test_valid_signature_over_a_non_credential_fails(
    issuer: CredentialIssuer, key: Ed25519PrivateKey
) -> None:
    """Our key signing something that is not one of our credentials is still not valid."""

    def signed(payload: object) -> str:
        head = f"{_b64(GOOD_HEADER)}.{_b64(payload)}"
        return f"{head}.{b64url_encode(key.sign(head.encode()))}"

    assert issuer.verify(signed([1, 2]), now=AWARDED).reasons == (
        "the JWS payload is not a base64url-encoded JSON object",
    )
    assert issuer.verify(signed({}), now=AWARDED).reasons == ("it is not an OpenBadgeCredential",)

    payload = _parts(issuer.sign(AWARD))[1]
    for claim, value in [
        ("iss", "https://evil.example"),
        ("jti", "x"),
        ("sub", "matrix:u/mallory:dk.example"),
        ("nbf", 0),
        ("exp", 0),
        ("nbf", "2026-02-01T09:30:15Z"),
        ("exp", True),
    ]:
        result = issuer.verify(signed({**payload, claim: value}), now=AWARDED)
        assert not result.valid, claim
    no_from = {k: v for k, v in payload.items() if k != "validFrom"}
    assert issuer.verify(signed(no_from), now=AWARDED).reasons == (
        "the credential has no valid validFrom date",
    )
    naive_from = {**payload, "validFrom": "2026-02-01T09:30:15"}
    assert not issuer.verify(signed(naive_from), now=AWARDED).valid


def test_random_mutations_never_raise(issuer: CredentialIssuer) -> None:
    token = issuer.sign(AWARD)
    rng = random.Random(20260201)
    alphabet = "ABCxyz019-_.=+/ \n\x00é"
    for _ in range(2000):
        chars = list(token)
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(chars))
            action = rng.random()
            if action < 0.4:
                chars[position] = rng.choice(alphabet)
            elif action < 0.7:
                del chars[position]
            else:
                chars.insert(position, rng.choice(alphabet))
        mutated = "".join(chars)
        result = issuer.verify(mutated, now=AWARDED + timedelta(days=1))
        if mutated.strip() != token:
            assert not result.valid, mutated
            assert result.reasons != (SAFETY_NET,), mutated


# --- key file -------------------------------------------------------------------------------


def test_key_file_is_created_0600_and_loaded_again(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "badges" / "signing-key.pem"
    key = load_or_create_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert [p.name for p in path.parent.iterdir()] == ["signing-key.pem"]  # no temp file left

    again = load_or_create_signing_key(path)
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    assert again.public_key().public_bytes(*raw) == key.public_key().public_bytes(*raw)

    token = CredentialIssuer(
        key, base_url=BASE, territory_code="dk", territory_name="Denmark"
    ).sign(AWARD)
    reloaded = CredentialIssuer(again, base_url=BASE, territory_code="dk", territory_name="Denmark")
    assert reloaded.verify(token, now=AWARDED + timedelta(days=1)).valid


def test_key_file_with_another_key_type_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    path = tmp_path / "key.pem"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError, match="not an Ed25519 private key"):
        load_or_create_signing_key(path)
