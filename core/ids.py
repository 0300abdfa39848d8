"""Identifiers: Matrix user ids, slugs, territory codes, and the one test of our own namespace."""

from __future__ import annotations

import re
from dataclasses import dataclass

MXID_PATTERN = re.compile(r"^@[a-z0-9._=\-/+]+:[A-Za-z0-9.\-]+(:[0-9]{1,5})?$")
SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def server_of(user_id: str) -> str:
    """The server name of ``@localpart:server`` (ports included)."""
    return user_id.split(":", 1)[1] if ":" in user_id else ""


def localpart_of(user_id: str) -> str:
    return user_id.split(":", 1)[0].removeprefix("@")


@dataclass(frozen=True)
class Namespace:
    """The appservice's users: the bot and the ghosts ``@<user_prefix>…:<server_name>``.

    Anchored to this territory's server: ``@unity_x:other.example`` is somebody else's user, a
    person like any other, whatever its localpart looks like.
    """

    server_name: str
    user_prefix: str
    bot_localpart: str

    @property
    def bot_user_id(self) -> str:
        return f"@{self.bot_localpart}:{self.server_name}"

    @property
    def user_regex(self) -> str:
        """The registration's exclusive user namespace (Synapse matches it as a full match)."""
        return f"@{re.escape(self.user_prefix)}.*:{re.escape(self.server_name)}"

    def is_own_user(self, user_id: str) -> bool:
        """Whether ``user_id`` is the bot or one of our ghosts (never a remote user)."""
        if server_of(user_id) != self.server_name:
            return False
        localpart = localpart_of(user_id)
        return localpart == self.bot_localpart or localpart.startswith(self.user_prefix)

    def ghost_id(self, localpart: str) -> str:
        """The ghost that stands for a person with this localpart: ``@unity_<localpart>:<server>``."""
        return f"@{self.user_prefix}{localpart}:{self.server_name}"

    def is_ghost(self, user_id: str) -> bool:
        return self.is_own_user(user_id) and user_id != self.bot_user_id
