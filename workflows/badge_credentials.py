"""Awards as signed Open Badges 3.0 credentials: issue for an award, verify a presented token.

The revocation state of a credential is the award's row: a verifier presents the token, we read the
award its ``jti`` names, and check signature, validity window and revocation together.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from db.repositories.badges import Award, AwardRepository, BadgeDefinitionRepository

from .credentials import AwardFacts, CredentialIssuer, Verification, b64url_decode

# What the database makes (a UUID without dashes): anything else names no credential.
CREDENTIAL_ID = re.compile(r"^[0-9a-f]{32}$")


class BadgeCredentials:
    def __init__(
        self,
        issuer: CredentialIssuer,
        awards: AwardRepository,
        definitions: BadgeDefinitionRepository,
    ) -> None:
        self.issuer = issuer
        self.awards = awards
        self.definitions = definitions

    async def facts(self, award: Award) -> AwardFacts:
        badge = await self.definitions.get(award.badge_slug)
        name = badge.name if badge else award.badge_slug
        if award.source.startswith("course:"):
            criteria = f"Completed the course {award.source.removeprefix('course:')}."
        else:
            criteria = f"Awarded by {award.awarded_by}."
        return AwardFacts(
            award_id=award.id,
            user_id=award.user_id,
            badge_slug=award.badge_slug,
            badge_name=name,
            badge_description=badge.description if badge else "",
            criteria=criteria,
            awarded_at=award.renewed_at or award.awarded_at,
            expires_at=award.expires_at,
            territory_code=self.issuer.territory_code,
            territory_name=self.issuer.territory_name,
            credential_key=award.credential_id,
        )

    async def issue(self, credential_id: str) -> tuple[Award, dict[str, object], str] | None:
        """The award, its credential JSON and its signed token; None for an unknown id."""
        award = await self.awards.by_credential_id(credential_id)
        if award is None:
            return None
        facts = await self.facts(award)
        return award, self.issuer.credential(facts), self.issuer.sign(facts)

    async def verify(self, token: str) -> Verification:
        award = await self._award_named_by(token)
        return self.issuer.verify(
            token,
            now=datetime.now(UTC),
            revoked_at=award.revoked_at if award else None,
            revoke_reason=award.revoke_reason if award else None,
        )

    async def verify_award(self, award: Award) -> Verification:
        """Issue the award's credential and check it as a verifier would."""
        issued = await self.issue(award.credential_id)
        assert issued is not None
        return await self.verify(issued[2])

    async def _award_named_by(self, token: str) -> Award | None:
        """The award a token claims to be (its ``jti``), read before the signature is checked."""
        try:
            payload = json.loads(b64url_decode(token.split(".")[1]))
            jti = str(payload["jti"])
        except (IndexError, KeyError, TypeError, ValueError):
            return None
        prefix = self.issuer.credential_id("")
        key = jti.removeprefix(prefix)
        if not jti.startswith(prefix) or not CREDENTIAL_ID.fullmatch(key):
            return None
        return await self.awards.by_credential_id(key)
