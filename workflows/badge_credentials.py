"""Awards as signed Open Badges 3.0 credentials: issue for an award, verify a presented token.

The revocation state of our own credential is the award's row: a verifier presents the token, we
read the award its ``jti`` names, and check signature, validity window and revocation together.
Another territory's credential (its ``kid`` points into that territory's issuer profile) is checked
with the public key and public URL the registry holds for that territory, and its revocation state
is asked of that territory, at the credential URL under its public URL.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from core.errors import Unavailable
from core.ports import CredentialStatusSource
from core.signing import public_key_from_text
from db.repositories.badges import Award, AwardRepository, BadgeDefinitionRepository
from db.repositories.territories import Territory, TerritoryRepository

from .credentials import (
    AwardFacts,
    CredentialIssuer,
    CredentialVerifier,
    Verification,
    b64url_decode,
    base_url_of_kid,
)

# What the database makes (a UUID without dashes): anything else names no credential.
CREDENTIAL_ID = re.compile(r"^[0-9a-f]{32}$")


class BadgeCredentials:
    def __init__(
        self,
        issuer: CredentialIssuer,
        awards: AwardRepository,
        definitions: BadgeDefinitionRepository,
        territories: TerritoryRepository,
        statuses: CredentialStatusSource,
    ) -> None:
        self.territories = territories  # other issuers: their keys and public URLs
        self.statuses = statuses  # other issuers' revocation states
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
        kid = _part(token, 0).get("kid")
        if kid != self.issuer.kid:
            base = base_url_of_kid(kid)
            territory = await self.territories.by_public_url(base) if base else None
            if territory is not None and territory.public_key and territory.public_url:
                return await self._verify_theirs(token, territory)
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

    async def _verify_theirs(self, token: str, territory: Territory) -> Verification:
        """Another territory's credential: its registry key and URL, its revocation state."""
        assert territory.public_key and territory.public_url
        try:
            key = public_key_from_text(territory.public_key)
        except ValueError:
            return Verification(
                False, (f"the registry has no usable key for {territory.name}",), None
            )
        verifier = CredentialVerifier(
            key, base_url=territory.public_url, territory_name=territory.name
        )
        now = datetime.now(UTC)
        checked = verifier.verify(token, now=now)
        if not checked.valid:
            return checked  # forged or expired: invalid whatever they would say; not asked
        credential_url = str((checked.credential or {}).get("id", ""))
        try:
            if not _names_a_credential(
                credential_url, f"{verifier.base_url}/api/badges/credentials/"
            ):
                raise Unavailable("the credential's URL is not under its public URL")
            revoked_at = await self.statuses.revoked_at(credential_url)
        except Unavailable as exc:
            reason = f"{territory.name} could not be asked whether it is revoked: {exc}"
            return Verification(False, (reason,), checked.credential)
        return verifier.verify(token, now=now, revoked_at=revoked_at)

    async def _award_named_by(self, token: str) -> Award | None:
        """The award a token claims to be (its ``jti``), read before the signature is checked."""
        jti = str(_part(token, 1).get("jti", ""))
        prefix = self.issuer.credential_id("")
        if not _names_a_credential(jti, prefix):
            return None
        return await self.awards.by_credential_id(jti.removeprefix(prefix))


def _part(token: str, index: int) -> dict[str, object]:
    """The JOSE header (0) or payload (1) of a compact JWS, unverified; {} when unreadable."""
    try:
        value = json.loads(b64url_decode(token.split(".")[index]))
    except (AttributeError, IndexError, TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _names_a_credential(url: str, prefix: str) -> bool:
    """Whether ``url`` is a credential URL under ``prefix`` (with an id as the database makes)."""
    return url.startswith(prefix) and bool(CREDENTIAL_ID.fullmatch(url.removeprefix(prefix)))
