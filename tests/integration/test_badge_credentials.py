"""Open Badges 3.0 credentials of real awards, served and verified over HTTP."""

from __future__ import annotations

import uuid

import aiohttp

from appservice.app import Platform
from tests.matrix_user import MatrixUser, body


async def test_award_is_a_signed_credential_that_verifies_until_revoked(
    platform: Platform, admin: MatrixUser, user: MatrixUser
) -> None:
    badge = f"ob-{uuid.uuid4().hex[:6]}"
    room = await admin.room_with_bot()
    await admin.command(room, f"!badge define {badge} Open badge --valid-days 30")
    await admin.command(room, f"!badge award {user.user_id} {badge}")
    award = await platform.awards.current(user.user_id, badge)
    assert award is not None
    base = platform.config.public_url
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/badges/credentials/{award.credential_id}") as resp:
            assert resp.status == 200
            served = await resp.json()
        credential = served["credential"]
        assert credential["type"] == ["VerifiableCredential", "OpenBadgeCredential"]
        assert credential["id"] == f"{base}/api/badges/credentials/{award.credential_id}"
        assert credential["credentialSubject"]["achievement"]["name"] == "Open badge"
        assert user.user_id not in str(credential)  # named by a salted hash only
        assert credential["validUntil"][:10] == award.expires_at.strftime("%Y-%m-%d")
        assert served["status"] == {"revoked": False, "revoked_at": None}  # no reason published

        async with http.get(
            f"{base}/api/badges/credentials/{award.credential_id}",
            headers={"Accept": "application/jwt"},
        ) as resp:
            assert resp.content_type == "application/jwt"
            token = await resp.text()
        assert token == served["jwt"] and token.count(".") == 2

        async with http.get(f"{base}/api/badges/issuer") as resp:
            issuer = await resp.json()
        assert issuer["verificationMethod"][0]["publicKeyJwk"]["crv"] == "Ed25519"

        async with http.post(f"{base}/api/badges/verify", json={"credential": token}) as resp:
            verdict = await resp.json()
        assert verdict["valid"] is True and verdict["reasons"] == []

        head, payload, signature = token.split(".")
        forged = f"{head}.{payload}.{signature[:-4]}AAAA"
        async with http.post(f"{base}/api/badges/verify", data=forged) as resp:
            verdict = await resp.json()
        assert verdict["valid"] is False and "the signature does not match" in verdict["reasons"]

        async with http.post(f"{base}/api/badges/verify", data="garbage") as resp:
            assert (await resp.json())["valid"] is False
        # The award's sequential id names nothing: credential ids are random.
        async with http.get(f"{base}/api/badges/credentials/{award.id}") as resp:
            assert resp.status == 404
        async with http.get(f"{base}/api/badges/credentials/{'0' * 32}") as resp:
            assert resp.status == 404 and (await resp.json())["errcode"] == "M_NOT_FOUND"

        checked = await admin.command(room, f"!badge verify {user.user_id} {badge}")
        assert "the signed credential checks out" in body(checked)

        await admin.command(room, f"!badge revoke {user.user_id} {badge} mistaken identity")
        async with http.post(f"{base}/api/badges/verify", json={"credential": token}) as resp:
            verdict = await resp.json()
        assert verdict["valid"] is False
        assert any(
            r.startswith("revoked on") and "mistaken identity" in r for r in verdict["reasons"]
        )
        checked = await admin.command(room, f"!badge verify {user.user_id} {badge}")
        assert "does not hold a valid" in body(checked) and "revoked on" in body(checked)
