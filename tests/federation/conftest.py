"""Two territories, dk and ca, each with its own Synapse and its own appservice (a supervised
`unityplan run`), the homeservers federating over TLS on loopback; one PostgreSQL (a role per
territory), one NATS (a user per territory), one IPFS node. Started once for this package."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from appservice.stack.local import LocalStack, StackOptions, TerritoryNode
from tests.matrix_user import MatrixUser


@pytest_asyncio.fixture(scope="package")
async def fed() -> AsyncIterator[LocalStack]:
    data_dir = Path(tempfile.mkdtemp(prefix="unityplan-federation-"))
    local = LocalStack(
        StackOptions(
            data_dir=data_dir,
            fast=True,
            appservice_process=True,
            more_territories=(("ca", "Canada"),),
            second_postgres=True,  # where test_live_migration moves ca
            config_overrides={"appservice": {"retry_base_seconds": 0.1}},
            # ca keeps its data at home: its rooms do not federate, its answers are yes or no.
            territory_overrides={
                "ca": {"territory": {"allow_cross_border": False}},
                # dk lets ca's server knock (and get refusal DMs) a few times at once only.
                "dk": {"limits": {"remote_server_per_hour": 60}},
            },
        )
    )
    try:
        await local.start()
        yield local
    finally:
        await local.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest_asyncio.fixture
async def dk(fed: LocalStack) -> TerritoryNode:
    return fed.territory("dk")


@pytest_asyncio.fixture
async def ca(fed: LocalStack) -> TerritoryNode:
    return fed.territory("ca")


@pytest_asyncio.fixture
async def dk_user(fed: LocalStack, dk: TerritoryNode) -> AsyncIterator[MatrixUser]:
    member = await MatrixUser.create(fed, node=dk)
    yield member
    await member.close()


@pytest_asyncio.fixture
async def ca_user(fed: LocalStack, ca: TerritoryNode) -> AsyncIterator[MatrixUser]:
    member = await MatrixUser.create(fed, node=ca)
    yield member
    await member.close()
