"""One local stack with the echo appservice beside it, two users and the three rooms the benchmark uses.

alice has a room with UnityPlan's bot, a room with the echo bot, and a room with bob; carol, whose
client encrypts, has a plain and an encrypted room with the bot. Everything is started inside one
``AsyncExitStack`` and stopped in reverse order however the run ends.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from nio import JoinResponse, RoomCreateResponse, RoomPreset

from appservice.stack.local import LocalStack, StackOptions
from appservice.stack.process import free_port
from appservice.stack.synapse import SynapseServer

from .echo_appservice import EchoAppservice, EchoRegistration
from .synced_user import SyncedUser

JOIN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Environment:
    stack: LocalStack
    alice: SyncedUser
    bob: SyncedUser
    bot_user_id: str
    echo_user_id: str
    bot_room: str
    echo_room: str
    bob_room: str
    carol: SyncedUser
    carol_plain_room: str
    carol_encrypted_room: str
    echo: EchoAppservice


@asynccontextmanager
async def running_environment(
    data_dir: Path, *, max_file_mb: int | None = None, appservice_process: bool = False
) -> AsyncIterator[Environment]:
    """The stack and its users; ``max_file_mb`` raises the homeserver's and the territory's file
    size limits (the media benchmark sends 100 MB files); ``appservice_process`` runs the
    appservice as its own process (as in production), so its memory is its own."""
    async with AsyncExitStack() as cleanup:
        echo_registration_path = data_dir / "echo" / "registration.yaml"
        stack = LocalStack(
            StackOptions(
                data_dir=data_dir / "stack",
                fast=True,
                extra_registrations=[echo_registration_path],
                # A benchmark is one user writing as fast as it can: no rate limits in its way.
                config_overrides={
                    "limits": {
                        "api_writes_per_minute": 0,
                        "topics_per_hour": 0,
                        "knocks_per_hour": 0,
                        "remote_server_per_hour": 0,
                    },
                    **({"media": {"max_bytes": max_file_mb * 2**20}} if max_file_mb else {}),
                },
                max_upload_size=f"{max_file_mb}M" if max_file_mb else "50M",
                appservice_process=appservice_process,
            )
        )
        echo = await _start_echo(stack, echo_registration_path)
        cleanup.push_async_callback(echo.stop)

        await stack.start()  # stops what it started if it fails
        cleanup.push_async_callback(stack.stop)
        await echo.ping_homeserver()

        alice = await synced_user(stack.synapse, "alice", cleanup)
        bob = await synced_user(stack.synapse, "bob", cleanup)
        carol = await synced_user(stack.synapse, "carol", cleanup, store=data_dir / "carol-keys")
        bot_user_id = str(stack.info()["bot_user_id"])
        echo_user_id = echo.registration.bot_user_id
        yield Environment(
            stack=stack,
            alice=alice,
            bob=bob,
            bot_user_id=bot_user_id,
            echo_user_id=echo_user_id,
            bot_room=await room_with(alice, bot_user_id),
            echo_room=await room_with(alice, echo_user_id),
            bob_room=await room_with(alice, bob.user_id, joiner=bob),
            carol=carol,
            carol_plain_room=await room_with(carol, bot_user_id),
            carol_encrypted_room=await room_with(carol, bot_user_id, encrypted=True),
            echo=echo,
        )


async def _start_echo(stack: LocalStack, registration_path: Path) -> EchoAppservice:
    """The echo appservice must listen before Synapse starts and sends it anything."""
    port = free_port()
    registration = EchoRegistration.new(f"http://127.0.0.1:{port}", stack.server_name)
    registration.write(registration_path)
    echo = EchoAppservice(registration, stack.synapse.url, port)
    await echo.start()
    return echo


async def synced_user(
    synapse: SynapseServer, localpart: str, cleanup: AsyncExitStack, store: Path | None = None
) -> SyncedUser:
    """A new user of ``synapse``, logged in and syncing until ``cleanup`` closes it (encrypting,
    with its keys in ``store``, when one is given)."""
    password = secrets.token_urlsafe(12)
    user_id = await synapse.register_user(localpart, password)
    user = SyncedUser(synapse.url, user_id, store=store)
    cleanup.push_async_callback(user.close)
    await user.login(password)
    await user.start_syncing()
    return user


ENCRYPTION = {
    "type": "m.room.encryption",
    "state_key": "",
    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
}


async def room_with(
    creator: SyncedUser, invitee: str, joiner: SyncedUser | None = None, encrypted: bool = False
) -> str:
    """A private room with ``invitee``; bots join by themselves, ``joiner`` is told to join."""
    created = await creator.client.room_create(
        invite=[invitee],
        is_direct=True,
        preset=RoomPreset.private_chat,
        initial_state=[ENCRYPTION] if encrypted else (),
    )
    if not isinstance(created, RoomCreateResponse):
        raise RuntimeError(f"{creator.user_id} could not create a room with {invitee}: {created}")
    room_id = str(created.room_id)
    if joiner is not None:
        joined = await joiner.client.join(room_id)
        if not isinstance(joined, JoinResponse):
            raise RuntimeError(f"{joiner.user_id} could not join {room_id}: {joined}")
    await _wait_joined(creator, room_id, invitee)
    return room_id


async def _wait_joined(observer: SyncedUser, room_id: str, user_id: str) -> None:
    try:
        async with asyncio.timeout(JOIN_TIMEOUT_S):
            while not await observer.has_joined(room_id, user_id):
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise RuntimeError(
            f"{user_id} did not join {room_id} within {JOIN_TIMEOUT_S:g} s of the invite"
        ) from None
