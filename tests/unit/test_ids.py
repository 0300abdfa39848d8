"""The one namespace test: our bot and ghosts are users of *our* server with our prefix."""

from __future__ import annotations

from core.ids import Namespace, localpart_of, server_of

DK = Namespace(server_name="dk.example", user_prefix="unity_", bot_localpart="unityplan")


def test_the_bot_and_our_ghosts_are_our_own() -> None:
    assert DK.is_own_user("@unityplan:dk.example")
    assert DK.is_own_user("@unity_alice:dk.example")
    assert DK.is_ghost("@unity_alice:dk.example")
    assert not DK.is_ghost("@unityplan:dk.example")


def test_a_remote_user_with_the_ghost_prefix_is_a_person_like_any_other() -> None:
    assert not DK.is_own_user("@unity_mallory:ca.example")
    assert not DK.is_own_user("@unityplan:ca.example")
    # A server name that merely ends like ours is another server.
    assert not DK.is_own_user("@unity_mallory:evil-dk.example")
    assert not DK.is_own_user("@unity_mallory:dk.example.evil")


def test_local_users_without_the_prefix_are_people() -> None:
    assert not DK.is_own_user("@alice:dk.example")
    assert not DK.is_own_user("@unit:dk.example")


def test_ports_are_part_of_the_server_name() -> None:
    ns = Namespace(server_name="localhost:8448", user_prefix="unity_", bot_localpart="unityplan")
    assert ns.is_own_user("@unity_a:localhost:8448")
    assert not ns.is_own_user("@unity_a:localhost")
    assert server_of("@a:localhost:8448") == "localhost:8448"
    assert localpart_of("@a:localhost:8448") == "a"


def test_the_registration_regex_is_anchored_to_our_server() -> None:
    import re

    pattern = re.compile(DK.user_regex)
    assert pattern.fullmatch("@unity_alice:dk.example")
    assert not pattern.fullmatch("@unity_alice:ca.example")
    assert DK.ghost_id("alice") == "@unity_alice:dk.example"


def test_secrets_are_private_from_the_start_and_masked_in_urls(tmp_path: object) -> None:
    import os
    import stat
    from pathlib import Path

    from core.secrets import without_password, write_private

    path = Path(str(tmp_path)) / "sub" / "token.txt"
    old = os.umask(0)  # even a permissive umask gives 0600
    try:
        write_private(path, "s3cret")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "s3cret"
    assert without_password("nats://dk:s3cret@127.0.0.1:4222") == "nats://dk:***@127.0.0.1:4222"
    assert without_password("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"
